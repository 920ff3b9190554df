// Package service_test installs the Debian package that 'make deb' builds:
// with dpkg on this machine (install, the installed binary and unit, a kept
// config, removal that leaves only the config), and inside a container
// booted by a real systemd (systemd-nspawn over a copy-on-write view of this
// machine), where limpet.service starts, reloads, is restarted by its
// watchdog and is removed.
//
// Both need root and change the machine's package database (the host test)
// or run a container; each holds a machine-wide lock, so two test runs never
// install at once, and the host test purges the package even when it fails.
// Other tests use the repository's bin/limpet, never /usr/bin/limpet.
package service_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/limpet-lb/limpet/test/testutil"
)

// lockPath serialises every package test on the machine.
const lockPath = "/run/lock/limpet-package-test.lock"

// machineLock takes the package-test lock for the rest of t.
func machineLock(t *testing.T) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(lockPath), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Minute)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			t.Fatalf("lock %s: %v (another package test holds it)", lockPath, err)
		}
		time.Sleep(time.Second)
	}
	t.Cleanup(func() { f.Close() })
}

// debPath is $LIMPET_DEB (make test builds it), or one made now with
// 'make deb'.
func debPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("LIMPET_DEB"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("LIMPET_DEB: %v", err)
		}
		abs, err := filepath.EvalSymlinks(p)
		if err != nil {
			t.Fatal(err)
		}
		return abs
	}
	cmd := exec.Command("make", "deb")
	cmd.Dir = testutil.RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make deb: %v\n%s", err, out)
	}
	abs, err := filepath.EvalSymlinks(filepath.Join(testutil.RepoRoot(), "bin", "limpet.deb"))
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// run runs a command and returns its combined output; a failure fails t.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := runErr(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func runErr(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var b bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &b, &b
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0", "LC_ALL=C")
	err := cmd.Run()
	return b.String(), err
}

// dpkg runs dpkg, waiting out another dpkg or apt-get that holds the
// frontend lock (another test run installing packages).
func dpkg(t *testing.T, args ...string) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		out, err := runErr("dpkg", args...)
		if err == nil {
			return out
		}
		if strings.Contains(out, "lock") && time.Now().Before(deadline) {
			time.Sleep(2 * time.Second)
			continue
		}
		t.Fatalf("dpkg %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func TestMain(m *testing.M) {
	os.Exit(m.Run())
}
