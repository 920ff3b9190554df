package model

import "time"

// The sweeper's operations. The daemon's sweeper decides what to end from
// its own reading of the tables; the datapath's GC program re-checks each
// request against the live state and does it with the datapath's atomics.
// These are the GC program's semantics: each returns what must happen.

// GCResult is what the GC did with one request.
type GCResult int

// GC results.
const (
	GCDone GCResult = iota
	GCSkipped
	GCNotFound
	GCBad
)

func (r GCResult) String() string { return [...]string{"done", "skipped", "not_found", "bad"}[r] }

// BeginGC starts a batch of GC operations at now; choose answers the
// batch's undecided questions. End it with Commit or Rollback.
func (m *Model) BeginGC(choose Chooser) *Outcome {
	o := newOutcome()
	m.out, m.choose = o, choose
	return o
}

// ExpireConn ends a connection idle for at least idle (README: "The
// daemon's sweep ... ends idle flows in the kernel"): it releases its entry
// and its member's count, exactly once, and a NAT connection's reply
// translation goes with it, unless a later connection has taken that over.
func (m *Model) ExpireConn(k FlowKey, idle time.Duration, now Instant) GCResult {
	c, ok := m.conns.get(k)
	if !ok {
		return GCNotFound
	}
	// The kernel's rule: a connection stamped at or after the sweep's
	// reading of the clock is not idle, whatever idle is (the coarse
	// clock makes the two readings equal within a tick).
	if !m.settle(elapsedOver(now, c.LastSeen, max(idle, time.Nanosecond), false), "connection %s idle for %v", k, idle) {
		return GCSkipped
	}
	m.release(&c, now)
	m.conns.del(k)
	if c.Mode == NAT {
		rk := ReplyKey{c.Target, k.Src, k.Proto}
		if t, ok := m.replies.get(rk); ok && t.VIP == k.Dst {
			m.replies.del(rk)
		}
	}
	return GCDone
}

// ExpireEntry deletes an entry with no live connection whose countdown of
// timeout ran out (README "deletes expired entries"); one already found
// expired is deleted without counting it again.
func (m *Model) ExpireEntry(k EntryKey, timeout time.Duration, now Instant) GCResult {
	if m.tables[k.Table] == nil {
		return GCBad
	}
	e, ok := m.entries.get(k)
	if !ok {
		return GCNotFound
	}
	if !e.Expired {
		if e.Conns != 0 {
			return GCSkipped
		}
		if !m.settle(elapsedOver(now, e.LastSeen, timeout, true), "entry %s idle past %v", k, timeout) {
			return GCSkipped
		}
		m.tableCtr.update(k.Table, func(c *TableCounters) { c.Expired++ })
	}
	m.delEntry(k)
	return GCDone
}

// TouchEntry restarts an entry's countdown, as the L7 proxy does for its
// connections; an entry claimed for expiry is left to die.
func (m *Model) TouchEntry(k EntryKey, now Instant) GCResult {
	if m.tables[k.Table] == nil {
		return GCBad
	}
	e, ok := m.entries.get(k)
	if !ok {
		return GCNotFound
	}
	if e.Expired {
		return GCSkipped
	}
	e.LastSeen = now
	m.entries.set(k, e)
	return GCDone
}

// DeleteEntry removes an entry, as 'limpet persistence delete' does: open
// connections keep their member.
func (m *Model) DeleteEntry(k EntryKey) bool {
	if _, ok := m.entries.m[k]; !ok {
		return false
	}
	m.delEntry(k)
	return true
}
