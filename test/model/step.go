package model

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
)

// Outcome is what the datapath must do with one packet.
type Outcome struct {
	Verdict Verdict
	// Ifindex is where the packet goes: the redirect target, or the
	// ingress link for XDP_TX.
	Ifindex int
	// Out is the packet as the datapath leaves it, for Pass, TX and
	// Redirect; a drop's bytes do not matter.
	Out []byte
	// Csums are the checksum fields of Out the datapath recomputed.
	Csums []CsumField
	// Reasons are the exception counters the packet bumps, in order.
	Reasons []Reason
	Touched Touched
	// Evictable lists purging tables that were full when this packet
	// wrote to them: the kernel may have dropped some of their entries to
	// make room (README "a full table that takes k new clients drops the k
	// least recently used, and possibly a few more just behind them").
	// MustEvict counts, per table, keys added while full: that many other
	// entries at least are gone; MaxEvict bounds how many may be.
	Evictable map[uint32]bool
	MustEvict map[uint32]int
	MaxEvict  map[uint32]int
	// Fresh: the datapath built this packet itself (a reset), so its
	// checksums are computed afresh rather than carried over.
	Fresh bool
	// Wrapped: the output is the input inside headers the datapath built
	// (a tunnel), or quoted by them (ICMP too big); Out says every byte.
	Wrapped bool
	// Choices are the model's answers to questions it could not settle.
	Choices []string
	// story says what happened, for reproducers; formatted only when shown.
	story []storyLine
}

type storyLine struct {
	format string
	args   []any
}

func newOutcome() *Outcome { return &Outcome{} }

func (o *Outcome) say(format string, args ...any) {
	o.story = append(o.story, storyLine{format, args})
}

// Story says what happened.
func (o *Outcome) Story() []string {
	out := make([]string, len(o.story))
	for i, l := range o.story {
		out[i] = fmt.Sprintf(l.format, l.args...)
	}
	return out
}

func (o *Outcome) String() string {
	s := o.Verdict.String()
	if o.Verdict == Redirect || o.Verdict == TX {
		s += fmt.Sprintf(" (ifindex %d)", o.Ifindex)
	}
	if len(o.Reasons) > 0 {
		var rs []string
		for _, r := range o.Reasons {
			rs = append(rs, string(r))
		}
		s += " counted [" + strings.Join(rs, " ") + "]"
	}
	if len(o.story) > 0 {
		s += ": " + strings.Join(o.Story(), "; ")
	}
	return s
}

// Packet runs one frame, arriving on ingress (an ifindex) at now, through
// the model. The caller Commits or Rolls back its changes.
func (m *Model) Packet(frame []byte, ingress int, now Instant, choose Chooser) *Outcome {
	o := newOutcome()
	m.out, m.choose = o, choose
	m.packet(o, frame, ingress, now)
	m.out = nil
	return o
}

func (m *Model) count(o *Outcome, r Reason) {
	o.Reasons = append(o.Reasons, r)
	m.reasons.update(r, func(v *uint64) { *v++ })
}

func (o *Outcome) pass(frame []byte) {
	o.Verdict = Pass
	o.Out = frame
}

func (m *Model) drop(o *Outcome, r Reason) {
	if r != reasonNone {
		m.count(o, r)
	}
	o.Verdict = Drop
}

func (m *Model) packet(o *Outcome, frame []byte, ingress int, now Instant) {
	p, isIP, r := parseL3(frame)
	if !isIP {
		o.say("not IP")
		o.pass(frame)
		return
	}
	if r != reasonNone {
		m.drop(o, r)
		return
	}
	if m.vips[p.dst] {
		// README: "Ethernet destination not the receiving interface's
		// own MAC ... passed untouched, counted not_our_mac".
		if m.l2Dst(frame, ingress) != l2Ours {
			m.count(o, NotOurMAC)
			o.pass(frame)
			return
		}
		// README: "IPv4 or IPv6 fragment for a VIP | dropped, counted
		// (fragments of other traffic pass)".
		if p.fragment {
			m.drop(o, Fragment)
			return
		}
		if p.family == 6 && p.tooDeep {
			m.drop(o, IPv6ExtUnsupported)
			return
		}
		if p.proto == icmpProto(p.family) {
			m.icmpToVIP(o, &p, ingress)
			return
		}
		// README: "A packet that does not hit a virtual server (VIP,
		// port, protocol) returns XDP_PASS untouched" (DESIGN), e.g.
		// ICMP to a VIP. A malformed TCP or UDP header is VIP traffic
		// even for a port no virtual server uses: it is dropped.
		if p.proto != ipProtoTCP && p.proto != ipProtoUDP {
			o.say("VIP traffic that is neither TCP nor UDP")
			o.pass(frame)
			return
		}
		if r := parseL4(&p); r != reasonNone {
			m.drop(o, r)
			return
		}
		vs := m.vs[vsKey{p.dst, p.dport, p.proto}]
		if vs == nil {
			o.say("no virtual server on %s/%d", netip.AddrPortFrom(p.dst, p.dport), p.proto)
			o.pass(frame)
			return
		}
		// README: "IPv4 with options; IPv6 with hop-by-hop, routing or
		// destination-options headers | balanced, counted".
		if p.options {
			m.count(o, IPv4Options)
		}
		if p.ext {
			m.count(o, IPv6ExtWalked)
		}
		m.client(o, &p, vs, ingress, now)
		return
	}
	// Replies come from NAT members' addresses. Anything of theirs that is
	// not a well-formed TCP or UDP reply to a connection of ours is host
	// traffic, and the stack's business. So is a frame for another MAC
	// (counted: it was flooded to us) or for a group (not counted).
	if !p.fragment && (p.proto == icmpProto(p.family) || p.proto == ipProtoTCP || p.proto == ipProtoUDP) {
		switch m.l2Dst(frame, ingress) {
		case l2OtherHost:
			m.count(o, NotOurMAC)
			o.pass(frame)
			return
		case l2Group:
			o.say("host traffic to a group MAC")
			o.pass(frame)
			return
		}
	}
	if !p.fragment && p.proto == icmpProto(p.family) {
		m.icmpToClient(o, &p, ingress)
		return
	}
	if p.fragment || (p.proto != ipProtoTCP && p.proto != ipProtoUDP) || p.tooDeep {
		o.say("host traffic")
		o.pass(frame)
		return
	}
	if parseL4(&p) != reasonNone {
		o.say("malformed traffic from a member address: host traffic")
		o.pass(frame)
		return
	}
	m.reply(o, &p, ingress, now)
}

type l2Dst int

const (
	l2Ours l2Dst = iota // or an interface whose MAC is not known
	l2OtherHost
	l2Group
)

// l2Dst classifies the frame's Ethernet destination.
func (m *Model) l2Dst(frame []byte, ingress int) l2Dst {
	dst := frame[:6]
	if dst[0]&1 != 0 {
		return l2Group
	}
	if own, ok := m.cfg.OwnMACs[ingress]; ok && !bytes.Equal(own, dst) {
		return l2OtherHost
	}
	return l2Ours
}

// client handles a packet for a virtual server.
func (m *Model) client(o *Outcome, p *packet, vs *VirtualServer, ingress int, now Instant) {
	m.vsCtr.update(vs.ID, func(c *VSCounters) { c.Packets++; c.Bytes += uint64(len(p.frame)) })
	key := FlowKey{netip.AddrPortFrom(p.src, p.sport), netip.AddrPortFrom(p.dst, p.dport), p.proto}
	if c, ok := m.conns.get(key); ok {
		if !m.trackClient(&c, p, now) {
			m.refresh(&c, now)
			m.conns.set(key, c)
			o.say("connection %s -> member %d %s", key, c.Member, c.Target)
			m.forward(o, p, vs, c.Target, c.Member, ingress)
			return
		}
		// A SYN on a connection that has ended: the client reused the
		// port for a new connection.
		o.say("port reused after close")
		m.conns.del(key)
	}

	// README (persistence): "A TCP connection ends with a FIN from both
	// sides, an RST"; a FIN or RST for no connection cannot start one. It
	// is forwarded to the persisted or chosen server, so the server can
	// clean up, but no connection is recorded.
	create := !(p.proto == ipProtoTCP && p.tcpFlags&(tcpFIN|tcpRST) != 0)
	d, r := m.decide(o, vs, p, now, create)
	if r != reasonNone {
		if r == NoMember {
			m.vsCtr.update(vs.ID, func(c *VSCounters) { c.NoMemberDrops++ })
		}
		if r == TableFull {
			m.count(o, r)
			m.rejectTCP(o, p, ingress)
			return
		}
		m.drop(o, r)
		return
	}
	mem := m.members[d.member]
	port := mem.Addr.Port()
	if port == 0 {
		port = p.dport
	}
	target := netip.AddrPortFrom(mem.Addr.Addr(), port)
	if create {
		c := Conn{
			VS: vs.ID, Member: d.member, Target: target, Mode: vs.Mode.Conn(), UDP: p.proto == ipProtoUDP,
			HasEntry: d.hasEntry, Entry: d.entry, Counted: d.hasEntry, MemberCounted: true,
			Created: now, LastSeen: now,
		}
		m.conns.set(key, c)
		m.memberConns.update(d.member, func(n *uint32) { *n++ })
		if d.hasEntry {
			m.entries.update(d.entry, func(e *Entry) { e.LastSeen = now; e.Conns++ })
		}
		m.vsCtr.update(vs.ID, func(c *VSCounters) { c.NewFlows++ })
		m.memberCtr.update(d.member, func(c *MemberCounters) { c.NewFlows++ })
		if vs.Mode == NAT {
			rk := ReplyKey{target, key.Src, p.proto}
			if m.sharedReply(target, p.proto) {
				m.replies.set(rk, Translation{VIP: key.Dst, VS: vs.ID, Member: d.member})
			}
			m.noteReply(rk)
		}
		o.say("new connection %s -> member %d %s", key, d.member, target)
	} else {
		m.count(o, StrayTCP)
		o.say("stray FIN/RST forwarded to member %d %s", d.member, target)
	}
	m.forward(o, p, vs, target, d.member, ingress)
}

// trackClient follows TCP's end on the client side. It returns true when a
// SYN arrives on a connection that has ended: the port was reused.
func (m *Model) trackClient(c *Conn, p *packet, now Instant) bool {
	if p.proto != ipProtoTCP {
		return false
	}
	fl := p.tcpFlags
	switch {
	case fl&tcpRST != 0:
		c.RST = true
		m.release(c, now)
	case fl&tcpFIN != 0:
		c.FinClient = true
		// README: "Under dsr the server's FIN never passes the balancer,
		// so the client's FIN ends it."
		if c.Mode == DSR || c.FinServer {
			m.release(c, now)
		}
	case fl&tcpSYN != 0 && fl&tcpACK == 0 && c.Closed():
		return true
	}
	return false
}

// refresh records a client packet's time on its connection, coarsely.
func (m *Model) refresh(c *Conn, now Instant) {
	switch elapsedOver(now, c.LastSeen, m.cfg.FlowStampGranularity, true) {
	case yes:
		c.LastSeen = now
	case maybe:
		c.LastSeen = Instant{c.LastSeen.Lo, now.Hi}
	}
}

// release ends a connection's hold on its entry and on its member's count,
// exactly once (README: "The datapath counts each entry's live connections
// with atomics").
func (m *Model) release(c *Conn, now Instant) {
	if c.Counted {
		c.Counted = false
		m.entryRelease(c.Entry, now)
	}
	if c.MemberCounted {
		c.MemberCounted = false
		m.memberConns.update(c.Member, func(n *uint32) {
			if *n > 0 {
				*n--
			}
		})
	}
}

// entryRelease: README "When its last connection ends, the countdown
// starts": the countdown base is the last close. A count never goes below
// zero (an entry the LRU dropped and a new one created in its place may
// see closes of connections it never counted).
func (m *Model) entryRelease(k EntryKey, now Instant) {
	if m.tables[k.Table] == nil {
		return
	}
	if _, ok := m.entries.get(k); !ok {
		return
	}
	m.entries.update(k, func(e *Entry) {
		e.LastSeen = now
		if e.Conns > 0 {
			e.Conns--
		}
	})
}

func (m *Model) setEntry(k EntryKey, e Entry) {
	if _, had := m.entries.get(k); !had {
		m.tableLen.update(k.Table, func(n *int) { *n++ })
	}
	m.entries.set(k, e)
}

func (m *Model) delEntry(k EntryKey) {
	if _, had := m.entries.get(k); had {
		m.tableLen.update(k.Table, func(n *int) { *n-- })
		m.entries.del(k)
	}
}

type decision struct {
	member   uint32
	hasEntry bool
	entry    EntryKey
}

// decide chooses the member for a packet with no connection: the
// persisted server if it can take the client, else the pool's choice,
// recorded in the table when create is set.
func (m *Model) decide(o *Outcome, vs *VirtualServer, p *packet, now Instant, create bool) (decision, Reason) {
	if !vs.Persist {
		id, ok := m.pick(vs.Pool, p)
		if !ok {
			return decision{}, NoMember
		}
		return decision{member: id}, reasonNone
	}
	tbl := m.tables[vs.Table]
	if tbl == nil {
		return decision{}, NoTable
	}
	prefix := vs.V4Prefix
	if p.family == 6 {
		prefix = vs.V6Prefix
	}
	key := EntryKey{vs.Table, mask(p.src, prefix)}
	tctr := func(fn func(*TableCounters)) { m.tableCtr.update(tbl.ID, fn) }
	vctr := func(fn func(*VSCounters)) { m.vsCtr.update(vs.ID, fn) }

	moved, replace := false, false
	var keep uint32
	if e, ok := m.entries.get(key); ok {
		switch {
		case e.Expired:
			replace = true
		// README: "after it, the entry is deleted and the client is load
		// balanced afresh (a new entry, with a new creation time)". While
		// connections hold it, it never expires.
		case e.Conns == 0 && m.settle(elapsedOver(now, e.LastSeen, vs.Timeout, true), "entry %s idle past its %v timeout", key, vs.Timeout):
			e.Expired = true
			m.entries.set(key, e)
			tctr(func(c *TableCounters) { c.Expired++ })
			o.say("entry %s expired", key)
			replace = true
		default:
			if mid, found := m.memberFind(vs.Pool, e.Server); found {
				mem := m.members[mid]
				// README: "A full member takes no new client, and for its
				// persisted clients it counts as down".
				full := mem != nil && mem.MaxConns > 0 && m.memberConnsGet(mid) >= mem.MaxConns
				if mem != nil && mem.Up && !full {
					// Hits and misses count connections (README: "one
					// persistence miss per client, every other
					// connection a hit"): a stray FIN or RST is neither.
					if create {
						tctr(func(c *TableCounters) { c.Hits++ })
						vctr(func(c *VSCounters) { c.PersistHits++ })
					}
					o.say("persistence hit %s", key)
					return decision{member: mid, hasEntry: true, entry: key}, reasonNone
				}
				// README: "never keeps the entry and drops that client's
				// new connections (counted) until it expires".
				if vs.ServerDown == Never {
					vctr(func(c *VSCounters) { c.ServerDownDrops++ })
					o.say("persisted member %d is down or full, server_down never", mid)
					if full {
						return decision{}, MemberFull
					}
					return decision{}, ServerDown
				}
			}
			// Down with policy immediate, or not in this pool (a shared
			// table): move the client, keeping the count of connections
			// it still has.
			moved, replace, keep = true, true, e.Conns
			o.say("entry %s moves from %s", key, e.Server)
		}
	}
	if !moved && create {
		tctr(func(c *TableCounters) { c.Misses++ })
		vctr(func(c *VSCounters) { c.PersistMisses++ })
	}
	id, ok := m.pick(vs.Pool, p)
	if !ok {
		return decision{}, NoMember
	}
	if !create {
		return decision{member: id}, reasonNone
	}
	n := m.tableLen.m[tbl.ID]
	switch {
	case !tbl.Purge && !replace && n >= tbl.Capacity:
		// README: "off: a new client of a full table is rejected".
		tctr(func(c *TableCounters) { c.Rejects++ })
		vctr(func(c *VSCounters) { c.Rejects++ })
		o.say("table %d is full", tbl.ID)
		return decision{}, TableFull
	case tbl.Purge && n+tbl.freeBatch() > tbl.Capacity:
		// README: "a full table that takes k new clients drops the k
		// least recently used, and possibly a few more just behind them,
		// because the kernel frees entries in small batches": once fewer
		// than a batch are free, a write may drop up to a batch of other
		// entries, and a new key added to a full table drops one at least.
		if o.Evictable == nil {
			o.Evictable, o.MaxEvict, o.MustEvict = map[uint32]bool{}, map[uint32]int{}, map[uint32]int{}
		}
		o.Evictable[tbl.ID] = true
		o.MaxEvict[tbl.ID] += tbl.freeBatch()
		if !replace && n >= tbl.Capacity {
			o.MustEvict[tbl.ID]++
		}
	}
	mem := m.members[id]
	m.setEntry(key, Entry{Server: mem.Addr, Member: id, VS: vs.ID, Conns: keep, Created: now, LastSeen: now})
	if moved {
		vctr(func(c *VSCounters) { c.PersistMoved++ })
	} else {
		tctr(func(c *TableCounters) { c.Inserts++ })
		o.say("new entry %s -> member %d", key, id)
	}
	return decision{member: id, hasEntry: true, entry: key}, reasonNone
}

func (m *Model) memberConnsGet(id uint32) uint32 {
	n, _ := m.memberConns.get(id)
	return n
}

// memberFind finds the member of a pool that a persisted server maps to.
func (m *Model) memberFind(pool uint32, server netip.AddrPort) (uint32, bool) {
	if id, ok := m.memberAddr[memberAddrKey{pool, server.Addr(), server.Port()}]; ok {
		return id, true
	}
	id, ok := m.memberAddr[memberAddrKey{pool, server.Addr(), 0}]
	return id, ok
}

// mask keeps the first prefix bits of a client address (README
// "ipv4_prefix / ipv6_prefix ... mask the client address").
func mask(a netip.Addr, prefix uint8) netip.Addr {
	if int(prefix) >= a.BitLen() {
		return a
	}
	p, _ := a.Prefix(int(prefix))
	return p.Addr()
}

// forward sends a client packet to its member.
func (m *Model) forward(o *Outcome, p *packet, vs *VirtualServer, target netip.AddrPort, member uint32, ingress int) {
	m.memberCtr.update(member, func(c *MemberCounters) { c.Packets++; c.Bytes += uint64(len(p.frame)) })
	if vs.Mode == IPIP || vs.Mode == GUE {
		m.encap(o, p, vs, member, ingress, false)
		return
	}
	out := append([]byte(nil), p.frame...)
	if vs.Mode == DSR {
		// README: "dsr rewrites MACs only": no TTL, no checksum.
		m.fib(o, p, out, nil, target.Addr(), true, ingress, int(member))
		return
	}
	// README: "TTL or hop limit about to expire | passed to the stack,
	// which answers with ICMP".
	if out[p.ttlOff()] <= 1 {
		m.count(o, TTLExpired)
		o.pass(p.frame)
		return
	}
	// NAT: the destination becomes the member.
	if p.family == 4 {
		a := target.Addr().As4()
		copy(out[p.l3+16:], a[:])
	} else {
		a := target.Addr().As16()
		copy(out[p.l3+24:], a[:])
	}
	binary.BigEndian.PutUint16(out[p.l4+2:], target.Port())
	m.fib(o, p, out, m.routed(p), target.Addr(), false, ingress, int(member))
}

// routed finishes a NAT'ed packet once its way out is known: the balancer
// routes, so what it forwards itself loses one TTL (hop limit); what it
// hands to the stack keeps the TTL it came with, as the stack decrements
// it when it forwards (never twice for one hop). Checksums are then those
// of the output plus the input's errors.
func (m *Model) routed(p *packet) func(out []byte, forwarded bool) []CsumField {
	errs := checksumErrors(p)
	return func(out []byte, forwarded bool) []CsumField {
		if forwarded && m.cfg.DecrementTTL {
			out[p.ttlOff()]--
		}
		return setChecksums(out, p, errs)
	}
}

// fib routes a rewritten packet: README "bpf_fib_lookup then bpf_redirect,
// falling back to the kernel stack when the neighbour is not resolved yet".
func (m *Model) fib(o *Outcome, p *packet, out []byte, finish func([]byte, bool) []CsumField, dst netip.Addr, dsr bool, ingress, member int) {
	res, cached := m.cachedHop(o, p, member, p.ipLen)
	if !cached {
		res = m.cfg.Network.Lookup(dst, p.ipLen)
	}
	passRewritten := func(r Reason) {
		m.count(o, r)
		o.pass(out)
		if finish != nil {
			o.Csums = finish(out, false)
		}
	}
	switch res.Kind {
	case FIBSuccess:
	case FIBNoNeigh:
		// README: "neighbour not resolved yet (nat) | rewritten and handed
		// to the stack, which resolves it"; "(dsr) | dropped, counted".
		if dsr {
			m.drop(o, DSRNoNeighbour)
			return
		}
		passRewritten(FIBNoNeighbour)
		return
	case FIBBlackhole, FIBUnreachable, FIBProhibit:
		m.drop(o, FIBDrop)
		return
	default:
		// Not forwarded, or beyond the MTU: the stack handles a NAT'ed
		// packet (and answers "fragmentation needed"); a DSR packet still
		// says VIP, and the stack would route it back to us.
		if dsr {
			m.drop(o, FIBDrop)
			return
		}
		passRewritten(FIBPass)
		return
	}
	if p.vlans > 0 && res.Ifindex != ingress {
		// README: "up to two VLAN tags | balanced, then handed to the
		// stack to forward": XDP cannot redirect into a VLAN device.
		if dsr {
			m.drop(o, FIBDrop)
			return
		}
		passRewritten(VLANPass)
		return
	}
	if finish != nil {
		o.Csums = finish(out, true)
	}
	copy(out[0:6], res.DMAC)
	copy(out[6:12], res.SMAC)
	o.Out = out
	if res.Ifindex == ingress {
		o.Verdict, o.Ifindex = TX, ingress
		return
	}
	o.Verdict, o.Ifindex = Redirect, res.Ifindex
}

// cachedHop is a member's next hop from the cache (README "the next-hop
// cache"): used for an untagged packet that fits its MTU; a member with no
// hop, or a longer packet, asks the FIB, counted. member < 0: not a member.
func (m *Model) cachedHop(o *Outcome, p *packet, member, length int) (FIBResult, bool) {
	if member < 0 || m.cfg.NextHops == nil || p.vlans > 0 {
		return FIBResult{}, false
	}
	h, ok := m.cfg.NextHops[uint32(member)]
	switch {
	case !ok:
		m.count(o, NexthopMiss)
		m.memberCtr.update(uint32(member), func(c *MemberCounters) { c.NexthopMisses++ })
		return FIBResult{}, false
	case length > h.MTU:
		m.count(o, NexthopMTU)
		m.memberCtr.update(uint32(member), func(c *MemberCounters) { c.NexthopMTU++ })
		return FIBResult{}, false
	}
	m.memberCtr.update(uint32(member), func(c *MemberCounters) { c.NexthopHits++ })
	return FIBResult{Kind: FIBSuccess, Ifindex: h.Ifindex, SMAC: h.SMAC, DMAC: h.DMAC}, true
}

// reply handles a packet from a NAT member's address.
func (m *Model) reply(o *Outcome, p *packet, ingress int, now Instant) {
	rk := ReplyKey{netip.AddrPortFrom(p.src, p.sport), netip.AddrPortFrom(p.dst, p.dport), p.proto}
	fk, t, ok := m.replyConn(rk)
	if !ok {
		o.say("no connection for %s: host traffic", rk)
		o.pass(p.frame)
		return
	}
	// A reply keeps its connection alive as the client's packets do, so
	// a UDP flow that only the server sends on does not expire; the
	// member's FIN or RST ends the connection's half (README: "A TCP
	// connection ends with a FIN from both sides, an RST").
	if c, ok := m.conns.get(fk); ok {
		m.refresh(&c, now)
		if p.proto == ipProtoTCP && p.tcpFlags&(tcpFIN|tcpRST) != 0 {
			if p.tcpFlags&tcpRST != 0 {
				c.RST = true
				m.release(&c, now)
			} else {
				wasFin := c.FinClient
				c.FinServer = true
				if wasFin {
					m.release(&c, now)
				}
			}
		}
		m.conns.set(fk, c)
	}
	m.vsCtr.update(t.VS, func(c *VSCounters) { c.ReplyPackets++; c.ReplyBytes += uint64(len(p.frame)) })
	o.say("reply %s -> from %s", rk, t.VIP)
	if p.frame[p.ttlOff()] <= 1 {
		m.count(o, TTLExpired)
		o.pass(p.frame)
		return
	}
	out := append([]byte(nil), p.frame...)
	if p.family == 4 {
		a := t.VIP.Addr().As4()
		copy(out[p.l3+12:], a[:])
	} else {
		a := t.VIP.Addr().As16()
		copy(out[p.l3+8:], a[:])
	}
	binary.BigEndian.PutUint16(out[p.l4:], t.VIP.Port())
	// The reply hop the flow stores is the FIB's answer for as long as
	// the cache's generation holds, which no change here outlives.
	m.fib(o, p, out, m.routed(p), p.dst, false, ingress, -1)
}

// rejectTCP answers a rejected TCP client with an RST (README "TCP: RST
// sent back by XDP; UDP: dropped"). Like a TCP stack's reset (RFC 793) it
// acknowledges the segment: ack = seq + its length (SYN and FIN count one),
// seq = the segment's ack number, or 0 when it has none; RST and ACK are
// set. It goes back out of the ingress link (redirected there, so that a
// veth peer is woken) with the MACs swapped and any VLAN tags kept. A
// packet with IP options or IPv6 extension headers, or that is itself an
// RST, is only dropped.
func (m *Model) rejectTCP(o *Outcome, p *packet, ingress int) {
	if p.proto != ipProtoTCP || p.options || p.ext || p.tcpFlags&tcpRST != 0 {
		o.Verdict = Drop
		return
	}
	be := binary.BigEndian
	in := p.frame
	l3len := 20
	if p.family == 6 {
		l3len = 40
	}
	th := p.l3 + l3len
	payload := uint32(p.ipLen - l3len - p.tcpDoff)
	seq := be.Uint32(in[th+4:])
	ack := seq + payload
	if p.tcpFlags&tcpSYN != 0 {
		ack++
	}
	if p.tcpFlags&tcpFIN != 0 {
		ack++
	}
	var newSeq uint32
	if p.tcpFlags&tcpACK != 0 {
		newSeq = be.Uint32(in[th+8:])
	}
	out := append([]byte(nil), in[:th+20]...)
	copy(out[0:6], in[6:12])
	copy(out[6:12], in[0:6])
	var pseudo uint32
	if p.family == 4 {
		ip := out[p.l3:]
		copy(ip[12:16], in[p.l3+16:p.l3+20])
		copy(ip[16:20], in[p.l3+12:p.l3+16])
		be.PutUint16(ip[2:], 40)
		be.PutUint16(ip[4:], 0)
		be.PutUint16(ip[6:], 0x4000)
		ip[8] = rstTTL
		be.PutUint16(ip[10:], ipv4HeaderCsum(out, p.l3, 20))
		pseudo = Sum16(ip[12:20], 0)
	} else {
		ip := out[p.l3:]
		copy(ip[8:24], in[p.l3+24:p.l3+40])
		copy(ip[24:40], in[p.l3+8:p.l3+24])
		be.PutUint16(ip[4:], 20)
		ip[7] = rstTTL
		pseudo = Sum16(ip[8:40], 0)
	}
	t := out[th:]
	be.PutUint16(t[0:], p.dport)
	be.PutUint16(t[2:], p.sport)
	be.PutUint32(t[4:], newSeq)
	be.PutUint32(t[8:], ack)
	t[12] = 5 << 4
	t[13] = tcpRST | tcpACK
	be.PutUint16(t[14:], 0)
	be.PutUint16(t[16:], 0)
	be.PutUint16(t[18:], 0)
	pseudo += ipProtoTCP + 20
	be.PutUint16(t[16:], ^Fold(Sum16(t[:20], pseudo)))
	o.say("rejected with an RST")
	o.Verdict, o.Ifindex, o.Out, o.Fresh = Redirect, ingress, out, true
}
