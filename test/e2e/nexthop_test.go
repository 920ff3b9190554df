package e2e_test

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/userspace/admin"
	"github.com/limpet-lb/limpet/userspace/lab"
)

// The next-hop cache follows the kernel while real clients keep connecting:
// a member whose MAC changes, a member whose neighbour entry is deleted,
// and a route whose MTU shrinks. After each change, once the daemon has
// refreshed the cache, traffic flows, nothing more reaches the stale MAC,
// and what the cache cannot carry is counted (the stack path, the MTU
// fallback). A daemon that stops turns the cache off.
func TestNextHopCacheFollowsTheKernel(t *testing.T) {
	t.Parallel()
	l := newLab(t, lab.Spec{MemberCount: 1, ClientAddrs4: 4})
	ctx := testCtx(t, 150*time.Second)
	p, dst := serveWeb(t, ctx, l)
	clients := l.ClientAddrs4()
	dp, err := loader.OpenPinned(l.PinDir())
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	m := l.Members()[0]

	// hop waits until the cache is live and the member's hop (the pool's
	// only member) satisfies ok, and returns it with the time it took.
	hop := func(what string, since time.Time, ok func(h loader.NextHop, cached bool) bool) loader.NextHop {
		t.Helper()
		for time.Now().Before(since.Add(10 * time.Second)) {
			c, err := dp.NextHops()
			if err != nil {
				t.Fatal(err)
			}
			now, err := dp.Now()
			if err != nil {
				t.Fatal(err)
			}
			var h loader.NextHop
			cached := false
			for _, x := range c.Hops {
				h, cached = x, true
			}
			if c.Live(now) && len(c.Hops) <= 1 && ok(h, cached) {
				t.Logf("%s: cache generation %d after %v", what, c.Gen, time.Since(since).Round(time.Microsecond))
				return h
			}
			time.Sleep(time.Millisecond)
		}
		c, _ := dp.NextHops()
		t.Fatalf("%s: not within 10s; cache %+v", what, c)
		return loader.NextHop{}
	}
	// Clients connect all along, each GET a new connection.
	var (
		mu       sync.Mutex
		ok, fail int
	)
	trafficCtx, stopTraffic := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, src := range clients[1:] {
		wg.Go(func() {
			for trafficCtx.Err() == nil {
				rctx, cancel := context.WithTimeout(trafficCtx, 2*time.Second)
				_, err := l.Get(rctx, src, lab.URL(dst, "/"))
				cancel()
				mu.Lock()
				if err == nil {
					ok++
				} else if trafficCtx.Err() == nil {
					fail++
				}
				mu.Unlock()
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
	defer func() {
		stopTraffic()
		wg.Wait()
	}()
	// follows checks that, after a refresh, new connections all succeed
	// and none of their frames go to stale.
	frames, err := l.CountFrames(m.Name, m.Iface.Name)
	if err != nil {
		t.Fatal(err)
	}
	defer frames.Close()
	follows := func(what string, stale net.HardwareAddr) {
		t.Helper()
		time.Sleep(10 * time.Millisecond) // frames already on the wire
		before := frames.Count(stale)
		for i := range 10 {
			rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			_, err := l.Get(rctx, clients[0], lab.URL(dst, "/"))
			cancel()
			if err != nil {
				t.Fatalf("%s: GET %d after the refresh: %v", what, i, err)
			}
		}
		if n := frames.Count(stale) - before; n > 0 {
			t.Errorf("%s: %d frames went to the stale MAC %s after the refresh", what, n, stale)
		}
	}

	old := m.Iface.MAC
	first := hop("start", time.Now(), func(h loader.NextHop, cached bool) bool { return cached && h.DstMAC.String() == old.String() })
	// What 'limpet status' shows of the member's hop is what the datapath
	// holds: the balancer's interface towards the member and its MAC, the
	// member's MAC, the route's MTU, the live generation.
	bif := l.Balancers()[0].MemberIfaces[0]
	st0 := statusHop(t, ctx, l, "start", func(h *admin.MemberNextHop) bool { return h.DstMAC == old.String() })
	if st0.SrcMAC != bif.MAC.String() || st0.Ifindex != bif.Index || st0.Interface != bif.Name || st0.MTU != first.MTU || st0.MTU != 1500 {
		t.Errorf("status shows the hop %+v; want %s (%d, %s) to %s, MTU 1500", st0, bif.Name, bif.Index, bif.MAC, old)
	}
	if st0.Hits == 0 {
		t.Errorf("status: no cache hits counted after a GET through the cached hop: %+v", st0)
	}

	// 1. The member's MAC changes and the balancer learns it (as from a
	// gratuitous ARP): the cache follows, traffic goes to the new MAC.
	mac1 := net.HardwareAddr{0x02, 0x1b, 0, 0, 0, 0x01}
	t0 := time.Now()
	if err := l.SetMemberMAC(m.Name, mac1); err != nil {
		t.Fatal(err)
	}
	if err := l.TellBalancerMAC(m.Name, mac1); err != nil {
		t.Fatal(err)
	}
	hop("MAC change", t0, func(h loader.NextHop, cached bool) bool { return cached && h.DstMAC.String() == mac1.String() })
	follows("MAC change", old)
	if frames.Count(mac1) == 0 {
		t.Error("no frame reached the member's new MAC")
	}
	st1 := statusHop(t, ctx, l, "MAC change", func(h *admin.MemberNextHop) bool { return h.DstMAC == mac1.String() })
	if st1.Generation == st0.Generation || st1.Hits <= st0.Hits || !st1.LastRefresh.After(st0.LastRefresh) {
		t.Errorf("status after the MAC change: %+v; want a new generation, a later refresh and more hits than %+v", st1, st0)
	}

	// 2. The NIC is swapped again and the balancer's neighbour entry is
	// deleted while traffic flows: the cache drops the member, the stack
	// resolves it (counted), and the cache takes the new MAC.
	before := exceptionCounters(t, ctx, l)
	mac2 := net.HardwareAddr{0x02, 0x1b, 0, 0, 0, 0x02}
	t0 = time.Now()
	if err := l.SetMemberMAC(m.Name, mac2); err != nil {
		t.Fatal(err)
	}
	if err := l.ForgetMemberNeighbours(m.Name); err != nil {
		t.Fatal(err)
	}
	hop("neighbour deleted", t0, func(h loader.NextHop, cached bool) bool { return !cached || h.DstMAC.String() == mac2.String() })
	follows("neighbour deleted", mac1)
	hop("neighbour resolved again", t0, func(h loader.NextHop, cached bool) bool { return cached && h.DstMAC.String() == mac2.String() })
	after := exceptionCounters(t, ctx, l)
	if after["fib_no_neighbour"] <= before["fib_no_neighbour"] {
		t.Errorf("fib_no_neighbour %d -> %d: the stack path was not counted", before["fib_no_neighbour"], after["fib_no_neighbour"])
	}
	// While the member had no hop its packets missed the cache: the
	// member's counter says so as the datapath's reason does.
	st2 := statusHop(t, ctx, l, "neighbour resolved again", func(h *admin.MemberNextHop) bool { return h.DstMAC == mac2.String() })
	if after["nexthop_miss"] > before["nexthop_miss"] && st2.Misses <= st1.Misses {
		t.Errorf("nexthop_miss %d -> %d, but the member's misses stayed at %d", before["nexthop_miss"], after["nexthop_miss"], st2.Misses)
	}

	// 3. The route to the member gets a smaller MTU: the cache takes it,
	// and a segment longer than it takes the FIB (counted), which hands it
	// to the stack.
	t0 = time.Now()
	if err := l.SetMemberRouteMTU(m.Name, 1300); err != nil {
		t.Fatal(err)
	}
	hop("route MTU 1300", t0, func(h loader.NextHop, cached bool) bool { return cached && h.MTU == 1300 })
	follows("route MTU 1300", mac1)
	before = exceptionCounters(t, ctx, l)
	conn, err := l.Dial(ctx, "tcp", clients[0], dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(make([]byte, 8000)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	conn.Close()
	after = exceptionCounters(t, ctx, l)
	if after["nexthop_mtu"] <= before["nexthop_mtu"] || after["fib_pass"] <= before["fib_pass"] {
		t.Errorf("segments over the route's MTU: nexthop_mtu %d -> %d, fib_pass %d -> %d; want both counted",
			before["nexthop_mtu"], after["nexthop_mtu"], before["fib_pass"], after["fib_pass"])
	}
	st3 := statusHop(t, ctx, l, "route MTU 1300", func(h *admin.MemberNextHop) bool { return h.MTU == 1300 })
	if st3.MTUFallbacks == 0 || st3.MTUFallbacks < after["nexthop_mtu"]-before["nexthop_mtu"] {
		t.Errorf("status: %d MTU fallbacks for the member, but the datapath counted %d more nexthop_mtu", st3.MTUFallbacks, after["nexthop_mtu"]-before["nexthop_mtu"])
	}
	text := string(limpetCLI(t, ctx, l, "status"))
	for _, want := range []string{"NEXT-HOP CACHE: generation ", "live, lease ", "1 members cached", m.Name, "cached", mac2.String(), bif.Name, "1300"} {
		if !strings.Contains(text, want) {
			t.Errorf("limpet status has no %q:\n%s", want, text)
		}
	}
	if err := l.SetMemberRouteMTU(m.Name, 0); err != nil {
		t.Fatal(err)
	}
	hop("route removed", time.Now(), func(h loader.NextHop, cached bool) bool { return cached && h.MTU > 1300 })

	stopTraffic()
	wg.Wait()
	mu.Lock()
	t.Logf("background clients: %d GETs answered, %d failed across the changes", ok, fail)
	mu.Unlock()

	// 4. A daemon that stops leaves the FIB in charge.
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(ctx); err != nil {
		t.Logf("limpet run exited: %v", err)
	}
	c, err := dp.NextHops()
	if err != nil {
		t.Fatal(err)
	}
	if now, _ := dp.Now(); c.Live(now) {
		t.Errorf("the cache is live after the daemon stopped: %+v", c)
	}
	if _, err := l.Get(ctx, clients[0], lab.URL(dst, "/")); err != nil {
		t.Errorf("GET after the daemon stopped (the datapath stays): %v", err)
	}
}

// statusHop polls 'limpet status -o json' until the cache is live and the
// only member's hop is cached and satisfies ok, checks the keys operators
// script against, and returns the hop.
func statusHop(t *testing.T, ctx context.Context, l *lab.Lab, what string, ok func(*admin.MemberNextHop) bool) admin.MemberNextHop {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		raw := limpetCLI(t, ctx, l, "status", "-o", "json")
		var st admin.Status
		if err := json.Unmarshal(raw, &st); err != nil {
			t.Fatalf("status -o json: %v\n%s", err, raw)
		}
		var h *admin.MemberNextHop
		if len(st.Pools) == 1 && len(st.Pools[0].Members) == 1 {
			h = st.Pools[0].Members[0].NextHop
		}
		c := st.NextHopCache
		if c != nil && c.Live && h != nil && h.State == admin.NextHopCached && ok(h) {
			if h.Generation != c.Generation || c.MembersCached != 1 || c.LastResolved.IsZero() || c.Hits != h.Hits {
				t.Errorf("%s: status cache %+v does not agree with its member's hop %+v", what, *c, *h)
			}
			var keys struct {
				Cache map[string]any `json:"next_hop_cache"`
				Pools []struct {
					Members []struct {
						NextHop map[string]any `json:"next_hop"`
					} `json:"members"`
				} `json:"pools"`
			}
			if err := json.Unmarshal(raw, &keys); err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"state", "generation", "interface", "ifindex", "src_mac", "dst_mac", "mtu", "last_refresh", "hits_total", "misses_total", "mtu_fallbacks_total"} {
				if _, ok := keys.Pools[0].Members[0].NextHop[k]; !ok {
					t.Errorf("status -o json: the member's next_hop has no %q: %v", k, keys.Pools[0].Members[0].NextHop)
				}
			}
			for _, k := range []string{"generation", "live", "lease_expires_in_seconds", "last_published", "last_resolved", "members_cached", "hits_total", "misses_total", "mtu_fallbacks_total"} {
				if _, ok := keys.Cache[k]; !ok {
					t.Errorf("status -o json: next_hop_cache has no %q: %v", k, keys.Cache)
				}
			}
			return *h
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: limpet status never showed the member's hop as wanted:\n%s", what, raw)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
