package lab

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// Hosts one router away from the balancer (AddFarClient, AddFarMember).
const (
	HostFarClient = "far"
	HostFarMember = "farm"
)

// farLink is the addressing of a far host's link: the router is .1, the
// far host .2.
type farLink struct {
	prefix4, prefix6 netip.Prefix
	router4, router6 netip.Addr
	addr4, addr6     netip.Addr
}

var (
	farClientLink = farLink{
		netip.MustParsePrefix("198.18.200.0/24"), netip.MustParsePrefix("fd00:1e:0:200::/64"),
		netip.MustParseAddr("198.18.200.1"), netip.MustParseAddr("fd00:1e:0:200::1"),
		netip.MustParseAddr("198.18.200.2"), netip.MustParseAddr("fd00:1e:0:200::2"),
	}
	farMemberLink = farLink{
		netip.MustParsePrefix("198.18.210.0/24"), netip.MustParsePrefix("fd00:1e:0:210::/64"),
		netip.MustParseAddr("198.18.210.1"), netip.MustParseAddr("fd00:1e:0:210::1"),
		netip.MustParseAddr("198.18.210.2"), netip.MustParseAddr("fd00:1e:0:210::2"),
	}
)

// FarHost is a host one router away from the balancer.
type FarHost struct {
	Host         string // HostFarClient or HostFarMember
	NetNS        string
	Addr4, Addr6 netip.Addr
	Iface        Iface // the far host's interface (MTU 1500)
	RouterIface  Iface // the router's end of the far host's link
}

// AddFarClient puts a client host ("far") behind the client host, which
// then routes between it and the balancer, for tests of what routers on a
// client's path do (path MTU discovery, say):
//
//	far ──veth── client ──veth── lb ── members
//
// The client host's end of the far link has the given MTU (0: 1500), the
// far client's end 1500: the far client's SYNs ask for 1460-byte segments,
// and the client host answers a longer packet towards the far client with
// ICMP "fragmentation needed" / "packet too big". The balancer routes
// 198.18.200.0/24 and fd00:1e:0:200::/64 to the client host. Single
// balancer topology only; Close removes it with the rest.
func (l *Lab) AddFarClient(mtu int) (FarHost, error) {
	if err := l.farOK(); err != nil {
		return FarHost{}, err
	}
	client, err := l.host(HostClient)
	if err != nil {
		return FarHost{}, err
	}
	b := l.balancers[0]
	return l.addFar(HostFarClient, "f", client, "cf", mtu, farClientLink, b.ClientIface.Index, l.clientAddr4, l.clientAddr6)
}

// AddFarMember puts a host ("farm") behind the member named via, which then
// routes between it and the balancer, as a router on a member's path:
//
//	client ── lb ──veth── via ──veth── farm
//
// The member's end of the far link has the given MTU (0: 1500). Nothing
// listens on the far member: a pool that lists it sees what such a router
// answers (ICMP "fragmentation needed" for a packet longer than the MTU,
// say). The balancer routes 198.18.210.0/24 and fd00:1e:0:210::/64 to via.
func (l *Lab) AddFarMember(via string, mtu int) (FarHost, error) {
	if err := l.farOK(); err != nil {
		return FarHost{}, err
	}
	m, ok := l.Member(via)
	if !ok {
		return FarHost{}, fmt.Errorf("lab: no member %q", via)
	}
	h, err := l.host(via)
	if err != nil {
		return FarHost{}, err
	}
	return l.addFar(HostFarMember, "fm", h, "mf", mtu, farMemberLink, m.BalancerIface.Index, m.Addr4, m.Addr6)
}

func (l *Lab) farOK() error {
	if l.spec.Balancers > 1 || l.spec.Cluster || l.isClosed() {
		return errors.New("lab: a far host needs an open lab with one balancer")
	}
	return nil
}

// addFar creates host name behind router (link tags tf and tr, the
// router's end with the MTU), and routes the far link's prefixes on the
// balancer through lbIfindex to the router's addresses gw4 and gw6.
func (l *Lab) addFar(name, tf string, router *host, tr string, mtu int, fl farLink, lbIfindex int, gw4, gw6 netip.Addr) (FarHost, error) {
	lb, err := l.host(HostBalancer)
	if err != nil {
		return FarHost{}, err
	}
	far, err := l.addHost(name)
	if err != nil {
		return FarHost{}, err
	}
	if err := setSysctls(router, balancerSysctls); err != nil { // it routes now
		return FarHost{}, err
	}
	fi, ri, err := l.veth(far, tf, nil, router, tr, nil)
	if err != nil {
		return FarHost{}, err
	}
	if mtu > 0 {
		if err := router.nl.LinkSetMTU(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: ri.Index}}, mtu); err != nil {
			return FarHost{}, fmt.Errorf("lab: %s MTU %d: %w", ri.Name, mtu, err)
		}
	}
	for _, a := range []struct {
		h    *host
		idx  int
		addr netip.Addr
		bits int
	}{
		{far, fi.Index, fl.addr4, 24}, {far, fi.Index, fl.addr6, 64},
		{router, ri.Index, fl.router4, 24}, {router, ri.Index, fl.router6, 64},
	} {
		if err := addrAdd(a.h, a.idx, a.addr, a.bits); err != nil {
			return FarHost{}, err
		}
	}
	for _, r := range []struct {
		h   *host
		idx int
		dst netip.Prefix
		gw  netip.Addr
	}{
		{far, fi.Index, netip.Prefix{}, fl.router4}, {far, fi.Index, netip.Prefix{}, fl.router6},
		{lb, lbIfindex, fl.prefix4, gw4}, {lb, lbIfindex, fl.prefix6, gw6},
	} {
		if err := routeVia(r.h, r.idx, r.dst, r.gw, false); err != nil {
			return FarHost{}, err
		}
	}
	// Permanent neighbours, as everywhere in the lab: nothing waits on ARP.
	for _, n := range []struct {
		h   *host
		idx int
		ip  netip.Addr
		i   Iface
	}{
		{far, fi.Index, fl.router4, ri}, {far, fi.Index, fl.router6, ri},
		{router, ri.Index, fl.addr4, fi}, {router, ri.Index, fl.addr6, fi},
	} {
		if err := neighAdd(n.h, n.idx, n.ip, n.i.MAC); err != nil {
			return FarHost{}, err
		}
	}
	return FarHost{Host: name, NetNS: far.netns, Addr4: fl.addr4, Addr6: fl.addr6, Iface: fi, RouterIface: ri}, nil
}
