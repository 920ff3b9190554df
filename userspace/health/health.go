// Package health runs limpet's health monitors, NSX-style: active monitors
// (tcp connect, http and https requests, udp send and expect, icmp echo) probe
// every member of a pool at an interval and count consecutive results against
// rise and fall; a passive monitor counts the consecutive connection failures
// the L7 proxy reports. A Checker keeps one verdict per member and reports
// every change through a Sink, which the daemon implements to carry it to the
// datapath and the proxy.
//
// A member starts up, as in NSX: it is taken out of service only after fall
// consecutive failed probes (or max_fails connection failures), so a restart of
// the daemon or a reload never drops traffic to members that are healthy. A
// down member comes back after rise consecutive successful probes.
//
// A verdict is reported as soon as the probe that decides it ends, and a probe
// ends within its timeout, which is at most the interval: so a change reaches
// the sink within one interval of the deciding probe's start.
package health

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/limpet-lb/limpet/userspace/ids"
)

// Sink receives every change of a member's verdict: up or down, and why.
// Calls come from one goroutine at a time, in the order the changes
// happened; a slow sink delays later reports but never the probes.
type Sink interface {
	SetMemberHealth(id ids.MemberRef, up bool, reason string)
}

// SinkFunc adapts a function to a Sink.
type SinkFunc func(id ids.MemberRef, up bool, reason string)

// SetMemberHealth calls f.
func (f SinkFunc) SetMemberHealth(id ids.MemberRef, up bool, reason string) { f(id, up, reason) }

// Tee is a Sink that passes every report to each of sinks, in order.
func Tee(sinks ...Sink) Sink {
	return SinkFunc(func(id ids.MemberRef, up bool, reason string) {
		for _, s := range sinks {
			s.SetMemberHealth(id, up, reason)
		}
	})
}

// MonitorType says how a monitor probes: its config spelling.
type MonitorType string

// The monitor types.
const (
	MonitorTCP     MonitorType = "tcp"
	MonitorHTTP    MonitorType = "http"
	MonitorHTTPS   MonitorType = "https"
	MonitorUDP     MonitorType = "udp"
	MonitorICMP    MonitorType = "icmp"
	MonitorPassive MonitorType = "passive"
)

// Header is a request header an http or https monitor sends.
type Header struct{ Name, Value string }

// CodeRange is an inclusive range of accepted HTTP status codes.
type CodeRange struct{ Lo, Hi int }

func (r CodeRange) String() string {
	if r.Lo == r.Hi {
		return strconv.Itoa(r.Lo)
	}
	return fmt.Sprintf("%d-%d", r.Lo, r.Hi)
}

// Monitor is a compiled health monitor (plan.Compile builds them from the
// config, with every default applied).
type Monitor struct {
	Name string
	Type MonitorType
	// Interval between probe starts; Timeout of one probe (at most Interval).
	Interval, Timeout time.Duration
	// Rise consecutive successes bring a member up, Fall consecutive failures take it down.
	Rise, Fall int
	// Port overrides the probed port; 0 means the target's.
	Port uint16

	// Send and Receive: tcp and udp payloads.
	Send, Receive string

	// HTTP and HTTPS.
	Method, Path, Host string
	Headers            []Header
	RequestBody        string
	Codes              []CodeRange
	ResponseBody       string
	TLSVerify          bool
	// RootCAs verifies the member's certificate; nil means the system's.
	RootCAs       *x509.CertPool
	TLSServerName string

	// DataLength is the ICMP echo payload size.
	DataLength int

	// MaxFails consecutive connection failures reported to Passive take a
	// member down for FailTimeout (or until an active probe succeeds); 0
	// turns passive counting off.
	MaxFails    int
	FailTimeout time.Duration
}

// Active reports whether the monitor sends probes.
func (m *Monitor) Active() bool { return m.Type != MonitorPassive }

// Check rejects what would make a probe loop misbehave: the config has
// already told a user why, this guards hand-built monitors.
func (m *Monitor) Check() error { return m.check() }

// check rejects what would make a probe loop misbehave; the config package
// has already said why to a user, this guards hand-built monitors.
func (m *Monitor) check() error {
	switch m.Type {
	case MonitorPassive:
		if m.MaxFails < 1 || m.FailTimeout <= 0 {
			return errors.New("a passive monitor needs max_fails and fail_timeout")
		}
		return nil
	case MonitorTCP, MonitorHTTP, MonitorHTTPS, MonitorUDP, MonitorICMP:
	default:
		return fmt.Errorf("unknown monitor type %q", m.Type)
	}
	switch {
	case m.Interval <= 0 || m.Timeout <= 0 || m.Timeout > m.Interval:
		return fmt.Errorf("interval %v and timeout %v: both must be positive, the timeout at most the interval", m.Interval, m.Timeout)
	case m.Rise < 1 || m.Fall < 1:
		return fmt.Errorf("rise %d and fall %d must be at least 1", m.Rise, m.Fall)
	case m.MaxFails < 0 || (m.MaxFails > 0 && m.FailTimeout <= 0):
		return fmt.Errorf("max_fails %d with fail_timeout %v", m.MaxFails, m.FailTimeout)
	case m.Type == MonitorUDP && m.Send == "":
		return errors.New("a udp monitor needs a payload to send")
	}
	return nil
}

// Target is one member to monitor.
type Target struct {
	ID   ids.MemberRef
	Addr netip.Addr
	// Port is the member's port; 0 means DefaultPort, the port of the
	// virtual server the pool serves.
	Port, DefaultPort uint16
	Monitor           Monitor
}

// ProbeAddr is where probes go: the monitor's port, else the member's, else
// the default port. ICMP and passive monitors keep the resolved port for the
// status only.
func (t *Target) ProbeAddr() netip.AddrPort {
	port := t.Monitor.Port
	if port == 0 {
		port = t.Port
	}
	if port == 0 {
		port = t.DefaultPort
	}
	return netip.AddrPortFrom(t.Addr.Unmap(), port)
}

// NeedsPort reports whether the monitor probes a port, so that a target
// without one cannot be monitored.
func (t *Target) NeedsPort() bool {
	return t.Monitor.Type != MonitorICMP && t.Monitor.Type != MonitorPassive
}
