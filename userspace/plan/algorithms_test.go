package plan_test

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/test/dptest"
	"github.com/limpet-lb/limpet/userspace/config"
	"github.com/limpet-lb/limpet/userspace/desired"
	"github.com/limpet-lb/limpet/userspace/plan"
)

var vip = netip.MustParseAddrPort("203.0.113.10:80")

// pool renders a config with one l4 virtual server over members m0..m(n-1)
// (10.1.0.10+i:8080); extra is spliced into each member line and the pool.
func poolConfig(algorithm string, members []string, persistence bool) string {
	var b strings.Builder
	if persistence {
		b.WriteString("persistence_profiles: [{name: sticky, timeout: 300}]\n")
	}
	fmt.Fprintf(&b, "pools:\n  - name: p\n    algorithm: %s\n    members:\n", algorithm)
	for i, extra := range members {
		fmt.Fprintf(&b, "      - {name: m%d, address: 10.1.0.%d, port: 8080%s}\n", i, 10+i, extra)
	}
	b.WriteString("virtual_servers:\n  - {name: web, address: 203.0.113.10, port: 80, protocol: tcp, pool: p")
	if persistence {
		b.WriteString(", persistence: sticky")
	}
	b.WriteString("}\n")
	return b.String()
}

type env struct {
	*dptest.World
	meta *desired.Meta
}

func load(t *testing.T, yaml string) *env {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("%v\n%s", err, yaml)
	}
	st, meta, err := plan.Build(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &env{World: dptest.New(t, st, 1<<16), meta: meta}
}

func (e *env) reapply(t *testing.T, yaml string) {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	st, meta, err := plan.Build(cfg, e.meta)
	if err != nil {
		t.Fatal(err)
	}
	e.Apply(st)
	e.meta = meta
}

func memberName(a netip.AddrPort) string {
	if !a.IsValid() {
		return "none"
	}
	return fmt.Sprintf("m%d", a.Addr().As4()[3]-10)
}

// spread opens one connection from each of n new clients and counts them per member.
func (e *env) spread(t *testing.T, from, n int) map[string]int {
	t.Helper()
	out := map[string]int{}
	for i := from; i < from+n; i++ {
		out[memberName(e.Connect(dptest.Client(i), 1000, vip))]++
	}
	return out
}

func within(got, want int, tol float64) bool {
	return math.Abs(float64(got)-float64(want)) <= tol*float64(want)
}

func TestRoundRobin(t *testing.T) {
	e := load(t, poolConfig(config.AlgoRoundRobin, []string{"", "", ""}, false))
	got := e.spread(t, 0, 3000)
	for _, m := range []string{"m0", "m1", "m2"} {
		if got[m] != 1000 {
			t.Errorf("round robin gave %s %d of 3000 clients, want exactly 1000 (%v)", m, got[m], got)
		}
	}
}

// Weights 1:2:3 over 6000 new clients: the schedule is exact, so the
// stated tolerance (1%) only absorbs nothing but future rounding.
func TestWeightedRoundRobin(t *testing.T) {
	e := load(t, poolConfig(config.AlgoWeightedRoundRobin, []string{", weight: 1", ", weight: 2", ", weight: 3"}, false))
	got := e.spread(t, 0, 6000)
	for m, want := range map[string]int{"m0": 1000, "m1": 2000, "m2": 3000} {
		if !within(got[m], want, 0.01) {
			t.Errorf("%s took %d clients, want %d ±1%% (%v)", m, got[m], want, got)
		}
	}
}

// Least connection sends new clients to the least loaded member: with m0
// holding 10 open connections and m1, m2 none, the next 20 go to m1 and m2.
func TestLeastConnectionPrefersLeastLoaded(t *testing.T) {
	yaml := poolConfig(config.AlgoLeastConnection, []string{"", ", state: disabled", ", state: disabled"}, false)
	e := load(t, yaml)
	for i := 0; i < 10; i++ {
		if got := e.Connect(dptest.Client(i), 1000, vip); memberName(got) != "m0" {
			t.Fatalf("only m0 is enabled, client %d went to %s", i, memberName(got))
		}
	}
	e.reapply(t, poolConfig(config.AlgoLeastConnection, []string{"", "", ""}, false))
	onM1 := []int{}
	got := map[string]int{}
	for i := 100; i < 150; i++ {
		m := memberName(e.Connect(dptest.Client(i), 1000, vip))
		got[m]++
		if m == "m1" {
			onM1 = append(onM1, i)
		}
		if i == 119 && (got["m0"] != 0 || got["m1"] != 10 || got["m2"] != 10) {
			t.Fatalf("with m0 at 10 connections, 20 new clients went %v; want 10 to m1 and 10 to m2", got)
		}
	}
	// Level after 20: the next 30 spread evenly.
	if got["m0"] != 10 || got["m1"] != 20 || got["m2"] != 20 {
		t.Fatalf("after levelling, 50 new clients went %v; want 10, 20, 20", got)
	}
	// Closing m1's connections makes it the least loaded again.
	for _, i := range onM1 {
		e.Reset(dptest.Client(i), 1000, vip)
	}
	got = e.spread(t, 300, 10)
	if got["m1"] != 10 {
		t.Fatalf("after m1's clients left, the next 10 went %v; want all to m1", got)
	}
}

// Weighted least connection keeps active connections in proportion to the
// weights (1:3), within one connection.
func TestWeightedLeastConnection(t *testing.T) {
	e := load(t, poolConfig(config.AlgoWeightedLeastConnection, []string{", weight: 1", ", weight: 3"}, false))
	got := e.spread(t, 0, 400)
	if !within(got["m0"], 100, 0.01) || !within(got["m1"], 300, 0.01) {
		t.Fatalf("weights 1:3 over 400 open connections gave %v, want 100:300 ±1%%", got)
	}
}

// ip_hash: the same client always gets the same member, every node with the
// same config agrees, and removing one of five members moves about a fifth
// of the clients (its own), and almost no others.
func TestIPHashMaglev(t *testing.T) {
	five := []string{"", "", "", "", ""}
	yaml := poolConfig(config.AlgoIPHash, five, false)
	a := load(t, yaml)
	b := load(t, yaml) // another node
	const n = 3000
	before := make([]string, n)
	for i := 0; i < n; i++ {
		before[i] = memberName(a.Connect(dptest.Client(i), 1000, vip))
		if other := memberName(b.Connect(dptest.Client(i), 1000, vip)); other != before[i] {
			t.Fatalf("client %d: node a chose %s, node b %s", i, before[i], other)
		}
		if again := memberName(a.Connect(dptest.Client(i), 1001, vip)); again != before[i] {
			t.Fatalf("client %d moved from %s to %s without any change", i, before[i], again)
		}
	}
	count := map[string]int{}
	for _, m := range before {
		count[m]++
	}
	for m, c := range count {
		if !within(c, n/5, 0.15) {
			t.Errorf("%s holds %d of %d clients, want %d ±15%%", m, c, n, n/5)
		}
	}
	// Remove m2.
	a.reapply(t, poolConfig(config.AlgoIPHash, []string{"", "", ", state: disabled", "", ""}, false))
	moved, others := 0, 0
	for i := 0; i < n; i++ {
		now := memberName(a.Connect(dptest.Client(i), 2000, vip))
		if now != before[i] {
			moved++
			if before[i] != "m2" {
				others++
			}
		}
		if now == "m2" {
			t.Fatalf("client %d sent to the removed member", i)
		}
	}
	frac := float64(moved) / n
	t.Logf("removing 1 of 5 members moved %.1f%% of clients (%d not on it)", frac*100, others)
	if frac < 0.15 || frac > 0.25 || float64(others)/n > 0.03 {
		t.Fatalf("moved %.3f of clients (%d from other members), want about 0.2 and almost none from others", frac, others)
	}
}

func TestMaxConnectionsCountsAsDown(t *testing.T) {
	for _, policy := range []string{"immediate", "never"} {
		t.Run(policy, func(t *testing.T) {
			yaml := strings.Replace(poolConfig(config.AlgoRoundRobin, []string{", max_connections: 2", "", ""}, true),
				"timeout: 300}", "timeout: 300, server_down: "+policy+"}", 1)
			e := load(t, yaml)
			tid := e.meta.Tables[0].ID
			// Fill m0: clients 0 and 3 land on it (round robin).
			got := e.spread(t, 0, 6)
			if got["m0"] != 2 {
				t.Fatalf("6 clients went %v", got)
			}
			// m0 is full: new clients skip it (its turn passes to the next
			// member, as IPVS does with an overloaded server).
			got = e.spread(t, 10, 6)
			if got["m0"] != 0 || got["m1"]+got["m2"] != 6 {
				t.Fatalf("with m0 full, 6 new clients went %v", got)
			}
			// Client 0 is persisted to the full m0: NSX's server-down policy applies.
			next := e.Connect(dptest.Client(0), 1001, vip)
			entry, _ := e.Entry(tid, dptest.Client(0))
			if policy == "never" {
				if next.IsValid() || memberName(entry.Server) != "m0" {
					t.Fatalf("never: went to %s, entry %s", memberName(next), entry.Server)
				}
				full := slices.Index(loader.ReasonNames, "member_full")
				if r, _ := e.DP.ReasonCounters(); full < 0 || r[full] != 1 {
					t.Fatalf("member_full counter: %v", r)
				}
				return
			}
			if memberName(next) == "m0" || !next.IsValid() || entry.Server != next {
				t.Fatalf("immediate: went to %s, entry %s", memberName(next), entry.Server)
			}
		})
	}
}

// graceful_disabled drains: persisted clients keep their member, new
// clients never reach it.
func TestGracefulDisabledDrains(t *testing.T) {
	yaml := poolConfig(config.AlgoRoundRobin, []string{"", "", ""}, true)
	e := load(t, yaml)
	tid := e.meta.Tables[0].ID
	first := map[int]string{}
	for i := 0; i < 30; i++ {
		first[i] = memberName(e.Connect(dptest.Client(i), 1000, vip))
	}
	e.reapply(t, poolConfig(config.AlgoRoundRobin, []string{"", ", state: graceful_disabled", ""}, true))
	for i := 0; i < 30; i++ {
		if got := memberName(e.Connect(dptest.Client(i), 1001, vip)); got != first[i] {
			t.Fatalf("persisted client %d moved from %s to %s while m1 drains", i, first[i], got)
		}
	}
	got := e.spread(t, 100, 30)
	if got["m1"] != 0 {
		t.Fatalf("a draining member took %d new clients (%v)", got["m1"], got)
	}
	if len(e.Entries(tid)) != 60 {
		t.Fatalf("%d entries", len(e.Entries(tid)))
	}
}
