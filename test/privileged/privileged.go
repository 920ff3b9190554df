// Package privileged gates tests that need root, the Cilium way: by an
// environment variable rather than a build tag, so CI cannot skip them
// silently.
package privileged

import (
	"os"
	"testing"
)

// Require skips tb unless it runs as root. With LIMPET_REQUIRE_ROOT=1 (as
// .ci/run sets) a missing privilege fails the test instead.
func Require(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("LIMPET_REQUIRE_ROOT") == "1" {
		tb.Fatal("this test needs root, and LIMPET_REQUIRE_ROOT=1 forbids skipping it")
	}
	tb.Skip("needs root; run as root, or set LIMPET_REQUIRE_ROOT=1 to make this a failure")
}
