// Package gc sweeps the datapath's tables: it ends idle flows (which
// releases their hold on persistence entries), corrects live-connection
// counts that flows lost to LRU eviction left too high, and deletes
// persistence entries whose countdown ran out. The decisions are made here;
// the changes are made in the kernel, with the datapath's own atomics.
package gc

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/limpet-lb/limpet/loader"
)

// Datapath is what the sweeper needs of the loader.
type Datapath interface {
	Now() (time.Duration, error)
	Flows() ([]loader.Flow, error)
	Tables() ([]loader.Table, error)
	ScanTable(id loader.TableID, fn func(*loader.PersistEntry)) error
	LookupEntry(tableID loader.TableID, client netip.Addr) (loader.PersistEntry, bool, error)
	TableCounters(id loader.TableID) (loader.TableCounters, error)
	MemberConns() ([]loader.MemberConns, error)
	RunGC([]loader.GCRequest) error
}

// Timeouts are the flow idle timeouts, per state.
type Timeouts struct {
	TCPEstablished, TCPFin, UDP time.Duration
}

// Sweeper holds the running totals of the sweeps.
type Sweeper struct {
	dp       Datapath
	timeouts Timeouts
	// entryTimeout gives a table's persistence timeout; tables it does not
	// know are left alone.
	entryTimeout func(tableID loader.TableID) (time.Duration, bool)
	totals       map[loader.TableID]*TableTotals
}

// TableTotals count what happened to one table since the sweeper started.
type TableTotals struct {
	Entries     int    // live entries at the last sweep
	Inserts     uint64 // datapath counter
	Expiries    uint64 // entries that timed out, in the datapath or here
	Evictions   uint64 // entries the LRU dropped to make room
	Rejects     uint64 // new clients refused because the table was full
	Corrections uint64 // live-connection counts this sweeper corrected
}

// Report is what one sweep did.
type Report struct {
	Duration       time.Duration
	Flows          int
	FlowsExpired   int
	Entries        int
	EntriesExpired int
	Corrected      int
	// MembersCorrected counts members whose active connection count was
	// corrected (flows lost to LRU eviction never closed).
	MembersCorrected int
	// FlowsEvicted counts the connections whose flows a full flow table
	// evicted before they closed: what the member counts held above the
	// flows left to hold them, corrected in this sweep. (The correction
	// is a compare-and-swap on the count's generation, so a connection
	// that opened or closed meanwhile is never taken for one.)
	FlowsEvicted int
	Tables       map[loader.TableID]TableTotals
}

// New returns a sweeper.
func New(dp Datapath, t Timeouts, entryTimeout func(loader.TableID) (time.Duration, bool)) *Sweeper {
	return &Sweeper{dp: dp, timeouts: t, entryTimeout: entryTimeout, totals: map[loader.TableID]*TableTotals{}}
}

// SetTimeouts changes the flow idle timeouts, e.g. after a reload.
func (s *Sweeper) SetTimeouts(t Timeouts) { s.timeouts = t }

// SetEntryTimeout changes how table timeouts are found, e.g. after a reload.
func (s *Sweeper) SetEntryTimeout(f func(loader.TableID) (time.Duration, bool)) { s.entryTimeout = f }

type entryRef struct {
	table  loader.TableID
	client netip.Addr
}

// idleLimit is how long a flow may stay idle in its state.
func (s *Sweeper) idleLimit(f loader.Flow) time.Duration {
	switch {
	case f.UDP:
		return s.timeouts.UDP
	case f.Closed || f.FinSeen:
		return s.timeouts.TCPFin
	}
	return s.timeouts.TCPEstablished
}

// Sweep runs once over every flow and every persistence table.
//
// Entries are read before flows: an entry's generation changes whenever a
// connection of its client opens or closes, so when the kernel finds the
// generation unchanged at correction time, the flows read in between are
// exactly the connections the entry holds (minus any evicted meanwhile).
func (s *Sweeper) Sweep() (Report, error) {
	start := time.Now()
	var rep Report
	tables, err := s.dp.Tables()
	if err != nil {
		return rep, err
	}
	// Entries first (see above). Only two kinds are kept: those that hold
	// connections (their count is checked against the flows) and idle ones
	// past their timeout (to expire); the rest are only counted.
	held := map[entryRef]loader.PersistEntry{}
	var expire []loader.GCRequest
	var expireTable []loader.TableID
	count := map[loader.TableID]int{}
	now, err := s.dp.Now()
	if err != nil {
		return rep, err
	}
	for _, t := range tables {
		timeout, known := s.entryTimeout(t.ID)
		err := s.dp.ScanTable(t.ID, func(e *loader.PersistEntry) {
			count[t.ID]++
			switch {
			case e.Conns > 0 || e.Dying:
				held[entryRef{t.ID, e.Client}] = *e
			case known && loader.Age(e.LastSeen, now) > timeout:
				expire = append(expire, loader.ExpireEntry(*e, timeout))
				expireTable = append(expireTable, t.ID)
			}
		})
		if err != nil {
			return rep, err
		}
		rep.Entries += count[t.ID]
	}
	members, err := s.dp.MemberConns()
	if err != nil {
		return rep, err
	}
	flows, err := s.dp.Flows()
	if err != nil {
		return rep, err
	}
	if now, err = s.dp.Now(); err != nil {
		return rep, err
	}
	rep.Flows = len(flows)

	live := map[entryRef]uint32{}
	memberLive := map[loader.MemberID]uint32{}
	var reqs []loader.GCRequest
	for _, f := range flows {
		limit := s.idleLimit(f)
		if f.Reverse {
			// A reply entry goes with its forward flow; one whose
			// forward flow was evicted is dropped when it idles out.
			limit = max(s.timeouts.TCPEstablished, s.timeouts.UDP)
			if f.Proto == loader.ProtoUDP {
				limit = s.timeouts.UDP
			}
		}
		if loader.Age(f.LastSeen, now) >= limit {
			reqs = append(reqs, loader.ExpireFlow(f, limit))
			continue
		}
		if f.Counted && f.TableID != loader.TableNone {
			live[entryRef{f.TableID, f.Client}]++
		}
		if f.MemberCounted {
			memberLive[f.MemberID]++
		}
	}
	if err := s.dp.RunGC(reqs); err != nil {
		return rep, err
	}
	for _, r := range reqs {
		if r.Result == loader.GCDone {
			rep.FlowsExpired++
		}
	}

	// Corrections first: an entry whose count drops to zero here starts
	// its countdown from its last activity and may expire in a later sweep.
	reqs = reqs[:0]
	var kinds []pending
	for _, m := range members {
		if want := memberLive[m.ID]; m.Conns != want {
			reqs = append(reqs, loader.ReconcileMember(m, want))
			kinds = append(kinds, pending{table: loader.TableNone, member: true, lost: int(m.Conns) - int(want)})
		}
	}
	for ref, e := range held {
		if want := live[ref]; e.Conns != want && !e.Dying {
			reqs = append(reqs, loader.Reconcile(e, want))
			kinds = append(kinds, pending{table: ref.table, correct: true})
		}
	}
	// An entry that counts no connection while flows hold it lost a race;
	// it was not kept above, so read it now.
	for ref, want := range live {
		if _, ok := held[ref]; ok {
			continue
		}
		e, ok, err := s.dp.LookupEntry(ref.table, ref.client)
		if err != nil || !ok || e.Dying || e.Conns == want {
			continue
		}
		reqs = append(reqs, loader.Reconcile(e, want))
		kinds = append(kinds, pending{table: ref.table, correct: true})
	}
	// Expiry candidates whose flows are still live are not expired: the
	// kernel re-checks the count, but a count that lost a race reads zero.
	for i, r := range expire {
		if live[entryRef{expireTable[i], r.Client()}] > 0 {
			continue
		}
		reqs = append(reqs, r)
		kinds = append(kinds, pending{table: expireTable[i]})
	}
	if err := s.dp.RunGC(reqs); err != nil {
		return rep, err
	}
	for i, r := range reqs {
		if r.Result != loader.GCDone {
			continue
		}
		if kinds[i].member {
			rep.MembersCorrected++
			rep.FlowsEvicted += max(kinds[i].lost, 0)
			continue
		}
		t := s.total(kinds[i].table)
		if kinds[i].correct {
			rep.Corrected++
			t.Corrections++
		} else {
			rep.EntriesExpired++
		}
	}

	rep.Tables = map[loader.TableID]TableTotals{}
	for _, t := range tables {
		c, err := s.dp.TableCounters(t.ID)
		if err != nil {
			return rep, fmt.Errorf("table %d counters: %w", t.ID.Index(), err)
		}
		tot := s.total(t.ID)
		tot.Inserts, tot.Expiries, tot.Rejects = c.Inserts, c.Expired, c.Rejects
		tot.Entries = count[t.ID] - countDone(reqs, kinds, t.ID)
		// An LRU table loses entries only by expiry, deletion or eviction;
		// what inserts do not account for was evicted.
		if t.ID.Purges() {
			if gone := int64(c.Inserts) - int64(c.Expired) - int64(tot.Entries); gone > int64(tot.Evictions) {
				tot.Evictions = uint64(gone)
			}
		}
		rep.Tables[t.ID] = *tot
	}
	rep.Duration = time.Since(start)
	return rep, nil
}

// pending remembers what each entry request was for.
type pending struct {
	table   loader.TableID
	correct bool
	member  bool // a member's count, not a table entry
	lost    int  // a member's: connections it counted above the flows holding it
}

func countDone(reqs []loader.GCRequest, kinds []pending, table loader.TableID) int {
	n := 0
	for i, r := range reqs {
		if r.Result == loader.GCDone && !kinds[i].correct && !kinds[i].member && kinds[i].table == table {
			n++
		}
	}
	return n
}

func (s *Sweeper) total(id loader.TableID) *TableTotals {
	t, ok := s.totals[id]
	if !ok {
		t = &TableTotals{}
		s.totals[id] = t
	}
	return t
}
