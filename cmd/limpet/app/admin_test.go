package app

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/userspace/admin"
	"github.com/limpet-lb/limpet/userspace/config"
)

// fakeDaemon is an admin.Handler with canned answers.
type fakeDaemon struct {
	mu        sync.Mutex
	status    admin.Status
	reloadErr error
	reloads   int
}

func (f *fakeDaemon) Status() admin.Status { return f.status }

func (f *fakeDaemon) Reload() (admin.Summary, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reloads++
	if f.reloadErr != nil {
		return admin.Summary{}, f.reloadErr
	}
	return admin.Summary{ConfigPath: "/etc/limpet/limpet.yaml", AppliedAt: time.Now(), L4VirtualServers: 2, HTTPVirtualServers: 1,
		Pools: 2, Members: 5, Profiles: 2, Warnings: []string{"profile sticky is not used"}}, nil
}

func (f *fakeDaemon) SetMember(pool, member string, enabled bool) error {
	return fmt.Errorf("pool %q: %w", pool, admin.ErrNotFound)
}

// serveAdmin serves h's API on a socket in a temporary directory (without
// the root check, so the test runs unprivileged) and returns its path.
func serveAdmin(t *testing.T, h admin.Handler) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "admin.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: admin.NewHandler(h, slog.New(slog.NewTextHandler(io.Discard, nil)))}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return path
}

func daemonStatus() admin.Status {
	return admin.Status{
		Version: "v9.9.9", PID: 4242, StartedAt: time.Now().Add(-90 * time.Minute), ConfigPath: "/etc/limpet/limpet.yaml",
		AppliedAt: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), MetricsListen: "127.0.0.1:9469",
		LastReloadError: "settings.xdp_mode: \"turbo\" must be auto, native or generic",
		Interfaces:      []admin.Interface{{Name: "eth0", XDPMode: "native"}, {Name: "eth1", XDPMode: "generic"}},
		VirtualServers: []admin.VirtualServer{
			{Name: "web", Type: "l4", Address: "203.0.113.10", Port: 80, Protocol: "tcp", Forwarding: "nat", Pool: "web", Profile: "sticky"},
			{Name: "dns6", Type: "l4", Address: "2001:db8::10", Port: 53, Protocol: "udp", Forwarding: "dsr", Pool: "web"},
		},
		Pools: []admin.Pool{{Name: "web", Algorithm: "round_robin", Members: []admin.Member{
			{Name: "m1", Address: "10.1.0.11", Port: 8080, Weight: 1, State: "enabled", Health: admin.HealthUp, ActiveConnections: 7, MaxConnections: 100},
			{Name: "m2", Address: "10.1.0.12", Port: 8080, Weight: 2, State: "enabled", AdminDown: true, Health: admin.HealthUp},
			{Name: "m3", Address: "10.1.0.13", Port: 0, Weight: 1, State: "graceful_disabled", Health: admin.HealthUnchecked},
			{Name: "m4", Address: "10.1.0.14", Port: 8080, Weight: 1, State: "enabled", Health: admin.HealthDown, HealthDetail: "connection refused"},
		}}},
		Tables: []admin.Table{
			{ID: 0, Profile: "sticky", VirtualServer: "web", Entries: 43, MaxEntries: 1000, PurgeWhenFull: true, Timeout: 300},
			{ID: 1, Profile: "shared-dns", Shared: true, Entries: 8, MaxEntries: 8, Timeout: 60},
		},
	}
}

func TestStatusCommand(t *testing.T) {
	h := &fakeDaemon{status: daemonStatus()}
	sock := serveAdmin(t, h)
	code, out, errOut := limpet(t, "status", "--socket", sock)
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"limpet v9.9.9, pid 4242, up 1h30m0s\n",
		"config /etc/limpet/limpet.yaml, applied 2025-01-02T03:04:05Z\n",
		"last reload refused (the config above keeps running): settings.xdp_mode:",
		"interfaces: eth0 (native), eth1 (generic)\n",
		"metrics: http://127.0.0.1:9469/metrics\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
	// Rows, with the columns' padding squeezed to one space.
	rows := map[string]bool{}
	for _, line := range strings.Split(out, "\n") {
		rows[strings.Join(strings.Fields(line), " ")] = true
	}
	for _, want := range []string{
		"VIRTUAL SERVER TYPE ADDRESS PROTOCOL FORWARDING POOL PROFILE IN SERVICE",
		"web l4 203.0.113.10:80 tcp nat web sticky 1/4",
		"dns6 l4 [2001:db8::10]:53 udp dsr web - 1/4",
		"POOL ALGORITHM MEMBER ADDRESS WEIGHT STATE HEALTH CONNECTIONS",
		"web round_robin m1 10.1.0.11:8080 1 enabled up 7/100",
		"web round_robin m2 10.1.0.12:8080 2 disabled (limpet member disable) up 0",
		"web round_robin m3 10.1.0.13 1 graceful_disabled unchecked 0",
		"web round_robin m4 10.1.0.14:8080 1 enabled down: connection refused 0",
		"TABLE PROFILE VIRTUAL SERVER ENTRIES MAX FILL WHEN FULL TIMEOUT",
		"0 sticky web 43 1000 4.3% purge 5m0s",
		"1 shared-dns (shared) 8 8 100.0% reject 1m0s",
	} {
		if !rows[want] {
			t.Errorf("no row %q in\n%s", want, out)
		}
	}

	code, out, errOut = limpet(t, "status", "-o", "json", "--socket", sock)
	if code != ExitOK {
		t.Fatalf("json: exit %d: %s", code, errOut)
	}
	var st admin.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	want := daemonStatus()
	if st.Version != want.Version || len(st.Pools[0].Members) != 4 || st.Pools[0].Members[3].HealthDetail != "connection refused" ||
		st.Tables[1] != want.Tables[1] || st.UptimeSeconds < 5399 {
		t.Errorf("json status %+v", st)
	}

	// LIMPET_ADMIN_SOCKET selects the socket too.
	t.Setenv("LIMPET_ADMIN_SOCKET", sock)
	if code, _, errOut := limpet(t, "status"); code != ExitOK {
		t.Errorf("LIMPET_ADMIN_SOCKET: exit %d: %s", code, errOut)
	}
}

func TestStatusCommandErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "admin.sock")
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"status", "--socket", missing}, ExitRuntime, "limpet: no limpet daemon is listening on " + missing + "\n"},
		{[]string{"reload", "--socket", missing}, ExitRuntime, "limpet: no limpet daemon is listening on " + missing + "\n"},
		{[]string{"status", "-o", "yaml", "--socket", missing}, ExitUsage, "the output format must be table or json"},
		{[]string{"status", "extra", "--socket", missing}, ExitUsage, "takes no arguments"},
		{[]string{"reload", "extra"}, ExitUsage, "takes no arguments"},
	} {
		code, _, errOut := limpet(t, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.msg) {
			t.Errorf("%q: exit %d, stderr %q; want %d and %q", tc.args, code, errOut, tc.code, tc.msg)
		}
	}
}

func TestReloadCommand(t *testing.T) {
	h := &fakeDaemon{}
	sock := serveAdmin(t, h)
	code, out, errOut := limpet(t, "reload", "--socket", sock)
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if want := "warning: profile sticky is not used\nreloaded /etc/limpet/limpet.yaml (2 l4 and 1 http virtual servers, 2 pools, 5 members, 2 persistence profiles)\n"; out != want {
		t.Errorf("output %q, want %q", out, want)
	}

	// A refused config: exit 2, and the message names the field.
	_, verr := config.Parse([]byte(goodConfig + "settings: {xdp_mode: turbo}\n"))
	if verr == nil {
		t.Fatal("bad config parsed")
	}
	h.reloadErr = verr
	code, out, errOut = limpet(t, "reload", "--socket", sock)
	if code != ExitUsage || out != "" || !strings.Contains(errOut, "the daemon refused the config; the running config is unchanged:\nsettings.xdp_mode: \"turbo\"") {
		t.Errorf("refused config: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	h.reloadErr = &admin.ConfigError{Err: errors.New("read /etc/limpet/limpet.yaml: no such file or directory")}
	if code, _, errOut = limpet(t, "reload", "--socket", sock); code != ExitUsage || !strings.Contains(errOut, "no such file") {
		t.Errorf("missing config: exit %d, stderr %q", code, errOut)
	}

	// A failure of the daemon itself is a runtime error.
	h.reloadErr = errors.New("update map vs_table: no space left on device")
	code, _, errOut = limpet(t, "reload", "--socket", sock)
	if code != ExitRuntime || errOut != "limpet: update map vs_table: no space left on device\n" {
		t.Errorf("daemon failure: exit %d, stderr %q", code, errOut)
	}
	if h.reloads != 4 {
		t.Errorf("%d reloads reached the daemon, want 4", h.reloads)
	}
}
