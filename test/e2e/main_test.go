// Package e2e_test runs the real limpet binary in network-namespace labs
// (userspace/lab) and checks what clients, members and `limpet persistence dump`
// see: source-IP persistence over real TCP and UDP in NAT and DSR modes, for
// IPv4 and IPv6, and a daemon crash that must not lose traffic or state.
//
// The tests need root; without it they skip, unless LIMPET_REQUIRE_ROOT=1.
// The binary is built once per run, or taken from $LIMPET_BIN (make test).
package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/test/labtest"
	"github.com/limpet-lb/limpet/test/testutil"
	"github.com/limpet-lb/limpet/userspace/lab"
)

// suite records what this run created, for the final leftover check.
var suite struct {
	sync.Mutex
	suffixes []string
	pinDirs  []string
	procs    []*lab.Process

	binOnce sync.Once
	bin     string
	binErr  error
	tmpDir  string
}

func TestMain(m *testing.M) {
	code := m.Run()
	if err := checkSuiteLeftovers(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		code = 1
	}
	if suite.tmpDir != "" {
		_ = os.RemoveAll(suite.tmpDir)
	}
	os.Exit(code)
}

// checkSuiteLeftovers runs after every test (and so every lab cleanup): each
// lab this run created must have left no namespace, link, pin, run directory
// or process behind. Only this run's suffixes are checked, so stale labs of
// other runs on the machine do not count.
func checkSuiteLeftovers() error {
	suite.Lock()
	defer suite.Unlock()
	errs := []error{lab.CheckLeftovers(suite.suffixes...)}
	for _, sfx := range suite.suffixes {
		// The namespaces of the run by name, whatever LeftoversOf thinks.
		if ns, _ := filepath.Glob(filepath.Join(lab.NetnsDir, lab.NSPrefix+"*-"+sfx)); len(ns) > 0 {
			errs = append(errs, fmt.Errorf("lab %s left namespaces %v", sfx, ns))
		}
	}
	for _, dir := range suite.pinDirs {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("pin directory %s still exists (stat: %v)", dir, err))
		}
	}
	for _, p := range suite.procs {
		if p.Running() {
			errs = append(errs, fmt.Errorf("process %d (%s %s) still runs", p.Pid, p.Path, strings.Join(p.Args[1:], " ")))
		}
	}
	err := errors.Join(errs...)
	if len(suite.suffixes) > 0 && err == nil {
		fmt.Fprintf(os.Stderr, "e2e: %d labs, %d processes: nothing left behind\n", len(suite.suffixes), len(suite.procs))
	}
	return err
}

// limpetBin returns the limpet binary: $LIMPET_BIN, or one built once for
// the whole run.
func limpetBin(t *testing.T) string {
	t.Helper()
	suite.binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "limpet-e2e-")
		if err != nil {
			suite.binErr = err
			return
		}
		suite.tmpDir = dir
		suite.bin, suite.binErr = testutil.LimpetBinary(dir)
	})
	if suite.binErr != nil {
		t.Fatal(suite.binErr)
	}
	return suite.bin
}

// newLab builds a lab for t (root only) and records it for the final check.
func newLab(t *testing.T, spec lab.Spec) *lab.Lab {
	t.Helper()
	testutil.RequireRoot(t)
	l := labtest.New(t, spec)
	suite.Lock()
	suite.suffixes = append(suite.suffixes, l.Suffix())
	suite.pinDirs = append(suite.pinDirs, l.PinDir())
	suite.Unlock()
	return l
}

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// --- configuration ---------------------------------------------------------

// vsConf is one L4 virtual server of a generated config. Its pool holds
// every lab member, at the address of the VIP's family.
type vsConf struct {
	Name        string
	VIP         netip.Addr
	Port        uint16
	Protocol    string // tcp or udp
	Forwarding  string // nat or dsr
	Persistence string // profile name
	// Members, when set, are the pool's member addresses instead of the
	// lab members' (named a1, a2, ...).
	Members []netip.Addr
	// MembersV4 and MembersV6 take the lab members' addresses of that
	// family whatever the VIP's (ipip and gue tunnel across families).
	MembersV4, MembersV6 bool
}

type profileConf struct {
	Name    string
	Timeout int
}

// writeConfig writes a limpet config for l to its run directory and returns
// its path. Each virtual server gets its own pool (named after it), so round
// robin state is per virtual server. settings are more "key: value" lines of
// the settings section.
func writeConfig(t *testing.T, l *lab.Lab, gcInterval float64, profiles []profileConf, vss []vsConf, settings ...string) string {
	t.Helper()
	var b strings.Builder
	var ifs []string
	for _, i := range l.BalancerIfaces() {
		ifs = append(ifs, i.Name)
	}
	fmt.Fprintf(&b, "settings:\n  interfaces: [%s]\n  pin_path: %s\n  gc_interval: %g\n",
		strings.Join(ifs, ", "), l.PinDir(), gcInterval)
	for _, s := range settings {
		b.WriteString("  " + s + "\n")
	}
	b.WriteString("persistence_profiles:\n")
	for _, p := range profiles {
		fmt.Fprintf(&b, "  - {name: %s, type: source_ip, timeout: %d}\n", p.Name, p.Timeout)
	}
	b.WriteString("pools:\n")
	for _, vs := range vss {
		fmt.Fprintf(&b, "  - name: %s\n    members:\n", vs.Name)
		for i, a := range vs.Members {
			fmt.Fprintf(&b, "      - {name: a%d, address: %q}\n", i+1, a)
		}
		for _, m := range l.Members() {
			if len(vs.Members) > 0 {
				break
			}
			a := m.Addr4
			if (vs.VIP.Is6() && !vs.MembersV4) || vs.MembersV6 {
				a = m.Addr6
			}
			fmt.Fprintf(&b, "      - {name: %s, address: %q}\n", m.Name, a)
		}
	}
	b.WriteString("virtual_servers:\n")
	for _, vs := range vss {
		fmt.Fprintf(&b, "  - {name: %s, address: %q, port: %d, protocol: %s, pool: %s, persistence: %s, forwarding: %s}\n",
			vs.Name, vs.VIP, vs.Port, vs.Protocol, vs.Name, vs.Persistence, vs.Forwarding)
	}
	path := filepath.Join(l.RunDir(), "limpet.yaml")
	writeCheckedConfig(t, path, b.String(), 0o644)
	return path
}

// writeCheckedConfig writes a test's config to path and checks it with
// `limpet config check`: it must be valid, since a typo in it would show
// up as baffling traffic failures later.
func writeCheckedConfig(t *testing.T, path, body string, perm os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), perm); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(limpetBin(t), "config", "check", path).CombinedOutput(); err != nil {
		t.Fatalf("limpet config check: %v\n%s\nconfig:\n%s", err, out, body)
	}
}

// webVS is the virtual server most tests serve: HTTP on the lab's IPv4
// VIP, port 80, NAT, persistence profile "sticky".
func webVS(l *lab.Lab) vsConf {
	return vsConf{Name: "web", VIP: l.VIP4(), Port: 80, Protocol: "tcp", Forwarding: "nat", Persistence: "sticky"}
}

// writeWebConfig writes a config of webVS alone, with a 300s "sticky"
// profile, and returns its path.
func writeWebConfig(t *testing.T, l *lab.Lab, gcInterval float64) string {
	t.Helper()
	return writeConfig(t, l, gcInterval, []profileConf{{"sticky", 300}}, []vsConf{webVS(l)})
}

// addSettings adds lines ("key: value") to the settings of the config at path.
func addSettings(t *testing.T, path string, lines ...string) {
	t.Helper()
	body, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var add strings.Builder
	for _, l := range lines {
		add.WriteString("  " + l + "\n")
	}
	body = []byte(strings.Replace(string(body), "settings:\n", "settings:\n"+add.String(), 1))
	if err := os.WriteFile(path, body, 0o644); err != nil {
		t.Fatal(err)
	}
}

// --- the daemon --------------------------------------------------------------

// startLimpet starts `limpet run -c cfg` in the balancer and waits until it
// has attached to every balancer interface.
func startLimpet(t *testing.T, l *lab.Lab, cfg string) *lab.Process {
	t.Helper()
	p, err := l.StartProcess(lab.HostBalancer, limpetBin(t), "run", "-c", cfg)
	if err != nil {
		t.Fatalf("start limpet run: %v", err)
	}
	suite.Lock()
	suite.procs = append(suite.procs, p)
	suite.Unlock()
	want := len(l.BalancerIfaces())
	waitLog(t, p, "attached to every interface", func(out string) bool {
		return countLines(out, "msg=attached ") >= want
	})
	return p
}

func countLines(out, substr string) int {
	n := 0
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, substr) {
			n++
		}
	}
	return n
}

// waitLog polls p's output until ok says yes; it fails at once if p exits.
func waitLog(t *testing.T, p *lab.Process, what string, ok func(string) bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		out := p.Output()
		if ok(out) {
			return
		}
		if !p.Running() {
			t.Fatalf("limpet run exited before %s: %v\n%s", what, p.Wait(context.Background()), p.Output())
		}
		if time.Now().After(deadline) {
			t.Fatalf("limpet run: no sign of %s after 20s:\n%s", what, out)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// serveWeb starts limpet on writeWebConfig (gc every second) and waits until
// webVS answers the first client; it returns the daemon and webVS's address.
func serveWeb(t *testing.T, ctx context.Context, l *lab.Lab) (*lab.Process, netip.AddrPort) {
	t.Helper()
	p := startLimpet(t, l, writeWebConfig(t, l, 1))
	dst := netip.AddrPortFrom(l.VIP4(), 80)
	if _, err := l.WaitGet(ctx, l.ClientAddrs4()[0], lab.URL(dst, "/")); err != nil {
		t.Fatal(err)
	}
	return p, dst
}

// --- the CLI -----------------------------------------------------------------

// entry is one row of `limpet persistence dump -o json`.
type entry struct {
	VirtualServer string   `json:"virtual_server"`
	Profile       string   `json:"profile"`
	Table         uint32   `json:"table"`
	Client        string   `json:"client"`
	Server        string   `json:"server"`
	Member        string   `json:"member"`
	Connections   uint32   `json:"connections"`
	AgeSeconds    float64  `json:"age_seconds"`
	ExpiresIn     *float64 `json:"expires_in_seconds"`
	State         string   `json:"state"`
}

func (e entry) String() string {
	exp := "none"
	if e.ExpiresIn != nil {
		exp = fmt.Sprintf("%.2fs", *e.ExpiresIn)
	}
	return fmt.Sprintf("{vs=%s client=%s server=%s member=%s connections=%d age=%.2fs expires_in=%s state=%q}",
		e.VirtualServer, e.Client, e.Server, e.Member, e.Connections, e.AgeSeconds, exp, e.State)
}

// serverAddr is the address part of Server ("IP" or "IP:port").
func (e entry) serverAddr() (netip.Addr, error) {
	if ap, err := netip.ParseAddrPort(e.Server); err == nil {
		return ap.Addr(), nil
	}
	return netip.ParseAddr(e.Server)
}

type dumpResult struct {
	Count   int     `json:"count"`
	Entries []entry `json:"entries"`
}

// limpetCLI runs a limpet CLI command against l's pins (no daemon needed:
// the commands read the bpffs pins, which live in the shared mount
// namespace) and returns its stdout.
func limpetCLI(t *testing.T, ctx context.Context, l *lab.Lab, args ...string) []byte {
	t.Helper()
	cmd := exec.CommandContext(ctx, limpetBin(t), append([]string{"--pin-path", l.PinDir()}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("limpet %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.Bytes()
}

// dump returns the entries of virtual server vs ("" for all), keyed by client.
func dump(t *testing.T, ctx context.Context, l *lab.Lab, vs string) map[string]entry {
	t.Helper()
	args := []string{"persistence", "dump", "-o", "json"}
	if vs != "" {
		args = append(args, "--vs", vs)
	}
	out := limpetCLI(t, ctx, l, args...)
	var d dumpResult
	if err := json.Unmarshal(out, &d); err != nil {
		t.Fatalf("persistence dump -o json: %v\n%s", err, out)
	}
	if d.Count != len(d.Entries) {
		t.Fatalf("persistence dump: count %d but %d entries", d.Count, len(d.Entries))
	}
	m := map[string]entry{}
	for _, e := range d.Entries {
		if _, dup := m[e.Client]; dup {
			t.Fatalf("persistence dump --vs %q: client %s listed twice:\n%s", vs, e.Client, out)
		}
		m[e.Client] = e
	}
	return m
}

// exceptionCounters returns the datapath's exception packet counters by
// reason, as `limpet stats -o json` reports them.
func exceptionCounters(t *testing.T, ctx context.Context, l *lab.Lab) map[string]uint64 {
	t.Helper()
	var s struct {
		Exceptions map[string]uint64 `json:"datapath_exception_packets_total"`
	}
	if err := json.Unmarshal(limpetCLI(t, ctx, l, "stats", "-o", "json"), &s); err != nil {
		t.Fatal(err)
	}
	return s.Exceptions
}

// --- traffic -----------------------------------------------------------------

// forEach runs fn for every address concurrently and returns the errors.
func forEach(addrs []netip.Addr, fn func(src netip.Addr) error) error {
	var wg sync.WaitGroup
	errs := make([]error, len(addrs))
	for i, a := range addrs {
		wg.Go(func() { errs[i] = fn(a) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// assignment maps a client address to the member that served it.
type assignment map[netip.Addr]string

type safeAssignment struct {
	sync.Mutex
	a assignment
}

func (s *safeAssignment) set(src netip.Addr, m string) {
	s.Lock()
	s.a[src] = m
	s.Unlock()
}

// getEach sends n GETs from every source (each a new TCP connection, from
// a fresh source port) and checks that each source always reaches the same
// member, that the member saw the real client address, and that it was
// reached at local (a function of the member: the VIP in DSR, the member's
// own address in NAT). It returns who served whom.
func getEach(ctx context.Context, l *lab.Lab, srcs []netip.Addr, dst netip.AddrPort, n int,
	local func(member string) netip.AddrPort) (assignment, error) {
	res := safeAssignment{a: assignment{}}
	err := forEach(srcs, func(src netip.Addr) error {
		first := ""
		for i := range n {
			r, err := l.Get(ctx, src, lab.URL(dst, "/"))
			if err != nil {
				return fmt.Errorf("client %s: GET %d: %w", src, i, err)
			}
			if r.Status != 200 {
				return fmt.Errorf("client %s: GET %d: status %d", src, i, r.Status)
			}
			if first == "" {
				first = r.Member
			} else if r.Member != first {
				return fmt.Errorf("client %s: GET %d reached %s, earlier GETs %s", src, i, r.Member, first)
			}
			if r.Peer.Addr() != src {
				return fmt.Errorf("client %s: member %s saw peer %s", src, r.Member, r.Peer)
			}
			if local != nil {
				if want := local(r.Member); r.Local != want {
					return fmt.Errorf("client %s: member %s was reached at %s, want %s", src, r.Member, r.Local, want)
				}
			}
		}
		res.set(src, first)
		return nil
	})
	return res.a, err
}

// checkSpread checks that the clients were spread over every member.
func checkSpread(t *testing.T, l *lab.Lab, a assignment) {
	t.Helper()
	per := map[string]int{}
	for _, m := range a {
		per[m]++
	}
	for _, m := range l.Members() {
		if per[m.Name] == 0 {
			t.Errorf("member %s got none of %d clients (spread %v)", m.Name, len(a), per)
		}
	}
	if len(per) != len(l.Members()) {
		t.Errorf("clients reached members %v, want exactly the %d lab members", per, len(l.Members()))
	}
}

// memberAddr is m's address in family of a.
func memberAddr(l *lab.Lab, name string, is6 bool) netip.Addr {
	m, ok := l.Member(name)
	if !ok {
		return netip.Addr{}
	}
	if is6 {
		return m.Addr6
	}
	return m.Addr4
}

// checkDump checks that entries hold exactly one entry per client of a, for
// virtual server vs, whose server is the address of the member that served
// the client.
func checkDump(t *testing.T, l *lab.Lab, vs string, entries map[string]entry, a assignment) {
	t.Helper()
	if len(entries) != len(a) {
		t.Errorf("persistence dump --vs %s: %d entries, want one per client (%d): %v", vs, len(entries), len(a), clientsOf(entries))
	}
	for src, member := range a {
		e, ok := entries[src.String()]
		if !ok {
			t.Errorf("persistence dump --vs %s: no entry for client %s", vs, src)
			continue
		}
		got, err := e.serverAddr()
		want := memberAddr(l, member, src.Is6())
		if err != nil || got != want {
			t.Errorf("client %s: entry server %q, but member %s (%s) answered", src, e.Server, member, want)
		}
		if e.Member != member {
			t.Errorf("client %s: entry member %q, but %s answered", src, e.Member, member)
		}
		if e.VirtualServer != vs {
			t.Errorf("client %s: entry virtual server %q, want %q", src, e.VirtualServer, vs)
		}
	}
}

func clientsOf(entries map[string]entry) []string {
	var out []string
	for c := range entries {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}
