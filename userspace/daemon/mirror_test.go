package daemon

import (
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/test/dptest"
	"github.com/limpet-lb/limpet/userspace/desired"
	"github.com/limpet-lb/limpet/userspace/gc"
	"github.com/limpet-lb/limpet/userspace/mirror"
	"github.com/limpet-lb/limpet/userspace/sharedtable"
)

// A standby that has just booted receives entries older than its uptime:
// its datapath clock reads a minute, the peer's entries are up to twenty
// minutes old. Each must live exactly as long as its own timeout says, as
// on a standby that has been up for a day.
func TestMirrorApplyOnAFreshlyBootedStandby(t *testing.T) {
	const timeout = 10 * time.Minute
	table := loader.NewTableID(0, true)
	dp := dptest.New(t, loader.State{Tables: []loader.Table{{ID: table, MaxEntries: 64, Mirror: true}}}, 1024).DP
	meta := &desired.Meta{Tables: []desired.TableMeta{{ID: table, Key: "profile:sticky", Profile: "sticky", Shared: true,
		Timeout: int(timeout / time.Second), MaxEntries: 64, PurgeWhenFull: true, IPv4Prefix: 32, IPv6Prefix: 128, HAMirroring: true}}}
	if err := dp.SetClock(time.Minute); err != nil {
		t.Fatal(err)
	}
	d := &daemon{dp: dp, meta: meta, log: slog.New(slog.NewTextHandler(io.Discard, nil)), tables: sharedtable.New(dp, meta)}
	local := mirrorLocal{d}
	server := netip.MustParseAddrPort("10.0.0.1:0")
	now := time.Now()
	for _, c := range []struct {
		client string
		ago    time.Duration
	}{
		{"198.51.100.1", 20 * time.Minute}, // its countdown ran out on the peer
		{"198.51.100.2", 5 * time.Minute},  // older than this node's uptime, 5 of 10 minutes left
		{"198.51.100.3", 30 * time.Second},
	} {
		e := mirror.Entry{Table: "profile:sticky", Client: netip.MustParseAddr(c.client), Server: server, Op: mirror.Upsert,
			Updated: now.Add(-c.ago), Created: now.Add(-c.ago)}
		if err := local.Apply(e); err != nil {
			t.Fatalf("apply %s: %v", c.client, err)
		}
	}
	entries := func() map[string]loader.PersistEntry {
		es, err := dp.TableEntries(table)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]loader.PersistEntry{}
		for _, e := range es {
			out[e.Client.String()] = e
		}
		return out
	}
	got := entries()
	if _, ok := got["198.51.100.1"]; ok {
		t.Errorf("an entry whose timeout ran out on the peer was installed: %+v", got["198.51.100.1"])
	}
	if e, ok := got["198.51.100.2"]; !ok || e.LastSeen != 0 {
		t.Errorf("the entry from before boot: %+v (present %v), want it last seen at the boot instant, 0", e, ok)
	}
	// Read the datapath clock the way the conversion did, precisely: the
	// coarse reading (Now) lags it by a tick, and by more when the tick
	// itself is late, as on a loaded virtual machine (seen: 4.4 ms with a
	// 4 ms tick), so it cannot bound the age from below.
	cm, err := d.clock.Read(dp)
	if err != nil {
		t.Fatal(err)
	}
	clock := cm.ClockNow
	if e, ok := got["198.51.100.3"]; !ok || loader.Age(e.LastSeen, clock) < 30*time.Second || loader.Age(e.LastSeen, clock) > 40*time.Second {
		t.Errorf("the entry from 30s ago: %+v (present %v), age %v on a clock at %v", e, ok, loader.Age(e.LastSeen, clock), clock)
	}

	// The entries count down and expire: none at once, both after their
	// timeout (the one from before boot possibly earlier, never later).
	sw := gc.New(dp, gc.Timeouts{TCPEstablished: time.Hour, TCPFin: time.Hour, UDP: time.Hour},
		func(loader.TableID) (time.Duration, bool) { return timeout, true })
	if rep, err := sw.Sweep(); err != nil || rep.EntriesExpired != 0 {
		t.Fatalf("first sweep: expired %d (%v), want 0", rep.EntriesExpired, err)
	}
	off, _ := dp.ClockOffset()
	if err := dp.SetClockOffset(off + timeout); err != nil {
		t.Fatal(err)
	}
	if rep, err := sw.Sweep(); err != nil || rep.EntriesExpired != 2 {
		t.Fatalf("sweep a timeout later: expired %d (%v), want 2; left %v", rep.EntriesExpired, err, entries())
	}
}
