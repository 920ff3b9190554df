package dpfuzz

import (
	"encoding/binary"
	"net/netip"

	"github.com/limpet-lb/limpet/test/model"
	"github.com/limpet-lb/limpet/test/packets"
	"github.com/limpet-lb/limpet/test/testutil"
)

// Routers on the members' path and on the clients' path: any address
// will do, errors are routed by their destination.
var (
	memberRouter = [2]netip.Addr{netip.MustParseAddr("10.1.0.254"), netip.MustParseAddr("fd00:1::fe")}
	clientRouter = [2]netip.Addr{netip.MustParseAddr("198.51.100.254"), netip.MustParseAddr("2001:db8:c1::fe")}
)

// genICMP is an ICMP error quoting one of the model's flows: towards the
// client, about its packet as a member got it (from the member or a router
// on its path), or towards the VIP, about a reply as the client's path saw
// it. Now and then it quotes a flow that is not there, too little of the
// packet, or is not an error at all.
func (s *seq) genICMP(r *reader) genPacket {
	conns := s.m.Conns()
	var client, vip, target netip.AddrPort
	var udp bool
	if len(conns) > 0 && r.u8() < 235 {
		k := conns[int(r.u8())%len(conns)]
		c, _ := s.m.Conn(k)
		client, vip, target, udp = k.Src, k.Dst, c.Target, k.Proto == 17
		if target.Addr().Is4() != client.Addr().Is4() {
			// A tunnel across families: the member got the client's
			// own packet, to the VIP, and errors about it quote that.
			target = vip
		}
	} else {
		vs := s.sc.cfg.VirtualServers[r.pick(len(s.sc.cfg.VirtualServers))]
		fam := famIdx(vs.VIP.Addr())
		client = netip.AddrPortFrom(s.clientAddr(fam, r.pick(64)), clientPorts[r.pick(len(clientPorts))])
		vip, udp = vs.VIP, vs.Proto == 17
		target = netip.AddrPortFrom(goodMembers[fam][r.pick(len(goodMembers[fam]))], memberPorts[r.pick(len(memberPorts))])
	}
	fam := famIdx(client.Addr())
	toVIP := r.chance(50)
	quote := packets.Spec{Src: client, Dst: target, UDP: udp, TTL: 63}
	spec := packets.Spec{Src: netip.AddrPortFrom(memberRouter[fam], 0), Dst: netip.AddrPortFrom(client.Addr(), 0)}
	in := s.w.fx.Member
	if r.chance(50) {
		spec.Src = netip.AddrPortFrom(target.Addr(), 0)
	}
	if toVIP {
		quote = packets.Spec{Src: vip, Dst: client, UDP: udp, TTL: 63}
		spec = packets.Spec{Src: netip.AddrPortFrom(clientRouter[fam], 0), Dst: netip.AddrPortFrom(vip.Addr(), 0)}
		in = s.w.fx.Client
	}
	if !udp {
		quote.Flags, quote.Seq, quote.Ack = "PA", seq32(r), seq32(r)
	}
	quote.Payload = genPayload(r)
	if r.chance(5) { // a port no flow uses
		quote.Dst = netip.AddrPortFrom(quote.Dst.Addr(), quote.Dst.Port()^1)
	}
	q := quote.Bytes()[14:]
	hdr := 20
	if fam == 1 {
		hdr = 40
	}
	// RFC 792's 8 bytes of L4 header, up to the TCP checksum, shorter than
	// 8 (unreadable), or a random cut.
	switch r.weighted(50, 15, 10, 5, 20) {
	case 1:
		q = q[:min(len(q), hdr+8)]
	case 2:
		q = q[:min(len(q), hdr+18)]
	case 3:
		q = q[:min(len(q), hdr+int(r.u8())%8)]
	case 4:
		q = q[:min(len(q), int(r.u8()))]
	}
	typ, code, rest := byte(3), byte(4), uint32(1400) // frag-needed
	if fam == 1 {
		typ, code, rest = 2, 0, 1280 // packet too big
	}
	switch r.weighted(70, 15, 10, 5) {
	case 1: // port unreachable
		typ, code, rest = 3, 3, 0
		if fam == 1 {
			typ, code = 1, 4
		}
	case 2: // time exceeded
		typ, code, rest = 11, 0, 0
		if fam == 1 {
			typ = 3
		}
	case 3: // not an error: echo request
		typ, code = 8, 0
		if fam == 1 {
			typ = 128
		}
	}
	msg := make([]byte, 8, 8+len(q))
	msg[0], msg[1] = typ, code
	binary.BigEndian.PutUint32(msg[4:], rest)
	msg = append(msg, q...)
	var acc uint32
	if fam == 1 {
		acc = model.Sum16(spec.Src.Addr().AsSlice(), 0)
		acc = model.Sum16(spec.Dst.Addr().AsSlice(), acc)
		acc += 58 + uint32(len(msg))
	}
	c := ^model.Fold(model.Sum16(msg, acc))
	if r.chance(3) {
		c ^= 0x5a5a // wrong: must stay wrong by as much
	}
	binary.BigEndian.PutUint16(msg[2:], c)
	spec.Proto = [2]uint8{1, 58}[fam]
	spec.Payload = msg
	spec.TTL, spec.ZeroTTL = genTTL(r)
	spec.SrcMAC, spec.DstMAC = testutil.MemberMAC(0), in.MAC
	if toVIP {
		spec.SrcMAC = testutil.GatewayMAC
	}
	return genPacket{what: "icmp error", spec: spec, mg: genMangle(r), ingress: in.Index}
}
