package mirror

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/test/testutil"
)

// memLocal is an in-memory Local that keeps the newer version of each entry.
type memLocal struct {
	mu      sync.Mutex
	entries map[EntryKey]Entry
	applied int
	deleted map[EntryKey]Entry // tombstones, for newer-wins against deletions
	failing bool
}

func newMemLocal() *memLocal {
	return &memLocal{entries: map[EntryKey]Entry{}, deleted: map[EntryKey]Entry{}}
}

func (m *memLocal) Snapshot(ctx context.Context) ([]Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Entry, 0, len(m.entries))
	for _, e := range m.entries {
		out = append(out, e)
	}
	return out, nil
}

func (m *memLocal) Apply(e Entry) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failing {
		return fmt.Errorf("table %s is full", e.Table)
	}
	m.applied++
	m.put(e)
	return nil
}

func (m *memLocal) put(e Entry) {
	k := e.ID()
	cur, ok := m.entries[k]
	if !ok {
		cur, ok = m.deleted[k]
	}
	if ok && !Newer(e, cur) {
		return
	}
	if e.Op == Delete {
		delete(m.entries, k)
		m.deleted[k] = e
		return
	}
	delete(m.deleted, k)
	m.entries[k] = e
}

// set records a local change and returns it, for Publish.
func (m *memLocal) set(e Entry) Entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.put(e)
	return e
}

func (m *memLocal) len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.entries)
}

func (m *memLocal) get(k EntryKey) (Entry, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[k]
	return e, ok
}

func (m *memLocal) appliedCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.applied
}

// logBuf captures a node's log.
type logBuf struct{ testutil.Buffer }

func (l *logBuf) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// lines returns the log lines holding every one of subs.
func (l *logBuf) lines(subs ...string) []string {
	var out []string
	for _, line := range strings.Split(l.String(), "\n") {
		ok := line != ""
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

func (l *logBuf) wait(t *testing.T, subs ...string) string {
	t.Helper()
	var got []string
	eventually(t, 5*time.Second, func() bool {
		got = l.lines(subs...)
		return len(got) > 0
	}, "a log line with %q; log:\n%s", subs, l)
	return got[0]
}

func eventually(t *testing.T, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for "+format, args...)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var testPSK = []byte("0123456789abcdef0123456789abcdef-test-key")

func testConfig(peers ...string) Config {
	return Config{
		Listen:            "127.0.0.1:0",
		Peers:             peers,
		Mode:              ActiveStandby,
		PSK:               testPSK,
		ReconnectMin:      20 * time.Millisecond,
		ReconnectMax:      200 * time.Millisecond,
		HeartbeatInterval: 100 * time.Millisecond,
		HeartbeatTimeout:  time.Second,
		HandshakeTimeout:  2 * time.Second,
		ResyncInterval:    100 * time.Millisecond,
	}
}

// testNode is a running Node.
type testNode struct {
	*Node
	local *memLocal
	log   *logBuf
	addr  string
	stop  func()
}

// startNode starts a node; cfg.Listen "" skips listening.
func startNode(t *testing.T, cfg Config, local *memLocal) *testNode {
	t.Helper()
	tn := newTestNode(t, cfg, local)
	tn.run(t)
	return tn
}

// newTestNode makes a node and binds its listener, without running it.
func newTestNode(t *testing.T, cfg Config, local *memLocal) *testNode {
	t.Helper()
	if local == nil {
		local = newMemLocal()
	}
	lb := &logBuf{}
	n, err := New(cfg, local, lb.logger())
	if err != nil {
		t.Fatal(err)
	}
	tn := &testNode{Node: n, local: local, log: lb, stop: func() {}}
	if cfg.Listen != "" {
		a, err := n.Listen()
		if err != nil {
			t.Fatal(err)
		}
		tn.addr = a.String()
	}
	return tn
}

// addPeer adds a configured peer to a node that does not run yet, for
// tests where two nodes list each other's port 0 listeners.
func (tn *testNode) addPeer(addr string) {
	tn.cfg.Peers = append(tn.cfg.Peers, addr)
	tn.rows = append(tn.rows, &row{addr: addr, configured: true, state: StateConnecting, since: time.Now(), changed: make(chan struct{})})
}

func (tn *testNode) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tn.Run(ctx) }()
	var once sync.Once
	tn.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("Run did not return after cancel")
			}
		})
	}
	t.Cleanup(tn.stop)
}

// status returns the status row of addr (or the only row when addr is "").
func (tn *testNode) status(t *testing.T, addr string) PeerStatus {
	t.Helper()
	st := tn.Status()
	for _, s := range st {
		if addr == "" && len(st) == 1 || s.Addr == addr {
			return s
		}
	}
	return PeerStatus{}
}

func (tn *testNode) waitUp(t *testing.T, addr string) PeerStatus {
	t.Helper()
	var s PeerStatus
	eventually(t, 5*time.Second, func() bool {
		s = tn.status(t, addr)
		return s.State == StateUp
	}, "peer %q up; status %+v; log:\n%s", addr, tn.Status(), tn.log)
	return s
}

func entry(table string, client string, server string, at time.Time) Entry {
	return Entry{
		Table: table, Client: netip.MustParseAddr(client), Server: netip.MustParseAddrPort(server),
		Op: Upsert, Created: at, Updated: at,
	}
}

func clientN(i int) string {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).String()
}

// rawPeer is a hand-driven peer speaking the protocol, for tests that need
// to misbehave after authenticating.
type rawPeer struct {
	conn net.Conn
	fc   *frameConn
}

func dialRaw(t *testing.T, addr string, psk []byte) *rawPeer {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	var id [8]byte
	rand.Read(id[:])
	h, _ := newHello(authPSK, ActiveStandby, uint64(id[0])<<56|uint64(id[1])<<48|uint64(id[2]), "")
	_, fc, err := handshakePSK(conn, bufio.NewReader(conn), psk, h, true)
	if err != nil {
		t.Fatalf("raw handshake: %v", err)
	}
	conn.SetDeadline(time.Time{})
	return &rawPeer{conn: conn, fc: fc}
}

func (p *rawPeer) send(t *testing.T, payload []byte) {
	t.Helper()
	if err := p.fc.write(payload); err != nil {
		t.Fatal(err)
	}
	if err := p.fc.flush(); err != nil {
		t.Fatal(err)
	}
}

// waitClosed reads until the node closes the connection.
func waitClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64<<10)
	for {
		if _, err := c.Read(buf); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("the node did not close the connection")
			}
			return
		}
	}
}

// testCA is a CA that signs peer certificates for tests.
type testCA struct{ *testutil.CA }

func newTestCA(t testing.TB, name string) *testCA { return &testCA{testutil.NewCA(t, name)} }

func (ca *testCA) issue(t testing.TB, name string) tls.Certificate {
	t.Helper()
	return ca.Issue(t, name, testutil.PeerUsages, "127.0.0.1")
}

func tlsTestConfig(ca *testCA, cert tls.Certificate, peers ...string) Config {
	c := testConfig(peers...)
	c.PSK = nil
	c.TLS = &TLSAuth{CA: ca.Pool, Certificate: cert}
	return c
}
