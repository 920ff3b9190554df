package loader

import (
	"fmt"
	"net/netip"
	"time"
	"unsafe"
)

// GCResult says what the in-kernel GC did with one request.
type GCResult uint32

// GC results.
const (
	GCDone     = GCResult(limpetGcResultGC_RES_DONE)
	GCSkipped  = GCResult(limpetGcResultGC_RES_SKIPPED)   // still live, or changed since it was read
	GCNotFound = GCResult(limpetGcResultGC_RES_NOT_FOUND) // already gone
	GCBad      = GCResult(limpetGcResultGC_RES_BAD)
)

// GCRequest is one operation for the in-kernel GC. Build it with
// ExpireFlow, ExpireEntry or Reconcile.
type GCRequest struct {
	op, arg, arg2 uint64
	key           [gcKeySize]byte // a flow key, or a persistence key at its start
	Result        GCResult
}

// Client is the client of a persistence request, for its caller's bookkeeping.
func (r GCRequest) Client() netip.Addr {
	var k rawPersistKey
	copy(k[:], r.key[:])
	_, c := k.decode()
	return c
}

// ExpireFlow ends a flow idle for at least idle: its entry loses one live
// connection (exactly once, whoever else races to end it) and its NAT reply
// entry goes with it.
func ExpireFlow(f Flow, idle time.Duration) GCRequest {
	return GCRequest{op: gcOpFlowExpire, arg: uint64(idle), key: f.key}
}

// ExpireEntry deletes an entry that has no live connection and has been
// idle for longer than timeout.
func ExpireEntry(e PersistEntry, timeout time.Duration) GCRequest {
	return persistRequest(gcOpPersistExpire, e, uint64(timeout), 0)
}

// Reconcile sets an entry's live connection count to conns, provided no
// connection opened or closed since e was read.
func Reconcile(e PersistEntry, conns uint32) GCRequest {
	return persistRequest(gcOpReconcile, e, e.connState, uint64(conns))
}

// ReconcileMember sets a member's active connection count to conns,
// provided no connection opened or closed since m was read.
func ReconcileMember(m MemberConns, conns uint32) GCRequest {
	r := GCRequest{op: gcOpMemberReconcile, arg: m.connState, arg2: uint64(conns)}
	le.PutUint32(r.key[0:], uint32(m.ID))
	return r
}

// TouchEntry restarts an entry's countdown from now, leaving its count alone.
func TouchEntry(tableID TableID, client netip.Addr) GCRequest {
	return persistRequest(gcOpTouch, PersistEntry{TableID: tableID, Client: client}, 0, 0)
}

func persistRequest(op uint64, e PersistEntry, arg, arg2 uint64) GCRequest {
	r := GCRequest{op: op, arg: arg, arg2: arg2}
	k := encodePersistKey(e.TableID, e.Client)
	copy(r.key[:], k[:])
	return r
}

// RunGC executes the requests in the kernel, in batches, and fills in each
// request's Result.
func (d *Datapath) RunGC(reqs []GCRequest) error {
	in := make([]byte, unsafe.Sizeof(limpetGcBatch{}))
	out := make([]byte, len(in))
	for start := 0; start < len(reqs); start += gcBatchMax {
		end := min(start+gcBatchMax, len(reqs))
		clear(in)
		le.PutUint32(in[0:], uint32(end-start))
		for i := start; i < end; i++ {
			it := in[gcHeaderSize+uintptr(i-start)*gcItemSize:]
			le.PutUint32(it[giOp:], uint32(reqs[i].op))
			le.PutUint64(it[giArg:], reqs[i].arg)
			le.PutUint64(it[giArg2:], reqs[i].arg2)
			copy(it[giKey:gcItemSize], reqs[i].key[:])
		}
		if _, err := d.objs.LimpetGc.Run(&runOptions{Data: in, DataOut: out}); err != nil {
			return fmt.Errorf("run GC program: %w", err)
		}
		for i := start; i < end; i++ {
			reqs[i].Result = GCResult(le.Uint32(out[gcHeaderSize+uintptr(i-start)*gcItemSize+giResult:]))
		}
	}
	return nil
}
