package e2e_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/userspace/lab"
)

// Ten reloads while clients keep opening connections: none fails, every
// client keeps its member, and no persistence entry is lost. The reloads
// alternate between two configs that differ in a profile timeout and in a
// second virtual server that comes and goes.
func TestReloadUnderTraffic(t *testing.T) {
	t.Parallel()
	l := newLab(t, lab.Spec{MemberCount: 3, ClientAddrs4: 24})
	ctx := testCtx(t, 90*time.Second)
	dns := vsConf{Name: "dns", VIP: l.VIP4(), Port: 53, Protocol: "udp", Forwarding: "nat", Persistence: "sticky"}
	cfgA := writeWebConfig(t, l, 0.2)
	bodyA, _ := os.ReadFile(cfgA)
	cfgB := writeConfig(t, l, 0.2, []profileConf{{"sticky", 600}}, []vsConf{webVS(l), dns})
	bodyB, _ := os.ReadFile(cfgB)
	if err := os.WriteFile(cfgA, bodyA, 0o644); err != nil {
		t.Fatal(err)
	}
	p := startLimpet(t, l, cfgA)
	dst := netip.AddrPortFrom(l.VIP4(), 80)
	clients := l.ClientAddrs4()
	if _, err := l.WaitGet(ctx, clients[0], lab.URL(dst, "/")); err != nil {
		t.Fatal(err)
	}

	var requests, failures atomic.Int64
	var mu sync.Mutex
	member := map[netip.Addr]string{}
	moved := []string{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; ; i += 6 {
				select {
				case <-stop:
					return
				default:
				}
				src := clients[i%len(clients)]
				rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				rep, err := l.Get(rctx, src, lab.URL(dst, "/"))
				cancel()
				requests.Add(1)
				if err != nil {
					failures.Add(1)
					t.Errorf("request from %s during reloads: %v", src, err)
					continue
				}
				mu.Lock()
				if was, ok := member[src]; ok && was != rep.Member {
					moved = append(moved, fmt.Sprintf("%s: %s -> %s", src, was, rep.Member))
				}
				member[src] = rep.Member
				mu.Unlock()
			}
		}()
	}
	// Let every client get an entry before the first reload.
	waitFor(t, ctx, "every client persisted", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(member) == len(clients)
	})
	before := dump(t, ctx, l, "web")

	for i := 0; i < 10; i++ {
		body := bodyB
		if i%2 == 1 {
			body = bodyA
		}
		if err := os.WriteFile(cfgA, body, 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.CommandContext(ctx, limpetBin(t), "--pin-path", l.PinDir(), "reload").CombinedOutput()
		if err != nil {
			t.Fatalf("reload %d: %v\n%s", i+1, err, out)
		}
		time.Sleep(150 * time.Millisecond)
	}
	close(stop)
	wg.Wait()

	if n := countLines(p.Output(), "msg=reloaded"); n != 10 {
		t.Errorf("the daemon logged %d reloads, want 10", n)
	}
	if failures.Load() != 0 {
		t.Fatalf("%d of %d requests failed during 10 reloads", failures.Load(), requests.Load())
	}
	if len(moved) > 0 {
		t.Fatalf("clients changed member during reloads: %v", moved)
	}
	after := dump(t, ctx, l, "web")
	lost := 0
	for c, e := range before {
		if a, ok := after[c]; !ok || a.Server != e.Server {
			lost++
		}
	}
	if lost > 0 || len(after) < len(before) {
		t.Fatalf("%d of %d persistence entries lost or changed across 10 reloads", lost, len(before))
	}
	t.Logf("%d requests through 10 reloads, none failed; %d entries kept", requests.Load(), len(after))
}

func waitFor(t *testing.T, ctx context.Context, what string, ok func() bool) {
	t.Helper()
	for !ok() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// scrape reads the metrics endpoint inside the balancer namespace and
// returns every sample, keyed by name and sorted labels as Prometheus
// prints them.
func scrape(t *testing.T, ctx context.Context, l *lab.Lab, addr netip.AddrPort) map[string]float64 {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return l.DialFrom(ctx, lab.HostBalancer, "tcp", addr.Addr(), addr)
		},
	}}
	resp, err := c.Get("http://" + addr.String() + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// sum adds every sample of a metric whose labels contain all of match.
func sum(m map[string]float64, name string, match ...string) float64 {
	total := 0.0
	for k, v := range m {
		if !strings.HasPrefix(k, name+"{") && k != name {
			continue
		}
		ok := true
		for _, s := range match {
			ok = ok && strings.Contains(k, s)
		}
		if ok {
			total += v
		}
	}
	return total
}

// The Prometheus endpoint reports what the clients did: 20 clients x 3
// connections give 60 new connections, 20 persistence misses and 40 hits,
// 60 new connections across the members, and 20 more table entries.
func TestMetricsMatchTraffic(t *testing.T) {
	t.Parallel()
	l := newLab(t, lab.Spec{MemberCount: 3, ClientAddrs4: 21})
	ctx := testCtx(t, 60*time.Second)
	cfg := writeWebConfig(t, l, 0.2)
	addSettings(t, cfg, "metrics_listen: 127.0.0.1:9469")
	startLimpet(t, l, cfg)
	dst := netip.AddrPortFrom(l.VIP4(), 80)
	clients := l.ClientAddrs4()
	probe, clients := clients[0], clients[1:]
	if _, err := l.WaitGet(ctx, probe, lab.URL(dst, "/")); err != nil {
		t.Fatal(err)
	}
	metricsAddr := netip.MustParseAddrPort("127.0.0.1:9469")
	vs := `virtual_server="web"`
	// The probe's connections have closed once the table counts its entry.
	waitFor(t, ctx, "the probe's entry", func() bool {
		return sum(scrape(t, ctx, l, metricsAddr), "limpet_persistence_table_entries") == 1
	})
	base := scrape(t, ctx, l, metricsAddr)

	if err := forEach(clients, func(src netip.Addr) error {
		for k := 0; k < 3; k++ {
			if _, err := l.Get(ctx, src, lab.URL(dst, "/")); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var now map[string]float64
	waitFor(t, ctx, "the sweep to count 21 entries", func() bool {
		now = scrape(t, ctx, l, metricsAddr)
		return sum(now, "limpet_persistence_table_entries") == 21
	})
	delta := func(name string, match ...string) float64 {
		return sum(now, name, match...) - sum(base, name, match...)
	}
	for _, c := range []struct {
		name  string
		match []string
		want  float64
	}{
		{"limpet_virtual_server_new_connections_total", []string{vs}, 60},
		{"limpet_virtual_server_persistence_misses_total", []string{vs}, 20},
		{"limpet_virtual_server_persistence_hits_total", []string{vs}, 40},
		{"limpet_persistence_table_inserts_total", nil, 20},
		{"limpet_member_new_connections_total", nil, 60},
	} {
		if got := delta(c.name, c.match...); got != c.want {
			t.Errorf("%s went up by %v, want %v", c.name, got, c.want)
		}
	}
	if got := delta("limpet_virtual_server_packets_total", vs); got < 60*4 {
		t.Errorf("limpet_virtual_server_packets_total went up by %v; 60 HTTP connections send at least 240 packets", got)
	}
	for _, m := range l.Members() {
		if v := sum(now, "limpet_member_up", `member="`+m.Name+`"`); v != 1 {
			t.Errorf("limpet_member_up for %s is %v", m.Name, v)
		}
	}
	if sum(now, "limpet_build_info") != 1 {
		t.Error("limpet_build_info missing")
	}
}
