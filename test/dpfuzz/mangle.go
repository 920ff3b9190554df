package dpfuzz

import (
	"encoding/binary"
	"fmt"

	"github.com/limpet-lb/limpet/test/model"
)

// layout locates a frame's headers, walking every IPv6 extension header:
// the fuzzer's own reading of a packet, written apart from the model's, to
// mangle inputs and to check output checksums from scratch.
type layout struct {
	l3, l4, ipEnd int
	v4            bool
	proto         uint8
	ok            bool
}

func locate(b []byte) layout {
	be := binary.BigEndian
	if len(b) < 14 {
		return layout{}
	}
	off, et := 14, be.Uint16(b[12:])
	for (et == 0x8100 || et == 0x88a8) && off+4 <= len(b) {
		et = be.Uint16(b[off+2:])
		off += 4
	}
	var l layout
	l.l3 = off
	switch et {
	case 0x0800:
		if off+20 > len(b) {
			return layout{}
		}
		ihl := int(b[off]&0xf) * 4
		tot := int(be.Uint16(b[off+2:]))
		if ihl < 20 || off+ihl > len(b) || tot < ihl || off+tot > len(b) {
			return layout{}
		}
		l.v4, l.proto, l.l4, l.ipEnd = true, b[off+9], off+ihl, off+tot
	case 0x86dd:
		if off+40 > len(b) {
			return layout{}
		}
		l.ipEnd = off + 40 + int(be.Uint16(b[off+4:]))
		if l.ipEnd > len(b) {
			return layout{}
		}
		next, pos := b[off+6], off+40
		for next == 0 || next == 43 || next == 60 || next == 44 {
			if pos+8 > l.ipEnd {
				return layout{}
			}
			n := next
			next = b[pos]
			if n == 44 {
				pos += 8
			} else {
				pos += (int(b[pos+1]) + 1) * 8
			}
		}
		l.proto, l.l4 = next, pos
	default:
		return layout{}
	}
	l.ok = true
	return l
}

func (l layout) l4CsumOff() int {
	if l.proto == 6 {
		return l.l4 + 16
	}
	return l.l4 + 6
}

func (l layout) hasL4(b []byte) bool {
	switch l.proto {
	case 6:
		return l.l4+20 <= l.ipEnd
	case 17:
		return l.l4+8 <= l.ipEnd
	}
	return false
}

// applyMangle spoils one thing of a well-formed frame: a checksum, a
// length, the version, or its end.
func applyMangle(b []byte, mg mangle) []byte {
	be := binary.BigEndian
	l := locate(b)
	p := int(mg.param)
	fixIP := func() {
		if l.v4 {
			ihl := int(b[l.l3]&0xf) * 4
			b[l.l3+10], b[l.l3+11] = 0, 0
			be.PutUint16(b[l.l3+10:], ^model.Fold(model.Sum16(b[l.l3:l.l3+ihl], 0)))
		}
	}
	switch mg.kind {
	case mgBadIPCsum:
		if l.ok && l.v4 {
			b[l.l3+10] ^= byte(p | 1)
		} else if l.ok && l.hasL4(b) {
			b[l.l4CsumOff()] ^= byte(p | 1)
		}
	case mgBadL4Csum:
		if l.ok && l.hasL4(b) {
			b[l.l4CsumOff()+1] ^= byte(p | 1)
		}
	case mgUDPZeroCsum:
		if l.ok && l.proto == 17 && l.hasL4(b) {
			be.PutUint16(b[l.l4+6:], 0)
		}
	case mgTruncate:
		if len(b) > 14 {
			return b[:14+p*(len(b)-14)/256]
		}
	case mgLongerIPLen, mgShorterIPLen:
		if !l.ok {
			break
		}
		delta := 1 + p%24
		if mg.kind == mgShorterIPLen {
			delta = -delta
		}
		if l.v4 {
			be.PutUint16(b[l.l3+2:], uint16(int(be.Uint16(b[l.l3+2:]))+delta))
			fixIP()
		} else {
			be.PutUint16(b[l.l3+4:], uint16(int(be.Uint16(b[l.l3+4:]))+delta))
		}
		if p&0x80 != 0 {
			b = append(b, make([]byte, 1+p%24)...) // padding behind
		}
	case mgUDPLen:
		if l.ok && l.proto == 17 && l.hasL4(b) {
			n := int(be.Uint16(b[l.l4+4:]))
			switch p % 3 {
			case 0:
				n = p % 8
			case 1:
				n += 1 + p%16
			case 2:
				n -= 1 + p%8
			}
			be.PutUint16(b[l.l4+4:], uint16(n))
		}
	case mgTCPDoff:
		if l.ok && l.proto == 6 && l.hasL4(b) {
			b[l.l4+12] = byte(p%16)<<4 | b[l.l4+12]&0x0f
		}
	case mgPadding:
		pad := make([]byte, 1+p%40)
		for i := range pad {
			pad[i] = byte(p)
		}
		b = append(b, pad...)
	case mgVersion:
		if l.ok {
			b[l.l3] = b[l.l3]&0x0f | byte(p%16)<<4
			fixIP()
		}
	case mgIHL:
		if l.ok && l.v4 {
			b[l.l3] = b[l.l3]&0xf0 | byte(p%5)
		}
	}
	return b
}

// residue is a packet's checksum verification sum: 0xffff (or 0, the other
// one's-complement zero) when the checksum is right.
type residues struct {
	ip, l4  uint16
	udpNone bool
	ok      bool
}

func checksumResidues(b []byte) residues {
	l := locate(b)
	if !l.ok || !l.hasL4(b) {
		return residues{}
	}
	var r residues
	if l.v4 {
		ihl := int(b[l.l3]&0xf) * 4
		r.ip = model.Fold(model.Sum16(b[l.l3:l.l3+ihl], 0))
	}
	n := l.ipEnd - l.l4
	if l.proto == 17 {
		n = int(binary.BigEndian.Uint16(b[l.l4+4:]))
		if l.l4+n > l.ipEnd || n < 8 {
			return residues{}
		}
		if binary.BigEndian.Uint16(b[l.l4+6:]) == 0 {
			r.udpNone = true
		}
	}
	var acc uint32
	if l.v4 {
		acc = model.Sum16(b[l.l3+12:l.l3+20], 0)
	} else {
		acc = model.Sum16(b[l.l3+8:l.l3+40], 0)
	}
	acc += uint32(l.proto) + uint32(n)
	r.l4 = model.Fold(model.Sum16(b[l.l4:l.l4+n], acc))
	r.ok = true
	return r
}

func zero(v uint16) bool { return v == 0xffff || v == 0 }

// verifyChecksums recomputes an output packet's checksums from scratch: a
// packet whose input checksums were right must leave with right ones, and
// one whose input was wrong must leave wrong by exactly as much, never
// "fixed". A reset the datapath built (fresh) must simply be right.
func verifyChecksums(in, out []byte, fresh bool) []string {
	ro := checksumResidues(out)
	if !ro.ok {
		return nil
	}
	var d []string
	if fresh {
		if !zero(^ro.ip) && locate(out).v4 {
			d = append(d, fmt.Sprintf("the reset's IPv4 header checksum is wrong (residue %04x)", ro.ip))
		}
		if !zero(^ro.l4) {
			d = append(d, fmt.Sprintf("the reset's TCP checksum is wrong (residue %04x)", ro.l4))
		}
		return d
	}
	ri := checksumResidues(in)
	if !ri.ok {
		return nil
	}
	if locate(out).v4 && ^ro.ip != ^ri.ip && !(zero(^ro.ip) && zero(^ri.ip)) {
		d = append(d, fmt.Sprintf("IPv4 header checksum from scratch: input off by %04x, output off by %04x", ^ri.ip, ^ro.ip))
	}
	switch {
	case ri.udpNone:
		if !ro.udpNone {
			d = append(d, "a zero UDP checksum (none, or invalid over IPv6) was replaced by a computed one")
		}
	case ro.udpNone:
		d = append(d, "a UDP checksum became zero")
	case ^ro.l4 != ^ri.l4 && !(zero(^ro.l4) && zero(^ri.l4)):
		d = append(d, fmt.Sprintf("L4 checksum from scratch: input off by %04x, output off by %04x", ^ri.l4, ^ro.l4))
	}
	return d
}
