package lab_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/test/labtest"
	"github.com/limpet-lb/limpet/test/testutil"
	"github.com/limpet-lb/limpet/userspace/lab"
	"github.com/limpet-lb/limpet/userspace/veth"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if os.Getenv(helperEnv) == "" {
		if err := lab.CheckLeftovers(lab.CreatedRuns()...); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestSpecNormalize(t *testing.T) {
	var s lab.Spec
	if err := s.Normalize(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(s.Members, ","); got != "m1,m2" {
		t.Errorf("members %q", got)
	}
	if s.Balancers != 1 || s.ClientAddrs4 != 50 || s.ClientAddrs6 != 50 || len(s.VIPs) != 2 {
		t.Errorf("defaults: %+v", s)
	}
	for _, bad := range []lab.Spec{
		{Members: []string{"client"}},
		{Members: []string{"lb1"}},
		{Members: []string{"a", "a"}},
		{Members: []string{"Web"}},
		{MemberCount: lab.MaxMembers + 1},
		{Balancers: lab.MaxBalancers + 1},
		{ClientAddrs4: 70000},
		{Routed: true, Balancers: 2},
		{Routed: true, Cluster: true},
	} {
		if err := bad.Normalize(); err == nil {
			t.Errorf("spec %+v: no error", bad)
		}
	}
}

func TestAddressing(t *testing.T) {
	for _, c := range []struct{ got, want netip.Addr }{
		{lab.ClientAddr4(1), netip.MustParseAddr("198.19.0.1")},
		{lab.ClientAddr4(300), netip.MustParseAddr("198.19.1.44")},
		{lab.ClientAddr6(300), netip.MustParseAddr("fd00:1e:1::1:44")},
		{lab.ClientAddr4(lab.MaxClientAddrs4), netip.MustParseAddr("198.19.255.254")},
		{lab.V6(16, 2), netip.MustParseAddr("fd00:1e:0:16::2")},
	} {
		if c.got != c.want {
			t.Errorf("got %v want %v", c.got, c.want)
		}
	}
	if !lab.ClientPrefix4().Contains(lab.ClientAddr4(lab.MaxClientAddrs4)) || !lab.ClientPrefix6().Contains(lab.ClientAddr6(lab.MaxClientAddrs6)) {
		t.Error("client addresses outside the client prefixes")
	}
	if lab.SuffixOf("lmp-lb-3fa9c1") != "3fa9c1" || lab.SuffixOf("lmpb0m12-3fa9c1") != "3fa9c1" || lab.SuffixOf("lmp-x") != "" {
		t.Error("suffixOf")
	}
}

func TestParseReply(t *testing.T) {
	r, err := lab.ParseReply("member=m1 peer=[fd00:1e:1::5]:4242 local=198.18.100.10:80\n")
	if err != nil {
		t.Fatal(err)
	}
	if r.Member != "m1" || r.Peer != netip.MustParseAddrPort("[fd00:1e:1::5]:4242") || r.Local.Port() != 80 {
		t.Errorf("%+v", r)
	}
	if _, err := lab.ParseReply("<html>"); err == nil {
		t.Error("no error for garbage")
	}
}

// checkGet GETs http://dst/ from src and checks the member and the peer it saw.
func checkGet(t *testing.T, l *lab.Lab, src netip.Addr, dst netip.AddrPort, want string) {
	t.Helper()
	r, err := l.Get(testCtx(t), src, lab.URL(dst, "/"))
	if err != nil {
		t.Fatalf("GET %s from %s: %v", dst, src, err)
	}
	if r.Status != 200 || r.Member != want || r.Peer.Addr() != src || r.Local != dst {
		t.Fatalf("GET %s from %s: status %d reply %+v, want member %s peer %s", dst, src, r.Status, r.Reply, want, src)
	}
}

func checkUDP(t *testing.T, l *lab.Lab, src netip.Addr, dst netip.AddrPort, want string) {
	t.Helper()
	b, err := l.UDPQuery(testCtx(t), src, dst, []byte("hello"))
	if err != nil {
		t.Fatalf("UDP %s from %s: %v", dst, src, err)
	}
	r, err := lab.ParseReply(string(b))
	if err != nil {
		t.Fatal(err)
	}
	if r.Member != want || r.Peer.Addr() != src || r.Local != dst {
		t.Fatalf("UDP %s from %s: %+v", dst, src, r)
	}
}

func TestRouting(t *testing.T) {
	l := labtest.New(t, lab.Spec{MemberCount: 3, ClientAddrs4: 300, ClientAddrs6: 20})
	if n := len(l.ClientAddrs4()); n != 300 {
		t.Fatalf("%d v4 client addresses", n)
	}
	srcs := []netip.Addr{
		l.ClientAddrs4()[0], l.ClientAddrs4()[299], lab.ClientAddr4(lab.MaxClientAddrs4), l.ClientPrimary4(),
		l.ClientAddrs6()[0], l.ClientAddrs6()[19], lab.ClientAddr6(lab.MaxClientAddrs6), l.ClientPrimary6(),
	}
	for _, m := range l.Members() {
		for _, src := range srcs {
			dst := m.Addr4
			if src.Is6() {
				dst = m.Addr6
			}
			checkGet(t, l, src, netip.AddrPortFrom(dst, 80), m.Name)
			checkUDP(t, l, src, netip.AddrPortFrom(dst, 53), m.Name)
		}
	}

	// /hold keeps the connection open for the time asked.
	m1, _ := l.Member("m1")
	start := time.Now()
	r, err := l.Get(testCtx(t), srcs[0], lab.URL(netip.AddrPortFrom(m1.Addr4, 80), "/hold?ms=200"))
	if err != nil || r.Member != "m1" {
		t.Fatalf("hold: %+v %v", r, err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("hold returned after %v", d)
	}
	r, err = l.Get(testCtx(t), srcs[0], lab.URL(netip.AddrPortFrom(m1.Addr4, 80), "/status?code=503"))
	if err != nil || r.Status != 503 {
		t.Errorf("status: %+v %v", r, err)
	}
	r, err = l.Get(testCtx(t), srcs[4], lab.URL(netip.AddrPortFrom(m1.Addr6, 80), "/bytes?n=300000"))
	if err != nil || len(r.Body) < 300000 {
		t.Errorf("bytes: %d %v", len(r.Body), err)
	}

	// StopHTTP refuses new connections and cuts held ones; StartHTTP restores.
	m2, _ := l.Member("m2")
	m2url := lab.URL(netip.AddrPortFrom(m2.Addr4, 80), "/")
	held := make(chan error, 1)
	go func() {
		_, err := l.Get(testCtx(t), srcs[0], lab.URL(netip.AddrPortFrom(m2.Addr4, 80), "/hold?ms=10000"))
		held <- err
	}()
	time.Sleep(100 * time.Millisecond)
	if err := l.StopHTTP("m2"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-held:
		if err == nil {
			t.Error("held request to m2 succeeded after StopHTTP")
		}
	case <-time.After(5 * time.Second):
		t.Error("held request to m2 still open after StopHTTP")
	}
	if _, err := l.Get(testCtx(t), srcs[0], m2url); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("GET m2 after StopHTTP: %v, want connection refused", err)
	}
	checkGet(t, l, srcs[0], netip.AddrPortFrom(m1.Addr4, 80), "m1")
	if err := l.StartHTTP("m2"); err != nil {
		t.Fatal(err)
	}
	if r, err := l.WaitGet(testCtx(t), srcs[0], m2url); err != nil || r.Member != "m2" {
		t.Fatalf("WaitGet m2: %+v %v", r, err)
	}
	checkGet(t, l, srcs[0], netip.AddrPortFrom(m2.Addr4, 80), "m2")
	checkGet(t, l, srcs[4], netip.AddrPortFrom(m2.Addr6, 80), "m2")

	if err := l.StopUDP("m2"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.UDPQuery(testCtx(t), srcs[0], netip.AddrPortFrom(m2.Addr4, 53), []byte("x")); err == nil {
		t.Error("UDP to m2 answered after StopUDP")
	}
	if err := l.StartUDP("m2"); err != nil {
		t.Fatal(err)
	}
	checkUDP(t, l, srcs[0], netip.AddrPortFrom(m2.Addr4, 53), "m2")

	if err := l.StopHTTP("nope"); err == nil {
		t.Error("StopHTTP of an unknown member")
	}
	if err := l.Run("nope", func() error { return nil }); err == nil {
		t.Error("Run in an unknown host")
	}
}

func TestHostSetup(t *testing.T) {
	l := labtest.New(t, lab.Spec{MemberCount: 2, DSR: true, VIPsOnBalancer: true})
	ifs := l.BalancerIfaces()
	if len(ifs) != 3 || ifs[0].Peer != lab.HostClient || ifs[1].Peer != "m1" || ifs[2].Peer != "m2" {
		t.Fatalf("balancer ifaces %+v", ifs)
	}
	for _, i := range ifs {
		if !strings.HasSuffix(i.Name, "-"+l.Suffix()) || i.Index == 0 || len(i.MAC) != 6 || i.Host != lab.HostBalancer {
			t.Errorf("iface %+v", i)
		}
	}
	if st, err := os.Stat(l.PinDir()); err != nil || !st.IsDir() {
		t.Errorf("pin dir: %v", err)
	}
	// Sysctls and offloads, read from inside the namespaces.
	err := l.Run(lab.HostBalancer, func() error {
		for _, k := range []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"} {
			if v, err := lab.SysctlRead(k); err != nil || v != "1" {
				return fmt.Errorf("balancer %s=%q %v", k, v, err)
			}
		}
		for _, i := range ifs {
			if on, err := veth.Get(i.Name, veth.GRO); err != nil || !on {
				return fmt.Errorf("GRO on %s: %v %v", i.Name, on, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	for _, m := range l.Members() {
		err := l.Run(m.Name, func() error {
			if v, _ := lab.SysctlRead("net/ipv4/conf/all/arp_ignore"); v != "1" {
				return fmt.Errorf("arp_ignore=%q", v)
			}
			if on, err := veth.Get(m.Iface.Name, veth.GRO); err != nil || !on {
				return fmt.Errorf("GRO on %s: %v %v", m.Iface.Name, on, err)
			}
			if on, err := veth.Get(m.Iface.Name, veth.TXChecksum); err != nil || on {
				return fmt.Errorf("tx csum on %s: %v %v", m.Iface.Name, on, err)
			}
			return nil
		})
		if err != nil {
			t.Errorf("member %s: %v", m.Name, err)
		}
		// DSR: the member owns the VIPs (UDP echo is bound to them).
		for _, vip := range l.VIPs() {
			c, err := l.DialFrom(testCtx(t), m.Name, "udp", netip.Addr{}, netip.AddrPortFrom(vip, 53))
			if err != nil {
				t.Fatal(err)
			}
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			_, _ = c.Write([]byte("x"))
			buf := make([]byte, 512)
			n, err := c.Read(buf)
			c.Close()
			if r, perr := lab.ParseReply(string(buf[:n])); err != nil || perr != nil || r.Member != m.Name || r.Local.Addr() != vip {
				t.Errorf("member %s VIP %s: %q %v %v", m.Name, vip, buf[:n], err, perr)
			}
		}
	}
	// VIPsOnBalancer: a server on the balancer's VIP is reachable from the client.
	var lns []net.Listener
	err = l.Run(lab.HostBalancer, func() error {
		for _, vip := range l.VIPs() {
			ln, err := net.Listen("tcp", netip.AddrPortFrom(vip, 8080).String())
			if err != nil {
				return err
			}
			lns = append(lns, ln)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(lab.HeaderMember, "lb")
		fmt.Fprintf(w, "member=lb peer=%s\n", r.RemoteAddr)
	})}
	for _, ln := range lns {
		go func() { _ = srv.Serve(ln) }()
	}
	defer srv.Close()
	for _, src := range []netip.Addr{l.ClientAddrs4()[3], l.ClientAddrs6()[3]} {
		vip := l.VIP4()
		if src.Is6() {
			vip = l.VIP6()
		}
		r, err := l.Get(testCtx(t), src, lab.URL(netip.AddrPortFrom(vip, 8080), "/"))
		if err != nil || r.Member != "lb" || r.Peer.Addr() != src {
			t.Errorf("VIP %s on balancer from %s: %+v %v", vip, src, r, err)
		}
	}
}

func TestProcess(t *testing.T) {
	l := labtest.New(t, lab.Spec{MemberCount: 1})
	p, err := l.StartProcess(lab.HostBalancer, "/bin/sh", "-c", "cat /proc/net/dev; echo ready; exec sleep 60")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(p.Output(), "ready") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	out := p.Output()
	for _, i := range l.BalancerIfaces() {
		if !strings.Contains(out, i.Name) {
			t.Errorf("process does not see %s (not in the balancer netns?):\n%s", i.Name, out)
		}
	}
	if strings.Contains(out, l.ClientIface().Name) {
		t.Errorf("process sees the client's interface:\n%s", out)
	}
	left, _ := lab.LeftoversOf(l.Suffix())
	if !strings.Contains(strings.Join(left, "\n"), fmt.Sprintf("process %d", p.Pid)) {
		t.Errorf("running process not in leftovers: %v", left)
	}
	if err := p.Stop(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	if p.Running() {
		t.Error("still running after Stop")
	}
	var ee *exec.ExitError
	if err := p.Wait(testCtx(t)); !errors.As(err, &ee) {
		t.Errorf("exit: %v", err)
	}

	// Processes still running at Close are stopped by it.
	p2, err := l.StartProcess(lab.HostClient, "/bin/sleep", "60")
	if err != nil {
		t.Fatal(err)
	}
	out2, err := l.RunCommand(testCtx(t), "m1", "/bin/cat", "/proc/net/dev")
	if err != nil || !strings.Contains(string(out2), l.Members()[0].Iface.Name) {
		t.Errorf("RunCommand: %v\n%s", err, out2)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if p2.Running() {
		t.Error("Close left a process running")
	}
	if left, _ := lab.LeftoversOf(l.Suffix()); len(left) > 0 {
		t.Errorf("leftovers: %v", left)
	}
}

func TestParallelLabs(t *testing.T) {
	testutil.RequireRoot(t)
	sfx := make(chan string, 2)
	for _, name := range []string{"a", "b"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			l := labtest.New(t, lab.Spec{MemberCount: 2})
			sfx <- l.Suffix()
			for i := range 5 {
				for _, m := range l.Members() {
					checkGet(t, l, l.ClientAddrs4()[i], netip.AddrPortFrom(m.Addr4, 80), m.Name)
					checkGet(t, l, l.ClientAddrs6()[i], netip.AddrPortFrom(m.Addr6, 80), m.Name)
				}
			}
		})
	}
	t.Cleanup(func() {
		close(sfx)
		var got []string
		for s := range sfx {
			got = append(got, s)
		}
		if len(got) == 2 && got[0] == got[1] {
			t.Errorf("two labs with suffix %s", got[0])
		}
	})
}

func TestHA(t *testing.T) {
	l := labtest.New(t, lab.Spec{MemberCount: 2, Balancers: 2})
	bs := l.Balancers()
	if len(bs) != 2 || bs[1].Host != "lb1" || len(bs[0].Ifaces()) != 2 {
		t.Fatalf("balancers %+v", bs)
	}
	for _, active := range []int{0, 1} {
		if err := l.SetActiveBalancer(active); err != nil {
			t.Fatal(err)
		}
		// The active balancer's forwarding counts prove the path.
		for _, m := range l.Members() {
			if m.Gateway4.As4()[3] != byte(1+active) {
				t.Errorf("member %s gateway %s with balancer %d active", m.Name, m.Gateway4, active)
			}
			checkGet(t, l, l.ClientAddrs4()[active], netip.AddrPortFrom(m.Addr4, 80), m.Name)
			checkGet(t, l, l.ClientAddrs6()[active], netip.AddrPortFrom(m.Addr6, 80), m.Name)
			checkUDP(t, l, l.ClientAddrs4()[active], netip.AddrPortFrom(m.Addr4, 53), m.Name)
		}
	}
	// Balancers reach each other on the client segment (HA mirroring).
	c, err := l.DialFrom(testCtx(t), "lb1", "udp", bs[1].Addr4, netip.AddrPortFrom(l.Members()[0].Addr4, 53))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

func TestCloseLeavesNothing(t *testing.T) {
	testutil.RequireRoot(t)
	l, err := lab.New(testCtx(t), lab.Spec{MemberCount: 2, DynamicNeighbours: true})
	if err != nil {
		t.Fatal(err)
	}
	left, err := lab.LeftoversOf(l.Suffix())
	if err != nil || len(left) == 0 {
		t.Fatalf("open lab not listed in leftovers: %v %v", left, err)
	}
	// Neighbours resolve dynamically too.
	checkGet(t, l, l.ClientAddrs4()[0], netip.AddrPortFrom(l.Members()[1].Addr4, 80), "m2")
	checkGet(t, l, l.ClientAddrs6()[0], netip.AddrPortFrom(l.Members()[1].Addr6, 80), "m2")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if left, err := lab.LeftoversOf(l.Suffix()); err != nil || len(left) > 0 {
		t.Fatalf("after Close: %v %v", left, err)
	}
	if err := l.Run(lab.HostClient, func() error { return nil }); err == nil {
		t.Error("Run after Close")
	}
}

const helperEnv = "LIMPET_LAB_TEST_HELPER"

// TestHelperAbandonLab is not a test: TestCleanAbandonedLab runs it in a
// child process that builds a lab, starts a process in it that survives its
// parent, and exits without closing it: a crashed test.
func TestHelperAbandonLab(t *testing.T) {
	if os.Getenv(helperEnv) != "abandon" {
		t.Skip("helper process for TestCleanAbandonedLab")
	}
	lab.SimulateCrashedOwner()
	l, err := lab.New(context.Background(), lab.Spec{MemberCount: 1})
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(2)
	}
	if _, err := l.StartProcess(lab.HostBalancer, "/bin/sleep", "300"); err != nil {
		fmt.Println("ERROR", err)
		os.Exit(2)
	}
	fmt.Printf("SUFFIX=%s\n", l.Suffix())
	os.Exit(0)
}

// TestHelperSignalLab is not a test: TestHandleSignals runs it in a child
// process that builds a lab, starts a process in it, and waits for a signal.
func TestHelperSignalLab(t *testing.T) {
	if os.Getenv(helperEnv) != "signal" {
		t.Skip("helper process for TestHandleSignals")
	}
	l, err := lab.New(context.Background(), lab.Spec{MemberCount: 1})
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(2)
	}
	lab.HandleSignals(context.Background(), l)
	if _, err := l.StartProcess(lab.HostBalancer, "/bin/sleep", "300"); err != nil {
		fmt.Println("ERROR", err)
		os.Exit(2)
	}
	fmt.Printf("SUFFIX=%s\n", l.Suffix())
	time.Sleep(time.Minute)
	os.Exit(3)
}

// startHelper runs a helper test in a child process and returns it with the
// lab suffix it printed.
func startHelper(t *testing.T, mode string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelper", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if s, ok := strings.CutPrefix(sc.Text(), "SUFFIX="); ok {
			go func() { _, _ = io.Copy(io.Discard, stdout) }()
			return cmd, s
		}
		t.Logf("helper: %s", sc.Text())
	}
	_ = cmd.Wait()
	t.Fatalf("helper %s printed no suffix", mode)
	return nil, ""
}

func TestHandleSignals(t *testing.T) {
	testutil.RequireRoot(t)
	cmd, sfx := startHelper(t, "signal")
	if left, _ := lab.LeftoversOf(sfx); len(left) == 0 {
		t.Fatal("helper lab not found")
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGINT {
		t.Errorf("helper exit: %v", err)
	}
	if left, err := lab.LeftoversOf(sfx); err != nil || len(left) > 0 {
		_ = lab.ForceCleanRun(sfx)
		t.Fatalf("after SIGINT: %v %v", left, err)
	}
}

func TestCleanAbandonedLab(t *testing.T) {
	testutil.RequireRoot(t)
	// A live lab of this process must survive lab.Clean.
	live := labtest.New(t, lab.Spec{MemberCount: 1})

	cmd, sfx := startHelper(t, "abandon")
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v", err)
	}
	left, err := lab.LeftoversOf(sfx)
	joined := strings.Join(left, "\n")
	if err != nil || !strings.Contains(joined, "netns") || !strings.Contains(joined, "process") || !strings.Contains(joined, "dir") {
		t.Fatalf("abandoned lab %s: leftovers %v %v", sfx, left, err)
	}
	// lab.Clean's error may be about leftovers of other runs it cannot remove;
	// only this run's are the test's business.
	if err := lab.Clean(); err != nil {
		if strings.Contains(err.Error(), sfx) {
			t.Fatalf("Clean: %v", err)
		}
		t.Logf("Clean (about other runs): %v", err)
	}
	if left, err := lab.LeftoversOf(sfx); err != nil || len(left) > 0 {
		t.Fatalf("after lab.Clean: %v %v", left, err)
	}
	// The live lab is untouched.
	m := live.Members()[0]
	checkGet(t, live, live.ClientAddrs4()[0], netip.AddrPortFrom(m.Addr4, 80), m.Name)
	if left, _ := lab.LeftoversOf(live.Suffix()); len(left) == 0 {
		t.Error("Clean removed a live lab")
	}
}
