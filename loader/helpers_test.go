package loader

import (
	"os"
	"path/filepath"
	"testing"
)

// requirePrivileges skips a test that needs root, unless LIMPET_REQUIRE_ROOT=1
// (as in CI), where a missing privilege must fail instead of hiding.
func requirePrivileges(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("LIMPET_REQUIRE_ROOT") == "1" {
		tb.Fatal("this test needs root and LIMPET_REQUIRE_ROOT=1 is set")
	}
	tb.Skip("needs root to load BPF; run as root or set LIMPET_REQUIRE_ROOT=1 to make this a failure")
}

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
