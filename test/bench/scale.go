package bench

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/userspace/config"
	"github.com/limpet-lb/limpet/userspace/desired"
	"github.com/limpet-lb/limpet/userspace/gc"
	"github.com/limpet-lb/limpet/userspace/plan"
)

// Part 5: scale. A datapath is loaded (nothing attached) from a config with
// one LRU table (purge_when_full on) and one plain hash table (off), each
// holding Entries clients, and measured: the kernel's accounting of each
// table's memory, one GC sweep over all of them (nothing to do; then half of
// them expired, which the sweep deletes), and `limpet persistence dump` of
// one table by the real binary, against the pinned maps.

// ScaleOptions size part 5.
type ScaleOptions struct {
	Entries int
	Runs    int
}

// ScaleResult is part 5.
type ScaleResult struct {
	Entries                      int
	KeyValueBytes                int
	LRUBytes, HashBytes          uint64 // whole table, as the kernel accounts it
	LRUSlots, HashSlots          int    // their capacities
	FlowBytes                    uint64 // the flow table, for the same entry count
	SweepLive, SweepHalf         Series // ms
	ReadTable, DumpTable, DumpJS Series // ms
}

// RunScale runs part 5.
func RunScale(ctx context.Context, env Env, o ScaleOptions) (res *ScaleResult, err error) {
	if env, err = env.resolved(); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "limpet-bench-scale-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	pin := fmt.Sprintf("/sys/fs/bpf/limpet-bench-scale-%d", os.Getpid())
	cfgPath := filepath.Join(dir, "scale.yaml")
	if err := env.render("limpet-scale.yaml.tmpl", cfgPath, map[string]any{"PinDir": pin, "Entries": o.Entries, "LRUEntries": o.Entries + o.Entries/64}); err != nil {
		return nil, err
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return nil, err
	}
	state, meta, err := plan.Build(cfg, nil)
	if err != nil {
		return nil, err
	}
	_ = loader.Detach(pin) // left by a crashed run of this pid, if any
	dp, err := loader.Load(loader.Options{PinPath: pin, FlowTableSize: uint32(o.Entries)})
	if err != nil {
		return nil, err
	}
	defer func() {
		if dp != nil {
			err = errors.Join(err, dp.Detach())
		} else {
			err = errors.Join(err, loader.Detach(pin))
		}
	}()
	if err := dp.Apply(state); err != nil {
		return nil, err
	}
	doc, err := meta.Marshal()
	if err != nil {
		return nil, err
	}
	if err := dp.WriteMeta(doc); err != nil {
		return nil, err
	}

	res = &ScaleResult{Entries: o.Entries, KeyValueBytes: 24 + 56}
	var lru, hash desired.TableMeta
	for _, t := range meta.Tables {
		if t.PurgeWhenFull {
			lru = t
		} else {
			hash = t
		}
	}
	res.LRUSlots, res.HashSlots = lru.MaxEntries, hash.MaxEntries
	if res.LRUBytes, err = dp.TableMemory(lru.ID); err != nil {
		return nil, err
	}
	if res.HashBytes, err = dp.TableMemory(hash.ID); err != nil {
		return nil, err
	}
	if res.FlowBytes, err = dp.FlowTableMemory(); err != nil {
		return nil, err
	}

	// The datapath clock starts at a minute whatever the machine's uptime,
	// less than the ages the run builds (two timeouts): the entries it
	// expires get their age from the clock moving forward, never from a
	// subtraction that a freshly booted machine's clock could not hold.
	if err := dp.SetClock(scaleClockStart); err != nil {
		return nil, err
	}
	timeout := time.Duration(hash.Timeout) * time.Second
	vsOf := map[loader.TableID]loader.VirtualServerID{}
	for _, vs := range state.VirtualServers {
		vsOf[vs.TableID] = vs.ID
	}
	entries := func(t desired.TableMeta, now, stale time.Duration) []loader.PersistEntry {
		es := make([]loader.PersistEntry, o.Entries)
		for i := range es {
			m := state.Members[i%len(state.Members)]
			last := now
			if i%2 == 0 {
				last = stale
			}
			es[i] = loader.PersistEntry{TableID: t.ID, Client: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}),
				Server: m.Addr, MemberID: m.ID, VSID: vsOf[t.ID], Created: last, LastSeen: last}
		}
		return es
	}
	// fill writes every entry as last seen now; with half set, half of
	// them were last seen two timeouts ago: they are written first, and
	// the clock then moves on by two timeouts.
	fill := func(half bool) error {
		now, err := dp.Now()
		if err != nil {
			return err
		}
		stale := now
		if half {
			off, err := dp.ClockOffset()
			if err != nil {
				return err
			}
			if err := dp.SetClockOffset(off + 2*timeout); err != nil {
				return err
			}
			now += 2 * timeout
		}
		for _, t := range []desired.TableMeta{lru, hash} {
			if _, err := dp.FlushTable(t.ID); err != nil {
				return err
			}
			if err := dp.PutEntries(t.ID, entries(t, now, stale)); err != nil {
				return err
			}
		}
		return nil
	}
	sw := gc.New(dp, gc.Timeouts{TCPEstablished: time.Hour, TCPFin: time.Hour, UDP: time.Hour},
		func(id loader.TableID) (time.Duration, bool) { return timeout, true })

	for run := 0; run < o.Runs; run++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		t0 := time.Now()
		// Full tables: the dump (the loader's batch read alone, then the
		// CLI against the pinned maps), a sweep with nothing to do; then
		// half of the entries expired, which the sweep deletes.
		if err := fill(false); err != nil {
			return nil, err
		}
		start := time.Now()
		es, err := dp.TableEntries(hash.ID)
		if err != nil {
			return nil, err
		}
		res.ReadTable.Add(ms(time.Since(start)))
		if len(es) != o.Entries {
			return nil, fmt.Errorf("%w: read %d entries of %d", errSanity, len(es), o.Entries)
		}
		for _, format := range []string{"table", "json"} {
			d, err := timeDump(ctx, env.LimpetBin, pin, "web-hash", format, o.Entries)
			if err != nil {
				return nil, err
			}
			if format == "table" {
				res.DumpTable.Add(ms(d))
			} else {
				res.DumpJS.Add(ms(d))
			}
		}
		rep, err := sw.Sweep()
		if err != nil {
			return nil, err
		}
		if rep.Entries != 2*o.Entries || rep.EntriesExpired != 0 {
			return nil, fmt.Errorf("%w: sweep saw %d entries and expired %d, want %d and 0", errSanity, rep.Entries, rep.EntriesExpired, 2*o.Entries)
		}
		res.SweepLive.Add(ms(rep.Duration))
		if err := fill(true); err != nil {
			return nil, err
		}
		rep, err = sw.Sweep()
		if err != nil {
			return nil, err
		}
		if rep.EntriesExpired != o.Entries {
			return nil, fmt.Errorf("%w: sweep expired %d of %d entries, want %d", errSanity, rep.EntriesExpired, 2*o.Entries, o.Entries)
		}
		res.SweepHalf.Add(ms(rep.Duration))
		env.logf("scale: run %d/%d done in %.1fs", run+1, o.Runs, time.Since(t0).Seconds())
	}
	return res, nil
}

// scaleClockStart is what part 5's datapath clock reads when it starts.
const scaleClockStart = time.Minute

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// timeDump runs `limpet persistence dump` with its output in a file and
// checks that every entry is in it.
func timeDump(ctx context.Context, bin, pin, vs, format string, want int) (time.Duration, error) {
	f, err := os.CreateTemp("", "limpet-bench-dump-")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	cmd := exec.CommandContext(ctx, bin, "--pin-path", pin, "persistence", "dump", "--vs", vs, "-o", format)
	cmd.Stdout = f
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("limpet persistence dump -o %s: %v %s", format, err, stderr.String())
	}
	d := time.Since(start)
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	// A row is at least 30 bytes in either format.
	if st.Size() < int64(want)*30 {
		return 0, fmt.Errorf("%w: dump -o %s wrote %d bytes for %d entries", errSanity, format, st.Size(), want)
	}
	return d, nil
}
