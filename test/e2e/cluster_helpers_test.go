package e2e_test

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/userspace/lab"
)

// clusterOpts shape a cluster lab: a router running BIRD, three limpet
// nodes announcing the VIP by BGP and mirroring active_active, members.
type clusterOpts struct {
	clients   int
	algorithm string // "" leaves the cluster default (ip_hash)
	damping   float64
	grace     float64
	// syncTimeout is bgp.sync_timeout (default 2 s).
	syncTimeout float64
	password    string
	router      lab.RouterSpec
	// nodeASN is each node's own ASN (default 65001); peerASN the router's
	// ASN that node i expects (default 65000).
	peerASN map[int]uint32
	// nodePassword overrides the node's password.
	nodePassword map[int]string
	// noStart leaves the nodes stopped.
	noStart bool
	// monitorRise/Fall of the tcp monitor (default 2/2, interval 0.2 s).
	rise, fall int
}

type cluster struct {
	t      *testing.T
	l      *lab.Lab
	router *lab.Router
	opts   clusterOpts
	cfg    []string
	pins   []string
	proc   []*lab.Process
	vip    netip.Addr
	prefix netip.Prefix
}

func newCluster(t *testing.T, o clusterOpts) *cluster {
	t.Helper()
	o.clients = cmp.Or(o.clients, 50)
	o.damping = cmp.Or(o.damping, 1)
	o.syncTimeout = cmp.Or(o.syncTimeout, 2)
	o.rise = cmp.Or(o.rise, 2)
	o.fall = cmp.Or(o.fall, 2)
	l := newLab(t, lab.Spec{Cluster: true, MemberCount: 3, ClientAddrs4: o.clients, ClientAddrs6: 1})
	c := &cluster{t: t, l: l, opts: o, vip: l.VIP4()}
	c.prefix = netip.PrefixFrom(c.vip, 32)
	ctx := testCtx(t, 30*time.Second)
	if o.password != "" && o.router.Password == "" {
		o.router.Password = o.password
		c.opts.router.Password = o.password
	}
	r, err := l.StartRouter(ctx, o.router)
	if err != nil {
		t.Fatal(err)
	}
	c.router = r
	key := filepath.Join(l.RunDir(), "mirror.key")
	writeKey(t, key)
	bs := l.Balancers()
	c.cfg, c.pins, c.proc = make([]string, len(bs)), make([]string, len(bs)), make([]*lab.Process, len(bs))
	for i := range bs {
		c.pins[i] = fmt.Sprintf("%s-n%d", l.PinDir(), i)
		c.cfg[i] = filepath.Join(l.RunDir(), fmt.Sprintf("limpet-n%d.yaml", i))
		writeCheckedConfig(t, c.cfg[i], c.config(i, key), 0o600)
	}
	t.Cleanup(func() {
		for i := range c.pins {
			if c.proc[i] != nil {
				c.proc[i].Kill()
				<-c.proc[i].Done()
			}
			if out, err := run(limpetBin(t), "--pin-path", c.pins[i], "detach"); err != nil && !strings.Contains(err.Error(), "no limpet datapath") {
				t.Errorf("detach node %d: %v %s", i, err, out)
			}
		}
	})
	if !o.noStart {
		for i := range bs {
			c.start(i)
		}
	}
	return c
}

func (c *cluster) config(i int, key string) string {
	l, o := c.l, c.opts
	bs := l.Balancers()
	b := bs[i]
	var s strings.Builder
	fmt.Fprintf(&s, "settings:\n  interfaces: [%s, %s]\n  pin_path: %s\n  gc_interval: 0.2\n", b.ClientIface.Name, b.MemberIfaces[0].Name, c.pins[i])
	var peers []string
	for k, o := range bs {
		if k != i {
			peers = append(peers, netip.AddrPortFrom(o.BackAddr4, 7946).String())
		}
	}
	fmt.Fprintf(&s, "ha_mirroring:\n  listen: %s\n  peers: [%s]\n  mode: active_active\n  heartbeat_interval: 0.2\n  reconnect_backoff: {initial: 0.1, max: 0.5}\n  auth: {psk_file: %s}\n",
		netip.AddrPortFrom(b.BackAddr4, 7946), strings.Join(peers, ", "), key)
	r4, _ := l.RouterAddrs()
	peerASN := uint32(65000)
	if a, ok := o.peerASN[i]; ok {
		peerASN = a
	}
	pw := o.password
	if p, ok := o.nodePassword[i]; ok {
		pw = p
	}
	pwLine := ""
	if pw != "" {
		pf := filepath.Join(l.RunDir(), fmt.Sprintf("bgp-n%d.pw", i))
		if err := os.WriteFile(pf, []byte(pw+"\n"), 0o600); err != nil {
			c.t.Fatal(err)
		}
		pwLine = ", password_file: " + pf
	}
	fmt.Fprintf(&s, "bgp:\n  asn: 65001\n  router_id: %s\n  damping_interval: %g\n  shutdown_grace: %g\n  sync_timeout: %g\n", b.Addr4, o.damping, o.grace, o.syncTimeout)
	fmt.Fprintf(&s, "  communities: [\"65001:%d\"]\n", 100+i)
	fmt.Fprintf(&s, "  neighbors:\n    - {address: %s, peer_asn: %d, hold_time: 3, keepalive_interval: 1, connect_retry: 1%s}\n", r4, peerASN, pwLine)
	fmt.Fprintf(&s, "health_monitors:\n  - {name: tcp80, type: tcp, interval: 0.2, rise: %d, fall: %d}\n", o.rise, o.fall)
	s.WriteString("persistence_profiles:\n  - {name: sticky, timeout: 300, ha_mirroring: true}\n")
	s.WriteString("pools:\n  - name: web\n    health_monitor: tcp80\n")
	if o.algorithm != "" {
		fmt.Fprintf(&s, "    algorithm: %s\n", o.algorithm)
	}
	s.WriteString("    members:\n")
	for _, m := range l.Members() {
		fmt.Fprintf(&s, "      - {name: %s, address: %s}\n", m.Name, m.Addr4)
	}
	fmt.Fprintf(&s, "virtual_servers:\n  - {name: web, address: %s, port: 80, protocol: tcp, pool: web, persistence: sticky, forwarding: dsr}\n", c.vip)
	return s.String()
}

// start starts node i's limpet and waits until it has attached.
func (c *cluster) start(i int) {
	c.t.Helper()
	p, err := c.l.StartProcess(lab.BalancerHost(i), limpetBin(c.t), "run", "-c", c.cfg[i])
	if err != nil {
		c.t.Fatal(err)
	}
	suite.Lock()
	suite.procs = append(suite.procs, p)
	suite.pinDirs = append(suite.pinDirs, c.pins[i])
	suite.Unlock()
	c.proc[i] = p
	waitLog(c.t, p, "attached", func(out string) bool { return countLines(out, "msg=attached ") >= 2 })
}

// nexthops are the router's kernel next hops for the VIP.
func (c *cluster) nexthops() []netip.Addr {
	c.t.Helper()
	nh, err := c.router.Nexthops(c.prefix)
	if err != nil {
		c.t.Fatal(err)
	}
	return nh
}

// waitNexthops waits until the router's route has n next hops and returns
// how long that took.
func (c *cluster) waitNexthops(ctx context.Context, n int, what string) time.Duration {
	c.t.Helper()
	start := time.Now()
	for {
		nh := c.nexthops()
		if len(nh) == n {
			return time.Since(start)
		}
		if ctx.Err() != nil {
			out, _ := c.router.BIRDC(context.Background(), "show", "route", "all")
			proto, _ := c.router.BIRDC(context.Background(), "show", "protocols")
			c.t.Fatalf("%s: the router's route to %s has next hops %v, want %d\n%s\n%s", what, c.prefix, nh, n, proto, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// nodeAddr is node i's front address (its BGP next hop).
func (c *cluster) nodeAddr(i int) netip.Addr { return c.l.Balancers()[i].Addr4 }

// status is node i's limpet status -o json.
type clusterStatus struct {
	Cluster struct {
		Synced     bool   `json:"synced"`
		SyncDetail string `json:"sync_detail"`
		PeersUp    int    `json:"peers_up"`
	} `json:"cluster"`
	BGP struct {
		Draining bool `json:"draining"`
		Sessions []struct {
			Neighbor     string  `json:"neighbor"`
			State        string  `json:"state"`
			Uptime       float64 `json:"uptime_seconds"`
			PrefixesSent uint64  `json:"prefixes_sent"`
			LastError    string  `json:"last_error"`
		} `json:"sessions"`
		Announcements []struct {
			Prefix    string `json:"prefix"`
			Announced bool   `json:"announced"`
			Reason    string `json:"reason"`
			Detail    string `json:"detail"`
			Changes   uint64 `json:"changes"`
		} `json:"announcements"`
	} `json:"bgp"`
	Mirroring []struct {
		Address string `json:"address"`
		State   string `json:"state"`
	} `json:"mirroring"`
}

func (c *cluster) status(i int) clusterStatus {
	c.t.Helper()
	out, err := osexec(limpetBin(c.t), "--pin-path", c.pins[i], "status", "-o", "json")
	if err != nil {
		c.t.Fatalf("status of node %d: %v\n%s", i, err, out)
	}
	var st clusterStatus
	if err := json.Unmarshal(out, &st); err != nil {
		c.t.Fatalf("status -o json: %v\n%s", err, out)
	}
	return st
}

func (c *cluster) cli(i int, args ...string) (string, error) {
	return run(limpetBin(c.t), append([]string{"--pin-path", c.pins[i]}, args...)...)
}

// startLoad runs every client in a loop until Stop, each GET a new
// connection (20 ms apart): what every failure test measures; before says
// which member each client must keep.
func (c *cluster) startLoad(ctx context.Context, clients []netip.Addr, before map[netip.Addr]string) *lab.Load {
	return c.l.StartLoad(ctx, clients, netip.AddrPortFrom(c.vip, 80), before, 20*time.Millisecond)
}

// persistAll sends n concurrent GETs from every client (ECMP spreads them
// over the nodes) and returns each client's members. What counts is the
// member each connection reaches, so the clients wait as long as real ones
// would: a burst of a thousand connections on a loaded machine may take the
// test process longer than the lab's default 3 s to see through.
func (c *cluster) persistAll(ctx context.Context, clients []netip.Addr, n int) (map[netip.Addr]map[string]int, error) {
	ctx = lab.Patient(ctx, 15*time.Second, 30*time.Second)
	dst := netip.AddrPortFrom(c.vip, 80)
	var mu sync.Mutex
	out := map[netip.Addr]map[string]int{}
	err := forEach(clients, func(src netip.Addr) error {
		var wg sync.WaitGroup
		errs := make([]error, n)
		got := make([]string, n)
		for k := range n {
			wg.Go(func() {
				r, err := c.l.Get(ctx, src, lab.URL(dst, "/"))
				if err == nil && r.Status != 200 {
					err = fmt.Errorf("status %d", r.Status)
				}
				errs[k], got[k] = err, r.Member
			})
		}
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		m := map[string]int{}
		for k := range n {
			if errs[k] != nil {
				return fmt.Errorf("client %s: %w", src, errs[k])
			}
			m[got[k]]++
		}
		out[src] = m
		return nil
	})
	return out, err
}

// newConns sums the new connections every node's datapath counted.
func (c *cluster) newConns(t *testing.T) []uint64 {
	out := make([]uint64, len(c.pins))
	for i := range c.pins {
		b, err := osexec(limpetBin(t), "--pin-path", c.pins[i], "stats", "-o", "json")
		if err != nil {
			t.Fatalf("stats: %v", err)
		}
		var s struct {
			VirtualServers []map[string]any `json:"virtual_servers"`
		}
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatalf("stats -o json: %v", err)
		}
		for _, v := range s.VirtualServers {
			for _, k := range []string{"NewFlows", "new_flows", "new_connections", "new_connections_total"} {
				if f, ok := v[k].(float64); ok {
					out[i] += uint64(f)
					break
				}
			}
		}
	}
	return out
}
