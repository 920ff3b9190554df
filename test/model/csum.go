package model

import "encoding/binary"

// Checksums. The datapath updates checksums incrementally (RFC 1624), which
// keeps whatever error the input carried: a packet that arrived with a wrong
// checksum leaves with a checksum wrong by exactly as much, so the receiver
// drops it as it would have without limpet, and a right one stays right. The
// model states that directly: an output checksum is the one computed from
// scratch over the output, plus the input's error (field minus the checksum
// computed from scratch over the input), in one's-complement arithmetic.
//
// One's complement has two zeros, 0x0000 and 0xffff, and an incremental
// update may produce either where a fresh computation gives the other: both
// verify. The fuzzer compares TCP and IPv4 header checksums modulo that.
// UDP is exact: 0x0000 means "no checksum", so a computed zero is sent as
// 0xffff (RFC 768), and a zero input (none in IPv4, invalid in IPv6 per RFC
// 8200) stays zero: it must not be "fixed" into a checksum that verifies.

// CsumKind says how an output checksum field compares.
type CsumKind int

// Checksum fields.
const (
	CsumIPv4 CsumKind = iota // IPv4 header
	CsumTCP
	CsumUDP
	CsumICMP // ICMP and ICMPv6
)

// CsumField is a checksum field of an output packet.
type CsumField struct {
	Off  int
	Kind CsumKind
}

// onesAdd adds in one's complement with end-around carry.
func onesAdd(a, b uint16) uint16 {
	s := uint32(a) + uint32(b)
	return uint16(s&0xffff + s>>16)
}

// sum16 is the one's-complement sum of b as big-endian 16-bit words, an odd
// last byte padded with zero.
func Sum16(b []byte, acc uint32) uint32 {
	for len(b) >= 2 {
		acc += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint32(b[0]) << 8
	}
	return acc
}

// Fold folds the carries of a sum from Sum16 into its low 16 bits: the
// one's-complement sum, whose complement is the checksum.
func Fold(acc uint32) uint16 {
	for acc > 0xffff {
		acc = acc&0xffff + acc>>16
	}
	return uint16(acc)
}

// ipv4HeaderCsum is the checksum a fresh computation gives the IPv4 header
// at frame[l3:l3+ihl], ignoring the field's current value.
func ipv4HeaderCsum(frame []byte, l3, ihl int) uint16 {
	acc := Sum16(frame[l3:l3+10], 0)
	acc = Sum16(frame[l3+12:l3+ihl], acc)
	return ^Fold(acc)
}

// l4Csum is the checksum a fresh computation gives the TCP or UDP segment
// of p in frame (frame may be p.frame or a rewritten copy), ignoring the
// field's current value. IPv6 uses the header's destination: the generator
// sends routing headers with no segments left.
func l4Csum(frame []byte, p *packet) uint16 {
	var acc uint32
	n := p.l4Len()
	if p.family == 4 {
		acc = Sum16(frame[p.l3+12:p.l3+20], 0)
	} else {
		acc = Sum16(frame[p.l3+8:p.l3+40], 0)
	}
	acc += uint32(p.proto) + uint32(n)>>16 + uint32(n)&0xffff
	seg := frame[p.l4 : p.l4+n]
	co := p.l4CsumOff() - p.l4
	acc = Sum16(seg[:co], acc)
	acc = Sum16(seg[co+2:], acc)
	c := ^Fold(acc)
	if p.proto == ipProtoUDP && c == 0 {
		c = 0xffff
	}
	return c
}

// csumError is field minus fresh, in one's complement.
func csumError(field, fresh uint16) uint16 { return onesAdd(field, ^fresh) }

// inputErrors are the errors of p's input checksums, taken before any
// rewrite.
type inputErrors struct {
	ip, l4  uint16
	udpNone bool // a UDP checksum of zero: none (IPv4) or invalid (IPv6)
}

func checksumErrors(p *packet) inputErrors {
	var e inputErrors
	f := p.frame
	if p.family == 4 {
		ihl := int(f[p.l3]&0x0f) * 4
		e.ip = csumError(binary.BigEndian.Uint16(f[p.l3+10:]), ipv4HeaderCsum(f, p.l3, ihl))
	}
	field := binary.BigEndian.Uint16(f[p.l4CsumOff():])
	if p.proto == ipProtoUDP && field == 0 {
		e.udpNone = true
		return e
	}
	e.l4 = csumError(field, l4Csum(f, p))
	return e
}

// setChecksums writes out's checksums: fresh values plus the input's
// errors; it returns the fields it wrote.
func setChecksums(out []byte, p *packet, e inputErrors) []CsumField {
	var fields []CsumField
	if p.family == 4 {
		ihl := int(out[p.l3]&0x0f) * 4
		binary.BigEndian.PutUint16(out[p.l3+10:], onesAdd(ipv4HeaderCsum(out, p.l3, ihl), e.ip))
		fields = append(fields, CsumField{p.l3 + 10, CsumIPv4})
	}
	off := p.l4CsumOff()
	kind := CsumTCP
	if p.proto == ipProtoUDP {
		kind = CsumUDP
	}
	fields = append(fields, CsumField{off, kind})
	if e.udpNone {
		binary.BigEndian.PutUint16(out[off:], 0)
		return fields
	}
	c := onesAdd(l4Csum(out, p), e.l4)
	if p.proto == ipProtoUDP && c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(out[off:], c)
	return fields
}

// SameChecksum compares two values of a checksum field of kind k.
func SameChecksum(k CsumKind, a, b uint16) bool {
	if a == b {
		return true
	}
	return k != CsumUDP && (a == 0 && b == 0xffff || a == 0xffff && b == 0)
}
