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
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/limpet-lb/limpet/userspace/config"
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

// Monitor is the runtime form of a config.HealthMonitor.
type Monitor struct {
	Name string
	// Type is one of config.MonitorTCP, MonitorHTTP, MonitorHTTPS,
	// MonitorUDP, MonitorICMP or MonitorPassive.
	Type string
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
	Headers            []config.MonitorHeader
	RequestBody        string
	Codes              []config.CodeRange
	ResponseBody       string
	TLSVerify          bool
	TLSCAFile          string
	TLSServerName      string

	// DataLength is the ICMP echo payload size.
	DataLength int

	// MaxFails consecutive connection failures reported to Passive take a
	// member down for FailTimeout (or until an active probe succeeds); 0
	// turns passive counting off.
	MaxFails    int
	FailTimeout time.Duration
}

// Active reports whether the monitor sends probes.
func (m *Monitor) Active() bool { return m.Type != config.MonitorPassive }

func seconds(f *float64, def float64) time.Duration {
	v := def
	if f != nil {
		v = *f
	}
	return time.Duration(v * float64(time.Second))
}

func intOr(p *int, def int) int {
	if p != nil {
		return *p
	}
	return def
}

// MonitorFromConfig converts a validated config monitor.
func MonitorFromConfig(c *config.HealthMonitor) (Monitor, error) {
	m := Monitor{
		Name:          c.Name,
		Type:          c.Type,
		Interval:      seconds(c.Interval, config.DefaultMonitorInterval),
		Rise:          intOr(c.Rise, config.DefaultMonitorRise),
		Fall:          intOr(c.Fall, config.DefaultMonitorFall),
		Port:          uint16(c.Port),
		Send:          c.Send,
		Receive:       c.Receive,
		Method:        c.Method,
		Path:          c.Path,
		Host:          c.Host,
		Headers:       c.Headers,
		RequestBody:   c.RequestBody,
		ResponseBody:  c.ResponseBody,
		TLSVerify:     c.TLSVerify,
		TLSCAFile:     c.TLSCAFile,
		TLSServerName: c.TLSServerName,
		DataLength:    intOr(c.DataLength, config.DefaultICMPDataLength),
		MaxFails:      intOr(c.MaxFails, 0),
		FailTimeout:   seconds(c.FailTimeout, config.DefaultPassiveTimeout),
	}
	m.Timeout = seconds(c.Timeout, min(config.DefaultMonitorTimeout, m.Interval.Seconds()))
	if m.Type == config.MonitorPassive {
		m.MaxFails = intOr(c.MaxFails, config.DefaultPassiveMaxFails)
		m.Interval, m.Timeout, m.Rise, m.Fall = 0, 0, 0, 0
	}
	for _, s := range c.ExpectedCodes {
		r, err := config.ParseCodeRange(s)
		if err != nil {
			return Monitor{}, fmt.Errorf("monitor %q: expected_codes: %w", c.Name, err)
		}
		m.Codes = append(m.Codes, r)
	}
	if err := m.check(); err != nil {
		return Monitor{}, fmt.Errorf("monitor %q: %w", c.Name, err)
	}
	return m, nil
}

// check rejects what would make a probe loop misbehave; the config package
// has already said why to a user, this guards hand-built monitors.
func (m *Monitor) check() error {
	switch m.Type {
	case config.MonitorPassive:
		if m.MaxFails < 1 || m.FailTimeout <= 0 {
			return errors.New("a passive monitor needs max_fails and fail_timeout")
		}
		return nil
	case config.MonitorTCP, config.MonitorHTTP, config.MonitorHTTPS, config.MonitorUDP, config.MonitorICMP:
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
	case m.Type == config.MonitorUDP && m.Send == "":
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

func (t *Target) needsPort() bool {
	return t.Monitor.Type != config.MonitorICMP && t.Monitor.Type != config.MonitorPassive
}

// Targets lists the members of every pool of cfg that has a health_monitor.
// A member whose port is 0 follows the port of the first virtual server
// (in config order) that uses its pool. Members that a port-based monitor
// cannot reach (port 0, no monitor port, and no virtual server using the
// pool) are left out and named in warnings; they stay up.
func Targets(cfg *config.Config) (targets []Target, warnings []string, err error) {
	monitors := map[string]Monitor{}
	for i := range cfg.HealthMonitors {
		m, err := MonitorFromConfig(&cfg.HealthMonitors[i])
		if err != nil {
			return nil, nil, err
		}
		monitors[m.Name] = m
	}
	for _, p := range cfg.Pools {
		if p.HealthMonitor == "" {
			continue
		}
		mon, ok := monitors[p.HealthMonitor]
		if !ok {
			return nil, nil, fmt.Errorf("pool %q: health monitor %q is not defined", p.Name, p.HealthMonitor)
		}
		var def uint16
		for _, vs := range cfg.VirtualServers {
			if vs.Pool == p.Name {
				def = uint16(vs.Port)
				break
			}
		}
		for _, mc := range p.Members {
			addr, err := netip.ParseAddr(mc.Address)
			if err != nil {
				return nil, nil, fmt.Errorf("pool %q member %q: %w", p.Name, mc.Name, err)
			}
			t := Target{
				ID:          ids.MemberRef{Pool: p.Name, Member: mc.Name},
				Addr:        addr.Unmap(),
				Port:        uint16(mc.Port),
				DefaultPort: def,
				Monitor:     mon,
			}
			if t.needsPort() && t.ProbeAddr().Port() == 0 {
				warnings = append(warnings, fmt.Sprintf("pool %q member %q: not monitored by %q: it has no port, the monitor sets none, and no virtual server uses the pool", p.Name, mc.Name, mon.Name))
				continue
			}
			targets = append(targets, t)
		}
	}
	return targets, warnings, nil
}
