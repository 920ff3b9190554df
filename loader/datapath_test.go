package loader

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

func TestDatapathNonVIPPassesUntouched(t *testing.T) {
	f := newStandardFixture(t)
	for _, tc := range []struct {
		name string
		p    pkt
	}{
		{"ipv4 tcp", syn(client4a, netip.MustParseAddr("203.0.113.99"), 1000, 80)},
		{"ipv4 udp", udpPkt(client4a, netip.MustParseAddr("203.0.113.99"), 1000, 53)},
		{"ipv6 tcp", syn(client6a, netip.MustParseAddr("2001:db8:f::99"), 1000, 80)},
		{"ipv4 VIP other port", syn(client4a, vip4, 1000, 443)},
		{"ipv6 VIP other port", syn(client6a, vip6, 1000, 443)},
		{"ipv4 fragment not for a VIP", pkt{src: client4a, dst: netip.MustParseAddr("203.0.113.99"), sport: 1, dport: 2, flags: "S", fragment: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.p.build(t)
			act, out := f.run(in, f.cli)
			if act != XDPPass {
				t.Fatalf("verdict %v, want XDP_PASS", act)
			}
			if !bytes.Equal(out, in) {
				t.Fatalf("packet changed:\n in %x\nout %x", in, out)
			}
		})
	}
	flows := f.flows()
	if len(flows) != 0 {
		t.Fatalf("non-VIP traffic created %d flows", len(flows))
	}
}

func TestDatapathPersistenceAndNAT(t *testing.T) {
	f := newFixture(t, Options{})
	s := standardState()
	if err := f.d.Apply(s); err != nil {
		t.Fatal(err)
	}
	for _, fam := range []struct {
		name       string
		vip        netip.Addr
		a, b       netip.Addr
		tcpVS      uint32
		udpVS      uint32
		memberBase uint32
	}{
		{"ipv4", vip4, client4a, client4b, 0, 1, 0},
		{"ipv6", vip6, client6a, client6b, 2, 4, 3},
	} {
		t.Run(fam.name, func(t *testing.T) {
			var first netip.AddrPort
			for _, tc := range []struct {
				name  string
				in    pkt
				table uint32
				same  bool // same member as the first flow of client a
			}{
				{"client a first flow gets a member", syn(fam.a, fam.vip, 40000, 80), fam.tcpVS, false},
				{"client a second flow sticks", syn(fam.a, fam.vip, 40001, 80), fam.tcpVS, true},
				{"client a data on first flow", pkt{src: fam.a, dst: fam.vip, sport: 40000, dport: 80, flags: "PA", payload: []byte("GET / HTTP/1.1\r\n\r\n")}, fam.tcpVS, true},
				{"client b goes round robin", syn(fam.b, fam.vip, 40000, 80), fam.tcpVS, false},
				{"udp gets its own table", udpPkt(fam.a, fam.vip, 5353, 53), fam.udpVS, false},
			} {
				t.Run(tc.name, func(t *testing.T) {
					in := tc.in.build(t)
					act, out := f.run(in, f.cli)
					if act != XDPRedirect {
						t.Fatalf("verdict %v, want XDP_REDIRECT", act)
					}
					got := checkChecksums(t, out)
					dst, _ := netip.AddrFromSlice(got.NetworkLayer().NetworkFlow().Dst().Raw())
					var dport uint16
					if tcp, ok := got.TransportLayer().(*layers.TCP); ok {
						dport = uint16(tcp.DstPort)
					} else {
						dport = uint16(got.TransportLayer().(*layers.UDP).DstPort)
					}
					member := netip.AddrPortFrom(dst, dport)
					e, ok := f.entry(NewTableID(tc.table, true), tc.in.src)
					if !ok {
						t.Fatalf("no persistence entry for %s", tc.in.src)
					}
					if e.Server != member {
						t.Fatalf("entry says %s, packet went to %s", e.Server, member)
					}
					// The whole expected packet: NAT to the member, TTL
					// down by one, MACs from the FIB.
					idx := -1
					for _, m := range s.Members {
						if m.Addr == member {
							idx = int(m.ID)
						}
					}
					if idx < 0 {
						t.Fatalf("packet went to %s, which is no member", member)
					}
					want := natted(tc.in, member, f.memMAC, memberMAC(idx%3)).build(t)
					if !bytes.Equal(out, want) {
						t.Fatalf("output differs:\n got %x\nwant %x", out, want)
					}
					switch {
					case tc.name == "client a first flow gets a member":
						first = member
					case tc.same && member != first:
						t.Fatalf("client a went to %s, then %s", first, member)
					case tc.name == "client b goes round robin" && member == first:
						t.Fatalf("round robin gave client b the same member %s as client a", member)
					}
				})
			}
		})
	}
}

func TestDatapathReplyRewrittenToVIP(t *testing.T) {
	f := newStandardFixture(t)
	for _, tc := range []struct {
		name   string
		vip    netip.Addr
		client netip.Addr
		udp    bool
		port   uint16
	}{
		{"ipv4 tcp", vip4, client4a, false, 80},
		{"ipv4 udp", vip4, client4a, true, 53},
		{"ipv6 tcp", vip6, client6a, false, 80},
		{"ipv6 udp", vip6, client6a, true, 53},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := syn(tc.client, tc.vip, 41000, tc.port)
			if tc.udp {
				req = udpPkt(tc.client, tc.vip, 41000, tc.port)
			}
			act, out := f.run(req.build(t), f.cli)
			if act != XDPRedirect {
				t.Fatalf("request verdict %v", act)
			}
			fwd := checkChecksums(t, out)
			member, _ := netip.AddrFromSlice(fwd.NetworkLayer().NetworkFlow().Dst().Raw())

			reply := pkt{src: member, dst: tc.client, sport: 8080, dport: 41000, flags: "SA", payload: req.payload, srcMAC: memberMAC(0), dstMAC: f.memMAC, udp: tc.udp}
			act, out = f.run(reply.build(t), f.mem)
			if act != XDPRedirect {
				t.Fatalf("reply verdict %v, want XDP_REDIRECT", act)
			}
			checkChecksums(t, out)
			want := reply
			want.src, want.sport = tc.vip, tc.port
			want.srcMAC, want.dstMAC = f.cliMAC, gwMAC
			want.ttl = 63
			if w := want.build(t); !bytes.Equal(out, w) {
				t.Fatalf("reply differs:\n got %x\nwant %x", out, w)
			}
		})
	}
	// A reply for no known flow is host traffic.
	stray := pkt{src: member4[0], dst: client4b, sport: 8080, dport: 9, flags: "A", srcMAC: memberMAC(0), dstMAC: f.memMAC}
	in := stray.build(t)
	if act, out := f.run(in, f.mem); act != XDPPass || !bytes.Equal(in, out) {
		t.Fatalf("stray member packet: %v, changed=%v", act, !bytes.Equal(in, out))
	}
}

func TestDatapathDSRChangesOnlyMACs(t *testing.T) {
	f := newStandardFixture(t)
	p := syn(client4a, vip4, 42000, 8080)
	p.payload = []byte("dsr payload")
	in := p.build(t)
	act, out := f.run(in, f.cli)
	if act != XDPRedirect {
		t.Fatalf("verdict %v, want XDP_REDIRECT", act)
	}
	if !bytes.Equal(out[12:], in[12:]) {
		t.Fatalf("DSR changed more than the MACs:\n in %x\nout %x", in, out)
	}
	if !bytes.Equal(out[6:12], f.memMAC) {
		t.Fatalf("source MAC %x, want the egress link's %x", out[6:12], f.memMAC)
	}
	e, ok := f.entry(NewTableID(3, true), client4a)
	if !ok {
		t.Fatal("no persistence entry")
	}
	want := -1
	for i, m := range member4 {
		if m == e.Server.Addr() {
			want = i
		}
	}
	if want < 0 || !bytes.Equal(out[0:6], memberMAC(want)) {
		t.Fatalf("destination MAC %x does not belong to persisted server %s", out[0:6], e.Server)
	}
}

func TestDatapathMalformedAndOddPackets(t *testing.T) {
	f := newStandardFixture(t)
	good := syn(client4a, vip4, 43000, 80).build(t)
	good6 := syn(client6a, vip6, 43000, 80).build(t)
	const ethLen, ip4Len, ip6Len = 14, 20, 40
	for _, tc := range []struct {
		name    string
		in      []byte
		want    XDPAction
		reason  string // counter that must go up by one; "" for none
		forward bool   // the packet must come out NAT'ed to a member
	}{
		// Frames under 14 bytes never reach XDP (BPF_PROG_RUN refuses them
		// too); a tagged frame cut inside its tag is the shortest to parse.
		{"truncated vlan tag", append(append([]byte{}, good[:12]...), 0x81, 0x00), XDPDrop, "truncated_ethernet", false},
		{"truncated second vlan tag", append(append([]byte{}, good[:12]...), 0x88, 0xa8, 0, 10, 0x81, 0x00, 0), XDPDrop, "truncated_ethernet", false},
		{"truncated ipv4 header", good[:ethLen+12], XDPDrop, "truncated_ip", false},
		{"truncated ipv6 header", good6[:ethLen+30], XDPDrop, "truncated_ip", false},
		{"ipv4 total length beyond packet", good[:len(good)-3], XDPDrop, "truncated_ip", false},
		{"truncated tcp header", trimIPv4(t, good, ethLen+ip4Len+10), XDPDrop, "truncated_l4", false},
		{"truncated tcp header v6", trimIPv6(t, good6, ethLen+ip6Len+10), XDPDrop, "truncated_l4", false},
		{"ipv4 fragment", pkt{src: client4a, dst: vip4, sport: 1, dport: 80, flags: "S", fragment: true}.build(t), XDPDrop, "fragment", false},
		{"ipv6 fragment", pkt{src: client6a, dst: vip6, sport: 1, dport: 80, flags: "S", fragment: true}.build(t), XDPDrop, "fragment", false},
		{"tcp with no flags", pkt{src: client4a, dst: vip4, sport: 43001, dport: 80}.build(t), XDPDrop, "bad_tcp_flags", false},
		{"tcp syn+fin", pkt{src: client4a, dst: vip4, sport: 43002, dport: 80, flags: "SF"}.build(t), XDPDrop, "bad_tcp_flags", false},
		{"tcp syn+rst", pkt{src: client4a, dst: vip4, sport: 43003, dport: 80, flags: "SR"}.build(t), XDPDrop, "bad_tcp_flags", false},
		{"ipv4 with options is balanced", pkt{src: client4a, dst: vip4, sport: 43004, dport: 80, flags: "S", ipv4Options: true}.build(t), XDPRedirect, "ipv4_options", true},
		{"ipv6 hop-by-hop is balanced", pkt{src: client6a, dst: vip6, sport: 43005, dport: 80, flags: "S", hopByHop: true}.build(t), XDPRedirect, "ipv6_extension_walked", true},
		{"ttl 1 goes to the stack", pkt{src: client4a, dst: vip4, sport: 43006, dport: 80, flags: "S", ttl: 1}.build(t), XDPPass, "ttl_expired", false},
		{"one vlan tag", pkt{src: client4a, dst: vip4, sport: 43007, dport: 80, flags: "S", vlans: []uint16{10}}.build(t), XDPPass, "vlan_pass", true},
		{"two vlan tags", pkt{src: client4a, dst: vip4, sport: 43008, dport: 80, flags: "S", vlans: []uint16{10, 20}}.build(t), XDPPass, "vlan_pass", true},
		{"not ip", append(append([]byte{}, good[:12]...), 0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1), XDPPass, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := f.reasons()
			act, out := f.run(tc.in, f.cli)
			if act != tc.want {
				t.Fatalf("verdict %v, want %v", act, tc.want)
			}
			after := f.reasons()
			for i := range after {
				d := after[i] - before[i]
				want := uint64(0)
				if ReasonNames[i] == tc.reason {
					want = 1
				}
				if d != want {
					t.Errorf("counter %s went up by %d, want %d", ReasonNames[i], d, want)
				}
			}
			if tc.forward {
				p := checkChecksums(t, out)
				dst, _ := netip.AddrFromSlice(p.NetworkLayer().NetworkFlow().Dst().Raw())
				if dst == vip4 || dst == vip6 {
					t.Fatalf("packet was not NAT'ed: still to %s", dst)
				}
			} else if act == XDPPass && !bytes.Equal(out[:len(tc.in)], tc.in) {
				t.Fatalf("passed packet was changed")
			}
		})
	}
}

// trimIPv4 cuts a packet to n bytes and fixes the IPv4 total length and
// checksum, so only the L4 header is short.
func trimIPv4(t *testing.T, b []byte, n int) []byte {
	t.Helper()
	out := append([]byte{}, b[:n]...)
	p := gopacket.NewPacket(out, layers.LayerTypeEthernet, gopacket.Default)
	ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	ip.Length = uint16(n - 14)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet), ip, gopacket.Payload(out[34:])); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func trimIPv6(t *testing.T, b []byte, n int) []byte {
	t.Helper()
	out := append([]byte{}, b[:n]...)
	out[18], out[19] = byte((n-54)>>8), byte(n-54)
	return out
}

func TestDatapathVIPWithoutMembersDrops(t *testing.T) {
	f := newFixture(t, Options{})
	s := standardState()
	s.Pools[0].Eligible = nil
	if err := f.d.Apply(s); err != nil {
		t.Fatal(err)
	}
	before := f.reasons()[reasonIndex("no_member")]
	act, _ := f.run(syn(client4a, vip4, 44000, 80).build(t), f.cli)
	if act != XDPDrop {
		t.Fatalf("verdict %v, want XDP_DROP", act)
	}
	if got := f.reasons()[reasonIndex("no_member")] - before; got != 1 {
		t.Fatalf("no_member went up by %d", got)
	}
	c, err := f.d.VSCounters(0)
	if err != nil {
		t.Fatal(err)
	}
	if c.NoMemberDrops != 1 || c.Packets != 1 {
		t.Fatalf("vs counters %+v", c)
	}
}

func TestDatapathUnresolvedNeighbour(t *testing.T) {
	f := newFixture(t, Options{})
	s := standardState()
	// Member 0 of every pool becomes an address with no neighbour entry.
	s.Members[0].Addr = netip.AddrPortFrom(unresolv, 8080)
	s.Members[6].Addr = netip.AddrPortFrom(unresolv, 0)
	s.Pools[0].Eligible = []MemberID{0}
	s.Pools[2].Eligible = []MemberID{6}
	if err := f.d.Apply(s); err != nil {
		t.Fatal(err)
	}
	// NAT: rewritten, then handed to the stack to resolve the neighbour.
	act, out := f.run(syn(client4a, vip4, 45000, 80).build(t), f.cli)
	if act != XDPPass {
		t.Fatalf("NAT verdict %v, want XDP_PASS", act)
	}
	p := checkChecksums(t, out)
	if dst := net.IP(p.NetworkLayer().NetworkFlow().Dst().Raw()); !dst.Equal(unresolv.AsSlice()) {
		t.Fatalf("packet handed to the stack un-NAT'ed (dst %s)", dst)
	}
	// DSR cannot fall back: the packet still says VIP.
	act, _ = f.run(syn(client4a, vip4, 45001, 8080).build(t), f.cli)
	if act != XDPDrop {
		t.Fatalf("DSR verdict %v, want XDP_DROP", act)
	}
	r := f.reasons()
	if r[reasonIndex("fib_no_neighbour")] != 1 || r[reasonIndex("dsr_no_neighbour")] != 1 {
		t.Fatalf("reason counters %v", r)
	}
}

// A VIP keeps its first virtual servers in its own vips entry and finds the
// others in virtual_servers: both kinds, and a port between them that no
// virtual server uses, behave the same as with one lookup each.
func TestDatapathVIPWithManyVirtualServers(t *testing.T) {
	f := newFixture(t, Options{})
	s := standardState()
	const first, n = 9000, 12 // more than the vips entry holds with the standard ones
	for i := range uint32(n) {
		s.VirtualServers = append(s.VirtualServers, VirtualServer{
			ID: VirtualServerID(10 + i), VIP: netip.AddrPortFrom(vip4, uint16(first+2*i)), Proto: ProtoTCP, PoolID: 0, TableID: TableNone,
		})
	}
	if err := f.d.Apply(s); err != nil {
		t.Fatal(err)
	}
	for i := range uint32(n) {
		port := uint16(first + 2*i)
		act, _ := f.run(syn(client4a, vip4, 46000, port).build(t), f.cli)
		if act != XDPRedirect {
			t.Fatalf("port %d: verdict %v, want XDP_REDIRECT", port, act)
		}
		fl, ok, err := f.d.LookupFlow(netip.AddrPortFrom(client4a, 46000), netip.AddrPortFrom(vip4, port), ProtoTCP)
		if err != nil || !ok || fl.VSID != VirtualServerID(10+i) {
			t.Fatalf("port %d: flow %+v found %v (%v), want one of virtual server %d", port, fl, ok, err, 10+i)
		}
		if act, _ := f.run(syn(client4a, vip4, 46000, port+1).build(t), f.cli); act != XDPPass {
			t.Fatalf("port %d, no virtual server: verdict %v, want XDP_PASS", port+1, act)
		}
	}
}
