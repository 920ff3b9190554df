// Package packets builds test packets with gopacket: Ethernet with up to
// two VLAN tags, IPv4 (with options and fragments) or IPv6 (with extension
// headers), TCP or UDP or another protocol, with correct lengths and
// checksums.
package packets

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Spec describes one packet. Flags is a string of TCP flags: S A F R P,
// and U E C for URG, ECE and CWR.
type Spec struct {
	Src, Dst netip.AddrPort
	UDP      bool
	Flags    string
	Seq, Ack uint32
	Payload  []byte
	SrcMAC   net.HardwareAddr
	DstMAC   net.HardwareAddr
	TTL      uint8 // 0: 64, unless ZeroTTL
	ZeroTTL  bool  // send a TTL (hop limit) of 0

	// The rest is zero for a plain packet.
	VLANs       []VLANTag
	Proto       uint8  // another IP protocol than TCP or UDP; Payload follows the IP header
	TOS         uint8  // IPv4 TOS, IPv6 traffic class
	IPID        uint16 // IPv4 identification
	DontFrag    bool   // IPv4 DF
	MoreFrags   bool   // IPv4 MF
	FragOffset  uint16 // IPv4 fragment offset, in 8-byte units
	IPv4Options []byte // padded with zeros (end of options) to a multiple of 4
	IPv6Ext     []IPv6Ext
	Window      uint16 // TCP window; 0: 1024
	DataOffset  uint8  // TCP options of (DataOffset-5)*4 NOP bytes when over 5
}

// VLANTag is an 802.1Q (TPID 0x8100, the default) or 802.1ad (0x88a8) tag.
type VLANTag struct {
	TPID uint16
	ID   uint16
}

// IPv6Ext is an IPv6 extension header: hop-by-hop (0), routing (43),
// fragment (44) or destination options (60), or any other type. Body is
// what follows the next-header and length bytes; it is padded to a
// multiple of 8 in all, and a fragment header's is its 6 bytes.
type IPv6Ext struct {
	Type uint8
	Body []byte
}

// IPv6 extension header types.
const (
	ExtHopByHop = 0
	ExtRouting  = 43
	ExtFragment = 44
	ExtDestOpts = 60
)

// rawLayer is bytes gopacket writes as they are.
type rawLayer []byte

func (r rawLayer) LayerType() gopacket.LayerType { return gopacket.LayerTypePayload }

func (r rawLayer) SerializeTo(b gopacket.SerializeBuffer, _ gopacket.SerializeOptions) error {
	out, err := b.PrependBytes(len(r))
	if err != nil {
		return err
	}
	copy(out, r)
	return nil
}

// extBytes chains extension headers ahead of the protocol last.
func extBytes(exts []IPv6Ext, last uint8) []byte {
	var out []byte
	for i, e := range exts {
		next := last
		if i+1 < len(exts) {
			next = exts[i+1].Type
		}
		body := e.Body
		if e.Type == ExtFragment {
			body = append(append([]byte{}, body...), make([]byte, 6)...)[:6]
		} else if pad := (len(body) + 2) % 8; pad != 0 {
			body = append(append([]byte{}, body...), make([]byte, 8-pad)...)
		}
		hdrLen := byte(0)
		if e.Type != ExtFragment {
			hdrLen = byte((len(body)+2)/8 - 1)
		}
		out = append(out, next, hdrLen)
		out = append(out, body...)
	}
	return out
}

// TCP is a TCP segment from src to dst with the given flags.
func TCP(src, dst netip.AddrPort, flags string) Spec {
	return Spec{Src: src, Dst: dst, Flags: flags}
}

// UDP is a datagram from src to dst carrying a minimal DNS header, so that
// decoders looking at port 53 see a valid message.
func UDP(src, dst netip.AddrPort) Spec {
	return Spec{Src: src, Dst: dst, UDP: true, Payload: []byte{0x12, 0x34, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0}}
}

// Bytes serialises the packet.
func (s Spec) Bytes() []byte {
	if s.SrcMAC == nil {
		s.SrcMAC = net.HardwareAddr{2, 0, 0, 0, 0, 1}
	}
	if s.DstMAC == nil {
		s.DstMAC = net.HardwareAddr{2, 0, 0, 0, 0, 2}
	}
	if s.TTL == 0 && !s.ZeroTTL {
		s.TTL = 64
	}
	if s.Window == 0 {
		s.Window = 1024
	}
	etherType := layers.EthernetTypeIPv4
	if !s.Src.Addr().Is4() {
		etherType = layers.EthernetTypeIPv6
	}
	eth := &layers.Ethernet{SrcMAC: s.SrcMAC, DstMAC: s.DstMAC, EthernetType: etherType}
	ls := []gopacket.SerializableLayer{eth}
	for i, v := range s.VLANs {
		tpid := layers.EthernetType(v.TPID)
		if tpid == 0 {
			tpid = layers.EthernetTypeDot1Q
		}
		next := etherType
		if i+1 < len(s.VLANs) {
			next = layers.EthernetType(s.VLANs[i+1].TPID)
			if next == 0 {
				next = layers.EthernetTypeDot1Q
			}
		}
		if i == 0 {
			eth.EthernetType = tpid
		}
		ls = append(ls, &layers.Dot1Q{VLANIdentifier: v.ID, Type: next})
	}
	proto := layers.IPProtocolTCP
	if s.UDP {
		proto = layers.IPProtocolUDP
	}
	if s.Proto != 0 {
		proto = layers.IPProtocol(s.Proto)
	}
	var nl gopacket.NetworkLayer
	if s.Src.Addr().Is4() {
		v4 := &layers.IPv4{Version: 4, TTL: s.TTL, TOS: s.TOS, Id: s.IPID, Protocol: proto, FragOffset: s.FragOffset,
			SrcIP: s.Src.Addr().AsSlice(), DstIP: s.Dst.Addr().AsSlice()}
		if s.DontFrag {
			v4.Flags |= layers.IPv4DontFragment
		}
		if s.MoreFrags {
			v4.Flags |= layers.IPv4MoreFragments
		}
		ls = append(ls, v4)
		nl = v4
	} else {
		next := proto
		if len(s.IPv6Ext) > 0 {
			next = layers.IPProtocol(s.IPv6Ext[0].Type)
		}
		v6 := &layers.IPv6{Version: 6, HopLimit: s.TTL, TrafficClass: s.TOS, NextHeader: next, SrcIP: s.Src.Addr().AsSlice(), DstIP: s.Dst.Addr().AsSlice()}
		ls = append(ls, v6)
		if len(s.IPv6Ext) > 0 {
			ls = append(ls, rawLayer(extBytes(s.IPv6Ext, uint8(proto))))
		}
		nl = v6
	}
	var l4 gopacket.SerializableLayer
	switch {
	case s.Proto != 0 && s.Proto != uint8(layers.IPProtocolTCP) && s.Proto != uint8(layers.IPProtocolUDP):
		ls = append(ls, gopacket.Payload(s.Payload))
		return serialize(ls, s.IPv4Options)
	case s.UDP:
		u := &layers.UDP{SrcPort: layers.UDPPort(s.Src.Port()), DstPort: layers.UDPPort(s.Dst.Port())}
		_ = u.SetNetworkLayerForChecksum(nl)
		l4 = u
	default:
		t := &layers.TCP{SrcPort: layers.TCPPort(s.Src.Port()), DstPort: layers.TCPPort(s.Dst.Port()), Seq: s.Seq, Ack: s.Ack, Window: s.Window}
		if s.DataOffset > 5 {
			t.Options = make([]layers.TCPOption, int(s.DataOffset-5)*4)
			for i := range t.Options {
				t.Options[i].OptionType = layers.TCPOptionKindNop
			}
		}
		SetTCPFlags(t, s.Flags)
		_ = t.SetNetworkLayerForChecksum(nl)
		l4 = t
	}
	ls = append(ls, l4, gopacket.Payload(s.Payload))
	return serialize(ls, s.IPv4Options)
}

// SetTCPFlags sets on t each flag that flags names by its letter: S(YN),
// A(CK), F(IN), R(ST), P(SH), U(RG), E(CE), C(WR). Other letters are
// ignored.
func SetTCPFlags(t *layers.TCP, flags string) {
	for _, f := range []struct {
		letter rune
		bit    *bool
	}{
		{'S', &t.SYN}, {'A', &t.ACK}, {'F', &t.FIN}, {'R', &t.RST},
		{'P', &t.PSH}, {'U', &t.URG}, {'E', &t.ECE}, {'C', &t.CWR},
	} {
		if strings.ContainsRune(flags, f.letter) {
			*f.bit = true
		}
	}
}

func serialize(ls []gopacket.SerializableLayer, v4opts []byte) []byte {
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		panic(err) // only reachable with a malformed Spec, a bug in the test
	}
	b := buf.Bytes()
	if len(v4opts) > 0 {
		b = withIPv4Options(b, v4opts)
	}
	return b
}

// withIPv4Options inserts raw options after a frame's 20-byte IPv4 header
// and fixes its length fields and checksum; the L4 checksum does not cover
// them.
func withIPv4Options(b, opts []byte) []byte {
	opts = append([]byte{}, opts...)
	for len(opts)%4 != 0 {
		opts = append(opts, 0)
	}
	off := 14
	for binary.BigEndian.Uint16(b[off-2:]) == uint16(layers.EthernetTypeDot1Q) || binary.BigEndian.Uint16(b[off-2:]) == uint16(layers.EthernetTypeQinQ) {
		off += 4
	}
	out := append(append(append([]byte{}, b[:off+20]...), opts...), b[off+20:]...)
	ip := out[off:]
	ip[0] = 0x40 | byte(5+len(opts)/4)
	binary.BigEndian.PutUint16(ip[2:], binary.BigEndian.Uint16(ip[2:])+uint16(len(opts)))
	ip[10], ip[11] = 0, 0
	var sum uint32
	for i := 0; i < 20+len(opts); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	return out
}

// Decoded is what a test usually wants to know about an output packet.
type Decoded struct {
	Src, Dst netip.AddrPort
	TCP      *layers.TCP
	UDP      *layers.UDP
	Packet   gopacket.Packet
}

// Decode parses an Ethernet frame.
func Decode(b []byte) Decoded {
	p := gopacket.NewPacket(b, layers.LayerTypeEthernet, gopacket.Default)
	d := Decoded{Packet: p}
	var src, dst netip.Addr
	if nl := p.NetworkLayer(); nl != nil {
		src, _ = netip.AddrFromSlice(nl.NetworkFlow().Src().Raw())
		dst, _ = netip.AddrFromSlice(nl.NetworkFlow().Dst().Raw())
	}
	var sp, dp uint16
	if t, ok := p.TransportLayer().(*layers.TCP); ok {
		d.TCP, sp, dp = t, uint16(t.SrcPort), uint16(t.DstPort)
	}
	if u, ok := p.TransportLayer().(*layers.UDP); ok {
		d.UDP, sp, dp = u, uint16(u.SrcPort), uint16(u.DstPort)
	}
	d.Src, d.Dst = netip.AddrPortFrom(src.Unmap(), sp), netip.AddrPortFrom(dst.Unmap(), dp)
	return d
}

// ChecksumError reports the first wrong checksum of a decoded packet: the
// IPv4 header's, then the TCP one (over the pseudo-header), or nil.
// A receiver drops a packet that fails it, so a test of a packet the
// datapath builds checks it.
func (d Decoded) ChecksumError() error {
	nl := d.Packet.NetworkLayer()
	if nl == nil {
		return fmt.Errorf("no network layer")
	}
	if ip, ok := nl.(*layers.IPv4); ok {
		var sum uint32
		h := ip.Contents
		for i := 0; i+1 < len(h); i += 2 {
			sum += uint32(h[i])<<8 | uint32(h[i+1])
		}
		if f := gopacket.FoldChecksum(sum); f != 0 {
			return fmt.Errorf("IPv4 header checksum %#04x is wrong", ip.Checksum)
		}
	}
	if d.TCP != nil {
		if err := d.TCP.SetNetworkLayerForChecksum(nl); err != nil {
			return err
		}
		if f, err := d.TCP.ComputeChecksum(); err != nil || f != 0 {
			return fmt.Errorf("TCP checksum %#04x is wrong (%v)", d.TCP.Checksum, err)
		}
	}
	return nil
}
