package e2e_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/userspace/lab"
)

// encapForm is one tunnel form: a VIP of one family over members of the
// one or the other.
type encapForm struct {
	name   string // 4in4, 6in6, 6in4 (a v6 VIP over v4-only members), 4in6
	vip6   bool
	outer6 bool
}

var encapForms = []encapForm{{"4in4", false, false}, {"6in6", true, true}, {"6in4", true, false}, {"4in6", false, true}}

func (f encapForm) vip(l *lab.Lab) netip.Addr {
	if f.vip6 {
		return l.VIP6()
	}
	return l.VIP4()
}

func (f encapForm) vs(name string, l *lab.Lab, port uint16, proto, fw, profile string) vsConf {
	return vsConf{Name: name, VIP: f.vip(l), Port: port, Protocol: proto, Forwarding: fw, Persistence: profile,
		MembersV4: !f.outer6, MembersV6: f.outer6}
}

func (f encapForm) clients(l *lab.Lab) []netip.Addr {
	if f.vip6 {
		return l.ClientAddrs6()
	}
	return l.ClientAddrs4()
}

// encapSettings are the balancer's outer sources, for writeConfig.
func encapSettings(l *lab.Lab) []string {
	b := l.Balancers()[0]
	return []string{"encap_source_v4: " + b.Addr4.String(), fmt.Sprintf("encap_source_v6: %q", b.Addr6)}
}

// checkDumpIn is checkDump for a tunnel across families: each entry's
// server is the member's address of the members' family (outer6), not the
// client's.
func checkDumpIn(t *testing.T, l *lab.Lab, vs string, entries map[string]entry, a assignment, outer6 bool) {
	t.Helper()
	if len(entries) != len(a) {
		t.Errorf("persistence dump --vs %s: %d entries, want one per client (%d): %v", vs, len(entries), len(a), clientsOf(entries))
	}
	for src, member := range a {
		e, ok := entries[src.String()]
		got, err := e.serverAddr()
		if want := memberAddr(l, member, outer6); !ok || err != nil || got != want || e.Member != member {
			t.Errorf("%s: client %s: entry %v (found %v), want member %s at %s", vs, src, e, ok, member, want)
		}
	}
}

// TestEncapMixedFamily: the tunnels across families, IPv6-in-IPv4 (a v6
// VIP whose members are reached at their v4 addresses only) and
// IPv4-in-IPv6, with ipip and with gue, to members beyond the balancer's
// L2 that strip them with 'limpet member-decap'. Real HTTP and UDP clients
// keep their member (sticky; the dump names the member's address in the
// tunnel's family), the member sees the client's own address and is
// reached at the VIP, the decapsulators count the cross-family forms and
// nothing malformed, and no reply passes the balancer. Uploads of
// full-sized segments get limpet's too-big, and the client learns 1500
// less the outer header of the members' family.
func TestEncapMixedFamily(t *testing.T) {
	for _, fw := range []string{"ipip", "gue"} {
		t.Run(fw, func(t *testing.T) {
			l := newLab(t, lab.Spec{Routed: true, MemberCount: 2, ClientAddrs4: 6, ClientAddrs6: 6})
			ctx := testCtx(t, 3*time.Minute)
			f64, f46 := encapForms[2], encapForms[3]
			vss := []vsConf{
				f64.vs("web6in4", l, 80, "tcp", fw, "sticky"), f46.vs("web4in6", l, 80, "tcp", fw, "sticky"),
				f64.vs("dns6in4", l, 53, "udp", fw, "sticky"), f46.vs("dns4in6", l, 53, "udp", fw, "sticky"),
				f64.vs("bulk6in4", l, 9000, "tcp", fw, "sticky"), f46.vs("bulk4in6", l, 9000, "tcp", fw, "sticky"),
			}
			cfg := writeConfig(t, l, 1, []profileConf{{"sticky", 300}}, vss, encapSettings(l)...)
			startTunnelling(t, ctx, l, cfg)
			w := watchDecap(t, ctx, l)

			for _, c := range []struct {
				vs, dns string
				f       encapForm
			}{{"web6in4", "dns6in4", f64}, {"web4in6", "dns4in6", f46}} {
				vip := c.f.vip(l)
				dst := netip.AddrPortFrom(vip, 80)
				a, err := getEach(ctx, l, c.f.clients(l), dst, 3, func(string) netip.AddrPort { return dst })
				if err != nil {
					t.Fatalf("%s: %v", c.vs, err)
				}
				checkSpread(t, l, a)
				checkDumpIn(t, l, c.vs, dump(t, ctx, l, c.vs), a, c.f.outer6)
				// UDP: two queries per client, each from a new socket
				// (a new flow), reach one member, which sees the client.
				udp := assignment{}
				udst := netip.AddrPortFrom(vip, 53)
				for _, src := range c.f.clients(l) {
					for i := range 2 {
						r, err := l.UDPQuery(ctx, src, udst, fmt.Appendf(nil, "query %d", i))
						if err != nil {
							t.Fatalf("%s: UDP from %s: %v", c.dns, src, err)
						}
						u, err := lab.ParseReply(string(r))
						if err != nil || u.Peer.Addr() != src || u.Local != udst {
							t.Fatalf("%s: UDP from %s: %+v %v: want the member to see the client and the VIP", c.dns, src, u, err)
						}
						if prev, ok := udp[src]; ok && prev != u.Member {
							t.Fatalf("%s: client %s reached %s, then %s", c.dns, src, prev, u.Member)
						}
						udp[src] = u.Member
					}
				}
				checkDumpIn(t, l, c.dns, dump(t, ctx, l, c.dns), udp, c.f.outer6)
			}
			// Many reply packets, all of them straight to the client.
			const big = 400_000
			r, err := l.Get(ctx, l.ClientAddrs6()[0], lab.URL(netip.AddrPortFrom(l.VIP6(), 80), fmt.Sprintf("/bytes?n=%d", big)))
			if err != nil || len(r.Body) < big {
				t.Fatalf("GET /bytes over 6in4: %d bytes, %v", len(r.Body), err)
			}
			enc := map[string]loader.Encap{"ipip": loader.EncapIPIP, "gue": loader.EncapGUE}[fw]
			for _, c := range []struct {
				src  netip.Addr
				vip  netip.Addr
				form encapForm
			}{{l.ClientAddrs6()[1], l.VIP6(), f64}, {l.ClientAddrs4()[1], l.VIP4(), f46}} {
				upload(t, ctx, l, c.src, netip.AddrPortFrom(c.vip, 9000), 2<<20)
				want := 1500 - loader.EncapOverhead(enc, c.form.outer6)
				if mtu := clientPathMTU(t, l, c.vip); mtu != want {
					t.Errorf("%s: the client's route cache has MTU %d for %s, want %d (1500 less the tunnel)", c.form.name, mtu, c.vip, want)
				}
			}
			time.Sleep(500 * time.Millisecond) // the last FINs and ACKs

			forwarded, tooBig, rx := checkRepliesBypassed(t, ctx, w)
			stat64, stat46, same44, same66 := fw+"_6in4", fw+"_4in6", fw+"_4in4", fw+"_6in6"
			d := w.decapsulated(t, ctx, stat64, stat46, same44, same66)
			d64, d46 := d[0], d[1]
			for i, same := range []string{same44, same66} {
				if n := d[2+i]; n != 0 {
					t.Errorf("members decapsulated %d packets as %s; every virtual server tunnels across families", n, same)
				}
			}
			checkDecapsulated(t, l, stat64, stat46, d64, d46, forwarded-tooBig)
			t.Logf("%s: forwarded %d packets (%d answered too big); members decapsulated %s %d, %s %d; balancer received %d",
				fw, forwarded, tooBig, stat64, d64, stat46, d46, rx)
		})
	}
}

// TestEncapPersistenceTimeouts: the seed's timeout semantics hold through
// every tunnel form (4in4, 6in6, 6in4, 4in6), ipip and gue, as they do for
// dsr, seen only from the client's side: a connection idle for longer than
// the 2 s timeout keeps its entry and still works; after it closes the
// countdown starts; a connection within the timeout keeps the member; once
// the timeout has run out the entry is gone and the client is balanced
// afresh, to the other member of the round robin.
func TestEncapPersistenceTimeouts(t *testing.T) {
	const timeout = 2
	for _, fw := range []string{"ipip", "gue"} {
		t.Run(fw, func(t *testing.T) {
			l := newLab(t, lab.Spec{Routed: true, MemberCount: 2, ClientAddrs4: 2, ClientAddrs6: 2, HTTPPorts: []uint16{80, 81}})
			ctx := testCtx(t, 2*time.Minute)
			var vss []vsConf
			for i, f := range encapForms {
				vss = append(vss, f.vs("t"+f.name, l, 80+uint16(i/2), "tcp", fw, "brief"))
			}
			cfg := writeConfig(t, l, 0.1, []profileConf{{"brief", timeout}}, vss, encapSettings(l)...)
			startTunnelling(t, ctx, l, cfg)
			for i, f := range encapForms {
				vs := vss[i]
				src := f.clients(l)[i/2]
				t.Run(f.name, func(t *testing.T) {
					t.Parallel()
					testTimeoutsThroughTunnel(t, ctx, l, vs, src, timeout)
				})
			}
		})
	}
}

func testTimeoutsThroughTunnel(t *testing.T, ctx context.Context, l *lab.Lab, vs vsConf, src netip.Addr, timeout int) {
	dst := netip.AddrPortFrom(vs.VIP, vs.Port)
	url := lab.URL(dst, "/")
	get := func() string {
		t.Helper()
		r, err := l.Get(ctx, src, url)
		if err != nil {
			t.Fatal(err)
		}
		if r.Peer.Addr() != src || r.Local != dst {
			t.Fatalf("member %s saw %s -> %s, want %s -> %s", r.Member, r.Peer, r.Local, src, dst)
		}
		return r.Member
	}
	ce := clientEntry{t: t, ctx: ctx, l: l, vs: vs.Name, src: src}

	// An idle connection holds the entry past the timeout, and works.
	c, err := l.Dial(ctx, "tcp", src, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	live := ce.wait("one live connection", 3*time.Second, func(e *entry) bool { return e != nil && e.Connections == 1 })
	time.Sleep(time.Duration(timeout)*time.Second + 1500*time.Millisecond)
	held := ce.wait("held by the idle connection", time.Second, func(e *entry) bool { return e != nil && e.Connections == 1 })
	if held.Member != live.Member || held.AgeSeconds < float64(timeout) || held.ExpiresIn != nil {
		t.Fatalf("after %ds idle: entry %v, want %v still live and older than the timeout", timeout+1, *held, *live)
	}
	first := idleGet(t, c, dst)
	if first != live.Member {
		t.Fatalf("the idle connection reached %s, its entry names %s", first, live.Member)
	}
	if m := get(); m != first {
		t.Fatalf("a new connection while the idle one is open reached %s, want %s", m, first)
	}
	// It closes: the countdown starts.
	c.Close()
	ce.checkExpiry(first, timeout, get)
}

// idleGet sends one GET on an open connection and returns the member that
// answered it.
func idleGet(t *testing.T, c net.Conn, dst netip.AddrPort) string {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", dst); err != nil {
		t.Fatalf("GET on the idle connection: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET on the idle connection: %v", err)
	}
	resp.Body.Close()
	m := resp.Header.Get(lab.HeaderMember)
	if m == "" {
		t.Fatalf("GET on the idle connection: status %d, no member named", resp.StatusCode)
	}
	return m
}
