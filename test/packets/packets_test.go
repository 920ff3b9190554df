package packets

import (
	"net/netip"
	"testing"
)

func TestChecksumError(t *testing.T) {
	for _, src := range []string{"192.0.2.1:1000", "[2001:db8::1]:1000"} {
		s := netip.MustParseAddrPort(src)
		dst := netip.AddrPortFrom(s.Addr().Next(), 80)
		b := TCP(s, dst, "RA").Bytes()
		if err := Decode(b).ChecksumError(); err != nil {
			t.Fatalf("%s: a packet built with correct checksums: %v", src, err)
		}
		tcp := 14 + 20 // Ethernet and IP headers; the frame may be padded after TCP
		if s.Addr().Is6() {
			tcp = 14 + 40
		}
		bad := append([]byte(nil), b...)
		bad[tcp+14] ^= 0x40 // the TCP window
		if Decode(bad).ChecksumError() == nil {
			t.Fatalf("%s: a corrupted TCP header passed", src)
		}
		if s.Addr().Is4() {
			bad = append([]byte(nil), b...)
			bad[14+8] ^= 1 // the TTL
			if Decode(bad).ChecksumError() == nil {
				t.Fatalf("%s: a corrupted IPv4 header passed", src)
			}
		}
	}
}
