package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// Strict reports whether the tests must run rather than skip: in CI
// (CI=true) or with LIMPET_REQUIRE_ROOT=1, as .ci/run sets.
func Strict() bool {
	return os.Getenv("CI") == "true" || os.Getenv("LIMPET_REQUIRE_ROOT") == "1"
}

// RequireRoot skips tb unless it runs as root, the Cilium way: by an
// environment variable rather than a build tag, so CI cannot skip it
// silently. With LIMPET_REQUIRE_ROOT=1 a missing privilege fails the test.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("LIMPET_REQUIRE_ROOT") == "1" {
		tb.Fatal("this test needs root, and LIMPET_REQUIRE_ROOT=1 forbids skipping it")
	}
	tb.Skip("needs root; run as root, or set LIMPET_REQUIRE_ROOT=1 to make this a failure")
}

// NeedTool returns the path of the first of names on PATH. Without any,
// the test is skipped, or fails where the tests must run (Strict): a
// missing tool must not hide a test. pkg is the Debian package to install.
func NeedTool(tb testing.TB, pkg string, names ...string) string {
	tb.Helper()
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	msg := fmt.Sprintf("%s is not installed (apt-get install -y %s)", names[0], pkg)
	if Strict() {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
	return ""
}
