package plan

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/userspace/health"
)

func TestTargetsFromConfig(t *testing.T) {
	cfg := parseConfig(t, `
health_monitors:
  - {name: web-http, type: http, interval: 2, rise: 2, fall: 4, path: /healthz, expected_codes: [200, "300-302"], response_body: ok, max_fails: 3}
  - {name: tcp-alt, type: tcp, port: 9000, interval: 0.5}
  - {name: ping, type: icmp}
  - {name: conn, type: passive}
pools:
  - name: web
    health_monitor: web-http
    members:
      - {name: w1, address: 10.0.0.1, port: 8080}
      - {name: w2, address: "::ffff:10.0.0.2"}
  - name: alt
    health_monitor: tcp-alt
    members:
      - {name: a1, address: 10.0.1.1}
  - name: unused-tcp
    health_monitor: web-http
    members:
      - {name: u1, address: 10.0.2.1}
      - {name: u2, address: 10.0.2.2, port: 81}
  - name: unused-icmp
    health_monitor: ping
    members:
      - {name: i1, address: "2001:db8::1"}
  - name: passive
    health_monitor: conn
    members:
      - {name: p1, address: 10.0.3.1}
  - name: none
    members:
      - {name: n1, address: 10.0.4.1}
virtual_servers:
  - {name: web, address: 192.0.2.10, port: 80, protocol: tcp, pool: web}
  - {name: web2, address: 192.0.2.10, port: 8443, protocol: tcp, pool: web}
  - {name: alt, address: 192.0.2.11, port: 25, protocol: tcp, pool: alt}
  - {name: pass, address: 192.0.2.12, port: 80, protocol: tcp, pool: passive}
`)
	targets, warnings, err := Monitors(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]health.Target{}
	for _, tg := range targets {
		got[tg.ID.String()] = tg
	}
	want := map[string]string{
		"web/w1":         "10.0.0.1:8080", // the member's port
		"web/w2":         "10.0.0.2:80",   // port 0: the first virtual server's
		"alt/a1":         "10.0.1.1:9000", // the monitor's port
		"unused-tcp/u2":  "10.0.2.2:81",
		"unused-icmp/i1": "[2001:db8::1]:0",
		"passive/p1":     "10.0.3.1:80",
	}
	if len(got) != len(want) {
		t.Errorf("targets %v, want %v", got, want)
	}
	for id, ap := range want {
		if tg, ok := got[id]; !ok || tg.ProbeAddr().String() != ap {
			t.Errorf("%s probes %v, want %s", id, tg.ProbeAddr(), ap)
		}
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], `pool "unused-tcp" member "u1": not monitored`) {
		t.Errorf("warnings %q", warnings)
	}
	m := got["web/w1"].Monitor
	wantM := health.Monitor{
		Name: "web-http", Type: "http", Interval: 2 * time.Second, Timeout: 2 * time.Second, Rise: 2, Fall: 4,
		Method: "GET", Path: "/healthz", Codes: []health.CodeRange{{Lo: 200, Hi: 200}, {Lo: 300, Hi: 302}},
		ResponseBody: "ok", DataLength: 56, MaxFails: 3, FailTimeout: 5 * time.Second,
	}
	if !reflect.DeepEqual(m, wantM) {
		t.Errorf("monitor\n got %+v\nwant %+v", m, wantM)
	}
	if m := got["alt/a1"].Monitor; m.Interval != 500*time.Millisecond || m.Timeout != 500*time.Millisecond || m.Rise != 3 || m.Fall != 3 || m.MaxFails != 0 {
		t.Errorf("tcp monitor defaults %+v", m)
	}
	if m := got["passive/p1"].Monitor; m.Active() || m.MaxFails != 5 || m.FailTimeout != 5*time.Second || m.Interval != 0 {
		t.Errorf("passive monitor defaults %+v", m)
	}
	if m := got["unused-icmp/i1"].Monitor; m.Timeout != 5*time.Second || m.DataLength != 56 {
		t.Errorf("icmp monitor defaults %+v", m)
	}

	// Update would accept them (not run here: these addresses are not local).
	for _, tg := range targets {
		if err := tg.Monitor.Check(); err != nil {
			t.Errorf("%s: %v", tg.ID, err)
		}
	}
	if !got["web/w2"].Addr.Is4() || got["web/w2"].Addr != netip.MustParseAddr("10.0.0.2") {
		t.Errorf("mapped address kept: %v", got["web/w2"].Addr)
	}
}
