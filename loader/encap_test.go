package loader

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

var (
	encapSrc4 = netip.MustParseAddr("10.1.0.1")
	encapSrc6 = netip.MustParseAddr("fd00:1::1")
)

// encapState: VS 0 = VIP4:80/tcp, VS 1 = VIP6:80/tcp, VS 2 = VIP6:443/tcp
// over v4 members (6in4), VS 3 = VIP4:443/tcp over v6 members (4in6), VS 4
// = VIP4:53/udp; all encapsulated with e, persistent. Pool 0 holds the v4
// members (ids 0-2), pool 1 the v6 ones (3-5), both with port 0 as DSR.
func encapState(e Encap) State {
	s := State{
		Pools: []Pool{{ID: 0, Eligible: []MemberID{0, 1, 2}}, {ID: 1, Eligible: []MemberID{3, 4, 5}}},
		Encap: EncapSettings{SourceV4: encapSrc4, SourceV6: encapSrc6},
	}
	for i := range member4 {
		s.Members = append(s.Members, Member{ID: MemberID(i), PoolID: 0, Addr: netip.AddrPortFrom(member4[i], 0), Up: true})
	}
	for i := range member6 {
		s.Members = append(s.Members, Member{ID: MemberID(3 + i), PoolID: 1, Addr: netip.AddrPortFrom(member6[i], 0), Up: true})
	}
	add := func(id uint32, vip netip.Addr, port uint16, proto Protocol, pool uint32) {
		tid := NewTableID(id, true)
		s.Tables = append(s.Tables, Table{ID: tid, MaxEntries: 1024})
		s.VirtualServers = append(s.VirtualServers, VirtualServer{
			ID: VirtualServerID(id), VIP: netip.AddrPortFrom(vip, port), Proto: proto, PoolID: PoolID(pool), TableID: tid,
			DSR: true, Encap: e, IPv4Prefix: 32, IPv6Prefix: 128, Timeout: 300 * time.Second,
		})
	}
	add(0, vip4, 80, ProtoTCP, 0)
	add(1, vip6, 80, ProtoTCP, 1)
	add(2, vip6, 443, ProtoTCP, 0)
	add(3, vip4, 443, ProtoTCP, 1)
	add(4, vip4, 53, ProtoUDP, 0)
	return s
}

// encapsulated is what the datapath should send for the client frame in
// (to a VIP) when it tunnels it to member, which has the MAC dstMAC.
func encapsulated(t *testing.T, in []byte, e Encap, member netip.Addr, srcMAC, dstMAC net.HardwareAddr, sport uint16, gueDport uint16) []byte {
	t.Helper()
	inner := in[14:]
	innerV6 := inner[0]>>4 == 6
	var tos uint8
	if innerV6 {
		tos = inner[0]<<4 | inner[1]>>4
	} else {
		tos = inner[1]
	}
	proto := layers.IPProtocolIPv4
	if innerV6 {
		proto = layers.IPProtocolIPv6
	}
	if e == EncapGUE {
		proto = layers.IPProtocolUDP
	}
	ls := []gopacket.SerializableLayer{}
	eth := &layers.Ethernet{SrcMAC: srcMAC, DstMAC: dstMAC, EthernetType: layers.EthernetTypeIPv4}
	var src netip.Addr
	if member.Is4() {
		src = encapSrc4
		ls = append(ls, eth, &layers.IPv4{Version: 4, IHL: 5, TOS: tos, Flags: layers.IPv4DontFragment, TTL: 64, Protocol: proto,
			SrcIP: src.AsSlice(), DstIP: member.AsSlice()})
	} else {
		src = encapSrc6
		eth.EthernetType = layers.EthernetTypeIPv6
		ls = append(ls, eth, &layers.IPv6{Version: 6, TrafficClass: tos, FlowLabel: uint32(sport) << 4, NextHeader: proto, HopLimit: 64,
			SrcIP: src.AsSlice(), DstIP: member.AsSlice()})
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, append(ls, gopacket.Payload(inner))...); err != nil {
		t.Fatal(err)
	}
	out := buf.Bytes()
	if e != EncapGUE {
		return out
	}
	// The UDP header goes between the outer header and the inner packet,
	// with no checksum: gopacket would compute one, so it is written here.
	hl := 14 + 20
	if member.Is6() {
		hl = 14 + 40
	}
	udp := binary.BigEndian.AppendUint16(nil, sport)
	udp = binary.BigEndian.AppendUint16(udp, gueDport)
	udp = binary.BigEndian.AppendUint16(udp, uint16(8+len(inner)))
	udp = append(udp, 0, 0)
	gue := append(append(append([]byte(nil), out[:hl]...), udp...), inner...)
	if member.Is4() {
		binary.BigEndian.PutUint16(gue[14+2:], uint16(20+8+len(inner)))
		gue[14+10], gue[14+11] = 0, 0
		binary.BigEndian.PutUint16(gue[14+10:], ipv4Checksum(gue[14:14+20]))
	} else {
		binary.BigEndian.PutUint16(gue[14+4:], uint16(8+len(inner)))
	}
	return gue
}

func ipv4Checksum(h []byte) uint16 {
	var s uint32
	for i := 0; i < len(h); i += 2 {
		s += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

func clientAddrPort(p pkt) (netip.AddrPort, netip.AddrPort) {
	return netip.AddrPortFrom(p.src, p.sport), netip.AddrPortFrom(p.dst, p.dport)
}

// TestDatapathEncapForms: every form, IPIP and GUE, leaves as the whole
// client packet behind the outer header, to the member persistence chose,
// with the member's MAC; a flow's next packets go the same way.
func TestDatapathEncapForms(t *testing.T) {
	f := newFixture(t, Options{})
	for _, e := range []Encap{EncapIPIP, EncapGUE} {
		if err := f.d.Apply(encapState(e)); err != nil {
			t.Fatal(err)
		}
		cases := []struct {
			name    string
			in      pkt
			table   TableID
			members []netip.Addr
		}{
			{"4in4", syn(client4a, vip4, 41000, 80), NewTableID(0, true), member4},
			{"6in6", syn(client6a, vip6, 41000, 80), NewTableID(1, true), member6},
			{"6in4", syn(client6a, vip6, 41001, 443), NewTableID(2, true), member4},
			{"4in6", syn(client4a, vip4, 41001, 443), NewTableID(3, true), member6},
			{"4in4 udp", udpPkt(client4b, vip4, 41002, 53), NewTableID(4, true), member4},
		}
		for _, c := range cases {
			name := map[Encap]string{EncapIPIP: "ipip ", EncapGUE: "gue "}[e] + c.name
			c.in.payload = []byte("encapsulated payload")
			c.in.ttl = 17
			in := c.in.build(t)
			in[15] = 0xb8 // DSCP EF: the outer header copies it
			if c.in.src.Is6() {
				in[14], in[15] = 0x6b, 0x80
			} else {
				binary.BigEndian.PutUint16(in[14+10:], 0)
				binary.BigEndian.PutUint16(in[14+10:], ipv4Checksum(in[14:34]))
			}
			for round := range 2 {
				act, out := f.run(in, f.cli)
				if act != XDPRedirect {
					t.Fatalf("%s: verdict %v, want XDP_REDIRECT", name, act)
				}
				pe, ok := f.entry(c.table, c.in.src)
				if !ok {
					t.Fatalf("%s: no persistence entry", name)
				}
				idx := -1
				for i, m := range c.members {
					if m == pe.Server.Addr() {
						idx = i
					}
				}
				if idx < 0 {
					t.Fatalf("%s: persisted to %s, not a member of the pool", name, pe.Server)
				}
				src, dst := clientAddrPort(c.in)
				proto := ProtoTCP
				if c.in.udp {
					proto = ProtoUDP
				}
				want := encapsulated(t, in, e, c.members[idx], f.memMAC, memberMAC(idx), GUESourcePort(src, dst, uint8(proto)), DefaultGUEPort)
				if !bytes.Equal(out, want) {
					t.Fatalf("%s (packet %d):\n got %x\nwant %x", name, round, out, want)
				}
				// The flow names its member in the member's family,
				// whatever the client's (a tunnel across families).
				fl, ok, err := f.d.LookupFlow(src, dst, proto)
				if err != nil || !ok || fl.Target.Addr() != pe.Server.Addr() {
					t.Fatalf("%s: flow %+v (found %v, %v), want its target %s", name, fl, ok, err, pe.Server.Addr())
				}
			}
		}
	}
}

// TestDatapathGUESourcePortEntropy: the outer source port follows the inner
// flow: many client ports spread over the ephemeral range, and one flow
// keeps its port; the configured GUE port is the destination.
func TestDatapathGUESourcePortEntropy(t *testing.T) {
	f := newFixture(t, Options{})
	s := encapState(EncapGUE)
	s.Encap.GUEPort = 7000
	if err := f.d.Apply(s); err != nil {
		t.Fatal(err)
	}
	seen := map[uint16]bool{}
	const flows = 64
	for i := range flows {
		p := syn(client4a, vip4, uint16(30000+i), 80)
		act, out := f.run(p.build(t), f.cli)
		if act != XDPRedirect {
			t.Fatalf("verdict %v", act)
		}
		sport, dport := binary.BigEndian.Uint16(out[34:]), binary.BigEndian.Uint16(out[36:])
		src, dst := clientAddrPort(p)
		if want := GUESourcePort(src, dst, uint8(ProtoTCP)); sport != want {
			t.Fatalf("flow %d: source port %d, want %d", i, sport, want)
		}
		if sport < 49152 || dport != 7000 {
			t.Fatalf("flow %d: ports %d -> %d, want an ephemeral source and 7000", i, sport, dport)
		}
		seen[sport] = true
	}
	// 64 flows in 16384 ports: a hash collides rarely, a constant always.
	if len(seen) < flows-4 {
		t.Fatalf("%d flows got only %d source ports", flows, len(seen))
	}
}

// TestDatapathEncapNoSource: a member whose family has no configured outer
// source is not reached: dropped and counted, not sent from a wrong address.
func TestDatapathEncapNoSource(t *testing.T) {
	f := newFixture(t, Options{})
	s := encapState(EncapIPIP)
	s.Encap.SourceV6 = netip.Addr{}
	if err := f.d.Apply(s); err != nil {
		t.Fatal(err)
	}
	before := f.reasons()[reasonIndex("encap_no_source")]
	if act, _ := f.run(syn(client6a, vip6, 41000, 80).build(t), f.cli); act != XDPDrop {
		t.Fatalf("verdict %v, want XDP_DROP", act)
	}
	if got := f.reasons()[reasonIndex("encap_no_source")]; got != before+1 {
		t.Fatalf("encap_no_source %d -> %d, want one more", before, got)
	}
	if act, _ := f.run(syn(client4a, vip4, 41000, 80).build(t), f.cli); act != XDPRedirect {
		t.Fatalf("v4 member: verdict %v, want XDP_REDIRECT", act)
	}
}

// tooBig is the ICMP the datapath should answer the client frame in with,
// for an inner MTU of mtu.
func tooBig(t *testing.T, in []byte, mtu uint32) []byte {
	t.Helper()
	inner := in[14:]
	q := min(len(inner), 512)
	quote := inner[:q]
	eth := &layers.Ethernet{SrcMAC: in[0:6], DstMAC: in[6:12]}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	var err error
	if inner[0]>>4 == 4 {
		eth.EthernetType = layers.EthernetTypeIPv4
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: inner[16:20], DstIP: inner[12:16]}
		icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 4), Seq: uint16(mtu)}
		err = gopacket.SerializeLayers(buf, opts, eth, ip, icmp, gopacket.Payload(quote))
	} else {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip := &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolICMPv6, HopLimit: 64, SrcIP: inner[24:40], DstIP: inner[8:24]}
		icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(2, 0)}
		_ = icmp.SetNetworkLayerForChecksum(ip)
		err = gopacket.SerializeLayers(buf, opts, eth, ip, icmp, gopacket.Payload(append(binary.BigEndian.AppendUint32(nil, mtu), quote...)))
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestDatapathEncapTooBig: a client packet that fits the member's link but
// not with the tunnel's header is answered with ICMP frag-needed / packet
// too big from the VIP, carrying the MTU left inside the tunnel, sent back
// where it came from and counted; one a byte shorter goes through. Through
// the FIB and through the next-hop cache (whose MTU sends it to the FIB).
func TestDatapathEncapTooBig(t *testing.T) {
	f := newFixture(t, Options{})
	const linkMTU = 1500
	for _, cached := range []bool{false, true} {
		for _, e := range []Encap{EncapIPIP, EncapGUE} {
			if err := f.d.Apply(encapState(e)); err != nil {
				t.Fatal(err)
			}
			if cached {
				f.publishAll(linkMTU, time.Hour)
			} else if err := f.d.DropNextHops(); err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				name     string
				client   netip.Addr
				vip      netip.Addr
				port     uint16
				memberV6 bool
			}{
				{"4in4", client4a, vip4, 80, false},
				{"6in6", client6a, vip6, 80, true},
				{"6in4", client6a, vip6, 443, false},
				{"4in6", client4a, vip4, 443, true},
			} {
				name := map[Encap]string{EncapIPIP: "ipip ", EncapGUE: "gue "}[e] + c.name
				if cached {
					name += " cached"
				}
				ovh := EncapOverhead(e, c.memberV6)
				hdr := 40
				if c.client.Is4() {
					hdr = 20
				}
				fits := syn(c.client, c.vip, 42000, c.port)
				fits.flags = "A"
				fits.payload = make([]byte, linkMTU-ovh-hdr-20)
				if act, _ := f.run(fits.build(t), f.cli); act != XDPRedirect {
					t.Fatalf("%s: a packet that just fits: verdict %v, want XDP_REDIRECT", name, act)
				}
				big := fits
				big.payload = make([]byte, len(fits.payload)+1)
				for i := range big.payload {
					big.payload[i] = byte(i)
				}
				in := big.build(t)
				before := f.reasons()[reasonIndex("encap_too_big")]
				act, out := f.run(in, f.cli)
				if act != XDPRedirect {
					t.Fatalf("%s: too big: verdict %v, want XDP_REDIRECT back to the client", name, act)
				}
				if want := tooBig(t, in, uint32(linkMTU-ovh)); !bytes.Equal(out, want) {
					t.Fatalf("%s: too big:\n got %x\nwant %x", name, out, want)
				}
				if got := f.reasons()[reasonIndex("encap_too_big")]; got != before+1 {
					t.Fatalf("%s: encap_too_big %d -> %d, want one more", name, before, got)
				}
			}
		}
	}
}

// TestDatapathICMPToTunnelledMember: an error from the client's path about
// a tunnelled member's reply (from the VIP) reaches the member through the
// tunnel, every form, untouched inside it: sent as it was, it would have
// followed the VIP's route back to the balancer (or, across families, had
// no route at all).
func TestDatapathICMPToTunnelledMember(t *testing.T) {
	f := newFixture(t, Options{})
	toMember := reasonIndex("icmp_to_member")
	for _, e := range []Encap{EncapIPIP, EncapGUE} {
		if err := f.d.Apply(encapState(e)); err != nil {
			t.Fatal(err)
		}
		cases := []struct {
			name           string
			client, router netip.Addr
			vip            netip.Addr
			port           uint16
			table          TableID
			members        []netip.Addr
		}{
			{"4in4", client4a, client4b, vip4, 80, NewTableID(0, true), member4},
			{"6in6", client6a, client6b, vip6, 80, NewTableID(1, true), member6},
			{"6in4", client6a, client6b, vip6, 443, NewTableID(2, true), member4},
			{"4in6", client4a, client4b, vip4, 443, NewTableID(3, true), member6},
		}
		for _, c := range cases {
			name := map[Encap]string{EncapIPIP: "ipip ", EncapGUE: "gue "}[e] + c.name
			if act, _ := f.run(syn(c.client, c.vip, 40000, c.port).build(t), f.cli); act != XDPRedirect {
				t.Fatalf("%s: opening the flow: verdict %v", name, act)
			}
			pe, ok := f.entry(c.table, c.client)
			idx := slices.Index(c.members, pe.Server.Addr())
			if !ok || idx < 0 {
				t.Fatalf("%s: entry %+v (%v), want one of %v", name, pe, ok, c.members)
			}
			typ, code, rest, proto := uint8(icmpUnreach), uint8(icmpFragNeeded), uint32(1400), uint8(1)
			if c.vip.Is6() {
				typ, code, rest, proto = icmp6TooBig, 0, 1400, 58
			}
			in := icmpErr{src: c.router, dst: c.vip, typ: typ, code: code, rest: rest,
				quote: replyQuote(c.vip, c.client, c.port, false)}.build(t)
			want := encapsulated(t, in, e, c.members[idx], f.memMAC, memberMAC(idx),
				GUESourcePort(netip.AddrPortFrom(c.router, 0), netip.AddrPortFrom(c.vip, 0), proto), DefaultGUEPort)
			before := f.reasons()[toMember]
			f.expectRun(name, in, f.cli, XDPRedirect, want)
			if n := f.reasons()[toMember]; n != before+1 {
				t.Errorf("%s: icmp_to_member %d -> %d, want one more", name, before, n)
			}
		}
	}
}
