// Package notify tells the service manager about the daemon's life, in
// systemd's sd_notify protocol (Type=notify units): READY=1 once the
// datapath forwards with the config applied, RELOADING=1 and READY=1 around
// a reload, STOPPING=1 on the way out, STATUS= lines for 'systemctl status',
// and WATCHDOG=1 pings while the daemon's main loop turns.
//
// Outside systemd (no NOTIFY_SOCKET) every call is a no-op.
package notify

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"
)

// Notifier reports the daemon's state. Calls never block for long and never
// fail the daemon: a lost notification is logged, not returned.
type Notifier interface {
	// Ready says start-up (or a reload) is done; status is shown by
	// 'systemctl status'.
	Ready(status string)
	// Reloading says a reload has begun; Ready ends it.
	Reloading()
	// Status updates the status line.
	Status(status string)
	// Stopping says the daemon is shutting down, and what it leaves.
	Stopping(status string)
	// Watchdog is one keep-alive ping.
	Watchdog()
	// WatchdogInterval is how often to ping: half the manager's WatchdogSec,
	// or 0 when it runs no watchdog for us.
	WatchdogInterval() time.Duration
}

// FromEnv returns a Notifier for systemd when the environment names a
// notify socket (NOTIFY_SOCKET), and a no-op one otherwise.
func FromEnv(log *slog.Logger) Notifier {
	if log == nil {
		log = slog.Default()
	}
	if !IsManaged() {
		return Nop{}
	}
	s := &systemd{log: log}
	if wd, err := daemon.SdWatchdogEnabled(false); err != nil {
		log.Warn("systemd watchdog settings", "error", err)
	} else {
		s.watchdog = wd / 2
	}
	return s
}

// IsManaged reports whether a service manager listens for notifications.
func IsManaged() bool {
	_, ok := os.LookupEnv("NOTIFY_SOCKET")
	return ok
}

// Nop is the Notifier of a daemon that no manager watches.
type Nop struct{}

func (Nop) Ready(string)                    {}
func (Nop) Reloading()                      {}
func (Nop) Status(string)                   {}
func (Nop) Stopping(string)                 {}
func (Nop) Watchdog()                       {}
func (Nop) WatchdogInterval() time.Duration { return 0 }

type systemd struct {
	log      *slog.Logger
	watchdog time.Duration
}

func (s *systemd) send(lines ...string) {
	msg := strings.Join(lines, "\n")
	if ok, err := daemon.SdNotify(false, msg); err != nil || !ok {
		s.log.Warn("systemd notification not delivered", "message", strings.ReplaceAll(msg, "\n", " "), "error", err)
	}
}

// statusLine keeps a status to one line: the protocol is line based.
func statusLine(status string) string {
	return "STATUS=" + strings.Join(strings.Fields(status), " ")
}

func (s *systemd) Ready(status string) { s.send(daemon.SdNotifyReady, statusLine(status)) }

// Reloading also sends MONOTONIC_USEC, which Type=notify-reload units
// (systemd 253 and later) require and older managers ignore.
func (s *systemd) Reloading() {
	s.send(daemon.SdNotifyReloading, fmt.Sprintf("MONOTONIC_USEC=%d", monotonicUsec()), statusLine("reloading the config"))
}

func (s *systemd) Status(status string)            { s.send(statusLine(status)) }
func (s *systemd) Stopping(status string)          { s.send(daemon.SdNotifyStopping, statusLine(status)) }
func (s *systemd) Watchdog()                       { s.send(daemon.SdNotifyWatchdog) }
func (s *systemd) WatchdogInterval() time.Duration { return s.watchdog }

// monotonicUsec is CLOCK_MONOTONIC in microseconds, as systemd reads it.
func monotonicUsec() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano() / 1000
}
