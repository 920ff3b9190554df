package loader

import (
	"net/netip"
	"testing"
	"time"
	"unsafe"
)

// A datapath clock that reads less than the ages involved: what a standby
// sees right after it booted. Times before the clock's zero become zero.
func TestClockConversionsBeforeBoot(t *testing.T) {
	wallNow := time.Date(2025, 5, 6, 7, 8, 9, 0, time.UTC)
	clockNow := 5 * time.Minute // up for five minutes
	for _, c := range []struct {
		ago  time.Duration
		want time.Duration
	}{
		{0, clockNow},
		{2 * time.Minute, 3 * time.Minute},
		{5 * time.Minute, 0},
		{20 * time.Minute, 0},                  // before boot: the boot instant
		{-time.Minute, clockNow + time.Minute}, // a peer's clock ahead of ours
	} {
		if got := WallToClock(wallNow.Add(-c.ago), wallNow, clockNow); got != c.want {
			t.Errorf("%v ago on a clock reading %v: %v, want %v", c.ago, clockNow, got, c.want)
		}
	}
	if got := ClockTime(-time.Hour); got != 0 {
		t.Errorf("ClockTime(-1h) = %v, want 0", got)
	}
	if got := ClockToWall(3*time.Minute, clockNow, wallNow); !got.Equal(wallNow.Add(-2 * time.Minute)) {
		t.Errorf("ClockToWall: %v", got)
	}
	if got := Age(clockNow+time.Second, clockNow); got != 0 {
		t.Errorf("the age of a time after now: %v, want 0", got)
	}
	if got := Age(time.Minute, clockNow); got != 4*time.Minute {
		t.Errorf("Age: %v", got)
	}
}

// On a datapath clock that reads a minute, an entry last seen ten minutes
// ago is stored as last seen at zero, not as a time that wraps around into
// the far future, and it expires: the kernel's own check agrees.
func TestEntryBeforeBootIsStoredAtZeroAndExpires(t *testing.T) {
	d := loadTemp(t, Options{})
	if err := d.Apply(State{Tables: []Table{{ID: NewTableID(0, false), MaxEntries: 16}}}); err != nil {
		t.Fatal(err)
	}
	if err := d.SetClock(time.Minute); err != nil {
		t.Fatal(err)
	}
	now, err := d.Now()
	if err != nil {
		t.Fatal(err)
	}
	if now < time.Minute || now > time.Minute+10*time.Second {
		t.Fatalf("the clock reads %v after SetClock(1m)", now)
	}
	id := NewTableID(0, false)
	client := netip.MustParseAddr("198.51.100.7")
	ago := now - 10*time.Minute // negative: before boot
	if err := d.PutEntry(PersistEntry{TableID: id, Client: client, Server: netip.MustParseAddrPort("10.0.0.1:80"),
		VSID: NoVirtualServer, MemberID: NoMember, Created: ago, LastSeen: ago}); err != nil {
		t.Fatal(err)
	}
	e, ok, err := d.LookupEntry(id, client)
	if err != nil || !ok {
		t.Fatalf("lookup: %v %v", ok, err)
	}
	if e.LastSeen != 0 || e.Created != 0 {
		t.Fatalf("entry stored as created %v, last seen %v; want both 0 (the boot instant)", e.Created, e.LastSeen)
	}
	// Its age reads as the clock's, a minute: past a 30 s timeout.
	reqs := []GCRequest{ExpireEntry(e, 30*time.Second)}
	if err := d.RunGC(reqs); err != nil {
		t.Fatal(err)
	}
	if reqs[0].Result != GCDone {
		t.Fatalf("the kernel did not expire the entry: result %v", reqs[0].Result)
	}
	// The clock cannot be set before its zero.
	boot, _ := bootClock()
	if err := d.SetClockOffset(-boot - time.Second); err == nil {
		t.Fatal("SetClockOffset accepted an offset that puts the clock before zero")
	}
}

// The HA mirror compares entry versions by wall-clock nanoseconds, so a
// datapath time must read as the same wall time at every conversion, and a
// wall time stored on the datapath clock must read back as itself. Only a
// real move of one clock against the other changes the offset.
func TestWallClockIsExactUntilTheClocksMoveApart(t *testing.T) {
	d := loadTemp(t, Options{})
	var c WallClock
	first, err := c.Read(d)
	if err != nil {
		t.Fatal(err)
	}
	if got := first.Wall(first.ClockNow); got.Sub(first.WallNow).Abs() > WallClockStep {
		t.Fatalf("the clock's now reads %v on the wall clock, which reads %v", got, first.WallNow)
	}
	for range 2000 {
		m, err := c.Read(d)
		if err != nil {
			t.Fatal(err)
		}
		if m.off != first.off || m.Step != 0 {
			t.Fatalf("the offset moved from %v to %v (step %v) with neither clock moved", first.off, m.off, m.Step)
		}
	}
	for _, at := range []time.Duration{time.Nanosecond, first.ClockNow - time.Hour, first.ClockNow, first.ClockNow + 1234567*time.Nanosecond} {
		if at <= 0 {
			continue
		}
		w := first.Wall(at)
		if back := first.Clock(w); back != at {
			t.Errorf("%v to the wall clock and back: %v", at, back)
		}
		if again := first.Wall(first.Clock(w)); !again.Equal(w) {
			t.Errorf("wall time %v to the datapath clock and back: %v", w, again)
		}
	}
	if before := first.Clock(first.Wall(0).Add(-time.Minute)); before != 0 {
		t.Errorf("a time before the clock's zero converts to %v, want 0", before)
	}
	// A clock moved an hour forward (as tests do, as a wall-clock step
	// would, the other way) is followed at the next reading.
	off, _ := d.ClockOffset()
	if err := d.SetClockOffset(off + time.Hour); err != nil {
		t.Fatal(err)
	}
	moved, err := c.Read(d)
	if err != nil {
		t.Fatal(err)
	}
	if (moved.Step + time.Hour).Abs() > WallClockStep {
		t.Fatalf("after the datapath clock moved an hour forward: step %v, want -1h", moved.Step)
	}
	if got := moved.Wall(moved.ClockNow); got.Sub(moved.WallNow).Abs() > WallClockStep {
		t.Fatalf("after the move the clock's now reads %v on the wall clock, which reads %v", got, moved.WallNow)
	}
}

// kernelNow is the datapath clock as the kernel reads it: limpet_gc stamps
// its batch with now_ns.
func kernelNow(t *testing.T, d *Datapath) time.Duration {
	t.Helper()
	in := make([]byte, unsafe.Sizeof(limpetGcBatch{}))
	out := make([]byte, len(in))
	if _, err := d.objs.LimpetGc.Run(&runOptions{Data: in, DataOut: out}); err != nil {
		t.Fatal(err)
	}
	return time.Duration(le.Uint64(out[unsafe.Offsetof(limpetGcBatch{}.NowNs):]))
}

// The datapath reads a coarse clock plus a boot offset userspace keeps. Its
// readings must be on the boot clock (behind it by at most a tick; the test
// allows two and a millisecond, a late tick), and Now must bracket them
// exactly: every "stamped at or after" rule of the sweeper and the
// checkers' Instant brackets stand on that. A stale offset (a resume from a
// suspend of an hour, simulated) puts the kernel's clock an hour behind,
// and SyncClock brings it back.
func TestDatapathClockIsTheBootClockAndSyncClockFollowsASuspend(t *testing.T) {
	d := loadTemp(t, Options{})
	if err := d.SetClockOffset(3 * time.Hour); err != nil {
		t.Fatal(err)
	}
	slack := 2*ClockTick() + time.Millisecond
	onBootClock := func(what string) {
		t.Helper()
		for range 200 {
			b1, err := bootClock()
			if err != nil {
				t.Fatal(err)
			}
			lo, err := d.Now()
			if err != nil {
				t.Fatal(err)
			}
			k := kernelNow(t, d)
			hi, err := d.Now()
			if err != nil {
				t.Fatal(err)
			}
			b2, _ := bootClock()
			if k < lo || k > hi {
				t.Fatalf("%s: the kernel read %v, outside Now's bracket [%v, %v]", what, k, lo, hi)
			}
			if k > b2+3*time.Hour || k < b1+3*time.Hour-slack {
				t.Fatalf("%s: the kernel read %v; the boot clock plus the offset read [%v, %v]: more than %v apart",
					what, k, b1+3*time.Hour, b2+3*time.Hour, slack)
			}
		}
	}
	onBootClock("after Load")
	if moved, err := d.SyncClock(); err != nil || moved != 0 {
		t.Fatalf("SyncClock on a fresh offset: moved %v, %v", moved, err)
	}
	if err := SkewBootOffset(d.PinPath(), -time.Hour); err != nil {
		t.Fatal(err)
	}
	b, _ := bootClock()
	if k := kernelNow(t, d); k > b+2*time.Hour+slack {
		t.Fatalf("with the boot offset an hour stale the kernel read %v, the boot clock %v: the offset is not used", k, b)
	}
	moved, err := d.SyncClock()
	if err != nil {
		t.Fatal(err)
	}
	if (moved - time.Hour).Abs() > ClockSyncStep {
		t.Fatalf("SyncClock moved the clock by %v after an hour's suspend", moved)
	}
	onBootClock("after SyncClock")
}
