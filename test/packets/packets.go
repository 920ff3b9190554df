// Package packets builds test packets with gopacket: Ethernet, IPv4 or IPv6,
// TCP or UDP, with correct lengths and checksums.
package packets

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Spec describes one packet. Flags is a string of TCP flags: S A F R P.
type Spec struct {
	Src, Dst netip.AddrPort
	UDP      bool
	Flags    string
	Seq, Ack uint32
	Payload  []byte
	SrcMAC   net.HardwareAddr
	DstMAC   net.HardwareAddr
	TTL      uint8
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
	if s.TTL == 0 {
		s.TTL = 64
	}
	eth := &layers.Ethernet{SrcMAC: s.SrcMAC, DstMAC: s.DstMAC, EthernetType: layers.EthernetTypeIPv4}
	proto := layers.IPProtocolTCP
	if s.UDP {
		proto = layers.IPProtocolUDP
	}
	var ip gopacket.SerializableLayer
	var nl gopacket.NetworkLayer
	if s.Src.Addr().Is4() {
		v4 := &layers.IPv4{Version: 4, TTL: s.TTL, Protocol: proto, SrcIP: s.Src.Addr().AsSlice(), DstIP: s.Dst.Addr().AsSlice()}
		ip, nl = v4, v4
	} else {
		eth.EthernetType = layers.EthernetTypeIPv6
		v6 := &layers.IPv6{Version: 6, HopLimit: s.TTL, NextHeader: proto, SrcIP: s.Src.Addr().AsSlice(), DstIP: s.Dst.Addr().AsSlice()}
		ip, nl = v6, v6
	}
	var l4 gopacket.SerializableLayer
	if s.UDP {
		u := &layers.UDP{SrcPort: layers.UDPPort(s.Src.Port()), DstPort: layers.UDPPort(s.Dst.Port())}
		_ = u.SetNetworkLayerForChecksum(nl)
		l4 = u
	} else {
		t := &layers.TCP{SrcPort: layers.TCPPort(s.Src.Port()), DstPort: layers.TCPPort(s.Dst.Port()), Seq: s.Seq, Ack: s.Ack, Window: 1024}
		for _, c := range s.Flags {
			switch c {
			case 'S':
				t.SYN = true
			case 'A':
				t.ACK = true
			case 'F':
				t.FIN = true
			case 'R':
				t.RST = true
			case 'P':
				t.PSH = true
			}
		}
		_ = t.SetNetworkLayerForChecksum(nl)
		l4 = t
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, l4, gopacket.Payload(s.Payload)); err != nil {
		panic(err) // only reachable with a malformed Spec, a bug in the test
	}
	return buf.Bytes()
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
