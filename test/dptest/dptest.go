// Package dptest drives a real datapath through BPF_PROG_RUN for tests:
// load it at a private pin path, send packets as clients would, read the
// decisions back from the flow and persistence tables, and move its clock.
// No netns is needed: every decision is made before the FIB lookup.
package dptest

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/test/packets"
	"github.com/limpet-lb/limpet/test/testutil"
)

// World is a loaded datapath and the test that owns it.
type World struct {
	T      testing.TB
	DP     *loader.Datapath
	offset time.Duration
}

// New loads a datapath with state applied; it is detached when tb ends.
func New(tb testing.TB, s loader.State, flowTable uint32) *World {
	tb.Helper()
	testutil.RequireRoot(tb)
	pin := fmt.Sprintf("/sys/fs/bpf/limpet-dptest-%d-%d", os.Getpid(), rand.Uint32())
	dp, err := loader.Load(loader.Options{PinPath: pin, FlowTableSize: flowTable})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := dp.Detach(); err != nil {
			tb.Error(err)
		}
	})
	w := &World{T: tb, DP: dp}
	w.Apply(s)
	return w
}

// Apply writes a new state.
func (w *World) Apply(s loader.State) {
	w.T.Helper()
	if err := w.DP.Apply(s); err != nil {
		w.T.Fatal(err)
	}
}

// Send runs one packet through the datapath.
func (w *World) Send(s packets.Spec) (loader.XDPAction, packets.Decoded) {
	w.T.Helper()
	act, out, err := w.DP.RunPacket(s.Bytes(), 0)
	if err != nil {
		w.T.Fatal(err)
	}
	return act, packets.Decode(out)
}

// Connect opens a TCP connection and returns the member its flow points
// at; the zero AddrPort means the datapath created no flow (rejected or
// dropped). The flow table, not the output packet, is read: outside a netns
// the FIB cannot route DSR packets, but the decision is made before that.
func (w *World) Connect(client netip.Addr, sport uint16, vs netip.AddrPort) netip.AddrPort {
	w.T.Helper()
	src := netip.AddrPortFrom(client, sport)
	w.Send(packets.TCP(src, vs, "S"))
	f, ok, err := w.DP.LookupFlow(src, vs, loader.ProtoTCP)
	if err != nil {
		w.T.Fatal(err)
	}
	if !ok {
		return netip.AddrPort{}
	}
	return f.Target
}

// CloseBoth ends a NAT connection with a FIN from each side.
func (w *World) CloseBoth(client netip.Addr, sport uint16, vs, member netip.AddrPort) {
	w.T.Helper()
	w.Send(packets.TCP(netip.AddrPortFrom(client, sport), vs, "FA"))
	w.Send(packets.TCP(member, netip.AddrPortFrom(client, sport), "FA"))
}

// Reset ends a connection with a client RST.
func (w *World) Reset(client netip.Addr, sport uint16, vs netip.AddrPort) {
	w.T.Helper()
	w.Send(packets.TCP(netip.AddrPortFrom(client, sport), vs, "R"))
}

// Advance moves the datapath clock forward.
func (w *World) Advance(d time.Duration) {
	w.T.Helper()
	w.offset += d
	if err := w.DP.SetClockOffset(w.offset); err != nil {
		w.T.Fatal(err)
	}
}

// Entries reads a persistence table by client.
func (w *World) Entries(table loader.TableID) map[netip.Addr]loader.PersistEntry {
	w.T.Helper()
	es, err := w.DP.TableEntries(table)
	if err != nil {
		w.T.Fatal(err)
	}
	out := map[netip.Addr]loader.PersistEntry{}
	for _, e := range es {
		out[e.Client] = e
	}
	return out
}

// Entry reads one client's entry.
func (w *World) Entry(table loader.TableID, client netip.Addr) (loader.PersistEntry, bool) {
	e, ok := w.Entries(table)[client]
	return e, ok
}

// Client is the i-th of up to 62500 distinct IPv4 client addresses.
func Client(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 51, byte(100 + i/250), byte(1 + i%250)})
}

// OnOneCPU runs fn on a thread bound to one CPU. The kernel's LRU keeps
// per-CPU lists, so eviction order is exact only for inserts made on one CPU.
func OnOneCPU(tb testing.TB, fn func()) {
	tb.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var old, one unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		tb.Fatal(err)
	}
	one.Set(0)
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		tb.Fatal(err)
	}
	defer unix.SchedSetaffinity(0, &old)
	fn()
}
