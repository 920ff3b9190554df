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
}

// TableCounters are a persistence table's datapath counters, summed over CPUs.
type TableCounters struct {
	Inserts, Hits, Misses, Rejects, Expired uint64
}

// ReasonNames names each exception counter; Drops says which ones drop.
var ReasonNames = []string{
	"truncated_ethernet", "truncated_ip", "truncated_l4", "fragment", "bad_tcp_flags",
	"ipv6_extension_unsupported", "no_member", "server_down", "table_full",
	"ttl_expired", "fib_no_neighbour", "fib_pass", "fib_drop", "dsr_no_neighbour",
	"vlan_pass", "ipv4_options", "ipv6_extension_walked", "no_table", "stray_tcp",
	"member_full", "event_lost",
}

// ReasonPasses says whether the reason with that index hands the packet to
// the kernel's stack (XDP_PASS); the reasons that neither drop nor pass only
// count a packet that is forwarded all the same.
var ReasonPasses = []bool{
	false, false, false, false, false,
	false, false, false, false,
	true, true, true, false, false,
	true, false, false, false, false,
	false, false,
}

// ReasonDrops says whether the reason with that index drops the packet.
// table_full drops a UDP datagram; a TCP SYN is answered with a RST.
var ReasonDrops = []bool{
	true, true, true, true, true,
	true, true, true, true,
	false, false, false, true, true,
	false, false, false, true, false,
	true, false,
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
func (d *Datapath) VSCounters(id uint32) (VSCounters, error) {
	s, err := sumPerCPU(d.objs.VsCounters, id, func(t, v *limpetVsStats) {
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
func (d *Datapath) MemberCounters(id uint32) (MemberCounters, error) {
	s, err := sumPerCPU(d.objs.MemberCounters, id, func(t, v *limpetMemberStats) {
		t.Packets += v.Packets
		t.Bytes += v.Bytes
		t.NewFlows += v.NewFlows
	})
	return MemberCounters{s.Packets, s.Bytes, s.NewFlows}, err
}

// TableCounters returns the datapath counters of one persistence table.
func (d *Datapath) TableCounters(id uint32) (TableCounters, error) {
	s, err := sumPerCPU(d.objs.TableCounters, TableIndex(id), func(t, v *limpetTableStats) {
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
func (d *Datapath) ReasonCounters() ([]uint64, error) {
	keys := make([]uint32, len(ReasonNames))
	for i := range keys {
		keys[i] = uint32(i)
	}
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, err
	}
	per := make([]uint64, len(keys)*cpus)
	var cursor ebpf.MapBatchCursor
	n, err := d.objs.ReasonCounters.BatchLookup(&cursor, keys, per, nil)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil, fmt.Errorf("read reason counters: %w", err)
	}
	if n != len(keys) {
		return nil, fmt.Errorf("read reason counters: got %d of %d", n, len(keys))
	}
	out := make([]uint64, len(keys))
	for i := range out {
		for c := 0; c < cpus; c++ {
			out[i] += per[i*cpus+c]
		}
	}
	return out, nil
}

// MemberConns is a member's count of active connections.
type MemberConns struct {
	ID        uint32
	Conns     uint32
	connState uint64
}

// MemberConns reads every member's active connection count.
func (d *Datapath) MemberConns() ([]MemberConns, error) {
	keys, vals, err := batchRead[uint32, uint64](d.objs.MemberConns)
	if err != nil {
		return nil, fmt.Errorf("read member connections: %w", err)
	}
	out := make([]MemberConns, 0, len(keys))
	for i := range keys {
		out = append(out, MemberConns{ID: keys[i], Conns: uint32(vals[i] & csConnsMask), connState: vals[i]})
	}
	return out, nil
}
