package app

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/limpet-lb/limpet/test/testutil"
)

// decapPinned attaches the decapsulator with the CLI to the member link of a
// private fixture namespace, pinned under a per-test bpffs directory that
// the test's end detaches and checks is gone.
func decapPinned(t *testing.T) (pin, iface string) {
	t.Helper()
	w := testutil.NewWorld(t)
	// Unique, so that parallel runs (other worktrees) never share it.
	pin, err := os.MkdirTemp("/sys/fs/bpf", "limpet-decap-test-")
	if err != nil {
		t.Fatal(err)
	}
	iface = w.Member.Name
	var code int
	var out, errOut string
	if err := w.Do(func() error {
		code, out, errOut = limpet(t, "member-decap", "--decap-pin-path", pin, "--iface", iface, "--gue-port", "7000",
			"--only-to", "192.0.2.20,2001:db8::20", "--only-to", "192.0.2.21")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.RemoveAll(pin)
	})
	if code != ExitOK || !strings.Contains(out, "GUE (UDP port 7000) to 192.0.2.20, 192.0.2.21, 2001:db8::20 on "+iface) {
		t.Fatalf("attach: exit %d\n%s%s", code, out, errOut)
	}
	return pin, iface
}

func TestMemberDecapCLI(t *testing.T) {
	pin, iface := decapPinned(t)

	code, out, errOut := limpet(t, "member-decap", "--decap-pin-path", pin, "--status")
	if code != ExitOK || !strings.Contains(out, iface+": ifindex ") || !strings.Contains(out, "GUE port 7000") || !strings.Contains(out, "gue_6in6") {
		t.Fatalf("status: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = limpet(t, "member-decap", "--decap-pin-path", pin, "--status", "--iface", iface, "-o", "json")
	var v DecapStatusView
	if code != ExitOK || json.Unmarshal([]byte(out), &v) != nil || len(v.Interfaces) != 1 || v.Interfaces[0].GUEPort != 7000 ||
		v.Interfaces[0].ProgramID == 0 || len(v.Interfaces[0].Counters) != 19 ||
		strings.Join(v.Interfaces[0].OnlyTo, " ") != "192.0.2.20 192.0.2.21 2001:db8::20" {
		t.Fatalf("status -o json: exit %d\n%s", code, out)
	}

	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"member-decap"}, "--iface is required"},
		{[]string{"member-decap", "--iface", iface, "--gue-port", "0"}, "--gue-port 0: want a UDP port"},
		{[]string{"member-decap", "--iface", iface, "--gue-port", "65536"}, "--gue-port 65536"},
		{[]string{"member-decap", "--iface", iface, "--detach", "--status"}, "do not go together"},
		{[]string{"member-decap", "--iface", iface, "--detach", "--gue-port", "9"}, "mean nothing with --detach"},
		{[]string{"member-decap", "--iface", iface, "--only-to", "192.0.2.300"}, `--only-to "192.0.2.300": want an IPv4 or IPv6 address`},
		{[]string{"member-decap", "--iface", iface, "--only-to", "fe80::1%eth0"}, `--only-to "fe80::1%eth0"`},
		{[]string{"member-decap", "--iface", "no/such", "--status"}, `interface name "no/such"`},
		{[]string{"member-decap", "--iface", "lmpnone0", "--detach"}, "no decapsulator is attached on lmpnone0"},
		{[]string{"member-decap", "stray"}, "takes no arguments"},
		{[]string{"member-decap", "--iface", "lmpnone0"}, "no such interface: lmpnone0"},
	} {
		code, _, errOut := limpet(t, append(bad.args[:1:1], append([]string{"--decap-pin-path", pin}, bad.args[1:]...)...)...)
		if code != ExitUsage || !strings.Contains(errOut, bad.want) {
			t.Errorf("limpet %v: exit %d, %q; want exit %d and %q", bad.args, code, errOut, ExitUsage, bad.want)
		}
	}

	code, out, errOut = limpet(t, "member-decap", "--decap-pin-path", pin, "--iface", iface, "--detach")
	if code != ExitOK || !strings.Contains(out, "detached from "+iface) {
		t.Fatalf("detach: exit %d\n%s%s", code, out, errOut)
	}
	if _, err := os.Stat(pin); !os.IsNotExist(err) {
		t.Errorf("pin directory %s left after the last detach: %v", pin, err)
	}
	code, out, _ = limpet(t, "member-decap", "--decap-pin-path", pin, "--status")
	if code != ExitOK || !strings.Contains(out, "no decapsulator attached") {
		t.Errorf("status after detach: exit %d\n%s", code, out)
	}
}
