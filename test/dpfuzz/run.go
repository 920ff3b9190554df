package dpfuzz

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/test/model"
	"github.com/limpet-lb/limpet/test/packets"
	"github.com/limpet-lb/limpet/test/testutil"
	"github.com/limpet-lb/limpet/userspace/nexthop"
)

// Stats count what a run did.
type Stats struct {
	Sequences, Ops, Packets, Sweeps, Choices int
	// Evicted counts entries full purging tables dropped; Hits, Misses,
	// Moved, Expired and Rejected sum the tables' counters: coverage.
	Evicted, Hits, Misses, Moved, Expired, Rejected int
	// CachedHops counts the members' hops published to the next-hop
	// cache (half the sequences run with the cache off).
	CachedHops int
	// Time spent per kind of operation, and starting sequences.
	Time     map[string]time.Duration
	Verdicts map[model.Verdict]int
	Reasons  map[model.Reason]int
}

func (s *Stats) add(o Stats) {
	s.Sequences += o.Sequences
	s.Ops += o.Ops
	s.Packets += o.Packets
	s.Sweeps += o.Sweeps
	s.Choices += o.Choices
	s.Evicted += o.Evicted
	s.Hits += o.Hits
	s.Misses += o.Misses
	s.Moved += o.Moved
	s.Expired += o.Expired
	s.Rejected += o.Rejected
	s.CachedHops += o.CachedHops
	if s.Verdicts == nil {
		s.Verdicts, s.Reasons, s.Time = map[model.Verdict]int{}, map[model.Reason]int{}, map[string]time.Duration{}
	}
	for k, v := range o.Time {
		s.Time[k] += v
	}
	for k, v := range o.Verdicts {
		s.Verdicts[k] += v
	}
	for k, v := range o.Reasons {
		s.Reasons[k] += v
	}
}

// Mismatch is a disagreement between the datapath and the model, with
// what it takes to reproduce it.
type Mismatch struct {
	Input  []byte // the whole input, up to and including the failing operation
	Op     int    // index of the failing operation (-1: the end-of-sequence check)
	What   string // the operation
	Config string
	Before string // the model's state around what the operation touched, before it
	Packet []byte
	Model  string
	Kernel string
	Diffs  []string
}

func (m *Mismatch) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "datapath and model disagree at operation %d: %s\n", m.Op, m.What)
	fmt.Fprintf(&b, "configuration:\n%s", m.Config)
	if m.Before != "" {
		fmt.Fprintf(&b, "state before (model):\n%s", m.Before)
	}
	if m.Packet != nil {
		fmt.Fprintf(&b, "packet (%d bytes): %s\n", len(m.Packet), hex.EncodeToString(m.Packet))
	}
	fmt.Fprintf(&b, "model:  %s\nkernel: %s\n", m.Model, m.Kernel)
	for _, d := range m.Diffs {
		fmt.Fprintf(&b, "  - %s\n", d)
	}
	if len(m.Input) <= 512 {
		fmt.Fprintf(&b, "input (%d bytes): %s\n", len(m.Input), hex.EncodeToString(m.Input))
	} else {
		fmt.Fprintf(&b, "input: %d bytes (%d operations)\n", len(m.Input), Ops(m.Input))
	}
	return b.String()
}

// Trace, when set, receives a line per operation: what was sent and what
// both sides did.
var Trace func(format string, args ...any)

func (s *seq) trace(format string, args ...any) {
	if Trace != nil {
		Trace(format, args...)
	}
}

// seq is one sequence in progress.
type seq struct {
	w      *World
	in     []byte
	sc     *scenario
	m      *model.Model
	tables map[uint32]*loader.PersistTable
	purge  map[uint32]bool
	base   counters // the kernel's counters when the sequence started
	stats  Stats
}

// Run runs one input through the datapath and the model, on the world's
// thread, and returns the first disagreement.
func (w *World) Run(in []byte) (st Stats, mm *Mismatch, err error) {
	err = w.do(func() error {
		s := &seq{w: w, in: in}
		s.stats.Verdicts, s.stats.Reasons, s.stats.Time = map[model.Verdict]int{}, map[model.Reason]int{}, map[string]time.Duration{}
		defer s.close()
		var e error
		mm, e = s.run()
		st = s.stats
		return e
	})
	return st, mm, err
}

func (s *seq) close() {
	for _, t := range s.tables {
		t.Close()
	}
}

func (s *seq) run() (*Mismatch, error) {
	t0 := time.Now()
	defer func() { s.stats.Time["total"] += time.Since(t0) }()
	h := &reader{b: s.in[:min(headerSize, len(s.in))]}
	s.sc = genScenario(h, s.w.net)
	for i := range s.sc.cfg.Tables {
		s.sc.cfg.Tables[i].FreeBatch = lruFreeBatch(s.sc.cfg.Tables[i].Capacity, s.w.cpus, s.w.release)
	}
	if err := reset(s.w.dp, toLoader(s.sc.cfg).Tables); err != nil {
		return nil, fmt.Errorf("reset: %w", err)
	}
	if err := s.apply(); err != nil {
		return nil, err
	}
	s.m = model.New(s.sc.cfg)
	for _, p := range s.sc.cfg.Pools {
		c, err := s.w.dp.PoolCursor(loader.PoolID(p.ID))
		if err != nil {
			return nil, err
		}
		s.m.SetPoolCursor(p.ID, c)
	}
	k := newKernel(s.w.dp, s.tables, s.purge)
	s.base = k.allCounters(s.sc.cfg)
	if k.err != nil {
		return nil, k.err
	}
	s.stats.Sequences++
	s.stats.Time["start"] += time.Since(t0)
	n := 0
	if len(s.in) > headerSize {
		n = min((len(s.in)-headerSize)/opSize, maxOps)
	}
	for i := 0; i < n; i++ {
		op := s.in[headerSize+i*opSize : headerSize+(i+1)*opSize]
		mm, err := s.op(i, op)
		if err != nil {
			return nil, fmt.Errorf("operation %d: %w", i, err)
		}
		if mm != nil {
			mm.Input = s.in[:headerSize+(i+1)*opSize]
			mm.Op = i
			mm.Config = describeConfig(s.sc)
			return mm, nil
		}
		s.stats.Ops++
	}
	if mm := s.checkAll(); mm != nil {
		mm.Input, mm.Op, mm.Config = s.in, -1, describeConfig(s.sc)
		return mm, nil
	}
	for _, t := range s.sc.cfg.Tables {
		c := s.m.TableCounters(t.ID)
		s.stats.Hits += int(c.Hits)
		s.stats.Misses += int(c.Misses)
		s.stats.Expired += int(c.Expired)
		s.stats.Rejected += int(c.Rejects)
	}
	for _, v := range s.sc.cfg.VirtualServers {
		s.stats.Moved += int(s.m.VSCounters(v.ID).PersistMoved)
	}
	return nil, nil
}

// apply writes the scenario's configuration and reopens the tables.
func (s *seq) apply() error {
	if err := s.w.dp.Apply(toLoader(s.sc.cfg)); err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	if err := s.publishNextHops(); err != nil {
		return err
	}
	s.close()
	s.tables, s.purge = map[uint32]*loader.PersistTable{}, map[uint32]bool{}
	for _, t := range s.sc.cfg.Tables {
		h, err := s.w.dp.OpenTable(loader.NewTableID(t.ID, t.Purge))
		if err != nil {
			return err
		}
		s.tables[t.ID], s.purge[t.ID] = h, t.Purge
	}
	return nil
}

// nextHopLease outlasts any sequence's clock advances.
const nextHopLease = 50 * 365 * 24 * time.Hour

// publishNextHops fills the datapath's next-hop cache as the daemon would,
// resolving the members in the fixture's namespace, and tells the model;
// or, for half the inputs (by a checksum of the header, so that an input
// replays the same way), turns the cache off.
func (s *seq) publishNextHops() error {
	if crc32.ChecksumIEEE(s.in[:min(headerSize, len(s.in))])&1 == 1 {
		s.sc.cfg.NextHops = nil
		return s.w.dp.DropNextHops()
	}
	var targets []nexthop.Target
	for _, m := range s.sc.cfg.Members {
		targets = append(targets, nexthop.Target{Member: loader.MemberID(m.ID), Addr: m.Addr.Addr()})
	}
	// A sequence runs on the fixture's thread, in its namespace.
	res, err := nexthop.ResolveHere(targets)
	if err != nil {
		return fmt.Errorf("resolve next hops: %w", err)
	}
	if _, err := s.w.dp.PublishNextHops(res.Hops, nextHopLease); err != nil {
		return err
	}
	s.sc.cfg.NextHops = map[uint32]model.NextHop{}
	for id, h := range res.Hops {
		s.sc.cfg.NextHops[uint32(id)] = model.NextHop{Ifindex: h.Ifindex, SMAC: h.SrcMAC, DMAC: h.DstMAC, MTU: h.MTU}
	}
	s.stats.CachedHops += len(res.Hops)
	return nil
}

var opNames = []string{"client", "reply", "advance", "member", "sweep", "entry", "reload", "icmp"}

func (s *seq) op(i int, b []byte) (*Mismatch, error) {
	r := &reader{b: b}
	kind := kindOf(r.u8())
	t0 := time.Now()
	defer func() { s.stats.Time[opNames[kind]] += time.Since(t0) }()
	switch kind {
	case opClient:
		p := s.genClient(r)
		return s.packet(p)
	case opReply:
		p := s.genReply(r)
		return s.packet(p)
	case opAdvance:
		d := s.genAdvance(r)
		s.trace("clock +%v", d)
		return nil, s.w.advance(d)
	case opMember:
		return nil, s.memberChange(r)
	case opSweep:
		return s.sweep(r)
	case opEntry:
		return s.entryOp(r)
	case opReload:
		return nil, s.reload(r)
	case opICMP:
		return s.packet(s.genICMP(r))
	}
	return nil, nil
}

// genPacket is a packet to send and where it arrives.
type genPacket struct {
	what    string
	spec    packets.Spec
	mg      mangle
	ingress int
}

func (g genPacket) bytes() []byte { return applyMangle(g.spec.Bytes(), g.mg) }

func (s *seq) clientAddr(fam, i int) netip.Addr {
	c := s.sc.clients[fam]
	return c[i%len(c)]
}

func (s *seq) genClient(r *reader) genPacket {
	vsi := r.pick(len(s.sc.cfg.VirtualServers))
	vs := s.sc.cfg.VirtualServers[vsi]
	fam := famIdx(vs.VIP.Addr())
	src := netip.AddrPortFrom(s.clientAddr(fam, r.pick(64)), clientPorts[r.pick(len(clientPorts))])
	dst := vs.VIP
	udp := vs.Proto == 17
	switch r.weighted(88, 6, 3, 3) {
	case 1: // the VIP on a port no virtual server uses
		dst = netip.AddrPortFrom(vs.VIP.Addr(), 9999)
	case 2: // not a VIP at all
		dst = netip.AddrPortFrom(otherDst[fam], vs.VIP.Port())
	case 3: // the other protocol
		udp = !udp
	}
	spec := packets.Spec{Src: src, Dst: dst, UDP: udp}
	s.fill(r, &spec)
	// Mostly from the client side; now and then a client on the member
	// link (one-armed), which the datapath answers with XDP_TX.
	in := s.w.fx.Client
	if r.chance(8) {
		in = s.w.fx.Member
	}
	spec.SrcMAC, spec.DstMAC = testutil.GatewayMAC, in.MAC
	return genPacket{what: "client packet", spec: spec, mg: genMangle(r), ingress: in.Index}
}

// genReply is a NAT member's reply to one of the model's connections, or a
// stray packet from a member's address.
func (s *seq) genReply(r *reader) genPacket {
	replies := s.m.ReplyKeys()
	sel := r.u8()
	var spec packets.Spec
	if len(replies) > 0 && sel < 230 {
		rk := replies[int(r.u8())%len(replies)]
		spec = packets.Spec{Src: rk.Member, Dst: rk.Client, UDP: rk.Proto == 17}
	} else {
		var addrs []netip.AddrPort
		for _, m := range s.sc.cfg.Members {
			if m.NAT {
				addrs = append(addrs, m.Addr)
			}
		}
		if len(addrs) == 0 {
			for _, m := range s.sc.cfg.Members {
				addrs = append(addrs, m.Addr)
			}
		}
		src := addrs[r.pick(len(addrs))]
		if src.Port() == 0 {
			src = netip.AddrPortFrom(src.Addr(), 80)
		}
		fam := famIdx(src.Addr())
		dst := netip.AddrPortFrom(s.clientAddr(fam, r.pick(64)), clientPorts[r.pick(len(clientPorts))])
		spec = packets.Spec{Src: src, Dst: dst, UDP: r.chance(40)}
	}
	s.fill(r, &spec)
	in := s.w.fx.Member
	if r.chance(8) {
		in = s.w.fx.Client
	}
	spec.SrcMAC, spec.DstMAC = testutil.MemberMAC(0), in.MAC
	return genPacket{what: "member reply", spec: spec, mg: genMangle(r), ingress: in.Index}
}

// fill draws the rest of a packet: flags, payload, TTL, VLAN tags, IP
// options or extension headers, fragments.
func (s *seq) fill(r *reader, spec *packets.Spec) {
	if !spec.UDP {
		spec.Flags = genFlags(r)
		spec.Seq, spec.Ack = seq32(r), seq32(r)
		if r.chance(5) {
			spec.DataOffset = 6 + uint8(r.pick(10))
		}
	}
	spec.Payload = genPayload(r)
	spec.TTL, spec.ZeroTTL = genTTL(r)
	switch r.weighted(84, 10, 6) {
	case 1:
		spec.VLANs = []packets.VLANTag{{TPID: []uint16{0x8100, 0x88a8}[r.pick(2)], ID: 10}}
	case 2:
		spec.VLANs = []packets.VLANTag{{TPID: 0x88a8, ID: 100}, {TPID: 0x8100, ID: 20}}
	}
	v4 := spec.Src.Addr().Is4()
	x := r.u8()
	switch {
	case v4 && x < 12:
		n := 4 * (1 + int(x)%10)
		spec.IPv4Options = make([]byte, n)
		for i := range spec.IPv4Options {
			spec.IPv4Options[i] = 1 // NOP
		}
		if x%3 == 0 {
			copy(spec.IPv4Options, []byte{148, 4, 0, 0}) // router alert
		}
	case v4 && x < 18:
		spec.MoreFrags = x%2 == 0
		if !spec.MoreFrags || x%4 == 1 {
			spec.FragOffset = 1 + uint16(x)
		}
	case v4 && x < 21:
		spec.Proto = []uint8{1, 255, 132}[x%3]
	case !v4 && x < 12:
		spec.IPv6Ext = []packets.IPv6Ext{{Type: packets.ExtHopByHop, Body: []byte{1, 4, 0, 0, 0, 0}}}
	case !v4 && x < 18:
		spec.IPv6Ext = []packets.IPv6Ext{{Type: packets.ExtDestOpts, Body: make([]byte, 6+8*int(x%3))}}
	case !v4 && x < 22:
		spec.IPv6Ext = []packets.IPv6Ext{{Type: packets.ExtRouting, Body: []byte{4, 0, 0, 0, 0, 0}}} // SRH, no segments left
	case !v4 && x < 26:
		spec.IPv6Ext = []packets.IPv6Ext{{Type: packets.ExtFragment, Body: []byte{0, byte(x % 2), 0, 0, 0, 7}}}
	case !v4 && x < 29:
		for i := 0; i < 4; i++ {
			spec.IPv6Ext = append(spec.IPv6Ext, packets.IPv6Ext{Type: packets.ExtDestOpts, Body: make([]byte, 6)})
		}
	case !v4 && x < 31:
		for i := 0; i < 5; i++ {
			spec.IPv6Ext = append(spec.IPv6Ext, packets.IPv6Ext{Type: packets.ExtDestOpts, Body: make([]byte, 6)})
		}
	case !v4 && x < 33:
		spec.Proto = []uint8{58, 255, 50}[x%3]
	}
	spec.DontFrag = r.chance(50)
	spec.IPID = r.u16()
}

// advances are the clock's steps: short ones, the flow stamp's granularity,
// and the profiles' and sweeper's timeouts either side.
func (s *seq) genAdvance(r *reader) time.Duration {
	steps := []time.Duration{time.Millisecond, 50 * time.Millisecond, 260 * time.Millisecond, time.Second,
		2 * time.Second, 10 * time.Second, 121 * time.Second, 301 * time.Second, 901 * time.Second}
	i := r.pick(len(steps) + 3)
	if i < len(steps) {
		return steps[i]
	}
	vs := s.sc.cfg.VirtualServers[r.pick(len(s.sc.cfg.VirtualServers))]
	return vs.Timeout + []time.Duration{-time.Millisecond, 0, time.Millisecond}[i-len(steps)]
}

// memberChange takes a member down or up, drains it, or changes its limit,
// and writes its pool the way the daemon does.
func (s *seq) memberChange(r *reader) error {
	mems := s.sc.cfg.Members
	i := r.pick(len(mems))
	id := mems[i].ID
	switch r.pick(4) {
	case 0, 1:
		s.sc.state[id] = memberStates[r.pick(len(memberStates))]
	case 2:
		s.sc.cfg.Members[i].MaxConns = []uint32{0, 1, 2, 3}[r.pick(4)]
	case 3:
		s.sc.weight[id] = 1 + r.pick(4)
	}
	goingDown := s.sc.state[id] != "enabled"
	s.sc.rebuild()
	var pool loader.Pool
	for _, p := range s.sc.cfg.Pools {
		if p.ID == mems[i].Pool {
			pool = loaderPool(p)
		}
	}
	var members []loader.Member
	for _, m := range s.sc.cfg.Members {
		if m.Pool == mems[i].Pool {
			members = append(members, loaderMember(m))
		}
	}
	// As the daemon writes a pool: going down, leave the eligible list
	// before the member reads as down; coming up, the reverse.
	if err := s.w.dp.WritePool(pool, members, goingDown); err != nil {
		return err
	}
	s.m.SetConfig(s.sc.cfg)
	return nil
}

// reload changes a virtual server's profile options or pool and applies the
// whole configuration, as 'limpet reload' does.
func (s *seq) reload(r *reader) error {
	vss := s.sc.cfg.VirtualServers
	vs := &vss[r.pick(len(vss))]
	switch r.pick(4) {
	case 0:
		vs.ServerDown = model.ServerDownPolicy(r.pick(2))
	case 1:
		vs.V4Prefix, vs.V6Prefix = v4Prefixes[r.pick(len(v4Prefixes))], v6Prefixes[r.pick(len(v6Prefixes))]
	case 2:
		vs.Timeout = timeouts[r.pick(len(timeouts))]
	case 3:
		// A tunnel may reach members of either family (config
		// validation allows it); nat and dsr need the VIP's, which
		// their own pool has.
		tunnel := vs.Mode == model.IPIP || vs.Mode == model.GUE
		var fits []uint32
		for _, p := range s.sc.cfg.Pools {
			if tunnel || s.sc.family[p.ID] == famIdx(vs.VIP.Addr()) {
				fits = append(fits, p.ID)
			}
		}
		vs.Pool = fits[r.pick(len(fits))]
	}
	s.sc.rebuild()
	if err := s.apply(); err != nil {
		return err
	}
	s.m.SetConfig(s.sc.cfg)
	return nil
}

// kernelOutcome is what the datapath did with a packet.
type kernelOutcome struct {
	act     loader.XDPAction
	out     []byte
	ifindex int
}

func (k kernelOutcome) String() string {
	s := k.act.String()
	if k.act == loader.XDPRedirect {
		s += fmt.Sprintf(" (ifindex %d)", k.ifindex)
	}
	return s
}

// packet runs one generated packet through both and compares.
func (s *seq) packet(g genPacket) (*Mismatch, error) {
	frame := g.bytes()
	act, out, now, err := s.w.run(frame, g.ingress)
	if err != nil {
		return nil, fmt.Errorf("run packet %x: %w", frame, err)
	}
	ko := kernelOutcome{act: act, out: out}
	if act == loader.XDPRedirect && len(out) >= 12 {
		ko.ifindex = s.w.macs[netMAC(out[6:12])]
	}
	s.stats.Packets++
	s.stats.Verdicts[modelVerdict(act)]++
	k := newKernel(s.w.dp, s.tables, s.purge)
	var first *Mismatch
	for attempt := 0; attempt < 16; attempt++ {
		ans := attempt
		o := s.m.Packet(frame, g.ingress, now, func(string) bool { b := ans&1 == 1; ans >>= 1; return b })
		diffs := s.compareOutcome(k, frame, o, ko)
		if k.err != nil {
			return nil, k.err
		}
		if len(diffs) == 0 {
			s.trace("%s %s: %s", g.what, describeSpec(g), o)
			s.m.Commit()
			for _, r := range o.Reasons {
				s.stats.Reasons[r]++
			}
			if attempt > 0 {
				s.stats.Choices++
			}
			return nil, nil
		}
		if first == nil {
			first = &Mismatch{What: fmt.Sprintf("%s on ifindex %d at %s: %s", g.what, g.ingress, now, describeSpec(g)),
				Packet: frame, Model: o.String(), Kernel: ko.String(), Diffs: diffs}
			s.m.Rollback()
			first.Before = s.m.Dump(o.Touched)
		} else {
			s.m.Rollback()
		}
		if len(o.Choices) == 0 || attempt+1 >= 1<<len(o.Choices) {
			break
		}
	}
	return first, nil
}

func netMAC(b []byte) string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3], b[4], b[5])
}

// compareOutcome compares the kernel's verdict, bytes and state with an
// outcome of the model.
func (s *seq) compareOutcome(k *kernel, in []byte, o *model.Outcome, ko kernelOutcome) []string {
	var d []string
	if mv := modelVerdict(ko.act); mv != o.Verdict {
		d = append(d, fmt.Sprintf("verdict: kernel %v, model %v", mv, o.Verdict))
	} else if o.Verdict == model.Redirect && ko.ifindex != o.Ifindex {
		d = append(d, fmt.Sprintf("redirect: kernel to ifindex %d (by its source MAC), model to %d", ko.ifindex, o.Ifindex))
	}
	if o.Verdict == model.Pass || o.Verdict == model.TX || o.Verdict == model.Redirect {
		d = append(d, compareBytes(ko.out, o)...)
		if modelVerdict(ko.act) == o.Verdict && !bytes.Equal(ko.out, in) && !o.Wrapped {
			d = append(d, verifyChecksums(in, ko.out, o.Fresh)...)
		}
	}
	d = append(d, s.compareTouched(k, o)...)
	return d
}

// compareBytes compares output bytes, checksums modulo one's-complement
// zero where the model says so.
func compareBytes(got []byte, o *model.Outcome) []string {
	want := o.Out
	if len(got) != len(want) {
		return []string{fmt.Sprintf("output length: kernel %d, model %d\n      kernel %x\n      model  %x", len(got), len(want), got, want)}
	}
	csum := map[int]model.CsumKind{}
	for _, c := range o.Csums {
		csum[c.Off] = c.Kind
	}
	var diffs []string
	for i := 0; i < len(want); i++ {
		if kind, ok := csum[i]; ok && i+1 < len(want) {
			a, b := uint16(got[i])<<8|uint16(got[i+1]), uint16(want[i])<<8|uint16(want[i+1])
			if !model.SameChecksum(kind, a, b) {
				diffs = append(diffs, fmt.Sprintf("checksum at byte %d: kernel %04x, model %04x", i, a, b))
			}
			i++
			continue
		}
		if got[i] != want[i] {
			diffs = append(diffs, fmt.Sprintf("byte %d: kernel %02x, model %02x", i, got[i], want[i]))
		}
	}
	if len(diffs) > 8 {
		diffs = append(diffs[:8], fmt.Sprintf("... %d more", len(diffs)-8))
	}
	if len(diffs) > 0 {
		first := 0
		for first < len(want) && got[first] == want[first] {
			first++
		}
		from, to := max(0, first-32)&^1, min(len(want), first+48)
		diffs = append(diffs, fmt.Sprintf("bytes %d-%d of %d:\n      kernel %x\n      model  %x", from, to, len(want), got[from:to], want[from:to]))
	}
	return diffs
}

// compareTouched compares the state the model says the operation read or
// wrote, and the counters.
func (s *seq) compareTouched(k *kernel, o *model.Outcome) []string {
	var d []string
	for key := range o.Touched.Conns {
		d = append(d, s.compareConn(key, k.conn(key))...)
	}
	for key := range o.Touched.Replies {
		d = append(d, s.compareReply(key, k.reply(key))...)
	}
	evictable := map[uint32]bool{}
	for t := range o.Evictable {
		evictable[t] = true
		d = append(d, s.compareTable(k, t, o)...)
	}
	for key := range o.Touched.Entries {
		if !evictable[key.Table] {
			d = append(d, s.compareEntry(key, k.entry(key))...)
		}
	}
	for id := range o.Touched.MemberConns {
		if got, want := k.memberConns(id), s.m.MemberConns(id); got != want {
			d = append(d, fmt.Sprintf("member %d active connections: kernel %d, model %d", id, got, want))
		}
	}
	for id := range o.Touched.VSCounters {
		got := subVS(k.vsCounters(id), s.base.vs[id])
		if want := s.m.VSCounters(id); got != want {
			d = append(d, fmt.Sprintf("virtual server %d counters: kernel %+v, model %+v", id, got, want))
		}
	}
	for id := range o.Touched.MemberCounters {
		got := subMember(k.memberCounters(id), s.base.members[id])
		if want := s.m.MemberCounters(id); got != want {
			d = append(d, fmt.Sprintf("member %d counters: kernel %+v, model %+v", id, got, want))
		}
	}
	for id := range o.Touched.TableCounters {
		got := subTable(k.tableCounters(id), s.base.tables[id])
		if want := s.m.TableCounters(id); got != want {
			d = append(d, fmt.Sprintf("table %d counters: kernel %+v, model %+v", id, got, want))
		}
	}
	d = append(d, s.compareReasons(k)...)
	sort.Strings(d)
	return d
}

func (s *seq) compareReasons(k *kernel) []string {
	var d []string
	vals := k.reasonValues()
	for i, v := range vals {
		r := reasons[i]
		if got, want := v-s.base.reasons[r], s.m.ReasonCount(r); got != want {
			d = append(d, fmt.Sprintf("counter %s: kernel %d, model %d", r, got, want))
		}
	}
	return d
}

func subVS(a, b model.VSCounters) model.VSCounters {
	return model.VSCounters{
		Packets: a.Packets - b.Packets, Bytes: a.Bytes - b.Bytes, ReplyPackets: a.ReplyPackets - b.ReplyPackets,
		ReplyBytes: a.ReplyBytes - b.ReplyBytes, NewFlows: a.NewFlows - b.NewFlows, PersistHits: a.PersistHits - b.PersistHits,
		PersistMisses: a.PersistMisses - b.PersistMisses, PersistMoved: a.PersistMoved - b.PersistMoved,
		Rejects: a.Rejects - b.Rejects, ServerDownDrops: a.ServerDownDrops - b.ServerDownDrops, NoMemberDrops: a.NoMemberDrops - b.NoMemberDrops,
	}
}

func subMember(a, b model.MemberCounters) model.MemberCounters {
	return model.MemberCounters{Packets: a.Packets - b.Packets, Bytes: a.Bytes - b.Bytes, NewFlows: a.NewFlows - b.NewFlows,
		NexthopHits: a.NexthopHits - b.NexthopHits, NexthopMisses: a.NexthopMisses - b.NexthopMisses, NexthopMTU: a.NexthopMTU - b.NexthopMTU}
}

func subTable(a, b model.TableCounters) model.TableCounters {
	return model.TableCounters{Inserts: a.Inserts - b.Inserts, Hits: a.Hits - b.Hits, Misses: a.Misses - b.Misses,
		Rejects: a.Rejects - b.Rejects, Expired: a.Expired - b.Expired}
}

func (s *seq) compareConn(key model.FlowKey, kc kConn) []string {
	mc, ok := s.m.Conn(key)
	return compareStamped(fmt.Sprintf("connection %s", key), kc.c, kc.ok, kc.created, kc.lastSeen, mc, ok,
		func(c *model.Conn) (*model.Instant, *model.Instant) { return &c.Created, &c.LastSeen })
}

// compareStamped compares a connection or an entry (what) as the kernel
// holds it (kernel, with the time stamps it read) with the model's: equal
// but for the time stamps, which must fall in the model's windows. stamps
// gives a value's created and last-seen windows.
func compareStamped[T interface {
	comparable
	fmt.Stringer
}](what string, kernel T, kernelOK bool, created, lastSeen time.Duration, mod T, modelOK bool, stamps func(*T) (*model.Instant, *model.Instant)) []string {
	switch {
	case !modelOK && !kernelOK:
		return nil
	case !modelOK:
		return []string{fmt.Sprintf("%s: kernel has %s, model none", what, kernel)}
	case !kernelOK:
		return []string{fmt.Sprintf("%s: kernel none, model %s", what, mod)}
	}
	var d []string
	mCreated, mLastSeen := stamps(&mod)
	kCreated, kLastSeen := stamps(&kernel)
	*kCreated, *kLastSeen = *mCreated, *mLastSeen
	if kernel != mod {
		d = append(d, fmt.Sprintf("%s:\n      kernel %s\n      model  %s", what, kernel, mod))
	}
	return append(d, stampDiffs(what, created, lastSeen, *mCreated, *mLastSeen)...)
}

// stampDiffs reports the kernel's time stamps of a connection or an entry
// (what) that fall outside the model's windows for them.
func stampDiffs(what string, created, lastSeen time.Duration, mCreated, mLastSeen model.Instant) []string {
	var d []string
	if !mCreated.Contains(created) {
		d = append(d, fmt.Sprintf("%s created: kernel %v, model %s", what, created, mCreated))
	}
	if !mLastSeen.Contains(lastSeen) {
		d = append(d, fmt.Sprintf("%s last seen: kernel %v, model %s", what, lastSeen, mLastSeen))
	}
	return d
}

func (s *seq) compareReply(key model.ReplyKey, kr kReply) []string {
	mt, ok := s.m.Reply(key)
	switch {
	case !ok && !kr.ok:
		return nil
	case !ok:
		return []string{fmt.Sprintf("reply translation %s: kernel to %s (vs %d), model none", key, kr.t.VIP, kr.t.VS)}
	case !kr.ok:
		return []string{fmt.Sprintf("reply translation %s: kernel none, model to %s (vs %d)", key, mt.VIP, mt.VS)}
	case mt != kr.t:
		return []string{fmt.Sprintf("reply translation %s: kernel %+v, model %+v", key, kr.t, mt)}
	}
	return nil
}

func (s *seq) compareEntry(key model.EntryKey, ke kEntry) []string {
	me, ok := s.m.Entry(key)
	return compareStamped(fmt.Sprintf("entry %s", key), ke.e, ke.ok, ke.created, ke.lastSeen, me, ok,
		func(e *model.Entry) (*model.Instant, *model.Instant) { return &e.Created, &e.LastSeen })
}

// compareTable compares a whole table that may have lost entries to make
// room: an entry the model has and the kernel does not was evicted, which
// is allowed if the outcome said so and the entry is not the one this
// packet wrote; the model then forgets it.
func (s *seq) compareTable(k *kernel, id uint32, o *model.Outcome) []string {
	got := k.tableEntries(id)
	var d []string
	var evicted []model.EntryKey
	for _, key := range s.m.Entries(id) {
		if _, ok := got[key.Client]; !ok {
			if o.Touched.Entries[key] {
				d = append(d, s.compareEntry(key, kEntry{})...)
				continue
			}
			evicted = append(evicted, key)
			continue
		}
		d = append(d, s.compareEntry(key, got[key.Client])...)
	}
	for c, ke := range got {
		if _, ok := s.m.Entry(model.EntryKey{Table: id, Client: c}); !ok {
			d = append(d, fmt.Sprintf("entry table %d client %s: kernel has %s, model none", id, c, ke.e))
		}
	}
	capacity := 0
	for _, t := range s.sc.cfg.Tables {
		if t.ID == id {
			capacity = t.Capacity
		}
	}
	if len(got) > capacity {
		d = append(d, fmt.Sprintf("table %d holds %d entries, over its capacity of %d", id, len(got), capacity))
	}
	if len(evicted) < o.MustEvict[id] {
		d = append(d, fmt.Sprintf("table %d was full and took %d new clients but dropped %d entries", id, o.MustEvict[id], len(evicted)))
	}
	if len(evicted) > o.MaxEvict[id] {
		d = append(d, fmt.Sprintf("table %d dropped %d entries to make room, more than the %d it may", id, len(evicted), o.MaxEvict[id]))
	}
	if len(d) == 0 {
		for _, key := range evicted {
			s.trace("table %d (full) dropped %s", id, key.Client)
			s.m.Evict(key)
		}
		s.stats.Evicted += len(evicted)
	}
	return d
}

// checkAll compares everything at the end of a sequence.
func (s *seq) checkAll() *Mismatch {
	k := newKernel(s.w.dp, s.tables, s.purge)
	var d []string
	conns, replies := k.allFlows()
	for _, key := range s.m.Conns() {
		d = append(d, s.compareConn(key, conns[key])...)
		delete(conns, key)
	}
	for key, kc := range conns {
		d = append(d, s.compareConn(key, kc)...)
	}
	for _, key := range s.m.Replies() {
		d = append(d, s.compareReply(key, replies[key])...)
		delete(replies, key)
	}
	for key, kr := range replies {
		d = append(d, s.compareReply(key, kr)...)
	}
	for _, t := range s.sc.cfg.Tables {
		got := k.tableEntries(t.ID)
		for _, key := range s.m.Entries(t.ID) {
			d = append(d, s.compareEntry(key, got[key.Client])...)
			delete(got, key.Client)
		}
		for c, ke := range got {
			d = append(d, s.compareEntry(model.EntryKey{Table: t.ID, Client: c}, ke)...)
		}
	}
	c := k.allCounters(s.sc.cfg)
	for _, m := range s.sc.cfg.Members {
		if got, want := k.memberConns(m.ID), s.m.MemberConns(m.ID); got != want {
			d = append(d, fmt.Sprintf("member %d active connections: kernel %d, model %d", m.ID, got, want))
		}
		if got, want := subMember(c.members[m.ID], s.base.members[m.ID]), s.m.MemberCounters(m.ID); got != want {
			d = append(d, fmt.Sprintf("member %d counters: kernel %+v, model %+v", m.ID, got, want))
		}
	}
	for _, v := range s.sc.cfg.VirtualServers {
		if got, want := subVS(c.vs[v.ID], s.base.vs[v.ID]), s.m.VSCounters(v.ID); got != want {
			d = append(d, fmt.Sprintf("virtual server %d counters: kernel %+v, model %+v", v.ID, got, want))
		}
	}
	for _, t := range s.sc.cfg.Tables {
		if got, want := subTable(c.tables[t.ID], s.base.tables[t.ID]), s.m.TableCounters(t.ID); got != want {
			d = append(d, fmt.Sprintf("table %d counters: kernel %+v, model %+v", t.ID, got, want))
		}
	}
	d = append(d, s.compareReasons(k)...)
	for _, p := range s.sc.cfg.Pools {
		got, err := s.w.dp.PoolCursor(loader.PoolID(p.ID))
		k.fail(err)
		if want := s.m.PoolCursor(p.ID); got != want {
			d = append(d, fmt.Sprintf("pool %d turn: kernel %d, model %d", p.ID, got, want))
		}
	}
	if k.err != nil {
		d = append(d, fmt.Sprintf("reading the kernel's state: %v", k.err))
	}
	if len(d) == 0 {
		return nil
	}
	sort.Strings(d)
	return &Mismatch{What: "end of sequence: the whole state", Model: "(state)", Kernel: "(state)", Diffs: d}
}
