package loader

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

type runOptions = ebpf.RunOptions

// VSCounters are a virtual server's counters, summed over CPUs.
type VSCounters struct {
	Packets, Bytes, ReplyPackets, ReplyBytes, NewFlows uint64
	PersistHits, PersistMisses, PersistMoved           uint64
	Rejects, ServerDownDrops, NoMemberDrops            uint64
}

// MemberCounters are a member's counters, summed over CPUs.
type MemberCounters struct {
	Packets, Bytes, NewFlows uint64
	// The member's next-hop cache lookups while the cache is live: hits,
	// misses (no hop in the generation) and MTU fallbacks (the packet was
	// longer than the hop's MTU); the last two asked the FIB.
	NexthopHits, NexthopMisses, NexthopMTU uint64
}

// TableCounters are a persistence table's datapath counters, summed over CPUs.
type TableCounters struct {
	Inserts, Hits, Misses, Rejects, Expired uint64
}

// What a reason does to its packet.
type reasonAction uint8

const (
	reasonCounts reasonAction = iota // counted only: the packet is forwarded all the same
	reasonDrops
	reasonPasses // handed to the kernel's stack (XDP_PASS)
)

// reasons describes every reason of the datapath's enum, keyed by the
// generated constants. The array's length is REASON_MAX, so a reason added
// to the C enum without a row here leaves an empty name that
// TestReasonTableCoversEnum reports, and one removed fails to compile.
var reasons = [limpetReasonREASON_MAX]struct {
	name   string
	action reasonAction
}{
	limpetReasonREASON_TRUNC_ETH:       {"truncated_ethernet", reasonDrops},
	limpetReasonREASON_TRUNC_IP:        {"truncated_ip", reasonDrops},
	limpetReasonREASON_TRUNC_L4:        {"truncated_l4", reasonDrops},
	limpetReasonREASON_FRAGMENT:        {"fragment", reasonDrops},
	limpetReasonREASON_TCP_FLAGS:       {"bad_tcp_flags", reasonDrops},
	limpetReasonREASON_IPV6EXT:         {"ipv6_extension_unsupported", reasonDrops},
	limpetReasonREASON_NO_MEMBER:       {"no_member", reasonDrops},
	limpetReasonREASON_SERVER_DOWN:     {"server_down", reasonDrops},
	limpetReasonREASON_TABLE_FULL:      {"table_full", reasonDrops}, // a TCP SYN is answered with a RST
	limpetReasonREASON_TTL_EXPIRED:     {"ttl_expired", reasonPasses},
	limpetReasonREASON_FIB_NO_NEIGH:    {"fib_no_neighbour", reasonPasses},
	limpetReasonREASON_FIB_PASS:        {"fib_pass", reasonPasses},
	limpetReasonREASON_FIB_DROP:        {"fib_drop", reasonDrops},
	limpetReasonREASON_DSR_NO_NEIGH:    {"dsr_no_neighbour", reasonDrops},
	limpetReasonREASON_VLAN_PASS:       {"vlan_pass", reasonPasses},
	limpetReasonREASON_IPV4OPTIONS:     {"ipv4_options", reasonCounts},
	limpetReasonREASON_IPV6EXT_WALKED:  {"ipv6_extension_walked", reasonCounts},
	limpetReasonREASON_NO_TABLE:        {"no_table", reasonDrops},
	limpetReasonREASON_STRAY_TCP:       {"stray_tcp", reasonCounts},
	limpetReasonREASON_MEMBER_FULL:     {"member_full", reasonDrops},
	limpetReasonREASON_EVENT_LOST:      {"event_lost", reasonCounts},
	limpetReasonREASON_NEXTHOP_MISS:    {"nexthop_miss", reasonCounts},
	limpetReasonREASON_NEXTHOP_MTU:     {"nexthop_mtu", reasonCounts},
	limpetReasonREASON_ICMP_TO_CLIENT:  {"icmp_to_client", reasonCounts},
	limpetReasonREASON_ICMP_TO_MEMBER:  {"icmp_to_member", reasonCounts},
	limpetReasonREASON_ICMP_NO_FLOW:    {"icmp_no_flow", reasonPasses},
	limpetReasonREASON_ICMP_BAD_QUOTE:  {"icmp_bad_quote", reasonPasses},
	limpetReasonREASON_ENCAP_TOO_BIG:   {"encap_too_big", reasonCounts}, // answered with ICMP too-big, not forwarded
	limpetReasonREASON_ENCAP_NO_SOURCE: {"encap_no_source", reasonDrops},
	limpetReasonREASON_NOT_OUR_MAC:     {"not_our_mac", reasonPasses},
	limpetReasonREASON_FLOW_TABLE_FULL: {"flow_table_full", reasonCounts}, // forwarded, with no flow entry
}

// firstReason is the first real reason: REASON_NONE (0) counts nothing.
const firstReason = limpetReasonREASON_NONE + 1

// ReasonNames names each exception counter, in the order ReasonCounters
// returns them: index i is the datapath's reason i+1 (after REASON_NONE).
var ReasonNames = reasonColumn(func(r reasonAction, name string) string { return name })

// ReasonPasses says whether the reason with that index hands the packet to
// the kernel's stack (XDP_PASS); the reasons that neither drop nor pass only
// count a packet that is forwarded all the same.
var ReasonPasses = reasonColumn(func(r reasonAction, _ string) bool { return r == reasonPasses })

// ReasonDrops says whether the reason with that index drops the packet.
// table_full drops a UDP datagram; a TCP SYN is answered with a RST.
var ReasonDrops = reasonColumn(func(r reasonAction, _ string) bool { return r == reasonDrops })

func reasonColumn[T any](f func(reasonAction, string) T) []T {
	out := make([]T, 0, len(reasons)-int(firstReason))
	for _, r := range reasons[firstReason:] {
		out = append(out, f(r.action, r.name))
	}
	return out
}

func sumPerCPU[V any](m *ebpf.Map, key uint32, add func(*V, *V)) (V, error) {
	var total V
	var per []V
	if err := m.Lookup(key, &per); err != nil {
		return total, err
	}
	for i := range per {
		add(&total, &per[i])
	}
	return total, nil
}

// VSCounters returns the counters of one virtual server.
func (p *Pinned) VSCounters(id VirtualServerID) (VSCounters, error) {
	s, err := sumPerCPU(p.m.VsCounters, uint32(id), func(t, v *limpetVsStats) {
		t.Packets += v.Packets
		t.Bytes += v.Bytes
		t.ReplyPackets += v.ReplyPackets
		t.ReplyBytes += v.ReplyBytes
		t.NewFlows += v.NewFlows
		t.PersistHits += v.PersistHits
		t.PersistMisses += v.PersistMisses
		t.PersistMoved += v.PersistMoved
		t.Rejects += v.Rejects
		t.ServerDownDrops += v.ServerDownDrops
		t.NoMemberDrops += v.NoMemberDrops
	})
	return VSCounters{
		Packets: s.Packets, Bytes: s.Bytes, ReplyPackets: s.ReplyPackets, ReplyBytes: s.ReplyBytes,
		NewFlows: s.NewFlows, PersistHits: s.PersistHits, PersistMisses: s.PersistMisses,
		PersistMoved: s.PersistMoved, Rejects: s.Rejects, ServerDownDrops: s.ServerDownDrops,
		NoMemberDrops: s.NoMemberDrops,
	}, err
}

// MemberCounters returns the counters of one member.
func (p *Pinned) MemberCounters(id MemberID) (MemberCounters, error) {
	s, err := sumPerCPU(p.m.MemberCounters, uint32(id), func(t, v *limpetMemberStats) {
		t.Packets += v.Packets
		t.Bytes += v.Bytes
		t.NewFlows += v.NewFlows
		t.NexthopHits += v.NexthopHits
		t.NexthopMisses += v.NexthopMisses
		t.NexthopMtu += v.NexthopMtu
	})
	return MemberCounters{Packets: s.Packets, Bytes: s.Bytes, NewFlows: s.NewFlows,
		NexthopHits: s.NexthopHits, NexthopMisses: s.NexthopMisses, NexthopMTU: s.NexthopMtu}, err
}

// TableCounters returns the datapath counters of one persistence table.
func (p *Pinned) TableCounters(id TableID) (TableCounters, error) {
	s, err := sumPerCPU(p.m.TableCounters, id.Index(), func(t, v *limpetTableStats) {
		t.Inserts += v.Inserts
		t.Hits += v.Hits
		t.Misses += v.Misses
		t.Rejects += v.Rejects
		t.Expired += v.Expired
	})
	return TableCounters{s.Inserts, s.Hits, s.Misses, s.Rejects, s.Expired}, err
}

// ReasonCounters returns every exception counter, indexed like ReasonNames,
// with one batch lookup.
func (p *Pinned) ReasonCounters() ([]uint64, error) {
	// A batch lookup of an array reads from index 0 (REASON_NONE, never
	// counted) and writes the keys it read; the real reasons follow it.
	keys := make([]uint32, limpetReasonREASON_MAX)
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, err
	}
	per := make([]uint64, len(keys)*cpus)
	var cursor ebpf.MapBatchCursor
	n, err := p.m.ReasonCounters.BatchLookup(&cursor, keys, per, nil)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil, fmt.Errorf("read reason counters: %w", err)
	}
	if n != len(keys) {
		return nil, fmt.Errorf("read reason counters: got %d of %d", n, len(keys))
	}
	out := make([]uint64, len(ReasonNames))
	for i := range out {
		k := i + int(firstReason)
		for c := 0; c < cpus; c++ {
			out[i] += per[k*cpus+c]
		}
	}
	return out, nil
}

// MemberConns is a member's count of active connections.
type MemberConns struct {
	ID        MemberID
	Conns     uint32
	connState uint64
}

// MemberConns reads every member's active connection count.
func (p *Pinned) MemberConns() ([]MemberConns, error) {
	keys, vals, err := batchRead[MemberID, uint64](p.m.MemberConns)
	if err != nil {
		return nil, fmt.Errorf("read member connections: %w", err)
	}
	out := make([]MemberConns, 0, len(keys))
	for i := range keys {
		out = append(out, MemberConns{ID: keys[i], Conns: uint32(vals[i] & csConnsMask), connState: vals[i]})
	}
	return out, nil
}
