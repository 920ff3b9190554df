package model

import (
	"encoding/binary"
	"net/netip"
)

// ICMP errors about NAT'ed flows (README "ICMP errors"). An error names
// its flow only by the packet it quotes:
//   - one for a client quoting a packet we NAT'ed (client -> member), from
//     the member or a router on its path, reaches the client from the VIP,
//     its quote saying the VIP again;
//   - one for a VIP quoting a reply (VIP -> client) goes to the flow's
//     member, the outer destination and the quote's source the member again
//     (a DSR member's, untouched but for its MACs).
//
// An error for a VIP that matches no flow, or whose quote cannot be read,
// is passed and counted; an error for anyone else that quotes no NAT
// member's packet is host traffic.

const (
	ipProtoICMP   = 1
	ipProtoICMPv6 = 58
)

func icmpProto(family int) uint8 {
	if family == 4 {
		return ipProtoICMP
	}
	return ipProtoICMPv6
}

// icmpError is what an ICMP error quotes, and where.
type icmpError struct {
	inL3, inL4   int
	proto        uint8
	src, dst     netip.Addr
	sport, dport uint16
	l4Csum       int // offset of the quoted L4 checksum; -1: not quoted, or a UDP zero
}

func isICMPError(family int, typ byte) bool {
	if family == 4 {
		return typ == 3 || typ == 11 || typ == 12 // unreachable, time exceeded, parameter problem
	}
	return typ >= 1 && typ <= 4 // unreachable, too big, time exceeded, parameter problem
}

// parseICMPError reads an ICMP error's quote. isErr is false for other ICMP
// messages (echo, neighbour discovery). The quote must hold the quoted IP
// header and 8 bytes of a TCP or UDP header (all RFC 792 promises), inside
// the outer IP packet; extension headers in a quoted IPv6 header are not
// walked, and a later fragment quotes no L4 header.
func parseICMPError(p *packet) (e icmpError, isErr bool, r Reason) {
	f, end := p.frame, p.ipEnd
	be := binary.BigEndian
	if p.l4+8 > end {
		return e, true, ICMPBadQuote
	}
	if !isICMPError(p.family, f[p.l4]) {
		return e, false, reasonNone
	}
	e.inL3 = p.l4 + 8
	if p.family == 4 {
		if e.inL3+20 > end {
			return e, true, ICMPBadQuote
		}
		ihl := int(f[e.inL3]&0x0f) * 4
		if f[e.inL3]>>4 != 4 || ihl < 20 || be.Uint16(f[e.inL3+6:])&0x1fff != 0 {
			return e, true, ICMPBadQuote
		}
		e.proto = f[e.inL3+9]
		e.src = netip.AddrFrom4([4]byte(f[e.inL3+12 : e.inL3+16]))
		e.dst = netip.AddrFrom4([4]byte(f[e.inL3+16 : e.inL3+20]))
		e.inL4 = e.inL3 + ihl
	} else {
		if e.inL3+40 > end || f[e.inL3]>>4 != 6 {
			return e, true, ICMPBadQuote
		}
		e.proto = f[e.inL3+6]
		e.src = netip.AddrFrom16([16]byte(f[e.inL3+8 : e.inL3+24]))
		e.dst = netip.AddrFrom16([16]byte(f[e.inL3+24 : e.inL3+40]))
		e.inL4 = e.inL3 + 40
	}
	if (e.proto != ipProtoTCP && e.proto != ipProtoUDP) || e.inL4+8 > end {
		return e, true, ICMPBadQuote
	}
	e.sport, e.dport = be.Uint16(f[e.inL4:]), be.Uint16(f[e.inL4+2:])
	e.l4Csum = e.inL4 + 6
	if e.proto == ipProtoTCP {
		e.l4Csum = e.inL4 + 16
	}
	if e.l4Csum+2 > end || (e.proto == ipProtoUDP && be.Uint16(f[e.l4Csum:]) == 0) {
		e.l4Csum = -1
	}
	return e, true, reasonNone
}

// icmpToClient handles ICMP for an address that is not a VIP.
func (m *Model) icmpToClient(o *Outcome, p *packet, ingress int) {
	e, isErr, r := parseICMPError(p)
	member := netip.AddrPortFrom(e.dst, e.dport)
	mv, ours := m.memberVS[memberVSKey{member, e.proto}]
	if !isErr || r != reasonNone || !ours {
		o.say("ICMP that quotes no NAT member's packet: host traffic")
		o.pass(p.frame)
		return
	}
	client := netip.AddrPortFrom(e.src, e.sport)
	vip := mv.vip
	if mv.shared {
		t, ok := m.replies.get(ReplyKey{member, client, e.proto})
		if !ok {
			m.count(o, ICMPNoFlow)
			o.pass(p.frame)
			return
		}
		vip = t.VIP
	}
	c, ok := m.conns.get(FlowKey{client, vip, e.proto})
	if !ok || c.Mode != NAT || c.Target != member || e.src != p.dst {
		o.say("ICMP about %s -> %s: no NAT flow of the client's", client, member)
		m.count(o, ICMPNoFlow)
		o.pass(p.frame)
		return
	}
	if p.frame[p.ttlOff()] <= 1 {
		m.count(o, TTLExpired)
		o.pass(p.frame)
		return
	}
	o.say("ICMP about %s -> %s: to the client from %s", client, member, vip)
	out := append([]byte(nil), p.frame...)
	m.icmpRewrite(out, p, &e, false, vip, true, vip.Addr())
	m.count(o, ICMPToClient)
	m.fib(o, p, out, m.icmpRouted(p, &e), p.dst, false, ingress, -1)
}

// icmpToVIP handles ICMP for a VIP.
func (m *Model) icmpToVIP(o *Outcome, p *packet, ingress int) {
	e, isErr, r := parseICMPError(p)
	if !isErr {
		o.say("ICMP for a VIP that is not an error")
		o.pass(p.frame)
		return
	}
	if r != reasonNone {
		m.count(o, r)
		o.pass(p.frame)
		return
	}
	vip, client := netip.AddrPortFrom(e.src, e.sport), netip.AddrPortFrom(e.dst, e.dport)
	c, ok := m.conns.get(FlowKey{client, vip, e.proto})
	if e.src != p.dst || !ok {
		o.say("ICMP about %s -> %s: no flow", vip, client)
		m.count(o, ICMPNoFlow)
		o.pass(p.frame)
		return
	}
	dsr := c.Mode == DSR
	// A tunnel's member is reached only through its tunnel: the error
	// goes in one, as the client's packets do. An error too long for it
	// is counted and dropped (RFC 1122: no ICMP error about one).
	if vs := m.vs[vsKey{vip.Addr(), vip.Port(), e.proto}]; dsr && vs != nil && (vs.Mode == IPIP || vs.Mode == GUE) {
		o.say("ICMP about %s -> %s: tunnelled to member %d %s", vip, client, c.Member, c.Target)
		m.count(o, ICMPToMember)
		m.encap(o, p, vs, c.Member, ingress, true)
		return
	}
	out := append([]byte(nil), p.frame...)
	var finish func([]byte, bool) []CsumField
	if !dsr {
		if p.frame[p.ttlOff()] <= 1 {
			m.count(o, TTLExpired)
			o.pass(p.frame)
			return
		}
		m.icmpRewrite(out, p, &e, true, c.Target, false, c.Target.Addr())
		finish = m.icmpRouted(p, &e)
	}
	o.say("ICMP about %s -> %s: to member %d %s", vip, client, c.Member, c.Target)
	m.count(o, ICMPToMember)
	m.fib(o, p, out, finish, c.Target.Addr(), dsr, ingress, int(c.Member))
}

// icmpRewrite rewrites the quote's source (quoteSrc) or destination to q,
// and the outer source (outerSrc) or destination to a. The quoted L4
// checksum, which covers bytes beyond the quote, changes by exactly what
// the rewritten words change (RFC 1624); the other checksums are set when
// the packet is finished.
func (m *Model) icmpRewrite(out []byte, p *packet, e *icmpError, quoteSrc bool, q netip.AddrPort, outerSrc bool, a netip.Addr) {
	be := binary.BigEndian
	var before []byte
	if e.l4Csum >= 0 {
		before = icmpL4Words(out, p, e)
	}
	// Destination addresses, then sources: IPv4 12 and 16, IPv6 8 and 24.
	aoff, qoff, poff, back := p.l3+16, e.inL3+16, e.inL4+2, 4
	if p.family == 6 {
		aoff, qoff, back = p.l3+24, e.inL3+24, 16
	}
	if outerSrc {
		aoff -= back
	}
	if quoteSrc {
		qoff -= back
		poff = e.inL4
	}
	copy(out[aoff:], a.AsSlice())
	copy(out[qoff:], q.Addr().AsSlice())
	be.PutUint16(out[poff:], q.Port())
	if e.l4Csum >= 0 {
		after := icmpL4Words(out, p, e)
		// HC' = ~(~HC + ~m + m') over the changed words.
		acc := uint32(^be.Uint16(out[e.l4Csum:]))
		acc = Sum16(after, Sum16(onesComplement(before), acc))
		c := ^Fold(acc)
		if e.proto == ipProtoUDP && c == 0 {
			c = 0xffff
		}
		be.PutUint16(out[e.l4Csum:], c)
	}
}

// icmpL4Words are the quoted words the quoted L4 checksum covers that a
// rewrite may change: the quoted addresses and ports.
func icmpL4Words(out []byte, p *packet, e *icmpError) []byte {
	var w []byte
	if p.family == 4 {
		w = append(w, out[e.inL3+12:e.inL3+20]...)
	} else {
		w = append(w, out[e.inL3+8:e.inL3+40]...)
	}
	return append(w, out[e.inL4:e.inL4+4]...)
}

func onesComplement(b []byte) []byte {
	out := make([]byte, len(b))
	for i := range b {
		out[i] = ^b[i]
	}
	return out
}

// icmpRouted finishes a rewritten ICMP error as routed does a NAT'ed
// packet: the TTL it loses when XDP forwards it, then its checksums: the
// outer IPv4 header's, the quoted IPv4 header's and the ICMP one (over the
// message, and for ICMPv6 its pseudo-header), each fresh plus the input's
// error.
func (m *Model) icmpRouted(p *packet, e *icmpError) func([]byte, bool) []CsumField {
	be := binary.BigEndian
	f := p.frame
	var ipErr, inErr uint16
	if p.family == 4 {
		ipErr = csumError(be.Uint16(f[p.l3+10:]), ipv4HeaderCsum(f, p.l3, p.l4-p.l3))
		inErr = csumError(be.Uint16(f[e.inL3+10:]), ipv4HeaderCsum(f, e.inL3, e.inL4-e.inL3))
	}
	icmpErr := csumError(be.Uint16(f[p.l4+2:]), icmpCsum(f, p))
	return func(out []byte, forwarded bool) []CsumField {
		if forwarded && m.cfg.DecrementTTL {
			out[p.ttlOff()]--
		}
		var fields []CsumField
		if p.family == 4 {
			be.PutUint16(out[p.l3+10:], onesAdd(ipv4HeaderCsum(out, p.l3, p.l4-p.l3), ipErr))
			be.PutUint16(out[e.inL3+10:], onesAdd(ipv4HeaderCsum(out, e.inL3, e.inL4-e.inL3), inErr))
			fields = append(fields, CsumField{p.l3 + 10, CsumIPv4}, CsumField{e.inL3 + 10, CsumIPv4})
		}
		if e.l4Csum >= 0 {
			kind := CsumTCP
			if e.proto == ipProtoUDP {
				kind = CsumUDP
			}
			fields = append(fields, CsumField{e.l4Csum, kind})
		}
		be.PutUint16(out[p.l4+2:], onesAdd(icmpCsum(out, p), icmpErr))
		return append(fields, CsumField{p.l4 + 2, CsumICMP})
	}
}

// icmpCsum is the checksum a fresh computation gives the ICMP message of p
// in frame, ignoring the field's current value.
func icmpCsum(frame []byte, p *packet) uint16 {
	var acc uint32
	n := p.ipEnd - p.l4
	if p.family == 6 {
		acc = Sum16(frame[p.l3+8:p.l3+40], 0)
		acc += ipProtoICMPv6 + uint32(n)>>16 + uint32(n)&0xffff
	}
	acc = Sum16(frame[p.l4:p.l4+2], acc)
	acc = Sum16(frame[p.l4+4:p.ipEnd], acc)
	return ^Fold(acc)
}
