package e2e_test

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/loader"
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
	web := vsConf{Name: "web", VIP: l.VIP4(), Port: 80, Protocol: "tcp", Forwarding: "nat", Persistence: "sticky"}
	cfg := writeConfig(t, l, 1, []profileConf{{"sticky", 300}}, []vsConf{web})
	p := startLimpet(t, l, cfg)
	dst := netip.AddrPortFrom(l.VIP4(), 80)
	clients := l.ClientAddrs4()
	if _, err := l.WaitGet(ctx, clients[0], lab.URL(dst, "/")); err != nil {
		t.Fatal(err)
	}
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
	counters := func() map[string]uint64 {
		t.Helper()
		var s struct {
			Exceptions map[string]uint64 `json:"datapath_exception_packets_total"`
		}
		if err := json.Unmarshal(limpetCLI(t, ctx, l, "stats", "-o", "json"), &s); err != nil {
			t.Fatal(err)
		}
		return s.Exceptions
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
	hop("start", time.Now(), func(h loader.NextHop, cached bool) bool { return cached && h.DstMAC.String() == old.String() })

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

	// 2. The NIC is swapped again and the balancer's neighbour entry is
	// deleted while traffic flows: the cache drops the member, the stack
	// resolves it (counted), and the cache takes the new MAC.
	before := counters()
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
	after := counters()
	if after["fib_no_neighbour"] <= before["fib_no_neighbour"] {
		t.Errorf("fib_no_neighbour %d -> %d: the stack path was not counted", before["fib_no_neighbour"], after["fib_no_neighbour"])
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
	before = counters()
	conn, err := l.Dial(ctx, "tcp", clients[0], dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(make([]byte, 8000)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	conn.Close()
	after = counters()
	if after["nexthop_mtu"] <= before["nexthop_mtu"] || after["fib_pass"] <= before["fib_pass"] {
		t.Errorf("segments over the route's MTU: nexthop_mtu %d -> %d, fib_pass %d -> %d; want both counted",
			before["nexthop_mtu"], after["nexthop_mtu"], before["fib_pass"], after["fib_pass"])
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
