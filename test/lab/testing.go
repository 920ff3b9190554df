package lab

import (
	"context"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// EnvRequireRoot, when "1", turns RequireRoot's skip into a failure (CI sets it).
const EnvRequireRoot = "LIMPET_REQUIRE_ROOT"

// EnvKeep, when set, makes NewForTest keep a failed test's lab for
// inspection (remove it later with Clean / `limpet lab clean`).
const EnvKeep = "LIMPET_LAB_KEEP"

// RequireRoot skips the test when not running as root, or fails it when
// LIMPET_REQUIRE_ROOT=1.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv(EnvRequireRoot) == "1" {
		t.Fatalf("this test needs root (network namespaces) and %s=1", EnvRequireRoot)
	}
	t.Skipf("this test needs root (network namespaces); skipping (set %s=1 to fail instead)", EnvRequireRoot)
}

// NewForTest builds a lab for a test (after RequireRoot) and registers a
// cleanup that closes it and fails the test if anything of it is left
// behind. When the test has failed, the cleanup logs the output of the
// processes the lab started; with LIMPET_LAB_KEEP set it also keeps the lab.
func NewForTest(t testing.TB, spec Spec) *Lab {
	t.Helper()
	RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := New(ctx, spec)
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range l.Processes() {
				t.Logf("lab %s: output of %s %s (pid %d) in %s:\n%s", l.Suffix(),
					p.Path, strings.Join(p.Args[1:], " "), p.Pid, p.Host, p.Output())
			}
			if os.Getenv(EnvKeep) != "" {
				t.Logf("lab %s kept (%s): namespaces %s*-%s; remove with lab.Clean / limpet lab clean",
					l.Suffix(), EnvKeep, NSPrefix, l.Suffix())
				return
			}
		}
		if err := l.Close(); err != nil {
			t.Errorf("lab %s: close: %v", l.Suffix(), err)
		}
		if left, err := LeftoversOf(l.Suffix()); err != nil || len(left) > 0 {
			t.Errorf("lab %s: left behind %v (%v)", l.Suffix(), left, err)
		}
	})
	return l
}

// HandleSignals closes l when the process gets SIGINT, SIGTERM or SIGHUP,
// then re-raises the signal with its default action, so that Ctrl-C in a
// demo never leaves a lab behind. It stops watching when ctx is done or stop
// is called (call stop before a normal Close).
//
// Typical demo use:
//
//	l, err := lab.New(ctx, spec)
//	if err != nil { ... }
//	stop := lab.HandleSignals(ctx, l)
//	defer func() { stop(); l.Close() }()
func HandleSignals(ctx context.Context, l *Lab) (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		select {
		case sig := <-ch:
			_ = l.Close()
			signal.Reset(sig)
			if s, ok := sig.(syscall.Signal); ok {
				_ = syscall.Kill(os.Getpid(), s)
			}
			time.Sleep(time.Second)
			os.Exit(1)
		case <-ctx.Done():
		case <-done:
		}
		signal.Stop(ch)
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done) }) }
}
