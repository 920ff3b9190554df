package health

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/userspace/ids"
)

// flipServer is an HTTP member whose answer the test sets, and which logs
// every probe it receives.
type flipServer struct {
	mu   sync.Mutex
	code int
	hits []hit
	srv  *httptest.Server
	ap   netip.AddrPort
}

type hit struct {
	at   time.Time
	code int
}

func newFlipServer(t *testing.T, code int) *flipServer {
	t.Helper()
	f := &flipServer{code: code}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		c := f.code
		f.hits = append(f.hits, hit{time.Now(), c})
		f.mu.Unlock()
		w.WriteHeader(c)
	}))
	t.Cleanup(f.srv.Close)
	f.ap = netip.MustParseAddrPort(f.srv.Listener.Addr().String())
	return f
}

func (f *flipServer) set(code int) time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.code = code
	return time.Now()
}

// since returns the probes answered with code from t0 until before t1.
func (f *flipServer) since(t0, t1 time.Time, code int) []hit {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []hit
	for _, h := range f.hits {
		if !h.at.Before(t0) && h.at.Before(t1) && h.code == code {
			out = append(out, h)
		}
	}
	return out
}

func (f *flipServer) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.hits)
}

// flip makes srv answer code from now on (200: up, else down) and waits
// for the report of the change: exactly n probes with that code must have
// decided it, and the report must come within one interval of the last.
// It returns the report and those probes.
func flip(t *testing.T, srv *flipServer, rec *recorder, id ids.MemberRef, code, n int, interval time.Duration) (event, []hit) {
	t.Helper()
	up := code == 200
	from := len(rec.all())
	t0 := srv.set(code)
	ev := rec.wait(t, from, id, up, 2*time.Second)
	probes := srv.since(t0, ev.at, code)
	if len(probes) != n {
		t.Fatalf("went up=%v after %d probes answered %d, want exactly %d", up, len(probes), code, n)
	}
	if lag := ev.at.Sub(probes[n-1].at); lag > interval {
		t.Errorf("up=%v reported %v after the deciding probe, more than one interval (%v)", up, lag, interval)
	}
	return ev, probes
}

// TestRiseFall checks, probe by probe as the member sees them, that a member
// goes down on exactly the fall-th failed probe and up on exactly the
// rise-th good one, and that each change is reported within one interval of
// the probe that decided it.
func TestRiseFall(t *testing.T) {
	noLeaks(t)
	const interval = 100 * time.Millisecond
	const rise, fall = 2, 3
	srv := newFlipServer(t, 200)
	rec := newRecorder()
	c := NewChecker(rec, Options{})
	defer c.Close()
	id := ids.MemberRef{Pool: "web", Member: "m1"}
	if err := c.Update([]Target{target("web", "m1", srv.ap, mon(MonitorHTTP, interval, rise, fall))}); err != nil {
		t.Fatal(err)
	}

	// Starts up and stays up: nothing to report. The checker's status, not
	// the server's count, says when 3 probes are done: the server counts a
	// probe before the checker has read its answer.
	var st MemberStatus
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(interval / 2) {
		if st, _ = c.Member(id); st.ConsecutiveSuccesses >= 3 {
			break
		}
	}
	if ev := rec.all(); len(ev) != 0 {
		t.Fatalf("a healthy member was reported: %+v", ev)
	}
	if !st.Up || st.State != "up" || st.ConsecutiveSuccesses < 3 || st.ConsecutiveFailures != 0 || st.LastError != "" || st.LastProbe.IsZero() {
		t.Fatalf("status of a healthy member: %+v", st)
	}

	for round := range 2 {
		// Fail.
		down, bad := flip(t, srv, rec, id, 500, fall, interval)
		if span := down.at.Sub(bad[0].at); span < (fall-1)*interval*9/10 || span > (fall-1)*interval+slack {
			t.Errorf("round %d: %d failures took %v, want about %v", round, fall, span, (fall-1)*interval)
		}
		if !strings.Contains(down.reason, `http monitor "m-http": 3 consecutive failures, last: GET `) || !strings.Contains(down.reason, "status 500, expected 200-299") {
			t.Errorf("down reason: %q", down.reason)
		}
		st, _ = c.Member(id)
		if st.Up || st.State != "down" || st.ActiveUp || st.ConsecutiveFailures < fall || !strings.Contains(st.LastError, "status 500") || st.Reason != down.reason {
			t.Errorf("status of a down member: %+v", st)
		}

		// Recover.
		up, _ := flip(t, srv, rec, id, 200, rise, interval)
		if up.reason != `http monitor "m-http": 2 consecutive successes` {
			t.Errorf("up reason: %q", up.reason)
		}
		if ev := rec.all(); len(ev) != 2*(round+1) {
			t.Fatalf("round %d: want one report per change, got %+v", round, ev)
		}
	}
}

// TestFallBoundary: fall-1 failures and a success do not take a member down.
func TestFallBoundary(t *testing.T) {
	noLeaks(t)
	const interval = 80 * time.Millisecond
	srv := newFlipServer(t, 200)
	rec := newRecorder()
	c := NewChecker(rec, Options{})
	defer c.Close()
	if err := c.Update([]Target{target("web", "m1", srv.ap, mon(MonitorHTTP, interval, 1, 3))}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		t0 := srv.set(503)
		for len(srv.since(t0, time.Now().Add(time.Hour), 503)) < 2 {
			time.Sleep(2 * time.Millisecond)
		}
		srv.set(200)
		time.Sleep(interval * 2)
	}
	if ev := rec.all(); len(ev) != 0 {
		t.Fatalf("two failures in a row (fall 3) were reported: %+v", ev)
	}
}

// TestTCPMemberStopsAndComesBack stops a member's listener and starts it
// again on the same port.
func TestTCPMemberStopsAndComesBack(t *testing.T) {
	noLeaks(t)
	const interval = 100 * time.Millisecond
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ap := l.Addr().(*net.TCPAddr).AddrPort()
	rec := newRecorder()
	c := NewChecker(rec, Options{})
	defer c.Close()
	id := ids.MemberRef{Pool: "p", Member: "tcp1"}
	if err := c.Update([]Target{target("p", "tcp1", ap, mon(MonitorTCP, interval, 2, 2))}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * interval)
	stopped := time.Now()
	l.Close()
	down := rec.wait(t, 0, id, false, 2*time.Second)
	if d := down.at.Sub(stopped); d > 2*interval+slack {
		t.Errorf("down %v after the listener closed; fall 2 at %v should take at most about 2 intervals", d, interval)
	}
	if !strings.Contains(down.reason, "connect "+ap.String()+": connection refused") {
		t.Errorf("down reason %q", down.reason)
	}
	l, err = net.Listen("tcp", ap.String())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	started := time.Now()
	up := rec.wait(t, 1, id, true, 2*time.Second)
	if d := up.at.Sub(started); d < interval*9/10 || d > 2*interval+slack {
		t.Errorf("up %v after the listener came back; rise 2 at %v should take between 1 and 2 intervals", d, interval)
	}
}

// TestEveryTypeThroughChecker runs one healthy and one failing member of
// each type in one checker.
func TestEveryTypeThroughChecker(t *testing.T) {
	noLeaks(t)
	const interval = 200 * time.Millisecond
	okHTTP := newFlipServer(t, 200)
	badHTTP := newFlipServer(t, 500)
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("secure ok")) }))
	defer tlsSrv.Close()
	tcpOK := tcpServer(t, "tcp", "127.0.0.1:0", func(net.Conn) {})
	udpOK := udpServer(t, "127.0.0.1:0", func(b []byte) []byte { return b })
	udpSilent := udpServer(t, "[::1]:0", func([]byte) []byte { return nil })

	with := func(m Monitor, f func(*Monitor)) Monitor { f(&m); return m }
	udp := with(mon(MonitorUDP, interval, 1, 2), func(m *Monitor) { m.Send, m.Receive = "ping", "ping" })
	https := with(mon(MonitorHTTPS, interval, 1, 2), func(m *Monitor) { m.ResponseBody = "secure" })
	targets := []Target{
		target("p", "http-ok", okHTTP.ap, mon(MonitorHTTP, interval, 1, 2)),
		target("p", "http-bad", badHTTP.ap, mon(MonitorHTTP, interval, 1, 2)),
		target("p", "https-ok", netip.MustParseAddrPort(tlsSrv.Listener.Addr().String()), https),
		target("p", "https-bad", okHTTP.ap, https), // TLS to a plain server
		target("p", "tcp-ok", tcpOK, mon(MonitorTCP, interval, 1, 2)),
		target("p", "tcp-bad", closedPort(t, "tcp"), mon(MonitorTCP, interval, 1, 2)),
		target("p", "udp-ok", udpOK, udp),
		target("p", "udp-bad", udpSilent, udp),
	}
	if os.Geteuid() == 0 {
		targets = append(targets,
			Target{ID: ids.MemberRef{Pool: "p", Member: "icmp-ok4"}, Addr: netip.MustParseAddr("127.0.0.1"), Monitor: icmpMonitor(interval)},
			Target{ID: ids.MemberRef{Pool: "p", Member: "icmp-ok6"}, Addr: netip.MustParseAddr("::1"), Monitor: icmpMonitor(interval)},
		)
	}
	rec := newRecorder()
	c := NewChecker(rec, Options{})
	defer c.Close()
	if err := c.Update(targets); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"http-bad", "https-bad", "tcp-bad", "udp-bad"} {
		rec.wait(t, 0, ids.MemberRef{Pool: "p", Member: name}, false, 2*time.Second)
	}
	time.Sleep(2 * interval)
	for _, e := range rec.all() {
		if !strings.HasSuffix(e.id.Member, "-bad") || e.up {
			t.Errorf("unexpected report %+v", e)
		}
	}
	for _, st := range c.Status() {
		t.Logf("%-10s %-5s %s", st.Member, st.State, st.Reason)
		bad := strings.HasSuffix(st.Member, "-bad")
		if st.Up == bad || st.Probes < 2 || (st.LastError != "") != bad {
			t.Errorf("status %+v", st)
		}
	}
	if len(c.Status()) != len(targets) {
		t.Errorf("status lists %d members, want %d", len(c.Status()), len(targets))
	}
}

// TestUpdateKeepsState reconfigures a running checker.
func TestUpdateKeepsState(t *testing.T) {
	noLeaks(t)
	const interval = 80 * time.Millisecond
	good := newFlipServer(t, 200)
	bad := newFlipServer(t, 500)
	rec := newRecorder()
	c := NewChecker(rec, Options{})
	defer c.Close()
	a, b := ids.MemberRef{Pool: "web", Member: "a"}, ids.MemberRef{Pool: "web", Member: "b"}
	m := mon(MonitorHTTP, interval, 3, 2)
	if err := c.Update([]Target{target("web", "a", good.ap, m), target("web", "b", bad.ap, m)}); err != nil {
		t.Fatal(err)
	}
	rec.wait(t, 0, b, false, 2*time.Second)
	before, _ := c.Member(b)

	// A reload that changes the monitor's timing and adds a member: b stays
	// down with its counters, a stays up, c starts up.
	m2 := m
	m2.Interval, m2.Timeout = 2*interval, interval
	if err := c.Update([]Target{target("web", "a", good.ap, m2), target("web", "b", bad.ap, m2), target("web", "c", good.ap, m2)}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(4 * interval)
	if ev := rec.all(); len(ev) != 1 {
		t.Fatalf("the reload changed verdicts: %+v", ev)
	}
	after, _ := c.Member(b)
	if after.Up || after.ConsecutiveFailures <= before.ConsecutiveFailures || !after.Since.Equal(before.Since) || after.Reason != before.Reason {
		t.Errorf("b's state was reset by the reload:\nbefore %+v\nafter  %+v", before, after)
	}
	if st, ok := c.Member(ids.MemberRef{Pool: "web", Member: "c"}); !ok || !st.Up || st.Reason != "new member: starts up" {
		t.Errorf("new member c: %+v", st)
	}

	// Invalid updates change nothing.
	for _, bad := range [][]Target{
		{target("web", "a", good.ap, m), target("web", "a", good.ap, m)},
		{target("web", "a", netip.AddrPortFrom(good.ap.Addr(), 0), m)},
		{{ID: a, Monitor: m}},
		{target("web", "a", good.ap, Monitor{Name: "x", Type: "smtp"})},
	} {
		if err := c.Update(bad); err == nil {
			t.Errorf("Update(%+v) was accepted", bad)
		}
	}
	if n := len(c.Status()); n != 3 {
		t.Fatalf("a refused update changed the members: %d", n)
	}

	// b moves to a healthy address under the same name: same member, so it
	// needs rise successes to come back, and its counters restart.
	n := len(rec.all())
	moved := time.Now()
	if err := c.Update([]Target{target("web", "a", good.ap, m), target("web", "b", good.ap, m), target("web", "c", good.ap, m)}); err != nil {
		t.Fatal(err)
	}
	up := rec.wait(t, n, b, true, 2*time.Second)
	if d := up.at.Sub(moved); d < 2*interval*8/10 {
		t.Errorf("b came back after %v; rise 3 needs about 2 intervals", d)
	}

	// b goes down again, then is removed: it is reported up (no longer
	// monitored) and its probes stop.
	n = len(rec.all())
	if err := c.Update([]Target{target("web", "a", good.ap, m), target("web", "b", bad.ap, m)}); err != nil {
		t.Fatal(err)
	}
	rec.wait(t, n, b, false, 2*time.Second)
	n = len(rec.all())
	if err := c.Update([]Target{target("web", "a", good.ap, m)}); err != nil {
		t.Fatal(err)
	}
	gone := rec.wait(t, n, b, true, time.Second)
	if gone.reason != "no longer monitored" {
		t.Errorf("removed member's report: %q", gone.reason)
	}
	time.Sleep(interval) // a probe in flight may still land
	hits := bad.count()
	time.Sleep(3 * interval)
	if bad.count() != hits {
		t.Errorf("probes to a removed member continued")
	}
	if _, ok := c.Member(b); ok {
		t.Errorf("removed member still in the status")
	}
	if d := c.Down(); len(d) != 0 {
		t.Errorf("Down() = %v", d)
	}
}

// TestCloseStopsEverything closes a checker with probes in flight, passive
// timers pending and ICMP sockets open; every goroutine ends.
func TestCloseStopsEverything(t *testing.T) {
	noLeaks(t)
	const interval = 50 * time.Millisecond
	hold := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hold:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(hold)
	ok := newFlipServer(t, 200)
	silent := udpServer(t, "127.0.0.1:0", func([]byte) []byte { return nil })

	rec := newRecorder()
	c := NewChecker(rec, Options{})
	udp := mon(MonitorUDP, interval, 1, 1)
	udp.Send = "x"
	passive := Monitor{Name: "pass", Type: MonitorPassive, MaxFails: 1, FailTimeout: time.Hour}
	var targets []Target
	for i := range 10 {
		targets = append(targets,
			target("slow", string(rune('a'+i)), netip.MustParseAddrPort(slow.Listener.Addr().String()), mon(MonitorHTTP, interval, 1, 1)),
			target("ok", string(rune('a'+i)), ok.ap, mon(MonitorHTTP, interval, 1, 1)),
			target("udp", string(rune('a'+i)), silent, udp),
			target("passive", string(rune('a'+i)), ok.ap, passive),
		)
		if os.Geteuid() == 0 {
			targets = append(targets, Target{ID: ids.MemberRef{Pool: "icmp", Member: string(rune('a' + i))}, Addr: netip.MustParseAddr("::1"), Monitor: icmpMonitor(interval)})
		}
	}
	if err := c.Update(targets); err != nil {
		t.Fatal(err)
	}
	p := c.Passive()
	for i := range 10 {
		p.ConnectResult(ids.MemberRef{Pool: "passive", Member: string(rune('a' + i))}, ok.ap, errors.New("refused"))
	}
	time.Sleep(3 * interval)
	start := time.Now()
	c.Close()
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %v with probes in flight", d)
	}
	n := len(rec.all())
	c.Close() // idempotent
	if err := c.Update(targets); !errors.Is(err, ErrClosed) {
		t.Errorf("Update after Close: %v", err)
	}
	p.ConnectResult(ids.MemberRef{Pool: "passive", Member: "a"}, ok.ap, nil)
	time.Sleep(2 * interval)
	if len(rec.all()) != n {
		t.Errorf("reports after Close: %+v", rec.all()[n:])
	}
}

// TestSlowSinkDoesNotStallProbes: reports queue up behind a slow sink
// while probes and ConnectResult carry on.
func TestSlowSinkDoesNotStallProbes(t *testing.T) {
	noLeaks(t)
	release := make(chan struct{})
	var mu sync.Mutex
	var got []string
	sink := SinkFunc(func(id ids.MemberRef, up bool, _ string) {
		<-release
		mu.Lock()
		got = append(got, id.Member+"="+upDown(up))
		mu.Unlock()
	})
	c := NewChecker(sink, Options{})
	defer c.Close()
	passive := Monitor{Name: "pass", Type: MonitorPassive, MaxFails: 1, FailTimeout: time.Hour}
	ap := mustAddrPort(t, "127.0.0.1:1")
	if err := c.Update([]Target{target("p", "x", ap, passive), target("p", "y", ap, passive)}); err != nil {
		t.Fatal(err)
	}
	p := c.Passive()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, m := range []string{"x", "y"} {
			p.ConnectResult(ids.MemberRef{Pool: "p", Member: m}, ap, errors.New("boom"))
			p.ConnectResult(ids.MemberRef{Pool: "p", Member: m}, ap, nil)
		}
	}()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("ConnectResult blocked on a slow sink")
	}
	close(release)
	deadline := time.Now().Add(2 * time.Second)
	for {
		mu.Lock()
		s := strings.Join(got, " ")
		mu.Unlock()
		if s == "x=down x=up y=down y=up" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reports %q, want them all, in order", s)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
