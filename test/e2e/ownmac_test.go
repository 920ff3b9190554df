package e2e_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/userspace/lab"
)

// On a shared L2 a switch floods a unicast it has not learnt to every
// node, so each limpet there sees frames for the others' MACs. Here the
// client's neighbour entry for its gateway (the balancer) is pinned to
// another MAC, so every frame it sends for the VIP carries a destination
// that is not the balancer's: limpet must not forward one to the member
// (the kernel drops them: another host's), and counts them as not_our_mac.
// Pointed back at the balancer's MAC, the same client is served.
func TestFramesForAnotherMACAreNotForwarded(t *testing.T) {
	t.Parallel()
	l := newLab(t, lab.Spec{MemberCount: 1, ClientAddrs4: 2})
	ctx := testCtx(t, 90*time.Second)
	_, dst := serveWeb(t, ctx, l)
	clients := l.ClientAddrs4()
	m := l.Members()[0]
	frames, err := l.CountFrames(m.Name, m.Iface.Name)
	if err != nil {
		t.Fatal(err)
	}
	defer frames.Close()

	// pointGateway pins the client's neighbour entry for its route to the
	// VIP at mac, and returns the entry's previous MAC.
	pointGateway := func(mac net.HardwareAddr) net.HardwareAddr {
		t.Helper()
		var was net.HardwareAddr
		err := l.Run(l.ClientIface().Host, func() error {
			rs, err := netlink.RouteGet(l.VIP4().AsSlice())
			if err != nil {
				return err
			}
			gw := rs[0].Gw
			if gw == nil {
				gw = l.VIP4().AsSlice() // on-link
			}
			ns, err := netlink.NeighList(rs[0].LinkIndex, netlink.FAMILY_V4)
			if err != nil {
				return err
			}
			for _, n := range ns {
				if n.IP.Equal(gw) {
					was = n.HardwareAddr
				}
			}
			return netlink.NeighSet(&netlink.Neigh{LinkIndex: rs[0].LinkIndex, Family: netlink.FAMILY_V4,
				State: netlink.NUD_PERMANENT, IP: gw, HardwareAddr: mac})
		})
		if err != nil {
			t.Fatal(err)
		}
		return was
	}
	foreign := net.HardwareAddr{0x02, 0x42, 0, 0, 0, 0x99}
	before := exceptionCounters(t, ctx, l)
	balancerMAC := pointGateway(foreign)
	if balancerMAC == nil {
		t.Fatal("the client has no neighbour entry for its gateway")
	}
	time.Sleep(50 * time.Millisecond) // frames already on the wire
	toMember := frames.Count(m.Iface.MAC)
	for range 3 {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if _, err := l.Get(rctx, clients[1], lab.URL(dst, "/")); err == nil {
			t.Fatal("a GET whose frames carry another node's MAC was answered: limpet balanced a frame that was not its own")
		}
		cancel()
	}
	if n := frames.Count(m.Iface.MAC) - toMember; n > 0 {
		t.Errorf("%d frames reached the member while the client's frames carried another MAC", n)
	}
	after := exceptionCounters(t, ctx, l)
	if after["not_our_mac"] <= before["not_our_mac"] {
		t.Errorf("not_our_mac %d -> %d: the frames for another MAC were not counted", before["not_our_mac"], after["not_our_mac"])
	}
	dp, err := loader.OpenPinned(l.PinDir())
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	fl, err := dp.Flows()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fl {
		if f.Src.Addr() == clients[1] || f.Dst.Addr() == clients[1] {
			t.Fatalf("a flow for %s was made from frames for another MAC: %+v", clients[1], f)
		}
	}
	// Back to the balancer's MAC: served.
	pointGateway(balancerMAC)
	if _, err := l.WaitGet(ctx, clients[1], lab.URL(dst, "/")); err != nil {
		t.Fatalf("GET with the balancer's MAC again: %v", err)
	}

	// The balancer's interface changes its MAC: limpet follows (the
	// daemon's netlink watcher), so the old MAC is another node's now and
	// the new one is served.
	var bi lab.Iface
	for _, i := range l.BalancerIfaces() {
		if i.MAC.String() == balancerMAC.String() {
			bi = i
		}
	}
	if bi.Name == "" {
		t.Fatalf("no balancer interface has the MAC %s the client used", balancerMAC)
	}
	newMAC := net.HardwareAddr{0x02, 0x42, 0, 0, 0, 0x42}
	if err := l.Run(bi.Host, func() error {
		link, err := netlink.LinkByName(bi.Name)
		if err != nil {
			return err
		}
		return netlink.LinkSetHardwareAddr(link, newMAC)
	}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	for {
		mac, ok, err := dp.InterfaceMAC(bi.Index)
		if err != nil {
			t.Fatal(err)
		}
		if ok && mac.String() == newMAC.String() {
			t.Logf("the datapath took %s's new MAC after %v", bi.Name, time.Since(t0).Round(time.Millisecond))
			break
		}
		if time.Since(t0) > 5*time.Second {
			t.Fatalf("5s after %s changed its MAC to %s the datapath holds %v (%v)", bi.Name, newMAC, mac, ok)
		}
		time.Sleep(10 * time.Millisecond)
	}
	before = exceptionCounters(t, ctx, l)
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	if _, err := l.Get(rctx, clients[1], lab.URL(dst, "/")); err == nil {
		t.Error("a GET to the balancer's old MAC was answered")
	}
	cancel()
	if after := exceptionCounters(t, ctx, l); after["not_our_mac"] <= before["not_our_mac"] {
		t.Errorf("frames to the old MAC: not_our_mac %d -> %d, not counted", before["not_our_mac"], after["not_our_mac"])
	}
	pointGateway(newMAC)
	if _, err := l.WaitGet(ctx, clients[1], lab.URL(dst, "/")); err != nil {
		t.Fatalf("GET to the balancer's new MAC: %v", err)
	}
}
