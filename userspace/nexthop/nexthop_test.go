package nexthop

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/test/testutil"
)

// fakeCache records what a watcher does to the datapath's cache.
type fakeCache struct {
	mu   sync.Mutex
	ops  []string // "publish", "renew", "drop"
	gen  uint32
	hops map[loader.MemberID]loader.NextHop
	live bool
}

func (c *fakeCache) PublishNextHops(hops map[loader.MemberID]loader.NextHop, _ time.Duration) (uint32, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.hops, c.live = hops, true
	c.ops = append(c.ops, "publish")
	return c.gen, nil
}

func (c *fakeCache) RenewNextHops(time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ops = append(c.ops, "renew")
	return nil
}

func (c *fakeCache) DropNextHops() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.live = false
	c.ops = append(c.ops, "drop")
	return nil
}

func (c *fakeCache) state() (bool, map[loader.MemberID]loader.NextHop, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.live, c.hops, slices.Clone(c.ops)
}

var targets = []Target{
	{Member: 0, Addr: testutil.Member4[0]},
	{Member: 1, Addr: testutil.Member4[1]},
	{Member: 2, Addr: testutil.Member6[0]},
	{Member: 3, Addr: testutil.Unresolved4},
	{Member: 4, Addr: testutil.Blackhole4.Addr().Next()},
	{Member: 5, Addr: testutil.ClientNet4.Addr().Next()}, // via the gateway
}

func resolveIn(t *testing.T, w *testutil.World) Result {
	t.Helper()
	var res Result
	err := w.Do(func() (err error) {
		res, err = ResolveHere(targets)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestResolveAsTheFIB(t *testing.T) {
	w := testutil.NewWorld(t)
	res := resolveIn(t, w)
	want := map[loader.MemberID]loader.NextHop{
		0: {Ifindex: w.Member.Index, SrcMAC: w.Member.MAC, DstMAC: testutil.MemberMAC(0), MTU: w.Member.MTU},
		1: {Ifindex: w.Member.Index, SrcMAC: w.Member.MAC, DstMAC: testutil.MemberMAC(1), MTU: w.Member.MTU},
		2: {Ifindex: w.Member.Index, SrcMAC: w.Member.MAC, DstMAC: testutil.MemberMAC(0), MTU: w.Member.MTU},
		5: {Ifindex: w.Client.Index, SrcMAC: w.Client.MAC, DstMAC: testutil.GatewayMAC, MTU: w.Client.MTU},
	}
	for id, h := range want {
		if got, ok := res.Hops[id]; !ok || !sameHop(got, h) {
			t.Errorf("member %d: hop %+v (%v), want %+v (unresolved: %q)", id, got, ok, h, res.Unresolved[id])
		}
	}
	for id, why := range map[loader.MemberID]string{3: "unresolved", 4: "no route"} {
		if _, ok := res.Hops[id]; ok {
			t.Errorf("member %d has a hop", id)
		}
		if !strings.Contains(res.Unresolved[id], why) {
			t.Errorf("member %d: reason %q, want one with %q", id, res.Unresolved[id], why)
		}
	}
}

func TestResolveRefusesWhatOneHopCannotFollow(t *testing.T) {
	w := testutil.NewWorld(t)
	// Routes with their own MTU. The FIB holds forwarded IPv4 to a route's
	// MTU only when it is locked; IPv6 always.
	route := func(r *netlink.Route) {
		t.Helper()
		if err := w.Do(func() error { return netlink.RouteReplace(r) }); err != nil {
			t.Fatal(err)
		}
	}
	host := func(a netip.Addr) *net.IPNet {
		return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}
	}
	route(&netlink.Route{Dst: host(testutil.Member4[1]), LinkIndex: w.Member.Index, MTU: 1400})
	route(&netlink.Route{Dst: host(testutil.Member6[0]), LinkIndex: w.Member.Index, MTU: 1280})
	res := resolveIn(t, w)
	if h := res.Hops[1]; h.MTU != w.Member.MTU {
		t.Errorf("IPv4 member behind an unlocked route of MTU 1400: hop MTU %d, want the link's %d", h.MTU, w.Member.MTU)
	}
	if h := res.Hops[2]; h.MTU != 1280 {
		t.Errorf("IPv6 member behind a route of MTU 1280: hop MTU %d", h.MTU)
	}
	route(&netlink.Route{Dst: host(testutil.Member4[1]), LinkIndex: w.Member.Index, MTU: 1400, MTULock: true})
	// ECMP to member 0 through two neighbours.
	route(&netlink.Route{Dst: host(testutil.Member4[0]), MultiPath: []*netlink.NexthopInfo{
		{LinkIndex: w.Member.Index, Gw: testutil.Member4[2].AsSlice()},
		{LinkIndex: w.Member.Index, Gw: testutil.Member4[3].AsSlice()},
	}})
	res = resolveIn(t, w)
	if h := res.Hops[1]; h.MTU != 1400 {
		t.Errorf("IPv4 member behind a locked route of MTU 1400: hop MTU %d", h.MTU)
	}
	if _, ok := res.Hops[0]; ok || !strings.Contains(res.Unresolved[0], "ECMP") {
		t.Errorf("member 0 behind an ECMP route: hop %v, reason %q", res.Hops[0], res.Unresolved[0])
	}

	// A policy rule: no member is cached.
	err := w.Do(func() error {
		r := netlink.NewRule()
		r.Priority, r.Table = 100, 100
		r.Src = &net.IPNet{IP: net.IPv4(198, 51, 100, 0), Mask: net.CIDRMask(24, 32)}
		return netlink.RuleAdd(r)
	})
	if err != nil {
		t.Fatal(err)
	}
	res = resolveIn(t, w)
	if len(res.Hops) != 0 || !strings.Contains(res.Unresolved[2], "policy routing") {
		t.Errorf("with a policy rule: %d hops, member 2's reason %q", len(res.Hops), res.Unresolved[2])
	}
}

// waitFor polls the fake cache until ok says yes.
func waitFor(t *testing.T, c *fakeCache, what string, ok func(live bool, hops map[loader.MemberID]loader.NextHop) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		live, hops, _ := c.state()
		if ok(live, hops) {
			return
		}
		time.Sleep(time.Millisecond)
	}
	live, hops, ops := c.state()
	t.Fatalf("%s: not within 5s (live %v, hops %v, ops %v)", what, live, hops, ops)
}

// settled waits until the watcher has been quiet for 100ms with the cache
// live: the namespace's own chatter (IPv6 routes of new links) is over.
func settled(t *testing.T, c *fakeCache) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	_, _, ops := c.state()
	for n, since := len(ops), time.Now(); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		live, _, ops := c.state()
		if len(ops) != n {
			n, since = len(ops), time.Now()
			continue
		}
		if live && time.Since(since) > 100*time.Millisecond {
			return
		}
	}
	t.Fatalf("the watcher never settled: %v", ops)
}

func TestWatcherFollowsTheKernel(t *testing.T) {
	w := testutil.NewWorld(t)
	c := &fakeCache{}
	var wt *Watcher
	if err := w.Do(func() (err error) { wt, err = New(c, Options{Lease: time.Hour}); return err }); err != nil {
		t.Fatal(err)
	}
	wt.SetTargets(targets)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- wt.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		if live, _, _ := c.state(); live {
			t.Error("the cache is still live after the watcher stopped")
		}
	}()
	waitFor(t, c, "first publish", func(live bool, hops map[loader.MemberID]loader.NextHop) bool {
		return live && slices.Equal(hops[0].DstMAC, testutil.MemberMAC(0))
	})

	do := func(fn func(l netlink.Link) error) {
		t.Helper()
		err := w.Do(func() error {
			l, err := netlink.LinkByIndex(w.Member.Index)
			if err != nil {
				return err
			}
			return fn(l)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	neigh := func(l netlink.Link, ip netip.Addr, mac net.HardwareAddr) *netlink.Neigh {
		return &netlink.Neigh{LinkIndex: l.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT, IP: ip.AsSlice(), HardwareAddr: mac}
	}

	// A neighbour that changes MAC: the cache goes off at the event, and
	// comes back with the new MAC.
	newMAC := net.HardwareAddr{0x02, 0, 0, 0, 0x0e, 0x01}
	settled(t, c)
	_, _, before := c.state()
	do(func(l netlink.Link) error { return netlink.NeighSet(neigh(l, testutil.Member4[0], newMAC)) })
	waitFor(t, c, "new MAC", func(live bool, hops map[loader.MemberID]loader.NextHop) bool {
		return live && slices.Equal(hops[0].DstMAC, newMAC)
	})
	_, _, after := c.state()
	ops := after[len(before):]
	if len(ops) < 2 || ops[0] != "drop" || !slices.Contains(ops, "publish") {
		t.Errorf("after a MAC change the watcher did %v; want a drop, then a publish", ops)
	}

	// A neighbour deleted: the member loses its hop, the others keep theirs.
	do(func(l netlink.Link) error { return netlink.NeighDel(neigh(l, testutil.Member4[0], newMAC)) })
	waitFor(t, c, "deleted neighbour", func(live bool, hops map[loader.MemberID]loader.NextHop) bool {
		_, has0 := hops[0]
		_, has1 := hops[1]
		return live && !has0 && has1
	})
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		// The watcher records why after the publish returns.
		why := wt.Stats().Unresolved[0]
		if strings.Contains(why, "unresolved") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("member 0 after its neighbour went: reason %q", why)
		}
	}

	// A link MTU change reaches the hops.
	do(func(l netlink.Link) error { return netlink.LinkSetMTU(l, 1280) })
	waitFor(t, c, "MTU 1280", func(live bool, hops map[loader.MemberID]loader.NextHop) bool {
		return live && hops[1].MTU == 1280
	})

	// Chatter is not a change: a neighbour of no member appearing and
	// going stale publishes nothing further once settled.
	settled(t, c)
	_, _, ops = c.state()
	n := len(ops)
	time.Sleep(100 * time.Millisecond)
	if _, _, ops := c.state(); slices.Contains(ops[n:], "publish") {
		t.Errorf("published %v without a change", ops[n:])
	}
	if s := wt.Stats(); s.Generation == 0 || s.Refreshes < 4 {
		t.Errorf("stats %+v: want a generation and at least 4 refreshes", s)
	}
}
