package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/limpet-lb/limpet/userspace/veth"
)

// addHost creates a named namespace for a host, a netlink handle in it, and
// brings its loopback up. The host is recorded before anything is created,
// so that Close removes whatever part of it exists.
// addHost creates a host's namespace with lo up and the sysctls every
// host gets, then those of its role (before any link exists, so that new
// links inherit the "default" values).
func (l *Lab) addHost(name string, role ...[]sysctlKV) (*host, error) {
	h := &host{name: name, netns: NSPrefix + name + "-" + l.suffix, ns: -1}
	l.hosts[name] = h
	l.hostOrder = append(l.hostOrder, name)
	ns, err := createNamedNS(h.netns)
	if err != nil {
		return nil, err
	}
	h.ns = ns
	if h.nl, err = netlink.NewHandleAt(ns); err != nil {
		return nil, fmt.Errorf("lab: netlink handle in %s: %w", h.netns, err)
	}
	lo, err := h.nl.LinkByName("lo")
	if err == nil {
		err = h.nl.LinkSetUp(lo)
	}
	if err != nil {
		return nil, fmt.Errorf("lab: %s: lo up: %w", h.netns, err)
	}
	if err := setSysctls(h, append([][]sysctlKV{commonSysctls}, role...)...); err != nil {
		return nil, err
	}
	return h, nil
}

func (l *Lab) ifname(tag string) string { return LinkPrefix + tag + "-" + l.suffix }

func mac(a, b, c, d byte) net.HardwareAddr { return net.HardwareAddr{0x02, 0x1e, a, b, c, d} }

// veth creates a veth pair from host a (name tag ta) to host b (tag tb), both
// ends up. A nil MAC lets the kernel choose.
//
// The two ends must not share an ifindex: if they do, the kernel's linkwatch
// treats the carrier change as non-urgent and delays it by up to a second, and
// with it IPv6 link-local addresses and neighbour discovery. Fresh namespaces
// number their first device 2, so the first veth a host creates is made with
// both ends in a, and the b end is moved to b (it keeps its a-side ifindex).
// Moving costs a synchronize_net (~15ms), so later veths, whose a end gets a
// higher ifindex, are created straight into b.
func (l *Lab) veth(a *host, ta string, ma net.HardwareAddr, b *host, tb string, mb net.HardwareAddr) (Iface, Iface, error) {
	an, bn := l.ifname(ta), l.ifname(tb)
	v := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: an, HardwareAddr: ma},
		PeerName:         bn,
		PeerHardwareAddr: mb,
	}
	move := a.links == 0
	if !move {
		v.PeerNamespace = netlink.NsFd(int(b.ns))
	}
	if err := a.nl.LinkAdd(v); err != nil {
		return Iface{}, Iface{}, fmt.Errorf("lab: veth %s(%s)-%s(%s): %w", an, a.name, bn, b.name, err)
	}
	a.links++
	b.links++
	if move {
		peer, err := a.nl.LinkByName(bn)
		if err == nil {
			err = a.nl.LinkSetNsFd(peer, int(b.ns))
		}
		if err != nil {
			return Iface{}, Iface{}, fmt.Errorf("lab: move %s to %s: %w", bn, b.netns, err)
		}
	}
	ia, err := linkUp(a, an)
	if err != nil {
		return Iface{}, Iface{}, err
	}
	ib, err := linkUp(b, bn)
	if err != nil {
		return Iface{}, Iface{}, err
	}
	ia.Peer, ib.Peer = b.name, a.name
	return ia, ib, nil
}

func linkUp(h *host, name string) (Iface, error) {
	lk, err := h.nl.LinkByName(name)
	if err == nil {
		err = h.nl.LinkSetUp(lk)
	}
	if err != nil {
		return Iface{}, fmt.Errorf("lab: %s in %s: %w", name, h.netns, err)
	}
	at := lk.Attrs()
	return Iface{Host: h.name, Name: name, Index: at.Index, MAC: at.HardwareAddr}, nil
}

func (l *Lab) bridge(h *host, tag string) (netlink.Link, error) {
	off := false
	name := l.ifname(tag)
	if err := h.nl.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}, MulticastSnooping: &off}); err != nil {
		return nil, fmt.Errorf("lab: bridge %s: %w", name, err)
	}
	h.links++
	if _, err := linkUp(h, name); err != nil {
		return nil, err
	}
	return h.nl.LinkByName(name)
}

func enslave(h *host, port Iface, br netlink.Link) error {
	if err := h.nl.LinkSetMasterByIndex(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: port.Index}}, br.Attrs().Index); err != nil {
		return fmt.Errorf("lab: enslave %s to %s: %w", port.Name, br.Attrs().Name, err)
	}
	return nil
}

// switchPort links peer to bridge br of switch sw: a veth whose switch end,
// port, is enslaved to br. Both ends join ends, peer's with TX checksum
// offload off if txCsumOff.
func (l *Lab) switchPort(sw *host, br netlink.Link, port string, peer *host, name string, peerMAC net.HardwareAddr, txCsumOff bool, ends *[]vethEnd) (Iface, Iface, error) {
	sp, pi, err := l.veth(sw, port, nil, peer, name, peerMAC)
	if err != nil {
		return sp, pi, err
	}
	if err := enslave(sw, sp, br); err != nil {
		return sp, pi, err
	}
	*ends = append(*ends, vethEnd{sw, sp.Name, false}, vethEnd{peer, pi.Name, txCsumOff})
	return sp, pi, nil
}

// balancerHosts names the hosts of n balancers.
func balancerHosts(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = BalancerHost(i)
	}
	return names
}

// addHosts adds a host of each name, all with the same role.
func (l *Lab) addHosts(names []string, role ...[]sysctlKV) ([]*host, error) {
	hosts := make([]*host, len(names))
	for j, name := range names {
		h, err := l.addHost(name, role...)
		if err != nil {
			return nil, err
		}
		hosts[j] = h
	}
	return hosts, nil
}

// addMemberHosts adds the members' hosts, the last hosts a topology adds,
// and stops there if ctx is done: the links come next.
func (l *Lab) addMemberHosts(ctx context.Context, role ...[]sysctlKV) ([]*host, error) {
	mhosts, err := l.addHosts(l.spec.Members, role...)
	if err != nil {
		return nil, err
	}
	return mhosts, ctx.Err()
}

// ifaceAddr is an address, with its prefix length, for a host's interface.
type ifaceAddr struct {
	h    *host
	idx  int
	addr netip.Addr
	bits int
}

func addAddrs(addrs []ifaceAddr) error {
	for _, x := range addrs {
		if err := addrAdd(x.h, x.idx, x.addr, x.bits); err != nil {
			return err
		}
	}
	return nil
}

func ipnet(a netip.Addr, bits int) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, a.BitLen())}
}

func addrAdd(h *host, ifindex int, a netip.Addr, bits int) error {
	ad := &netlink.Addr{IPNet: ipnet(a, bits)}
	if a.Is6() {
		ad.Flags = unix.IFA_F_NODAD
	}
	if err := h.nl.AddrAdd(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: ifindex}}, ad); err != nil {
		return fmt.Errorf("lab: %s: add %s/%d: %w", h.name, a, bits, err)
	}
	return nil
}

func addrAddLo(h *host, addrs []netip.Addr) error {
	lo, err := h.nl.LinkByName("lo")
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if err := addrAdd(h, lo.Attrs().Index, a, a.BitLen()); err != nil {
			return err
		}
	}
	return nil
}

func routeVia(h *host, ifindex int, dst netip.Prefix, gw netip.Addr, replace bool) error {
	r := &netlink.Route{LinkIndex: ifindex, Gw: gw.AsSlice()}
	if dst.IsValid() {
		r.Dst = ipnet(dst.Addr(), dst.Bits())
	}
	var err error
	if replace {
		err = h.nl.RouteReplace(r)
	} else {
		err = h.nl.RouteAdd(r)
	}
	if err != nil {
		return fmt.Errorf("lab: %s: route %v via %s: %w", h.name, dst, gw, err)
	}
	return nil
}

// anyIP makes every address of p local to h (ip route add local P dev lo).
func anyIP(h *host, p netip.Prefix) error {
	lo, err := h.nl.LinkByName("lo")
	if err != nil {
		return err
	}
	r := &netlink.Route{
		LinkIndex: lo.Attrs().Index,
		Dst:       ipnet(p.Addr(), p.Bits()),
		Table:     unix.RT_TABLE_LOCAL,
		Type:      unix.RTN_LOCAL,
		Scope:     netlink.SCOPE_HOST,
	}
	if err := h.nl.RouteAdd(r); err != nil {
		return fmt.Errorf("lab: %s: local route %v: %w", h.name, p, err)
	}
	return nil
}

func neighAdd(h *host, ifindex int, a netip.Addr, hw net.HardwareAddr) error {
	fam := unix.AF_INET
	if a.Is6() {
		fam = unix.AF_INET6
	}
	n := &netlink.Neigh{LinkIndex: ifindex, Family: fam, State: netlink.NUD_PERMANENT, IP: a.AsSlice(), HardwareAddr: hw}
	if err := h.nl.NeighSet(n); err != nil {
		return fmt.Errorf("lab: %s: neighbour %s: %w", h.name, a, err)
	}
	return nil
}

type sysctlKV struct{ k, v string }

var (
	commonSysctls = []sysctlKV{
		{"net/ipv6/conf/all/accept_dad", "0"},
		{"net/ipv6/conf/default/accept_dad", "0"},
		{"net/ipv6/conf/all/accept_ra", "0"},
		{"net/ipv6/conf/default/accept_ra", "0"},
		// DAD is skipped, but the kernel still defers the end of it (and so
		// link-local addresses) by a random delay below rtr_solicit_delay (1s).
		{"net/ipv6/conf/all/router_solicitation_delay", "0"},
		{"net/ipv6/conf/default/router_solicitation_delay", "0"},
		{"net/ipv6/conf/all/router_solicitations", "0"},
		{"net/ipv6/conf/default/router_solicitations", "0"},
		{"net/ipv4/conf/all/rp_filter", "0"},
		{"net/ipv4/conf/default/rp_filter", "0"},
	}
	balancerSysctls = []sysctlKV{
		{"net/ipv4/ip_forward", "1"},
		{"net/ipv6/conf/all/forwarding", "1"},
		{"net/ipv6/conf/default/forwarding", "1"},
	}
	clientSysctls = []sysctlKV{
		{"net/ipv4/ip_nonlocal_bind", "1"},
		{"net/ipv6/ip_nonlocal_bind", "1"},
		{"net/ipv4/conf/all/arp_announce", "2"},
	}
	dsrSysctls = []sysctlKV{
		{"net/ipv4/conf/all/arp_ignore", "1"},
		{"net/ipv4/conf/default/arp_ignore", "1"},
		{"net/ipv4/conf/all/arp_announce", "2"},
		{"net/ipv4/conf/default/arp_announce", "2"},
	}
	switchSysctls = []sysctlKV{
		{"net/ipv6/conf/all/disable_ipv6", "1"},
		{"net/ipv6/conf/default/disable_ipv6", "1"},
	}
)

func setSysctls(h *host, lists ...[]sysctlKV) error {
	return h.run(func() error {
		for _, list := range lists {
			for _, kv := range list {
				if err := sysctl(kv.k, kv.v); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// vethEnd is a veth end whose offloads build() tunes.
type vethEnd struct {
	h         *host
	name      string
	txCsumOff bool
}

// setOffloads turns GRO on at every veth end (XDP_REDIRECT into a veth needs
// GRO or an XDP program on the receiving peer), and TX checksum offload off
// at the ends that say so: where packets towards the balancer are sent, so
// that they carry full checksums.
func setOffloads(ends []vethEnd) error {
	for _, e := range ends {
		err := e.h.run(func() error {
			if err := veth.Set(e.name, veth.GRO, true); err != nil {
				return fmt.Errorf("lab: %s: %w", e.name, err)
			}
			if e.txCsumOff {
				if err := veth.Set(e.name, veth.TXChecksum, false); err != nil {
					return fmt.Errorf("lab: %s: %w", e.name, err)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func (l *Lab) build(ctx context.Context) error {
	if l.spec.Cluster {
		return l.buildCluster(ctx)
	}
	if l.spec.Routed {
		return l.buildRouted(ctx)
	}
	s := l.spec
	ha := s.Balancers > 1

	// Hosts and their sysctls (before any link exists, so that new links
	// inherit the "default" values).
	client, err := l.addHost(HostClient, clientSysctls)
	if err != nil {
		return err
	}
	lbs, err := l.addHosts(balancerHosts(s.Balancers), balancerSysctls)
	if err != nil {
		return err
	}
	var sw *host
	if ha {
		if sw, err = l.addHost(HostSwitch, switchSysctls); err != nil {
			return err
		}
	}
	var role [][]sysctlKV
	if s.DSR {
		role = append(role, dsrSysctls)
	}
	mhosts, err := l.addMemberHosts(ctx, role...)
	if err != nil {
		return err
	}

	// Links.
	var ends []vethEnd
	l.balancers = make([]Balancer, s.Balancers)
	for i := range l.balancers {
		l.balancers[i] = Balancer{
			Host:  BalancerHost(i),
			NetNS: lbs[i].netns,
			Addr4: v4(0, 2+i),
			Addr6: v6(0, 2+i),
		}
	}
	l.clientAddr4, l.clientAddr6 = v4(0, 1), v6(0, 1)
	l.members = make([]*member, len(s.Members))
	for j, name := range s.Members {
		m := &member{lab: l, h: mhosts[j], info: Member{Name: name, NetNS: mhosts[j].netns}}
		if ha {
			m.info.Addr4, m.info.Addr6 = v4(16, 100+j), v6(16, 100+j)
			m.info.Gateway4, m.info.Gateway6 = v4(16, 1), v6(16, 1)
		} else {
			m.info.Addr4, m.info.Addr6 = v4(16+j, 2), v6(16+j, 2)
			m.info.Gateway4, m.info.Gateway6 = v4(16+j, 1), v6(16+j, 1)
		}
		l.members[j] = m
	}
	clientMAC := mac(0x0c, 0, 0, 1)
	memberMAC := func(j int) net.HardwareAddr { return mac(0x0d, byte(j), 0, 0) }
	if !ha {
		lb := lbs[0]
		b := &l.balancers[0]
		if b.ClientIface, l.clientIface, err = l.veth(lb, "b0c", mac(0x0b, 0, 0, 0), client, "c", clientMAC); err != nil {
			return err
		}
		ends = append(ends, vethEnd{lb, b.ClientIface.Name, false}, vethEnd{client, l.clientIface.Name, true})
		for j, m := range l.members {
			bi, mi, err := l.veth(lb, fmt.Sprintf("b0m%d", j), mac(0x0b, 0, 2, byte(j)), mhosts[j], fmt.Sprintf("m%d", j), memberMAC(j))
			if err != nil {
				return err
			}
			b.MemberIfaces = append(b.MemberIfaces, bi)
			m.info.Iface, m.info.BalancerIface = mi, bi
			ends = append(ends, vethEnd{lb, bi.Name, false}, vethEnd{mhosts[j], mi.Name, true})
		}
	} else {
		brc, err := l.bridge(sw, "brc")
		if err != nil {
			return err
		}
		brm, err := l.bridge(sw, "brm")
		if err != nil {
			return err
		}
		if _, l.clientIface, err = l.switchPort(sw, brc, "sc", client, "c", clientMAC, true, &ends); err != nil {
			return err
		}
		for i, lb := range lbs {
			b := &l.balancers[i]
			if _, b.ClientIface, err = l.switchPort(sw, brc, fmt.Sprintf("sb%dc", i), lb, fmt.Sprintf("b%dc", i), mac(0x0b, byte(i), 0, 0), false, &ends); err != nil {
				return err
			}
			_, bm, err := l.switchPort(sw, brm, fmt.Sprintf("sb%dm", i), lb, fmt.Sprintf("b%dm", i), mac(0x0b, byte(i), 1, 0), false, &ends)
			if err != nil {
				return err
			}
			b.MemberIfaces = []Iface{bm}
		}
		for j, m := range l.members {
			if _, m.info.Iface, err = l.switchPort(sw, brm, fmt.Sprintf("sm%d", j), mhosts[j], fmt.Sprintf("m%d", j), memberMAC(j), true, &ends); err != nil {
				return err
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	if err := setOffloads(ends); err != nil {
		return err
	}

	// Addresses and routes.
	if err := l.addClientAddrs(client); err != nil {
		return err
	}
	if err := l.clientRoutes(0, false); err != nil {
		return err
	}
	for i, lb := range lbs {
		b := l.balancers[i]
		bc := b.ClientIface.Index
		if err := addrAdd(lb, bc, b.Addr4, 24); err != nil {
			return err
		}
		if err := addrAdd(lb, bc, b.Addr6, 64); err != nil {
			return err
		}
		if err := routeVia(lb, bc, clientPrefix4, l.clientAddr4, false); err != nil {
			return err
		}
		if err := routeVia(lb, bc, clientPrefix6, l.clientAddr6, false); err != nil {
			return err
		}
		if ha {
			if err := addrAdd(lb, b.MemberIfaces[0].Index, v4(16, 1+i), 24); err != nil {
				return err
			}
			if err := addrAdd(lb, b.MemberIfaces[0].Index, v6(16, 1+i), 64); err != nil {
				return err
			}
		} else {
			for j, mi := range b.MemberIfaces {
				if err := addrAdd(lb, mi.Index, v4(16+j, 1), 24); err != nil {
					return err
				}
				if err := addrAdd(lb, mi.Index, v6(16+j, 1), 64); err != nil {
					return err
				}
			}
		}
		if s.VIPsOnBalancer {
			if err := addrAddLo(lb, s.VIPs); err != nil {
				return err
			}
		}
	}
	for _, m := range l.members {
		if err := addrAdd(m.h, m.info.Iface.Index, m.info.Addr4, 24); err != nil {
			return err
		}
		if err := addrAdd(m.h, m.info.Iface.Index, m.info.Addr6, 64); err != nil {
			return err
		}
		if err := l.memberRoutes(m, 0, false); err != nil {
			return err
		}
		if s.DSR {
			if err := addrAddLo(m.h, s.VIPs); err != nil {
				return err
			}
		}
	}

	// Static neighbours.
	if !s.DynamicNeighbours {
		if err := l.staticNeighbours(client, lbs); err != nil {
			return err
		}
	}

	return l.finishBuild(ctx)
}

// finishBuild ends every topology's build the same way: the pin directory
// (when bpffs is mounted where limpet expects it), addresses past DAD, then
// the members' servers.
func (l *Lab) finishBuild(ctx context.Context) error {
	var st unix.Statfs_t
	if unix.Statfs("/sys/fs/bpf", &st) == nil && uint32(st.Type) == uint32(unix.BPF_FS_MAGIC) {
		if err := os.Mkdir(l.pinDir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("lab: %w", err)
		}
	}

	if err := l.waitAddrsReady(ctx); err != nil {
		return err
	}

	// Servers.
	for _, m := range l.members {
		if err := m.startHTTP(); err != nil {
			return err
		}
		if err := m.startUDP(); err != nil {
			return err
		}
	}
	return ctx.Err()
}

func (l *Lab) staticNeighbours(client *host, lbs []*host) error {
	ha := len(lbs) > 1
	ci := l.clientIface.Index
	for i, lb := range lbs {
		b := l.balancers[i]
		if err := neighAdd(client, ci, b.Addr4, b.ClientIface.MAC); err != nil {
			return err
		}
		if err := neighAdd(client, ci, b.Addr6, b.ClientIface.MAC); err != nil {
			return err
		}
		if err := neighAdd(lb, b.ClientIface.Index, l.clientAddr4, l.clientIface.MAC); err != nil {
			return err
		}
		if err := neighAdd(lb, b.ClientIface.Index, l.clientAddr6, l.clientIface.MAC); err != nil {
			return err
		}
		for k, other := range l.balancers {
			if k == i {
				continue
			}
			if err := neighAdd(lb, b.ClientIface.Index, other.Addr4, other.ClientIface.MAC); err != nil {
				return err
			}
			if err := neighAdd(lb, b.ClientIface.Index, other.Addr6, other.ClientIface.MAC); err != nil {
				return err
			}
		}
		for j, m := range l.members {
			bi := b.MemberIfaces[0]
			gw4, gw6 := v4(16, 1+i), v6(16, 1+i)
			if !ha {
				bi = b.MemberIfaces[j]
				gw4, gw6 = m.info.Gateway4, m.info.Gateway6
			}
			if err := neighAdd(lb, bi.Index, m.info.Addr4, m.info.Iface.MAC); err != nil {
				return err
			}
			if err := neighAdd(lb, bi.Index, m.info.Addr6, m.info.Iface.MAC); err != nil {
				return err
			}
			if err := neighAdd(m.h, m.info.Iface.Index, gw4, bi.MAC); err != nil {
				return err
			}
			if err := neighAdd(m.h, m.info.Iface.Index, gw6, bi.MAC); err != nil {
				return err
			}
		}
	}
	return nil
}

// clientRoutes points the client's default routes at balancer i.
func (l *Lab) clientRoutes(i int, replace bool) error {
	client := l.hosts[HostClient]
	b := l.balancers[i]
	if err := routeVia(client, l.clientIface.Index, netip.Prefix{}, b.Addr4, replace); err != nil {
		return err
	}
	return routeVia(client, l.clientIface.Index, netip.Prefix{}, b.Addr6, replace)
}

// addClientAddrs gives the client its addresses on its link (clientAddr4
// and clientAddr6) and makes the client prefixes local to it, so that it
// can send from any of their addresses.
func (l *Lab) addClientAddrs(client *host) error {
	ci := l.clientIface.Index
	if err := addrAdd(client, ci, l.clientAddr4, 24); err != nil {
		return err
	}
	if err := addrAdd(client, ci, l.clientAddr6, 64); err != nil {
		return err
	}
	if err := anyIP(client, clientPrefix4); err != nil {
		return err
	}
	return anyIP(client, clientPrefix6)
}

// memberRoutes points a member's default routes at balancer i.
func (l *Lab) memberRoutes(m *member, i int, replace bool) error {
	gw4, gw6 := m.info.Gateway4, m.info.Gateway6
	if len(l.balancers) > 1 {
		gw4, gw6 = v4(16, 1+i), v6(16, 1+i)
	}
	if err := routeVia(m.h, m.info.Iface.Index, netip.Prefix{}, gw4, replace); err != nil {
		return err
	}
	return routeVia(m.h, m.info.Iface.Index, netip.Prefix{}, gw6, replace)
}

// SetActiveBalancer points the client's and the members' default routes at
// balancer i (a failover in HA tests). Member.Gateway4/6 follow.
func (l *Lab) SetActiveBalancer(i int) error {
	if i < 0 || i >= len(l.balancers) {
		return fmt.Errorf("lab: no balancer %d", i)
	}
	if err := l.clientRoutes(i, true); err != nil {
		return err
	}
	for _, m := range l.members {
		if err := l.memberRoutes(m, i, true); err != nil {
			return err
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range l.members {
		if len(l.balancers) > 1 {
			m.info.Gateway4, m.info.Gateway6 = v4(16, 1+i), v6(16, 1+i)
		}
	}
	l.active = i
	return nil
}

// ActiveBalancer is the index of the balancer the routes point at.
func (l *Lab) ActiveBalancer() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.active
}

// waitAddrsReady waits until IPv6 on every veth (outside the switch) is
// usable: a link-local address exists, no address is tentative, and the
// solicited-node multicast group of every address has been joined. The kernel
// finishes the last two from a workqueue even without DAD; until then
// neighbour solicitations are silently not sent (no usable link-local source)
// or not received (group not joined), and the first packet waits a second.
func (l *Lab) waitAddrsReady(ctx context.Context) error {
	deadline := time.Now().Add(5 * time.Second)
	for _, name := range l.hostOrder {
		if name == HostSwitch {
			continue
		}
		h := l.hosts[name]
		for {
			var notReady string
			err := h.run(func() error {
				var err error
				notReady, err = addrsNotReady(h)
				return err
			})
			if err != nil {
				return err
			}
			if notReady == "" {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("lab: %s: %s", name, notReady)
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			time.Sleep(time.Millisecond)
		}
	}
	return nil
}

// addrsNotReady runs inside h's namespace; it returns what is not ready yet.
func addrsNotReady(h *host) (string, error) {
	// /proc/thread-self/net, not /proc/net (= /proc/self/net), which shows
	// the namespace of the process's main thread.
	igmp6, err := os.ReadFile("/proc/thread-self/net/igmp6")
	if err != nil {
		return "", fmt.Errorf("lab: %s: %w", h.name, err)
	}
	joined := map[string]bool{}
	for _, line := range strings.Split(string(igmp6), "\n") {
		if f := strings.Fields(line); len(f) >= 3 {
			joined[f[1]+" "+f[2]] = true
		}
	}
	links, err := h.nl.LinkList()
	if err != nil {
		return "", fmt.Errorf("lab: %s: list links: %w", h.name, err)
	}
	for _, lk := range links {
		if lk.Type() != "veth" {
			continue
		}
		name := lk.Attrs().Name
		addrs, err := h.nl.AddrList(lk, unix.AF_INET6)
		if err != nil {
			return "", fmt.Errorf("lab: %s: list addresses: %w", h.name, err)
		}
		ll := false
		for _, a := range addrs {
			if a.Flags&unix.IFA_F_TENTATIVE != 0 {
				return fmt.Sprintf("address %s tentative", a.IPNet), nil
			}
			if a.IP.IsLinkLocalUnicast() {
				ll = true
			}
			ip := a.IP.To16()
			sol := fmt.Sprintf("ff0200000000000000000001ff%02x%02x%02x", ip[13], ip[14], ip[15])
			if !joined[name+" "+sol] {
				return fmt.Sprintf("solicited-node group of %s not joined on %s", a.IP, name), nil
			}
		}
		if !ll {
			return fmt.Sprintf("no link-local address on %s", name), nil
		}
	}
	return "", nil
}
