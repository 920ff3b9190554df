package service_test

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/limpet-lb/limpet/test/testutil"
)

// packagePaths lists what the .deb holds, as absolute paths.
func packagePaths(t *testing.T, deb string) []string {
	t.Helper()
	var out []string
	listing := run(t, "dpkg-deb", "-c", deb)
	for _, line := range strings.Split(strings.TrimSpace(listing), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		p := strings.TrimSuffix(strings.TrimPrefix(f[5], "."), "/")
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

// installed is dpkg's status of the limpet package; empty when dpkg does
// not know it.
func installed(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", "limpet").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

func mode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// dpkg -i on this machine: the binary, the unit (systemd-analyze verify
// and security), the man page, the completions, the dashboard and an
// inert example config that 'limpet config check' accepts; a reinstall
// keeps a changed config; dpkg -r leaves nothing but the config; purge
// (also on failure) restores the machine.
func TestDebInstallRemove(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.NeedTool(t, "dpkg", "dpkg")
	analyze := testutil.NeedTool(t, "systemd", "systemd-analyze")
	deb := debPath(t)
	machineLock(t)
	if st := installed(t); st != "" && !strings.HasSuffix(st, "not-installed") {
		t.Fatalf("a limpet package is already on this machine (%q); this test installs and purges its own, so remove it first (dpkg --purge limpet)", st)
	}
	if _, err := os.Stat("/etc/limpet"); err == nil {
		t.Fatal("/etc/limpet exists without the package; this test would purge it: move it away first")
	}
	// dpkg -r detaches the datapath at the config's pin path (the default).
	if _, err := os.Stat("/sys/fs/bpf/limpet"); err == nil {
		t.Fatal("a limpet datapath is pinned at /sys/fs/bpf/limpet; removing the package would detach it: 'limpet detach' it first")
	}
	paths := packagePaths(t, deb)
	existed := map[string]bool{}
	for _, p := range paths {
		if _, err := os.Lstat(p); err == nil {
			existed[p] = true
		}
	}
	t.Cleanup(func() {
		if out, err := runErr("dpkg", "--purge", "limpet"); err != nil {
			t.Errorf("cleanup: dpkg --purge limpet: %v\n%s", err, out)
		}
		for _, p := range paths {
			if _, err := os.Lstat(p); err == nil && !existed[p] {
				t.Errorf("cleanup: %s is still there after the purge", p)
			}
		}
	})

	out := dpkg(t, "-i", deb)
	t.Logf("# dpkg -i %s\n%s", deb, out)
	if st := installed(t); st != "install ok installed" {
		t.Fatalf("after dpkg -i the package is %q", st)
	}
	for path, want := range map[string]fs.FileMode{
		"/usr/bin/limpet":                                      0o755,
		"/usr/lib/systemd/system/limpet.service":               0o644,
		"/usr/lib/systemd/system/limpet-bpffs.service":         0o644,
		"/usr/lib/systemd/system/limpet-member-decap@.service": 0o644,
		"/etc/limpet":                                     0o750,
		"/etc/limpet/limpet.yaml":                         0o640,
		"/usr/share/man/man8/limpet.8.gz":                 0o644,
		"/usr/share/bash-completion/completions/limpet":   0o644,
		"/usr/share/zsh/vendor-completions/_limpet":       0o644,
		"/usr/share/limpet/grafana/limpet-dashboard.json": 0o644,
	} {
		if got := mode(t, path); got != want {
			t.Errorf("%s has mode %o, want %o", path, got, want)
		}
	}
	v := run(t, "/usr/bin/limpet", "version")
	t.Logf("# limpet version\n%s", v)
	if !strings.HasPrefix(v, "limpet ") {
		t.Fatalf("limpet version: %q", v)
	}
	chk := run(t, "/usr/bin/limpet", "config", "check", "/etc/limpet/limpet.yaml")
	t.Logf("# limpet config check /etc/limpet/limpet.yaml\n%s", chk)
	if !strings.Contains(chk, ": ok (") {
		t.Fatalf("config check: %q", chk)
	}
	if out := run(t, "man", "-w", "limpet"); !strings.Contains(out, "/usr/share/man/man8/limpet.8.gz") {
		t.Errorf("man -w limpet: %q", out)
	}
	if out := run(t, "man", "-P", "cat", "limpet"); !strings.Contains(out, "limpet(8)") || !strings.Contains(out, "/etc/limpet/limpet.yaml") {
		t.Errorf("man limpet does not render the page:\n%.400s", out)
	}
	// The installed unit, with its binary now in place.
	if out, err := runErr(analyze, "verify", "/usr/lib/systemd/system/limpet.service", "/usr/lib/systemd/system/limpet-bpffs.service",
		"/usr/lib/systemd/system/limpet-member-decap@.service"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify limpet.service: %v\n%s", err, out)
	}
	sec := run(t, analyze, "security", "--offline=yes", "/usr/lib/systemd/system/limpet.service")
	m := regexp.MustCompile(`Overall exposure level for limpet.service: ([0-9.]+)`).FindStringSubmatch(sec)
	if m == nil {
		t.Fatalf("systemd-analyze security gave no exposure level:\n%s", sec)
	}
	if level, _ := strconv.ParseFloat(m[1], 64); level > 3.0 {
		t.Errorf("systemd-analyze security: exposure %s, want at most 3.0 (the hardening regressed)\n%s", m[1], sec)
	}
	t.Logf("systemd-analyze security: exposure %s", m[1])
	sec = run(t, analyze, "security", "--offline=yes", "/usr/lib/systemd/system/limpet-member-decap@.service")
	m = regexp.MustCompile(`Overall exposure level for limpet-member-decap@\S*: ([0-9.]+)`).FindStringSubmatch(sec)
	if m == nil {
		t.Fatalf("systemd-analyze security gave no exposure level for limpet-member-decap@.service:\n%s", sec)
	}
	if level, _ := strconv.ParseFloat(m[1], 64); level > 3.0 {
		t.Errorf("systemd-analyze security limpet-member-decap@.service: exposure %s, want at most 3.0\n%s", m[1], sec)
	}

	// A changed config survives a reinstall (dpkg conffile; postinst
	// leaves it alone).
	mine := "# changed by the operator\n"
	cfg, err := os.ReadFile("/etc/limpet/limpet.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("/etc/limpet/limpet.yaml", append(cfg, mine...), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod("/etc/limpet", 0o755); err != nil {
		t.Fatal(err)
	}
	out = dpkg(t, "-i", deb)
	t.Logf("# dpkg -i %s (again, with a changed config)\n%s", deb, out)
	if got, _ := os.ReadFile("/etc/limpet/limpet.yaml"); !strings.HasSuffix(string(got), mine) {
		t.Fatalf("the reinstall overwrote the changed config")
	}
	if got := mode(t, "/etc/limpet"); got != 0o750 {
		t.Errorf("postinst left /etc/limpet %o, want 750", got)
	}

	out = dpkg(t, "-r", "limpet")
	t.Logf("# dpkg -r limpet\n%s", out)
	if st := installed(t); st != "deinstall ok config-files" {
		t.Fatalf("after dpkg -r the package is %q, want its config files only", st)
	}
	var left []string
	for _, p := range paths {
		if existed[p] || p == "/etc/limpet" || p == "/etc/limpet/limpet.yaml" {
			continue
		}
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			left = append(left, p)
		}
	}
	if len(left) > 0 {
		t.Fatalf("dpkg -r left %v behind", left)
	}
	if got, err := os.ReadFile("/etc/limpet/limpet.yaml"); err != nil || !strings.HasSuffix(string(got), mine) {
		t.Fatalf("dpkg -r did not keep the config: %v", err)
	}
	t.Logf("# after dpkg -r: %s", installed(t))
}
