package e2e_test

import (
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/userspace/lab"
)

// notifySocket is a fake systemd notify socket: it records every datagram
// the daemon sends, as systemd would read them.
type notifySocket struct {
	path string
	msgs chan notifyMsg
}

type notifyMsg struct {
	at     time.Time
	fields map[string]string
}

func (m notifyMsg) has(kv string) bool {
	k, v, _ := strings.Cut(kv, "=")
	got, ok := m.fields[k]
	return ok && got == v
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	dir, err := os.MkdirTemp("", "limpet-notify-") // short: sun_path has 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	s := &notifySocket{path: path, msgs: make(chan notifyMsg, 4096)}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			m := notifyMsg{at: time.Now(), fields: map[string]string{}}
			for _, line := range strings.Split(string(buf[:n]), "\n") {
				if k, v, ok := strings.Cut(line, "="); ok {
					m.fields[k] = v
				}
			}
			s.msgs <- m
		}
	}()
	t.Cleanup(func() { c.Close() })
	return s
}

// next returns the next message that is not a watchdog ping.
func (s *notifySocket) next(t *testing.T, what string) notifyMsg {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case m := <-s.msgs:
			if len(m.fields) == 1 && m.has("WATCHDOG=1") {
				continue
			}
			return m
		case <-deadline:
			t.Fatalf("no notification (%s) within 20s", what)
		}
	}
}

// The sd_notify protocol of a Type=notify unit, against a fake
// NOTIFY_SOCKET: READY=1 only once traffic flows, watchdog pings at half of
// WATCHDOG_USEC, RELOADING=1 then READY=1 around every reload (admin API,
// SIGHUP, or a refused config, which the status line reports), and
// STOPPING=1 on SIGTERM.
func TestSystemdNotifyProtocol(t *testing.T) {
	t.Parallel()
	l := newLab(t, lab.Spec{MemberCount: 2, ClientAddrs4: 2})
	ctx := testCtx(t, 90*time.Second)
	cfg := writeWebConfig(t, l, 0.2)
	good, _ := os.ReadFile(cfg)
	sock := newNotifySocket(t)

	cmd := exec.Command(limpetBin(t), "run", "-c", cfg)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock.path, "WATCHDOG_USEC=200000")
	started := time.Now()
	p, err := l.StartCommand(lab.HostBalancer, cmd)
	if err != nil {
		t.Fatal(err)
	}
	suite.Lock()
	suite.procs = append(suite.procs, p)
	suite.Unlock()
	t.Cleanup(func() { _ = p.Stop(5 * time.Second) })

	ready := sock.next(t, "READY=1")
	if !ready.has("READY=1") {
		t.Fatalf("first notification %v, want READY=1", ready.fields)
	}
	if st := ready.fields["STATUS"]; !strings.Contains(st, "forwarding 1 l4 virtual server on ") {
		t.Fatalf("READY=1 status %q does not say what is forwarded", st)
	}
	t.Logf("READY=1 %.0f ms after start: %s", ready.at.Sub(started).Seconds()*1000, ready.fields["STATUS"])
	// READY=1 means it forwards: the first request succeeds, no retry.
	dst := netip.AddrPortFrom(l.VIP4(), 80)
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	if _, err := l.Get(rctx, l.ClientAddrs4()[0], lab.URL(dst, "/")); err != nil {
		t.Fatalf("request right after READY=1: %v", err)
	}
	cancel()
	if out := limpetCLI(t, ctx, l, "status"); !strings.Contains(string(out), "interfaces: ") {
		t.Fatalf("status right after READY=1:\n%s", out)
	}

	// Watchdog: WATCHDOG_USEC=200ms, so a ping every 100 ms.
	pings := 0
	window := time.After(time.Second)
count:
	for {
		select {
		case m := <-sock.msgs:
			if m.has("WATCHDOG=1") {
				pings++
			}
		case <-window:
			break count
		}
	}
	if pings < 7 || pings > 13 {
		t.Fatalf("%d watchdog pings in 1s with WATCHDOG_USEC=200000, want about 10", pings)
	}

	reloadSeen := func(how string) notifyMsg {
		t.Helper()
		m := sock.next(t, how+": RELOADING=1")
		if !m.has("RELOADING=1") || m.fields["MONOTONIC_USEC"] == "" {
			t.Fatalf("%s: got %v, want RELOADING=1 with MONOTONIC_USEC", how, m.fields)
		}
		m = sock.next(t, how+": READY=1")
		if !m.has("READY=1") {
			t.Fatalf("%s: got %v after RELOADING=1, want READY=1", how, m.fields)
		}
		return m
	}
	limpetCLI(t, ctx, l, "reload")
	if st := reloadSeen("limpet reload").fields["STATUS"]; strings.Contains(st, "refused") {
		t.Fatalf("status after a good reload: %q", st)
	}
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	reloadSeen("SIGHUP")

	// A refused config: the daemon is still ready (the old config runs),
	// and says why in its status.
	if err := os.WriteFile(cfg, []byte(strings.Replace(string(good), "timeout: 300", "timeout: -1", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.CommandContext(ctx, limpetBin(t), "--pin-path", l.PinDir(), "reload").CombinedOutput(); err == nil {
		t.Fatalf("reload of a bad config succeeded:\n%s", out)
	}
	if st := reloadSeen("refused reload").fields["STATUS"]; !strings.Contains(st, "last reload refused") || !strings.Contains(st, "timeout") {
		t.Fatalf("status after a refused reload: %q", st)
	}

	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	m := sock.next(t, "STOPPING=1")
	if !m.has("STOPPING=1") {
		t.Fatalf("on SIGTERM: %v, want STOPPING=1", m.fields)
	}
	if err := p.Wait(ctx); err != nil {
		t.Fatalf("limpet run after SIGTERM: %v\n%s", err, p.Output())
	}
}
