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

const module = "github.com/limpet-lb/limpet/"

// deps lists the limpet packages pkg imports, directly or not.
func deps(t *testing.T, pkg string) []string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("this test runs `go list`, and go is not on PATH: %v", err)
	}
	out, err := exec.Command(gobin, "list", "-deps", module+pkg).CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
	}
	var own []string
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, module) && p != module+pkg {
			own = append(own, strings.TrimPrefix(p, module))
		}
	}
	return own
}

// The config is read by plan alone: it is a leaf, and the daemon, the
// proxy, the health monitors and the mirror run on what plan compiles.
func TestConfigIsReadByPlanAlone(t *testing.T) {
	if own := deps(t, "userspace/config"); len(own) > 0 {
		t.Errorf("userspace/config imports limpet packages: %s", strings.Join(own, ", "))
	}
	for _, pkg := range []string{"l7", "userspace/daemon", "userspace/health", "userspace/mirror", "userspace/admin", "userspace/desired"} {
		for _, p := range deps(t, pkg) {
			if p == "userspace/config" {
				t.Errorf("%s imports userspace/config", pkg)
			}
		}
	}
}
