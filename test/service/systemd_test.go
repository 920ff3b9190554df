package service_test

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/test/testutil"
)

// container is this machine booted under systemd-nspawn: its /usr, /etc
// and /var are overlays whose changes vanish with it, its network is
// private (loopback only), and its systemd is a real PID 1 that the test
// drives with nsenter.
type container struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	out    *testutil.Buffer
	leader int // the container's systemd, as the host sees it
	exited chan struct{}
}

// bootContainer boots one. nspawn runs in a private mount namespace, with a
// tmpfs of its own where it keeps its propagation directories (it refuses
// to clean them up on a /run that is not tmpfs, as on this machine), and a
// bpffs for the container that the host never sees.
func bootContainer(t *testing.T, debDir string) *container {
	t.Helper()
	nspawn := testutil.NeedTool(t, "systemd-container", "systemd-nspawn")
	testutil.NeedTool(t, "util-linux", "nsenter")
	root := t.TempDir()
	for _, d := range []string{"usr", "etc", "var", "proc", "sys", "dev", "run", "tmp", "root", "ci"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range []string{"bin", "sbin", "lib", "lib64"} {
		if err := os.Symlink("usr/"+l, filepath.Join(root, l)); err != nil {
			t.Fatal(err)
		}
	}
	// nspawn checks for an OS tree before it mounts the overlays over it.
	osr, err := os.ReadFile("/etc/os-release")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc", "os-release"), osr, 0o644); err != nil {
		t.Fatal(err)
	}
	var sfx [3]byte
	_, _ = rand.Read(sfx[:])
	name := "limpet-ci-" + hex.EncodeToString(sfx[:])
	bpffs := filepath.Join(t.TempDir(), "bpffs")
	if err := os.Mkdir(bpffs, 0o700); err != nil {
		t.Fatal(err)
	}
	args := []string{
		"--quiet", "--register=no", "--keep-unit", "--link-journal=no", "--console=passive",
		"--machine=" + name, "--directory=" + root,
		"--overlay=/usr::/usr", "--overlay=/etc::/etc", "--overlay=/var::/var",
		"--bind-ro=" + debDir + ":/ci",
		"--private-network",
		// systemd mounts no bpffs in a container: a bpffs of the
		// container's own (made below, so the host's pins stay apart),
		// as systemd mounts it on a host.
		"--bind=" + bpffs + ":/sys/fs/bpf",
		// The unit's own bounding set is narrower; these are the ones
		// nspawn does not grant by default.
		"--capability=CAP_BPF,CAP_PERFMON,CAP_NET_ADMIN",
		"--system-call-filter=bpf",
		"--boot", "--",
		// basic.target, not the host's multi-user services.
		"systemd.unit=basic.target",
	}
	script := `mkdir -p /run/systemd/nspawn && mount -t tmpfs -o mode=0755 tmpfs /run/systemd/nspawn &&
mount -t bpf -o mode=0700 bpffs "$BPFFS" && exec "$0" "$@"`
	c := &container{t: t, name: name, out: &testutil.Buffer{}, exited: make(chan struct{})}
	c.cmd = exec.Command("sh", append([]string{"-c", script, nspawn}, args...)...)
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	c.cmd.Env = append(os.Environ(), "BPFFS="+bpffs)
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start systemd-nspawn: %v", err)
	}
	go func() { c.cmd.Wait(); close(c.exited) }()
	t.Cleanup(c.stop)

	// The leader is nspawn's child.
	deadline := time.Now().Add(30 * time.Second)
	for c.leader == 0 {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", c.cmd.Process.Pid, c.cmd.Process.Pid))
		for _, f := range strings.Fields(string(b)) {
			pid, _ := strconv.Atoi(f)
			if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) == "systemd" {
				c.leader = pid
			}
		}
		select {
		case <-c.exited:
			t.Fatalf("systemd-nspawn exited: %v\n%s", c.cmd.ProcessState, c.out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no systemd in the container after 30s:\n%s", c.out.String())
		}
	}
	// Booted: basic.target reached, and no job left.
	for {
		out, _ := c.runErr("systemctl", "is-active", "basic.target")
		jobs, _ := c.runErr("systemctl", "list-jobs", "--no-legend")
		if strings.TrimSpace(out) == "active" && strings.TrimSpace(jobs) == "" {
			break
		}
		if time.Now().After(deadline.Add(30 * time.Second)) {
			t.Fatalf("the container did not finish booting: basic.target %q, jobs:\n%s\n%s", out, jobs, c.out.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	return c
}

// stop powers the container off (SIGTERM asks nspawn for an orderly
// shutdown), and kills it if that takes too long.
func (c *container) stop() {
	select {
	case <-c.exited:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(30 * time.Second):
		c.t.Errorf("the container %s did not shut down in 30s; killing it", c.name)
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
	if c.t.Failed() {
		c.t.Logf("systemd-nspawn output:\n%s", c.out.String())
	}
}

// runErr runs a command inside the container.
func (c *container) runErr(name string, args ...string) (string, error) {
	ns := []string{"--target", strconv.Itoa(c.leader), "--mount", "--uts", "--ipc", "--net", "--pid", "--cgroup", "--", name}
	return runErr("nsenter", append(ns, args...)...)
}

// run runs a command inside the container; a failure fails the test.
func (c *container) run(name string, args ...string) string {
	c.t.Helper()
	out, err := c.runErr(name, args...)
	if err != nil {
		c.t.Fatalf("in the container: %s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// path is a path inside the container as the host sees it.
func (c *container) path(p string) string {
	return fmt.Sprintf("/proc/%d/root%s", c.leader, p)
}

func (c *container) writeFile(p, body string) {
	c.t.Helper()
	if err := os.MkdirAll(filepath.Dir(c.path(p)), 0o755); err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(c.path(p), []byte(body), 0o640); err != nil {
		c.t.Fatal(err)
	}
}

// show returns systemctl show's properties of a unit.
func (c *container) show(unit string, props ...string) map[string]string {
	c.t.Helper()
	out := c.run("systemctl", "show", unit, "--property="+strings.Join(props, ","))
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m
}

// xdpProg is the id of the XDP program on an interface in the container, 0
// for none.
func (c *container) xdpProg(ifname string) int {
	c.t.Helper()
	var links []struct {
		Xdp *struct {
			Prog struct {
				ID int `json:"id"`
			} `json:"prog"`
		} `json:"xdp"`
	}
	if err := json.Unmarshal([]byte(c.run("ip", "-j", "-d", "link", "show", ifname)), &links); err != nil {
		c.t.Fatal(err)
	}
	if len(links) == 0 || links[0].Xdp == nil {
		return 0
	}
	return links[0].Xdp.Prog.ID
}

const (
	ciIface  = "lmpci0"
	ciVIP    = "198.18.200.10"
	ciMember = "198.18.200.2"
)

// ciConfig is the operator's config: one interface, an ICMP monitor (so
// CAP_NET_RAW is exercised) and the status page.
func ciConfig(extraVS string) string {
	return fmt.Sprintf(`settings:
  interfaces: [%s]
  metrics_listen: 127.0.0.1:9469
  gc_interval: 0.5
health_monitors:
  - {name: ping, type: icmp, interval: 0.5, rise: 1, fall: 2}
persistence_profiles:
  - {name: sticky, timeout: 300}
pools:
  - name: web
    health_monitor: ping
    members:
      - {name: m1, address: %s, port: 8080}
virtual_servers:
  - {name: web, address: %s, port: 80, protocol: tcp, pool: web, persistence: sticky}
%s`, ciIface, ciMember, ciVIP, extraVS)
}

// limpet.service under a real systemd: the package installs it, 'systemctl
// enable --now' waits for READY=1 (so the datapath forwards when it
// returns), the daemon runs with only the unit's capabilities, reloads
// synchronously (and a refused config fails the reload, not the service),
// a wedged daemon is killed by the watchdog and restarted, and the new one
// adopts the pinned datapath without the XDP program ever leaving the NIC;
// stop leaves it pinned; 'dpkg -r' detaches it and leaves only the config.
func TestServiceUnderSystemd(t *testing.T) {
	testutil.RequireRoot(t)
	deb := debPath(t)
	machineLock(t)
	c := bootContainer(t, filepath.Dir(deb))
	t.Logf("container %s booted (systemd pid %d on the host)", c.name, c.leader)
	debIn := "/ci/" + filepath.Base(deb)

	c.run("ip", "link", "add", ciIface, "type", "veth", "peer", "name", "lmpci1")
	c.run("ip", "addr", "add", "198.18.200.1/24", "dev", ciIface)
	c.run("ip", "addr", "add", ciMember+"/24", "dev", "lmpci1")
	c.run("ip", "link", "set", ciIface, "up")
	c.run("ip", "link", "set", "lmpci1", "up")

	out := c.run("dpkg", "-i", debIn)
	t.Logf("# (in the container) dpkg -i %s\n%s", debIn, out)
	if p := c.show("limpet.service", "LoadState", "UnitFileState"); p["LoadState"] != "loaded" || p["UnitFileState"] != "disabled" {
		t.Fatalf("after dpkg -i: limpet.service %v, want loaded and disabled (postinst reloads systemd, enables nothing)", p)
	}
	if out, err := c.runErr("systemd-analyze", "verify", "limpet.service", "limpet-bpffs.service"); err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("systemd-analyze verify limpet.service: %v\n%s", err, out)
	}

	c.writeFile("/etc/limpet/limpet.yaml", ciConfig(""))
	// A short watchdog, for the test below.
	c.writeFile("/etc/systemd/system/limpet.service.d/ci.conf", "[Service]\nWatchdogSec=3\n")
	c.run("systemctl", "daemon-reload")
	start := time.Now()
	if out, err := c.runErr("systemctl", "enable", "--now", "limpet"); err != nil {
		journal, _ := c.runErr("journalctl", "-u", "limpet", "--no-pager", "-n", "50")
		t.Fatalf("systemctl enable --now limpet: %v\n%s\n%s", err, out, journal)
	}
	t.Logf("systemctl enable --now limpet returned after %.0f ms", time.Since(start).Seconds()*1000)
	p := c.show("limpet.service", "ActiveState", "SubState", "StatusText", "MainPID", "Type", "WatchdogUSec")
	t.Logf("limpet.service: %v", p)
	if p["ActiveState"] != "active" || p["SubState"] != "running" {
		t.Fatalf("limpet.service is %s/%s", p["ActiveState"], p["SubState"])
	}
	if want := "forwarding 1 l4 virtual server on " + ciIface + " (native)"; !strings.HasPrefix(p["StatusText"], want) {
		t.Fatalf("status text %q, want %q", p["StatusText"], want)
	}
	if fs := strings.TrimSpace(c.run("stat", "-f", "-c", "%T", "/sys/fs/bpf")); fs != "bpf_fs" {
		t.Fatalf("/sys/fs/bpf is %s: limpet-bpffs.service did not mount bpffs", fs)
	}
	firstProg := c.xdpProg(ciIface)
	if firstProg == 0 {
		t.Fatal("READY=1 came, but no XDP program is attached")
	}
	if fwd := strings.TrimSpace(c.run("cat", "/proc/sys/net/ipv4/conf/"+ciIface+"/forwarding")); fwd != "1" {
		t.Errorf("forwarding on %s is %s: ReadWritePaths= did not open the sysctl", ciIface, fwd)
	}
	// Only the unit's capabilities.
	pid := p["MainPID"]
	status := c.run("cat", "/proc/"+pid+"/status")
	want := uint64(1<<39 | 1<<38 | 1<<12 | 1<<13 | 1<<10) // BPF, PERFMON, NET_ADMIN, NET_RAW, NET_BIND_SERVICE
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			eff, _ := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if eff != want {
				t.Errorf("the daemon's effective capabilities are %#x, want %#x (bpf, perfmon, net_admin, net_raw, net_bind_service)", eff, want)
			}
		}
		if v, ok := strings.CutPrefix(line, "NoNewPrivs:"); ok && strings.TrimSpace(v) != "1" {
			t.Errorf("NoNewPrivs is %s", strings.TrimSpace(v))
		}
	}
	// The ICMP monitor (CAP_NET_RAW) finds the member up; the admin API
	// and the status page answer.
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := c.run("limpet", "status", "-o", "json")
		if strings.Contains(st, `"health": "up"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the ICMP monitor never found the member up:\n%s", st)
		}
		time.Sleep(200 * time.Millisecond)
	}
	page := c.run("curl", "-sS", "--fail", "http://127.0.0.1:9469/")
	if !strings.Contains(page, "<title>limpet") {
		t.Errorf("status page:\n%.300s", page)
	}

	// Reload: synchronous, applied; a refused config fails the reload
	// and keeps the service (and the old config) running.
	c.writeFile("/etc/limpet/limpet.yaml", ciConfig("  - {name: dns, address: "+ciVIP+", port: 53, protocol: udp, pool: web}\n"))
	c.run("systemctl", "reload", "limpet")
	if st := c.run("limpet", "status"); !strings.Contains(st, "dns ") {
		t.Fatalf("after systemctl reload, status does not show the new virtual server:\n%s", st)
	}
	c.writeFile("/etc/limpet/limpet.yaml", ciConfig("  - {name: dns, address: "+ciVIP+", port: 53, protocol: udp, pool: nope}\n"))
	if out, err := c.runErr("systemctl", "reload", "limpet"); err == nil {
		t.Fatalf("systemctl reload of a bad config succeeded:\n%s", out)
	}
	p = c.show("limpet.service", "ActiveState", "StatusText", "MainPID")
	if p["ActiveState"] != "active" || !strings.Contains(p["StatusText"], "last reload refused") || p["MainPID"] != pid {
		t.Fatalf("after a refused reload: %v", p)
	}
	c.writeFile("/etc/limpet/limpet.yaml", ciConfig(""))
	c.run("systemctl", "reload", "limpet")

	// The watchdog: a stopped daemon stops feeding it; systemd kills it
	// and starts a new one, which adopts the pinned datapath. The XDP
	// program never leaves the NIC meanwhile.
	c.run("kill", "-STOP", pid)
	deadline = time.Now().Add(30 * time.Second)
	for {
		if c.xdpProg(ciIface) == 0 {
			t.Fatal("the XDP program left the NIC while the daemon was wedged or restarting")
		}
		p = c.show("limpet.service", "ActiveState", "SubState", "MainPID", "NRestarts")
		if p["NRestarts"] == "1" && p["ActiveState"] == "active" && p["MainPID"] != pid && p["MainPID"] != "0" {
			break
		}
		if time.Now().After(deadline) {
			journal, _ := c.runErr("journalctl", "-u", "limpet", "--no-pager", "-n", "30")
			t.Fatalf("no watchdog restart within 30s: %v\n%s", p, journal)
		}
		time.Sleep(100 * time.Millisecond)
	}
	journal := c.run("journalctl", "-u", "limpet", "--no-pager")
	if !strings.Contains(journal, "Watchdog timeout") || !strings.Contains(journal, "adopted pinned datapath") {
		t.Fatalf("the journal does not show a watchdog timeout and an adoption:\n%s", journal)
	}
	t.Logf("watchdog: pid %s killed, pid %s adopted the datapath", pid, p["MainPID"])

	// Stop: the datapath stays pinned and attached.
	c.run("systemctl", "stop", "limpet")
	if _, err := os.Stat(c.path("/sys/fs/bpf/limpet/flows4")); err != nil {
		t.Fatalf("after stop the datapath is not pinned: %v", err)
	}
	if c.xdpProg(ciIface) == 0 {
		t.Fatal("after stop the XDP program left the NIC")
	}

	// The member-side decapsulator's unit: attached with the options of
	// /etc/default/limpet-member-decap, still attached after its command
	// exited, detached by stop; and by the package's removal below.
	decapUnit := "limpet-member-decap@lmpci1.service"
	c.writeFile("/etc/default/limpet-member-decap", "LIMPET_DECAP_ARGS=\"--gue-port 7000\"\n")
	if out, err := c.runErr("systemctl", "start", decapUnit); err != nil {
		journal, _ := c.runErr("journalctl", "-u", decapUnit, "--no-pager", "-n", "50")
		t.Fatalf("systemctl start %s: %v\n%s\n%s", decapUnit, err, out, journal)
	}
	if st := c.run("limpet", "member-decap", "--status"); !strings.Contains(st, "lmpci1: ifindex") || !strings.Contains(st, "GUE port 7000") {
		t.Fatalf("after systemctl start %s, member-decap --status says:\n%s", decapUnit, st)
	}
	c.run("systemctl", "stop", decapUnit)
	if st := c.run("limpet", "member-decap", "--status"); !strings.Contains(st, "no decapsulator attached") {
		t.Fatalf("after systemctl stop %s, member-decap --status says:\n%s", decapUnit, st)
	}
	c.run("systemctl", "start", decapUnit)

	// Removal detaches it and leaves only the config.
	out = c.run("dpkg", "-r", "limpet")
	t.Logf("# (in the container) dpkg -r limpet\n%s", out)
	if c.xdpProg(ciIface) != 0 {
		t.Error("after dpkg -r an XDP program is still attached")
	}
	if _, err := os.Stat(c.path("/sys/fs/bpf/limpet")); !os.IsNotExist(err) {
		t.Errorf("after dpkg -r the pins remain (stat: %v)", err)
	}
	if _, err := os.Stat(c.path("/sys/fs/bpf/limpet-decap")); !os.IsNotExist(err) {
		t.Errorf("after dpkg -r the decapsulator's pins remain (stat: %v)", err)
	}
	for _, unit := range []string{"limpet.service", "limpet-bpffs.service"} {
		if p := c.show(unit, "LoadState", "ActiveState"); p["LoadState"] != "not-found" || p["ActiveState"] != "inactive" {
			t.Errorf("after dpkg -r %s is %v", unit, p)
		}
	}
	for _, gone := range []string{"/usr/bin/limpet", "/usr/lib/systemd/system/limpet.service",
		"/etc/systemd/system/multi-user.target.wants/limpet.service", "/run/limpet/admin.sock"} {
		if _, err := os.Lstat(c.path(gone)); !os.IsNotExist(err) {
			t.Errorf("after dpkg -r %s remains (stat: %v)", gone, err)
		}
	}
	if _, err := os.Stat(c.path("/etc/limpet/limpet.yaml")); err != nil {
		t.Errorf("dpkg -r removed the config: %v", err)
	}
}
