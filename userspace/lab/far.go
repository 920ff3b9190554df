package lab

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// HostFarClient is the client AddFarClient puts behind the client host.
const HostFarClient = "far"

// A far client's link: the client host routes between it and the balancer.
var (
	farPrefix4 = netip.MustParsePrefix("198.18.200.0/24")
	farPrefix6 = netip.MustParsePrefix("fd00:1e:0:200::/64")
	farRouter4 = netip.MustParseAddr("198.18.200.1")
	farRouter6 = netip.MustParseAddr("fd00:1e:0:200::1")
	farAddr4   = netip.MustParseAddr("198.18.200.2")
	farAddr6   = netip.MustParseAddr("fd00:1e:0:200::2")
)

// FarClient is a client one router away from the balancer.
type FarClient struct {
	Host         string // HostFarClient
	NetNS        string
	Addr4, Addr6 netip.Addr
	Iface        Iface // the far client's interface (MTU 1500)
	RouterIface  Iface // the client host's end of the far client's link
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
// ICMP "fragmentation needed" / "packet too big". The balancer routes the
// far prefixes (198.18.200.0/24, fd00:1e:0:200::/64) to the client host.
// Single-balancer topology only; Close removes it with the rest.
func (l *Lab) AddFarClient(mtu int) (FarClient, error) {
	s := l.spec
	if s.Balancers > 1 || s.Cluster || l.isClosed() {
		return FarClient{}, errors.New("lab: a far client needs an open lab with one balancer")
	}
	client, err := l.host(HostClient)
	if err != nil {
		return FarClient{}, err
	}
	lb, err := l.host(HostBalancer)
	if err != nil {
		return FarClient{}, err
	}
	far, err := l.addHost(HostFarClient)
	if err != nil {
		return FarClient{}, err
	}
	if err := setSysctls(far, commonSysctls); err != nil {
		return FarClient{}, err
	}
	if err := setSysctls(client, balancerSysctls); err != nil { // it routes now
		return FarClient{}, err
	}
	fi, ri, err := l.veth(far, "f", mac(0x0f, 0, 0, 2), client, "cf", mac(0x0f, 0, 0, 1))
	if err != nil {
		return FarClient{}, err
	}
	if mtu > 0 {
		if err := client.nl.LinkSetMTU(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: ri.Index}}, mtu); err != nil {
			return FarClient{}, fmt.Errorf("lab: %s MTU %d: %w", ri.Name, mtu, err)
		}
	}
	for _, a := range []struct {
		h    *host
		idx  int
		addr netip.Addr
		bits int
	}{
		{far, fi.Index, farAddr4, 24}, {far, fi.Index, farAddr6, 64},
		{client, ri.Index, farRouter4, 24}, {client, ri.Index, farRouter6, 64},
	} {
		if err := addrAdd(a.h, a.idx, a.addr, a.bits); err != nil {
			return FarClient{}, err
		}
	}
	if err := routeVia(far, fi.Index, netip.Prefix{}, farRouter4, false); err != nil {
		return FarClient{}, err
	}
	if err := routeVia(far, fi.Index, netip.Prefix{}, farRouter6, false); err != nil {
		return FarClient{}, err
	}
	b := l.balancers[0]
	if err := routeVia(lb, b.ClientIface.Index, farPrefix4, l.clientAddr4, false); err != nil {
		return FarClient{}, err
	}
	if err := routeVia(lb, b.ClientIface.Index, farPrefix6, l.clientAddr6, false); err != nil {
		return FarClient{}, err
	}
	// Permanent neighbours, as everywhere in the lab: nothing waits on ARP.
	for _, n := range []struct {
		h   *host
		idx int
		ip  netip.Addr
		i   Iface
	}{
		{far, fi.Index, farRouter4, ri}, {far, fi.Index, farRouter6, ri},
		{client, ri.Index, farAddr4, fi}, {client, ri.Index, farAddr6, fi},
	} {
		if err := neighAdd(n.h, n.idx, n.ip, n.i.MAC); err != nil {
			return FarClient{}, err
		}
	}
	return FarClient{Host: HostFarClient, NetNS: far.netns, Addr4: farAddr4, Addr6: farAddr6, Iface: fi, RouterIface: ri}, nil
}
