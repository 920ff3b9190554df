package loader

import (
	"bytes"
	"net/netip"
	"testing"
	"time"
)

// A member address and port that serve two NAT virtual servers (two VIPs
// whose pools list it) cannot tell a reply's VIP from the member alone: its
// connections keep reverse flow entries, and each reply leaves from the VIP
// its client connected to. A member that serves one virtual server needs no
// reverse entry at all.
func TestDatapathMemberServingTwoVIPs(t *testing.T) {
	f := newFixture(t, Options{})
	s := standardState()
	vipB := netip.MustParseAddr("203.0.113.20")
	s.Pools[0].Eligible = []MemberID{0} // every v4 NAT connection goes to member 0
	s.VirtualServers = append(s.VirtualServers, VirtualServer{
		ID: 20, VIP: netip.AddrPortFrom(vipB, 80), Proto: ProtoTCP, PoolID: 0, TableID: TableNone,
	})
	if err := f.d.Apply(s); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		vip   netip.Addr
		sport uint16
	}{{vip4, 47000}, {vipB, 47001}} {
		if act, _ := f.run(syn(client4a, c.vip, c.sport, 80).build(t), f.cli); act != XDPRedirect {
			t.Fatalf("SYN to %s: verdict %v", c.vip, act)
		}
	}
	// UDP to member 0 from VIP4:53 only: member 0's 8080/udp serves one
	// virtual server and keeps no reverse entry.
	if act, _ := f.run(udpPkt(client4a, vip4, 47002, 53).build(t), f.cli); act != XDPRedirect {
		t.Fatalf("UDP to %s: verdict %v", vip4, act)
	}
	flows := f.flows()
	reverse := map[uint16]bool{}
	for _, fl := range flows {
		if fl.Reverse {
			reverse[fl.Dst.Port()] = true
		}
	}
	if !reverse[47000] || !reverse[47001] || reverse[47002] || len(reverse) != 2 {
		t.Fatalf("reverse entries for client ports %v, want 47000 and 47001 (shared member) only", reverse)
	}

	for _, c := range []struct {
		vip   netip.Addr
		dport uint16
		udp   bool
		vport uint16
	}{{vip4, 47000, false, 80}, {vipB, 47001, false, 80}, {vip4, 47002, true, 53}} {
		reply := pkt{src: member4[0], dst: client4a, sport: 8080, dport: c.dport, flags: "SA", udp: c.udp,
			payload: []byte{0x12, 0x34, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0}, srcMAC: memberMAC(0), dstMAC: f.memMAC}
		act, out := f.run(reply.build(t), f.mem)
		if act != XDPRedirect {
			t.Fatalf("reply to port %d: verdict %v, want XDP_REDIRECT", c.dport, act)
		}
		want := reply
		want.src, want.sport = c.vip, c.vport
		want.srcMAC, want.dstMAC = f.cliMAC, gwMAC
		want.ttl = 63
		if w := want.build(t); !bytes.Equal(out, w) {
			t.Fatalf("reply to port %d, want from %s:\n got %x\nwant %x", c.dport, c.vip, out, w)
		}
	}
	for _, id := range []VirtualServerID{0, 20} {
		c, err := f.d.VSCounters(id)
		if err != nil {
			t.Fatal(err)
		}
		if c.ReplyPackets != 1 {
			t.Errorf("virtual server %d counted %d replies, want 1", id, c.ReplyPackets)
		}
	}
	// Expiring the connections takes their reverse entries with them.
	// A second on, so that the GC's reading of the (coarse) clock is past
	// the connections' stamps: one at or after it is not idle.
	off, err := f.d.ClockOffset()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.d.SetClockOffset(off + time.Second); err != nil {
		t.Fatal(err)
	}
	for _, fl := range flows {
		if !fl.Reverse {
			if err := f.d.RunGC([]GCRequest{ExpireFlow(fl, 0)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if left, err := f.d.Flows(); err != nil || len(left) != 0 {
		t.Fatalf("flows left after expiry: %+v (%v)", left, err)
	}
}

// A UDP flow on which only the server sends (a stream pushed to a client
// that sent one request) stays alive while the member's replies flow, and
// expires once they stop, as the client's own packets would keep it.
func TestDatapathServerPushUDPIdleExpiry(t *testing.T) {
	f := newFixture(t, Options{})
	s := standardState()
	s.Pools[0].Eligible = []MemberID{0}
	if err := f.d.Apply(s); err != nil {
		t.Fatal(err)
	}
	const idle = 30 * time.Second
	start := 100 * time.Hour
	if err := f.d.SetClock(start); err != nil {
		t.Fatal(err)
	}
	client := netip.AddrPortFrom(client4a, 48000)
	vip := netip.AddrPortFrom(vip4, 53)
	if act, _ := f.run(udpPkt(client4a, vip4, 48000, 53).build(t), f.cli); act != XDPRedirect {
		t.Fatalf("request verdict %v", act)
	}
	push := pkt{src: member4[0], dst: client4a, sport: 8080, dport: 48000, udp: true,
		payload: []byte{0x12, 0x34, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0}, srcMAC: memberMAC(0), dstMAC: f.memMAC}
	expire := func() GCResult {
		t.Helper()
		req := ExpireConnection(client, vip, ProtoUDP, idle)
		reqs := []GCRequest{req}
		if err := f.d.RunGC(reqs); err != nil {
			t.Fatal(err)
		}
		return reqs[0].Result
	}
	// Three idle timeouts' worth of pushes, one every 20 s.
	for at := 20 * time.Second; at <= 3*idle; at += 20 * time.Second {
		if err := f.d.SetClock(start + at); err != nil {
			t.Fatal(err)
		}
		if act, _ := f.run(push.build(t), f.mem); act != XDPRedirect {
			t.Fatalf("push at +%v: verdict %v, want XDP_REDIRECT", at, act)
		}
		if r := expire(); r != GCSkipped {
			t.Fatalf("sweep at +%v, the server still pushing: result %v, want skipped", at, r)
		}
	}
	if err := f.d.SetClock(start + 3*idle + idle + time.Second); err != nil {
		t.Fatal(err)
	}
	if r := expire(); r != GCDone {
		t.Fatalf("sweep after the pushes stopped for %v: result %v, want done", idle, r)
	}
	if _, ok, err := f.d.LookupFlow(client, vip, ProtoUDP); err != nil || ok {
		t.Fatalf("flow still there after expiry (%v)", err)
	}
	if act, _ := f.run(push.build(t), f.mem); act != XDPPass {
		t.Fatalf("push after expiry: verdict %v, want XDP_PASS (no connection)", act)
	}
}
