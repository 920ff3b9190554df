package loader

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// icmpErr describes an ICMP or ICMPv6 error: its outer addresses and MACs,
// type and code, the 4 bytes after the checksum (an MTU, say) and the
// packet it quotes, cut to quoteLen bytes (0: whole).
type icmpErr struct {
	srcMAC, dstMAC net.HardwareAddr
	src, dst       netip.Addr
	typ, code      uint8
	rest           uint32
	ttl            uint8
	quote          pkt
	quoteLen       int
}

// onesSum is the 16-bit one's-complement sum of b, computed from scratch.
func onesSum(b []byte, sum uint32) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	return sum
}

func fold(sum uint32) uint16 {
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// build renders the error with every checksum computed from scratch: the
// quote's (by gopacket, over the whole quoted packet, then cut), the ICMP
// one (with the IPv6 pseudo-header for ICMPv6) and the outer IPv4 header's.
func (e icmpErr) build(t *testing.T) []byte {
	t.Helper()
	q := e.quote.build(t)[14:] // the quoted IP packet, without Ethernet
	if e.quoteLen > 0 && e.quoteLen < len(q) {
		q = q[:e.quoteLen]
	}
	msg := make([]byte, 8, 8+len(q))
	msg[0], msg[1] = e.typ, e.code
	binary.BigEndian.PutUint32(msg[4:], e.rest)
	msg = append(msg, q...)
	var sum uint32
	if e.src.Is6() {
		s, d := e.src.As16(), e.dst.As16()
		sum = onesSum(s[:], 0)
		sum = onesSum(d[:], sum)
		sum += uint32(len(msg)>>16) + uint32(len(msg)&0xffff) + uint32(layers.IPProtocolICMPv6)
	}
	binary.BigEndian.PutUint16(msg[2:], fold(onesSum(msg, sum)))
	ttl := e.ttl
	if ttl == 0 {
		ttl = 64
	}
	srcMAC, dstMAC := e.srcMAC, e.dstMAC
	if srcMAC == nil {
		srcMAC = gwMAC
	}
	if dstMAC == nil {
		dstMAC = net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 1}
	}
	eth := &layers.Ethernet{SrcMAC: srcMAC, DstMAC: dstMAC, EthernetType: layers.EthernetTypeIPv4}
	var ip gopacket.SerializableLayer
	if e.src.Is4() {
		ip = &layers.IPv4{Version: 4, TTL: ttl, Protocol: layers.IPProtocolICMPv4, SrcIP: e.src.AsSlice(), DstIP: e.dst.AsSlice()}
	} else {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip = &layers.IPv6{Version: 6, HopLimit: ttl, NextHeader: layers.IPProtocolICMPv6, SrcIP: e.src.AsSlice(), DstIP: e.dst.AsSlice()}
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, gopacket.Payload(msg)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

const (
	icmpUnreach, icmpPortUnreach, icmpFragNeeded, icmpTimeExceeded = 3, 3, 4, 11
	icmp6Unreach, icmp6PortUnreach, icmp6TooBig, icmp6TimeExceeded = 1, 4, 2, 3
)

// icmpFixture: VS 0 (VIP4:80/tcp), VS 1 (VIP4:53/udp), VS 2 (VIP6:80/tcp)
// and VS 4 (VIP6:53/udp) send every client to member 0 or 3, and one
// connection of each is open from client A port 40000.
func icmpFixture(t *testing.T) *fixture {
	f := newFixture(t, Options{})
	s := standardState()
	s.Pools[0].Eligible = []MemberID{0}
	s.Pools[1].Eligible = []MemberID{3}
	if err := f.d.Apply(s); err != nil {
		t.Fatal(err)
	}
	for _, in := range []pkt{
		syn(client4a, vip4, 40000, 80), udpPkt(client4a, vip4, 40000, 53),
		syn(client6a, vip6, 40000, 80), udpPkt(client6a, vip6, 40000, 53),
	} {
		if act, _ := f.run(in.build(t), f.cli); act != XDPRedirect {
			t.Fatalf("opening %s -> %s: verdict %v", in.src, in.dst, act)
		}
	}
	return f
}

// The packet each member got, as a router on its path quotes it.
func natQuote(client, member netip.Addr, udp bool) pkt {
	q := syn(client, member, 40000, 8080)
	if udp {
		q = udpPkt(client, member, 40000, 8080)
	}
	q.flags, q.seq, q.ack = "PA", 1000, 2000
	q.payload = bytes.Repeat([]byte("x"), 200)
	q.ttl = 63
	return q
}

// A reply as the client's path quotes it.
func replyQuote(vip, client netip.Addr, vport uint16, udp bool) pkt {
	q := natQuote(vip, client, udp)
	q.sport, q.dport = vport, 40000
	return q
}

// expectRun runs in and checks the verdict and the output byte for byte,
// and that its checksums are what a recomputation gives.
func (f *fixture) expectRun(name string, in []byte, ingress fixtureLink, wantAct XDPAction, want []byte) {
	f.t.Helper()
	act, out := f.run(in, ingress)
	if act != wantAct {
		f.t.Fatalf("%s: verdict %v, want %v", name, act, wantAct)
	}
	if !bytes.Equal(out, want) {
		f.t.Fatalf("%s:\n got %x\nwant %x", name, out, want)
	}
}

// Errors from a member, or a router on its path, about a client's packet
// reach the client from the VIP, quoting the client's packet as it sent it.
func TestDatapathICMPToClient(t *testing.T) {
	f := icmpFixture(t)
	router4, router6 := netip.MustParseAddr("10.1.0.254"), netip.MustParseAddr("fd00:1::fe")
	cases := []struct {
		name      string
		from      netip.Addr
		client    netip.Addr
		member    netip.Addr
		vip       netip.Addr
		vport     uint16
		udp       bool
		typ, code uint8
		rest      uint32
		quoteLen  int
	}{
		{"v4 port unreachable from the member", member4[0], client4a, member4[0], vip4, 53, true, icmpUnreach, icmpPortUnreach, 0, 0},
		{"v4 frag-needed from a router, whole quote", router4, client4a, member4[0], vip4, 80, false, icmpUnreach, icmpFragNeeded, 1400, 0},
		{"v4 frag-needed from a router, 8 bytes of TCP", router4, client4a, member4[0], vip4, 80, false, icmpUnreach, icmpFragNeeded, 1400, 28},
		{"v4 time exceeded, quote up to the TCP checksum", router4, client4a, member4[0], vip4, 80, false, icmpTimeExceeded, 0, 0, 38},
		{"v6 port unreachable from the member", member6[0], client6a, member6[0], vip6, 53, true, icmp6Unreach, icmp6PortUnreach, 0, 0},
		{"v6 packet too big from a router", router6, client6a, member6[0], vip6, 80, false, icmp6TooBig, 0, 1280, 0},
		{"v6 packet too big from a router, 8 bytes of TCP", router6, client6a, member6[0], vip6, 80, false, icmp6TooBig, 0, 1280, 48},
		{"v6 time exceeded from a router", router6, client6a, member6[0], vip6, 80, false, icmp6TimeExceeded, 0, 0, 0},
	}
	toClient := reasonIndex("icmp_to_client")
	for _, c := range cases {
		before := f.reasons()[toClient]
		in := icmpErr{src: c.from, dst: c.client, typ: c.typ, code: c.code, rest: c.rest, quoteLen: c.quoteLen,
			srcMAC: memberMAC(0), dstMAC: f.memMAC, quote: natQuote(c.client, c.member, c.udp)}
		want := in
		want.src = c.vip
		want.quote.dst, want.quote.dport = c.vip, c.vport
		want.srcMAC, want.dstMAC, want.ttl = f.cliMAC, gwMAC, 63
		f.expectRun(c.name, in.build(t), f.mem, XDPRedirect, want.build(t))
		if n := f.reasons()[toClient]; n != before+1 {
			t.Errorf("%s: icmp_to_client %d -> %d, want one more", c.name, before, n)
		}
	}
}

// Errors from the client's path about a reply (from the VIP) go to the
// flow's member, about the reply as the member sent it.
func TestDatapathICMPToMember(t *testing.T) {
	f := icmpFixture(t)
	cases := []struct {
		name     string
		from     netip.Addr
		client   netip.Addr
		member   netip.Addr
		memIdx   int
		vip      netip.Addr
		vport    uint16
		udp      bool
		typ      uint8
		code     uint8
		rest     uint32
		quoteLen int
	}{
		{"v4 frag-needed", client4b, client4a, member4[0], 0, vip4, 80, false, icmpUnreach, icmpFragNeeded, 1400, 0},
		{"v4 frag-needed, 8 bytes of TCP", client4b, client4a, member4[0], 0, vip4, 80, false, icmpUnreach, icmpFragNeeded, 1400, 28},
		{"v4 port unreachable from the client", client4a, client4a, member4[0], 0, vip4, 53, true, icmpUnreach, icmpPortUnreach, 0, 0},
		{"v6 packet too big", client6b, client6a, member6[0], 0, vip6, 80, false, icmp6TooBig, 0, 1400, 0},
		{"v6 packet too big, 8 bytes of UDP", client6b, client6a, member6[0], 0, vip6, 53, true, icmp6TooBig, 0, 1400, 48},
	}
	toMember := reasonIndex("icmp_to_member")
	for _, c := range cases {
		before := f.reasons()[toMember]
		in := icmpErr{src: c.from, dst: c.vip, typ: c.typ, code: c.code, rest: c.rest, quoteLen: c.quoteLen,
			quote: replyQuote(c.vip, c.client, c.vport, c.udp)}
		want := in
		want.dst = c.member
		want.quote.src, want.quote.sport = c.member, 8080
		want.srcMAC, want.dstMAC, want.ttl = f.memMAC, memberMAC(c.memIdx), 63
		f.expectRun(c.name, in.build(t), f.cli, XDPRedirect, want.build(t))
		if n := f.reasons()[toMember]; n != before+1 {
			t.Errorf("%s: icmp_to_member %d -> %d, want one more", c.name, before, n)
		}
	}
}

// An error that matches no flow, or whose quote cannot be read, goes to the
// stack untouched and counted; an error that quotes no member's packet is
// host traffic, passed and not counted.
func TestDatapathICMPNoFlow(t *testing.T) {
	f := icmpFixture(t)
	noFlow, badQuote := reasonIndex("icmp_no_flow"), reasonIndex("icmp_bad_quote")
	other := netip.MustParseAddr("10.9.0.1")
	cases := []struct {
		name    string
		in      icmpErr
		ingress fixtureLink
		reason  int // -1: none
	}{
		{"v4 to the VIP, a client with no flow", icmpErr{src: client4b, dst: vip4, typ: icmpUnreach, code: icmpFragNeeded, rest: 1400,
			quote: replyQuote(vip4, client4b, 80, false)}, f.cli, noFlow},
		{"v6 to the VIP, another VIP port", icmpErr{src: client6b, dst: vip6, typ: icmp6TooBig, rest: 1400,
			quote: replyQuote(vip6, client6a, 443, false)}, f.cli, noFlow},
		{"v4 to the VIP, quoting another source", icmpErr{src: client4b, dst: vip4, typ: icmpUnreach, code: icmpFragNeeded, rest: 1400,
			quote: replyQuote(other, client4a, 80, false)}, f.cli, noFlow},
		{"v4 to the VIP, 4 bytes of TCP", icmpErr{src: client4b, dst: vip4, typ: icmpUnreach, code: icmpFragNeeded, rest: 1400,
			quote: replyQuote(vip4, client4a, 80, false), quoteLen: 24}, f.cli, badQuote},
		{"v6 to the VIP, 10 bytes of IPv6", icmpErr{src: client6b, dst: vip6, typ: icmp6TooBig, rest: 1400,
			quote: replyQuote(vip6, client6a, 80, false), quoteLen: 10}, f.cli, badQuote},
		{"v4 to a client, a member's port no flow uses", icmpErr{src: member4[0], dst: client4b, typ: icmpUnreach, code: icmpPortUnreach,
			quote: natQuote(client4b, member4[0], true)}, f.mem, noFlow},
		{"v6 to a client, quoting another client", icmpErr{src: member6[0], dst: client6b, typ: icmp6Unreach, code: icmp6PortUnreach,
			quote: natQuote(client6a, member6[0], true)}, f.mem, noFlow},
		{"v4 to a host, quoting no member", icmpErr{src: other, dst: client4a, typ: icmpUnreach, code: icmpPortUnreach,
			quote: natQuote(client4a, other, true)}, f.mem, -1},
	}
	for _, c := range cases {
		before := f.reasons()
		in := c.in.build(t)
		f.expectRun(c.name, in, c.ingress, XDPPass, in)
		after := f.reasons()
		for i := range after {
			want := before[i]
			if i == c.reason {
				want++
			}
			if after[i] != want {
				t.Errorf("%s: reason %s %d -> %d, want %d", c.name, ReasonNames[i], before[i], after[i], want)
			}
		}
	}
}
