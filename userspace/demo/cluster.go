package demo

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/limpet-lb/limpet/userspace/lab"
)

// clusterDemo is 'limpet demo --cluster': three limpet nodes behind a BIRD
// router doing ECMP, each announcing the VIP by BGP and mirroring its
// persistence tables to the others.
type clusterDemo struct {
	*demo
	router *lab.Router
	pins   []string
	cfgs   []string
	procs  []*lab.Process
	vip    netip.Addr
}

// RunCluster runs the cluster demo. Like Run, every claim it prints is
// checked, and the lab is removed unless Keep is set.
func RunCluster(ctx context.Context, opts Options) (err error) {
	if opts.Clients == 0 {
		opts.Clients = 100
	}
	start := time.Now()
	d := &clusterDemo{demo: &demo{opts: opts, out: opts.Out}}
	d.printf("limpet demo --cluster: building a lab (client with %d addresses, a router running BIRD, 3 limpet nodes, 3 members) ...\n", opts.Clients)
	l, err := lab.New(ctx, lab.Spec{Cluster: true, MemberCount: 3, ClientAddrs4: opts.Clients, ClientAddrs6: 1})
	if err != nil {
		return fmt.Errorf("build lab: %w", err)
	}
	d.l, d.vip = l, l.VIP4()
	defer d.removeOnReturn(ctx, &err, d.cleanupCluster)()
	if d.router, err = l.StartRouter(ctx, lab.RouterSpec{Password: "limpet-demo-md5"}); err != nil {
		return err
	}
	if err := d.writeConfigs(); err != nil {
		return err
	}
	for i := range d.cfgs {
		p, err := l.StartProcess(lab.BalancerHost(i), opts.Binary, "run", "-c", d.cfgs[i], "--log-level", "warn")
		if err != nil {
			return fmt.Errorf("start limpet run on node %d: %w", i, err)
		}
		d.procs = append(d.procs, p)
	}
	prefix := netip.PrefixFrom(d.vip, 32)
	took, nh := d.waitNexthops(ctx, prefix, 3, 20*time.Second)
	d.printf("3 nodes run limpet (DSR, ip_hash, active_active mirroring, BGP with TCP MD5 to the router, AS 65001 -> 65000)\n\n")
	d.printf("1. the router (BIRD 2, merge paths, L4 hash) learns %s from every node\n", prefix)
	if out, err := d.router.BIRDC(ctx, "show", "route", "for", prefix.String()); err == nil {
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			d.printf("   %s\n", line)
		}
	}
	d.check(len(nh) == 3, "BIRD installed a 3-way multipath route via %v, %.1fs after the nodes started", nh, took.Seconds())

	clients := l.ClientAddrs4()
	d.printf("\n2. %d clients x 5 concurrent HTTP connections to http://%s/ (ECMP hashes each connection)\n", len(clients), d.vip)
	before, failed := d.round(ctx, clients, 5)
	conns := d.nodeConns()
	d.printf("   new connections per node: %v\n", conns)
	d.check(failed == 0, "every request was answered (%d failed)", failed)
	d.check(len(before) == len(clients), "every client reached one member on all 5 connections, whichever node took them (%d of %d)", len(before), len(clients))
	d.check(!slices.Contains(conns, 0), "ECMP spread the connections over all 3 nodes")

	d.printf("\n3. limpet drain on node 1, under load\n")
	ld := l.StartLoad(ctx, clients, netip.AddrPortFrom(d.vip, 80), before, 50*time.Millisecond)
	time.Sleep(500 * time.Millisecond)
	if out, err := exec.Command(opts.Binary, "--pin-path", d.pins[1], "drain").CombinedOutput(); err != nil {
		return fmt.Errorf("limpet drain: %v %s", err, out)
	}
	took, nh = d.waitNexthops(ctx, prefix, 2, 10*time.Second)
	d.check(len(nh) == 2 && !slices.Contains(nh, l.Balancers()[1].Addr4), "node 1 withdrew the VIP: the route is 2-way (%v) after %.2fs", nh, took.Seconds())
	time.Sleep(time.Second)
	if out, err := exec.Command(opts.Binary, "--pin-path", d.pins[1], "drain", "--cancel").CombinedOutput(); err != nil {
		return fmt.Errorf("limpet drain --cancel: %v %s", err, out)
	}
	_, nh = d.waitNexthops(ctx, prefix, 3, 10*time.Second)
	d.check(len(nh) == 3, "limpet drain --cancel: node 1 announces again, 3-way")

	d.printf("\n4. node 2 dies (SIGKILL), under load\n")
	_ = d.procs[2].Signal(syscall.SIGKILL)
	took, nh = d.waitNexthops(ctx, prefix, 2, 10*time.Second)
	d.check(len(nh) == 2, "BIRD dropped node 2 %.2fs later (its BGP session closed with the process)", took.Seconds())
	time.Sleep(time.Second)
	ld.Stop()
	ok, bad, moved := ld.OK.Load(), ld.Bad.Load(), len(ld.Moved())
	d.check(bad == 0, "no request failed across the drain and the crash (%d answered, %d failed)", ok, bad)
	d.check(moved == 0, "no client changed member: the other nodes hold its mirrored entry (%d moved)", moved)

	d.printf("\n5. limpet status on node 0 (BGP and cluster view)\n")
	if out, err := exec.Command(opts.Binary, "--pin-path", d.pins[0], "status").CombinedOutput(); err == nil {
		show := false
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "CLUSTER") || strings.HasPrefix(line, "BGP") || strings.HasPrefix(line, "HA PEER") {
				show = true
			}
			if show && line != "" {
				d.printf("   %s\n", line)
			}
		}
		d.check(strings.Contains(string(out), "established") && strings.Contains(string(out), "announced"), "node 0 shows its established session and its announced VIP")
	} else {
		d.check(false, "limpet status on node 0: %v", err)
	}
	if opts.Keep {
		d.printf("\nThe lab stays up (--keep): birdc -s %s show route; %s --pin-path %s status\n", d.router.Socket, opts.Binary, d.pins[0])
		d.printf("Remove everything with: %s lab clean\n", opts.Binary)
		return d.result()
	}
	d.printf("\ncleaning up ...\n")
	d.cleanupCluster()
	left, err := lab.LeftoversOf(l.Suffix())
	d.check(err == nil && len(left) == 0, "nothing left behind: no namespace, link, pin or process (BIRD included) of this run (%d found)", len(left))
	d.printf("\ndone in %.1fs\n", time.Since(start).Seconds())
	return d.result()
}

func (d *clusterDemo) result() error {
	if len(d.failed) > 0 {
		return fmt.Errorf("%d claims failed: %s", len(d.failed), strings.Join(d.failed, "; "))
	}
	return nil
}

func (d *clusterDemo) writeConfigs() error {
	l := d.l
	// A key as the README makes one (openssl rand -base64 48): raw bytes
	// would lose a last byte that is a newline, which the file format
	// strips, and then be too short once in 128 runs.
	raw := make([]byte, 48)
	if _, err := rand.Read(raw); err != nil {
		return err
	}
	key := append(base64.StdEncoding.AppendEncode(nil, raw), '\n')
	keyPath := filepath.Join(l.RunDir(), "mirror.key")
	pwPath := filepath.Join(l.RunDir(), "bgp.pw")
	if err := os.WriteFile(keyPath, key, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(pwPath, []byte("limpet-demo-md5\n"), 0o600); err != nil {
		return err
	}
	r4, _ := l.RouterAddrs()
	bs := l.Balancers()
	for i, b := range bs {
		pin := fmt.Sprintf("%s-n%d", l.PinDir(), i)
		var peers []string
		for k, o := range bs {
			if k != i {
				peers = append(peers, netip.AddrPortFrom(o.BackAddr4, 7946).String())
			}
		}
		var s strings.Builder
		fmt.Fprintf(&s, "settings: {interfaces: [%s, %s], pin_path: %s, gc_interval: 0.5, flow_table_size: 65536}\n", b.ClientIface.Name, b.MemberIfaces[0].Name, pin)
		fmt.Fprintf(&s, "ha_mirroring: {listen: %s, peers: [%s], mode: active_active, heartbeat_interval: 0.2, reconnect_backoff: {initial: 0.1, max: 0.5}, auth: {psk_file: %s}}\n",
			netip.AddrPortFrom(b.BackAddr4, 7946), strings.Join(peers, ", "), keyPath)
		fmt.Fprintf(&s, "bgp:\n  asn: 65001\n  router_id: %s\n  damping_interval: 1\n  shutdown_grace: 1\n  sync_timeout: 2\n", b.Addr4)
		fmt.Fprintf(&s, "  neighbors: [{address: %s, peer_asn: 65000, hold_time: 3, keepalive_interval: 1, connect_retry: 1, password_file: %s}]\n", r4, pwPath)
		s.WriteString("health_monitors: [{name: tcp80, type: tcp, interval: 0.5}]\n")
		s.WriteString("persistence_profiles: [{name: sticky, timeout: 300, ha_mirroring: true}]\n")
		s.WriteString("pools:\n  - name: web\n    health_monitor: tcp80\n    members:\n")
		for _, m := range l.Members() {
			fmt.Fprintf(&s, "      - {name: %s, address: %s}\n", m.Name, m.Addr4)
		}
		fmt.Fprintf(&s, "virtual_servers: [{name: web, address: %s, port: 80, protocol: tcp, pool: web, persistence: sticky, forwarding: dsr}]\n", d.vip)
		cfg := filepath.Join(l.RunDir(), fmt.Sprintf("limpet-n%d.yaml", i))
		if err := os.WriteFile(cfg, []byte(s.String()), 0o600); err != nil {
			return err
		}
		d.pins, d.cfgs = append(d.pins, pin), append(d.cfgs, cfg)
	}
	return nil
}

func (d *clusterDemo) waitNexthops(ctx context.Context, p netip.Prefix, n int, limit time.Duration) (time.Duration, []netip.Addr) {
	start := time.Now()
	for {
		nh, _ := d.router.Nexthops(p)
		if len(nh) == n || time.Since(start) > limit || ctx.Err() != nil {
			return time.Since(start), nh
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// round sends n concurrent GETs from every client and returns the member
// of each client that reached only one.
func (d *clusterDemo) round(ctx context.Context, clients []netip.Addr, n int) (map[netip.Addr]string, int) {
	var mu sync.Mutex
	out := map[netip.Addr]string{}
	failed := 0
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	dst := netip.AddrPortFrom(d.vip, 80)
	for _, c := range clients {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			var cw sync.WaitGroup
			got := make([]string, n)
			for k := range n {
				cw.Go(func() {
					rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
					defer cancel()
					if r, err := d.l.Get(rctx, c, lab.URL(dst, "/")); err == nil && r.Status == 200 {
						got[k] = r.Member
					}
				})
			}
			cw.Wait()
			mu.Lock()
			defer mu.Unlock()
			ms := map[string]bool{}
			for _, m := range got {
				if m == "" {
					failed++
					continue
				}
				ms[m] = true
			}
			if len(ms) == 1 && !slices.Contains(got, "") {
				out[c] = got[0]
			}
		})
	}
	wg.Wait()
	return out, failed
}

func (d *clusterDemo) nodeConns() []uint64 {
	out := make([]uint64, len(d.pins))
	for i, pin := range d.pins {
		b, err := exec.Command(d.opts.Binary, "--pin-path", pin, "stats", "-o", "json").Output()
		if err != nil {
			continue
		}
		var s struct {
			VirtualServers []vsCounters `json:"virtual_servers"`
		}
		if jsonUnmarshal(b, &s) == nil {
			for _, v := range s.VirtualServers {
				out[i] += v.NewFlows
			}
		}
	}
	return out
}

func (d *clusterDemo) cleanupCluster() {
	d.removeLab(func() {
		for _, pin := range d.pins {
			if out, err := exec.Command(d.opts.Binary, "--pin-path", pin, "detach").CombinedOutput(); err != nil && !errors.Is(err, os.ErrNotExist) &&
				!strings.Contains(string(out), "no limpet datapath") {
				d.printf("  detach %s: %v %s\n", pin, err, out)
			}
		}
	})
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
