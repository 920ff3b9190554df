package config

import (
	"encoding/pem"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/limpet-lb/limpet/test/testutil"
)

func testCertDER(t *testing.T) []byte {
	t.Helper()
	return testutil.NewCA(t, "ca").Cert.Raw
}

// healthConfig is a valid config whose pool "web" uses the monitor given as
// YAML flow-mapping fields (the name is web-mon).
func healthConfig(monitor string) string {
	return `
health_monitors:
  - {name: web-mon, ` + monitor + `}
pools:
  - name: web
    health_monitor: web-mon
    members:
      - {name: a, address: 10.0.0.1, port: 8080}
virtual_servers:
  - {name: web, address: 192.0.2.1, port: 80, protocol: tcp, pool: web}
`
}

func TestHealthDefaults(t *testing.T) {
	for _, tc := range []struct {
		monitor string
		check   func(t *testing.T, m *HealthMonitor)
	}{
		{"type: http", func(t *testing.T, m *HealthMonitor) {
			if *m.Interval != 5 || *m.Timeout != 5 || *m.Rise != 3 || *m.Fall != 3 || m.Method != "GET" || m.Path != "/" ||
				!reflect.DeepEqual(m.ExpectedCodes, []string{"200-299"}) || *m.MaxFails != 0 || *m.FailTimeout != 5 || m.DataLength != nil {
				t.Errorf("http defaults: %+v", m)
			}
		}},
		{"type: tcp, interval: 1", func(t *testing.T, m *HealthMonitor) {
			if *m.Interval != 1 || *m.Timeout != 1 || m.Method != "" || m.ExpectedCodes != nil {
				t.Errorf("tcp defaults: the timeout follows a short interval: %+v", m)
			}
		}},
		{"type: icmp, interval: 30", func(t *testing.T, m *HealthMonitor) {
			if *m.Timeout != 5 || *m.DataLength != 56 {
				t.Errorf("icmp defaults: %+v", m)
			}
		}},
		{"type: passive", func(t *testing.T, m *HealthMonitor) {
			if m.Interval != nil || m.Timeout != nil || m.Rise != nil || m.Fall != nil || *m.MaxFails != 5 || *m.FailTimeout != 5 {
				t.Errorf("passive defaults: %+v", m)
			}
		}},
		{`type: https, expected_codes: [200, "301-302"], tls_verify: true`, func(t *testing.T, m *HealthMonitor) {
			if !reflect.DeepEqual(m.ExpectedCodes, []string{"200", "301-302"}) || !m.TLSVerify {
				t.Errorf("https: %+v", m)
			}
		}},
	} {
		cfg, err := Parse([]byte(healthConfig(tc.monitor)))
		if err != nil {
			t.Fatalf("%s: %v", tc.monitor, err)
		}
		if cfg.Pool("web").HealthMonitor != "web-mon" {
			t.Fatalf("pool's health_monitor not parsed")
		}
		tc.check(t, cfg.HealthMonitor("web-mon"))
	}
}

func TestHealthValidation(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	goodPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(goodPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: testCertDER(t)}), 0o600); err != nil {
		t.Fatal(err)
	}
	const f = "health_monitors[0] (web-mon)"
	for _, tc := range []struct {
		monitor string
		want    string // empty: valid
	}{
		{"type: http, interval: 0", f + ".interval: 0 must be between 0.1 and 3600 seconds"},
		{"type: http, interval: 4000, timeout: 1", f + ".interval: 4000 must be between 0.1 and 3600 seconds"},
		{"type: tcp, interval: 2, timeout: 3", f + ".timeout: 3 exceeds the interval (2): a probe must end before the next one is due"},
		{"type: tcp, timeout: 0", f + ".timeout: 0 must be between 0.01 and 3600 seconds"},
		{"type: tcp, rise: 0", f + ".rise: 0 must be between 1 and 1000 consecutive successes"},
		{"type: tcp, fall: 1001", f + ".fall: 1001 must be between 1 and 1000 consecutive failures"},
		{"type: tcp, port: 70000", f + ".port: 70000 is out of range 0-65535 (0 means the member's port)"},
		{"type: tcp, max_fails: -1", f + ".max_fails: -1 must be between 0 and 1000 (0 turns passive counting off)"},
		{"type: tcp, max_fails: 3, fail_timeout: 0", f + ".fail_timeout: 0 must be between 0.1 and 3600 seconds"},
		{"type: smtp", f + `.type: "smtp" must be tcp, http, https, udp, icmp or passive`},
		{"interval: 1", f + ".type: is required: tcp, http, https, udp, icmp or passive"},
		{"type: udp", f + ".send: is required: a udp monitor needs a datagram to send"},
		{"type: udp, send: ping, receive: pong", ""},
		{"type: tcp, send: \"PING\\r\\n\", receive: \"+PONG\"", ""},
		{"type: icmp, port: 80", f + ".port: applies only to tcp, http, https and udp monitors"},
		{"type: icmp, data_length: 70000", f + ".data_length: 70000 must be between 0 and 65507 bytes"},
		{"type: tcp, data_length: 10", f + ".data_length: applies only to icmp monitors"},
		{"type: tcp, path: /x", f + ".path: applies only to http and https monitors"},
		{"type: icmp, send: x", f + ".send: applies only to tcp and udp monitors"},
		{"type: http, tls_verify: true", f + ".tls_verify: applies only to https monitors"},
		{"type: passive, interval: 5", f + ".interval: applies only to active monitors (a passive monitor sends no probes)"},
		{"type: passive, rise: 2", f + ".rise: applies only to active monitors"},
		{"type: passive, max_fails: 0", f + ".max_fails: 0 must be between 1 and 1000 consecutive connection failures"},
		{"type: passive, path: /", f + ".path: applies only to http and https monitors"},
		{"type: http, method: DELETE", f + `.method: "DELETE" must be GET, HEAD, POST, PUT or OPTIONS`},
		{"type: http, path: health", f + `.path: "health" must start with '/'`},
		{"type: http, path: \"/a b\"", f + `.path: "/a b" must start with '/' and hold no spaces`},
		{"type: http, host: \"a b\"", f + `.host: "a b" is not a host name`},
		{"type: http, host: \"shop.example:8080\", path: \"/health?full=1\"", ""},
		{"type: http, expected_codes: [\"2xx\"]", f + `.expected_codes[0]: "2xx" is not a status code or a range like 200-299`},
		{"type: http, expected_codes: [200, 700]", f + `.expected_codes[1]: "700": status codes are between 100 and 599`},
		{"type: http, expected_codes: [\"299-200\"]", f + `.expected_codes[0]: "299-200": the range is empty`},
		{"type: http, method: HEAD, response_body: ok", f + ".response_body: cannot be checked: a HEAD response has no body"},
		{"type: http, request_body: x", f + ".request_body: needs method POST or PUT"},
		{"type: http, method: POST, request_body: x", ""},
		{"type: http, headers: [{name: \"X Bad\", value: v}]", f + `.headers[0].name: "X Bad" is not a valid header name`},
		{"type: http, headers: [{name: Host, value: v}]", f + ".headers[0].name: set the Host header with host"},
		{"type: http, headers: [{name: X-A, value: \"a\\nb\"}]", f + ".headers[0].value: must not hold control characters or line breaks"},
		{"type: https, tls_ca_file: " + goodPEM, f + ".tls_ca_file: applies only with tls_verify: true"},
		{"type: https, tls_verify: true, tls_ca_file: ca.pem", f + `.tls_ca_file: "ca.pem" must be an absolute path`},
		{"type: https, tls_verify: true, tls_ca_file: " + notPEM, f + ".tls_ca_file: " + notPEM + " holds no PEM certificate"},
		{"type: https, tls_verify: true, tls_ca_file: /nonexistent/ca.pem", f + ".tls_ca_file: cannot read"},
		{"type: https, tls_verify: true, tls_ca_file: " + goodPEM + ", tls_server_name: shop.example", ""},
		{"type: https, tls_server_name: \"bad name\"", f + `.tls_server_name: "bad name" is not a host name`},
		{"type: http, nonsense: 1", `health_monitors[0] (web-mon): unknown field "nonsense"`},
	} {
		checkParse(t, tc.monitor, healthConfig(tc.monitor), tc.want)
	}
}

func TestHealthMonitorReferences(t *testing.T) {
	for _, tc := range []struct {
		yaml, want string
	}{
		{`
pools:
  - {name: web, health_monitor: nope, members: [{name: a, address: 10.0.0.1}]}
virtual_servers:
  - {name: web, address: 192.0.2.1, port: 80, protocol: tcp, pool: web}
`, `pools[0] (web).health_monitor: names monitor "nope", which is not defined`},
		{`
health_monitors:
  - {name: m, type: tcp}
  - {name: m, type: icmp}
  - {name: "", type: icmp}
pools:
  - {name: web, health_monitor: m, members: [{name: a, address: 10.0.0.1}]}
virtual_servers:
  - {name: web, address: 192.0.2.1, port: 80, protocol: tcp, pool: web}
`, `health_monitors[1].name: "m" is used twice`},
		{`
health_monitors:
  - {name: "", type: icmp}
pools:
  - {name: web, members: [{name: a, address: 10.0.0.1}]}
virtual_servers:
  - {name: web, address: 192.0.2.1, port: 80, protocol: tcp, pool: web}
`, `health_monitors[0].name: is required`},
	} {
		_, err := Parse([]byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want %q", err, tc.want)
		}
	}
	// Every problem is reported at once.
	_, err := Parse([]byte(healthConfig("type: http, interval: 0, rise: 0, method: DELETE")))
	if err == nil || strings.Count(err.Error(), "health_monitors[0] (web-mon).") != 3 {
		t.Errorf("want three errors, got %v", err)
	}
}

func TestParseCodeRange(t *testing.T) {
	for in, want := range map[string]CodeRange{"200": {200, 200}, " 200 - 299 ": {200, 299}, "100-599": {100, 599}} {
		got, err := ParseCodeRange(in)
		if err != nil || got != want {
			t.Errorf("%q: %v %v", in, got, err)
		}
	}
	for _, in := range []string{"", "2xx", "200-", "-200", "99", "600", "300-200", "200-299-300"} {
		if _, err := ParseCodeRange(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
	if s := (CodeRange{200, 299}).String() + " " + (CodeRange{404, 404}).String(); s != "200-299 404" {
		t.Errorf("String: %q", s)
	}
}
