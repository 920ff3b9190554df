// Package metrics exports limpet's datapath and control-plane counters to
// Prometheus.
//
// The collector keeps no counters of its own: on every scrape it asks a
// Source (the daemon) for snapshots and turns them into metrics, so the
// numbers are the datapath's per-CPU counters summed at that moment. The
// Source's types are plain Go values; the daemon fills them from the loader,
// the sweeper and the health monitors.
package metrics

import (
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/userspace/gc"
)

// Source is what the collector reads on each scrape. The daemon implements
// it; every method may be called concurrently with the daemon's own work
// and with another scrape.
//
// The slice methods return an error when the datapath cannot be read; the
// scrape then still serves every other section, and the error is logged and
// reported (promhttp's ContinueOnError).
type Source interface {
	// Info describes the running daemon and its config reloads.
	Info() Info
	// VirtualServers returns every l4 virtual server's counters.
	VirtualServers() ([]VirtualServer, error)
	// Members returns every member of the pools that l4 virtual servers use.
	Members() ([]Member, error)
	// Tables returns every persistence table.
	Tables() ([]Table, error)
	// Reasons returns the datapath's exception counters (see ReasonsFrom).
	Reasons() ([]Reason, error)
	// Sweeps returns the running totals of the persistence GC.
	Sweeps() SweepStats
	// RedirectErrors returns the redirects the kernel refused.
	RedirectErrors() ([]RedirectErrors, error)
}

// RedirectErrors counts the datapath's redirects into one interface that
// the kernel refused with one error (see loader.RedirectError).
type RedirectErrors struct {
	Interface string
	Ifindex   int
	Errno     unix.Errno
	Error     string // the errno's name
	Count     uint64
}

// Info describes the daemon.
type Info struct {
	Version   string
	StartTime time.Time
	// AppliedAt is when the running config was applied (start or reload).
	AppliedAt time.Time
	// Reloads counts the reloads applied since the start (SIGHUP or the
	// admin API), ReloadFailures those refused.
	Reloads, ReloadFailures uint64
	// LastReloadFailed is set while the last reload request was refused.
	LastReloadFailed bool
}

// VirtualServer is one l4 virtual server and its datapath counters.
type VirtualServer struct {
	Name     string
	Protocol string // tcp or udp
	Counters loader.VSCounters
}

// Member states, as configured or set with 'limpet member disable'.
var memberStates = []string{"enabled", "disabled", "graceful_disabled"}

// Member is one pool member: its counters, state and health.
type Member struct {
	Pool, Name string
	Counters   loader.MemberCounters
	// State is the administrative state the datapath enforces: enabled,
	// disabled or graceful_disabled ('limpet member disable' makes it
	// disabled whatever the config says).
	State string
	// Up is the health verdict: false while the pool's monitor finds the
	// member down. A member of a pool without a monitor is up.
	Up bool
	// ActiveConnections is the number of open flows to the member.
	ActiveConnections uint64
	Weight            int
	// MaxConnections is the configured limit; 0 means none.
	MaxConnections int
}

// Table is one persistence table: its occupancy and counters. The counters
// of the datapath (Inserts, Hits, Misses, Expiries, Rejects) should be read
// at the call; Entries, Evictions and Corrections come from the last sweep.
type Table struct {
	// ID is the table index shown by 'limpet persistence dump'.
	ID      uint32
	Profile string
	// VirtualServer owns a private table; empty for a shared one.
	VirtualServer string
	Entries       int
	MaxEntries    int
	Inserts       uint64 // new clients persisted
	Hits          uint64 // connections that found their client's entry
	Misses        uint64 // connections of clients without an entry
	Expiries      uint64 // entries whose timeout ran out
	Evictions     uint64 // entries the LRU dropped to make room
	Rejects       uint64 // new clients refused because the table was full
	Corrections   uint64 // live-connection counts the sweeper corrected
}

// TableFrom fills a Table's counters from the datapath's table counters
// (read now) and the sweeper's totals (from the last sweep's Report.Tables);
// the caller sets ID, Profile, VirtualServer and MaxEntries.
func TableFrom(c loader.TableCounters, t gc.TableTotals) Table {
	return Table{
		Entries:     t.Entries,
		Inserts:     c.Inserts,
		Hits:        c.Hits,
		Misses:      c.Misses,
		Expiries:    c.Expired,
		Evictions:   t.Evictions,
		Rejects:     c.Rejects,
		Corrections: t.Corrections,
	}
}

// Reason is one exception counter of the datapath.
type Reason struct {
	Name    string
	Drop    bool // the packet was dropped, not passed to the kernel
	Packets uint64
}

// ReasonsFrom labels the datapath's exception counters, indexed like
// loader.ReasonNames (as loader.Datapath.ReasonCounters returns them).
func ReasonsFrom(counts []uint64) []Reason {
	out := make([]Reason, 0, len(counts))
	for i, n := range counts {
		r := Reason{Packets: n}
		if i < len(loader.ReasonNames) {
			r.Name = loader.ReasonNames[i]
		} else {
			r.Name = "reason_" + strconv.Itoa(i)
		}
		if i < len(loader.ReasonDrops) {
			r.Drop = loader.ReasonDrops[i]
		}
		out = append(out, r)
	}
	return out
}

// SweepStats are the persistence GC's running totals. The daemon keeps one
// and calls Record after every sweep, under its own lock.
type SweepStats struct {
	Sweeps, Errors uint64
	// LastDuration is how long the last sweep took; TotalDuration is the
	// sum over every sweep.
	LastDuration, TotalDuration time.Duration
	LastAt                      time.Time
	// Flows and Entries are what the last successful sweep found.
	Flows, Entries                          int
	FlowsExpired, EntriesExpired, Corrected uint64
	FlowsEvicted                            uint64 // connections lost to a full flow table
}

// Record adds one sweep's report (or its error) to the totals.
func (s *SweepStats) Record(rep gc.Report, err error) {
	s.Sweeps++
	s.LastAt = time.Now()
	s.LastDuration = rep.Duration
	s.TotalDuration += rep.Duration
	if err != nil {
		s.Errors++
		return
	}
	s.Flows, s.Entries = rep.Flows, rep.Entries
	s.FlowsExpired += uint64(rep.FlowsExpired)
	s.FlowsEvicted += uint64(rep.FlowsEvicted)
	s.EntriesExpired += uint64(rep.EntriesExpired)
	s.Corrected += uint64(rep.Corrected)
}
