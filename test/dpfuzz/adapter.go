package dpfuzz

import (
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/test/model"
)

// The adapter is the one place that knows how the datapath keeps its state:
// it turns a model configuration into loader.State, and reads the kernel's
// state back, key by key, as the model's semantic values. The datapath fast
// path (issue 11) changes keys, values and which maps hold what; when it
// does, this file changes and the model keeps its assertions.

// toLoader describes a model configuration to the loader.
func toLoader(cfg model.Config) loader.State {
	var s loader.State
	purge := map[uint32]bool{}
	for _, t := range cfg.Tables {
		purge[t.ID] = t.Purge
		s.Tables = append(s.Tables, loader.Table{ID: loader.NewTableID(t.ID, t.Purge), MaxEntries: uint32(t.Capacity)})
	}
	for _, vs := range cfg.VirtualServers {
		lv := loader.VirtualServer{
			ID: loader.VirtualServerID(vs.ID), VIP: vs.VIP, Proto: loader.Protocol(vs.Proto), PoolID: loader.PoolID(vs.Pool), TableID: loader.TableNone,
			DSR: vs.Mode.Conn() == model.DSR, Encap: encaps[vs.Mode], ServerDownNever: vs.ServerDown == model.Never,
			IPv4Prefix: vs.V4Prefix, IPv6Prefix: vs.V6Prefix, Timeout: vs.Timeout,
		}
		if vs.Persist {
			p, ok := purge[vs.Table]
			lv.TableID = loader.NewTableID(vs.Table, p || !ok)
		}
		s.VirtualServers = append(s.VirtualServers, lv)
	}
	for _, p := range cfg.Pools {
		s.Pools = append(s.Pools, loaderPool(p))
	}
	s.Encap = loader.EncapSettings{SourceV4: cfg.Encap.SourceV4, SourceV6: cfg.Encap.SourceV6, GUEPort: cfg.Encap.GUEPort}
	for _, m := range cfg.Members {
		s.Members = append(s.Members, loaderMember(m))
	}
	return s
}

var encaps = map[model.Mode]loader.Encap{model.IPIP: loader.EncapIPIP, model.GUE: loader.EncapGUE}

var algorithms = map[model.Algorithm]loader.Algorithm{
	model.RoundRobin:              loader.AlgoRoundRobin,
	model.WeightedRoundRobin:      loader.AlgoWeightedRoundRobin,
	model.LeastConnection:         loader.AlgoLeastConnection,
	model.WeightedLeastConnection: loader.AlgoWeightedLeastConnection,
	model.IPHash:                  loader.AlgoIPHash,
}

func loaderPool(p model.Pool) loader.Pool {
	return loader.Pool{ID: loader.PoolID(p.ID), Algorithm: algorithms[p.Algorithm], Eligible: memberIDs(p.Eligible), Weights: p.Weights, Table: memberIDs(p.Table)}
}

// memberIDs types the model's member ids (nil stays nil: a pool without a table).
func memberIDs(ids []uint32) []loader.MemberID {
	if ids == nil {
		return nil
	}
	out := make([]loader.MemberID, len(ids))
	for i, id := range ids {
		out[i] = loader.MemberID(id)
	}
	return out
}

func loaderMember(m model.Member) loader.Member {
	return loader.Member{ID: loader.MemberID(m.ID), PoolID: loader.PoolID(m.Pool), Addr: m.Addr, Up: m.Up, NAT: m.NAT, MaxConns: m.MaxConns}
}

// modelVerdict names a kernel verdict in the model's terms.
func modelVerdict(a loader.XDPAction) model.Verdict {
	switch a {
	case loader.XDPDrop:
		return model.Drop
	case loader.XDPPass:
		return model.Pass
	case loader.XDPTX:
		return model.TX
	case loader.XDPRedirect:
		return model.Redirect
	}
	return model.Aborted
}

// kernel reads the datapath's state for one comparison, each key at most
// once.
type kernel struct {
	dp      *loader.Datapath
	tables  map[uint32]*loader.PersistTable
	purge   map[uint32]bool
	conns   map[model.FlowKey]kConn
	replies map[model.ReplyKey]kReply
	entries map[model.EntryKey]kEntry
	members map[uint32]uint32
	err     error
}

type kConn struct {
	ok bool
	c  model.Conn
	// Created and LastSeen as the kernel stamped them.
	created, lastSeen time.Duration
}

type kReply struct {
	ok bool
	t  model.Translation
}

type kEntry struct {
	ok bool
	e  model.Entry
	// Created and LastSeen as stamped.
	created, lastSeen time.Duration
}

func newKernel(dp *loader.Datapath, tables map[uint32]*loader.PersistTable, purge map[uint32]bool) *kernel {
	return &kernel{dp: dp, tables: tables, purge: purge, conns: map[model.FlowKey]kConn{},
		replies: map[model.ReplyKey]kReply{}, entries: map[model.EntryKey]kEntry{}, members: map[uint32]uint32{}}
}

func (k *kernel) fail(err error) {
	if k.err == nil && err != nil {
		k.err = err
	}
}

// conn reads the connection of a client's 5-tuple: its forward flow.
func (k *kernel) conn(key model.FlowKey) kConn {
	if v, ok := k.conns[key]; ok {
		return v
	}
	f, ok, err := k.dp.LookupFlow(key.Src, key.Dst, loader.Protocol(key.Proto))
	k.fail(err)
	v := kConn{}
	if ok && !f.Reverse {
		v = kConn{ok: true, c: connFromFlow(f), created: f.Created, lastSeen: f.LastSeen}
	}
	k.conns[key] = v
	return v
}

func connFromFlow(f loader.Flow) model.Conn {
	c := model.Conn{
		VS: uint32(f.VSID), Member: uint32(f.MemberID), Target: f.Target, UDP: f.UDP,
		Counted: f.Counted, MemberCounted: f.MemberCounted,
		FinClient: f.FinClient, FinServer: f.FinServer, RST: f.RST,
	}
	if f.DSR {
		c.Mode = model.DSR
	}
	if f.TableID != loader.TableNone {
		c.HasEntry = true
		c.Entry = model.EntryKey{Table: f.TableID.Index(), Client: f.Client}
	}
	return c
}

// reply reads a reply translation: today a reverse flow entry.
func (k *kernel) reply(key model.ReplyKey) kReply {
	if v, ok := k.replies[key]; ok {
		return v
	}
	f, ok, err := k.dp.LookupFlow(key.Member, key.Client, loader.Protocol(key.Proto))
	k.fail(err)
	v := kReply{}
	if ok && f.Reverse {
		v = kReply{ok: true, t: model.Translation{VIP: f.Target, VS: uint32(f.VSID), Member: uint32(f.MemberID)}}
	}
	k.replies[key] = v
	return v
}

func (k *kernel) entry(key model.EntryKey) kEntry {
	if v, ok := k.entries[key]; ok {
		return v
	}
	v := kEntry{}
	if t := k.tables[key.Table]; t != nil {
		e, ok, err := t.Lookup(key.Client)
		k.fail(err)
		if ok {
			v = entryFromKernel(e)
		}
	}
	k.entries[key] = v
	return v
}

func entryFromKernel(e loader.PersistEntry) kEntry {
	return kEntry{ok: true, created: e.Created, lastSeen: e.LastSeen, e: model.Entry{
		Server: e.Server, Member: uint32(e.MemberID), VS: uint32(e.VSID), Conns: e.Conns, Expired: e.Dying,
	}}
}

// tableEntries reads a whole table.
func (k *kernel) tableEntries(id uint32) map[netip.Addr]kEntry {
	out := map[netip.Addr]kEntry{}
	t := k.tables[id]
	if t == nil {
		return out
	}
	es, err := t.Entries()
	k.fail(err)
	for _, e := range es {
		v := entryFromKernel(e)
		out[e.Client] = v
		k.entries[model.EntryKey{Table: id, Client: e.Client}] = v
	}
	return out
}

func (k *kernel) memberConns(id uint32) uint32 {
	if v, ok := k.members[id]; ok {
		return v
	}
	mc, err := k.dp.MemberConn(loader.MemberID(id))
	k.fail(err)
	k.members[id] = mc.Conns
	return mc.Conns
}

// counters are the kernel's counters for the ids of one configuration.
type counters struct {
	vs      map[uint32]model.VSCounters
	members map[uint32]model.MemberCounters
	tables  map[uint32]model.TableCounters
	reasons map[model.Reason]uint64
}

func (k *kernel) vsCounters(id uint32) model.VSCounters {
	c, err := k.dp.VSCounters(loader.VirtualServerID(id))
	k.fail(err)
	return model.VSCounters(c)
}

func (k *kernel) memberCounters(id uint32) model.MemberCounters {
	c, err := k.dp.MemberCounters(loader.MemberID(id))
	k.fail(err)
	return model.MemberCounters(c)
}

func (k *kernel) tableCounters(id uint32) model.TableCounters {
	c, err := k.dp.TableCounters(loader.NewTableID(id, k.purge[id]))
	k.fail(err)
	return model.TableCounters(c)
}

// reasonCounters reads every exception counter, by the model's names. A
// name the model does not know is an error: the model must say what each
// counter means.
func (k *kernel) reasonCounters() map[model.Reason]uint64 {
	out := map[model.Reason]uint64{}
	for i, v := range k.reasonValues() {
		out[reasons[i]] = v
	}
	return out
}

// reasonValues reads every exception counter, indexed like reasons.
func (k *kernel) reasonValues() []uint64 {
	vals, err := k.dp.ReasonCounters()
	k.fail(err)
	return vals
}

// reasons names the datapath's counters by index, in the model's terms.
var reasons = func() []model.Reason {
	out := make([]model.Reason, len(loader.ReasonNames))
	for i, n := range loader.ReasonNames {
		out[i] = model.Reason(n)
	}
	return out
}()

func (k *kernel) allCounters(cfg model.Config) counters {
	c := counters{vs: map[uint32]model.VSCounters{}, members: map[uint32]model.MemberCounters{},
		tables: map[uint32]model.TableCounters{}, reasons: k.reasonCounters()}
	for _, v := range cfg.VirtualServers {
		c.vs[v.ID] = k.vsCounters(v.ID)
	}
	for _, m := range cfg.Members {
		c.members[m.ID] = k.memberCounters(m.ID)
	}
	for _, t := range cfg.Tables {
		c.tables[t.ID] = k.tableCounters(t.ID)
	}
	return c
}

// allFlows reads the whole flow table as connections and translations.
func (k *kernel) allFlows() (map[model.FlowKey]kConn, map[model.ReplyKey]kReply) {
	flows, err := k.dp.Flows()
	k.fail(err)
	conns := map[model.FlowKey]kConn{}
	replies := map[model.ReplyKey]kReply{}
	for _, f := range flows {
		if f.Reverse {
			replies[model.ReplyKey{Member: f.Src, Client: f.Dst, Proto: uint8(f.Proto)}] = kReply{ok: true, t: model.Translation{VIP: f.Target, VS: uint32(f.VSID), Member: uint32(f.MemberID)}}
			continue
		}
		conns[model.FlowKey{Src: f.Src, Dst: f.Dst, Proto: uint8(f.Proto)}] = kConn{ok: true, c: connFromFlow(f), created: f.Created, lastSeen: f.LastSeen}
	}
	return conns, replies
}

// reset empties the datapath's dynamic state the way the sweeper would:
// every flow ends through the GC (releasing its counts), every table is
// flushed, and any member count left over is corrected to zero. Then only
// the tables keep stays configured: no virtual server and no pool, so pools
// come back with their turn at 0 and a sequence replays the same way
// whatever ran before it. (Tables that stay save the RCU grace period that
// replacing one costs.)
// A coarse clock tick is 1-10 ms (CONFIG_HZ); a few of them are plenty.
const (
	resetRetry = 5 * time.Millisecond
	resetTries = 20
)

func reset(dp *loader.Datapath, keep []loader.Table) error {
	flows, err := dp.Flows()
	if err != nil {
		return err
	}
	var reqs []loader.GCRequest
	// The sweeper keeps a flow stamped at or after its reading of the
	// clock, and the datapath's clock is coarse (a tick): a flow the
	// sequence touched in the current tick survives until the next one.
	for try := 0; len(flows) != 0; try++ {
		if try == resetTries {
			return fmt.Errorf("reset left %d flows after %d sweeps", len(flows), try)
		}
		if try > 0 {
			time.Sleep(resetRetry)
		}
		reqs = reqs[:0]
		for _, f := range flows {
			reqs = append(reqs, loader.ExpireFlow(f, 0))
		}
		if err := dp.RunGC(reqs); err != nil {
			return err
		}
		if flows, err = dp.Flows(); err != nil {
			return err
		}
	}
	tables, err := dp.Tables()
	if err != nil {
		return err
	}
	for _, t := range tables {
		if _, err := dp.FlushTable(t.ID); err != nil {
			return err
		}
	}
	mcs, err := dp.MemberConns()
	if err != nil {
		return err
	}
	reqs = reqs[:0]
	for _, m := range mcs {
		if m.Conns != 0 {
			reqs = append(reqs, loader.ReconcileMember(m, 0))
		}
	}
	if err := dp.RunGC(reqs); err != nil {
		return err
	}
	if left, err := dp.Flows(); err != nil || len(left) != 0 {
		return fmt.Errorf("reset left %d flows (%v)", len(left), err)
	}
	return dp.Apply(loader.State{Tables: keep})
}

// gcResult names a kernel GC result in the model's terms.
func gcResult(r loader.GCResult) model.GCResult {
	switch r {
	case loader.GCDone:
		return model.GCDone
	case loader.GCSkipped:
		return model.GCSkipped
	case loader.GCNotFound:
		return model.GCNotFound
	}
	return model.GCBad
}

// gcExpireConn, gcExpireEntry and gcTouch build GC requests for the model's
// operations.
func gcExpireConn(k model.FlowKey, idle time.Duration) loader.GCRequest {
	return loader.ExpireConnection(k.Src, k.Dst, loader.Protocol(k.Proto), idle)
}

func gcExpireEntry(k model.EntryKey, purge bool, timeout time.Duration) loader.GCRequest {
	return loader.ExpireEntry(loader.PersistEntry{TableID: loader.NewTableID(k.Table, purge), Client: k.Client}, timeout)
}

func gcTouch(k model.EntryKey, purge bool) loader.GCRequest {
	return loader.TouchEntry(loader.NewTableID(k.Table, purge), k.Client)
}

func deleteEntry(dp *loader.Datapath, k model.EntryKey, purge bool) error {
	return dp.DeleteEntry(loader.NewTableID(k.Table, purge), k.Client)
}

// reasonNames lists the datapath's exception counters.
func reasonNames() []string { return loader.ReasonNames }

// lruFreeBatch is how many free entries the kernel's LRU hash hands a CPU
// at a time: since Linux 6.16 a quarter of the capacity per CPU halved
// (clamped to 1..128); before, always 128, which makes a small table
// evictable at any time (loose, but never wrong).
func lruFreeBatch(capacity, cpus int, release string) int {
	var major, minor int
	fmt.Sscanf(release, "%d.%d", &major, &minor)
	if major > 6 || (major == 6 && minor >= 16) {
		return min(max(capacity/cpus/2, 1), 128)
	}
	return 128
}

// kernelRelease is uname -r.
func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}
