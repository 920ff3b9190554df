package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/test/testutil"
	"github.com/limpet-lb/limpet/userspace/notify"
	"github.com/limpet-lb/limpet/userspace/plan"
)

func member(t *testing.T, name string) netip.AddrPort {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "member=%s\n", name)
	}))
	t.Cleanup(srv.Close)
	return netip.MustParseAddrPort(strings.TrimPrefix(srv.URL, "http://"))
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func httpOnlyConfig(port int, m netip.AddrPort) string {
	return fmt.Sprintf(`
pools:
  - name: web
    members:
      - {name: only, address: %s, port: %d}
virtual_servers:
  - {name: web, type: http, address: 127.0.0.1, port: %d, pool: web, access_log: "off"}
`, m.Addr(), m.Port(), port)
}

func get(url string) (string, error) {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// An http-only config runs without BPF or interfaces, and SIGHUP (here the
// Reload channel) switches the proxy to the new config.
func TestRunServesHTTPVirtualServersAndReloads(t *testing.T) {
	a, b := member(t, "a"), member(t, "b")
	port := freePort(t)
	path := filepath.Join(t.TempDir(), "limpet.yaml")
	if err := os.WriteFile(path, []byte(httpOnlyConfig(port, a)), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	reload := make(chan struct{})
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{ConfigPath: path, Compile: plan.Load(path), Reload: reload, Ready: func() { close(ready) },
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("run: %v", err)
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	waitFor := func(want string) {
		t.Helper()
		var body string
		var err error
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if body, err = get(url); err == nil && strings.Contains(body, want) {
				return
			}
		}
		t.Fatalf("waiting for %q: body %q, error %v", want, body, err)
	}
	waitFor("member=a")

	if err := os.WriteFile(path, []byte(httpOnlyConfig(port, b)), 0o600); err != nil {
		t.Fatal(err)
	}
	reload <- struct{}{}
	waitFor("member=b")

	// A bad config is refused and the running one keeps serving.
	if err := os.WriteFile(path, []byte("pools: ["), 0o600); err != nil {
		t.Fatal(err)
	}
	reload <- struct{}{}
	waitFor("member=b")

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run returned %v after a clean shutdown", err)
	}
}

// recordingNotifier keeps what the daemon tells systemd.
type recordingNotifier struct {
	notify.Nop
	ready chan string
}

func (r *recordingNotifier) Ready(status string) { r.ready <- status }

// runInert starts the daemon on a config with no interface, pinned under a
// name of this process, and removes the pins when the test ends; the caller
// waits for READY on n and cancels.
func runInert(t *testing.T, name string) (pin string, n *recordingNotifier, done chan error, cancel context.CancelFunc) {
	testutil.RequireRoot(t)
	pin = fmt.Sprintf("/sys/fs/bpf/%s-%d", name, os.Getpid())
	t.Cleanup(func() {
		_ = loader.Detach(pin)
		_ = os.Remove("/run/limpet/" + loader.PinName(pin) + ".lock")
	})
	path := filepath.Join(t.TempDir(), "limpet.yaml")
	cfg := `
pools: [{name: web, members: [{name: a, address: 192.0.2.11, port: 80}]}]
virtual_servers: [{name: web, address: 192.0.2.10, port: 80, protocol: tcp, pool: web}]
`
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	n = &recordingNotifier{ready: make(chan string, 4)}
	ctx, cancel := context.WithCancel(context.Background())
	done = make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{ConfigPath: path, Compile: plan.Load(path), PinPath: pin, Notify: n, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	}()
	return pin, n, done, cancel
}

// With no interface configured (the packaged example config), the daemon
// starts inert: the datapath is loaded and nothing is attached, and its
// status says how to make it forward.
func TestRunWithoutInterfacesIsInert(t *testing.T) {
	pin, n, done, cancel := runInert(t, "limpet-daemontest")
	select {
	case st := <-n.ready:
		if !strings.Contains(st, "attached to no interface") || !strings.Contains(st, "set settings.interfaces") {
			t.Errorf("READY status %q does not say the daemon forwards nothing", st)
		}
	case err := <-done:
		t.Fatalf("run without interfaces: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no READY within 30s")
	}
	if _, err := os.Stat(filepath.Join(pin, "flows4")); err != nil {
		t.Errorf("the datapath is not loaded: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run returned %v after a clean shutdown", err)
	}
}

// The datapath's clock is a coarse monotonic clock plus a boot offset that
// the daemon keeps: after a resume from suspend (here an hour's, simulated
// by making the pinned offset an hour stale) the daemon puts it back within
// a second or so, or every entry would read as an hour younger than it is.
func TestRunKeepsTheDatapathClockOnTheBootClock(t *testing.T) {
	pin, n, done, cancel := runInert(t, "limpet-daemonclock")
	select {
	case <-n.ready:
	case err := <-done:
		t.Fatalf("run: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no READY within 30s")
	}
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run returned %v after a clean shutdown", err)
		}
	}()
	bootOffset := func() time.Duration {
		t.Helper()
		p, err := loader.OpenPinned(pin)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		off, err := p.BootOffset()
		if err != nil {
			t.Fatal(err)
		}
		return off
	}
	synced := bootOffset()
	if err := loader.SkewBootOffset(pin, -time.Hour); err != nil {
		t.Fatal(err)
	}
	if got := bootOffset(); (synced - time.Hour - got).Abs() > loader.ClockSyncStep {
		t.Fatalf("the skewed offset reads %v, want %v", got, synced-time.Hour)
	}
	deadline := time.Now().Add(3 * clockSyncInterval)
	for {
		got := bootOffset()
		if (got - synced).Abs() <= loader.ClockSyncStep {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the datapath's boot offset still reads %v (synced: %v) %v after it went stale: the daemon does not keep it", got, synced, 3*clockSyncInterval)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
