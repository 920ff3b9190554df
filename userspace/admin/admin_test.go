package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/test/testutil"
	"github.com/limpet-lb/limpet/userspace/config"
	"github.com/limpet-lb/limpet/userspace/plan"
)

// fakeHandler records what the API asked of it.
type fakeHandler struct {
	mu        sync.Mutex
	status    Status
	reloadErr error
	memberErr error
	calls     []string
}

func (f *fakeHandler) record(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, s)
}

func (f *fakeHandler) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeHandler) Status() Status {
	f.record("status")
	return f.status
}

func (f *fakeHandler) Reload() (Summary, error) {
	f.record("reload")
	if f.reloadErr != nil {
		return Summary{}, f.reloadErr
	}
	return Summary{ConfigPath: "/etc/limpet.yaml", AppliedAt: time.Unix(1700000000, 0).UTC(), L4VirtualServers: 2, Pools: 1, Members: 3, Profiles: 2,
		Warnings: []string{"something to know"}}, nil
}

func (f *fakeHandler) SetMember(pool, member string, enabled bool) error {
	f.record(fmt.Sprintf("member %s %s %v", pool, member, enabled))
	return f.memberErr
}

func sampleStatus() Status {
	return Status{
		Version: "v1.2.3", PID: 4242, StartedAt: time.Now().Add(-time.Hour), ConfigPath: "/etc/limpet.yaml",
		AppliedAt:  time.Unix(1700000000, 0).UTC(),
		Interfaces: []Interface{{Name: "eth0", XDPMode: "native"}, {Name: "eth1", XDPMode: "generic"}},
		VirtualServers: []VirtualServer{
			{Name: "web", Type: "l4", Address: "203.0.113.10", Port: 80, Protocol: "tcp", Forwarding: "nat", Pool: "web", Profile: "sticky"},
		},
		Pools: []Pool{{Name: "web", Algorithm: "round_robin", Members: []Member{
			{Name: "m1", Address: "10.1.0.11", Port: 8080, Weight: 1, State: "enabled", Health: HealthUp, ActiveConnections: 5},
			{Name: "m2", Address: "10.1.0.12", Port: 8080, Weight: 1, State: "enabled", AdminDown: true, Health: HealthUp},
			{Name: "m3", Address: "10.1.0.13", Port: 8080, Weight: 1, State: "enabled", Health: HealthDown, HealthDetail: "connection refused"},
		}}},
		Tables: []Table{{ID: 0, Profile: "sticky", VirtualServer: "web", Entries: 43, MaxEntries: 65536, PurgeWhenFull: true, Timeout: 300}},
	}
}

// serveRoutes serves the API's routes (without the root check, so that it
// runs unprivileged) on a unix socket and returns the socket's path.
func serveRoutes(t *testing.T, h Handler) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "admin.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: NewHandler(h, slog.New(slog.NewTextHandler(io.Discard, nil)))}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return path
}

func dial(t *testing.T, path string) *Client {
	t.Helper()
	c, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestStatus(t *testing.T) {
	h := &fakeHandler{status: sampleStatus()}
	c := dial(t, serveRoutes(t, h))
	st, err := c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.UptimeSeconds < 3599 || st.UptimeSeconds > 3700 {
		t.Errorf("uptime %v, want about an hour", st.UptimeSeconds)
	}
	want := sampleStatus()
	if st.Version != want.Version || st.PID != 4242 || st.ConfigPath != want.ConfigPath || !st.AppliedAt.Equal(want.AppliedAt) {
		t.Errorf("status header %+v", st)
	}
	if len(st.Interfaces) != 2 || st.Interfaces[1] != (Interface{Name: "eth1", XDPMode: "generic"}) {
		t.Errorf("interfaces %+v", st.Interfaces)
	}
	if len(st.Pools) != 1 || len(st.Pools[0].Members) != 3 {
		t.Fatalf("pools %+v", st.Pools)
	}
	m := st.Pools[0].Members
	if m[2].Health != HealthDown || m[2].HealthDetail != "connection refused" || !m[1].AdminDown || m[0].ActiveConnections != 5 {
		t.Errorf("members %+v", m)
	}
	if !m[0].InService() || m[1].InService() || m[2].InService() {
		t.Errorf("in service: %v %v %v, want true false false", m[0].InService(), m[1].InService(), m[2].InService())
	}
	if len(st.Tables) != 1 || st.Tables[0] != want.Tables[0] {
		t.Errorf("tables %+v", st.Tables)
	}
}

func TestReload(t *testing.T) {
	h := &fakeHandler{}
	c := dial(t, serveRoutes(t, h))
	sum, err := c.Reload(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if sum.L4VirtualServers != 2 || sum.Members != 3 || len(sum.Warnings) != 1 {
		t.Errorf("summary %+v", sum)
	}

	// A refused config: 400, and the client returns a *ConfigError whose
	// text names the field.
	_, verr := config.Parse([]byte("pools: []\nvirtual_servers: []\nsettings: {xdp_mode: turbo}\n"))
	if verr == nil {
		t.Fatal("the bad config parsed")
	}
	for _, reloadErr := range []error{verr, &ConfigError{Err: errors.New("line 3: mapping values are not allowed")}} {
		h.reloadErr = fmt.Errorf("reload: %w", reloadErr)
		_, err = c.Reload(context.Background())
		var ce *ConfigError
		if !errors.As(err, &ce) {
			t.Fatalf("error %T %v, want *ConfigError", err, err)
		}
		if !strings.Contains(err.Error(), reloadErr.Error()) {
			t.Errorf("error %q does not carry %q", err, reloadErr)
		}
	}
	if !strings.Contains(verr.Error(), "settings.xdp_mode") {
		t.Errorf("config error %q does not name the field", verr)
	}

	// Anything else is the daemon's failure: 500, not a config error.
	h.reloadErr = errors.New("map update: no space left")
	_, err = c.Reload(context.Background())
	var ae *APIError
	var ce *ConfigError
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusInternalServerError || errors.As(err, &ce) || err.Error() != "map update: no space left" {
		t.Errorf("error %T %v", err, err)
	}
}

func TestSetMember(t *testing.T) {
	h := &fakeHandler{}
	c := dial(t, serveRoutes(t, h))
	ctx := context.Background()
	if err := c.SetMember(ctx, "web", "m1", false); err != nil {
		t.Fatal(err)
	}
	if err := c.SetMember(ctx, "web", "[2001:db8::1]:8080", true); err != nil {
		t.Fatal(err)
	}
	if err := c.SetMember(ctx, "web pool", "10.1.0.11", true); err != nil {
		t.Fatal(err)
	}
	want := []string{"member web m1 false", "member web [2001:db8::1]:8080 true", "member web pool 10.1.0.11 true"}
	if got := h.Calls(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("calls %q, want %q", got, want)
	}

	h.memberErr = fmt.Errorf("pool %q has no member %q: %w", "web", "m9", ErrNotFound)
	err := c.SetMember(ctx, "web", "m9", false)
	if !errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `pool "web" has no member "m9"`) {
		t.Errorf("unknown member: %v", err)
	}
	h.memberErr = fmt.Errorf("%q matches 2 members of pool %q; give address:port: %w", "10.1.0.11", "web", ErrInvalid)
	err = c.SetMember(ctx, "web", "10.1.0.11", false)
	var ae *APIError
	if !errors.Is(err, ErrInvalid) || !errors.As(err, &ae) || ae.StatusCode != http.StatusBadRequest {
		t.Errorf("ambiguous member: %v", err)
	}
	if err := c.SetMember(ctx, "", "m1", true); !errors.Is(err, ErrInvalid) {
		t.Errorf("empty pool: %v", err)
	}
}

// The raw HTTP answers: methods, unknown actions, JSON errors.
func TestHTTP(t *testing.T) {
	h := &fakeHandler{status: sampleStatus()}
	path := serveRoutes(t, h)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}}
	defer hc.CloseIdleConnections()
	for _, tc := range []struct {
		method, path string
		code         int
		body         string
	}{
		{"GET", "/v1/status", 200, `"version": "v1.2.3"`},
		{"POST", "/v1/status", 405, ""},
		{"GET", "/v1/reload", 405, ""},
		{"POST", "/v1/reload", 200, `"l4_virtual_servers": 2`},
		{"POST", "/v1/members/web/m1/disable", 200, `"enabled": false`},
		{"POST", "/v1/members/web/m1/enable", 200, `"enabled": true`},
		{"POST", "/v1/members/web/m1/drain", 404, `"kind": "not_found"`},
		{"GET", "/v1/nothing", 404, ""},
	} {
		req, _ := http.NewRequest(tc.method, "http://limpet"+tc.path, nil)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || !strings.Contains(string(b), tc.body) {
			t.Errorf("%s %s: %d %s, want %d with %q", tc.method, tc.path, resp.StatusCode, b, tc.code, tc.body)
		}
		if tc.body != "" && resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s: content type %q", tc.method, tc.path, resp.Header.Get("Content-Type"))
		}
	}
}

func TestNoDaemon(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "admin.sock")
	_, err := Dial(missing)
	var nd *NoDaemonError
	if !errors.As(err, &nd) || err.Error() != "no limpet daemon is listening on "+missing {
		t.Errorf("missing socket: %T %v", err, err)
	}
	// A socket a crashed daemon left behind: connection refused.
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := Dial(stale); !errors.As(err, &nd) {
		t.Errorf("stale socket: %T %v", err, err)
	}
	if _, err := Dial(""); err != nil && !strings.Contains(err.Error(), DefaultSocket) {
		t.Errorf("default socket: %v", err)
	}
	// The daemon goes away between Dial and a request.
	h := &fakeHandler{}
	path := filepath.Join(dir, "live.sock")
	ln2, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: NewHandler(h, nil)}
	go srv.Serve(ln2)
	c := dial(t, path)
	if _, err := c.Status(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	c.Close()
	if _, err := c.Status(context.Background()); !errors.As(err, &nd) {
		t.Errorf("daemon gone: %T %v", err, err)
	}
}

func TestSocketPath(t *testing.T) {
	if SocketPath("") != DefaultSocket || SocketPath("/tmp/x.sock") != "/tmp/x.sock" {
		t.Error("SocketPath")
	}
}

func TestSummarize(t *testing.T) {
	cfg, err := config.Parse([]byte(`
persistence_profiles:
  - {name: sticky}
pools:
  - name: web
    members:
      - {name: m1, address: 10.1.0.11, port: 8080}
      - {name: m2, address: 10.1.0.12, port: 8080}
virtual_servers:
  - {name: web, address: 203.0.113.10, port: 80, protocol: tcp, pool: web, persistence: sticky}
  - {name: dns, address: 203.0.113.10, port: 53, protocol: udp, pool: web}
`))
	if err != nil {
		t.Fatal(err)
	}
	at := time.Unix(5, 0)
	s := Summarize(plan.Counts(cfg), cfg.Warnings(), "/etc/limpet.yaml", at)
	if s.L4VirtualServers != 2 || s.HTTPVirtualServers != 0 || s.Pools != 1 || s.Members != 2 || s.Profiles != 1 || s.ConfigPath != "/etc/limpet.yaml" || !s.AppliedAt.Equal(at) {
		t.Errorf("summary %+v", s)
	}
}

// serve runs the real server (root check included) on a socket in a
// directory others may enter, and returns the socket's path.
func serve(t *testing.T, h Handler) (string, func()) {
	t.Helper()
	dir, err := os.MkdirTemp("", "limpet-admin-test-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "run", "admin.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- (&Server{Handler: h, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}).Serve(ctx, ln)
	}()
	stop := func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}
	t.Cleanup(func() {
		if ctx.Err() == nil {
			stop()
		}
		os.RemoveAll(dir)
	})
	return path, stop
}

func TestListenSocket(t *testing.T) {
	testutil.RequireRoot(t)
	h := &fakeHandler{status: sampleStatus()}
	path, stop := serve(t, h)
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 || st.Uid != 0 || st.Gid != 0 {
		t.Errorf("socket %s: mode %v, owner %d:%d; want a socket, 0600, root", path, fi.Mode(), st.Uid, st.Gid)
	}
	if di, err := os.Stat(filepath.Dir(path)); err != nil || di.Mode().Perm() != 0o755 {
		t.Errorf("created directory: %v %v", di.Mode(), err)
	}
	// No temporary directory is left next to it.
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("directory holds %d entries, want only the socket", len(ents))
	}
	// Root is served.
	c := dial(t, path)
	if s, err := c.Status(context.Background()); err != nil || s.Version != "v1.2.3" {
		t.Errorf("status as root: %+v %v", s, err)
	}
	// A second daemon does not take over a live socket.
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "another limpet daemon is listening on "+path) {
		t.Errorf("second Listen: %v", err)
	}
	stop()
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket left after stop: %v", err)
	}
	if _, err := Dial(path); err == nil {
		t.Error("Dial after stop succeeded")
	}

	// A stale socket is replaced; a file that is not a socket is not.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	ln, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	// The listener names the socket where it is, not the private name it
	// was bound under (the daemon logs and records this address).
	if got := ln.Addr().String(); got != path {
		t.Errorf("listener address %q, want %q", got, path)
	}
	ln.Close()
	if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Errorf("Listen over a file: %v", err)
	}
}

const (
	helperEnv       = "LIMPET_ADMIN_TEST_HELPER"
	helperSocketEnv = "LIMPET_ADMIN_TEST_SOCKET"
)

// TestHelperPeer is not a test: TestNonRootRefused runs it, as nobody, in
// a child process that tries the API and prints what happened.
func TestHelperPeer(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		t.Skip("helper process for TestNonRootRefused")
	}
	path := os.Getenv(helperSocketEnv)
	c, err := Dial(path)
	if err != nil {
		fmt.Printf("DIAL %v\n", err)
		os.Exit(0)
	}
	_, err = c.Status(context.Background())
	fmt.Printf("STATUS forbidden=%v %v\n", errors.Is(err, ErrForbidden), err)
	_, err = c.Reload(context.Background())
	fmt.Printf("RELOAD forbidden=%v %v\n", errors.Is(err, ErrForbidden), err)
	err = c.SetMember(context.Background(), "web", "m1", false)
	fmt.Printf("MEMBER forbidden=%v %v\n", errors.Is(err, ErrForbidden), err)
	os.Exit(0)
}

// runAsNobody runs TestHelperPeer as nobody against the socket at path.
func runAsNobody(t *testing.T, path string) string {
	t.Helper()
	uid, gid := uint32(65534), uint32(65534)
	if u, err := user.Lookup("nobody"); err == nil {
		if n, err := strconv.Atoi(u.Uid); err == nil {
			uid = uint32(n)
		}
		if n, err := strconv.Atoi(u.Gid); err == nil {
			gid = uint32(n)
		}
	}
	// The test binary lives in a directory only root may enter: copy it
	// where nobody can run it.
	dir, err := os.MkdirTemp("", "limpet-admin-helper-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "admin.test")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestHelperPeer$", "-test.count=1")
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", helperEnv + "=1", helperSocketEnv + "=" + path}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper as uid %d: %v\n%s", uid, err, out)
	}
	return string(out)
}

// A peer that is not root is refused: by the socket's mode, and, should it
// get through (here the socket is opened up on purpose), by SO_PEERCRED.
func TestNonRootRefused(t *testing.T) {
	testutil.RequireRoot(t)
	h := &fakeHandler{status: sampleStatus()}
	path, _ := serve(t, h)

	out := runAsNobody(t, path)
	if !strings.Contains(out, "DIAL cannot use the limpet admin socket "+path+": permission denied") {
		t.Errorf("nobody on the 0600 socket:\n%s", out)
	}

	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	out = runAsNobody(t, path)
	for _, want := range []string{"STATUS forbidden=true", "RELOAD forbidden=true", "MEMBER forbidden=true", "the limpet admin API is for root only; refused uid "} {
		if !strings.Contains(out, want) {
			t.Errorf("nobody on an open socket: no %q in\n%s", want, out)
		}
	}
	if calls := h.Calls(); len(calls) != 0 {
		t.Errorf("the handler served a peer that is not root: %q", calls)
	}
	// Root still is.
	if _, err := dial(t, path).Status(context.Background()); err != nil {
		t.Errorf("root refused: %v", err)
	}
}

// settings.admin_socket is validated with the rest of the config.
func TestAdminSocketSetting(t *testing.T) {
	base := "pools: [{name: p, members: [{name: m, address: 10.0.0.1}]}]\nvirtual_servers: [{name: v, address: 10.0.0.10, port: 80, protocol: tcp, pool: p}]\n"
	for _, tc := range []struct {
		value string
		ok    bool
	}{
		{"", true}, {"/run/limpet/admin.sock", true}, {"/tmp/limpet-test/a.sock", true},
		{"run/admin.sock", false}, {"/" + strings.Repeat("x", 107), false},
	} {
		cfg, err := config.Parse([]byte(base + fmt.Sprintf("settings: {admin_socket: %q}\n", tc.value)))
		if tc.ok {
			if err != nil {
				t.Errorf("%q: %v", tc.value, err)
			} else if got := SocketPath(cfg.Settings.AdminSocket); got != SocketPath(tc.value) || (tc.value == "" && got != DefaultSocket) {
				t.Errorf("%q: socket %q", tc.value, got)
			}
			continue
		}
		var fe *config.FieldError
		if !errors.As(err, &fe) || fe.Field != "settings.admin_socket" {
			t.Errorf("%q: error %v, want one naming settings.admin_socket", tc.value, err)
		}
	}
}
