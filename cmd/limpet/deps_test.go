package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The production binary must not link test code: package testing registers
// test flags and pulls helpers in, and anything under test/ is for tests only.
func TestBinaryLinksNoTestCode(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("this test runs `go list`, and go is not on PATH: %v", err)
	}
	out, err := exec.Command(gobin, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	var bad []string
	for _, pkg := range strings.Fields(string(out)) {
		if pkg == "testing" || strings.HasPrefix(pkg, "testing/") ||
			strings.HasPrefix(pkg, "github.com/limpet-lb/limpet/test/") {
			bad = append(bad, pkg)
		}
	}
	if len(bad) > 0 {
		t.Fatalf("cmd/limpet links test-only packages: %s", strings.Join(bad, ", "))
	}
}
