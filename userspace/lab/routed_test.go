package lab_test

import (
	"errors"
	"net/netip"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/limpet-lb/limpet/test/labtest"
	"github.com/limpet-lb/limpet/test/testutil"
	"github.com/limpet-lb/limpet/userspace/lab"
)

func TestRoutedTopology(t *testing.T) {
	l := labtest.New(t, lab.Spec{Routed: true, MemberCount: 2})
	b := l.Balancers()[0]
	if len(b.MemberIfaces) != 0 || len(b.Ifaces()) != 1 {
		t.Fatalf("balancer of a routed lab: %+v, want one interface", b)
	}
	members := l.Members()
	if members[0].Addr4 == members[1].Addr4 || netip.PrefixFrom(members[0].Addr4, 24).Masked() == netip.PrefixFrom(members[1].Addr4, 24).Masked() {
		t.Fatalf("members share a subnet: %v %v", members[0].Addr4, members[1].Addr4)
	}
	router4, router6 := l.RouterAddrs()

	for _, m := range members {
		// The client reaches every member through the router, and the
		// member sees its real address.
		for _, src := range []netip.Addr{l.ClientAddrs4()[0], l.ClientAddrs6()[0]} {
			dst := m.Addr4
			if src.Is6() {
				dst = m.Addr6
			}
			checkGet(t, l, src, netip.AddrPortFrom(dst, 80), m.Name)
			checkUDP(t, l, src, netip.AddrPortFrom(dst, 53), m.Name)
		}
		// Members are beyond the balancer's L2: its way to them is the
		// router, and their way back to clients is the router too.
		for _, dst := range []netip.Addr{m.Addr4, m.Addr6} {
			gw := routeGateway(t, l, lab.HostBalancer, dst)
			if want := map[bool]netip.Addr{true: router4, false: router6}[dst.Is4()]; gw != want {
				t.Errorf("balancer reaches %s via %v, want the router %s", dst, gw, want)
			}
		}
		for _, src := range []netip.Addr{l.ClientAddrs4()[0], l.ClientAddrs6()[0]} {
			gw := routeGateway(t, l, m.Name, src)
			if want := map[bool]netip.Addr{true: m.Gateway4, false: m.Gateway6}[src.Is4()]; gw != want {
				t.Errorf("%s reaches %s via %v, want the router %s", m.Name, src, gw, want)
			}
		}
	}
	// The VIPs are routed to the balancer, which has nothing to serve them
	// with yet.
	for _, vip := range l.VIPs() {
		src := l.ClientAddrs4()[0]
		if vip.Is6() {
			src = l.ClientAddrs6()[0]
		}
		if _, err := l.Get(testCtx(t), src, lab.URL(netip.AddrPortFrom(vip, 80), "/")); !errors.Is(err, syscall.EHOSTUNREACH) && !errors.Is(err, syscall.ENETUNREACH) {
			t.Errorf("GET %s with no balancer program: %v, want host or network unreachable", vip, err)
		}
	}
	if _, err := l.StartEncapRelay(lab.RelaySpec{Encap: "gre"}); err == nil {
		t.Error("a relay with encapsulation gre started")
	}
}

func TestRelayNeedsRoutedLab(t *testing.T) {
	testutil.RequireRoot(t)
	l := labtest.New(t, lab.Spec{MemberCount: 1})
	if _, err := l.StartEncapRelay(lab.RelaySpec{Encap: lab.EncapIPIP}); err == nil {
		t.Error("a relay started in a lab that is not routed")
	}
}

// routeGateway is the gateway host h's kernel routes dst through (invalid
// for a direct route).
func routeGateway(t *testing.T, l *lab.Lab, h string, dst netip.Addr) netip.Addr {
	t.Helper()
	var gw netip.Addr
	err := l.Run(h, func() error {
		rs, err := netlink.RouteGet(dst.AsSlice())
		if err != nil {
			return err
		}
		if len(rs) > 0 {
			gw, _ = netip.AddrFromSlice(rs[0].Gw)
			gw = gw.Unmap()
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: route to %s: %v", h, dst, err)
	}
	return gw
}
