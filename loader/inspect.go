package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
)

// Accessors that read or set one piece of state at a time, with one system
// call each where the kernel allows it. A checker that follows the datapath
// packet by packet (test/dpfuzz) reads only what each packet could touch, so
// these must stay cheap.

// BootTime is the boot clock as the datapath reads it (coarse, see
// clock.go), the clock its clock adds runtime_settings' offset to: a checker
// brackets a program run between two readings, exactly.
func (p *Pinned) BootTime() (time.Duration, error) { return p.coarseBoot() }

// MemberConn reads one member's active connection count.
func (p *Pinned) MemberConn(id MemberID) (MemberConns, error) {
	var cs uint64
	if err := p.m.MemberConns.Lookup(id, &cs); err != nil {
		return MemberConns{}, fmt.Errorf("member %d connections: %w", id, err)
	}
	return MemberConns{ID: id, Conns: uint32(cs & csConnsMask), connState: cs}, nil
}

// PoolCursor is a pool's turn counter: round robin and weighted round robin
// take the next turn from it, and least connection starts its tie-breaking
// scan there. It survives pool updates.
func (p *Pinned) PoolCursor(id PoolID) (uint32, error) {
	var info limpetPoolInfo
	if err := p.m.Pools.Lookup(id, &info); err != nil {
		return 0, fmt.Errorf("pool %d: %w", id, err)
	}
	return info.RrNext, nil
}

// ExpireConnection is ExpireFlow for the connection of one 5-tuple, as the
// client sent it, without reading the flow first.
func ExpireConnection(src, dst netip.AddrPort, proto Protocol, idle time.Duration) GCRequest {
	return GCRequest{op: gcOpFlowExpire, arg: uint64(idle), key: encodeFlowKey(src, dst, proto)}
}

// PersistTable is an open handle on one persistence table, for reading it
// entry by entry without looking the table up again each time. It goes
// stale when Apply replaces the table (a resize or a change of kind).
type PersistTable struct {
	id TableID
	m  *ebpf.Map
}

// OpenTable opens a persistence table.
func (p *Pinned) OpenTable(id TableID) (*PersistTable, error) {
	m, err := p.openTable(id)
	if err != nil {
		return nil, err
	}
	return &PersistTable{id: id, m: m}, nil
}

// Lookup reads one client's entry; client is the masked address, as keyed.
func (t *PersistTable) Lookup(client netip.Addr) (PersistEntry, bool, error) {
	k := encodePersistKey(t.id, client)
	var v rawPersistEntry
	if err := t.m.Lookup(&k, &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return PersistEntry{}, false, nil
		}
		return PersistEntry{}, false, err
	}
	return decodeEntry(&k, &v), true, nil
}

// Entries reads the whole table.
func (t *PersistTable) Entries() ([]PersistEntry, error) {
	keys, vals, err := batchRead[rawPersistKey, rawPersistEntry](t.m)
	if err != nil {
		return nil, fmt.Errorf("read table %d: %w", t.id.Index(), err)
	}
	out := make([]PersistEntry, len(keys))
	for i := range keys {
		out[i] = decodeEntry(&keys[i], &vals[i])
	}
	return out, nil
}

// MaxEntries is the table's capacity.
func (t *PersistTable) MaxEntries() uint32 { return t.m.MaxEntries() }

// Close releases the handle.
func (t *PersistTable) Close() error { return t.m.Close() }

// PossibleCPUs is how many CPUs the kernel keeps per-CPU state for.
func PossibleCPUs() (int, error) { return ebpf.PossibleCPU() }
