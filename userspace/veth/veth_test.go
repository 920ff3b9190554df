package veth_test

import (
	"fmt"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/test/dptest"
	"github.com/limpet-lb/limpet/test/labtest"
	"github.com/limpet-lb/limpet/userspace/lab"
	"github.com/limpet-lb/limpet/userspace/veth"
)

func checkIn(t *testing.T, l *lab.Lab, host, ifname string) []veth.Problem {
	t.Helper()
	var ps []veth.Problem
	if err := l.Run(host, func() error {
		var err error
		ps, err = veth.Check(ifname)
		return err
	}); err != nil {
		t.Fatalf("check %s: %v", ifname, err)
	}
	return ps
}

// attachXDP attaches limpet's datapath in native mode to ifname in host, as
// limpet run does: the problems only exist for native XDP.
func attachXDP(t *testing.T, l *lab.Lab, host, ifname string) {
	t.Helper()
	dp := dptest.New(t, loader.State{}, 1024).DP
	if err := l.Run(host, func() error {
		_, err := dp.Attach(ifname, loader.XDPNative)
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

func kinds(ps []veth.Problem) string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Kind)
	}
	return strings.Join(out, ",")
}

// The balancer's veth towards the client has its peer in the client's
// namespace: the check finds it there, and names the exact command.
func TestCheckFindsThePeerInANamedNamespace(t *testing.T) {
	l := labtest.New(t, lab.Spec{MemberCount: 1, ClientAddrs4: 1, ClientAddrs6: 1})
	b, ci := l.Balancers()[0].ClientIface, l.ClientIface()
	ns := l.NetNS(lab.HostClient)
	// Without XDP (or with generic XDP) the peer's settings do not matter.
	if err := l.Run(lab.HostClient, func() error { return veth.Set(ci.Name, veth.GRO, false) }); err != nil {
		t.Fatal(err)
	}
	if ps := checkIn(t, l, lab.HostBalancer, b.Name); len(ps) != 0 {
		t.Fatalf("no XDP on %s, yet: %v", b.Name, ps)
	}
	if err := l.Run(lab.HostClient, func() error { return veth.Set(ci.Name, veth.GRO, true) }); err != nil {
		t.Fatal(err)
	}
	attachXDP(t, l, lab.HostBalancer, b.Name)

	// The lab's settings (GRO on, TX checksum off): nothing to say.
	if ps := checkIn(t, l, lab.HostBalancer, b.Name); len(ps) != 0 {
		t.Fatalf("a lab with GRO on and TX checksum offload off: %v", ps)
	}
	// What a veth has unless told otherwise: GRO off, TX checksum on.
	if err := l.Run(lab.HostClient, func() error {
		if err := veth.Set(ci.Name, veth.GRO, false); err != nil {
			return err
		}
		return veth.Set(ci.Name, veth.TXChecksum, true)
	}); err != nil {
		t.Fatal(err)
	}
	ps := checkIn(t, l, lab.HostBalancer, b.Name)
	if kinds(ps) != veth.PeerCannotReceive+","+veth.PeerTXChecksum {
		t.Fatalf("problems %v", ps)
	}
	for i, fix := range []string{"gro on", "tx off"} {
		p := ps[i]
		if p.Interface != b.Name || p.Peer != ci.Name || p.PeerNetns != ns {
			t.Errorf("problem %d names %s, peer %s in %q; want %s, peer %s in %q", i, p.Interface, p.Peer, p.PeerNetns, b.Name, ci.Name, ns)
		}
		if want := "ip netns exec " + ns + " ethtool -K " + ci.Name + " " + fix; p.Fix != want {
			t.Errorf("fix %q, want %q", p.Fix, want)
		}
		if !strings.Contains(p.Message, ci.Name+" (netns "+ns+")") {
			t.Errorf("message %q does not say where the peer is", p.Message)
		}
	}
	// The fix, run as printed, clears both.
	for _, p := range ps {
		if out, err := exec.Command("sh", "-c", p.Fix).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", p.Fix, err, out)
		}
	}
	if ps := checkIn(t, l, lab.HostBalancer, b.Name); len(ps) != 0 {
		t.Fatalf("after the fixes: %v", ps)
	}
	// Not a veth: nothing to check.
	if ps := checkIn(t, l, lab.HostBalancer, "lo"); ps != nil {
		t.Fatalf("lo: %v", ps)
	}
}

// A container's namespace has no name: the peer is found through a process
// in it, and the fix enters it with nsenter.
func TestCheckFindsThePeerInAProcessNamespace(t *testing.T) {
	l := labtest.New(t, lab.Spec{MemberCount: 1, ClientAddrs4: 1, ClientAddrs6: 1})
	// Pdeathsig fires when the thread that started the child exits, and
	// the lab throws away the threads it enters namespaces with: start it
	// from a thread this test keeps.
	runtime.LockOSThread()
	sleep := exec.Command("sleep", "120")
	sleep.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	if err := sleep.Start(); err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = sleep.Process.Kill()
		_ = sleep.Wait()
		runtime.UnlockOSThread()
	})
	pid := sleep.Process.Pid
	here, there := lab.LinkPrefix+"vx-"+l.Suffix(), lab.LinkPrefix+"vy-"+l.Suffix()
	if err := l.Run(lab.HostBalancer, func() error {
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: here}, PeerName: there, PeerNamespace: netlink.NsPid(pid)})
	}); err != nil {
		t.Fatal(err)
	}
	attachXDP(t, l, lab.HostBalancer, here)
	ps := checkIn(t, l, lab.HostBalancer, here)
	nsPath := fmt.Sprintf("/proc/%d/ns/net", pid)
	if len(ps) == 0 {
		t.Fatal("a fresh veth (GRO off, TX checksum on) has nothing to fix?")
	}
	for _, p := range ps {
		if p.Peer != there || p.PeerNetns != nsPath || !strings.HasPrefix(p.Fix, "nsenter --net="+nsPath+" ethtool -K "+there+" ") {
			t.Errorf("problem %+v: want peer %s in %s, fixed with nsenter", p, there, nsPath)
		}
		if out, err := exec.Command("sh", "-c", p.Fix).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", p.Fix, err, out)
		}
	}
	if ps := checkIn(t, l, lab.HostBalancer, here); len(ps) != 0 {
		t.Fatalf("after the fixes: %v", ps)
	}
}
