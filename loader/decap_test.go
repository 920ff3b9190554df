package loader

import (
	"bytes"
	"encoding/hex"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/limpet-lb/limpet/test/packets"
)

// Addresses of the decapsulator fixtures: a balancer (outer source), a
// member (outer destination), a client and a VIP (the inner packet's).
var (
	decapLB4     = netip.MustParseAddr("192.0.2.10")
	decapLB6     = netip.MustParseAddr("2001:db8:b::10")
	decapMember4 = netip.MustParseAddr("192.0.2.20")
	decapMember6 = netip.MustParseAddr("2001:db8:b::20")
	decapClient4 = netip.MustParseAddrPort("198.51.100.7:40000")
	decapClient6 = netip.MustParseAddrPort("[2001:db8:c1::7]:40000")
	decapVIP4    = netip.MustParseAddrPort("203.0.113.1:80")
	decapVIP6    = netip.MustParseAddrPort("[2001:db8:f::1]:80")
	decapSrcMAC  = net.HardwareAddr{2, 0, 0, 0, 0xb, 1}
	decapDstMAC  = net.HardwareAddr{2, 0, 0, 0, 0xd, 1}
)

type decapFixture struct {
	t    *testing.T
	objs decapObjects
}

func newDecapFixture(t *testing.T, guePort uint16) *decapFixture {
	t.Helper()
	requirePrivileges(t)
	f := &decapFixture{t: t}
	if err := loadDecapObjects(&f.objs, nil); err != nil {
		t.Fatal(verifierError(err))
	}
	t.Cleanup(func() { f.objs.Close() })
	if err := writeDecapConfig(f.objs.DecapCfg, f.objs.DecapDst, guePort, nil); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *decapFixture) counts() []DecapCount {
	f.t.Helper()
	c, err := readDecapCounts(f.objs.DecapStats)
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

// run passes pkt through the program once and checks the verdict, the
// whole output packet, and that exactly the counter want moved, by one
// packet of len(pkt) bytes.
func (f *decapFixture) run(t *testing.T, pkt, wantPkt []byte, wantVerdict uint32, want DecapStat) {
	t.Helper()
	before := f.counts()
	ro := &ebpf.RunOptions{Data: pkt, DataOut: make([]byte, len(pkt)+256)}
	ret, err := f.objs.LimpetDecap.Run(ro)
	if err != nil {
		t.Fatalf("BPF_PROG_RUN: %v", err)
	}
	out := ro.DataOut // resliced to the packet's length
	if ret != wantVerdict {
		t.Errorf("verdict %d, want %d", ret, wantVerdict)
	}
	if wantVerdict == 0 {
		if !bytes.Equal(out, wantPkt) {
			t.Errorf("output packet differs\n got %s\nwant %s", hex.EncodeToString(out), hex.EncodeToString(wantPkt))
		}
	}
	after := f.counts()
	for i := range after {
		dp, db := after[i].Packets-before[i].Packets, after[i].Bytes-before[i].Bytes
		if DecapStat(i) == want {
			if dp != 1 || db != uint64(len(pkt)) {
				t.Errorf("counter %s moved by %d packets, %d bytes; want 1, %d", want, dp, db, len(pkt))
			}
		} else if dp != 0 {
			t.Errorf("counter %s moved by %d packets; only %s should have", DecapStat(i), dp, want)
		}
	}
}

func framed(s packets.Spec) packets.Spec {
	s.SrcMAC, s.DstMAC = decapSrcMAC, decapDstMAC
	return s
}

func TestDecapForms(t *testing.T) {
	f := newDecapFixture(t, DefaultGUEPort)
	tcp4 := framed(packets.TCP(decapClient4, decapVIP4, "S"))
	tcp4.Payload = []byte("hello, member")
	tcp6 := framed(packets.TCP(decapClient6, decapVIP6, "S"))
	tcp6.Payload = []byte("hello, member six")
	udp4 := framed(packets.UDP(decapClient4, netip.AddrPortFrom(decapVIP4.Addr(), 53)))
	udp6 := framed(packets.UDP(decapClient6, netip.AddrPortFrom(decapVIP6.Addr(), 53)))
	gue4 := func(sport uint16) (netip.AddrPort, netip.AddrPort) {
		return netip.AddrPortFrom(decapLB4, sport), netip.AddrPortFrom(decapMember4, DefaultGUEPort)
	}
	gue6 := func(sport uint16) (netip.AddrPort, netip.AddrPort) {
		return netip.AddrPortFrom(decapLB6, sport), netip.AddrPortFrom(decapMember6, DefaultGUEPort)
	}
	withOpts := func(s packets.Spec) packets.Spec {
		s.IPv4Options = []byte{0x94, 0x04, 0, 0} // router alert
		return s
	}
	cases := []struct {
		name  string
		inner packets.Spec
		outer func(inner []byte) packets.Spec
		stat  DecapStat
	}{
		{"ipip 4in4 tcp", tcp4, func(in []byte) packets.Spec { return packets.IPIP(decapLB4, decapMember4, in) }, DecapIPIP4in4},
		{"ipip 4in4 udp", udp4, func(in []byte) packets.Spec { return packets.IPIP(decapLB4, decapMember4, in) }, DecapIPIP4in4},
		{"ipip 4in4, outer options", tcp4, func(in []byte) packets.Spec { return withOpts(packets.IPIP(decapLB4, decapMember4, in)) }, DecapIPIP4in4},
		{"ipip 6in4 tcp", tcp6, func(in []byte) packets.Spec { return packets.IPIP(decapLB4, decapMember4, in) }, DecapIPIP6in4},
		{"ipip 4in6 tcp", tcp4, func(in []byte) packets.Spec { return packets.IPIP(decapLB6, decapMember6, in) }, DecapIPIP4in6},
		{"ipip 6in6 tcp", tcp6, func(in []byte) packets.Spec { return packets.IPIP(decapLB6, decapMember6, in) }, DecapIPIP6in6},
		{"ipip 6in6 udp", udp6, func(in []byte) packets.Spec { return packets.IPIP(decapLB6, decapMember6, in) }, DecapIPIP6in6},
		{"gue v0 4in4", tcp4, func(in []byte) packets.Spec { s, d := gue4(51000); return packets.GUE(s, d, 0, in) }, DecapGUE4in4},
		{"gue v0 4in4, outer options", tcp4, func(in []byte) packets.Spec { s, d := gue4(51000); return withOpts(packets.GUE(s, d, 0, in)) }, DecapGUE4in4},
		{"gue v0 6in4", tcp6, func(in []byte) packets.Spec { s, d := gue4(51001); return packets.GUE(s, d, 0, in) }, DecapGUE6in4},
		{"gue v0 4in6", udp4, func(in []byte) packets.Spec { s, d := gue6(51002); return packets.GUE(s, d, 0, in) }, DecapGUE4in6},
		{"gue v0 6in6", tcp6, func(in []byte) packets.Spec { s, d := gue6(51003); return packets.GUE(s, d, 0, in) }, DecapGUE6in6},
		{"gue v1 4in4", tcp4, func(in []byte) packets.Spec { s, d := gue4(51004); return packets.GUE(s, d, 1, in) }, DecapGUE4in4},
		{"gue v1 6in4", tcp6, func(in []byte) packets.Spec { s, d := gue4(51005); return packets.GUE(s, d, 1, in) }, DecapGUE6in4},
		{"gue v1 6in6", udp6, func(in []byte) packets.Spec { s, d := gue6(51006); return packets.GUE(s, d, 1, in) }, DecapGUE6in6},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			inner := c.inner.Bytes()
			outer := framed(c.outer(inner)).Bytes()
			// The member sees the client's own frame, under the
			// MACs of the frame that carried it.
			f.run(t, outer, inner, 0, c.stat)
		})
	}
}

func TestDecapECN(t *testing.T) {
	f := newDecapFixture(t, DefaultGUEPort)
	const notECT, ect0, ce = 0, 2, 3
	for _, v6 := range []bool{false, true} {
		client, vip, lb, mem := decapClient4, decapVIP4, decapLB4, decapMember4
		if v6 {
			client, vip, lb, mem = decapClient6, decapVIP6, decapLB6, decapMember6
		}
		name := map[bool]string{false: "v4", true: "v6"}[v6]
		inner := func(tos uint8) []byte {
			s := framed(packets.TCP(client, vip, "A"))
			s.TOS, s.Payload = tos, []byte("congested")
			return s.Bytes()
		}
		outer := func(tos uint8, in []byte) []byte {
			s := framed(packets.IPIP(lb, mem, in))
			s.TOS = tos
			return s.Bytes()
		}
		stat := DecapIPIP4in4
		if v6 {
			stat = DecapIPIP6in6
		}
		t.Run(name+" outer CE marks an ECT inner packet CE", func(t *testing.T) {
			// The expected packet is built with TOS CE from the
			// start: its IPv4 checksum checks the incremental update.
			f.run(t, outer(ce, inner(ect0)), inner(ce), 0, stat)
		})
		t.Run(name+" outer ECT leaves the inner packet alone", func(t *testing.T) {
			f.run(t, outer(ect0, inner(ect0)), inner(ect0), 0, stat)
		})
		t.Run(name+" outer CE over not-ECT is dropped", func(t *testing.T) {
			f.run(t, outer(ce, inner(notECT)), nil, 2, DecapECNDrop)
		})
	}
}

func TestDecapGUEPort(t *testing.T) {
	f := newDecapFixture(t, 7000)
	inner := framed(packets.TCP(decapClient4, decapVIP4, "S")).Bytes()
	at := func(port uint16) []byte {
		return framed(packets.GUE(netip.AddrPortFrom(decapLB4, 50000), netip.AddrPortFrom(decapMember4, port), 0, inner)).Bytes()
	}
	t.Run("the default port is ordinary UDP", func(t *testing.T) {
		f.run(t, at(DefaultGUEPort), at(DefaultGUEPort), 0, DecapPass)
	})
	t.Run("the configured port is GUE", func(t *testing.T) {
		f.run(t, at(7000), inner, 0, DecapGUE4in4)
	})
	t.Run("a new port takes effect without a reload", func(t *testing.T) {
		if err := writeDecapConfig(f.objs.DecapCfg, f.objs.DecapDst, 7001, nil); err != nil {
			t.Fatal(err)
		}
		f.run(t, at(7000), at(7000), 0, DecapPass)
		f.run(t, at(7001), inner, 0, DecapGUE4in4)
	})
}

// Malformed and foreign packets pass byte for byte untouched, each counted
// under its reason.
func TestDecapMalformed(t *testing.T) {
	f := newDecapFixture(t, DefaultGUEPort)
	tcp4 := framed(packets.TCP(decapClient4, decapVIP4, "S"))
	tcp4.Payload = []byte("some payload bytes")
	inner4 := tcp4.Bytes()
	inner6 := framed(packets.TCP(decapClient6, decapVIP6, "S")).Bytes()
	ipip4 := func(in []byte) packets.Spec { return framed(packets.IPIP(decapLB4, decapMember4, in)) }
	gueRaw := func(payload []byte) []byte {
		s := framed(packets.Spec{Src: netip.AddrPortFrom(decapLB4, 50000), Dst: netip.AddrPortFrom(decapMember4, DefaultGUEPort), UDP: true, Payload: payload})
		return s.Bytes()
	}
	withGUE := func(hdr ...byte) []byte { return gueRaw(append(hdr, packets.IP(inner4)...)) }

	cases := []struct {
		name string
		pkt  []byte
		stat DecapStat
	}{
		{"plain tcp", inner4, DecapPass},
		{"plain tcp6", inner6, DecapPass},
		{"udp to another port", framed(packets.UDP(decapClient4, netip.AddrPortFrom(decapMember4, 53))).Bytes(), DecapPass},
		{"arp", append(append(append([]byte{}, decapDstMAC...), decapSrcMAC...), 0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1), DecapPass},
		{"vlan tagged ipip (attach to the vlan device)", func() []byte {
			s := ipip4(inner4)
			s.VLANs = []packets.VLANTag{{ID: 10}}
			return s.Bytes()
		}(), DecapPass},
		{"inner packet cut short", ipip4(inner4[:len(inner4)-5]).Bytes(), DecapTruncated},
		{"inner header cut short", ipip4(inner4[:14+12]).Bytes(), DecapTruncated},
		{"frame shorter than the outer length", func() []byte { b := ipip4(inner4).Bytes(); return b[:len(b)-3] }(), DecapBadOuter},
		{"outer checksum wrong", func() []byte { b := ipip4(inner4).Bytes(); b[14+10] ^= 0x40; return b }(), DecapBadOuter},
		{"outer IHL below 5", func() []byte { b := ipip4(inner4).Bytes(); b[14] = 0x44; return b }(), DecapBadOuter},
		{"outer fragment (MF)", func() []byte { s := ipip4(inner4); s.MoreFrags = true; return s.Bytes() }(), DecapFragment},
		{"outer fragment (offset)", func() []byte { s := ipip4(inner4); s.FragOffset = 8; return s.Bytes() }(), DecapFragment},
		{"IPPROTO_IPIP carrying IPv6", func() []byte { s := ipip4(inner6); s.Proto = 4; return s.Bytes() }(), DecapBadInner},
		{"IPPROTO_IPV6 carrying IPv4", func() []byte { s := ipip4(inner4); s.Proto = 41; return s.Bytes() }(), DecapBadInner},
		{"inner IHL below 5", func() []byte { in := bytes.Clone(inner4); in[14] = 0x43; return ipip4(in).Bytes() }(), DecapBadInner},
		{"gue control message", withGUE(0x20, 0, 0, 0), DecapGUEVersion},
		{"gue variant 2", withGUE(0x80, 4, 0, 0), DecapGUEVersion},
		{"gue variant 3", withGUE(0xc0, 4, 0, 0), DecapGUEVersion},
		{"gue optional fields", withGUE(0x01, 4, 0, 0, 0, 0, 0, 0), DecapGUEOptions},
		{"gue flags", withGUE(0x00, 4, 0x80, 0), DecapGUEOptions},
		{"gue carrying udp", withGUE(0x00, 17, 0, 0), DecapGUEProto},
		{"gue variant 1, not IP", gueRaw(append([]byte{0x50}, packets.IP(inner4)[1:]...)), DecapBadInner},
		{"gue header cut short", gueRaw([]byte{0, 4}), DecapTruncated},
		{"gue empty", gueRaw(nil), DecapTruncated},
		{"gue inner cut short", gueRaw(append([]byte{0, 4, 0, 0}, packets.IP(inner4)[:30]...)), DecapTruncated},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f.run(t, c.pkt, c.pkt, 0, c.stat)
		})
	}
}

// The smallest IPv4 datagram (28 bytes) is shorter than an IPv6 header:
// out of IPv6, it still decapsulates (the kernel checks the new protocol's
// minimum once the flag has switched it).
func TestDecapMinimalInner(t *testing.T) {
	f := newDecapFixture(t, DefaultGUEPort)
	// Without the Ethernet padding to 60 bytes.
	tiny := framed(packets.Spec{Src: decapClient4, Dst: netip.AddrPortFrom(decapVIP4.Addr(), 53), UDP: true}).Bytes()[:14+28]
	f.run(t, framed(packets.IPIP(decapLB6, decapMember6, tiny)).Bytes(), tiny, 0, DecapIPIP4in6)
	f.run(t, framed(packets.GUE(netip.AddrPortFrom(decapLB6, 1), netip.AddrPortFrom(decapMember6, DefaultGUEPort), 0, tiny)).Bytes(), tiny, 0, DecapGUE4in6)
}

// With destinations listed, only tunnel packets to them are decapsulated;
// an empty list again takes any destination.
func TestDecapOnlyTo(t *testing.T) {
	f := newDecapFixture(t, DefaultGUEPort)
	inner4 := framed(packets.TCP(decapClient4, decapVIP4, "S")).Bytes()
	inner6 := framed(packets.TCP(decapClient6, decapVIP6, "S")).Bytes()
	other4, other6 := netip.MustParseAddr("192.0.2.99"), netip.MustParseAddr("2001:db8:b::99")
	to4 := func(dst netip.Addr) []byte { return framed(packets.IPIP(decapLB4, dst, inner4)).Bytes() }
	to6 := func(dst netip.Addr) []byte {
		return framed(packets.GUE(netip.AddrPortFrom(decapLB6, 1), netip.AddrPortFrom(dst, DefaultGUEPort), 0, inner6)).Bytes()
	}
	set := func(addrs ...netip.Addr) {
		t.Helper()
		if err := writeDecapConfig(f.objs.DecapCfg, f.objs.DecapDst, DefaultGUEPort, addrs); err != nil {
			t.Fatal(err)
		}
		got, err := readDecapDsts(f.objs.DecapDst)
		if err != nil || len(got) != len(addrs) {
			t.Fatalf("destinations %v (%v), want %v", got, err, addrs)
		}
	}
	set(decapMember4, decapMember6)
	f.run(t, to4(decapMember4), inner4, 0, DecapIPIP4in4)
	f.run(t, to6(decapMember6), inner6, 0, DecapGUE6in6)
	f.run(t, to4(other4), to4(other4), 0, DecapOtherDst)
	f.run(t, to6(other6), to6(other6), 0, DecapOtherDst)
	// The IPv4 address in IPv6 form is another address.
	f.run(t, to6(netip.AddrFrom16(decapMember4.As16())), to6(netip.AddrFrom16(decapMember4.As16())), 0, DecapOtherDst)
	set(other4)
	f.run(t, to4(decapMember4), to4(decapMember4), 0, DecapOtherDst)
	f.run(t, to4(other4), inner4, 0, DecapIPIP4in4)
	set()
	f.run(t, to4(decapMember4), inner4, 0, DecapIPIP4in4)
	f.run(t, to6(other6), inner6, 0, DecapGUE6in6)
}
