// Package nexthop keeps the datapath's next-hop cache in step with the
// kernel. It resolves each member's next hop (the egress link, its MAC and
// MTU, the neighbour's MAC) from the routes and neighbours of the balancer's
// network namespace, as bpf_fib_lookup would, and resolves again on every
// netlink neighbour, route and link event, so that the datapath forwards
// without a FIB lookup per packet and still follows every change.
//
// A member whose next hop cannot be cached (its neighbour is unresolved, its
// route is ECMP or not unicast, policy rules could route it otherwise) has
// none: the datapath asks the FIB for it, which hands an unresolved
// neighbour's packets to the stack, counted, as without a cache.
package nexthop

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/limpet-lb/limpet/loader"
)

// Target is a member whose next hop the datapath needs.
type Target struct {
	Member loader.MemberID
	Addr   netip.Addr
}

// Result is one resolution of every target.
type Result struct {
	Hops map[loader.MemberID]loader.NextHop
	// Unresolved says, for each target without a hop, why.
	Unresolved map[loader.MemberID]string
	// neighs are the neighbour entries the hops were read from.
	neighs map[neighKey]bool
}

// nudValid are the neighbour states in which bpf_fib_lookup forwards
// (NUD_VALID in the kernel): STALE and friends still have a usable MAC.
const nudValid = netlink.NUD_PERMANENT | netlink.NUD_NOARP | netlink.NUD_REACHABLE |
	netlink.NUD_PROBE | netlink.NUD_STALE | netlink.NUD_DELAY

type neighKey struct {
	link int
	ip   netip.Addr
}

// ResolveHere resolves every target in the calling thread's network
// namespace, through a netlink handle of its own.
func ResolveHere(targets []Target) (Result, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return Result{}, fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	return Resolve(h, targets)
}

// Resolve resolves every target through h, in h's network namespace; the
// forwarding sysctls are read in the calling thread's.
func Resolve(h *netlink.Handle, targets []Target) (Result, error) {
	res := Result{Hops: map[loader.MemberID]loader.NextHop{}, Unresolved: map[loader.MemberID]string{}, neighs: map[neighKey]bool{}}
	if len(targets) == 0 {
		return res, nil
	}
	if why, err := policyRouting(h); err != nil {
		return res, err
	} else if why != "" {
		for _, t := range targets {
			res.Unresolved[t.Member] = why
		}
		return res, nil
	}
	links, err := h.LinkList()
	if err != nil {
		return res, fmt.Errorf("list links: %w", err)
	}
	byIndex := map[int]netlink.Link{}
	for _, l := range links {
		byIndex[l.Attrs().Index] = l
	}
	neighs, err := h.NeighList(0, netlink.FAMILY_ALL)
	if err != nil {
		return res, fmt.Errorf("list neighbours: %w", err)
	}
	macs := map[neighKey]net.HardwareAddr{}
	for _, n := range neighs {
		ip, ok := netipAddr(n.IP)
		if !ok || n.State&nudValid == 0 || len(n.HardwareAddr) != 6 {
			continue
		}
		macs[neighKey{n.LinkIndex, ip}] = n.HardwareAddr
	}
	forwards := map[bool]bool{true: forwarding("/proc/sys/net/ipv4/conf/all/forwarding"), false: forwarding("/proc/sys/net/ipv6/conf/all/forwarding")}
	for _, t := range targets {
		addr := t.Addr.Unmap()
		if !forwards[addr.Is4()] {
			// bpf_fib_lookup then says "forwarding disabled": the stack's call.
			res.Unresolved[t.Member] = "forwarding is off for the address family"
			continue
		}
		hop, via, why, err := resolveOne(h, addr, byIndex, macs)
		if err != nil {
			return res, fmt.Errorf("member %d (%s): %w", t.Member, addr, err)
		}
		if why != "" {
			res.Unresolved[t.Member] = why
			continue
		}
		res.Hops[t.Member] = hop
		res.neighs[via] = true
	}
	return res, nil
}

func resolveOne(h *netlink.Handle, addr netip.Addr, links map[int]netlink.Link, macs map[neighKey]net.HardwareAddr) (hop loader.NextHop, via neighKey, why string, err error) {
	routes, rerr := h.RouteGet(addr.AsSlice())
	if rerr != nil {
		if errors.Is(rerr, unix.ENETUNREACH) || errors.Is(rerr, unix.EHOSTUNREACH) || errors.Is(rerr, unix.EACCES) || errors.Is(rerr, unix.EINVAL) {
			return hop, via, "no route: " + rerr.Error(), nil
		}
		return hop, via, "", fmt.Errorf("route lookup: %w", rerr)
	}
	if len(routes) == 0 {
		return hop, via, "no route", nil
	}
	r := routes[0]
	if r.Type != unix.RTN_UNICAST {
		return hop, via, fmt.Sprintf("route of type %d, not unicast", r.Type), nil
	}
	// The lookup above answers with the one path it chose; the FIB entry
	// itself says whether there are others.
	entries, err := h.RouteGetWithOptions(addr.AsSlice(), &netlink.RouteGetOptions{FIBMatch: true})
	if err != nil {
		return hop, via, "", fmt.Errorf("route entry lookup: %w", err)
	}
	if len(entries) > 0 && len(entries[0].MultiPath) > 0 {
		return hop, via, "ECMP route: the FIB spreads flows over its paths", nil
	}
	l, ok := links[r.LinkIndex]
	if !ok {
		return hop, via, fmt.Sprintf("route through unknown link %d", r.LinkIndex), nil
	}
	la := l.Attrs()
	switch {
	case la.Flags&net.FlagUp == 0:
		return hop, via, "link " + la.Name + " is down", nil
	case len(la.HardwareAddr) != 6:
		return hop, via, "link " + la.Name + " is not Ethernet", nil
	case la.MasterIndex != 0 && isVRF(links[la.MasterIndex]):
		return hop, via, "link " + la.Name + " is in a VRF", nil
	}
	via = neighKey{r.LinkIndex, addr}
	if gw, ok := netipAddr(r.Gw); ok && !gw.IsUnspecified() {
		via.ip = gw
	}
	mac, ok := macs[via]
	if !ok {
		return hop, via, fmt.Sprintf("neighbour %s on %s unresolved", via.ip, la.Name), nil
	}
	mtu := la.MTU
	if m := routeMTU(addr, r, entries); m > 0 && m < mtu {
		mtu = m
	}
	return loader.NextHop{Ifindex: la.Index, SrcMAC: la.HardwareAddr, DstMAC: mac, MTU: mtu}, via, "", nil
}

// routeMTU is the MTU bpf_fib_lookup holds a forwarded packet to, beyond
// the device's: for IPv6 the route's; for IPv4 (ip_mtu_from_fib_result) a
// learnt path MTU, or the route's own metric only when it is locked or
// net.ipv4.ip_forward_use_pmtu is set. A larger value than the FIB's would
// be wrong; a smaller one only sends more packets to the FIB.
func routeMTU(addr netip.Addr, r netlink.Route, entries []netlink.Route) int {
	if r.MTU == 0 || addr.Is6() {
		return r.MTU
	}
	metric, locked := 0, r.MTULock
	if len(entries) > 0 {
		metric, locked = entries[0].MTU, locked || entries[0].MTULock
	}
	if locked || r.MTU != metric || forwarding("/proc/sys/net/ipv4/ip_forward_use_pmtu") {
		return r.MTU // locked, learnt, or used as is
	}
	return 0
}

func isVRF(l netlink.Link) bool {
	_, ok := l.(*netlink.Vrf)
	return ok
}

// The priorities and tables of the rules every namespace starts with (local
// at 0, main at 32766, default at 32767 for IPv4).
var (
	defaultRulePriorities = map[int]bool{0: true, 32766: true, 32767: true}
	defaultRuleTables     = map[int]bool{unix.RT_TABLE_LOCAL: true, unix.RT_TABLE_MAIN: true, unix.RT_TABLE_DEFAULT: true}
)

// policyRouting says why no hop can be cached when the namespace has rules
// beyond the default ones: the FIB's answer could then depend on the
// packet's source or ingress link, which one hop per member cannot follow.
func policyRouting(h *netlink.Handle) (string, error) {
	rules, err := h.RuleList(netlink.FAMILY_ALL)
	if err != nil {
		return "", fmt.Errorf("list routing rules: %w", err)
	}
	var extra []string
	for _, r := range rules {
		plain := r.Src == nil && r.Dst == nil && r.IifName == "" && r.OifName == "" && r.Mark == 0 && !r.Invert
		if plain && defaultRulePriorities[r.Priority] && defaultRuleTables[r.Table] {
			continue
		}
		extra = append(extra, r.String())
	}
	if len(extra) == 0 {
		return "", nil
	}
	return "policy routing rules (" + strings.Join(extra, "; ") + ")", nil
}

func forwarding(path string) bool {
	b, err := os.ReadFile(path)
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

func netipAddr(b net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(b)
	return a.Unmap(), ok
}
