package plan

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/limpet-lb/limpet/userspace/config"
	"github.com/limpet-lb/limpet/userspace/health"
	"github.com/limpet-lb/limpet/userspace/ids"
)

// secs converts a config duration in seconds.
func secs(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// compileMonitor converts a validated config monitor: config.Parse applied
// the defaults, so every field it defaults is set.
func compileMonitor(c *config.HealthMonitor) (health.Monitor, error) {
	deref := func(p *int) int {
		if p == nil {
			return 0
		}
		return *p
	}
	dur := func(p *float64) time.Duration {
		if p == nil {
			return 0
		}
		return secs(*p)
	}
	m := health.Monitor{
		Name:          c.Name,
		Type:          health.MonitorType(c.Type),
		Interval:      dur(c.Interval),
		Timeout:       dur(c.Timeout),
		Rise:          deref(c.Rise),
		Fall:          deref(c.Fall),
		Port:          uint16(c.Port),
		Send:          c.Send,
		Receive:       c.Receive,
		Method:        c.Method,
		Path:          c.Path,
		Host:          c.Host,
		RequestBody:   c.RequestBody,
		ResponseBody:  c.ResponseBody,
		TLSVerify:     c.TLSVerify,
		TLSServerName: c.TLSServerName,
		DataLength:    deref(c.DataLength),
		MaxFails:      deref(c.MaxFails),
		FailTimeout:   dur(c.FailTimeout),
	}
	if c.DataLength == nil {
		// Only icmp monitors use it, and config.Parse sets it for them.
		m.DataLength = config.DefaultICMPDataLength
	}
	if m.Type == health.MonitorPassive {
		// A passive monitor sends no probes, whatever the file says.
		m.Interval, m.Timeout, m.Rise, m.Fall = 0, 0, 0, 0
	}
	for _, h := range c.Headers {
		m.Headers = append(m.Headers, health.Header{Name: h.Name, Value: h.Value})
	}
	for _, s := range c.ExpectedCodes {
		r, err := config.ParseCodeRange(s)
		if err != nil {
			return health.Monitor{}, fmt.Errorf("monitor %q: expected_codes: %w", c.Name, err)
		}
		m.Codes = append(m.Codes, health.CodeRange{Lo: r.Lo, Hi: r.Hi})
	}
	if c.TLSCAFile != "" {
		pool, err := config.LoadCAFile(c.TLSCAFile)
		if err != nil {
			return health.Monitor{}, fmt.Errorf("monitor %q: tls_ca_file: %v", c.Name, err)
		}
		m.RootCAs = pool
	}
	if err := m.Check(); err != nil {
		return health.Monitor{}, fmt.Errorf("monitor %q: %w", c.Name, err)
	}
	return m, nil
}

// Monitors lists the members of every pool of cfg that has a
// health_monitor. A member whose port is 0 follows the port of the first
// virtual server (in config order) that uses its pool. Members that a
// port-based monitor cannot reach (port 0, no monitor port, and no virtual
// server using the pool) are left out and named in warnings; they stay up.
func Monitors(cfg *config.Config) (targets []health.Target, warnings []string, err error) {
	monitors := map[string]health.Monitor{}
	for i := range cfg.HealthMonitors {
		m, err := compileMonitor(&cfg.HealthMonitors[i])
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
			t := health.Target{
				ID:          ids.MemberRef{Pool: p.Name, Member: mc.Name},
				Addr:        addr.Unmap(),
				Port:        uint16(mc.Port),
				DefaultPort: def,
				Monitor:     mon,
			}
			if t.NeedsPort() && t.ProbeAddr().Port() == 0 {
				warnings = append(warnings, fmt.Sprintf("pool %q member %q: not monitored by %q: it has no port, the monitor sets none, and no virtual server uses the pool", p.Name, mc.Name, mon.Name))
				continue
			}
			targets = append(targets, t)
		}
	}
	return targets, warnings, nil
}
