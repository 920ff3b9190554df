package loader

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
)

// GUE source ports lie in the ephemeral range (bpf/consts.h).
const (
	gueSportMin  = 0xc000
	gueSportSpan = 0x4000
	murmur3C1    = 0x85ebca6b
	murmur3C2    = 0xc2b2ae35
)

// GUESourcePort is the outer UDP source port the datapath gives a GUE
// packet of the client flow src -> dst (gue_source_port in bpf/encap.h):
// one flow always gets the same port, different flows spread over
// 49152-65535. The datapath reads addresses and ports as the host's
// integers, so this reads them the same way.
func GUESourcePort(src, dst netip.AddrPort, proto uint8) uint16 {
	var h uint32
	for _, a := range []netip.Addr{src.Addr(), dst.Addr()} {
		b, _ := addrBytes(a)
		for i := 0; i < 16; i += 4 {
			h ^= binary.LittleEndian.Uint32(b[i:])
		}
	}
	h ^= uint32(bits.ReverseBytes16(src.Port()))<<16 | uint32(bits.ReverseBytes16(dst.Port()))
	h ^= uint32(proto)
	h ^= h >> 16
	h *= murmur3C1
	h ^= h >> 13
	h *= murmur3C2
	h ^= h >> 16
	return gueSportMin | uint16(h&(gueSportSpan-1))
}

// EncapOverhead is what encapsulation adds to a client's IP packet: the
// outer header of the member's family, and for GUE its UDP header.
func EncapOverhead(e Encap, memberV6 bool) int {
	n := 20
	if memberV6 {
		n = 40
	}
	if e == EncapGUE {
		n += 8
	}
	return n
}
