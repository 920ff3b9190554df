package e2e_test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/userspace/lab"
)

// TestMemberServingTwoVIPs: two NAT virtual servers on two VIPs (per
// family, TCP and UDP) whose pools list the same members on the same port.
// A member's reply cannot name its VIP, so the datapath keeps a reverse
// entry for these connections: every reply must come back from the VIP its
// client connected to (the client's sockets are connected to the VIP, so a
// reply from the other one never reaches them), for HTTP over TCP and for
// UDP queries, while both VIPs are used at once.
func TestMemberServingTwoVIPs(t *testing.T) {
	t.Parallel()
	vips := []netip.Addr{
		netip.MustParseAddr("198.18.100.10"), netip.MustParseAddr("198.18.100.11"),
		netip.MustParseAddr("fd00:1e:0:100::10"), netip.MustParseAddr("fd00:1e:0:100::11"),
	}
	l := newLab(t, lab.Spec{MemberCount: 2, ClientAddrs4: 8, ClientAddrs6: 8, VIPs: vips})
	var vss []vsConf
	for i, v := range vips {
		vss = append(vss,
			vsConf{Name: fmt.Sprintf("web%d", i), VIP: v, Port: 80, Protocol: "tcp", Forwarding: "nat", Persistence: "sticky"},
			vsConf{Name: fmt.Sprintf("dns%d", i), VIP: v, Port: 53, Protocol: "udp", Forwarding: "nat", Persistence: "sticky"})
	}
	cfg := writeConfig(t, l, 1, []profileConf{{"sticky", 300}}, vss)
	startLimpet(t, l, cfg)
	ctx := testCtx(t, 60*time.Second)
	for _, fam := range []struct {
		name string
		vips []netip.Addr
		srcs []netip.Addr
		is6  bool
	}{
		{"ipv4", vips[:2], l.ClientAddrs4(), false},
		{"ipv6", vips[2:], l.ClientAddrs6(), true},
	} {
		err := forEach(fam.srcs, func(src netip.Addr) error {
			for i := range getsPerPeer {
				for _, vip := range fam.vips {
					r, err := l.Get(ctx, src, lab.URL(netip.AddrPortFrom(vip, 80), "/"))
					if err != nil {
						return fmt.Errorf("%s: client %s: GET %d to %s: %w", fam.name, src, i, vip, err)
					}
					if r.Status != 200 {
						return fmt.Errorf("%s: client %s: GET %d to %s: status %d", fam.name, src, i, vip, r.Status)
					}
					if want := netip.AddrPortFrom(memberAddr(l, r.Member, fam.is6), 80); r.Local != want || r.Peer.Addr() != src {
						return fmt.Errorf("%s: client %s: member %s answered on %s for %s, want %s for %s", fam.name, src, r.Member, r.Local, r.Peer, want, src)
					}
					b, err := l.UDPQuery(ctx, src, netip.AddrPortFrom(vip, 53), fmt.Appendf(nil, "query %d from %s to %s", i, src, vip))
					if err != nil {
						return fmt.Errorf("%s: client %s: query %d to %s: %w", fam.name, src, i, vip, err)
					}
					u, err := lab.ParseReply(string(b))
					if err != nil {
						return fmt.Errorf("%s: client %s: query %d to %s: %w", fam.name, src, i, vip, err)
					}
					if want := netip.AddrPortFrom(memberAddr(l, u.Member, fam.is6), 53); u.Local != want || u.Peer.Addr() != src {
						return fmt.Errorf("%s: client %s: member %s answered on %s for %s, want %s for %s", fam.name, src, u.Member, u.Local, u.Peer, want, src)
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
