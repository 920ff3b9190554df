package lab

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Routed topology (Spec.Routed): members beyond the balancer's L2, as in a
// data centre. A router host joins the client, a one-armed balancer and the
// members, each member on its own subnet; the balancer reaches them only
// through the router, so it must tunnel (forwarding ipip or gue) rather than
// rewrite MACs, and members answer clients through the router, never
// through the balancer.
//
//	client ──veth── router ──veth── lb           (front)
//	                       ──veth── m1, m2 ...   (one subnet each)
//
// Addressing:
//
//	client link   198.18.0.0/24, fd00:1e::/64: client .1, router .254
//	front         198.18.1.0/24, fd00:1e:0:1::/64: router .254, balancer .10
//	member j      198.18.(16+j).0/24, fd00:1e:0:(16+j)::/64: router .1, member .2
//
// The router routes the VIPs to the balancer (as a BGP announcement or a
// static route would) and the client prefixes to the client. Members hold
// the VIPs on their loopback, and their default route is the router.
// Balancer.ClientIface is the balancer's only interface; MemberIfaces is
// empty. Every adjacent pair has permanent neighbour entries unless
// Spec.DynamicNeighbours.
func (l *Lab) buildRouted(ctx context.Context) error {
	s := l.spec
	client, router, err := l.addClientRouter()
	if err != nil {
		return err
	}
	lb, err := l.addHost(HostBalancer, balancerSysctls)
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
	rc, ci := l.routerClientIface, l.clientIface
	rf, bf, err := l.veth(router, "rf", mac(0x0e, 0, 1, 0), lb, "b0f", mac(0x0b, 0, 0, 0))
	if err != nil {
		return err
	}
	// Full checksums both ways, as on a wire: the balancer sends what it
	// tunnels, and its XDP program must see whole checksums from the
	// router, which would otherwise forward GRO'd client segments with
	// partial ones (limpet warns about it; the members would drop them).
	ends = append(ends, vethEnd{router, rf.Name, true}, vethEnd{lb, bf.Name, true})
	l.balancers = []Balancer{{Host: HostBalancer, NetNS: lb.netns, Addr4: v4(1, 10), Addr6: v6(1, 10), ClientIface: bf}}

	type subnet struct {
		rIface Iface
		m      *member
	}
	var subnets []subnet
	l.members = make([]*member, len(s.Members))
	for j, name := range s.Members {
		ri, mi, err := l.veth(router, fmt.Sprintf("rm%d", j), mac(0x0e, 0, 2, byte(j)), mhosts[j], fmt.Sprintf("m%d", j), mac(0x0d, byte(j), 0, 0))
		if err != nil {
			return err
		}
		m := &member{lab: l, h: mhosts[j], info: Member{Name: name, NetNS: mhosts[j].netns,
			Addr4: v4(16+j, 2), Addr6: v6(16+j, 2), Gateway4: v4(16+j, 1), Gateway6: v6(16+j, 1), Iface: mi}}
		l.members[j] = m
		subnets = append(subnets, subnet{ri, m})
		ends = append(ends, vethEnd{router, ri.Name, false}, vethEnd{mhosts[j], mi.Name, true})
	}
	if err := setOffloads(ends); err != nil {
		return err
	}

	// Addresses.
	if err := l.addrClientRouter(client, router); err != nil {
		return err
	}
	b := l.balancers[0]
	addrs := []ifaceAddr{
		{router, rf.Index, routerFront4, 24}, {router, rf.Index, routerFront6, 64},
		{lb, bf.Index, b.Addr4, 24}, {lb, bf.Index, b.Addr6, 64},
	}
	for _, sn := range subnets {
		m := sn.m
		addrs = append(addrs,
			ifaceAddr{router, sn.rIface.Index, m.info.Gateway4, 24}, ifaceAddr{router, sn.rIface.Index, m.info.Gateway6, 64},
			ifaceAddr{m.h, m.info.Iface.Index, m.info.Addr4, 24}, ifaceAddr{m.h, m.info.Iface.Index, m.info.Addr6, 64})
	}
	if err := addAddrs(addrs); err != nil {
		return err
	}

	// Routes.
	type r struct {
		h   *host
		idx int
		dst netip.Prefix // invalid: default
		gw  netip.Addr
	}
	routes := []r{
		{lb, bf.Index, netip.Prefix{}, routerFront4}, {lb, bf.Index, netip.Prefix{}, routerFront6},
	}
	for _, v := range s.VIPs {
		gw := b.Addr4
		if v.Is6() {
			gw = b.Addr6
		}
		routes = append(routes, r{router, rf.Index, netip.PrefixFrom(v, v.BitLen()), gw})
	}
	for _, sn := range subnets {
		m := sn.m
		routes = append(routes, r{m.h, m.info.Iface.Index, netip.Prefix{}, m.info.Gateway4}, r{m.h, m.info.Iface.Index, netip.Prefix{}, m.info.Gateway6})
	}
	for _, x := range routes {
		if err := routeVia(x.h, x.idx, x.dst, x.gw, false); err != nil {
			return err
		}
	}
	// Until a balancer program (or StartEncapRelay) takes them, VIP
	// packets are answered "unreachable" by the balancer rather than
	// bouncing between it and the router until their TTL runs out.
	for _, v := range s.VIPs {
		rt := &netlink.Route{Dst: ipnet(v, v.BitLen()), Type: unix.RTN_UNREACHABLE}
		if err := lb.nl.RouteAdd(rt); err != nil {
			return fmt.Errorf("lab: %s: unreachable route %s: %w", lb.name, v, err)
		}
	}
	for _, sn := range subnets {
		if err := addrAddLo(sn.m.h, s.VIPs); err != nil {
			return err
		}
	}

	if !s.DynamicNeighbours {
		type n struct {
			h    *host
			idx  int
			addr netip.Addr
			peer Iface
		}
		neighs := []n{
			{client, ci.Index, routerClient4, rc}, {client, ci.Index, routerClient6, rc},
			{router, rc.Index, l.clientAddr4, ci}, {router, rc.Index, l.clientAddr6, ci},
			{router, rf.Index, b.Addr4, bf}, {router, rf.Index, b.Addr6, bf},
			{lb, bf.Index, routerFront4, rf}, {lb, bf.Index, routerFront6, rf},
		}
		for _, sn := range subnets {
			m := sn.m
			neighs = append(neighs,
				n{router, sn.rIface.Index, m.info.Addr4, m.info.Iface}, n{router, sn.rIface.Index, m.info.Addr6, m.info.Iface},
				n{m.h, m.info.Iface.Index, m.info.Gateway4, sn.rIface}, n{m.h, m.info.Iface.Index, m.info.Gateway6, sn.rIface})
		}
		for _, x := range neighs {
			if err := neighAdd(x.h, x.idx, x.addr, x.peer.MAC); err != nil {
				return err
			}
		}
	}

	return l.finishBuild(ctx)
}
