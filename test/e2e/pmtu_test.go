package e2e_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/userspace/lab"
)

// pmtuDownload is the size of the download that must get through.
const pmtuDownload = 10 << 20

// Path MTU discovery through a NAT virtual server. The client sits behind a
// router whose link towards it has a 1400-byte MTU, while every host's own
// link has 1500: the client asks for 1460-byte segments, the member sends
// them, and the router answers each with "fragmentation needed" (IPv6:
// "packet too big") addressed to the VIP the segment came from. Only if the
// balancer hands that error to the member, rewritten to quote the segment as
// the member sent it, does the member learn the path's MTU (its route cache
// says "mtu 1400", with an expiry) and the download get through; otherwise
// every full-sized segment is lost (a PMTU black hole) and the download
// stalls. The other direction follows: errors from a member and from a
// router on a member's path reach the client about its own packet, from the
// VIP. Against a datapath without the translation every subtest fails.
func TestPathMTUDiscoveryThroughNAT(t *testing.T) {
	t.Parallel()
	l := newLab(t, lab.Spec{MemberCount: 1})
	ctx := testCtx(t, 150*time.Second)
	far, err := l.AddFarClient(1400)
	if err != nil {
		t.Fatal(err)
	}
	m := l.Members()[0]
	farMember, err := l.AddFarMember(m.Name, 1400)
	if err != nil {
		t.Fatal(err)
	}
	vss := []vsConf{
		{Name: "web4", VIP: l.VIP4(), Port: 80, Protocol: "tcp", Forwarding: "nat", Persistence: "sticky"},
		{Name: "web6", VIP: l.VIP6(), Port: 80, Protocol: "tcp", Forwarding: "nat", Persistence: "sticky"},
		// Nothing listens on the members' port 5400.
		{Name: "closed4", VIP: l.VIP4(), Port: 5400, Protocol: "udp", Forwarding: "nat", Persistence: "sticky"},
		{Name: "closed6", VIP: l.VIP6(), Port: 5400, Protocol: "udp", Forwarding: "nat", Persistence: "sticky"},
		// Behind the member, which routes to it over a 1400-byte MTU.
		{Name: "far4", VIP: l.VIP4(), Port: 5500, Protocol: "udp", Forwarding: "nat", Persistence: "sticky", Members: []netip.Addr{farMember.Addr4}},
		{Name: "far6", VIP: l.VIP6(), Port: 5500, Protocol: "udp", Forwarding: "nat", Persistence: "sticky", Members: []netip.Addr{farMember.Addr6}},
	}
	cfg := writeConfig(t, l, 1, []profileConf{{"sticky", 300}}, vss)
	startLimpet(t, l, cfg)
	// The virtual servers answer small requests first: the daemon is up.
	if _, err := l.WaitGet(ctx, l.ClientAddrs4()[0], lab.URL(netip.AddrPortFrom(l.VIP4(), 80), "/")); err != nil {
		t.Fatal(err)
	}
	if _, err := l.WaitGet(ctx, l.ClientAddrs6()[0], lab.URL(netip.AddrPortFrom(l.VIP6(), 80), "/")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		family    string
		vip, src  netip.Addr
		memberDst netip.Addr
		ipFlag    string
	}{
		{"IPv4", l.VIP4(), far.Addr4, far.Addr4, "-4"},
		{"IPv6", l.VIP6(), far.Addr6, far.Addr6, "-6"},
	} {
		t.Run(c.family, func(t *testing.T) {
			dst := netip.AddrPortFrom(c.vip, 80)
			before := exceptionCounters(t, ctx, l)
			t0 := time.Now()
			n, err := downloadFrom(l, c.src, dst, pmtuDownload, 30*time.Second)
			if err != nil {
				t.Fatalf("%s: %d MiB from the far client through %s: %v after %d bytes (%v)", c.family, pmtuDownload>>20, dst, err, n, time.Since(t0))
			}
			after := exceptionCounters(t, ctx, l)
			t.Logf("%s: %d bytes in %v; icmp_to_member %d -> %d", c.family, n, time.Since(t0).Round(time.Millisecond),
				before["icmp_to_member"], after["icmp_to_member"])
			if after["icmp_to_member"] <= before["icmp_to_member"] {
				t.Errorf("%s: no ICMP error counted as sent to the member (icmp_to_member %d -> %d)", c.family,
					before["icmp_to_member"], after["icmp_to_member"])
			}
			if after["icmp_no_flow"] != before["icmp_no_flow"] {
				t.Errorf("%s: icmp_no_flow %d -> %d: an error about a live flow found none", c.family,
					before["icmp_no_flow"], after["icmp_no_flow"])
			}
			out, err := l.RunCommand(ctx, m.Name, "ip", c.ipFlag, "route", "get", c.memberDst.String())
			if err != nil {
				t.Fatalf("%s: ip route get: %v: %s", c.family, err, out)
			}
			route := strings.Join(strings.Fields(string(out)), " ")
			t.Logf("%s: member %s: %s", c.family, m.Name, route)
			if !strings.Contains(route, "mtu 1400") || !strings.Contains(route, "expires") {
				t.Errorf("%s: the member's route to the client did not learn the path MTU: %q, want a cached 'mtu 1400'", c.family, route)
			}
		})
	}

	// The other way: the member's "port unreachable" about a datagram it
	// got from a client reaches the client from the VIP, quoting the
	// datagram as the client sent it, so the client's connected socket sees
	// ECONNREFUSED (untranslated, it would match no socket: a timeout).
	for _, c := range []struct {
		family string
		src    netip.Addr
		vip    netip.Addr
	}{{"IPv4 port unreachable", l.ClientAddrs4()[1], l.VIP4()}, {"IPv6 port unreachable", l.ClientAddrs6()[1], l.VIP6()}} {
		t.Run(c.family, func(t *testing.T) {
			before := exceptionCounters(t, ctx, l)
			_, err := l.UDPQuery(ctx, c.src, netip.AddrPortFrom(c.vip, 5400), []byte("anyone there?"))
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("%s: a datagram to %s:5400, where no member listens: %v, want ECONNREFUSED", c.family, c.vip, err)
			}
			after := exceptionCounters(t, ctx, l)
			if after["icmp_to_client"] <= before["icmp_to_client"] {
				t.Errorf("%s: icmp_to_client %d -> %d, want it counted", c.family, before["icmp_to_client"], after["icmp_to_client"])
			}
		})
	}

	// A router on a member's path: the member routes to the far member
	// over a 1400-byte MTU. A client's full-sized datagram (DF set, as
	// Linux sends UDP) is refused there with "fragmentation needed" /
	// "packet too big" addressed to the client; translated, it quotes the
	// datagram the client sent to the VIP, and the client's route cache
	// learns the MTU towards the VIP.
	for _, c := range []struct {
		family string
		src    netip.Addr
		vip    netip.Addr
		size   int // payload of a 1500-byte IP packet
		ipFlag string
	}{{"IPv4 client learns", l.ClientAddrs4()[2], l.VIP4(), 1500 - 28, "-4"}, {"IPv6 client learns", l.ClientAddrs6()[2], l.VIP6(), 1500 - 48, "-6"}} {
		t.Run(c.family, func(t *testing.T) {
			before := exceptionCounters(t, ctx, l)
			dst := netip.AddrPortFrom(c.vip, 5500)
			conn, err := l.Dial(ctx, "udp", c.src, dst)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			route := ""
			for i := 0; i < 20 && !(strings.Contains(route, "mtu 1400") && strings.Contains(route, "expires")); i++ {
				// The first datagram is refused; once the MTU is learnt,
				// a datagram that long fails with EMSGSIZE at once.
				_, _ = conn.Write(make([]byte, c.size))
				time.Sleep(50 * time.Millisecond)
				out, err := l.RunCommand(ctx, lab.HostClient, "ip", c.ipFlag, "route", "get", c.vip.String(), "from", c.src.String())
				if err != nil {
					t.Fatalf("ip route get: %v: %s", err, out)
				}
				route = strings.Join(strings.Fields(string(out)), " ")
			}
			t.Logf("%s: client: %s", c.family, route)
			if !strings.Contains(route, "mtu 1400") || !strings.Contains(route, "expires") {
				t.Errorf("%s: the client's route to %s did not learn the path MTU: %q, want a cached 'mtu 1400'", c.family, c.vip, route)
			}
			after := exceptionCounters(t, ctx, l)
			if after["icmp_to_client"] <= before["icmp_to_client"] {
				t.Errorf("%s: icmp_to_client %d -> %d, want it counted", c.family, before["icmp_to_client"], after["icmp_to_client"])
			}
		})
	}
}

// downloadFrom fetches /bytes?n=size from dst over one connection made in
// the far client's namespace, and returns how many body bytes arrived.
func downloadFrom(l *lab.Lab, src netip.Addr, dst netip.AddrPort, size int, limit time.Duration) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	conn, err := l.DialFrom(ctx, lab.HostFarClient, "tcp", src, dst)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(limit)); err != nil {
		return 0, err
	}
	if _, err := fmt.Fprintf(conn, "GET /bytes?n=%d HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", size, dst); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return n, err
	}
	if resp.StatusCode != http.StatusOK || n != resp.ContentLength || n < int64(size) {
		return n, fmt.Errorf("status %d, %d of %d bytes", resp.StatusCode, n, resp.ContentLength)
	}
	return n, nil
}
