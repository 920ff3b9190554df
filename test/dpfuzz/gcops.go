package dpfuzz

import (
	"fmt"
	"strings"
	"time"

	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/test/model"
)

// gcItem is one request to the datapath's GC program, in the model's terms.
type gcItem struct {
	conn    *model.FlowKey
	entry   *model.EntryKey
	touch   bool
	limit   time.Duration
	request loader.GCRequest
}

func (g gcItem) String() string {
	switch {
	case g.conn != nil:
		return fmt.Sprintf("expire connection %s if idle %v", *g.conn, g.limit)
	case g.touch:
		return fmt.Sprintf("touch entry %s", *g.entry)
	}
	return fmt.Sprintf("expire entry %s if idle past %v", *g.entry, g.limit)
}

// idleLimit is the sweeper's idle timeout for a connection's state, as
// userspace/gc has it.
func (s *seq) idleLimit(c model.Conn) time.Duration {
	switch {
	case c.UDP:
		return s.sc.idle.udp
	case c.Closed() || c.FinClient || c.FinServer:
		return s.sc.idle.fin
	}
	return s.sc.idle.estab
}

func (s *seq) entryTimeout(table uint32) time.Duration {
	if t, ok := s.sc.tableTmo[table]; ok {
		return t
	}
	return 300 * time.Second
}

func (s *seq) expireConnItem(k model.FlowKey, limit time.Duration) gcItem {
	return gcItem{conn: &k, limit: limit, request: gcExpireConn(k, limit)}
}

func (s *seq) expireEntryItem(k model.EntryKey, timeout time.Duration) gcItem {
	return gcItem{entry: &k, limit: timeout, request: gcExpireEntry(k, s.purge[k.Table], timeout)}
}

// sweep ends idle connections and expired entries through the GC program,
// as the daemon's sweeper does: every connection against its state's idle
// timeout, or one with a chosen limit, and every entry against its table's
// timeout (held ones included: the GC program must skip them).
func (s *seq) sweep(r *reader) (*Mismatch, error) {
	var items []gcItem
	mode := r.pick(3)
	if mode == 0 || mode == 1 {
		conns := s.m.Conns()
		if mode == 1 && len(conns) > 0 {
			k := conns[r.pick(len(conns))]
			limits := []time.Duration{0, time.Second, 10 * time.Second, 120 * time.Second, 300 * time.Second}
			items = append(items, s.expireConnItem(k, limits[r.pick(len(limits))]))
		} else {
			for _, k := range conns {
				c, _ := s.m.Conn(k)
				items = append(items, s.expireConnItem(k, s.idleLimit(c)))
			}
		}
	}
	if mode == 0 || mode == 2 {
		for _, t := range s.sc.cfg.Tables {
			for _, k := range s.m.Entries(t.ID) {
				items = append(items, s.expireEntryItem(k, s.entryTimeout(t.ID)))
			}
		}
	}
	s.stats.Sweeps++
	// Now and then the sweep reads the clock a little behind the last
	// packet: a flow seen after the sweeper's reading is not idle.
	var back time.Duration
	if r.chance(10) {
		back = time.Duration(1+r.pick(1000)) * time.Microsecond
	}
	return s.gc("sweep", items, back)
}

// entryOp touches, deletes or expires one entry.
func (s *seq) entryOp(r *reader) (*Mismatch, error) {
	var all []model.EntryKey
	for _, t := range s.sc.cfg.Tables {
		all = append(all, s.m.Entries(t.ID)...)
	}
	if len(all) == 0 {
		return nil, nil
	}
	k := all[r.pick(len(all))]
	switch r.pick(3) {
	case 0:
		return s.gc("touch", []gcItem{{entry: &k, touch: true, request: gcTouch(k, s.purge[k.Table])}}, 0)
	case 1:
		// 'limpet persistence delete': open connections keep their member.
		if err := deleteEntry(s.w.dp, k, s.purge[k.Table]); err != nil {
			return nil, err
		}
		s.trace("delete entry %s", k)
		s.m.DeleteEntry(k)
		s.m.Commit()
		return nil, nil
	}
	timeouts := []time.Duration{0, time.Second, 5 * time.Second, 300 * time.Second}
	return s.gc("expire entry", []gcItem{s.expireEntryItem(k, timeouts[r.pick(len(timeouts))])}, 0)
}

// gc runs GC items in batches and checks each result and the state they
// touched.
func (s *seq) gc(what string, items []gcItem, back time.Duration) (*Mismatch, error) {
	for start := 0; start < len(items); start += gcBatch {
		chunk := items[start:min(start+gcBatch, len(items))]
		reqs := make([]loader.GCRequest, len(chunk))
		for i, it := range chunk {
			reqs[i] = it.request
		}
		now, err := s.w.runGC(reqs, back)
		if err != nil {
			return nil, err
		}
		var kernelDone bool
		o := s.m.BeginGC(func(string) bool { return kernelDone })
		var diffs, lines []string
		for i, it := range chunk {
			kr := gcResult(reqs[i].Result)
			kernelDone = kr == model.GCDone
			var mr model.GCResult
			switch {
			case it.conn != nil:
				mr = s.m.ExpireConn(*it.conn, it.limit, now)
			case it.touch:
				mr = s.m.TouchEntry(*it.entry, now)
			default:
				mr = s.m.ExpireEntry(*it.entry, it.limit, now)
			}
			lines = append(lines, fmt.Sprintf("%s: kernel %s, model %s", it, kr, mr))
			s.trace("gc %s: %s", it, kr)
			if kr != mr {
				diffs = append(diffs, fmt.Sprintf("%s: kernel %s, model %s", it, kr, mr))
			}
		}
		k := newKernel(s.w.dp, s.tables, s.purge)
		diffs = append(diffs, s.compareTouched(k, o)...)
		if k.err != nil {
			return nil, k.err
		}
		if len(diffs) > 0 {
			s.m.Rollback()
			return &Mismatch{What: fmt.Sprintf("%s at %s", what, now), Before: s.m.Dump(o.Touched),
				Model: "see the results", Kernel: strings.Join(lines, "; "), Diffs: diffs}, nil
		}
		s.m.Commit()
	}
	return nil, nil
}
