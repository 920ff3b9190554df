package packets

import (
	"net/netip"
)

// IP is the IP packet of an untagged Ethernet frame (what a tunnel carries).
func IP(frame []byte) []byte { return frame[14:] }

// IPIP is inner (an untagged Ethernet frame) encapsulated in an outer IP
// header from src to dst: IPPROTO_IPIP (4) for an IPv4 inner packet,
// IPPROTO_IPV6 (41) for an IPv6 one, in IPv4 or IPv6 as src and dst are.
func IPIP(src, dst netip.Addr, inner []byte) Spec {
	proto := uint8(4)
	if IP(inner)[0]>>4 == 6 {
		proto = 41
	}
	return Spec{Src: netip.AddrPortFrom(src, 0), Dst: netip.AddrPortFrom(dst, 0), Proto: proto, Payload: append([]byte(nil), IP(inner)...)}
}

// GUE is inner (an untagged Ethernet frame) in a UDP datagram from src to
// dst, behind a GUE header of variant 0 (4 bytes: version 0, no control
// bit, no optional fields, the inner protocol, no flags) or variant 1
// (none: the inner IP header follows UDP directly, as Katran sends).
func GUE(src, dst netip.AddrPort, variant int, inner []byte) Spec {
	var payload []byte
	if variant == 0 {
		proto := byte(4)
		if IP(inner)[0]>>4 == 6 {
			proto = 41
		}
		payload = []byte{0, proto, 0, 0}
	}
	payload = append(payload, IP(inner)...)
	return Spec{Src: src, Dst: dst, UDP: true, Payload: payload}
}
