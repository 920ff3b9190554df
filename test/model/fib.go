package model

import (
	"net"
	"net/netip"
)

// Network is the balancer's routing table and neighbours, as the kernel's
// FIB lookup (bpf_fib_lookup) sees them.
type Network struct {
	Links      []Link
	Neighbours []Neighbour
	Routes     []Route
}

// Neighbour is a resolved neighbour entry.
type Neighbour struct {
	Link int // ifindex
	IP   netip.Addr
	MAC  net.HardwareAddr
}

// RouteKind is a route's type.
type RouteKind int

// Route types.
const (
	Unicast RouteKind = iota
	Blackhole
	Unreachable
	Prohibit
)

// Route is a route beyond the links' own subnets.
type Route struct {
	Dst  netip.Prefix
	Kind RouteKind
	Via  netip.Addr // unicast: the gateway
	Link int        // unicast: its link
}

// FIBKind is the answer of a FIB lookup.
type FIBKind int

// FIB answers, as bpf_fib_lookup gives them.
const (
	FIBSuccess FIBKind = iota
	FIBNoNeigh
	FIBBlackhole
	FIBUnreachable
	FIBProhibit
	FIBNotForwarded // no route, a local or broadcast address
	FIBFragNeeded   // larger than the egress MTU
)

// FIBResult is a FIB lookup's answer.
type FIBResult struct {
	Kind       FIBKind
	MTU        int // FIBFragNeeded: the egress MTU
	Ifindex    int
	SMAC, DMAC net.HardwareAddr
}

// Lookup routes a packet of totLen bytes (the IP packet's length) to dst.
// Every link forwards (the balancer routes). The most specific route wins:
// the links' own addresses (local, not forwarded), IPv4 subnet broadcast
// addresses, the links' subnets (on-link), then the configured routes.
func (n *Network) Lookup(dst netip.Addr, totLen int) FIBResult {
	bestBits := -1
	var best Route
	consider := func(r Route) {
		if r.Dst.Contains(dst) && r.Dst.Bits() > bestBits {
			bestBits, best = r.Dst.Bits(), r
		}
	}
	local := false
	for _, l := range n.Links {
		for _, p := range l.Prefixes {
			if p.Addr() == dst {
				local = true
			}
			if p.Addr().Is4() && p.Bits() < 31 && dst == lastAddr(p.Masked()) {
				local = true // subnet broadcast
			}
			consider(Route{Dst: p.Masked(), Kind: Unicast, Link: l.Index})
		}
	}
	for _, r := range n.Routes {
		consider(r)
	}
	switch {
	case local, bestBits < 0:
		return FIBResult{Kind: FIBNotForwarded}
	case best.Kind == Blackhole:
		return FIBResult{Kind: FIBBlackhole}
	case best.Kind == Unreachable:
		return FIBResult{Kind: FIBUnreachable}
	case best.Kind == Prohibit:
		return FIBResult{Kind: FIBProhibit}
	}
	var link *Link
	for i := range n.Links {
		if n.Links[i].Index == best.Link {
			link = &n.Links[i]
		}
	}
	if link == nil {
		return FIBResult{Kind: FIBNotForwarded}
	}
	if totLen > link.MTU {
		return FIBResult{Kind: FIBFragNeeded, MTU: link.MTU}
	}
	hop := dst
	if best.Via.IsValid() {
		hop = best.Via
	}
	for _, nb := range n.Neighbours {
		if nb.Link == link.Index && nb.IP == hop {
			return FIBResult{Kind: FIBSuccess, Ifindex: link.Index, SMAC: link.MAC, DMAC: nb.MAC}
		}
	}
	return FIBResult{Kind: FIBNoNeigh, Ifindex: link.Index}
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
