package loader

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// The datapath clock.
//
// The C program reads it in one place (now_ns in bpf/limpet.c): the boot
// clock, CLOCK_BOOTTIME, plus the offset in runtime_settings (zero but in
// tests), in nanoseconds. It starts near zero when the machine boots, and
// every timestamp in the maps (a flow's or an entry's creation and last
// activity, an event's time) is a reading of it. The Go side converts to
// and from it only through this file.
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

func bootClock() (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0, err
	}
	return time.Duration(ts.Nano()), nil
}

// Now is the datapath's clock: CLOCK_BOOTTIME plus the clock offset.
func (d *Datapath) Now() (time.Duration, error) {
	boot, err := bootClock()
	if err != nil {
		return 0, err
	}
	off, err := d.ClockOffset()
	if err != nil {
		return 0, err
	}
	return boot + off, nil
}

// ClockOffset is how far the datapath clock runs ahead of CLOCK_BOOTTIME
// (behind it when negative).
func (d *Datapath) ClockOffset() (time.Duration, error) {
	var s limpetSettings
	if err := d.objs.RuntimeSettings.Lookup(uint32(0), &s); err != nil {
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
	boot, err := bootClock()
	if err != nil {
		return err
	}
	if boot+off < 0 {
		return fmt.Errorf("clock offset %v would put the datapath clock before its zero (the boot clock reads %v)", off, boot)
	}
	return d.objs.RuntimeSettings.Put(uint32(0), &limpetSettings{ClockOffsetNs: uint64(off)})
}

// SetClock sets the datapath clock to read at now (see SetClockOffset).
func (d *Datapath) SetClock(at time.Duration) error {
	boot, err := bootClock()
	if err != nil {
		return err
	}
	return d.SetClockOffset(at - boot)
}
