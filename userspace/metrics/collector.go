package metrics

import (
	"fmt"
	"runtime"
	"slices"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/limpet-lb/limpet/loader"
)

// Label names.
var (
	vsLabels     = []string{"virtual_server", "protocol"}
	memberLabels = []string{"pool", "member"}
	tableLabels  = []string{"table", "profile", "virtual_server"}
)

type vsMetric struct {
	desc *prometheus.Desc
	get  func(*loader.VSCounters) uint64
}

type memberMetric struct {
	desc *prometheus.Desc
	get  func(*loader.MemberCounters) uint64
}

type tableMetric struct {
	desc  *prometheus.Desc
	gauge bool
	get   func(*Table) float64
}

// Collector is a prometheus.Collector that reads a Source on each scrape.
type Collector struct {
	src Source

	buildInfo, startTime, appliedAt, reloadOK, reloads *prometheus.Desc

	vs        []vsMetric
	vsDropped *prometheus.Desc

	member                                                       []memberMetric
	memberUp, memberState, memberActive, memberWeight, memberMax *prometheus.Desc

	table []tableMetric

	drops, exceptions, redirectErrors *prometheus.Desc

	sweeps, sweepErrors, sweepSeconds, sweepLastSeconds, sweepLastAt *prometheus.Desc
	flowsExpired, entriesExpired, corrected, flows, entries          *prometheus.Desc
	flowsEvicted                                                     *prometheus.Desc

	cluster clusterDescs
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("limpet_"+name, help, labels, nil)
}

// NewCollector returns a collector over src.
func NewCollector(src Source) *Collector {
	c := &Collector{src: src}

	c.buildInfo = desc("build_info", "Always 1; the labels say which limpet build runs.", "version", "goversion")
	c.startTime = desc("start_time_seconds", "When the daemon started, in seconds since the Unix epoch.")
	c.appliedAt = desc("config_last_reload_success_timestamp_seconds", "When the running config was applied (start or reload), in seconds since the Unix epoch.")
	c.reloadOK = desc("config_last_reload_successful", "1 if the last config reload was applied, 0 if it was refused (the previous config keeps running).")
	c.reloads = desc("config_reloads_total", "Config reload requests (SIGHUP or 'limpet reload') since the start, by result.", "result")

	vs := func(name, help string, get func(*loader.VSCounters) uint64) {
		c.vs = append(c.vs, vsMetric{desc("virtual_server_"+name, help, vsLabels...), get})
	}
	vs("packets_total", "Packets from clients to the virtual server that the datapath handled.", func(v *loader.VSCounters) uint64 { return v.Packets })
	vs("bytes_total", "Bytes of the packets from clients to the virtual server.", func(v *loader.VSCounters) uint64 { return v.Bytes })
	vs("reply_packets_total", "Reply packets from members that the datapath translated back to the virtual server's address (nat mode).", func(v *loader.VSCounters) uint64 { return v.ReplyPackets })
	vs("reply_bytes_total", "Bytes of the reply packets translated back (nat mode).", func(v *loader.VSCounters) uint64 { return v.ReplyBytes })
	vs("new_connections_total", "Connections (new flows) forwarded to a member.", func(v *loader.VSCounters) uint64 { return v.NewFlows })
	vs("persistence_hits_total", "New connections whose client had a persistence entry, and went to its persisted server.", func(v *loader.VSCounters) uint64 { return v.PersistHits })
	vs("persistence_misses_total", "New connections whose client had no persistence entry (or an expired one), balanced afresh.", func(v *loader.VSCounters) uint64 { return v.PersistMisses })
	vs("persistence_moved_total", "Persistence entries rewritten to a new server because the persisted one was down (server_down: immediate).", func(v *loader.VSCounters) uint64 { return v.PersistMoved })
	vs("persistence_rejects_total", "New-client packets refused because the persistence table was full (purge_when_full off): TCP is answered with a RST, UDP dropped.", func(v *loader.VSCounters) uint64 { return v.Rejects })
	c.vsDropped = desc("virtual_server_dropped_packets_total", "Packets to the virtual server that were dropped, by reason: server_down (persisted server down with server_down: never) or no_member (no member in service).", append(slices.Clone(vsLabels), "reason")...)

	mem := func(name, help string, get func(*loader.MemberCounters) uint64) {
		c.member = append(c.member, memberMetric{desc("member_"+name, help, memberLabels...), get})
	}
	mem("packets_total", "Packets the datapath forwarded to the member.", func(m *loader.MemberCounters) uint64 { return m.Packets })
	mem("bytes_total", "Bytes of the packets forwarded to the member.", func(m *loader.MemberCounters) uint64 { return m.Bytes })
	mem("new_connections_total", "Connections (new flows) the member was given.", func(m *loader.MemberCounters) uint64 { return m.NewFlows })
	c.memberUp = desc("member_up", "1 if the member is healthy (its pool's monitor finds it up, or the pool has no monitor), 0 if it is down.", memberLabels...)
	c.memberState = desc("member_admin_state", "1 for the member's administrative state (enabled, disabled or graceful_disabled), 0 for the others.", append(slices.Clone(memberLabels), "state")...)
	c.memberActive = desc("member_active_connections", "Open connections (flows) to the member.", memberLabels...)
	c.memberWeight = desc("member_weight", "The member's weight in its pool.", memberLabels...)
	c.memberMax = desc("member_max_connections", "The member's limit of concurrent connections (only members with a limit).", memberLabels...)

	tbl := func(name, help string, gauge bool, get func(*Table) float64) {
		c.table = append(c.table, tableMetric{desc("persistence_table_"+name, help, tableLabels...), gauge, get})
	}
	tbl("entries", "Entries in the persistence table at the last sweep.", true, func(t *Table) float64 { return float64(t.Entries) })
	tbl("max_entries", "Capacity of the persistence table (the profile's max_entries).", true, func(t *Table) float64 { return float64(t.MaxEntries) })
	tbl("inserts_total", "Entries created for new clients.", false, func(t *Table) float64 { return float64(t.Inserts) })
	tbl("hits_total", "Lookups that found the client's entry.", false, func(t *Table) float64 { return float64(t.Hits) })
	tbl("misses_total", "Lookups that found no entry (or an expired one) for the client.", false, func(t *Table) float64 { return float64(t.Misses) })
	tbl("expiries_total", "Entries deleted because their timeout ran out after the client's last connection ended.", false, func(t *Table) float64 { return float64(t.Expiries) })
	tbl("evictions_total", "Entries the full table evicted, least recently used first, to make room for new clients (purge_when_full on).", false, func(t *Table) float64 { return float64(t.Evictions) })
	tbl("rejects_total", "New clients refused because the table was full (purge_when_full off).", false, func(t *Table) float64 { return float64(t.Rejects) })
	tbl("corrections_total", "Live-connection counts of entries that the sweeper corrected (flows lost to flow-table eviction).", false, func(t *Table) float64 { return float64(t.Corrections) })

	c.drops = desc("datapath_dropped_packets_total", "Packets the datapath dropped, by reason (table_full: a TCP SYN is answered with a RST, a UDP datagram dropped).", "reason")
	c.redirectErrors = desc("xdp_redirect_errors_total", "Packets the datapath forwarded that the kernel refused to redirect into the interface, by error: EOPNOTSUPP for a device that cannot take XDP frames (a veth whose peer has neither GRO nor an XDP program), ENETDOWN for one that is down, EMSGSIZE for a frame above its MTU.", "interface", "error")
	c.exceptions = desc("datapath_exception_packets_total", "Packets the datapath passed to the kernel or only counted instead of forwarding, by reason.", "reason")

	c.sweeps = desc("gc_sweeps_total", "Sweeps of the flow and persistence tables.")
	c.sweepErrors = desc("gc_sweep_errors_total", "Sweeps that failed.")
	c.sweepSeconds = desc("gc_sweep_duration_seconds_total", "Time spent sweeping, summed over every sweep.")
	c.sweepLastSeconds = desc("gc_last_sweep_duration_seconds", "How long the last sweep took.")
	c.sweepLastAt = desc("gc_last_sweep_timestamp_seconds", "When the last sweep ran, in seconds since the Unix epoch.")
	c.flowsExpired = desc("gc_flows_expired_total", "Flows the sweeper ended because they idled out.")
	c.flowsEvicted = desc("gc_flows_evicted_total", "Connections whose flow a full flow table evicted before they closed, as the sweeper found them.")
	c.entriesExpired = desc("gc_entries_expired_total", "Persistence entries the sweeper deleted because their timeout ran out.")
	c.corrected = desc("gc_connection_counts_corrected_total", "Live-connection counts of persistence entries the sweeper corrected.")
	c.flows = desc("flow_table_entries", "Entries in the flow table at the last sweep (nat flows have one per direction).")
	c.entries = desc("persistence_entries", "Entries in every persistence table at the last sweep.")
	c.cluster = newClusterDescs()
	return c
}

func (c *Collector) descs() []*prometheus.Desc {
	out := []*prometheus.Desc{c.buildInfo, c.startTime, c.appliedAt, c.reloadOK, c.reloads, c.vsDropped,
		c.memberUp, c.memberState, c.memberActive, c.memberWeight, c.memberMax, c.drops, c.exceptions, c.redirectErrors,
		c.sweeps, c.sweepErrors, c.sweepSeconds, c.sweepLastSeconds, c.sweepLastAt,
		c.flowsExpired, c.entriesExpired, c.corrected, c.flows, c.entries, c.flowsEvicted}
	out = append(out, c.cluster.all()...)
	for _, m := range c.vs {
		out = append(out, m.desc)
	}
	for _, m := range c.member {
		out = append(out, m.desc)
	}
	for _, m := range c.table {
		out = append(out, m.desc)
	}
	return out
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs() {
		ch <- d
	}
}

func counter(d *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
}

func gauge(d *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// readOrInvalid is what read returns; when it fails, an invalid metric of
// desc tells the scraper what could not be read, and the rest goes on.
func readOrInvalid[T any](ch chan<- prometheus.Metric, desc *prometheus.Desc, what string, read func() ([]T, error)) []T {
	xs, err := read()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(desc, fmt.Errorf("read %s: %w", what, err))
	}
	return xs
}

// Collect implements prometheus.Collector: it reads the source now.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.collectInfo(ch)

	vss := readOrInvalid(ch, c.vs[0].desc, "virtual server counters", c.src.VirtualServers)
	for i := range vss {
		v := &vss[i]
		for _, m := range c.vs {
			ch <- counter(m.desc, float64(m.get(&v.Counters)), v.Name, v.Protocol)
		}
		ch <- counter(c.vsDropped, float64(v.Counters.ServerDownDrops), v.Name, v.Protocol, "server_down")
		ch <- counter(c.vsDropped, float64(v.Counters.NoMemberDrops), v.Name, v.Protocol, "no_member")
	}

	members := readOrInvalid(ch, c.member[0].desc, "member counters", c.src.Members)
	for i := range members {
		m := &members[i]
		for _, mm := range c.member {
			ch <- counter(mm.desc, float64(mm.get(&m.Counters)), m.Pool, m.Name)
		}
		ch <- gauge(c.memberUp, b2f(m.Up), m.Pool, m.Name)
		for _, s := range memberStates {
			ch <- gauge(c.memberState, b2f(m.State == s), m.Pool, m.Name, s)
		}
		if m.State != "" && !slices.Contains(memberStates, m.State) {
			ch <- gauge(c.memberState, 1, m.Pool, m.Name, m.State)
		}
		ch <- gauge(c.memberActive, float64(m.ActiveConnections), m.Pool, m.Name)
		ch <- gauge(c.memberWeight, float64(m.Weight), m.Pool, m.Name)
		if m.MaxConnections > 0 {
			ch <- gauge(c.memberMax, float64(m.MaxConnections), m.Pool, m.Name)
		}
	}

	tables := readOrInvalid(ch, c.table[0].desc, "persistence tables", c.src.Tables)
	for i := range tables {
		t := &tables[i]
		id := strconv.FormatUint(uint64(t.ID), 10)
		for _, m := range c.table {
			if m.gauge {
				ch <- gauge(m.desc, m.get(t), id, t.Profile, t.VirtualServer)
			} else {
				ch <- counter(m.desc, m.get(t), id, t.Profile, t.VirtualServer)
			}
		}
	}

	reasons := readOrInvalid(ch, c.drops, "exception counters", c.src.Reasons)
	for _, r := range reasons {
		d := c.exceptions
		if r.Drop {
			d = c.drops
		}
		ch <- counter(d, float64(r.Packets), r.Name)
	}

	redirects := readOrInvalid(ch, c.redirectErrors, "redirect errors", c.src.RedirectErrors)
	for _, r := range redirects {
		ch <- counter(c.redirectErrors, float64(r.Count), r.Interface, r.Error)
	}

	s := c.src.Sweeps()
	ch <- counter(c.sweeps, float64(s.Sweeps))
	ch <- counter(c.sweepErrors, float64(s.Errors))
	ch <- counter(c.sweepSeconds, s.TotalDuration.Seconds())
	ch <- counter(c.flowsExpired, float64(s.FlowsExpired))
	ch <- counter(c.flowsEvicted, float64(s.FlowsEvicted))
	ch <- counter(c.entriesExpired, float64(s.EntriesExpired))
	ch <- counter(c.corrected, float64(s.Corrected))
	if !s.LastAt.IsZero() {
		ch <- gauge(c.sweepLastSeconds, s.LastDuration.Seconds())
		ch <- gauge(c.sweepLastAt, float64(s.LastAt.UnixNano())/1e9)
		ch <- gauge(c.flows, float64(s.Flows))
		ch <- gauge(c.entries, float64(s.Entries))
	}
	if cs, ok := c.src.(ClusterSource); ok {
		c.cluster.collect(cs.Cluster(), ch)
	}
}

func (c *Collector) collectInfo(ch chan<- prometheus.Metric) {
	info := c.src.Info()
	ch <- gauge(c.buildInfo, 1, info.Version, runtime.Version())
	if !info.StartTime.IsZero() {
		ch <- gauge(c.startTime, float64(info.StartTime.UnixNano())/1e9)
	}
	if !info.AppliedAt.IsZero() {
		ch <- gauge(c.appliedAt, float64(info.AppliedAt.UnixNano())/1e9)
	}
	ch <- gauge(c.reloadOK, b2f(!info.LastReloadFailed))
	ch <- counter(c.reloads, float64(info.Reloads), "success")
	ch <- counter(c.reloads, float64(info.ReloadFailures), "failure")
}
