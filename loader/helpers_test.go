package loader

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/limpet-lb/limpet/test/testutil"
)

// requirePrivileges skips without root unless LIMPET_REQUIRE_ROOT=1.
func requirePrivileges(tb testing.TB) { testutil.RequireRoot(tb) }

// loadTemp loads a fresh datapath pinned in a per-test directory that is
// removed, with everything in it, when the test ends.
func loadTemp(tb testing.TB, opts Options) *Datapath {
	tb.Helper()
	requirePrivileges(tb)
	if err := ensureBPFFS(filepath.Join(bpffsSysDir, "x")); err != nil {
		tb.Fatal(err)
	}
	dir, err := os.MkdirTemp(bpffsSysDir, "limpet-test-")
	if err != nil {
		tb.Fatal(err)
	}
	os.Remove(dir)
	opts.PinPath = dir
	if opts.FlowTableSize == 0 {
		opts.FlowTableSize = 4096
	}
	d, err := Load(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := d.Detach(); err != nil {
			tb.Errorf("detach: %v", err)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			tb.Errorf("pin directory %s left behind", dir)
		}
	})
	return d
}
