package loader

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"
)

// GCResult says what the in-kernel GC did with one request.
type GCResult uint32

// GC results.
const (
	GCDone     GCResult = gcResultDone
	GCSkipped  GCResult = gcResultSkipped  // still live, or changed since it was read
	GCNotFound GCResult = gcResultNotFound // already gone
	GCBad      GCResult = gcResultBadArgument
)

// GCRequest is one operation for the in-kernel GC. Build it with
// ExpireFlow, ExpireEntry or Reconcile.
type GCRequest struct {
	item   limpetGcItem
	Result GCResult
}

// ExpireFlow ends a flow idle for at least idle: its entry loses one live
// connection (exactly once, whoever else races to end it) and its NAT reply
// entry goes with it.
func ExpireFlow(f Flow, idle time.Duration) GCRequest {
	return GCRequest{item: limpetGcItem{Op: gcOpFlowExpire, Arg: uint64(idle), Flow: f.key}}
}

// ExpireEntry deletes an entry that has no live connection and has been
// idle for longer than timeout.
func ExpireEntry(e PersistEntry, timeout time.Duration) GCRequest {
	return GCRequest{item: persistItem(gcOpPersistExpire, e, uint64(timeout), 0)}
}

// Reconcile sets an entry's live connection count to conns, provided no
// connection opened or closed since e was read.
func Reconcile(e PersistEntry, conns uint32) GCRequest {
	return GCRequest{item: persistItem(gcOpReconcile, e, e.connState, uint64(conns))}
}

func persistItem(op uint32, e PersistEntry, arg, arg2 uint64) limpetGcItem {
	it := limpetGcItem{Op: op, Arg: arg, Arg2: arg2}
	k := persistKey(e.TableID, e.Client)
	var buf bytes.Buffer
	_ = binary.Write(&buf, binary.LittleEndian, &k)
	raw := make([]byte, binary.Size(it.Flow))
	copy(raw, buf.Bytes())
	_ = binary.Read(bytes.NewReader(raw), binary.LittleEndian, &it.Flow)
	return it
}

// RunGC executes the requests in the kernel, in batches, and fills in each
// request's Result.
func (d *Datapath) RunGC(reqs []GCRequest) error {
	for start := 0; start < len(reqs); start += gcBatchMax {
		end := min(start+gcBatchMax, len(reqs))
		var b limpetGcBatch
		b.Count = uint32(end - start)
		for i := start; i < end; i++ {
			b.Items[i-start] = reqs[i].item
		}
		in, err := binary.Append(nil, binary.LittleEndian, &b)
		if err != nil {
			return err
		}
		out := make([]byte, len(in))
		if _, err := d.objs.LimpetGc.Run(&runOptions{Data: in, DataOut: out}); err != nil {
			return fmt.Errorf("run GC program: %w", err)
		}
		if err := binary.Read(bytes.NewReader(out), binary.LittleEndian, &b); err != nil {
			return err
		}
		for i := start; i < end; i++ {
			reqs[i].Result = GCResult(b.Items[i-start].Result)
		}
	}
	return nil
}

// String describes a request for logs.
func (r GCRequest) String() string {
	switch r.item.Op {
	case gcOpFlowExpire:
		k := r.item.Flow
		return fmt.Sprintf("expire flow %s:%d -> %s:%d", bytesAddr(k.Src.B, k.Family), ntohs(k.Sport), bytesAddr(k.Dst.B, k.Family), ntohs(k.Dport))
	case gcOpPersistExpire, gcOpReconcile:
		return fmt.Sprintf("op %d on an entry", r.item.Op)
	}
	return "unknown"
}
