// Package bgp announces limpet's virtual addresses to routers, so that
// several limpet nodes behind an ECMP router share the traffic of a VIP.
//
// A Speaker is GoBGP's BGP server, run in-process as a library (no gobgpd,
// no gRPC listener): it keeps a session with every configured neighbour and
// announces the routes it is given, a /32 or /128 per VIP. An Announcer
// decides which VIPs to announce, and says why, from what the daemon
// reports: whether the datapath forwards, whether the virtual servers of the
// address have a member in service, whether the node's HA bulk sync has
// finished, and whether the node drains. It damps flapping: a withdrawn
// route comes back only after its VIP could be served for a whole damping
// interval.
//
// The package takes typed input (Config, VIP) and never sees the YAML
// model; userspace/plan compiles the config's bgp section into it.
package bgp

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/limpet-lb/limpet/userspace/enum"
)

// Family is an address family of a session.
type Family uint8

// Families.
const (
	IPv4Unicast Family = 1
	IPv6Unicast Family = 2
)

var familyNames = enum.Names[Family]{
	IPv4Unicast: "ipv4_unicast",
	IPv6Unicast: "ipv6_unicast",
}

func (f Family) String() string { return familyNames.Name(f, "family(%d)") }

// FamilyOf is the family of a prefix's address.
func FamilyOf(a netip.Addr) Family {
	if a.Unmap().Is4() {
		return IPv4Unicast
	}
	return IPv6Unicast
}

// Config is the node's BGP speaker.
type Config struct {
	ASN      uint32
	RouterID netip.Addr
	// ListenPort accepts sessions on this port; 0 does not listen.
	ListenPort int
	Neighbors  []Neighbor
	// NextHop4 and NextHop6, when valid, are the next hops of announced
	// routes; otherwise GoBGP uses the session's local address.
	NextHop4, NextHop6 netip.Addr
}

// Neighbor is one BGP peer.
type Neighbor struct {
	Address     netip.Addr
	PeerASN     uint32
	Description string
	Port        int
	// Password is the TCP MD5 key; empty means none.
	Password     string
	HoldTime     time.Duration
	Keepalive    time.Duration
	ConnectRetry time.Duration
	// MultihopTTL > 0 allows an eBGP neighbour that many hops away.
	MultihopTTL uint8
	Passive     bool
	Families    []Family
}

// Carries reports whether the session carries a family.
func (n *Neighbor) Carries(f Family) bool { return slices.Contains(n.Families, f) }

// Community is a standard (RFC 1997) community: ASN<<16 | value.
type Community uint32

func (c Community) String() string { return fmt.Sprintf("%d:%d", uint32(c)>>16, uint32(c)&0xffff) }

// LargeCommunity is an RFC 8092 community.
type LargeCommunity struct{ Global, Local1, Local2 uint32 }

func (c LargeCommunity) String() string { return fmt.Sprintf("%d:%d:%d", c.Global, c.Local1, c.Local2) }

// Route is one announced prefix with its attributes.
type Route struct {
	Prefix           netip.Prefix
	Communities      []Community
	LargeCommunities []LargeCommunity
	// LocalPref is sent to iBGP neighbours; 0 means none.
	LocalPref uint32
}

func (r Route) equal(o Route) bool {
	return r.Prefix == o.Prefix && r.LocalPref == o.LocalPref && slices.Equal(r.Communities, o.Communities) &&
		slices.Equal(r.LargeCommunities, o.LargeCommunities)
}

// VIP is one announceable address: the virtual servers whose state decides
// whether it is announced, and the route's attributes.
type VIP struct {
	Route
	// VirtualServers are the l4 virtual servers on the address; it is
	// announced while at least one of them has a member in service.
	VirtualServers []string
}

// Spec is the compiled bgp section: the speaker, the VIPs and the timers
// of the announcement policy.
type Spec struct {
	Config Config
	VIPs   []VIP
	// Damping is the time a withdrawn VIP must be servable, without
	// interruption, before it is announced again.
	Damping time.Duration
	// ShutdownGrace is how long a stopping node serves after withdrawing.
	ShutdownGrace time.Duration
	// SyncTimeout bounds the wait for the bulk sync of unreachable peers.
	SyncTimeout time.Duration
}
