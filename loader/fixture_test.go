package loader

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/limpet-lb/limpet/test/packets"
	"github.com/limpet-lb/limpet/test/testutil"
)

// The fixture world (test/fixture): a client-facing and a member-facing
// link in a private netns, with static neighbours, so FIB lookups are
// deterministic.
var (
	vip4     = testutil.VIP4
	vip6     = testutil.VIP6
	client4a = netip.MustParseAddr("198.51.100.7")
	client4b = netip.MustParseAddr("198.51.100.8")
	client6a = netip.MustParseAddr("2001:db8:c1::7")
	client6b = netip.MustParseAddr("2001:db8:c1::8")
	gwMAC    = testutil.GatewayMAC
	member4  = testutil.Member4[:3]
	member6  = testutil.Member6[:3]
	unresolv = testutil.Unresolved4
)

func memberMAC(i int) net.HardwareAddr { return testutil.MemberMAC(i) }

type fixture struct {
	t        *testing.T
	world    *fixtureWorld
	d        *Datapath
	cli, mem fixtureLink // client-facing and member-facing links
	cliMAC   net.HardwareAddr
	memMAC   net.HardwareAddr
}

type (
	fixtureWorld = testutil.World
	fixtureLink  = testutil.Link
)

// newFixture builds the fixture world and loads a datapath. Every program
// run happens on the world's thread, inside its netns: subtests run on
// other goroutines, whose threads are not in it.
func newFixture(t *testing.T, opts Options) *fixture {
	t.Helper()
	requirePrivileges(t)
	w := testutil.NewWorld(t)
	f := &fixture{t: t, world: w, cli: w.Client, mem: w.Member, cliMAC: w.Client.MAC, memMAC: w.Member.MAC}
	f.d = loadTemp(t, opts)
	return f
}

// newStandardFixture is newFixture with standardState applied.
func newStandardFixture(t *testing.T) *fixture {
	t.Helper()
	f := newFixture(t, Options{})
	if err := f.d.Apply(standardState()); err != nil {
		t.Fatal(err)
	}
	return f
}

// standardState: VS 0 = VIP4:80/tcp NAT, VS 1 = VIP4:53/udp NAT, VS 2 =
// VIP6:80/tcp NAT, VS 3 = VIP4:8080/tcp DSR, VS 4 = VIP6:53/udp NAT; all with
// persistence in private tables; pools 0 (v4) and 1 (v6) of three members.
func standardState() State {
	s := State{
		Pools: []Pool{{ID: 0, Eligible: []MemberID{0, 1, 2}}, {ID: 1, Eligible: []MemberID{3, 4, 5}}},
	}
	for i := range member4 {
		s.Members = append(s.Members, Member{ID: MemberID(i), PoolID: 0, Addr: netip.AddrPortFrom(member4[i], 8080), Up: true, NAT: true})
	}
	for i := range member6 {
		s.Members = append(s.Members, Member{ID: MemberID(3 + i), PoolID: 1, Addr: netip.AddrPortFrom(member6[i], 8080), Up: true, NAT: true})
	}
	add := func(id uint32, vip netip.Addr, port uint16, proto Protocol, pool uint32, dsr bool) {
		tid := NewTableID(id, true)
		s.Tables = append(s.Tables, Table{ID: tid, MaxEntries: 1024})
		s.VirtualServers = append(s.VirtualServers, VirtualServer{
			ID: VirtualServerID(id), VIP: netip.AddrPortFrom(vip, port), Proto: proto, PoolID: PoolID(pool), TableID: tid,
			DSR: dsr, IPv4Prefix: 32, IPv6Prefix: 128, Timeout: 300 * time.Second,
		})
	}
	add(0, vip4, 80, ProtoTCP, 0, false)
	add(1, vip4, 53, ProtoUDP, 0, false)
	add(2, vip6, 80, ProtoTCP, 1, false)
	add(3, vip4, 8080, ProtoTCP, 2, true)
	add(4, vip6, 53, ProtoUDP, 1, false)
	// DSR keeps ports, so its pool lists the members with port 0.
	s.Pools = append(s.Pools, Pool{ID: 2, Eligible: []MemberID{6, 7, 8}})
	for i := range member4 {
		s.Members = append(s.Members, Member{ID: MemberID(6 + i), PoolID: 2, Addr: netip.AddrPortFrom(member4[i], 0), Up: true})
	}
	return s
}

// pkt describes a test packet; build renders it with gopacket.
type pkt struct {
	srcMAC, dstMAC net.HardwareAddr
	src, dst       netip.Addr
	sport, dport   uint16
	udp            bool
	flags          string // TCP flags: S, A, F, R, P
	payload        []byte
	ttl            uint8
	vlans          []uint16
	ipv4Options    bool
	hopByHop       bool
	fragment       bool
	seq, ack       uint32
}

func (p pkt) layers() []gopacket.SerializableLayer {
	if p.srcMAC == nil {
		p.srcMAC = gwMAC
	}
	if p.dstMAC == nil {
		p.dstMAC = net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 1}
	}
	if p.ttl == 0 {
		p.ttl = 64
	}
	var ls []gopacket.SerializableLayer
	eth := &layers.Ethernet{SrcMAC: p.srcMAC, DstMAC: p.dstMAC}
	ls = append(ls, eth)
	etherType := layers.EthernetTypeIPv4
	if p.src.Is6() {
		etherType = layers.EthernetTypeIPv6
	}
	if len(p.vlans) > 0 {
		eth.EthernetType = layers.EthernetTypeDot1Q
		for i, id := range p.vlans {
			next := layers.EthernetTypeDot1Q
			if i == len(p.vlans)-1 {
				next = etherType
			}
			ls = append(ls, &layers.Dot1Q{VLANIdentifier: id, Type: next})
		}
	} else {
		eth.EthernetType = etherType
	}
	var netLayer gopacket.NetworkLayer
	proto := layers.IPProtocolTCP
	if p.udp {
		proto = layers.IPProtocolUDP
	}
	if p.src.Is4() {
		ip := &layers.IPv4{Version: 4, TTL: p.ttl, Protocol: proto, SrcIP: p.src.AsSlice(), DstIP: p.dst.AsSlice(), Flags: layers.IPv4DontFragment}
		if p.ipv4Options {
			ip.Options = []layers.IPv4Option{{OptionType: 148, OptionLength: 4, OptionData: []byte{0, 0}}} // router alert
		}
		if p.fragment {
			ip.Flags = layers.IPv4MoreFragments
		}
		ls = append(ls, ip)
		netLayer = ip
	} else {
		ip := &layers.IPv6{Version: 6, HopLimit: p.ttl, NextHeader: proto, SrcIP: p.src.AsSlice(), DstIP: p.dst.AsSlice()}
		if p.hopByHop {
			ip.NextHeader = layers.IPProtocolIPv6HopByHop
			hbh := &layers.IPv6HopByHop{}
			hbh.NextHeader = proto
			hbh.Options = []*layers.IPv6HopByHopOption{{OptionType: 1, OptionLength: 4, OptionData: []byte{0, 0, 0, 0}}}
			ls = append(ls, ip, hbh)
		} else if p.fragment {
			ip.NextHeader = layers.IPProtocolIPv6Fragment
			ls = append(ls, ip, &layers.IPv6Fragment{NextHeader: proto, MoreFragments: true, Identification: 7})
		} else {
			ls = append(ls, ip)
		}
		netLayer = ip
	}
	if p.udp {
		u := &layers.UDP{SrcPort: layers.UDPPort(p.sport), DstPort: layers.UDPPort(p.dport)}
		_ = u.SetNetworkLayerForChecksum(netLayer)
		ls = append(ls, u)
	} else {
		tcp := &layers.TCP{SrcPort: layers.TCPPort(p.sport), DstPort: layers.TCPPort(p.dport), Seq: p.seq, Ack: p.ack, Window: 1024}
		packets.SetTCPFlags(tcp, p.flags)
		_ = tcp.SetNetworkLayerForChecksum(netLayer)
		ls = append(ls, tcp)
	}
	ls = append(ls, gopacket.Payload(p.payload))
	return ls
}

func (p pkt) build(t *testing.T) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, p.layers()...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func syn(src, dst netip.Addr, sport, dport uint16) pkt {
	return pkt{src: src, dst: dst, sport: sport, dport: dport, flags: "S", payload: []byte("hello")}
}

func udpPkt(src, dst netip.Addr, sport, dport uint16) pkt {
	// A DNS header with no questions: port 53 decodes as DNS.
	return pkt{src: src, dst: dst, sport: sport, dport: dport, udp: true, payload: []byte{0x12, 0x34, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0}}
}

func (f *fixture) run(in []byte, ingress fixtureLink) (XDPAction, []byte) {
	f.t.Helper()
	idx := ingress.Index
	var act XDPAction
	var out []byte
	err := f.world.Do(func() (err error) {
		act, out, err = f.d.RunPacket(in, idx)
		return err
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return act, out
}

// decoded parses a packet and fails the test unless every checksum in it is
// what a fresh computation gives.
func checkChecksums(t *testing.T, b []byte) gopacket.Packet {
	t.Helper()
	p := gopacket.NewPacket(b, layers.LayerTypeEthernet, gopacket.Default)
	if el := p.ErrorLayer(); el != nil {
		t.Fatalf("output does not parse: %v", el.Error())
	}
	var ls []gopacket.SerializableLayer
	for _, l := range p.Layers() {
		if sl, ok := l.(gopacket.SerializableLayer); ok {
			ls = append(ls, sl)
		}
	}
	if nl := p.NetworkLayer(); nl != nil {
		if tcp, ok := p.TransportLayer().(*layers.TCP); ok {
			_ = tcp.SetNetworkLayerForChecksum(nl)
		}
		if udp, ok := p.TransportLayer().(*layers.UDP); ok {
			_ = udp.SetNetworkLayerForChecksum(nl)
		}
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), b) {
		t.Fatalf("checksums differ from a recomputation:\n got %x\nwant %x", b, buf.Bytes())
	}
	return p
}

// natted is what the datapath should emit for in when it forwards to member.
func natted(in pkt, member netip.AddrPort, srcMAC, dstMAC net.HardwareAddr) pkt {
	out := in
	out.dst = member.Addr()
	out.dport = member.Port()
	out.srcMAC, out.dstMAC = srcMAC, dstMAC
	if out.ttl == 0 {
		out.ttl = 64
	}
	out.ttl--
	return out
}

func (f *fixture) reasons() []uint64 {
	f.t.Helper()
	r, err := f.d.ReasonCounters()
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}

func reasonIndex(name string) int {
	for i, n := range ReasonNames {
		if n == name {
			return i
		}
	}
	panic("no reason " + name)
}

func (f *fixture) entry(tableID TableID, client netip.Addr) (PersistEntry, bool) {
	f.t.Helper()
	es, err := f.d.TableEntries(tableID)
	if err != nil {
		f.t.Fatal(err)
	}
	for _, e := range es {
		if e.Client == client {
			return e, true
		}
	}
	return PersistEntry{}, false
}
