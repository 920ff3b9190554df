package model

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Model is the datapath's configuration and state. Packet and the sweeper
// operations change the state the way the datapath must; each call's changes
// are journalled until Commit, so that a caller can Rollback and try the
// other answer to a question the model could not settle (see Chooser).
type Model struct {
	cfg    Config
	vs     map[vsKey]*VirtualServer
	vsByID map[uint32]*VirtualServer
	vips   map[netip.Addr]bool
	// memberVS: how a NAT member's reply finds its connection, by the
	// member's address and port (port 0 made the virtual server's) and
	// protocol: the one virtual server it serves there, or shared.
	memberVS   map[memberVSKey]memberVS
	pools      map[uint32]*Pool
	members    map[uint32]*Member
	memberAddr map[memberAddrKey]uint32
	tables     map[uint32]*Table

	conns       jmap[FlowKey, Conn]
	replies     jmap[ReplyKey, Translation]
	entries     jmap[EntryKey, Entry]
	tableLen    jmap[uint32, int]
	memberConns jmap[uint32, uint32]
	cursors     jmap[uint32, uint32]
	vsCtr       jmap[uint32, VSCounters]
	memberCtr   jmap[uint32, MemberCounters]
	tableCtr    jmap[uint32, TableCounters]
	reasons     jmap[Reason, uint64]

	// replyOrder lists reply translations in the order they were made
	// (with gone ones and repeats, dropped lazily), so the generator can
	// pick one by index without sorting them all.
	replyOrder []ReplyKey

	journal []func()
	out     *Outcome
	choose  Chooser
}

type vsKey struct {
	addr  netip.Addr
	port  uint16
	proto uint8
}

type memberAddrKey struct {
	pool uint32
	addr netip.Addr
	port uint16
}

// New returns a model with cfg applied and no state: no connections,
// entries or counts, every counter zero and every pool's turn at 0.
func New(cfg Config) *Model {
	m := &Model{}
	m.conns.init(m, func(o *Outcome, k FlowKey) { set(&o.Touched.Conns, k) })
	m.replies.init(m, func(o *Outcome, k ReplyKey) { set(&o.Touched.Replies, k) })
	m.entries.init(m, func(o *Outcome, k EntryKey) { set(&o.Touched.Entries, k) })
	m.tableLen.init(m, nil)
	m.memberConns.init(m, func(o *Outcome, k uint32) { set(&o.Touched.MemberConns, k) })
	m.cursors.init(m, nil)
	m.vsCtr.init(m, func(o *Outcome, k uint32) { set(&o.Touched.VSCounters, k) })
	m.memberCtr.init(m, func(o *Outcome, k uint32) { set(&o.Touched.MemberCounters, k) })
	m.tableCtr.init(m, func(o *Outcome, k uint32) { set(&o.Touched.TableCounters, k) })
	m.reasons.init(m, nil)
	m.SetConfig(cfg)
	return m
}

// SetConfig applies a new configuration, as a reload does: connections,
// translations, entries, counts and counters are untouched (README
// "Open flows, persistence entries and counters are untouched"). Entries
// of a table that is no longer configured are gone with it.
func (m *Model) SetConfig(cfg Config) {
	m.cfg = cfg
	if m.cfg.FlowStampGranularity == 0 {
		m.cfg.FlowStampGranularity = defaultFlowStampGranularity
	}
	m.vs = map[vsKey]*VirtualServer{}
	m.vsByID = map[uint32]*VirtualServer{}
	m.vips = map[netip.Addr]bool{}
	for i := range m.cfg.VirtualServers {
		v := &m.cfg.VirtualServers[i]
		m.vs[vsKey{v.VIP.Addr(), v.VIP.Port(), v.Proto}] = v
		m.vsByID[v.ID] = v
		m.vips[v.VIP.Addr()] = true
	}
	m.pools = map[uint32]*Pool{}
	for i := range m.cfg.Pools {
		m.pools[m.cfg.Pools[i].ID] = &m.cfg.Pools[i]
	}
	// A persisted server is found in a pool by address and port, else by
	// address alone (README: "a client persisted to server S through
	// virtual server A goes to S through B when B's pool has a member with
	// S's address (on any port)"). Among several members of a pool with the
	// same address, the address-only match is the last one whose port is 0
	// (the virtual server's port), else the first in config order; an exact
	// duplicate is the last in config order.
	m.members = map[uint32]*Member{}
	m.memberAddr = map[memberAddrKey]uint32{}
	for i := range m.cfg.Members {
		mem := &m.cfg.Members[i]
		m.members[mem.ID] = mem
		a := mem.Addr.Addr()
		m.memberAddr[memberAddrKey{mem.Pool, a, mem.Addr.Port()}] = mem.ID
		if _, ok := m.memberAddr[memberAddrKey{mem.Pool, a, 0}]; !ok {
			m.memberAddr[memberAddrKey{mem.Pool, a, 0}] = mem.ID
		}
	}
	// README (NAT replies): a reply finds its connection through the
	// virtual server its member serves on that address and port; a member
	// address and port that serve several virtual servers keep a reply
	// translation per connection instead, made when it opens.
	m.memberVS = map[memberVSKey]memberVS{}
	for i := range m.cfg.VirtualServers {
		v := &m.cfg.VirtualServers[i]
		if v.Mode != NAT {
			continue
		}
		for j := range m.cfg.Members {
			mem := &m.cfg.Members[j]
			if !mem.NAT || mem.Pool != v.Pool {
				continue
			}
			k := memberVSKey{memberTarget(mem.Addr, v.VIP.Port()), v.Proto}
			if prev, ok := m.memberVS[k]; ok && (prev.shared || prev.vs != v.ID) {
				m.memberVS[k] = memberVS{shared: true}
				continue
			}
			m.memberVS[k] = memberVS{vip: v.VIP, vs: v.ID}
		}
	}
	m.tables = map[uint32]*Table{}
	for i := range m.cfg.Tables {
		m.tables[m.cfg.Tables[i].ID] = &m.cfg.Tables[i]
	}
	for k := range m.entries.m {
		if m.tables[k.Table] == nil {
			delete(m.entries.m, k)
			m.tableLen.m[k.Table]--
		}
	}
	for id, n := range m.tableLen.m {
		if n == 0 {
			delete(m.tableLen.m, id)
		}
	}
	for _, p := range m.cfg.Pools {
		if _, ok := m.cursors.m[p.ID]; !ok {
			m.cursors.m[p.ID] = 0
		}
	}
	m.journal = nil
}

// Config is the configuration in force.
func (m *Model) Config() Config { return m.cfg }

// SetPoolCursor sets a pool's turn counter, e.g. to what a datapath that
// has run before holds.
func (m *Model) SetPoolCursor(pool, v uint32) { m.cursors.m[pool] = v }

// PoolCursor is a pool's turn counter.
func (m *Model) PoolCursor(pool uint32) uint32 { return m.cursors.m[pool] }

// Commit makes the last operation's changes final.
func (m *Model) Commit() { m.journal = m.journal[:0]; m.out = nil }

// Rollback undoes the last operation's changes.
func (m *Model) Rollback() {
	for i := len(m.journal) - 1; i >= 0; i-- {
		m.journal[i]()
	}
	m.journal = m.journal[:0]
	m.out = nil
}

// Chooser answers a question the model cannot settle from what it knows,
// such as whether an entry idle for its timeout to within the clock's
// uncertainty has expired. The fuzzer first answers false, and on a
// mismatch rolls back and tries true: the kernel must match one answer.
type Chooser func(question string) bool

// tri is a comparison that may be undecided.
type tri int

const (
	no tri = iota
	yes
	maybe
)

func (m *Model) settle(t tri, format string, args ...any) bool {
	switch t {
	case yes:
		return true
	case no:
		return false
	}
	question := fmt.Sprintf(format, args...)
	ans := m.choose != nil && m.choose(question)
	m.out.Choices = append(m.out.Choices, fmt.Sprintf("%s: %v", question, ans))
	return ans
}

// elapsedOver compares the time from then to now with d: is it > d
// (strict) or >= d?
func elapsedOver(now, then Instant, d time.Duration, strict bool) tri {
	lo, hi := now.Lo-then.Hi, now.Hi-then.Lo
	if strict {
		switch {
		case lo > d:
			return yes
		case hi <= d:
			return no
		}
		return maybe
	}
	switch {
	case lo >= d:
		return yes
	case hi < d:
		return no
	}
	return maybe
}

// Touched lists the state an operation read or wrote: the fuzzer compares
// exactly these keys with the kernel after each packet.
type Touched struct {
	Conns          map[FlowKey]bool
	Replies        map[ReplyKey]bool
	Entries        map[EntryKey]bool
	MemberConns    map[uint32]bool
	VSCounters     map[uint32]bool
	MemberCounters map[uint32]bool
	TableCounters  map[uint32]bool
}

// set adds k to a set made on first use: most packets touch little.
func set[K comparable](m *map[K]bool, k K) {
	if *m == nil {
		*m = map[K]bool{}
	}
	(*m)[k] = true
}

// jmap is a map whose changes are journalled in its model and whose
// accesses are recorded in the current outcome's Touched.
type jmap[K comparable, V any] struct {
	m     map[K]V
	owner *Model
	touch func(*Outcome, K)
}

func (t *jmap[K, V]) init(owner *Model, touch func(*Outcome, K)) {
	t.m, t.owner, t.touch = map[K]V{}, owner, touch
}

func (t *jmap[K, V]) mark(k K) {
	if t.touch != nil && t.owner.out != nil {
		t.touch(t.owner.out, k)
	}
}

func (t *jmap[K, V]) get(k K) (V, bool) {
	t.mark(k)
	v, ok := t.m[k]
	return v, ok
}

func (t *jmap[K, V]) set(k K, v V) {
	t.mark(k)
	old, had := t.m[k]
	t.owner.journal = append(t.owner.journal, func() {
		if had {
			t.m[k] = old
		} else {
			delete(t.m, k)
		}
	})
	t.m[k] = v
}

func (t *jmap[K, V]) del(k K) {
	t.mark(k)
	old, had := t.m[k]
	if !had {
		return
	}
	t.owner.journal = append(t.owner.journal, func() { t.m[k] = old })
	delete(t.m, k)
}

func (t *jmap[K, V]) update(k K, fn func(*V)) {
	v, _ := t.get(k)
	fn(&v)
	t.set(k, v)
}

// Read-only views for the fuzzer's comparison and the generator.

// Conn returns a connection.
func (m *Model) Conn(k FlowKey) (Conn, bool) { c, ok := m.conns.m[k]; return c, ok }

// Conns lists the connections, sorted by key.
func (m *Model) Conns() []FlowKey { return sortedKeys(m.conns.m, FlowKey.Compare) }

type memberVSKey struct {
	member netip.AddrPort
	proto  uint8
}

type memberVS struct {
	vip    netip.AddrPort
	vs     uint32
	shared bool
}

// memberTarget is where a member takes a virtual server's connections:
// port 0 is the virtual server's port.
func memberTarget(a netip.AddrPort, vsPort uint16) netip.AddrPort {
	if a.Port() == 0 {
		return netip.AddrPortFrom(a.Addr(), vsPort)
	}
	return a
}

// replyConn finds the connection a NAT member's reply belongs to, and how it
// is rewritten. For a member address and port that serve one virtual server
// it is that virtual server's connection from the reply's client, if it goes
// to this member; for one that serves several, the stored translation's.
func (m *Model) replyConn(rk ReplyKey) (FlowKey, Translation, bool) {
	mv, ok := m.memberVS[memberVSKey{rk.Member, rk.Proto}]
	if !ok {
		return FlowKey{}, Translation{}, false
	}
	if mv.shared {
		t, ok := m.replies.get(rk)
		return FlowKey{rk.Client, t.VIP, rk.Proto}, t, ok
	}
	fk := FlowKey{rk.Client, mv.vip, rk.Proto}
	c, ok := m.conns.get(fk)
	if !ok || c.Mode != NAT || c.Target != rk.Member {
		return FlowKey{}, Translation{}, false
	}
	return fk, Translation{VIP: mv.vip, VS: c.VS, Member: c.Member}, true
}

// sharedReply says whether a NAT connection to target keeps a stored reply
// translation: its member address and port serve several virtual servers.
func (m *Model) sharedReply(target netip.AddrPort, proto uint8) bool {
	return m.memberVS[memberVSKey{target, proto}].shared
}

// Reply returns a stored reply translation (kept only for member addresses
// and ports that serve several virtual servers).
func (m *Model) Reply(k ReplyKey) (Translation, bool) { t, ok := m.replies.m[k]; return t, ok }

// Replies lists the reply translations, sorted.
func (m *Model) Replies() []ReplyKey { return sortedKeys(m.replies.m, ReplyKey.Compare) }

// ReplyKeys lists the replies that would find a connection, in the order
// their connections were made.
func (m *Model) ReplyKeys() []ReplyKey {
	seen := make(map[ReplyKey]bool, len(m.replies.m))
	out := m.replyOrder[:0]
	for _, k := range m.replyOrder {
		if _, _, ok := m.replyConn(k); ok && !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	m.replyOrder = out
	return slices.Clone(out)
}

func (m *Model) noteReply(k ReplyKey) {
	n := len(m.replyOrder)
	m.replyOrder = append(m.replyOrder, k)
	m.journal = append(m.journal, func() { m.replyOrder = m.replyOrder[:n] })
}

// Entry returns a persistence entry.
func (m *Model) Entry(k EntryKey) (Entry, bool) { e, ok := m.entries.m[k]; return e, ok }

// Entries lists a table's entries, sorted.
func (m *Model) Entries(table uint32) []EntryKey {
	var out []EntryKey
	for k := range m.entries.m {
		if k.Table == table {
			out = append(out, k)
		}
	}
	slices.SortFunc(out, EntryKey.Compare)
	return out
}

// TableLen is how many entries a table holds.
func (m *Model) TableLen(table uint32) int { return m.tableLen.m[table] }

// MemberConns is a member's active connection count.
func (m *Model) MemberConns(id uint32) uint32 { return m.memberConns.m[id] }

// VSCounters returns a virtual server's counters.
func (m *Model) VSCounters(id uint32) VSCounters { return m.vsCtr.m[id] }

// MemberCounters returns a member's counters.
func (m *Model) MemberCounters(id uint32) MemberCounters { return m.memberCtr.m[id] }

// TableCounters returns a table's counters.
func (m *Model) TableCounters(id uint32) TableCounters { return m.tableCtr.m[id] }

// ReasonCount returns an exception counter.
func (m *Model) ReasonCount(r Reason) uint64 { return m.reasons.m[r] }

// Evict removes an entry that the kernel dropped from a full purging table;
// the caller has checked the outcome allowed it (Outcome.Evictable).
func (m *Model) Evict(k EntryKey) {
	if _, ok := m.entries.m[k]; ok {
		delete(m.entries.m, k)
		m.tableLen.m[k.Table]--
	}
}

func sortedKeys[K comparable, V any](m map[K]V, cmp func(K, K) int) []K {
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, cmp)
	return keys
}

// Dump describes the state around the keys an outcome touched, for a
// reproducer.
func (m *Model) Dump(t Touched) string {
	var b strings.Builder
	for _, k := range sortedKeys(t.Conns, FlowKey.Compare) {
		if c, ok := m.conns.m[k]; ok {
			fmt.Fprintf(&b, "  connection %s: %s\n", k, c)
		} else {
			fmt.Fprintf(&b, "  connection %s: none\n", k)
		}
	}
	for _, k := range sortedKeys(t.Replies, ReplyKey.Compare) {
		if r, ok := m.replies.m[k]; ok {
			fmt.Fprintf(&b, "  reply translation %s: to %s (vs %d, member %d)\n", k, r.VIP, r.VS, r.Member)
		} else {
			fmt.Fprintf(&b, "  reply translation %s: none\n", k)
		}
	}
	for _, k := range sortedKeys(t.Entries, EntryKey.Compare) {
		if e, ok := m.entries.m[k]; ok {
			fmt.Fprintf(&b, "  entry %s: %s\n", k, e)
		} else {
			fmt.Fprintf(&b, "  entry %s: none\n", k)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(t.MemberConns)) {
		fmt.Fprintf(&b, "  member %d: %d active connections\n", id, m.memberConns.m[id])
	}
	return b.String()
}

func (c Conn) String() string {
	var fl []string
	for _, f := range []struct {
		on   bool
		name string
	}{{c.Counted, "counted"}, {c.MemberCounted, "member_counted"}, {c.FinClient, "fin_client"}, {c.FinServer, "fin_server"}, {c.RST, "rst"}} {
		if f.on {
			fl = append(fl, f.name)
		}
	}
	ent := "no persistence"
	if c.HasEntry {
		ent = c.Entry.String()
	}
	mode := "nat"
	if c.Mode == DSR {
		mode = "dsr"
	}
	return fmt.Sprintf("vs %d -> member %d %s (%s), %s, flags [%s], created %s, last seen %s",
		c.VS, c.Member, c.Target, mode, ent, strings.Join(fl, " "), c.Created, c.LastSeen)
}

func (e Entry) String() string {
	exp := ""
	if e.Expired {
		exp = ", expired (claimed)"
	}
	return fmt.Sprintf("server %s (member %d, vs %d), %d conns%s, created %s, last seen %s",
		e.Server, e.Member, e.VS, e.Conns, exp, e.Created, e.LastSeen)
}
