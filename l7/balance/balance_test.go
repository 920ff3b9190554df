package balance

import (
	"fmt"
	"math"
	"net/netip"
	"sync"
	"testing"
	"time"
)

func members(weights ...int) []*Member {
	out := make([]*Member, len(weights))
	for i, w := range weights {
		out[i] = NewMember("p", fmt.Sprintf("m%d", i), netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), 80), w)
	}
	return out
}

func pick(now time.Time) *Pick { return &Pick{Client: netip.MustParseAddr("192.0.2.1"), Now: now} }

func count(t *testing.T, algo string, ms []*Member, n int) map[string]int {
	t.Helper()
	s, err := New(algo, len(ms))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	got := map[string]int{}
	for i := 0; i < n; i++ {
		m := s.Select(ms, pick(now))
		if m == nil {
			t.Fatal("nil member")
		}
		got[m.Name]++
	}
	return got
}

func TestRoundRobinIsEven(t *testing.T) {
	got := count(t, RoundRobin, members(1, 1, 1), 300)
	for _, n := range []string{"m0", "m1", "m2"} {
		if got[n] != 100 {
			t.Fatalf("%v", got)
		}
	}
}

func TestWeightedRoundRobinIsExactAndSmooth(t *testing.T) {
	ms := members(5, 1, 1)
	s, _ := New(WeightedRoundRobin, len(ms))
	var seq string
	for i := 0; i < 7; i++ {
		seq += s.Select(ms, pick(time.Now())).Name[1:]
	}
	// nginx's smooth WRR interleaves: a a b a c a a, never five a's in a row.
	if seq != "0010200" {
		t.Errorf("sequence %s, want 0010200", seq)
	}
	got := count(t, WeightedRoundRobin, members(3, 2, 1), 6000)
	if got["m0"] != 3000 || got["m1"] != 2000 || got["m2"] != 1000 {
		t.Errorf("%v", got)
	}
}

func TestLeastConnectionPrefersLeastLoaded(t *testing.T) {
	ms := members(1, 1, 1)
	ms[0].conns.Store(5)
	ms[1].conns.Store(2)
	ms[2].conns.Store(9)
	s, _ := New(LeastConnection, 3)
	for i := 0; i < 10; i++ {
		if m := s.Select(ms, pick(time.Now())); m != ms[1] {
			t.Fatalf("picked %s", m.Name)
		}
	}
	// Ties spread instead of piling on the first.
	got := count(t, LeastConnection, members(1, 1, 1), 300)
	if got["m0"] != 100 || got["m1"] != 100 || got["m2"] != 100 {
		t.Errorf("idle pool: %v", got)
	}
}

func TestWeightedLeastConnectionUsesWeights(t *testing.T) {
	ms := members(4, 1)
	s, _ := New(WeightedLeastConnection, 2)
	// Simulate long-lived requests: each pick holds its connection.
	for i := 0; i < 500; i++ {
		m := s.Select(ms, pick(time.Now()))
		m.Acquire()
	}
	a, b := ms[0].Conns(), ms[1].Conns()
	if a != 400 || b != 100 {
		t.Errorf("weights 4:1 over 500 held requests: %d:%d", a, b)
	}
}

func TestIPHashIsStableAndMovesOnlyTheLostMembersClients(t *testing.T) {
	ms := members(1, 1, 1, 1, 1)
	s, _ := New(IPHash, len(ms))
	now := time.Now()
	const clients = 5000
	before := make([]*Member, clients)
	per := map[string]int{}
	for i := 0; i < clients; i++ {
		c := netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)})
		before[i] = s.Select(ms, &Pick{Client: c, Now: now})
		per[before[i].Name]++
		if again := s.Select(ms, &Pick{Client: c, Now: now}); again != before[i] {
			t.Fatal("same client, different member")
		}
	}
	for n, c := range per {
		if math.Abs(float64(c)-clients/5) > clients/5*0.15 {
			t.Errorf("%s has %d of %d clients, want about %d", n, c, clients, clients/5)
		}
	}
	// Same config elsewhere (new members, new selector): same answers.
	other := members(1, 1, 1, 1, 1)
	s2, _ := New(IPHash, len(other))
	for i := 0; i < 100; i++ {
		c := netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)})
		if s2.Select(other, &Pick{Client: c, Now: now}).Name != before[i].Name {
			t.Fatal("another node with the same config disagrees")
		}
	}
	// m2 goes down: only its clients move.
	ms[2].SetMonitorUp(false)
	moved := 0
	for i := 0; i < clients; i++ {
		c := netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)})
		after := s.Select(ms, &Pick{Client: c, Now: now})
		if after == ms[2] {
			t.Fatal("a down member was chosen")
		}
		if after != before[i] {
			moved++
			if before[i] != ms[2] {
				t.Fatal("a client of a healthy member moved")
			}
		}
	}
	if moved != per["m2"] {
		t.Errorf("moved %d, want exactly m2's %d", moved, per["m2"])
	}
}

func TestIPHashWeights(t *testing.T) {
	ms := members(3, 1)
	s, _ := New(IPHash, 2)
	got := map[string]int{}
	for i := 0; i < 8000; i++ {
		got[s.Select(ms, &Pick{Client: netip.AddrFrom4([4]byte{203, 0, byte(i >> 8), byte(i)}), Now: time.Now()}).Name]++
	}
	if r := float64(got["m0"]) / float64(got["m1"]); r < 2.6 || r > 3.4 {
		t.Errorf("weights 3:1 give %v (ratio %.2f)", got, r)
	}
}

func TestSelectorsSkipUnavailable(t *testing.T) {
	for _, algo := range []string{RoundRobin, WeightedRoundRobin, LeastConnection, WeightedLeastConnection, IPHash} {
		t.Run(algo, func(t *testing.T) {
			ms := members(1, 1, 1, 1)
			ms[0].SetAdmin(Disabled)
			ms[1].SetAdmin(Draining)
			ms[2].SetMonitorUp(false)
			s, _ := New(algo, len(ms))
			for i := 0; i < 20; i++ {
				if m := s.Select(ms, &Pick{Client: netip.AddrFrom4([4]byte{1, 2, 3, byte(i)}), Now: time.Now()}); m != ms[3] {
					t.Fatalf("picked %v", m)
				}
			}
			ms[3].MaxConns = 1
			ms[3].Acquire()
			if m := s.Select(ms, pick(time.Now())); m != nil {
				t.Fatalf("full member picked: %v", m)
			}
			ms[3].Release()
			if m := s.Select(ms, &Pick{Client: netip.MustParseAddr("1.1.1.1"), Now: time.Now(), Exclude: []*Member{ms[3]}}); m != nil {
				t.Fatalf("excluded member picked: %v", m)
			}
		})
	}
}

func TestUnknownAlgorithm(t *testing.T) {
	if _, err := New("fastest", 1); err == nil {
		t.Fatal("accepted")
	}
}

func TestAvailability(t *testing.T) {
	m := NewMember("p", "a", netip.MustParseAddrPort("10.0.0.1:80"), 1)
	now := time.Now()
	if !m.Available(now) || !m.Selectable(now) {
		t.Fatal("new member should be up")
	}
	m.SetAdmin(Draining)
	if !m.Available(now) || m.Selectable(now) {
		t.Fatal("draining: available to persisted clients only")
	}
	m.SetAdmin(Enabled)
	m.MaxConns = 2
	m.Acquire()
	m.Acquire()
	if m.Acquire() {
		t.Fatal("acquired past MaxConns")
	}
	if m.Available(now) {
		t.Fatal("a full member counts as down")
	}
	m.Release()
	if !m.Available(now) {
		t.Fatal("room again")
	}
}

func TestPassiveHealth(t *testing.T) {
	m := NewMember("p", "a", netip.MustParseAddrPort("10.0.0.1:80"), 1)
	now := time.Now()
	for i := 0; i < 2; i++ {
		if m.ConnectFailed(now, 3, time.Minute) {
			t.Fatalf("marked down after %d failures, before max_fails", i+1)
		}
	}
	if !m.Healthy(now) {
		t.Fatal("down early")
	}
	if !m.ConnectFailed(now, 3, time.Minute) {
		t.Fatal("third failure should mark down")
	}
	if m.Healthy(now.Add(59*time.Second)) || !m.Healthy(now.Add(61*time.Second)) {
		t.Fatal("down for fail_timeout, then tried again")
	}
	if got := m.PassiveDownUntil(now); !got.Equal(now.Add(time.Minute)) {
		t.Fatalf("PassiveDownUntil %v", got)
	}
	// The trial fails: down again at once (the count was not reset).
	later := now.Add(61 * time.Second)
	if !m.ConnectFailed(later, 3, time.Minute) || m.Healthy(later) {
		t.Fatal("a failed trial should mark down again")
	}
	m.ConnectSucceeded()
	if !m.Healthy(later) || m.ConsecutiveFailures() != 0 {
		t.Fatal("success should clear")
	}
	if m.ConnectFailed(later, 0, time.Minute) {
		t.Fatal("max_fails 0 turns passive health off")
	}
}

func TestPoolPickAcquiresAndLookup(t *testing.T) {
	ms := members(1, 1)
	ms[0].MaxConns = 1
	p, err := NewPool("p", RoundRobin, ms)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	got := make(chan *Member, 10)
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got <- p.Pick(pick(time.Now()))
		}()
	}
	wg.Wait()
	close(got)
	zero := 0
	for m := range got {
		if m == ms[0] {
			zero++
		}
	}
	if zero != 1 || ms[0].Conns() != 1 || ms[1].Conns() != 9 {
		t.Fatalf("MaxConns 1 must hold under concurrency: m0 got %d, conns %d/%d", zero, ms[0].Conns(), ms[1].Conns())
	}
	if p.Lookup(netip.MustParseAddrPort("10.0.0.2:80"), false) != ms[1] {
		t.Fatal("exact lookup")
	}
	if p.Lookup(netip.MustParseAddrPort("[::ffff:10.0.0.2]:80"), false) != ms[1] {
		t.Fatal("IPv4-mapped lookup")
	}
	if p.Lookup(netip.MustParseAddrPort("10.0.0.2:81"), false) != nil {
		t.Fatal("other port matched without anyPort")
	}
	if p.Lookup(netip.MustParseAddrPort("10.0.0.2:81"), true) != ms[1] || p.Lookup(netip.MustParseAddrPort("10.0.0.2:0"), false) != ms[1] {
		t.Fatal("address-only lookup")
	}
}
