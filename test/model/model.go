// Package model is a reference model of limpet's XDP datapath: a plain,
// obviously correct Go implementation of what the datapath must do to one
// packet, given the configuration and the state. The differential fuzzer
// (test/dpfuzz) runs every packet through the real program and through this
// model and compares verdicts, output bytes, state and counters.
//
// The model follows the README line by line: its "Datapath behaviour on odd
// packets" table, the persistence semantics of "Source-IP persistence
// profiles", the forwarding modes and the member states of "Operations".
// Comments quote the line they implement as README: "...". Where the README
// is silent the model says what a demanding user would expect, and says so.
//
// The model knows nothing of map layouts. It speaks of connections (a
// client's 5-tuple and the member it goes to), reply translations (how a NAT
// member's reply finds its virtual server), persistence entries (a table's
// masked client and its server), member connection counts and counters.
// Where the kernel's behaviour is defined only loosely (which entries a full
// LRU table drops, the exact instant the clock was read), the model says
// what is allowed, and the fuzzer checks the kernel stayed within it.
package model

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// Verdict is what the datapath does with a packet.
type Verdict int

// Verdicts, as XDP has them.
const (
	Aborted Verdict = iota
	Drop
	Pass
	TX
	Redirect
)

func (v Verdict) String() string {
	return [...]string{"XDP_ABORTED", "XDP_DROP", "XDP_PASS", "XDP_TX", "XDP_REDIRECT"}[v]
}

// Reason names an exception counter, as 'limpet stats' shows it.
type Reason string

// Reasons (README: "every exception has a defined verdict and a counter").
const (
	TruncatedEthernet  Reason = "truncated_ethernet"
	TruncatedIP        Reason = "truncated_ip"
	TruncatedL4        Reason = "truncated_l4"
	Fragment           Reason = "fragment"
	BadTCPFlags        Reason = "bad_tcp_flags"
	IPv6ExtUnsupported Reason = "ipv6_extension_unsupported"
	NoMember           Reason = "no_member"
	ServerDown         Reason = "server_down"
	TableFull          Reason = "table_full"
	TTLExpired         Reason = "ttl_expired"
	FIBNoNeighbour     Reason = "fib_no_neighbour"
	FIBPass            Reason = "fib_pass"
	FIBDrop            Reason = "fib_drop"
	DSRNoNeighbour     Reason = "dsr_no_neighbour"
	VLANPass           Reason = "vlan_pass"
	IPv4Options        Reason = "ipv4_options"
	IPv6ExtWalked      Reason = "ipv6_extension_walked"
	NoTable            Reason = "no_table"
	StrayTCP           Reason = "stray_tcp"
	MemberFull         Reason = "member_full"
	EventLost          Reason = "event_lost"
	NexthopMiss        Reason = "nexthop_miss"
	NexthopMTU         Reason = "nexthop_mtu"
	ICMPToClient       Reason = "icmp_to_client"
	ICMPToMember       Reason = "icmp_to_member"
	ICMPNoFlow         Reason = "icmp_no_flow"
	ICMPBadQuote       Reason = "icmp_bad_quote"
	EncapTooBig        Reason = "encap_too_big"
	EncapNoSource      Reason = "encap_no_source"
	NotOurMAC          Reason = "not_our_mac"
	FlowTableFull      Reason = "flow_table_full" // never here: the model's flow table has no size
	reasonNone         Reason = ""
)

// The datapath's fixed limits and protocol numbers.
const (
	ipProtoTCP        = 6
	ipProtoUDP        = 17
	ipProtoHopByHop   = 0
	ipProtoRouting    = 43
	ipProtoFragment   = 44
	ipProtoDestOpts   = 60
	maxVLANTags       = 2 // README: "up to two VLAN tags"
	maxIPv6ExtHeaders = 4 // extension headers walked; more are not balanced
	maxMembersPerPool = 64
	pickProbes        = 4  // a table's slots tried before the pool's members in order
	rstTTL            = 64 // of the resets the datapath sends
	// The datapath refreshes a connection's last-seen time at most this often.
	defaultFlowStampGranularity = 250 * time.Millisecond
)

// Mode is a virtual server's forwarding mode.
type Mode int

// Forwarding modes (README, "Other settings": "nat rewrites the
// destination, and the replies back to the VIP; dsr rewrites MACs only").
const (
	NAT Mode = iota
	DSR
	// IPIP and GUE are DSR through a tunnel (encap.go); their connections
	// are DSR's.
	IPIP
	GUE
)

// Conn is the mode a virtual server's connections keep: a tunnel is DSR.
func (md Mode) Conn() Mode {
	if md == IPIP || md == GUE {
		return DSR
	}
	return md
}

// ServerDownPolicy is a profile's server_down option.
type ServerDownPolicy int

// README: "immediate picks a new member and rewrites the entry; never keeps
// the entry and drops that client's new connections (counted) until it
// expires".
const (
	Immediate ServerDownPolicy = iota
	Never
)

// Algorithm is a pool's balancing algorithm.
type Algorithm int

// Pool algorithms (README, "Pool algorithms").
const (
	RoundRobin Algorithm = iota
	WeightedRoundRobin
	LeastConnection
	WeightedLeastConnection
	IPHash
)

// VirtualServer is one (VIP, port, protocol) the datapath balances.
type VirtualServer struct {
	ID      uint32
	VIP     netip.AddrPort
	Proto   uint8 // 6 or 17
	Pool    uint32
	Persist bool   // has a source-IP persistence profile
	Table   uint32 // its table, when Persist
	Mode    Mode
	// Profile options.
	ServerDown ServerDownPolicy
	V4Prefix   uint8
	V6Prefix   uint8
	Timeout    time.Duration
}

// Pool is the set of members that may take new clients, and how to choose.
type Pool struct {
	ID        uint32
	Algorithm Algorithm
	// Eligible members take new clients: README "A member takes new
	// clients when it is enabled, healthy and not full". The control plane
	// lists the enabled and healthy ones, in config order; fullness is the
	// datapath's to check.
	Eligible []uint32
	Weights  []uint16 // of Eligible, same order
	// Table is the weighted round-robin schedule or the Maglev table, as
	// member ids, built by the control plane (userspace/pooltable).
	Table []uint32
}

// Member is one server of one pool.
type Member struct {
	ID   uint32
	Pool uint32
	// Addr's port 0 means the virtual server's port (README: "member port
	// 0 means the virtual server's port").
	Addr netip.AddrPort
	// Up: enabled or graceful_disabled, and healthy. A member that is not
	// up takes no traffic: README "disabled: no traffic at all (persisted
	// clients follow server_down)".
	Up       bool
	MaxConns uint32 // 0: no limit
	// NAT: a NAT virtual server uses the member's pool, so the datapath
	// looks at the member address's traffic for replies.
	NAT bool
}

// Table is a persistence table.
type Table struct {
	ID       uint32
	Capacity int
	// Purge: README "purge_when_full: on: a full table evicts its least
	// recently used entries for a new client; off: a new client of a full
	// table is rejected".
	Purge bool
	// FreeBatch is how many free entries a purging table hands out at a
	// time (the kernel's LRU keeps free entries in per-CPU batches): once
	// fewer than a batch are free, a write may drop up to a batch of its
	// least recently used entries. Zero means one.
	FreeBatch int
}

func (t *Table) freeBatch() int { return max(t.FreeBatch, 1) }

// Config is everything the control plane has told the datapath.
type Config struct {
	VirtualServers []VirtualServer
	Pools          []Pool
	Members        []Member
	Tables         []Table
	Network        Network
	// DecrementTTL: the balancer routes, so it decrements TTL and hop
	// limit of what it forwards itself (loader.Options.KeepTTL turns it off).
	DecrementTTL bool
	// OwnMACs are the interfaces' own MACs, by ifindex, as the loader
	// learns them when it attaches: a frame that arrives on one of them
	// for another unicast MAC is not balanced. Frames on other interfaces
	// are not checked (but a group's never is VIP traffic).
	OwnMACs map[int]net.HardwareAddr
	// FlowStampGranularity is how stale a connection's recorded last-seen
	// time may be: the datapath refreshes it at most this often, so a
	// connection's idle time is known to within this much. Zero means the
	// datapath's 250 ms.
	FlowStampGranularity time.Duration
	// NextHops is the datapath's next-hop cache, live, by member id; nil
	// when it is off. The daemon fills it with what the FIB would answer,
	// so that a cached hop changes no packet, only the counters.
	NextHops map[uint32]NextHop
	// Encap is the node's encapsulation settings, for ipip and gue.
	Encap EncapSettings
}

// NextHop is a member's cached next hop.
type NextHop struct {
	Ifindex    int
	SMAC, DMAC net.HardwareAddr
	MTU        int
}

// Instant is a reading of the datapath clock, known to lie in [Lo, Hi]:
// the fuzzer sets the clock just before it runs the program, and the
// program reads it a little later.
type Instant struct{ Lo, Hi time.Duration }

// At is an exactly known instant.
func At(t time.Duration) Instant { return Instant{t, t} }

func (i Instant) String() string {
	if i.Lo == i.Hi {
		return fmt.Sprint(i.Lo)
	}
	return fmt.Sprintf("[%v, +%v]", i.Lo, i.Hi-i.Lo)
}

// Contains reports whether t could be a reading of i.
func (i Instant) Contains(t time.Duration) bool { return t >= i.Lo && t <= i.Hi }

// FlowKey is a connection's 5-tuple as the client sent it.
type FlowKey struct {
	Src, Dst netip.AddrPort
	Proto    uint8
}

func (k FlowKey) String() string { return fmt.Sprintf("%s %s->%s", protoName(k.Proto), k.Src, k.Dst) }

// Compare orders flow keys.
func (k FlowKey) Compare(o FlowKey) int {
	return cmp.Or(k.Src.Compare(o.Src), k.Dst.Compare(o.Dst), cmp.Compare(k.Proto, o.Proto))
}

// EntryKey is a persistence entry's key: the table and the client address
// masked by the profile's prefix.
type EntryKey struct {
	Table  uint32
	Client netip.Addr
}

func (k EntryKey) String() string { return fmt.Sprintf("table %d client %s", k.Table, k.Client) }

// Compare orders entry keys.
func (k EntryKey) Compare(o EntryKey) int {
	return cmp.Or(cmp.Compare(k.Table, o.Table), k.Client.Compare(o.Client))
}

// ReplyKey is the 5-tuple of a NAT member's reply: member to client.
type ReplyKey struct {
	Member, Client netip.AddrPort
	Proto          uint8
}

func (k ReplyKey) String() string {
	return fmt.Sprintf("%s %s->%s", protoName(k.Proto), k.Member, k.Client)
}

// Compare orders reply keys.
func (k ReplyKey) Compare(o ReplyKey) int {
	return cmp.Or(k.Member.Compare(o.Member), k.Client.Compare(o.Client), cmp.Compare(k.Proto, o.Proto))
}

// Conn is a connection: README "an existing flow keeps its backend whatever
// happens to persistence or the pool".
type Conn struct {
	VS     uint32
	Member uint32
	Target netip.AddrPort // the member's address and the port packets go to
	Mode   Mode
	UDP    bool
	// Entry is the persistence entry whose live count the connection holds
	// (while Counted); HasEntry false: the virtual server has no persistence.
	HasEntry bool
	Entry    EntryKey
	// Counted: holds one live connection of Entry. MemberCounted: holds
	// one of Member's active connections. Both end together, exactly once,
	// when the connection ends.
	Counted, MemberCounted bool
	FinClient, FinServer   bool
	RST                    bool
	Created                Instant
	// LastSeen is the recorded time of the client's last packet, stale by up
	// to FlowStampGranularity; the sweeper's idle expiry reads it.
	LastSeen Instant
}

// Closed: README "A TCP connection ends with a FIN from both sides, an RST
// ... Under dsr the server's FIN never passes the balancer, so the client's
// FIN ends it."
func (c Conn) Closed() bool {
	return c.RST || (c.FinClient && c.FinServer) || (c.Mode == DSR && c.FinClient)
}

// Translation is how a NAT member's reply is rewritten back to the VIP: it
// is installed when a NAT connection opens, and goes when the sweeper ends
// that connection. A later connection with the same reply 5-tuple (the same
// client port to another VIP, through the same member port) replaces it:
// the member itself cannot tell the two apart.
type Translation struct {
	VIP    netip.AddrPort
	VS     uint32
	Member uint32
}

// Entry is a persistence entry.
type Entry struct {
	// Server is the persisted server's address and port (port 0: the
	// member's "virtual server's port"); README "value = the persisted
	// server (address, not member index, so that shared tables work across
	// virtual servers whose pools list the same servers on other ports)".
	Server netip.AddrPort
	Member uint32 // member that created or last moved it
	VS     uint32 // virtual server that created or last moved it
	Conns  uint32 // live connections holding it
	// Expired: found past its timeout and claimed for deletion, but not
	// deleted yet (the sweeper deletes it, or a new connection replaces it).
	Expired  bool
	Created  Instant
	LastSeen Instant // last connection opened or closed: the countdown base
}

// VSCounters are a virtual server's counters.
type VSCounters struct {
	Packets, Bytes, ReplyPackets, ReplyBytes, NewFlows uint64
	PersistHits, PersistMisses, PersistMoved           uint64
	Rejects, ServerDownDrops, NoMemberDrops            uint64
}

// MemberCounters are a member's counters.
type MemberCounters struct {
	Packets, Bytes, NewFlows uint64
	// Next-hop cache lookups for the member while the cache is live.
	NexthopHits, NexthopMisses, NexthopMTU uint64
}

// TableCounters are a persistence table's counters.
type TableCounters struct{ Inserts, Hits, Misses, Rejects, Expired uint64 }

// Link is one interface of the balancer's network.
type Link struct {
	Index    int
	Name     string
	MAC      net.HardwareAddr
	MTU      int
	Prefixes []netip.Prefix // its own addresses, with their subnets
}

func protoName(p uint8) string {
	switch p {
	case ipProtoTCP:
		return "tcp"
	case ipProtoUDP:
		return "udp"
	}
	return fmt.Sprintf("proto%d", p)
}
