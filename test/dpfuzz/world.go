// Package dpfuzz is a differential fuzzer for limpet's XDP datapath: it
// generates packet sequences, runs each packet through the real program
// (BPF_PROG_RUN, through the loader, in the fixture world's netns) and
// through the reference model (test/model), and compares verdicts, output
// bytes, state and counters after every packet.
package dpfuzz

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/test/dptest"
	"github.com/limpet-lb/limpet/test/model"
	"github.com/limpet-lb/limpet/test/testutil"
)

// World is a datapath in the fixture world, with the model of its network.
type World struct {
	fx   *testutil.World
	dp   *loader.Datapath
	net  model.Network
	cpu  int
	macs map[string]int // link MAC to ifindex
	// offset is the datapath clock's lead over the boot clock: it only
	// grows, and starts at a day, so no "now minus a timeout" is ever before
	// boot.
	offset time.Duration
	// cpus and release describe the kernel's LRU maps to the model.
	cpus    int
	release string
}

// flowTableSize leaves room for every flow of the longest sequence, so the
// LRU flow table never evicts.
const flowTableSize = 1 << 16

// NewWorld builds a fixture world and loads a datapath into it; both go when
// tb ends. Every kernel operation runs on the world's thread, bound to cpu:
// the kernel's LRU maps keep per-CPU lists, so eviction is reproducible
// only on one CPU.
func NewWorld(tb testing.TB, cpu int) *World {
	tb.Helper()
	fx := testutil.NewWorld(tb)
	dw := dptest.New(tb, loader.State{}, flowTableSize)
	w := &World{fx: fx, dp: dw.DP, cpu: cpu % runtime.NumCPU(), macs: map[string]int{}}
	w.net = networkOf(fx)
	for _, l := range fx.Links() {
		w.macs[l.MAC.String()] = l.Index
	}
	err := fx.Do(func() error {
		var set unix.CPUSet
		set.Set(w.cpu)
		return unix.SchedSetaffinity(0, &set)
	})
	if err != nil {
		tb.Fatal(err)
	}
	if err := w.advance(24 * time.Hour); err != nil {
		tb.Fatal(err)
	}
	if w.cpus, err = loader.PossibleCPUs(); err != nil {
		tb.Fatal(err)
	}
	w.release = kernelRelease()
	return w
}

// networkOf describes the fixture world's network to the model.
func networkOf(fx *testutil.World) model.Network {
	var n model.Network
	idx := map[string]int{}
	for _, l := range fx.Links() {
		idx[l.Name] = l.Index
	}
	for _, ls := range fx.Spec.Links {
		for _, l := range fx.Links() {
			if l.Name == ls.Name {
				n.Links = append(n.Links, model.Link{Index: l.Index, Name: l.Name, MAC: l.MAC, MTU: l.MTU, Prefixes: ls.Prefixes})
			}
		}
	}
	for _, nb := range fx.Spec.Neighbours {
		n.Neighbours = append(n.Neighbours, model.Neighbour{Link: idx[nb.Link], IP: nb.IP, MAC: nb.MAC})
	}
	kinds := map[testutil.RouteKind]model.RouteKind{
		testutil.RouteUnicast: model.Unicast, testutil.RouteBlackhole: model.Blackhole,
		testutil.RouteUnreachable: model.Unreachable, testutil.RouteProhibit: model.Prohibit,
	}
	for _, r := range fx.Spec.Routes {
		n.Routes = append(n.Routes, model.Route{Dst: r.Dst, Kind: kinds[r.Kind], Via: r.Via, Link: idx[r.Link]})
	}
	return n
}

// do runs fn on the world's thread.
func (w *World) do(fn func() error) error { return w.fx.Do(fn) }

// The datapath clock reads the boot clock plus an offset the world sets: a
// reading is known to lie between the boot clock (as the datapath reads it,
// coarse) read just before and just after the program ran, plus the offset. Time jumps forward by raising the
// offset; it never goes back (but see runGC).

// now is the datapath clock's reading now, as far as the world knows.
func (w *World) now() (time.Duration, error) {
	b, err := w.dp.BootTime()
	return b + w.offset, err
}

// advance moves the datapath clock forward by d.
func (w *World) advance(d time.Duration) error {
	w.offset += d
	return w.dp.SetClockOffset(w.offset)
}

// run runs one packet and says when the datapath read its clock.
func (w *World) run(frame []byte, ingress int) (loader.XDPAction, []byte, model.Instant, error) {
	lo, err := w.now()
	if err != nil {
		return 0, nil, model.Instant{}, err
	}
	act, out, err := w.dp.RunPacket(frame, ingress)
	hi, err2 := w.now()
	if err == nil {
		err = err2
	}
	return act, out, model.Instant{Lo: lo, Hi: hi}, err
}

// runGC runs GC requests (at most one batch, so one clock reading). back
// sets the clock that much behind for this batch, as a coarse clock
// standing still or another CPU's reading can be.
func (w *World) runGC(reqs []loader.GCRequest, back time.Duration) (model.Instant, error) {
	if len(reqs) > gcBatch {
		return model.Instant{}, fmt.Errorf("%d GC requests in one batch", len(reqs))
	}
	if back > 0 {
		if err := w.dp.SetClockOffset(w.offset - back); err != nil {
			return model.Instant{}, err
		}
	}
	lo, err := w.now()
	if err != nil {
		return model.Instant{}, err
	}
	err = w.dp.RunGC(reqs)
	hi, err2 := w.now()
	if err == nil {
		err = err2
	}
	if back > 0 {
		if err2 := w.dp.SetClockOffset(w.offset); err == nil {
			err = err2
		}
	}
	return model.Instant{Lo: lo - back, Hi: hi - back}, err
}

// gcBatch is the GC program's batch: one BPF_PROG_RUN, one clock reading.
const gcBatch = 48
