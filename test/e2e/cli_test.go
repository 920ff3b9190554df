package e2e_test

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/userspace/lab"
)

// With settings.admin_socket set, the commands that need the daemon
// (status, reload, member) find it from --pin-path alone: the daemon
// records its socket in the pinned state. It logs the socket's real path.
func TestCLIFindsDaemonWithAdminSocketSetting(t *testing.T) {
	t.Parallel()
	l := newLab(t, lab.Spec{MemberCount: 2, ClientAddrs4: 1})
	ctx := testCtx(t, 60*time.Second)
	cfg := writeWebConfig(t, l, 1)
	sock := filepath.Join(l.RunDir(), "x", "admin.sock")
	addSettings(t, cfg, "admin_socket: "+sock)
	p := startLimpet(t, l, cfg)
	waitLog(t, p, "the admin API", func(out string) bool { return strings.Contains(out, `msg="admin API"`) })
	if want := `msg="admin API" socket=` + sock + "\n"; !strings.Contains(p.Output(), want) {
		t.Errorf("the daemon does not log its socket as %q:\n%s", want, p.Output())
	}

	// No --socket: the CLI reads the socket from the pins of --pin-path.
	var st struct {
		PID        int    `json:"pid"`
		ConfigPath string `json:"config_path"`
	}
	out := limpetCLI(t, ctx, l, "status", "-o", "json")
	if err := json.Unmarshal(out, &st); err != nil || st.PID != p.Pid || st.ConfigPath != cfg {
		t.Fatalf("limpet status -o json: pid %d, config %q (%v), want pid %d, config %q:\n%s", st.PID, st.ConfigPath, err, p.Pid, cfg, out)
	}
	if out := limpetCLI(t, ctx, l, "reload"); !strings.Contains(string(out), "reloaded "+cfg) {
		t.Errorf("limpet reload: %s", out)
	}
	if out := limpetCLI(t, ctx, l, "member", "disable", "web", "m1"); !strings.Contains(string(out), "through the running daemon") {
		t.Errorf("limpet member disable: %s", out)
	}
	if out := limpetCLI(t, ctx, l, "member", "enable", "web", "m1"); !strings.Contains(string(out), "through the running daemon") {
		t.Errorf("limpet member enable: %s", out)
	}
	// --socket still wins.
	if out := limpetCLI(t, ctx, l, "status", "--socket", sock); !strings.Contains(string(out), "config "+cfg) {
		t.Errorf("limpet status --socket: %s", out)
	}
}
