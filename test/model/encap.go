package model

import (
	"encoding/binary"
	"net/netip"
)

// Encapsulated DSR (README "Forwarding modes"): ipip and gue send the
// client's packet, untouched, inside an outer header of the member's family
// from the node's encap source; gue adds a UDP header (GUE variant 1: the
// inner IP header follows directly) whose source port hashes the inner
// flow. A packet too long for the tunnel is answered with ICMP
// fragmentation needed / packet too big from the VIP.

// EncapSettings are the node's settings.encap_source_v4/v6 and gue_port.
type EncapSettings struct {
	SourceV4, SourceV6 netip.Addr // invalid: not configured
	GUEPort            uint16
}

const (
	encapTTL     = 64
	icmpTTL      = 64
	icmpQuoteMax = 512 // bytes of the client's packet an ICMP too-big quotes
	ipProtoIPIP  = 4
	ipProtoIPv6  = 41
)

// gueSourcePort hashes the inner flow into 49152-65535: murmur3's
// finaliser over the exclusive or of both addresses' 32-bit words and the
// ports, all read in the machine's (little-endian) order, and the protocol.
func gueSourcePort(p *packet) uint16 {
	h := addrWords(p.src) ^ addrWords(p.dst)
	swap := func(v uint16) uint32 { return uint32(v>>8 | v<<8) }
	h ^= swap(p.sport)<<16 | swap(p.dport)
	h ^= uint32(p.proto)
	h = fmix32(h)
	return 0xc000 | uint16(h&0x3fff)
}

// encap tunnels a client packet to its member, or an ICMP error about the
// member's reply (icmpError), which is never answered with one.
func (m *Model) encap(o *Outcome, p *packet, vs *VirtualServer, member uint32, ingress int, icmpError bool) {
	maddr := m.members[member].Addr.Addr()
	outerV6 := maddr.Is6()
	src := m.cfg.Encap.SourceV4
	if outerV6 {
		src = m.cfg.Encap.SourceV6
	}
	if !src.IsValid() {
		m.drop(o, EncapNoSource)
		return
	}
	ovh := 20
	if outerV6 {
		ovh = 40
	}
	if vs.Mode == GUE {
		ovh += 8
	}
	outerLen := p.ipLen + ovh
	res, cached := m.cachedHop(o, p, int(member), outerLen)
	if !cached {
		res = m.cfg.Network.Lookup(maddr, outerLen)
	}
	switch {
	case res.Kind == FIBFragNeeded && icmpError:
		m.drop(o, EncapTooBig)
		return
	case res.Kind == FIBFragNeeded:
		m.tooBig(o, p, max(res.MTU-ovh, 0), ingress)
		return
	case res.Kind == FIBNoNeigh:
		// Encapsulated, the stack has no tunnel to put it in.
		m.drop(o, DSRNoNeighbour)
		return
	case res.Kind != FIBSuccess, p.vlans > 0 && res.Ifindex != ingress:
		m.drop(o, FIBDrop)
		return
	}

	f := p.frame
	var tos byte
	if p.family == 4 {
		tos = f[p.l3+1]
	} else {
		tos = f[p.l3]<<4 | f[p.l3+1]>>4
	}
	sport := gueSourcePort(p)
	out := append([]byte(nil), f[:p.l3]...)
	copy(out[0:6], res.DMAC)
	copy(out[6:12], res.SMAC)
	proto := byte(ipProtoIPIP)
	if p.family == 6 {
		proto = ipProtoIPv6
	}
	if vs.Mode == GUE {
		proto = ipProtoUDP
	}
	be := binary.BigEndian
	if !outerV6 {
		be.PutUint16(out[p.l3-2:], 0x0800)
		h := make([]byte, 20)
		h[0], h[1] = 0x45, tos
		be.PutUint16(h[2:], uint16(outerLen))
		be.PutUint16(h[6:], 0x4000) // DF
		h[8], h[9] = encapTTL, proto
		s4, d4 := src.As4(), maddr.As4()
		copy(h[12:], s4[:])
		copy(h[16:], d4[:])
		be.PutUint16(h[10:], ^Fold(Sum16(h, 0)))
		o.Csums = append(o.Csums, CsumField{len(out) + 10, CsumIPv4})
		out = append(out, h...)
	} else {
		be.PutUint16(out[p.l3-2:], 0x86dd)
		h := make([]byte, 40)
		fl := uint32(sport) << 4
		be.PutUint32(h[0:], 6<<28|uint32(tos)<<20|fl)
		be.PutUint16(h[4:], uint16(outerLen-40))
		h[6], h[7] = proto, encapTTL
		s6, d6 := src.As16(), maddr.As16()
		copy(h[8:], s6[:])
		copy(h[24:], d6[:])
		out = append(out, h...)
	}
	if vs.Mode == GUE {
		u := make([]byte, 8)
		be.PutUint16(u[0:], sport)
		be.PutUint16(u[2:], m.cfg.Encap.GUEPort)
		be.PutUint16(u[4:], uint16(p.ipLen+8))
		out = append(out, u...) // no checksum, as Katran's GUE
	}
	// The whole frame from the IP header on, padding included: the
	// datapath only pushes headers in front.
	out = append(out, f[p.l3:]...)
	o.Out = out
	o.Wrapped = true
	// A redirect even to the ingress link (a one-armed balancer): veth
	// wakes its peer for a redirect, not for XDP_TX.
	o.Verdict, o.Ifindex = Redirect, res.Ifindex
}

// tooBig answers a client packet too long for its tunnel with ICMP
// fragmentation needed (IPv4) or packet too big (IPv6) from the VIP, with
// the MTU left inside the tunnel, quoting up to icmpQuoteMax bytes of it,
// back out of the link it came in on.
func (m *Model) tooBig(o *Outcome, p *packet, mtu, ingress int) {
	f := p.frame
	quote := f[p.l3 : p.l3+min(p.ipLen, icmpQuoteMax)]
	out := append([]byte(nil), f[:p.l3]...)
	copy(out[0:6], f[6:12])
	copy(out[6:12], f[0:6])
	be := binary.BigEndian
	icmp := make([]byte, 8)
	if p.family == 4 {
		h := make([]byte, 20)
		h[0] = 0x45
		be.PutUint16(h[2:], uint16(28+len(quote)))
		h[8], h[9] = icmpTTL, ipProtoICMP
		s4, d4 := p.dst.As4(), p.src.As4()
		copy(h[12:], s4[:])
		copy(h[16:], d4[:])
		be.PutUint16(h[10:], ^Fold(Sum16(h, 0)))
		icmp[0], icmp[1] = 3, 4
		be.PutUint16(icmp[6:], uint16(mtu))
		be.PutUint16(icmp[2:], ^Fold(Sum16(quote, Sum16(icmp, 0))))
		o.Csums = append(o.Csums, CsumField{len(out) + 10, CsumIPv4}, CsumField{len(out) + 22, CsumTCP})
		out = append(append(append(out, h...), icmp...), quote...)
	} else {
		h := make([]byte, 40)
		h[0] = 0x60
		be.PutUint16(h[4:], uint16(8+len(quote)))
		h[6], h[7] = ipProtoICMPv6, icmpTTL
		s6, d6 := p.dst.As16(), p.src.As16()
		copy(h[8:], s6[:])
		copy(h[24:], d6[:])
		icmp[0] = 2
		be.PutUint32(icmp[4:], uint32(mtu))
		pseudo := Sum16(h[8:40], uint32(8+len(quote))+ipProtoICMPv6)
		be.PutUint16(icmp[2:], ^Fold(Sum16(quote, Sum16(icmp, pseudo))))
		o.Csums = append(o.Csums, CsumField{len(out) + 42, CsumTCP})
		out = append(append(append(out, h...), icmp...), quote...)
	}
	m.count(o, EncapTooBig)
	o.Out = out
	o.Wrapped = true
	o.Verdict, o.Ifindex = Redirect, ingress
}
