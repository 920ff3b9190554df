package mirror

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// startPair starts two nodes that list each other and waits until they are
// in sync.
func startPair(t *testing.T, ca, cb Config, la, lb *memLocal) (*testNode, *testNode) {
	t.Helper()
	a, b := newTestNode(t, ca, la), newTestNode(t, cb, lb)
	a.addPeer(b.addr)
	b.addPeer(a.addr)
	a.run(t)
	b.run(t)
	a.waitUp(t, b.addr)
	b.waitUp(t, a.addr)
	return a, b
}

func TestTwoNodesMirrorBothWays(t *testing.T) {
	now := time.Now()
	a, b := startPair(t, testConfig(), testConfig(), nil, nil)

	e1 := a.local.set(entry("profile:sticky", "198.51.100.1", "10.0.1.11:8080", now))
	a.Publish(e1)
	eventually(t, 5*time.Second, func() bool { _, ok := b.local.get(e1.ID()); return ok }, "entry on b")

	e2 := b.local.set(entry("profile:web/vs:a", "2001:db8::7", "[2001:db8:1::2]:80", now))
	b.Publish(e2)
	eventually(t, 5*time.Second, func() bool { _, ok := a.local.get(e2.ID()); return ok }, "entry on a")

	// A deletion travels too.
	del := e1
	del.Op, del.Server, del.Updated = Delete, netip.AddrPort{}, now.Add(time.Second)
	a.Publish(a.local.set(del))
	eventually(t, 5*time.Second, func() bool { _, ok := b.local.get(e1.ID()); return !ok }, "deletion on b")

	// One connection between them, one status row on each side.
	sa, sb := a.Status(), b.Status()
	if len(sa) != 1 || len(sb) != 1 {
		t.Fatalf("want one peer on each side; a: %+v b: %+v", sa, sb)
	}
	if sa[0].Inbound == sb[0].Inbound {
		t.Errorf("both sides report the same direction (inbound=%v): two connections were kept", sa[0].Inbound)
	}
	if sa[0].Sent < 2 || sb[0].Received < 2 || sa[0].Received < 1 {
		t.Errorf("counters: a %+v, b %+v", sa[0], sb[0])
	}
	if !sa[0].Configured || sa[0].LastReceived.IsZero() || sa[0].Since.IsZero() {
		t.Errorf("status of a: %+v", sa[0])
	}
}

func TestBulkSyncOnConnectAndAfterRestart(t *testing.T) {
	now := time.Now()
	la := newMemLocal()
	for i := range 500 {
		la.set(entry("profile:sticky", clientN(i), "10.0.1.11:8080", now))
	}
	a := startNode(t, testConfig(), la)
	lb := newMemLocal()
	lb.set(entry("profile:sticky", "192.0.2.200", "10.0.1.12:8080", now))
	b := startNode(t, testConfig(a.addr), lb)
	eventually(t, 5*time.Second, func() bool { return b.local.len() == 501 }, "b's 500 + 1 entries on b, got %d", b.local.len())
	eventually(t, 5*time.Second, func() bool { return a.local.len() == 501 }, "b's entry on a, got %d", a.local.len())
	b.waitUp(t, a.addr)
	if got := a.status(t, "").Received; got != 1 {
		t.Errorf("a received %d entries from b's bulk sync, want 1", got)
	}

	// b goes away; a's table changes meanwhile.
	baddr := b.addr
	b.stop()
	// a does not list b, so b's row goes with its connection.
	eventually(t, 5*time.Second, func() bool { return len(a.Status()) == 0 }, "a forgets b")
	for i := 500; i < 600; i++ {
		a.Publish(la.set(entry("profile:sticky", clientN(i), "10.0.1.13:8080", now.Add(time.Second))))
	}
	moved := entry("profile:sticky", clientN(7), "10.0.1.13:8080", now.Add(2*time.Second))
	a.Publish(la.set(moved))

	// b comes back empty, on the same address, and gets the whole table.
	cfg := testConfig(a.addr)
	cfg.Listen = baddr
	b2 := restartOn(t, cfg)
	want := la.len()
	eventually(t, 5*time.Second, func() bool { return b2.local.len() == want }, "%d entries on the restarted b, got %d", want, b2.local.len())
	if e, _ := b2.local.get(moved.ID()); e.Server != moved.Server {
		t.Errorf("moved entry on b: %v, want server %v", e, moved.Server)
	}
	b2.waitUp(t, a.addr)
	// b2 sees a up first: a's side of the session leaves "syncing" once its
	// own bulk sync to b2 is through, a moment later.
	eventually(t, 5*time.Second, func() bool {
		st := a.Status()
		return len(st) == 1 && st[0].State == StateUp
	}, "a sees the restarted b up")
}

func TestListenOnlyNodeStreamsBack(t *testing.T) {
	now := time.Now()
	b := startNode(t, testConfig(), nil) // no peers: only accepts
	cfg := testConfig(b.addr)
	cfg.Listen = "" // a only dials
	a := startNode(t, cfg, nil)
	a.waitUp(t, b.addr)
	st := b.waitUp(t, "")
	if st.Configured || !st.Inbound {
		t.Errorf("b's row for a: %+v", st)
	}
	e := entry("profile:sticky", "198.51.100.9", "10.0.1.11:8080", now)
	b.Publish(b.local.set(e))
	eventually(t, 5*time.Second, func() bool { _, ok := a.local.get(e.ID()); return ok }, "b's entry on a")

	// When a leaves, b forgets it.
	a.stop()
	eventually(t, 5*time.Second, func() bool { return len(b.Status()) == 0 }, "b drops the row of an unconfigured peer that left: %+v", b.Status())
}

func TestTLSMirroring(t *testing.T) {
	ca := newTestCA(t, "limpet mirroring CA")
	a, b := startPair(t, tlsTestConfig(ca, ca.issue(t, "a")), tlsTestConfig(ca, ca.issue(t, "b")), nil, nil)
	e := entry("profile:sticky", "198.51.100.1", "10.0.1.11:8080", time.Now())
	a.Publish(a.local.set(e))
	eventually(t, 5*time.Second, func() bool { _, ok := b.local.get(e.ID()); return ok }, "entry on b over tls")
	if !strings.Contains(a.log.String(), "auth=tls") {
		t.Errorf("log does not say tls:\n%s", a.log)
	}
}

func TestIPv6Loopback(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	ln.Close()
	cb := testConfig()
	cb.Listen = "[::1]:0"
	b := startNode(t, cb, nil)
	ca := testConfig(b.addr)
	ca.Listen = "[::1]:0"
	a := startNode(t, ca, nil)
	e := entry("profile:sticky", "2001:db8::1", "[2001:db8::80]:443", time.Now())
	a.waitUp(t, b.addr)
	a.Publish(a.local.set(e))
	eventually(t, 5*time.Second, func() bool { _, ok := b.local.get(e.ID()); return ok }, "entry over ::1")
	// b matched a's connection to nothing configured, and shows its address.
	if st := b.status(t, ""); !strings.HasPrefix(st.Addr, "[::1]:") {
		t.Errorf("b's row: %+v", st)
	}
}

func TestScope(t *testing.T) {
	now := time.Now()
	ca, cb := testConfig(), testConfig()
	ca.Scope = func(table string) bool { return table != "profile:private" }
	cb.Scope = func(table string) bool { return table != "profile:notmine" }
	la := newMemLocal()
	la.set(entry("profile:private", "192.0.2.1", "10.0.0.1:1", now))  // never leaves a
	la.set(entry("profile:notmine", "192.0.2.2", "10.0.0.1:1", now))  // sent, b skips it
	la.set(entry("profile:mirrored", "192.0.2.3", "10.0.0.1:1", now)) // mirrored
	a, b := startPair(t, ca, cb, la, nil)
	eventually(t, 5*time.Second, func() bool { return b.local.len() == 1 }, "one entry on b")
	// (Both dial at once: the connection that loses may have carried a
	// bulk sync too, so count from here.)
	sentBefore, skippedBefore := a.status(t, "").Sent, b.status(t, "").Skipped
	if skippedBefore == 0 {
		t.Errorf("b did not skip the entry of profile:notmine in the bulk sync")
	}

	a.Publish(a.local.set(entry("profile:private", "192.0.2.4", "10.0.0.1:1", now)))
	a.Publish(a.local.set(entry("profile:notmine", "192.0.2.5", "10.0.0.1:1", now)))
	a.Publish(a.local.set(entry("profile:mirrored", "192.0.2.6", "10.0.0.1:1", now)))
	eventually(t, 5*time.Second, func() bool { return b.local.len() == 2 }, "second mirrored entry on b")
	eventually(t, 5*time.Second, func() bool { return b.status(t, "").Skipped == skippedBefore+1 }, "b to skip 1 more entry: %+v", b.Status())
	if s := a.status(t, ""); s.Sent != sentBefore+2 {
		t.Errorf("a sent %d entries, want 2 (1 mirrored, 1 that b skips): %+v", s.Sent-sentBefore, s)
	}
	for _, e := range []string{"profile:private", "profile:notmine"} {
		for k := range b.local.entries {
			if k.Table == e {
				t.Errorf("b holds an entry of %s", e)
			}
		}
	}

	// SetScope applies at once.
	a.SetScope(func(string) bool { return false })
	a.Publish(a.local.set(entry("profile:mirrored", "192.0.2.7", "10.0.0.1:1", now)))
	time.Sleep(100 * time.Millisecond)
	if b.local.len() != 2 {
		t.Errorf("an entry out of the new scope was mirrored")
	}
}

func TestModeMismatchRefused(t *testing.T) {
	b := startNode(t, testConfig(), nil)
	cfg := testConfig(b.addr)
	cfg.Mode = ActiveActive
	a := startNode(t, cfg, nil)
	a.log.wait(t, "mode mismatch", "peer="+b.addr)
	b.log.wait(t, "refused connection", "mode mismatch")
	if st := a.status(t, b.addr); st.State == StateUp {
		t.Errorf("a is up with a peer of another mode: %+v", st)
	}
}

func TestSelfConnectionRefused(t *testing.T) {
	a := newTestNode(t, testConfig(), nil)
	a.addPeer(a.addr)
	a.run(t)
	a.log.wait(t, "connected to itself")
}

func TestNewValidates(t *testing.T) {
	ok := testConfig("127.0.0.1:1")
	for name, mut := range map[string]func(c *Config){
		"no auth":       func(c *Config) { c.PSK = nil },
		"short key":     func(c *Config) { c.PSK = []byte("short") },
		"both auths":    func(c *Config) { c.TLS = &TLSAuth{} },
		"no mode":       func(c *Config) { c.Mode = 0 },
		"nothing to do": func(c *Config) { c.Listen, c.Peers = "", nil },
		"bad peer":      func(c *Config) { c.Peers = []string{"nowhere"} },
		"twice":         func(c *Config) { c.Peers = []string{"127.0.0.1:1", "127.0.0.1:1"} },
		"heartbeat":     func(c *Config) { c.HeartbeatTimeout = c.HeartbeatInterval },
	} {
		c := ok
		mut(&c)
		if _, err := New(c, newMemLocal(), nil); err == nil {
			t.Errorf("%s: New accepted %+v", name, c)
		}
	}
	if _, err := New(ok, nil, nil); err == nil {
		t.Errorf("New accepted a nil Local")
	}
	n, err := New(ok, newMemLocal(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := n.Run(ctx); err != nil {
		t.Errorf("Run: %v", err)
	}
	if err := n.Run(ctx); err == nil {
		t.Errorf("a second Run was accepted")
	}
}

func TestPublishInvalidIgnored(t *testing.T) {
	a, b := startPair(t, testConfig(), testConfig(), nil, nil)
	a.Publish(Entry{Table: "profile:x", Op: Upsert}) // no client, no server
	a.Publish(Entry{Table: "profile:x", Client: netip.MustParseAddr("192.0.2.1"), Op: Upsert})
	if a.InvalidPublished() != 2 {
		t.Errorf("invalid = %d, want 2", a.InvalidPublished())
	}
	good := entry("profile:x", "192.0.2.1", "10.0.0.1:80", time.Now())
	a.Publish(good)
	eventually(t, 5*time.Second, func() bool { return b.local.len() == 1 }, "the valid entry")
	if s := b.status(t, ""); s.Received != 1 {
		t.Errorf("b received %d entries, want only the valid one", s.Received)
	}
}

func TestApplyErrorsCounted(t *testing.T) {
	lb := newMemLocal()
	lb.failing = true
	a, b := startPair(t, testConfig(), testConfig(), nil, lb)
	a.Publish(entry("profile:x", "192.0.2.1", "10.0.0.1:80", time.Now()))
	eventually(t, 5*time.Second, func() bool { return b.status(t, "").ApplyErrors == 1 }, "an apply error on b")
	b.log.wait(t, "cannot apply a received entry", "is full")
	if s := b.status(t, ""); s.State != StateUp {
		t.Errorf("an apply error closed the connection: %+v", s)
	}
}

// TestSlowPeer: a peer that stops reading never blocks Publish; its queue
// stays bounded and drops are counted, while a healthy peer keeps up and
// is bulk synced again after its own queue overflowed.
func TestSlowPeer(t *testing.T) {
	cfg := testConfig()
	cfg.QueueSize = 500
	cfg.HeartbeatTimeout = 30 * time.Second // a blocked writer would show as a stuck Publish
	la := newMemLocal()
	a := startNode(t, cfg, la)
	cb := testConfig(a.addr)
	cb.Listen = ""
	b := startNode(t, cb, nil)
	b.waitUp(t, a.addr)

	slow := dialRaw(t, a.addr, testPSK)
	if tc, ok := slow.conn.(*net.TCPConn); ok {
		tc.SetReadBuffer(4096)
	}
	// The slow peer says its bulk sync is done and sends heartbeats, but
	// never reads.
	slow.send(t, encodeSyncBegin(nil))
	slow.send(t, encodeSyncEnd(nil, 0))
	var stopHB atomic.Bool
	go func() {
		for !stopHB.Load() {
			slow.fc.write(encodeHeartbeat(nil, time.Now()))
			slow.fc.flush()
			time.Sleep(50 * time.Millisecond)
		}
	}()
	defer stopHB.Store(true)
	eventually(t, 5*time.Second, func() bool { return len(a.Status()) == 2 }, "the slow peer's row")

	const total = 30000
	now := time.Now()
	start := time.Now()
	var worst time.Duration
	for i := range total {
		e := la.set(entry("profile:sticky", clientN(i), "10.0.1.11:8080", now))
		t0 := time.Now()
		a.Publish(e)
		worst = max(worst, time.Since(t0))
	}
	elapsed := time.Since(start)
	if elapsed > 10*time.Second {
		t.Errorf("publishing %d entries took %s", total, elapsed)
	}
	t.Logf("published %d entries in %s, slowest Publish %s", total, elapsed, worst)

	var slowSt PeerStatus
	for _, s := range a.Status() {
		if !s.Configured && s.Addr == slow.conn.LocalAddr().String() {
			slowSt = s
		}
	}
	if slowSt.Addr == "" {
		t.Fatalf("no row for the slow peer: %+v", a.Status())
	}
	if slowSt.QueueLen > cfg.QueueSize {
		t.Errorf("slow peer's queue holds %d entries, more than its bound %d", slowSt.QueueLen, cfg.QueueSize)
	}
	if slowSt.Dropped == 0 || slowSt.Dropped+uint64(slowSt.QueueLen)+slowSt.Sent < total {
		t.Errorf("slow peer: %+v; want drops counted", slowSt)
	}
	if slowSt.QueueLen > 0 && slowSt.Lag <= 0 {
		t.Errorf("slow peer has a queue but no lag: %+v", slowSt)
	}
	// The healthy peer ends up with every entry, by streaming and, if its
	// queue overflowed too, by a second bulk sync.
	eventually(t, 10*time.Second, func() bool { return b.local.len() == total }, "all %d entries on the healthy peer, got %d", total, b.local.len())
	for _, s := range a.Status() {
		if s.Addr != slowSt.Addr && s.Dropped > 0 {
			a.log.wait(t, "queue overflowed: bulk syncing it again", "peer="+s.Addr)
			t.Logf("the healthy peer dropped %d entries and was bulk synced again", s.Dropped)
		}
	}
}

// restartOn starts a node on the listen address of one that stopped,
// retrying for a while if the port is still taken.
func restartOn(t *testing.T, cfg Config) *testNode {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := New(cfg, newMemLocal(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err = n.Listen(); err == nil {
			n.ln.Close()
			n.ln = nil
			return startNode(t, cfg, nil)
		}
		if time.Now().After(deadline) {
			t.Fatalf("cannot listen on %s again: %v", cfg.Listen, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestClockOffsetReported(t *testing.T) {
	a := startNode(t, testConfig(), nil)
	p := dialRaw(t, a.addr, testPSK)
	p.send(t, encodeHeartbeat(nil, time.Now().Add(10*time.Second)))
	a.log.wait(t, "clock differs", "offset=")
	eventually(t, 5*time.Second, func() bool {
		o := a.status(t, "").ClockOffset
		return o > 9*time.Second && o <= 10*time.Second
	}, "a clock offset of about 10s: %+v", a.Status())
}

// TestRestartWithMutualPeers: two nodes that list each other; b restarts
// empty and gets the whole table back, and a keeps one connection to it.
func TestRestartWithMutualPeers(t *testing.T) {
	now := time.Now()
	la := newMemLocal()
	for i := range 200 {
		la.set(entry("profile:sticky", clientN(i), "10.0.1.11:8080", now))
	}
	a, b := startPair(t, testConfig(), testConfig(), la, nil)
	eventually(t, 5*time.Second, func() bool { return b.local.len() == 200 }, "200 entries on b")
	for round := range 3 {
		b.stop()
		cfg := testConfig(a.addr)
		cfg.Listen = b.addr
		b = restartOn(t, cfg)
		a.Publish(la.set(entry("profile:sticky", clientN(1000+round), "10.0.1.12:8080", now)))
		want := la.len()
		eventually(t, 5*time.Second, func() bool { return b.local.len() == want }, "round %d: %d entries on the restarted b, got %d", round, want, b.local.len())
		a.waitUp(t, b.addr)
		b.waitUp(t, a.addr)
		if st := a.Status(); len(st) != 1 {
			t.Errorf("round %d: a has %d rows: %+v", round, len(st), st)
		}
	}
}
