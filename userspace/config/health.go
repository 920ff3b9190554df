package config

import (
	"cmp"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Health monitor types. The active ones probe every member of a pool; a
// passive monitor only counts the connection failures the L7 proxy reports.
const (
	MonitorTCP     = "tcp"
	MonitorHTTP    = "http"
	MonitorHTTPS   = "https"
	MonitorUDP     = "udp"
	MonitorICMP    = "icmp"
	MonitorPassive = "passive"
)

// Health monitor defaults and limits. Times are in seconds. Rise and fall
// follow NSX's rise_count and fall_count defaults.
const (
	DefaultMonitorInterval   = 5.0
	DefaultMonitorTimeout    = 5.0 // and never more than the interval
	DefaultMonitorRise       = 3
	DefaultMonitorFall       = 3
	DefaultMonitorMethod     = "GET"
	DefaultMonitorPath       = "/"
	DefaultMonitorCodes      = "200-299"
	DefaultICMPDataLength    = 56
	DefaultPassiveMaxFails   = 5
	DefaultPassiveTimeout    = 5.0
	MinMonitorInterval       = 0.1
	MaxMonitorInterval       = 3600.0
	MinMonitorTimeout        = 0.01
	MaxMonitorCount          = 1000
	MaxMonitorPayload        = 4096
	MaxICMPDataLength        = 65507
	MaxHealthMonitors        = 1024
	maxMonitorHeaders        = 32
	minPassiveTimeoutSeconds = 0.1
)

// HealthMonitor is an NSX-style monitor, attached to pools by name
// (pools[].health_monitor). Options of one type are rejected on another.
type HealthMonitor struct {
	Name string `yaml:"name" json:"name"`
	// Type is tcp, http, https, udp, icmp or passive.
	Type string `yaml:"type" json:"type"`

	// Interval between the starts of two probes of a member, in seconds.
	Interval *float64 `yaml:"interval" json:"interval,omitempty"`
	// Timeout of one probe, in seconds; at most the interval.
	Timeout *float64 `yaml:"timeout" json:"timeout,omitempty"`
	// Rise consecutive successes bring a down member up; Fall consecutive
	// failures take an up member down.
	Rise *int `yaml:"rise" json:"rise,omitempty"`
	Fall *int `yaml:"fall" json:"fall,omitempty"`
	// Port probed instead of the member's port (0: the member's port, or the
	// virtual server's when the member's port is 0).
	Port int `yaml:"port" json:"port,omitempty"`

	// Send is written after connecting (tcp) or as the datagram (udp, required).
	Send string `yaml:"send" json:"send,omitempty"`
	// Receive must appear in what the member answers; empty accepts any
	// answer (udp) or none at all (tcp: the connection is enough).
	Receive string `yaml:"receive" json:"receive,omitempty"`

	// HTTP and HTTPS options.
	Method      string          `yaml:"method" json:"method,omitempty"`
	Path        string          `yaml:"path" json:"path,omitempty"`
	Host        string          `yaml:"host" json:"host,omitempty"`
	Headers     []MonitorHeader `yaml:"headers" json:"headers,omitempty"`
	RequestBody string          `yaml:"request_body" json:"request_body,omitempty"`
	// ExpectedCodes lists the healthy status codes: "200" or ranges "200-299".
	ExpectedCodes []string `yaml:"expected_codes" json:"expected_codes,omitempty"`
	// ResponseBody must appear in the first 64 KiB of the body.
	ResponseBody string `yaml:"response_body" json:"response_body,omitempty"`
	// TLSVerify checks the member's certificate (https); off by default, as
	// members usually present self-signed certificates.
	TLSVerify bool `yaml:"tls_verify" json:"tls_verify,omitempty"`
	// TLSCAFile holds the PEM roots to verify against instead of the system's.
	TLSCAFile string `yaml:"tls_ca_file" json:"tls_ca_file,omitempty"`
	// TLSServerName is sent as SNI and verified; default: host without its port.
	TLSServerName string `yaml:"tls_server_name" json:"tls_server_name,omitempty"`

	// DataLength is the ICMP echo payload size in bytes.
	DataLength *int `yaml:"data_length" json:"data_length,omitempty"`

	// MaxFails consecutive connection failures reported by the L7 proxy mark
	// a member down for FailTimeout seconds, or until an active probe of
	// this monitor succeeds. Passive monitors default to 5; on active
	// monitors 0 (the default) turns passive counting off.
	MaxFails    *int     `yaml:"max_fails" json:"max_fails,omitempty"`
	FailTimeout *float64 `yaml:"fail_timeout" json:"fail_timeout,omitempty"`
}

// MonitorHeader is one request header of an http or https monitor.
type MonitorHeader struct {
	Name  string `yaml:"name" json:"name"`
	Value string `yaml:"value" json:"value"`
}

// Active reports whether the monitor sends probes.
func (m *HealthMonitor) Active() bool { return m.Type != MonitorPassive }

// NeedsPort reports whether the monitor's probes go to a port.
func (m *HealthMonitor) NeedsPort() bool {
	return oneOf(m.Type, MonitorTCP, MonitorHTTP, MonitorHTTPS, MonitorUDP)
}

// HealthMonitor returns the monitor with the given name, or nil.
func (c *Config) HealthMonitor(name string) *HealthMonitor {
	return find(c.HealthMonitors, func(h *HealthMonitor) bool { return h.Name == name })
}

// CodeRange is an inclusive range of HTTP status codes.
type CodeRange struct{ Lo, Hi int }

// ParseCodeRange parses "200" or "200-299".
func ParseCodeRange(s string) (CodeRange, error) {
	s = strings.TrimSpace(s)
	lo, hi, isRange := strings.Cut(s, "-")
	a, err := strconv.Atoi(strings.TrimSpace(lo))
	if err != nil {
		return CodeRange{}, fmt.Errorf("%q is not a status code or a range like 200-299", s)
	}
	b := a
	if isRange {
		if b, err = strconv.Atoi(strings.TrimSpace(hi)); err != nil {
			return CodeRange{}, fmt.Errorf("%q is not a status code or a range like 200-299", s)
		}
	}
	switch {
	case a < 100 || a > 599 || b < 100 || b > 599:
		return CodeRange{}, fmt.Errorf("%q: status codes are between 100 and 599", s)
	case a > b:
		return CodeRange{}, fmt.Errorf("%q: the range is empty", s)
	}
	return CodeRange{a, b}, nil
}

func (r CodeRange) String() string {
	if r.Lo == r.Hi {
		return strconv.Itoa(r.Lo)
	}
	return fmt.Sprintf("%d-%d", r.Lo, r.Hi)
}

func (c *Config) applyHealthDefaults() {
	for i := range c.HealthMonitors {
		m := &c.HealthMonitors[i]
		if m.Type == MonitorPassive {
			setDefault(&m.MaxFails, DefaultPassiveMaxFails)
			setDefault(&m.FailTimeout, DefaultPassiveTimeout)
			continue
		}
		setDefault(&m.Interval, DefaultMonitorInterval)
		if m.Timeout == nil {
			// At most the interval; a bad interval is reported alone.
			t := DefaultMonitorTimeout
			if *m.Interval >= MinMonitorInterval {
				t = min(t, *m.Interval)
			}
			m.Timeout = &t
		}
		setDefault(&m.Rise, DefaultMonitorRise)
		setDefault(&m.Fall, DefaultMonitorFall)
		setDefault(&m.MaxFails, 0)
		setDefault(&m.FailTimeout, DefaultPassiveTimeout)
		switch m.Type {
		case MonitorHTTP, MonitorHTTPS:
			m.Method = cmp.Or(m.Method, DefaultMonitorMethod)
			m.Path = cmp.Or(m.Path, DefaultMonitorPath)
			if len(m.ExpectedCodes) == 0 {
				m.ExpectedCodes = []string{DefaultMonitorCodes}
			}
		case MonitorICMP:
			setDefault(&m.DataLength, DefaultICMPDataLength)
		}
	}
}

func (c *Config) validateHealth(v *validator) {
	if len(c.HealthMonitors) > MaxHealthMonitors {
		v.add("health_monitors", "%d monitors exceed the limit of %d", len(c.HealthMonitors), MaxHealthMonitors)
	}
	seen := map[string]bool{}
	for i := range c.HealthMonitors {
		c.HealthMonitors[i].validate(v, fmt.Sprintf("health_monitors[%d]", i), seen)
	}
	for i := range c.Pools {
		p := &c.Pools[i]
		if p.HealthMonitor == "" {
			continue
		}
		if c.HealthMonitor(p.HealthMonitor) == nil {
			v.add(fmt.Sprintf("pools[%d] (%s).health_monitor", i, p.Name), "names monitor %q, which is not defined", p.HealthMonitor)
		}
	}
}

func (m *HealthMonitor) validate(v *validator, field string, seen map[string]bool) {
	v.name(field+".name", m.Name, seen)
	field = fmt.Sprintf("%s (%s)", field, m.Name)
	if !oneOf(m.Type, MonitorTCP, MonitorHTTP, MonitorHTTPS, MonitorUDP, MonitorICMP, MonitorPassive) {
		if m.Type == "" {
			v.add(field+".type", "is required: tcp, http, https, udp, icmp or passive")
		} else {
			v.add(field+".type", "%q must be tcp, http, https, udp, icmp or passive", m.Type)
		}
		return
	}
	m.onlyFor(v, field)
	if m.Active() {
		iv, to := *m.Interval, *m.Timeout
		if iv < MinMonitorInterval || iv > MaxMonitorInterval {
			v.add(field+".interval", "%g must be between %g and %g seconds", iv, MinMonitorInterval, MaxMonitorInterval)
		}
		switch {
		case to < MinMonitorTimeout || to > MaxMonitorInterval:
			v.add(field+".timeout", "%g must be between %g and %g seconds", to, MinMonitorTimeout, MaxMonitorInterval)
		case to > iv && iv >= MinMonitorInterval:
			v.add(field+".timeout", "%g exceeds the interval (%g): a probe must end before the next one is due", to, iv)
		}
		if r := *m.Rise; r < 1 || r > MaxMonitorCount {
			v.add(field+".rise", "%d must be between 1 and %d consecutive successes", r, MaxMonitorCount)
		}
		if f := *m.Fall; f < 1 || f > MaxMonitorCount {
			v.add(field+".fall", "%d must be between 1 and %d consecutive failures", f, MaxMonitorCount)
		}
		if mf := *m.MaxFails; mf < 0 || mf > MaxMonitorCount {
			v.add(field+".max_fails", "%d must be between 0 and %d (0 turns passive counting off)", mf, MaxMonitorCount)
		}
	} else if mf := *m.MaxFails; mf < 1 || mf > MaxMonitorCount {
		v.add(field+".max_fails", "%d must be between 1 and %d consecutive connection failures", mf, MaxMonitorCount)
	}
	if ft := *m.FailTimeout; ft < minPassiveTimeoutSeconds || ft > MaxMonitorInterval {
		v.add(field+".fail_timeout", "%g must be between %g and %g seconds", ft, minPassiveTimeoutSeconds, MaxMonitorInterval)
	}
	if m.Port < 0 || m.Port > 65535 {
		v.add(field+".port", "%d is out of range 0-65535 (0 means the member's port)", m.Port)
	}
	if len(m.Send) > MaxMonitorPayload {
		v.add(field+".send", "is %d bytes; the limit is %d", len(m.Send), MaxMonitorPayload)
	}
	if len(m.Receive) > MaxMonitorPayload {
		v.add(field+".receive", "is %d bytes; the limit is %d", len(m.Receive), MaxMonitorPayload)
	}
	switch m.Type {
	case MonitorUDP:
		if m.Send == "" {
			v.add(field+".send", "is required: a udp monitor needs a datagram to send")
		}
	case MonitorHTTP, MonitorHTTPS:
		m.validateHTTP(v, field)
	case MonitorICMP:
		if n := *m.DataLength; n < 0 || n > MaxICMPDataLength {
			v.add(field+".data_length", "%d must be between 0 and %d bytes", n, MaxICMPDataLength)
		}
	}
}

// onlyFor reports options set on a monitor type they do not apply to.
func (m *HealthMonitor) onlyFor(v *validator, field string) {
	t := m.Type
	for _, o := range []struct {
		name  string
		set   bool
		types []string
		says  string
	}{
		{"interval", m.Interval != nil, nil, "active"},
		{"timeout", m.Timeout != nil, nil, "active"},
		{"rise", m.Rise != nil, nil, "active"},
		{"fall", m.Fall != nil, nil, "active"},
		{"port", m.Port != 0, []string{MonitorTCP, MonitorHTTP, MonitorHTTPS, MonitorUDP}, "tcp, http, https and udp"},
		{"send", m.Send != "", []string{MonitorTCP, MonitorUDP}, "tcp and udp"},
		{"receive", m.Receive != "", []string{MonitorTCP, MonitorUDP}, "tcp and udp"},
		{"method", m.Method != "", []string{MonitorHTTP, MonitorHTTPS}, "http and https"},
		{"path", m.Path != "", []string{MonitorHTTP, MonitorHTTPS}, "http and https"},
		{"host", m.Host != "", []string{MonitorHTTP, MonitorHTTPS}, "http and https"},
		{"headers", len(m.Headers) > 0, []string{MonitorHTTP, MonitorHTTPS}, "http and https"},
		{"request_body", m.RequestBody != "", []string{MonitorHTTP, MonitorHTTPS}, "http and https"},
		{"expected_codes", len(m.ExpectedCodes) > 0, []string{MonitorHTTP, MonitorHTTPS}, "http and https"},
		{"response_body", m.ResponseBody != "", []string{MonitorHTTP, MonitorHTTPS}, "http and https"},
		{"tls_verify", m.TLSVerify, []string{MonitorHTTPS}, "https"},
		{"tls_ca_file", m.TLSCAFile != "", []string{MonitorHTTPS}, "https"},
		{"tls_server_name", m.TLSServerName != "", []string{MonitorHTTPS}, "https"},
		{"data_length", m.DataLength != nil, []string{MonitorICMP}, "icmp"},
	} {
		if !o.set {
			continue
		}
		if o.types == nil {
			if t == MonitorPassive {
				v.add(field+"."+o.name, "applies only to active monitors (a passive monitor sends no probes)")
			}
			continue
		}
		if !oneOf(t, o.types...) {
			v.add(field+"."+o.name, "applies only to %s monitors", o.says)
		}
	}
}

var monitorMethods = []string{"GET", "HEAD", "POST", "PUT", "OPTIONS"}

func (m *HealthMonitor) validateHTTP(v *validator, field string) {
	if !oneOf(m.Method, monitorMethods...) {
		v.add(field+".method", "%q must be GET, HEAD, POST, PUT or OPTIONS", m.Method)
	}
	if !strings.HasPrefix(m.Path, "/") || !headerValueOK(m.Path) || strings.ContainsAny(m.Path, " #") {
		v.add(field+".path", "%q must start with '/' and hold no spaces, '#' or control characters", m.Path)
	}
	if m.Host != "" && (!headerValueOK(m.Host) || strings.ContainsAny(m.Host, " /?#@")) {
		v.add(field+".host", "%q is not a host name, with or without a port", m.Host)
	}
	if len(m.Headers) > maxMonitorHeaders {
		v.add(field+".headers", "%d headers exceed the limit of %d", len(m.Headers), maxMonitorHeaders)
	}
	for i, h := range m.Headers {
		hf := fmt.Sprintf("%s.headers[%d]", field, i)
		if !headerNameOK(h.Name) {
			v.add(hf+".name", "%q is not a valid header name", h.Name)
		} else if strings.EqualFold(h.Name, "Host") {
			v.add(hf+".name", "set the Host header with host")
		}
		if !headerValueOK(h.Value) {
			v.add(hf+".value", "must not hold control characters or line breaks")
		}
	}
	if len(m.RequestBody) > MaxMonitorPayload {
		v.add(field+".request_body", "is %d bytes; the limit is %d", len(m.RequestBody), MaxMonitorPayload)
	}
	if m.RequestBody != "" && !oneOf(m.Method, "POST", "PUT") {
		v.add(field+".request_body", "needs method POST or PUT")
	}
	for i, s := range m.ExpectedCodes {
		if _, err := ParseCodeRange(s); err != nil {
			v.add(fmt.Sprintf("%s.expected_codes[%d]", field, i), "%v", err)
		}
	}
	if len(m.ResponseBody) > MaxMonitorPayload {
		v.add(field+".response_body", "is %d bytes; the limit is %d", len(m.ResponseBody), MaxMonitorPayload)
	}
	if m.ResponseBody != "" && m.Method == "HEAD" {
		v.add(field+".response_body", "cannot be checked: a HEAD response has no body")
	}
	if m.TLSCAFile != "" {
		switch {
		case !m.TLSVerify:
			v.add(field+".tls_ca_file", "applies only with tls_verify: true")
		case !filepath.IsAbs(m.TLSCAFile):
			v.add(field+".tls_ca_file", "%q must be an absolute path", m.TLSCAFile)
		default:
			if _, err := LoadCAFile(m.TLSCAFile); err != nil {
				v.add(field+".tls_ca_file", "%v", err)
			}
		}
	}
	if m.TLSServerName != "" && !validCookieDomain(m.TLSServerName) {
		v.add(field+".tls_server_name", "%q is not a host name", m.TLSServerName)
	}
}

func headerNameOK(s string) bool {
	if s == "" || len(s) > 256 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= 0x20 || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

func headerValueOK(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// LoadCAFile reads PEM certificates into a pool.
func LoadCAFile(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}
