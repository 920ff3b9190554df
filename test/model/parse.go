package model

import (
	"encoding/binary"
	"net/netip"
)

// packet is what parsing learnt about a frame. Offsets are from the start
// of the frame.
type packet struct {
	frame    []byte
	vlans    int
	family   int // 4 or 6
	l3, l4   int // offsets of the IP and the TCP/UDP header
	ipEnd    int // where the IP packet ends: a frame may carry padding after it
	ipLen    int // the IP packet's own length (IPv4 total length, IPv6 40 + payload length)
	proto    uint8
	tooDeep  bool // IPv6 extension headers beyond the ones walked
	fragment bool
	options  bool // IPv4 options
	ext      bool // IPv6 extension headers walked
	src, dst netip.Addr
	sport    uint16
	dport    uint16
	tcpFlags uint8
	tcpDoff  int
	udpLen   int
}

const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpPSH = 0x08
	tcpACK = 0x10
)

// parseL3 reads the Ethernet, VLAN and IP headers. It returns ok false for
// a frame that is not IP (passed untouched), and a reason for a malformed
// one.
//
// README: "truncated Ethernet, VLAN, IP or TCP/UDP header; inconsistent
// lengths | dropped, counted". A frame whose Ethernet, VLAN or IP header is
// malformed cannot be told to be ours or the host's, so it is dropped
// whatever its destination: the kernel would drop it too.
func parseL3(frame []byte) (p packet, ok bool, r Reason) {
	p.frame = frame
	be := binary.BigEndian
	if len(frame) < 14 {
		return p, true, TruncatedEthernet
	}
	off := 14
	etype := be.Uint16(frame[12:])
	// README: "up to two VLAN tags" (802.1Q or 802.1ad, in any order).
	for i := 0; i < maxVLANTags && (etype == 0x8100 || etype == 0x88a8); i++ {
		if off+4 > len(frame) {
			return p, true, TruncatedEthernet
		}
		etype = be.Uint16(frame[off+2:])
		off += 4
		p.vlans++
	}
	p.l3 = off
	switch etype {
	case 0x0800:
		return p, true, parseIPv4(&p)
	case 0x86dd:
		return p, true, parseIPv6(&p)
	}
	return p, false, reasonNone
}

func parseIPv4(p *packet) Reason {
	f, off := p.frame, p.l3
	if off+20 > len(f) {
		return TruncatedIP
	}
	ihl := int(f[off]&0x0f) * 4
	if f[off]>>4 != 4 || ihl < 20 || off+ihl > len(f) {
		return TruncatedIP
	}
	tot := int(binary.BigEndian.Uint16(f[off+2:]))
	if tot < ihl || off+tot > len(f) {
		return TruncatedIP
	}
	p.family = 4
	p.ipLen = tot
	p.ipEnd = off + tot
	p.proto = f[off+9]
	p.src = netip.AddrFrom4([4]byte(f[off+12 : off+16]))
	p.dst = netip.AddrFrom4([4]byte(f[off+16 : off+20]))
	p.options = ihl > 20
	// More fragments, or an offset: any piece of a fragmented datagram.
	p.fragment = binary.BigEndian.Uint16(f[off+6:])&0x3fff != 0
	p.l4 = off + ihl
	return reasonNone
}

// parseIPv6 walks up to four hop-by-hop, routing, destination options and
// fragment headers (README: "IPv6 with hop-by-hop, routing or
// destination-options headers | balanced, counted"). Every header must lie
// inside the IP packet, as its payload length gives it.
func parseIPv6(p *packet) Reason {
	f, off := p.frame, p.l3
	if off+40 > len(f) {
		return TruncatedIP
	}
	plen := int(binary.BigEndian.Uint16(f[off+4:]))
	if f[off]>>4 != 6 || off+40+plen > len(f) {
		return TruncatedIP
	}
	p.family = 6
	p.ipLen = 40 + plen
	p.ipEnd = off + 40 + plen
	p.src = netip.AddrFrom16([16]byte(f[off+8 : off+24]))
	p.dst = netip.AddrFrom16([16]byte(f[off+24 : off+40]))
	next := f[off+6]
	pos := off + 40
	isExt := func(n uint8) bool {
		return n == ipProtoHopByHop || n == ipProtoRouting || n == ipProtoDestOpts || n == ipProtoFragment
	}
	for i := 0; i < maxIPv6ExtHeaders && isExt(next); i++ {
		if pos+2 > p.ipEnd {
			return TruncatedIP
		}
		n := next
		next = f[pos]
		if n == ipProtoFragment {
			p.fragment = true
			pos += 8
		} else {
			pos += (int(f[pos+1]) + 1) * 8
		}
		if pos > p.ipEnd {
			return TruncatedIP
		}
		p.ext = true
	}
	// More headers than the datapath walks: not balanced.
	p.tooDeep = isExt(next)
	p.proto = next
	p.l4 = pos
	return reasonNone
}

// parseL4 reads the TCP or UDP header of a packet for a VIP, or of a
// member's reply. The header must lie inside the IP packet.
//
// README: "TCP with no flags, SYN+FIN or SYN+RST | dropped, counted". "No
// flags" means none of FIN, SYN, RST, PSH and ACK: URG, ECE or CWR alone do
// not make a segment anyone sends.
func parseL4(p *packet) Reason {
	f, off, end := p.frame, p.l4, p.ipEnd
	be := binary.BigEndian
	switch p.proto {
	case ipProtoTCP:
		if off+20 > end {
			return TruncatedL4
		}
		doff := int(f[off+12]>>4) * 4
		if doff < 20 || off+doff > end {
			return TruncatedL4
		}
		p.sport, p.dport = be.Uint16(f[off:]), be.Uint16(f[off+2:])
		p.tcpFlags = f[off+13]
		p.tcpDoff = doff
		fl := p.tcpFlags & (tcpFIN | tcpSYN | tcpRST | tcpPSH | tcpACK)
		if fl == 0 || (fl&tcpSYN != 0 && fl&(tcpFIN|tcpRST) != 0) {
			return BadTCPFlags
		}
	case ipProtoUDP:
		if off+8 > end {
			return TruncatedL4
		}
		ulen := int(be.Uint16(f[off+4:]))
		if ulen < 8 || off+ulen > end {
			return TruncatedL4
		}
		p.sport, p.dport = be.Uint16(f[off:]), be.Uint16(f[off+2:])
		p.udpLen = ulen
	}
	return reasonNone
}

// l4Len is the length the L4 checksum covers: the UDP length field for UDP
// (RFC 768), the rest of the IP packet for TCP.
func (p *packet) l4Len() int {
	if p.proto == ipProtoUDP {
		return p.udpLen
	}
	return p.ipEnd - p.l4
}

func (p *packet) ttlOff() int {
	if p.family == 4 {
		return p.l3 + 8
	}
	return p.l3 + 7
}

func (p *packet) l4CsumOff() int {
	if p.proto == ipProtoTCP {
		return p.l4 + 16
	}
	return p.l4 + 6
}
