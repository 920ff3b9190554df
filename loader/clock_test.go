package loader

import (
	"net/netip"
	"testing"
	"time"
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
	if err := d.Apply(State{Tables: []Table{{ID: TableID(0, false), MaxEntries: 16}}}); err != nil {
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
	id := TableID(0, false)
	client := netip.MustParseAddr("198.51.100.7")
	ago := now - 10*time.Minute // negative: before boot
	if err := d.PutEntry(PersistEntry{TableID: id, Client: client, Server: netip.MustParseAddrPort("10.0.0.1:80"),
		VSID: TableNone, MemberID: TableNone, Created: ago, LastSeen: ago}); err != nil {
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
