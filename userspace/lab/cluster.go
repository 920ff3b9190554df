package lab

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// HostRouter is the router of a cluster lab (Spec.Cluster).
const HostRouter = "router"

// Cluster topology (Spec.Cluster): a router host between the client and
// the balancers ("nodes"), which all serve the same VIPs in DSR mode. The
// router learns the VIPs from the nodes by BGP (a real BIRD 2, see
// StartRouter) and spreads connections over them with L4-hash ECMP.
//
//	client ──veth── router ──┬─ sw:brf ──┬── lb  ─┐
//	                         │           ├── lb1 ─┤
//	                         │           └── lb2 ─┤
//	                         └─ sw:brm ───────────┴── m1, m2, m3 ...
//
// Addressing:
//
//	client link    198.18.0.0/24, fd00:1e::/64: client .1, router .254
//	front (brf)    198.18.1.0/24, fd00:1e:0:1::/64: router .254, node i .(10+i)
//	back (brm)     198.18.16.0/24, fd00:1e:0:16::/64: router .254, node i .(1+i), member j .(100+j)
//
// Members hold the VIPs on their loopback and answer clients directly
// through the router (their default route), as DSR needs. The nodes reach
// the members on the back segment (static neighbours, so XDP forwards the
// first packet) and each other there too (mirroring). BGP runs on the
// front segment: a link cut there is seen by the router only through the
// BGP hold timer.
var (
	routerClient4 = v4(0, 254)
	routerClient6 = v6(0, 254)
	routerFront4  = v4(1, 254)
	routerFront6  = v6(1, 254)
	routerBack4   = v4(16, 254)
	routerBack6   = v6(16, 254)
)

// RouterAddrs are the router's addresses on the front segment (the BGP
// neighbour address of every node).
func (l *Lab) RouterAddrs() (netip.Addr, netip.Addr) { return routerFront4, routerFront6 }

var routerSysctls = []sysctlKV{
	{"net/ipv4/ip_forward", "1"},
	{"net/ipv6/conf/all/forwarding", "1"},
	{"net/ipv6/conf/default/forwarding", "1"},
	// Hash on the 5-tuple, so one client's connections spread over the nodes.
	{"net/ipv4/fib_multipath_hash_policy", "1"},
	{"net/ipv6/fib_multipath_hash_policy", "1"},
}

// addClientRouter adds the client and router hosts of the topologies in
// which a router joins the client to the rest.
func (l *Lab) addClientRouter() (client, router *host, err error) {
	if client, err = l.addHost(HostClient, clientSysctls); err != nil {
		return nil, nil, err
	}
	if router, err = l.addHost(HostRouter, routerSysctls); err != nil {
		return nil, nil, err
	}
	return client, router, nil
}

// linkClientRouter joins the client to the router, in the cluster and the
// routed topology: rc on the router, c on the client (ClientIface).
func (l *Lab) linkClientRouter(client, router *host, ends *[]vethEnd) error {
	rc, ci, err := l.veth(router, "rc", mac(0x0e, 0, 0, 0), client, "c", mac(0x0c, 0, 0, 1))
	if err != nil {
		return err
	}
	l.clientIface, l.routerClientIface = ci, rc
	*ends = append(*ends, vethEnd{router, rc.Name, false}, vethEnd{client, ci.Name, true})
	return nil
}

// addrClientRouter sets up the client link of linkClientRouter: both ends'
// addresses, the client prefixes on the client, its default routes through
// the router, and the router's routes back to the client prefixes.
func (l *Lab) addrClientRouter(client, router *host) error {
	l.clientAddr4, l.clientAddr6 = v4(0, 1), v6(0, 1)
	if err := l.addClientAddrs(client); err != nil {
		return err
	}
	rc, ci := l.routerClientIface.Index, l.clientIface.Index
	if err := addrAdd(router, rc, routerClient4, 24); err != nil {
		return err
	}
	if err := addrAdd(router, rc, routerClient6, 64); err != nil {
		return err
	}
	if err := routeVia(client, ci, netip.Prefix{}, routerClient4, false); err != nil {
		return err
	}
	if err := routeVia(client, ci, netip.Prefix{}, routerClient6, false); err != nil {
		return err
	}
	if err := routeVia(router, rc, clientPrefix4, l.clientAddr4, false); err != nil {
		return err
	}
	return routeVia(router, rc, clientPrefix6, l.clientAddr6, false)
}

func (l *Lab) buildCluster(ctx context.Context) error {
	s := l.spec
	client, router, err := l.addClientRouter()
	if err != nil {
		return err
	}
	sw, err := l.addHost(HostSwitch, switchSysctls)
	if err != nil {
		return err
	}
	lbs, err := l.addHosts(balancerHosts(s.Balancers), balancerSysctls)
	if err != nil {
		return err
	}
	mhosts, err := l.addMemberHosts(ctx, dsrSysctls)
	if err != nil {
		return err
	}

	var ends []vethEnd
	if err := l.linkClientRouter(client, router, &ends); err != nil {
		return err
	}
	brf, err := l.bridge(sw, "brf")
	if err != nil {
		return err
	}
	brm, err := l.bridge(sw, "brm")
	if err != nil {
		return err
	}
	_, rf, err := l.switchPort(sw, brf, "srf", router, "rf", mac(0x0e, 0, 1, 0), false, &ends)
	if err != nil {
		return err
	}
	_, rb, err := l.switchPort(sw, brm, "srb", router, "rb", mac(0x0e, 0, 2, 0), false, &ends)
	if err != nil {
		return err
	}

	l.balancers = make([]Balancer, s.Balancers)
	for i, lb := range lbs {
		b := &l.balancers[i]
		*b = Balancer{Host: BalancerHost(i), NetNS: lb.netns, Addr4: v4(1, 10+i), Addr6: v6(1, 10+i), BackAddr4: v4(16, 1+i), BackAddr6: v6(16, 1+i)}
		port, bf, err := l.switchPort(sw, brf, fmt.Sprintf("sb%df", i), lb, fmt.Sprintf("b%df", i), mac(0x0b, byte(i), 0, 0), false, &ends)
		if err != nil {
			return err
		}
		b.ClientIface, b.FrontSwitchPort = bf, port
		// A static FDB entry, as a switch with port security has: with the
		// port down, frames for the node are dropped, not flooded to the
		// other nodes (whose XDP program would forward them).
		if err := sw.nl.NeighSet(&netlink.Neigh{LinkIndex: port.Index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_MASTER,
			State: netlink.NUD_NOARP, HardwareAddr: bf.MAC}); err != nil {
			return fmt.Errorf("lab: fdb entry for %s: %w", bf.Name, err)
		}
		_, bm, err := l.switchPort(sw, brm, fmt.Sprintf("sb%dm", i), lb, fmt.Sprintf("b%dm", i), mac(0x0b, byte(i), 1, 0), false, &ends)
		if err != nil {
			return err
		}
		b.MemberIfaces = []Iface{bm}
	}
	l.members = make([]*member, len(s.Members))
	for j, name := range s.Members {
		m := &member{lab: l, h: mhosts[j], info: Member{Name: name, NetNS: mhosts[j].netns,
			Addr4: v4(16, 100+j), Addr6: v6(16, 100+j), Gateway4: routerBack4, Gateway6: routerBack6}}
		l.members[j] = m
		if _, m.info.Iface, err = l.switchPort(sw, brm, fmt.Sprintf("sm%d", j), mhosts[j], fmt.Sprintf("m%d", j), mac(0x0d, byte(j), 0, 0), true, &ends); err != nil {
			return err
		}
	}
	if err := setOffloads(ends); err != nil {
		return err
	}

	// Addresses and routes.
	if err := l.addrClientRouter(client, router); err != nil {
		return err
	}
	addrs := []ifaceAddr{
		{router, rf.Index, routerFront4, 24}, {router, rf.Index, routerFront6, 64},
		{router, rb.Index, routerBack4, 24}, {router, rb.Index, routerBack6, 64},
	}
	for i, lb := range lbs {
		b := l.balancers[i]
		addrs = append(addrs, ifaceAddr{lb, b.ClientIface.Index, b.Addr4, 24}, ifaceAddr{lb, b.ClientIface.Index, b.Addr6, 64},
			ifaceAddr{lb, b.MemberIfaces[0].Index, b.BackAddr4, 24}, ifaceAddr{lb, b.MemberIfaces[0].Index, b.BackAddr6, 64})
	}
	for _, m := range l.members {
		addrs = append(addrs, ifaceAddr{m.h, m.info.Iface.Index, m.info.Addr4, 24}, ifaceAddr{m.h, m.info.Iface.Index, m.info.Addr6, 64})
	}
	if err := addAddrs(addrs); err != nil {
		return err
	}
	for i, lb := range lbs {
		b := l.balancers[i]
		if err := routeVia(lb, b.ClientIface.Index, netip.Prefix{}, routerFront4, false); err != nil {
			return err
		}
		if err := routeVia(lb, b.ClientIface.Index, netip.Prefix{}, routerFront6, false); err != nil {
			return err
		}
		// XDP forwards the first packet only to a resolved neighbour.
		for _, m := range l.members {
			if err := neighAdd(lb, b.MemberIfaces[0].Index, m.info.Addr4, m.info.Iface.MAC); err != nil {
				return err
			}
			if err := neighAdd(lb, b.MemberIfaces[0].Index, m.info.Addr6, m.info.Iface.MAC); err != nil {
				return err
			}
		}
	}
	for _, m := range l.members {
		if err := routeVia(m.h, m.info.Iface.Index, netip.Prefix{}, routerBack4, false); err != nil {
			return err
		}
		if err := routeVia(m.h, m.info.Iface.Index, netip.Prefix{}, routerBack6, false); err != nil {
			return err
		}
		if err := addrAddLo(m.h, s.VIPs); err != nil {
			return err
		}
	}
	return l.finishBuild(ctx)
}

// RouterSpec configures the router's BIRD: one BGP session per node and
// family, ECMP over every node that announces a prefix.
type RouterSpec struct {
	// ASN is the router's own ASN (default 65000); NodeASN the one it
	// expects of every node (default 65001).
	ASN, NodeASN uint32
	// Password is the TCP MD5 password of every session ("" none).
	Password string
	// NodeASNs and NodePasswords override ASN and password per node index.
	NodeASNs      map[int]uint32
	NodePasswords map[int]string
	// HoldTime and Keepalive in seconds (default 3 and 1).
	HoldTime, Keepalive int
	// IPv6 adds an IPv6 session per node for the IPv6 VIPs.
	IPv6 bool
}

// Router is the running BIRD of a cluster lab.
type Router struct {
	Spec    RouterSpec
	Proc    *Process
	Config  string // bird.conf path
	Socket  string // control socket, for birdc -s
	lab     *Lab
	started time.Time
}

// BIRDBinary and BIRDCBinary are BIRD 2's programs (Debian's bird2).
var (
	BIRDBinary  = "bird"
	BIRDCBinary = "birdc"
)

// RouterProtocol names BIRD's BGP protocol for node i and a family.
func RouterProtocol(i int, v6 bool) string {
	if v6 {
		return fmt.Sprintf("node%dv6", i)
	}
	return fmt.Sprintf("node%d", i)
}

func (rs *RouterSpec) normalize() {
	rs.ASN = cmp.Or(rs.ASN, 65000)
	rs.NodeASN = cmp.Or(rs.NodeASN, 65001)
	rs.HoldTime = cmp.Or(rs.HoldTime, 3)
	rs.Keepalive = cmp.Or(rs.Keepalive, 1)
}

func birdString(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// birdConfig renders bird.conf for the lab's nodes.
func (l *Lab) birdConfig(rs RouterSpec) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# limpet lab %s: router of the cluster topology\nlog stderr all;\nrouter id %s;\n", l.suffix, routerFront4)
	b.WriteString(`protocol device { scan time 1; }
protocol kernel kern4 {
	ipv4 { import none; export where source = RTS_BGP; };
	merge paths yes limit 16;
	scan time 1;
}
protocol kernel kern6 {
	ipv6 { import none; export where source = RTS_BGP; };
	merge paths yes limit 16;
	scan time 1;
}
`)
	fmt.Fprintf(&b, "template bgp limpetnode {\n\tlocal as %d;\n\thold time %d;\n\tkeepalive time %d;\n", rs.ASN, rs.HoldTime, rs.Keepalive)
	b.WriteString("\tconnect delay time 1;\n\tconnect retry time 1;\n\terror wait time 1, 2;\n\terror forget time 5;\n}\n")
	for i, n := range l.balancers {
		asn := rs.NodeASN
		if a, ok := rs.NodeASNs[i]; ok {
			asn = a
		}
		pw := rs.Password
		if p, ok := rs.NodePasswords[i]; ok {
			pw = p
		}
		pwLine := ""
		if pw != "" {
			pwLine = "\tpassword " + birdString(pw) + ";\n"
		}
		fmt.Fprintf(&b, "protocol bgp %s from limpetnode {\n\tneighbor %s as %d;\n%s\tipv4 { import all; export none; };\n}\n", RouterProtocol(i, false), n.Addr4, asn, pwLine)
		if rs.IPv6 {
			fmt.Fprintf(&b, "protocol bgp %s from limpetnode {\n\tneighbor %s as %d;\n%s\tipv6 { import all; export none; };\n}\n", RouterProtocol(i, true), n.Addr6, asn, pwLine)
		}
	}
	return b.String()
}

// StartRouter writes the router's bird.conf to the lab's run directory
// and starts BIRD in the router host (stopped and removed by Close, like
// every process of the lab). It waits until BIRD answers on its control
// socket.
func (l *Lab) StartRouter(ctx context.Context, rs RouterSpec) (*Router, error) {
	if l.hosts[HostRouter] == nil {
		return nil, errors.New("lab: no router: build the lab with Spec.Cluster")
	}
	rs.normalize()
	dir := filepath.Join(l.runDir, "bird")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	r := &Router{Spec: rs, Config: filepath.Join(dir, "bird.conf"), Socket: filepath.Join(dir, "bird.ctl"), lab: l}
	if err := os.WriteFile(r.Config, []byte(l.birdConfig(rs)), 0o600); err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	p, err := l.StartProcess(HostRouter, BIRDBinary, "-f", "-c", r.Config, "-s", r.Socket, "-P", filepath.Join(dir, "bird.pid"))
	if err != nil {
		return nil, err
	}
	r.Proc, r.started = p, time.Now()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := r.BIRDC(ctx, "show", "status"); err == nil {
			return r, nil
		} else if time.Now().After(deadline) || !p.Running() || ctx.Err() != nil {
			_ = p.Stop(time.Second)
			return nil, fmt.Errorf("lab: BIRD did not come up: %v\n%s", err, p.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// BIRDC runs birdc against the router's control socket and returns its output.
func (r *Router) BIRDC(ctx context.Context, args ...string) (string, error) {
	out, err := r.lab.RunCommand(ctx, HostRouter, BIRDCBinary, append([]string{"-s", r.Socket}, args...)...)
	if err != nil {
		return string(out), fmt.Errorf("birdc %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Nexthops returns the next hops of the router's kernel route for prefix
// (empty when there is none): what ECMP spreads the prefix's traffic over.
func (r *Router) Nexthops(prefix netip.Prefix) ([]netip.Addr, error) {
	h := r.lab.hosts[HostRouter]
	fam := unix.AF_INET
	if prefix.Addr().Is6() {
		fam = unix.AF_INET6
	}
	routes, err := h.nl.RouteListFiltered(fam, &netlink.Route{Dst: ipnet(prefix.Addr(), prefix.Bits()), Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("lab: router routes: %w", err)
	}
	var out []netip.Addr
	for _, rt := range routes {
		if rt.Dst == nil || rt.Dst.String() != ipnet(prefix.Addr(), prefix.Bits()).String() {
			continue
		}
		if len(rt.MultiPath) > 0 {
			for _, nh := range rt.MultiPath {
				if a, ok := netip.AddrFromSlice(nh.Gw); ok {
					out = append(out, a.Unmap())
				}
			}
		} else if a, ok := netip.AddrFromSlice(rt.Gw); ok {
			out = append(out, a.Unmap())
		}
	}
	return out, nil
}

// SetFrontLink takes node i's link to the front segment down or up at the
// switch: the node's interface loses its carrier, the router notices
// nothing but silence (the BGP hold timer).
func (l *Lab) SetFrontLink(i int, up bool) error {
	if i < 0 || i >= len(l.balancers) || l.balancers[i].FrontSwitchPort.Name == "" {
		return fmt.Errorf("lab: no cluster node %d", i)
	}
	sw := l.hosts[HostSwitch]
	lk, err := sw.nl.LinkByName(l.balancers[i].FrontSwitchPort.Name)
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	if up {
		err = sw.nl.LinkSetUp(lk)
	} else {
		err = sw.nl.LinkSetDown(lk)
	}
	if err != nil {
		return fmt.Errorf("lab: link %s: %w", lk.Attrs().Name, err)
	}
	return nil
}

// SetBackLink takes node i's link to the member segment down or up (at
// the node): its monitors then find every member down.
func (l *Lab) SetBackLink(i int, up bool) error {
	if i < 0 || i >= len(l.balancers) {
		return fmt.Errorf("lab: no node %d", i)
	}
	h := l.hosts[BalancerHost(i)]
	lk, err := h.nl.LinkByName(l.balancers[i].MemberIfaces[0].Name)
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	if !up {
		return h.nl.LinkSetDown(lk)
	}
	if err := h.nl.LinkSetUp(lk); err != nil {
		return err
	}
	// Taking a link down flushed its permanent neighbours.
	for _, m := range l.members {
		if err := neighAdd(h, lk.Attrs().Index, m.info.Addr4, m.info.Iface.MAC); err != nil {
			return err
		}
		if err := neighAdd(h, lk.Attrs().Index, m.info.Addr6, m.info.Iface.MAC); err != nil {
			return err
		}
	}
	return nil
}

// RouterClientIface is the router's interface towards the client.
func (l *Lab) RouterClientIface() Iface { return l.routerClientIface }
