package dpfuzz

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/test/model"
)

var (
	flagPackets  = flag.Int("dpfuzz.packets", 100_000, "packets the differential run sends through the datapath and the model")
	flagWorkers  = flag.Int("dpfuzz.workers", 1, "datapaths run side by side, each on its own CPU (0: one per CPU)")
	flagSeed     = flag.Uint64("dpfuzz.seed", 0, "seed of the generator (0: a fresh one, printed)")
	flagMinimize = flag.Duration("dpfuzz.minimize", 90*time.Second, "time spent shrinking a disagreement before reporting it")
	flagOps      = flag.Int("dpfuzz.ops", 1500, "operations per sequence, at most (each sequence starts from empty tables)")
	flagTrace    = flag.Bool("dpfuzz.trace", false, "FuzzDatapath logs every operation of its inputs")
)

// TestDatapathDifferential generates sequences of packets, clock steps,
// member changes and sweeps, and holds the datapath to the model on every
// packet. 'make test' runs it short; 'make fuzz-datapath' runs it long. A
// disagreement is shrunk, saved as a regression seed of FuzzDatapath and
// reported with its reproducer.
func TestDatapathDifferential(t *testing.T) {
	seed := *flagSeed
	if seed == 0 {
		seed = rand.Uint64()
	}
	workers := *flagWorkers
	if workers <= 0 {
		workers = runtime.NumCPU()
	}
	t.Logf("seed %d (rerun with -dpfuzz.seed=%d), %d packets, %d workers", seed, seed, *flagPackets, workers)
	worlds := make([]*World, workers)
	for i := range worlds {
		worlds[i] = NewWorld(t, i)
	}
	start := time.Now()
	var mu sync.Mutex
	var total Stats
	var failure *Mismatch
	var failInput []byte
	var wg sync.WaitGroup
	for i, w := range worlds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(i)))
			for {
				mu.Lock()
				done := total.Packets >= *flagPackets || failure != nil
				mu.Unlock()
				if done {
					return
				}
				in := RandomInput(rng, 100+rng.IntN(*flagOps))
				st, mm, err := w.Run(in)
				mu.Lock()
				total.add(st)
				if err != nil && failure == nil {
					failure = &Mismatch{What: "harness error: " + err.Error()}
				}
				if mm != nil && failure == nil {
					failure, failInput = mm, in
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	t.Logf("%d packets in %d sequences (%d operations, %d sweeps, %d undecided comparisons settled by the kernel) in %v: %.0f packets/s",
		total.Packets, total.Sequences, total.Ops, total.Sweeps, total.Choices, elapsed.Round(time.Millisecond), float64(total.Packets)/elapsed.Seconds())
	t.Logf("verdicts: %s", formatCounts(total.Verdicts))
	t.Logf("persistence: %d hits, %d misses, %d moved, %d expired, %d rejected (table full), %d evicted (table full, purging)",
		total.Hits, total.Misses, total.Moved, total.Expired, total.Rejected, total.Evicted)
	t.Logf("next-hop cache: %d member hops published", total.CachedHops)
	t.Logf("time: %s", formatCounts(total.Time))
	t.Logf("counted: %s", formatCounts(total.Reasons))
	if failure == nil {
		return
	}
	if failInput == nil {
		t.Fatal(failure.What)
	}
	small, mm, err := worlds[0].Minimize(failInput, failure, *flagMinimize)
	if err != nil {
		t.Logf("minimising: %v", err)
	}
	path, err := SaveSeed(CorpusDir, small)
	if err != nil {
		t.Logf("saving the seed: %v", err)
	}
	t.Fatalf("%d packets in, the datapath and the model disagree; shrunk from %d to %d operations and saved as %s (go test -run FuzzDatapath replays it)\n%s",
		total.Packets, Ops(failInput), Ops(small), path, mm.Error())
}

func formatCounts[K comparable, V any](m map[K]V) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%v %v", k, v))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// FuzzDatapath is the native fuzz target: each input is a sequence (a
// configuration header, then operations). Its corpus holds the regression
// seeds that disagreements were shrunk to; 'go test' replays them, and
// 'go test -fuzz FuzzDatapath ./test/dpfuzz' explores from them.
func FuzzDatapath(f *testing.F) {
	for i := uint64(1); i <= 4; i++ {
		f.Add(RandomInput(rand.New(rand.NewPCG(i, 0)), 400))
	}
	w := NewWorld(f, 0)
	f.Fuzz(func(t *testing.T, in []byte) {
		if *flagTrace {
			Trace = t.Logf
			defer func() { Trace = nil }()
		}
		_, mm, err := w.Run(in)
		if err != nil {
			t.Fatal(err)
		}
		if mm != nil {
			t.Fatal(mm.Error())
		}
	})
}

// The model's reasons are exactly the datapath's.
func TestModelKnowsEveryReason(t *testing.T) {
	known := map[model.Reason]bool{}
	for _, r := range []model.Reason{model.TruncatedEthernet, model.TruncatedIP, model.TruncatedL4, model.Fragment,
		model.BadTCPFlags, model.IPv6ExtUnsupported, model.NoMember, model.ServerDown, model.TableFull, model.TTLExpired,
		model.FIBNoNeighbour, model.FIBPass, model.FIBDrop, model.DSRNoNeighbour, model.VLANPass, model.IPv4Options,
		model.IPv6ExtWalked, model.NoTable, model.StrayTCP, model.MemberFull, model.EventLost, model.NexthopMiss, model.NexthopMTU,
		model.ICMPToClient, model.ICMPToMember, model.ICMPNoFlow, model.ICMPBadQuote,
		model.EncapTooBig, model.EncapNoSource, model.NotOurMAC, model.FlowTableFull} {
		known[r] = true
	}
	for _, n := range reasonNames() {
		if !known[model.Reason(n)] {
			t.Errorf("the datapath counts %q, which the model does not know", n)
		}
		delete(known, model.Reason(n))
	}
	for r := range known {
		t.Errorf("the model counts %q, which the datapath does not have", r)
	}
}
