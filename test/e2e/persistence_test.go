package e2e_test

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/test/testutil"
	"github.com/limpet-lb/limpet/userspace/lab"
)

const (
	memberCount = 3
	clientCount = 24 // per address family
	getsPerPeer = 4
)

// TestTCPPersistence: real HTTP over TCP through the XDP datapath, in NAT and
// DSR modes, IPv4 and IPv6. Every client source address sends several GETs,
// each on a new connection from a new source port; each client must always
// reach the same member, the clients must be spread over every member, the
// member must see the real client address and be reached at the address the
// mode implies, and `persistence dump` must list exactly one entry per client
// naming the member that answered.
func TestTCPPersistence(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	for _, mode := range []string{"nat", "dsr"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			l := newLab(t, lab.Spec{MemberCount: memberCount, ClientAddrs4: clientCount, ClientAddrs6: clientCount, DSR: mode == "dsr"})
			vss := []vsConf{
				{Name: "web4", VIP: l.VIP4(), Port: 80, Protocol: "tcp", Forwarding: mode, Persistence: "sticky"},
				{Name: "web6", VIP: l.VIP6(), Port: 80, Protocol: "tcp", Forwarding: mode, Persistence: "sticky"},
			}
			cfg := writeConfig(t, l, 1, []profileConf{{"sticky", 300}}, vss)
			startLimpet(t, l, cfg)
			for _, fam := range bothFamilies(l, "web4", "web6") {
				t.Run(fam.name, func(t *testing.T) {
					t.Parallel()
					ctx := testCtx(t, 30*time.Second)
					dst := netip.AddrPortFrom(fam.vip, 80)
					// NAT rewrites the destination to the member, so the
					// member's socket is bound to its own address; DSR leaves
					// the VIP, which the member holds on its loopback.
					local := func(member string) netip.AddrPort {
						if mode == "dsr" {
							return dst
						}
						return netip.AddrPortFrom(memberAddr(l, member, fam.is6), 80)
					}
					a, err := getEach(ctx, l, fam.srcs, dst, getsPerPeer, local)
					if err != nil {
						t.Fatal(err)
					}
					if len(a) != len(fam.srcs) {
						t.Fatalf("%d clients served, want %d", len(a), len(fam.srcs))
					}
					checkSpread(t, l, a)
					checkDump(t, l, fam.vs, dump(t, ctx, l, fam.vs), a)
				})
			}
		})
	}
}

// family is one side of a test run over both address families: its
// virtual server, VIP and clients.
type family struct {
	name string
	vs   string
	vip  netip.Addr
	srcs []netip.Addr
	is6  bool
}

// bothFamilies are the lab's IPv4 and IPv6 sides, served by virtual servers
// vs4 and vs6.
func bothFamilies(l *lab.Lab, vs4, vs6 string) []family {
	return []family{
		{"ipv4", vs4, l.VIP4(), l.ClientAddrs4(), false},
		{"ipv6", vs6, l.VIP6(), l.ClientAddrs6(), true},
	}
}

// TestUDPPersistence: UDP/53 queries to the members' echo through the
// datapath (NAT), IPv4 and IPv6. Every query comes from a new socket, hence
// a new source port and a new flow; each client must keep its member, the
// clients must be spread over every member, the member must see the real
// client address, the reply must come back from the VIP (the client's
// socket is connected to it), and the dump must match.
func TestUDPPersistence(t *testing.T) {
	t.Parallel()
	l := newLab(t, lab.Spec{MemberCount: memberCount, ClientAddrs4: clientCount, ClientAddrs6: clientCount})
	vss := []vsConf{
		{Name: "dns4", VIP: l.VIP4(), Port: 53, Protocol: "udp", Forwarding: "nat", Persistence: "sticky"},
		{Name: "dns6", VIP: l.VIP6(), Port: 53, Protocol: "udp", Forwarding: "nat", Persistence: "sticky"},
	}
	cfg := writeConfig(t, l, 1, []profileConf{{"sticky", 300}}, vss)
	startLimpet(t, l, cfg)
	for _, fam := range bothFamilies(l, "dns4", "dns6") {
		t.Run(fam.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t, 30*time.Second)
			dst := netip.AddrPortFrom(fam.vip, 53)
			var mu sync.Mutex
			a := assignment{}
			err := forEach(fam.srcs, func(src netip.Addr) error {
				first := ""
				ports := map[uint16]bool{}
				for i := range getsPerPeer {
					b, err := l.UDPQuery(ctx, src, dst, fmt.Appendf(nil, "query %d from %s", i, src))
					if err != nil {
						return fmt.Errorf("client %s: query %d: %w", src, i, err)
					}
					r, err := lab.ParseReply(string(b))
					if err != nil {
						return fmt.Errorf("client %s: query %d: %w", src, i, err)
					}
					if r.Peer.Addr() != src {
						return fmt.Errorf("client %s: member %s saw peer %s", src, r.Member, r.Peer)
					}
					if want := netip.AddrPortFrom(memberAddr(l, r.Member, fam.is6), 53); r.Local != want {
						return fmt.Errorf("client %s: member %s answered on %s, want %s", src, r.Member, r.Local, want)
					}
					ports[r.Peer.Port()] = true
					if first == "" {
						first = r.Member
					} else if r.Member != first {
						return fmt.Errorf("client %s: query %d reached %s, earlier queries %s", src, i, r.Member, first)
					}
				}
				// Several flows per client, or the test proves nothing
				// about persistence.
				if len(ports) < 2 {
					return fmt.Errorf("client %s: all %d queries used one source port", src, getsPerPeer)
				}
				mu.Lock()
				a[src] = first
				mu.Unlock()
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			checkSpread(t, l, a)
			checkDump(t, l, fam.vs, dump(t, ctx, l, fam.vs), a)
		})
	}
}

// TestNATMemberSeesClientAddress: in NAT mode the member's kernel stack
// accepts the connection from the real client address and port (the
// balancer rewrites only the destination), for IPv4 and IPv6, while the
// client talks to the VIP only.
func TestNATMemberSeesClientAddress(t *testing.T) {
	t.Parallel()
	l := newLab(t, lab.Spec{MemberCount: 2, ClientAddrs4: 4, ClientAddrs6: 4})
	vss := []vsConf{
		{Name: "web4", VIP: l.VIP4(), Port: 80, Protocol: "tcp", Forwarding: "nat", Persistence: "sticky"},
		{Name: "web6", VIP: l.VIP6(), Port: 80, Protocol: "tcp", Forwarding: "nat", Persistence: "sticky"},
	}
	cfg := writeConfig(t, l, 1, []profileConf{{"sticky", 300}}, vss)
	startLimpet(t, l, cfg)
	ctx := testCtx(t, 20*time.Second)
	for _, src := range append(l.ClientAddrs4(), l.ClientAddrs6()...) {
		vip := l.VIP4()
		if src.Is6() {
			vip = l.VIP6()
		}
		dst := netip.AddrPortFrom(vip, 80)
		// Dial by hand to know the client's own port.
		c, err := l.Dial(ctx, "tcp", src, dst)
		if err != nil {
			t.Fatalf("client %s: dial %s: %v", src, dst, err)
		}
		clientEnd := netip.MustParseAddrPort(c.LocalAddr().String())
		if got := netip.MustParseAddrPort(c.RemoteAddr().String()); got != dst {
			t.Errorf("client %s: connected to %s, want the VIP %s", src, got, dst)
		}
		if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", dst); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var body []byte
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			body = append(body, buf[:n]...)
			if err != nil {
				break
			}
		}
		c.Close()
		r, err := lab.ParseReply(string(body[bodyStart(body):]))
		if err != nil {
			t.Fatalf("client %s: %v (response %q)", src, err, body)
		}
		if r.Peer != clientEnd {
			t.Errorf("client %s: member %s saw peer %s, want the client's own end %s", src, r.Member, r.Peer, clientEnd)
		}
		if want := netip.AddrPortFrom(memberAddr(l, r.Member, src.Is6()), 80); r.Local != want {
			t.Errorf("client %s: member %s accepted on %s, want its own address %s (NAT)", src, r.Member, r.Local, want)
		}
	}
}

// bodyStart is the offset of an HTTP response's body.
func bodyStart(resp []byte) int {
	for i := 0; i+4 <= len(resp); i++ {
		if string(resp[i:i+4]) == "\r\n\r\n" {
			return i + 4
		}
	}
	return 0
}
