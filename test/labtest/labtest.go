// Package labtest builds userspace/lab labs for tests: a root gate and a
// cleanup that fails the test when anything of the lab is left behind. It
// lives under test/ so that the limpet binary, which embeds the lab for
// `limpet demo`, never links package testing.
package labtest

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/test/testutil"
	"github.com/limpet-lb/limpet/userspace/lab"
)

// EnvKeep, when set, makes New keep a failed test's lab for inspection
// (remove it later with lab.Clean / `limpet lab clean`).
const EnvKeep = "LIMPET_LAB_KEEP"

// New builds a lab for a test (after the root gate) and registers a cleanup
// that closes it and fails the test if anything of it is left behind. When
// the test has failed, the cleanup logs the output of the processes the lab
// started; with LIMPET_LAB_KEEP set it also keeps the lab.
func New(t testing.TB, spec lab.Spec) *lab.Lab {
	t.Helper()
	testutil.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := lab.New(ctx, spec)
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
					l.Suffix(), EnvKeep, lab.NSPrefix, l.Suffix())
				return
			}
		}
		if err := l.Close(); err != nil {
			t.Errorf("lab %s: close: %v", l.Suffix(), err)
		}
		if left, err := lab.LeftoversOf(l.Suffix()); err != nil || len(left) > 0 {
			t.Errorf("lab %s: left behind %v (%v)", l.Suffix(), left, err)
		}
	})
	return l
}
