package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	limpettest "github.com/limpet-lb/limpet/test/testutil"
	"golang.org/x/sys/unix"

	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/userspace/config"
	"github.com/limpet-lb/limpet/userspace/gc"
)

// fakeSource is a Source with fixed values; errs makes a section fail.
type fakeSource struct {
	info  Info
	vs    []VirtualServer
	mem   []Member
	tabs  []Table
	rsn   []Reason
	redir []RedirectErrors
	sweep SweepStats
	errs  map[string]error
}

// section returns v, or nothing and the section's error.
func section[T any](f *fakeSource, name string, v []T) ([]T, error) {
	if err := f.errs[name]; err != nil {
		return nil, err
	}
	return v, nil
}

func (f *fakeSource) Info() Info                               { return f.info }
func (f *fakeSource) VirtualServers() ([]VirtualServer, error) { return section(f, "vs", f.vs) }
func (f *fakeSource) Members() ([]Member, error)               { return section(f, "members", f.mem) }
func (f *fakeSource) Tables() ([]Table, error)                 { return section(f, "tables", f.tabs) }
func (f *fakeSource) Reasons() ([]Reason, error)               { return section(f, "reasons", f.rsn) }
func (f *fakeSource) Sweeps() SweepStats                       { return f.sweep }
func (f *fakeSource) RedirectErrors() ([]RedirectErrors, error) {
	return section(f, "redirects", f.redir)
}

var (
	started = time.Unix(1700000000, 0)
	applied = time.Unix(1700000100, 500_000_000)
)

func newFake() *fakeSource {
	reasons := make([]uint64, len(loader.ReasonNames))
	reasons[indexOf("no_member")] = 4
	reasons[indexOf("ttl_expired")] = 2
	var sw SweepStats
	sw.Record(gc.Report{Duration: 1500 * time.Microsecond, Flows: 40, FlowsExpired: 3, Entries: 20, EntriesExpired: 2, Corrected: 1}, nil)
	sw.Record(gc.Report{Duration: 500 * time.Microsecond, Flows: 42, FlowsExpired: 1, Entries: 21, EntriesExpired: 0, Corrected: 0}, nil)
	sw.Record(gc.Report{}, errors.New("boom"))
	sw.LastAt = time.Unix(1700000200, 0)
	web := TableFrom(loader.TableCounters{Inserts: 50, Hits: 103, Misses: 50, Rejects: 0, Expired: 7},
		gc.TableTotals{Entries: 43, Inserts: 50, Expiries: 7, Evictions: 0, Corrections: 2})
	web.ID, web.Profile, web.VirtualServer, web.MaxEntries = 0, "sticky", "web", 65536
	dns := TableFrom(loader.TableCounters{Inserts: 9, Hits: 1, Misses: 12, Rejects: 3, Expired: 1},
		gc.TableTotals{Entries: 8, Evictions: 0})
	dns.ID, dns.Profile, dns.MaxEntries = 1, "shared-dns", 8
	return &fakeSource{
		info: Info{Version: "v1.2.3", StartTime: started, AppliedAt: applied, Reloads: 3, ReloadFailures: 1, LastReloadFailed: true},
		vs: []VirtualServer{
			{Name: "web", Protocol: "tcp", Counters: loader.VSCounters{Packets: 797, Bytes: 60123, ReplyPackets: 700, ReplyBytes: 900000,
				NewFlows: 153, PersistHits: 103, PersistMisses: 50, PersistMoved: 5, Rejects: 0, ServerDownDrops: 6, NoMemberDrops: 4}},
			{Name: "dns", Protocol: "udp", Counters: loader.VSCounters{Packets: 30, Bytes: 1800, NewFlows: 13, PersistHits: 1, PersistMisses: 12, Rejects: 3}},
		},
		mem: []Member{
			{Pool: "web", Name: "m1", Counters: loader.MemberCounters{Packets: 278, Bytes: 20000, NewFlows: 63}, State: "enabled", Up: true, ActiveConnections: 5, Weight: 1},
			{Pool: "web", Name: "m2", Counters: loader.MemberCounters{Packets: 265, Bytes: 19000, NewFlows: 60}, State: "graceful_disabled", Up: true, ActiveConnections: 2, Weight: 3, MaxConnections: 100},
			{Pool: "web", Name: "m3", Counters: loader.MemberCounters{Packets: 254, Bytes: 18000, NewFlows: 60}, State: "disabled", Up: false, Weight: 1},
		},
		tabs:  []Table{web, dns},
		rsn:   ReasonsFrom(reasons),
		redir: []RedirectErrors{{Interface: "veth-m1", Ifindex: 4, Errno: unix.EOPNOTSUPP, Error: "EOPNOTSUPP", Count: 12}},
		sweep: sw,
	}
}

func indexOf(name string) int {
	i := slices.Index(loader.ReasonNames, name)
	if i < 0 {
		panic("no reason " + name)
	}
	return i
}

const wantVS = `
# HELP limpet_virtual_server_packets_total Packets from clients to the virtual server that the datapath handled.
# TYPE limpet_virtual_server_packets_total counter
limpet_virtual_server_packets_total{protocol="tcp",virtual_server="web"} 797
limpet_virtual_server_packets_total{protocol="udp",virtual_server="dns"} 30
# HELP limpet_virtual_server_bytes_total Bytes of the packets from clients to the virtual server.
# TYPE limpet_virtual_server_bytes_total counter
limpet_virtual_server_bytes_total{protocol="tcp",virtual_server="web"} 60123
limpet_virtual_server_bytes_total{protocol="udp",virtual_server="dns"} 1800
# HELP limpet_virtual_server_reply_packets_total Reply packets from members that the datapath translated back to the virtual server's address (nat mode).
# TYPE limpet_virtual_server_reply_packets_total counter
limpet_virtual_server_reply_packets_total{protocol="tcp",virtual_server="web"} 700
limpet_virtual_server_reply_packets_total{protocol="udp",virtual_server="dns"} 0
# HELP limpet_virtual_server_reply_bytes_total Bytes of the reply packets translated back (nat mode).
# TYPE limpet_virtual_server_reply_bytes_total counter
limpet_virtual_server_reply_bytes_total{protocol="tcp",virtual_server="web"} 900000
limpet_virtual_server_reply_bytes_total{protocol="udp",virtual_server="dns"} 0
# HELP limpet_virtual_server_new_connections_total Connections (new flows) forwarded to a member.
# TYPE limpet_virtual_server_new_connections_total counter
limpet_virtual_server_new_connections_total{protocol="tcp",virtual_server="web"} 153
limpet_virtual_server_new_connections_total{protocol="udp",virtual_server="dns"} 13
# HELP limpet_virtual_server_persistence_hits_total New connections whose client had a persistence entry, and went to its persisted server.
# TYPE limpet_virtual_server_persistence_hits_total counter
limpet_virtual_server_persistence_hits_total{protocol="tcp",virtual_server="web"} 103
limpet_virtual_server_persistence_hits_total{protocol="udp",virtual_server="dns"} 1
# HELP limpet_virtual_server_persistence_misses_total New connections whose client had no persistence entry (or an expired one), balanced afresh.
# TYPE limpet_virtual_server_persistence_misses_total counter
limpet_virtual_server_persistence_misses_total{protocol="tcp",virtual_server="web"} 50
limpet_virtual_server_persistence_misses_total{protocol="udp",virtual_server="dns"} 12
# HELP limpet_virtual_server_persistence_moved_total Persistence entries rewritten to a new server because the persisted one was down (server_down: immediate).
# TYPE limpet_virtual_server_persistence_moved_total counter
limpet_virtual_server_persistence_moved_total{protocol="tcp",virtual_server="web"} 5
limpet_virtual_server_persistence_moved_total{protocol="udp",virtual_server="dns"} 0
# HELP limpet_virtual_server_persistence_rejects_total New-client packets refused because the persistence table was full (purge_when_full off): TCP is answered with a RST, UDP dropped.
# TYPE limpet_virtual_server_persistence_rejects_total counter
limpet_virtual_server_persistence_rejects_total{protocol="tcp",virtual_server="web"} 0
limpet_virtual_server_persistence_rejects_total{protocol="udp",virtual_server="dns"} 3
# HELP limpet_virtual_server_dropped_packets_total Packets to the virtual server that were dropped, by reason: server_down (persisted server down with server_down: never) or no_member (no member in service).
# TYPE limpet_virtual_server_dropped_packets_total counter
limpet_virtual_server_dropped_packets_total{protocol="tcp",reason="no_member",virtual_server="web"} 4
limpet_virtual_server_dropped_packets_total{protocol="tcp",reason="server_down",virtual_server="web"} 6
limpet_virtual_server_dropped_packets_total{protocol="udp",reason="no_member",virtual_server="dns"} 0
limpet_virtual_server_dropped_packets_total{protocol="udp",reason="server_down",virtual_server="dns"} 0
`

const wantMembers = `
# HELP limpet_member_packets_total Packets the datapath forwarded to the member.
# TYPE limpet_member_packets_total counter
limpet_member_packets_total{member="m1",pool="web"} 278
limpet_member_packets_total{member="m2",pool="web"} 265
limpet_member_packets_total{member="m3",pool="web"} 254
# HELP limpet_member_bytes_total Bytes of the packets forwarded to the member.
# TYPE limpet_member_bytes_total counter
limpet_member_bytes_total{member="m1",pool="web"} 20000
limpet_member_bytes_total{member="m2",pool="web"} 19000
limpet_member_bytes_total{member="m3",pool="web"} 18000
# HELP limpet_member_new_connections_total Connections (new flows) the member was given.
# TYPE limpet_member_new_connections_total counter
limpet_member_new_connections_total{member="m1",pool="web"} 63
limpet_member_new_connections_total{member="m2",pool="web"} 60
limpet_member_new_connections_total{member="m3",pool="web"} 60
# HELP limpet_member_up 1 if the member is healthy (its pool's monitor finds it up, or the pool has no monitor), 0 if it is down.
# TYPE limpet_member_up gauge
limpet_member_up{member="m1",pool="web"} 1
limpet_member_up{member="m2",pool="web"} 1
limpet_member_up{member="m3",pool="web"} 0
# HELP limpet_member_admin_state 1 for the member's administrative state (enabled, disabled or graceful_disabled), 0 for the others.
# TYPE limpet_member_admin_state gauge
limpet_member_admin_state{member="m1",pool="web",state="disabled"} 0
limpet_member_admin_state{member="m1",pool="web",state="enabled"} 1
limpet_member_admin_state{member="m1",pool="web",state="graceful_disabled"} 0
limpet_member_admin_state{member="m2",pool="web",state="disabled"} 0
limpet_member_admin_state{member="m2",pool="web",state="enabled"} 0
limpet_member_admin_state{member="m2",pool="web",state="graceful_disabled"} 1
limpet_member_admin_state{member="m3",pool="web",state="disabled"} 1
limpet_member_admin_state{member="m3",pool="web",state="enabled"} 0
limpet_member_admin_state{member="m3",pool="web",state="graceful_disabled"} 0
# HELP limpet_member_active_connections Open connections (flows) to the member.
# TYPE limpet_member_active_connections gauge
limpet_member_active_connections{member="m1",pool="web"} 5
limpet_member_active_connections{member="m2",pool="web"} 2
limpet_member_active_connections{member="m3",pool="web"} 0
# HELP limpet_member_weight The member's weight in its pool.
# TYPE limpet_member_weight gauge
limpet_member_weight{member="m1",pool="web"} 1
limpet_member_weight{member="m2",pool="web"} 3
limpet_member_weight{member="m3",pool="web"} 1
# HELP limpet_member_max_connections The member's limit of concurrent connections (only members with a limit).
# TYPE limpet_member_max_connections gauge
limpet_member_max_connections{member="m2",pool="web"} 100
`

const wantTables = `
# HELP limpet_persistence_table_entries Entries in the persistence table at the last sweep.
# TYPE limpet_persistence_table_entries gauge
limpet_persistence_table_entries{profile="shared-dns",table="1",virtual_server=""} 8
limpet_persistence_table_entries{profile="sticky",table="0",virtual_server="web"} 43
# HELP limpet_persistence_table_max_entries Capacity of the persistence table (the profile's max_entries).
# TYPE limpet_persistence_table_max_entries gauge
limpet_persistence_table_max_entries{profile="shared-dns",table="1",virtual_server=""} 8
limpet_persistence_table_max_entries{profile="sticky",table="0",virtual_server="web"} 65536
# HELP limpet_persistence_table_inserts_total Entries created for new clients.
# TYPE limpet_persistence_table_inserts_total counter
limpet_persistence_table_inserts_total{profile="shared-dns",table="1",virtual_server=""} 9
limpet_persistence_table_inserts_total{profile="sticky",table="0",virtual_server="web"} 50
# HELP limpet_persistence_table_hits_total Lookups that found the client's entry.
# TYPE limpet_persistence_table_hits_total counter
limpet_persistence_table_hits_total{profile="shared-dns",table="1",virtual_server=""} 1
limpet_persistence_table_hits_total{profile="sticky",table="0",virtual_server="web"} 103
# HELP limpet_persistence_table_misses_total Lookups that found no entry (or an expired one) for the client.
# TYPE limpet_persistence_table_misses_total counter
limpet_persistence_table_misses_total{profile="shared-dns",table="1",virtual_server=""} 12
limpet_persistence_table_misses_total{profile="sticky",table="0",virtual_server="web"} 50
# HELP limpet_persistence_table_expiries_total Entries deleted because their timeout ran out after the client's last connection ended.
# TYPE limpet_persistence_table_expiries_total counter
limpet_persistence_table_expiries_total{profile="shared-dns",table="1",virtual_server=""} 1
limpet_persistence_table_expiries_total{profile="sticky",table="0",virtual_server="web"} 7
# HELP limpet_persistence_table_evictions_total Entries the full table evicted, least recently used first, to make room for new clients (purge_when_full on).
# TYPE limpet_persistence_table_evictions_total counter
limpet_persistence_table_evictions_total{profile="shared-dns",table="1",virtual_server=""} 0
limpet_persistence_table_evictions_total{profile="sticky",table="0",virtual_server="web"} 0
# HELP limpet_persistence_table_rejects_total New clients refused because the table was full (purge_when_full off).
# TYPE limpet_persistence_table_rejects_total counter
limpet_persistence_table_rejects_total{profile="shared-dns",table="1",virtual_server=""} 3
limpet_persistence_table_rejects_total{profile="sticky",table="0",virtual_server="web"} 0
# HELP limpet_persistence_table_corrections_total Live-connection counts of entries that the sweeper corrected (flows lost to flow-table eviction).
# TYPE limpet_persistence_table_corrections_total counter
limpet_persistence_table_corrections_total{profile="shared-dns",table="1",virtual_server=""} 0
limpet_persistence_table_corrections_total{profile="sticky",table="0",virtual_server="web"} 2
`

const wantSweep = `
# HELP limpet_gc_sweeps_total Sweeps of the flow and persistence tables.
# TYPE limpet_gc_sweeps_total counter
limpet_gc_sweeps_total 3
# HELP limpet_gc_sweep_errors_total Sweeps that failed.
# TYPE limpet_gc_sweep_errors_total counter
limpet_gc_sweep_errors_total 1
# HELP limpet_gc_sweep_duration_seconds_total Time spent sweeping, summed over every sweep.
# TYPE limpet_gc_sweep_duration_seconds_total counter
limpet_gc_sweep_duration_seconds_total 0.002
# HELP limpet_gc_last_sweep_duration_seconds How long the last sweep took.
# TYPE limpet_gc_last_sweep_duration_seconds gauge
limpet_gc_last_sweep_duration_seconds 0
# HELP limpet_gc_last_sweep_timestamp_seconds When the last sweep ran, in seconds since the Unix epoch.
# TYPE limpet_gc_last_sweep_timestamp_seconds gauge
limpet_gc_last_sweep_timestamp_seconds 1.7000002e+09
# HELP limpet_gc_flows_expired_total Flows the sweeper ended because they idled out.
# TYPE limpet_gc_flows_expired_total counter
limpet_gc_flows_expired_total 4
# HELP limpet_gc_entries_expired_total Persistence entries the sweeper deleted because their timeout ran out.
# TYPE limpet_gc_entries_expired_total counter
limpet_gc_entries_expired_total 2
# HELP limpet_gc_connection_counts_corrected_total Live-connection counts of persistence entries the sweeper corrected.
# TYPE limpet_gc_connection_counts_corrected_total counter
limpet_gc_connection_counts_corrected_total 1
# HELP limpet_flow_table_entries Entries in the flow table at the last sweep (nat flows have one per direction).
# TYPE limpet_flow_table_entries gauge
limpet_flow_table_entries 42
# HELP limpet_persistence_entries Entries in every persistence table at the last sweep.
# TYPE limpet_persistence_entries gauge
limpet_persistence_entries 21
`

const wantRedirects = `
# HELP limpet_xdp_redirect_errors_total Packets the datapath forwarded that the kernel refused to redirect into the interface, by error: EOPNOTSUPP for a device that cannot take XDP frames (a veth whose peer has neither GRO nor an XDP program), ENETDOWN for one that is down, EMSGSIZE for a frame above its MTU.
# TYPE limpet_xdp_redirect_errors_total counter
limpet_xdp_redirect_errors_total{error="EOPNOTSUPP",interface="veth-m1"} 12
`

const wantInfo = `
# HELP limpet_start_time_seconds When the daemon started, in seconds since the Unix epoch.
# TYPE limpet_start_time_seconds gauge
limpet_start_time_seconds 1.7e+09
# HELP limpet_config_last_reload_success_timestamp_seconds When the running config was applied (start or reload), in seconds since the Unix epoch.
# TYPE limpet_config_last_reload_success_timestamp_seconds gauge
limpet_config_last_reload_success_timestamp_seconds 1.7000001005e+09
# HELP limpet_config_last_reload_successful 1 if the last config reload was applied, 0 if it was refused (the previous config keeps running).
# TYPE limpet_config_last_reload_successful gauge
limpet_config_last_reload_successful 0
# HELP limpet_config_reloads_total Config reload requests (SIGHUP or 'limpet reload') since the start, by result.
# TYPE limpet_config_reloads_total counter
limpet_config_reloads_total{result="failure"} 1
limpet_config_reloads_total{result="success"} 3
`

func metricNames(text string) []string {
	var names []string
	for _, line := range strings.Split(text, "\n") {
		if n, ok := strings.CutPrefix(line, "# TYPE "); ok {
			names = append(names, strings.Fields(n)[0])
		}
	}
	return names
}

func TestCollectorValues(t *testing.T) {
	src := newFake()
	c := NewCollector(src)
	for name, want := range map[string]string{"virtual servers": wantVS, "members": wantMembers, "tables": wantTables, "sweep": wantSweep, "info": wantInfo, "redirects": wantRedirects} {
		if err := testutil.CollectAndCompare(c, strings.NewReader(want), metricNames(want)...); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	// build_info carries the version and Go's.
	want := `
# HELP limpet_build_info Always 1; the labels say which limpet build runs.
# TYPE limpet_build_info gauge
limpet_build_info{goversion="` + runtime.Version() + `",version="v1.2.3"} 1
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "limpet_build_info"); err != nil {
		t.Error(err)
	}
}

func TestCollectorReasons(t *testing.T) {
	c := NewCollector(newFake())
	drops := values(t, c, "limpet_datapath_dropped_packets_total")
	exceptions := values(t, c, "limpet_datapath_exception_packets_total")
	// Every reason is exported once, under drops or exceptions as loader says.
	for i, name := range loader.ReasonNames {
		key := `reason="` + name + `"`
		_, inDrops := drops[key]
		_, inExc := exceptions[key]
		if inDrops != loader.ReasonDrops[i] || inExc == loader.ReasonDrops[i] {
			t.Errorf("reason %s: in drops %v, in exceptions %v; drops %v", name, inDrops, inExc, loader.ReasonDrops[i])
		}
	}
	if len(drops)+len(exceptions) != len(loader.ReasonNames) {
		t.Errorf("%d+%d reasons exported, want %d", len(drops), len(exceptions), len(loader.ReasonNames))
	}
	if drops[`reason="no_member"`] != 4 || exceptions[`reason="ttl_expired"`] != 2 || drops[`reason="fragment"`] != 0 {
		t.Errorf("drops %v, exceptions %v", drops, exceptions)
	}
}

// values gathers one metric family and returns its values by label set,
// written as name="value" pairs joined by commas in label name order.
func values(t *testing.T, c prometheus.Collector, name string) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, lp := range m.GetLabel() {
				labels = append(labels, lp.GetName()+`="`+lp.GetValue()+`"`)
			}
			v := m.GetGauge().GetValue()
			if m.Counter != nil {
				v = m.GetCounter().GetValue()
			}
			out[strings.Join(labels, ",")] = v
		}
	}
	return out
}

func TestReasonsFrom(t *testing.T) {
	counts := make([]uint64, len(loader.ReasonNames)+1)
	counts[0] = 9
	counts[len(counts)-1] = 1
	rs := ReasonsFrom(counts)
	if rs[0] != (Reason{Name: loader.ReasonNames[0], Drop: loader.ReasonDrops[0], Packets: 9}) {
		t.Errorf("first reason %+v", rs[0])
	}
	last := rs[len(rs)-1]
	if want := "reason_" + strconv.Itoa(len(counts)-1); last.Name != want || last.Packets != 1 || last.Drop {
		t.Errorf("unnamed reason %+v, want name %q", last, want)
	}
}

func TestCollectorLint(t *testing.T) {
	problems, err := testutil.CollectAndLint(NewCollector(newFake()))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// The collector reads the source at each scrape: nothing is cached.
func TestCollectorReadsOnScrape(t *testing.T) {
	src := newFake()
	c := NewCollector(src)
	key := `protocol="tcp",virtual_server="web"`
	first := values(t, c, "limpet_virtual_server_packets_total")[key]
	src.vs[0].Counters.Packets += 100
	second := values(t, c, "limpet_virtual_server_packets_total")[key]
	if first != 797 || second != 897 {
		t.Errorf("packets %v then %v, want 797 then 897", first, second)
	}
}

// A section that fails to read is left out of that scrape; the others are
// served, and the error is logged.
func TestHandlerPartialFailure(t *testing.T) {
	src := newFake()
	src.errs = map[string]error{"members": errors.New("member map gone")}
	var logBuf limpettest.Buffer
	log := slog.New(slog.NewTextHandler(&logBuf, nil))
	body, code := scrape(t, src, log)
	if code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	if !strings.Contains(body, `limpet_virtual_server_packets_total{protocol="tcp",virtual_server="web"} 797`) {
		t.Errorf("virtual server metrics missing:\n%s", body)
	}
	if strings.Contains(body, "limpet_member_packets_total{") {
		t.Errorf("member metrics served despite the error")
	}
	if !strings.Contains(logBuf.String(), "member map gone") {
		t.Errorf("error not logged: %q", logBuf.String())
	}
}

// scrape serves src on a loopback port and GETs /metrics once.
func scrape(t *testing.T, src Source, log *slog.Logger) (string, int) {
	t.Helper()
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, src, log, Options{}) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	resp, err := http.Get("http://" + ln.Addr().String() + Path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), resp.StatusCode
}

func TestServeHTTP(t *testing.T) {
	src := newFake()
	body, code := scrape(t, src, nil)
	if code != http.StatusOK {
		t.Fatalf("status %d:\n%s", code, body)
	}
	for _, want := range []string{
		`limpet_virtual_server_new_connections_total{protocol="tcp",virtual_server="web"} 153`,
		`limpet_member_up{member="m3",pool="web"} 0`,
		`limpet_persistence_table_entries{profile="sticky",table="0",virtual_server="web"} 43`,
		`limpet_persistence_table_max_entries{profile="sticky",table="0",virtual_server="web"} 65536`,
		`limpet_datapath_dropped_packets_total{reason="no_member"} 4`,
		"# HELP limpet_persistence_table_rejects_total New clients refused because the table was full (purge_when_full off).",
		"go_goroutines ", "process_start_time_seconds ",
	} {
		if !strings.Contains(body, want+"\n") && !strings.Contains(body, want) {
			t.Errorf("missing %q", want)
		}
	}
	// Every limpet family has a HELP text.
	for _, line := range strings.Split(body, "\n") {
		if n, ok := strings.CutPrefix(line, "# TYPE limpet_"); ok {
			name := "limpet_" + strings.Fields(n)[0]
			if !strings.Contains(body, "# HELP "+name+" ") {
				t.Errorf("%s has no HELP", name)
			}
		}
	}
}

func TestServeStops(t *testing.T) {
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, newFake(), nil, Options{}) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if _, err := Listen("not an address"); err == nil || !strings.Contains(err.Error(), "settings.metrics_listen") {
		t.Errorf("Listen error %v should name settings.metrics_listen", err)
	}
}

// settings.metrics_listen is validated with the rest of the config.
func TestMetricsListenSetting(t *testing.T) {
	base := "pools: [{name: p, members: [{name: m, address: 10.0.0.1}]}]\nvirtual_servers: [{name: v, address: 10.0.0.10, port: 80, protocol: tcp, pool: p}]\n"
	for _, tc := range []struct {
		value string
		ok    bool
	}{
		{"", true}, {"127.0.0.1:9469", true}, {"[::]:9469", true}, {"0.0.0.0:9100", true},
		{"localhost:9469", false}, {"127.0.0.1", false}, {"127.0.0.1:0", false}, {":9469", false}, {"127.0.0.1:70000", false},
	} {
		cfg, err := config.Parse([]byte(base + fmt.Sprintf("settings: {metrics_listen: %q}\n", tc.value)))
		if tc.ok {
			if err != nil || cfg.Settings.MetricsListen != tc.value {
				t.Errorf("%q: %v", tc.value, err)
			}
			continue
		}
		var fe *config.FieldError
		if !errors.As(err, &fe) || fe.Field != "settings.metrics_listen" {
			t.Errorf("%q: error %v, want one naming settings.metrics_listen", tc.value, err)
		}
	}
}
