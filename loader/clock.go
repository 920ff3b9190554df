package loader

import (
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The datapath clock.
//
// The C program reads it in one place (now_ns in bpf/common.h): the boot
// clock, CLOCK_BOOTTIME, plus the offset in runtime_settings (zero but in
// tests), in nanoseconds. It starts near zero when the machine boots, and
// every timestamp in the maps (a flow's or an entry's creation and last
// activity, an event's time) is a reading of it. The Go side converts to
// and from it only through this file.
//
// The boot clock is read cheaply: the coarse monotonic clock (the time the
// last tick stored, so up to a tick behind) plus clock_sync's boot-minus-
// monotonic offset, which SyncClock keeps (the daemon calls it every
// second; the offset moves only when the machine resumes from suspend).
// Now reads the same sum through the same kernel function, so that a
// reading here and the datapath's are ordered exactly as the calls are:
// the sweeper's and the tests' "stamped at or after" reasoning holds as it
// did with the precise clock. What the coarse clock costs is a tick (4 ms at
// HZ=250) of lag on each reading, so a measured age can be off by up to a
// tick either way, against timeouts of a second or more.
//
// The maps hold unsigned nanoseconds, so the clock has no time before its
// zero. Yet "now minus an age" goes before it whenever the age is longer
// than the uptime: on a standby that booted five minutes ago, a peer's
// entry last seen ten minutes ago. Such a time becomes zero, the boot
// instant (ClockTime). An entry stamped so reads as aged by the uptime:
// younger than it is, never older, so it outlives its timeout by at most
// how long before boot its true time was, and it can never wrap around to
// a time in the far future, which would make it immortal. Code for which
// that difference matters compares the true age with the timeout before
// it converts (the HA mirror's Apply does not install an entry whose
// countdown has run out).

// ClockTime is t as the datapath clock can hold it: t, or 0 for a time
// before the clock's zero.
func ClockTime(t time.Duration) time.Duration { return max(t, 0) }

// WallToClock converts a wall-clock time to the datapath clock, given what
// both clocks read now: the time that long before clockNow, through
// ClockTime.
func WallToClock(wall, wallNow time.Time, clockNow time.Duration) time.Duration {
	return ClockTime(clockNow - wallNow.Sub(wall))
}

// ClockToWall converts a datapath clock reading to wall-clock time, given
// what both clocks read now.
func ClockToWall(t, clockNow time.Duration, wallNow time.Time) time.Time {
	return wallNow.Add(t - clockNow)
}

// Age is how long before clockNow t was, and 0 for a t after it: another
// CPU may stamp an entry after this process read the clock.
func Age(t, clockNow time.Duration) time.Duration { return max(clockNow-t, 0) }

// WallClock converts between the datapath clock and the wall clock with
// one offset, so that a conversion is exact and repeatable: a datapath time
// reads as the same wall time at every conversion, and a wall time stored
// through Clock reads back as itself through Wall. HA mirroring needs that:
// nodes compare the versions of an entry by their wall-clock nanoseconds,
// and a node that read its own entry as a slightly different time at each
// conversion (the two clocks are read one after the other, so each fresh
// measurement of their offset differs by microseconds, by milliseconds on
// a loaded machine) would order two close versions differently from its
// peers and never converge with them.
//
// The offset is measured at the first Read and kept while fresh
// measurements agree with it within WallClockStep. A larger difference
// means the clocks really moved apart (the wall clock was stepped, or a
// test moved the datapath clock), and the new offset replaces the old one.
// The zero value is ready to use and safe for concurrent use.
type WallClock struct {
	mu  sync.Mutex
	off time.Duration // wall clock (Unix nanoseconds) minus datapath clock
	set bool
}

// WallClockStep is how far a measured offset between the wall clock and the
// datapath clock must move before WallClock follows it. Reading both clocks
// costs microseconds, so a measurement that spans more than half of it
// (the process was descheduled in between) is not trusted to move it.
const WallClockStep = time.Millisecond

// ClockMap is one reading of a WallClock: the offset in use and both clocks
// as they read then.
type ClockMap struct {
	off      time.Duration
	ClockNow time.Duration // the datapath clock
	WallNow  time.Time
	// Step is how far this reading moved the offset (0: it did not).
	Step time.Duration
}

// Wall is datapath time t on the wall clock.
func (m ClockMap) Wall(t time.Duration) time.Time { return time.Unix(0, int64(t+m.off)) }

// Clock is wall time w on the datapath clock, through ClockTime: exact (so
// Wall gives w back) unless w is before the datapath clock's zero. A time
// after ClockNow stays after it.
func (m ClockMap) Clock(w time.Time) time.Duration {
	return ClockTime(time.Duration(w.UnixNano()) - m.off)
}

// Read measures both clocks and returns the mapping in use. It reads the
// precise monotonic clock plus the datapath's offsets, not the coarse one
// the datapath reads (whose tick-long steps would move the offset by more
// than WallClockStep): the datapath's readings lag it by at most a tick.
func (c *WallClock) Read(d *Datapath) (ClockMap, error) {
	dpOff, err := d.ClockOffset()
	if err != nil {
		return ClockMap{}, err
	}
	bootOff, err := d.BootOffset()
	if err != nil {
		return ClockMap{}, err
	}
	dpOff += bootOff
	var off, span, boot time.Duration
	var wall time.Time
	for i := 0; i < 5; i++ {
		b1, err := readClock(unix.CLOCK_MONOTONIC)
		if err != nil {
			return ClockMap{}, err
		}
		w := time.Now()
		b2, err := readClock(unix.CLOCK_MONOTONIC)
		if err != nil {
			return ClockMap{}, err
		}
		if s := b2 - b1; i == 0 || s < span {
			mid := b1 + s/2 + dpOff
			off, span, boot, wall = time.Duration(w.UnixNano())-mid, s, mid, w
		}
		if span <= 20*time.Microsecond {
			break
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	m := ClockMap{ClockNow: boot, WallNow: wall}
	switch diff := off - c.off; {
	case !c.set:
		c.off, c.set = off, true
	case (diff > WallClockStep || diff < -WallClockStep) && span <= WallClockStep/2:
		c.off, m.Step = off, diff
	}
	m.off = c.off
	return m, nil
}

func bootClock() (time.Duration, error) { return readClock(unix.CLOCK_BOOTTIME) }

// readClock reads a clock through the clock_gettime system call (x/sys/unix
// does not use the vDSO): for CLOCK_MONOTONIC_COARSE, the very function
// bpf_ktime_get_coarse_ns calls, on the kernel's own copy of the time.
func readClock(id int32) (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(id, &ts); err != nil {
		return 0, err
	}
	return time.Duration(ts.Nano()), nil
}

// Now is the datapath's clock as the datapath reads it now (see above): a
// packet the datapath handles after Now returns is stamped at or after it.
func (p *Pinned) Now() (time.Duration, error) {
	base, err := p.coarseBoot()
	if err != nil {
		return 0, err
	}
	off, err := p.ClockOffset()
	if err != nil {
		return 0, err
	}
	return base + off, nil
}

// coarseBoot is the boot clock as the datapath reads it: the coarse
// monotonic clock plus clock_sync.
func (p *Pinned) coarseBoot() (time.Duration, error) {
	mono, err := readClock(unix.CLOCK_MONOTONIC_COARSE)
	if err != nil {
		return 0, err
	}
	off, err := p.BootOffset()
	if err != nil {
		return 0, err
	}
	return mono + off, nil
}

// BootOffset is the datapath's copy of CLOCK_BOOTTIME minus
// CLOCK_MONOTONIC, which SyncClock keeps. A datapath pinned before
// clock_sync existed read the boot clock itself: zero.
func (p *Pinned) BootOffset() (time.Duration, error) {
	if p.m.ClockSync == nil {
		return 0, nil
	}
	var cs limpetBootOffset
	if err := p.m.ClockSync.Lookup(uint32(0), &cs); err != nil {
		return 0, fmt.Errorf("read clock_sync: %w", err)
	}
	return time.Duration(int64(cs.BootMinusMonoNs)), nil
}

// ClockTick is the coarse clock's step (the kernel's tick): how far a
// reading of the datapath's clock may lag the true time.
func ClockTick() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGetres(unix.CLOCK_MONOTONIC_COARSE, &ts); err != nil {
		return 10 * time.Millisecond // HZ=100, the coarsest
	}
	return time.Duration(ts.Nano())
}

// ClockSyncStep is how far the measured boot-minus-monotonic offset must
// move from the datapath's copy before SyncClock rewrites it. The true
// offset is constant between suspends, and measuring it costs two system
// calls whose readings are a microsecond or so apart; rewriting it on that
// jitter would step the datapath clock back and forth. A resume moves it by
// the time asleep: far more.
const ClockSyncStep = time.Millisecond

// SyncClock measures CLOCK_BOOTTIME minus CLOCK_MONOTONIC and writes it to
// the datapath's clock_sync when it moved by ClockSyncStep or more: after a
// resume from suspend, the coarse monotonic clock has not counted the time
// asleep and the boot clock has, so until this runs, the datapath's clock
// lags by that long. Load runs it once; the daemon runs it every second and
// before every sweep. It returns how far it moved the datapath's clock.
func (d *Datapath) SyncClock() (time.Duration, error) {
	want, err := measureBootOffset()
	if err != nil {
		return 0, err
	}
	have, err := d.BootOffset()
	if err != nil {
		return 0, err
	}
	if diff := want - have; diff < ClockSyncStep && diff > -ClockSyncStep {
		return 0, nil
	}
	if err := d.objs.ClockSync.Put(uint32(0), &limpetBootOffset{BootMinusMonoNs: uint64(want)}); err != nil {
		return 0, fmt.Errorf("write clock_sync: %w", err)
	}
	return want - have, nil
}

// measureBootOffset is CLOCK_BOOTTIME minus CLOCK_MONOTONIC, from the
// boot reading between the tightest pair of monotonic readings of a few.
func measureBootOffset() (time.Duration, error) {
	var off, span time.Duration
	for i := 0; i < 5; i++ {
		m1, err := readClock(unix.CLOCK_MONOTONIC)
		if err != nil {
			return 0, err
		}
		b, err := bootClock()
		if err != nil {
			return 0, err
		}
		m2, err := readClock(unix.CLOCK_MONOTONIC)
		if err != nil {
			return 0, err
		}
		if s := m2 - m1; i == 0 || s < span {
			off, span = b-(m1+s/2), s
		}
	}
	return off, nil
}

// ClockOffset is how far the datapath clock runs ahead of CLOCK_BOOTTIME
// (behind it when negative).
func (p *Pinned) ClockOffset() (time.Duration, error) {
	var s limpetSettings
	if err := p.m.RuntimeSettings.Lookup(uint32(0), &s); err != nil {
		return 0, err
	}
	// The datapath adds it modulo 2^64, so a negative offset is stored as
	// its two's complement.
	return time.Duration(int64(s.ClockOffsetNs)), nil
}

// SetClockOffset moves the datapath clock: tests move it forward instead of
// sleeping, or back, to run as on a machine that has just booted. The clock
// must not go below zero: the offset may be negative only down to minus the
// boot clock.
func (d *Datapath) SetClockOffset(off time.Duration) error {
	boot, err := d.coarseBoot()
	if err != nil {
		return err
	}
	if boot+off < 0 {
		return fmt.Errorf("clock offset %v would put the datapath clock before its zero (the boot clock reads %v)", off, boot)
	}
	return d.objs.RuntimeSettings.Put(uint32(0), &limpetSettings{ClockOffsetNs: uint64(off)})
}

// SetClock sets the datapath clock to read at now (see SetClockOffset): at
// exactly, until the next tick moves it on.
func (d *Datapath) SetClock(at time.Duration) error {
	boot, err := d.coarseBoot()
	if err != nil {
		return err
	}
	return d.SetClockOffset(at - boot)
}

// SkewBootOffset moves the boot offset of the datapath pinned at pinPath by
// d, as a resume from a suspend of -d leaves it until SyncClock runs: a
// test's way to check that a daemon keeps the datapath's clock in sync.
func SkewBootOffset(pinPath string, d time.Duration) error {
	p, err := OpenPinned(pinPath)
	if err != nil {
		return err
	}
	defer p.Close()
	if p.m.ClockSync == nil {
		return fmt.Errorf("the datapath pinned at %s has no clock_sync map", pinPath)
	}
	off, err := p.BootOffset()
	if err != nil {
		return err
	}
	return p.m.ClockSync.Put(uint32(0), &limpetBootOffset{BootMinusMonoNs: uint64(off + d)})
}
