package health

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/userspace/ids"
)

var errRefused = errors.New("dial tcp 10.0.0.1:80: connect: connection refused")

func TestPassive(t *testing.T) {
	noLeaks(t)
	const hold = 200 * time.Millisecond
	rec := newRecorder()
	c := NewChecker(rec, Options{})
	defer c.Close()
	id := ids.MemberRef{Pool: "web", Member: "a"}
	ap := mustAddrPort(t, "10.0.0.1:80")
	passive := Monitor{Name: "conn-fails", Type: MonitorPassive, MaxFails: 3, FailTimeout: hold}
	active := mon(MonitorTCP, time.Hour, 1, 1) // never probes twice: max_fails 0
	if err := c.Update([]Target{target("web", "a", ap, passive), target("web", "b", ap, active)}); err != nil {
		t.Fatal(err)
	}
	p := c.Passive()

	// Failures that are not consecutive do not count.
	p.ConnectResult(id, ap, errRefused)
	p.ConnectResult(id, ap, errRefused)
	p.ConnectResult(id, ap, nil)
	p.ConnectResult(id, ap, errRefused)
	p.ConnectResult(id, ap, errRefused)
	time.Sleep(20 * time.Millisecond)
	if ev := rec.all(); len(ev) != 0 {
		t.Fatalf("non-consecutive failures took the member down: %+v", ev)
	}
	if st, _ := c.Member(id); st.PassiveFailures != 2 || !st.Up || st.PassiveLastError != errRefused.Error() {
		t.Fatalf("status %+v", st)
	}

	// The third in a row does; more failures while down do not extend the hold.
	p.ConnectResult(id, ap, errRefused)
	down := rec.wait(t, 0, id, false, time.Second)
	if !strings.Contains(down.reason, "passive: 3 consecutive connection failures, last to 10.0.0.1:80: dial tcp") {
		t.Errorf("down reason %q", down.reason)
	}
	st, _ := c.Member(id)
	if !st.PassiveDown || st.Up || st.PassiveDownUntil.IsZero() || !st.ActiveUp {
		t.Errorf("status while held down: %+v", st)
	}
	for range 5 {
		time.Sleep(hold / 10)
		p.ConnectResult(id, ap, errRefused)
	}
	up := rec.wait(t, 1, id, true, time.Second)
	if d := up.at.Sub(down.at); d < hold*9/10 || d > hold+slack {
		t.Errorf("back up %v after going down; fail_timeout is %v", d, hold)
	}
	if up.reason != "passive: held down for fail_timeout (200ms)" {
		t.Errorf("up reason %q", up.reason)
	}
	if st, _ := c.Member(id); st.PassiveFailures != 0 || st.PassiveDown {
		t.Errorf("the count should restart after the hold: %+v", st)
	}

	// Down again; a successful connection ends the hold at once.
	for range 3 {
		p.ConnectResult(id, ap, errRefused)
	}
	rec.wait(t, 2, id, false, time.Second)
	p.ConnectResult(id, ap, nil)
	up = rec.wait(t, 3, id, true, time.Second)
	if up.reason != "passive: a connection to 10.0.0.1:80 succeeded" {
		t.Errorf("up reason %q", up.reason)
	}

	// Members whose monitor has no max_fails, and unknown members, are ignored.
	for range 10 {
		p.ConnectResult(ids.MemberRef{Pool: "web", Member: "b"}, ap, errRefused)
		p.ConnectResult(ids.MemberRef{Pool: "web", Member: "nobody"}, ap, errRefused)
	}
	time.Sleep(20 * time.Millisecond)
	if ev := rec.all(); len(ev) != 4 {
		t.Errorf("reports %+v", ev)
	}
}

// TestPassiveWithActive: an active probe's success ends a passive hold, and a
// passive hold that expires does not bring up a member the active monitor
// holds down.
func TestPassiveWithActive(t *testing.T) {
	noLeaks(t)
	const interval = 100 * time.Millisecond
	tcpOK := tcpServer(t, "tcp", "127.0.0.1:0", func(net.Conn) {})
	refused := closedPort(t, "tcp")
	m := mon(MonitorTCP, interval, 2, 1)
	m.MaxFails, m.FailTimeout = 2, time.Hour
	m2 := m
	m2.FailTimeout = 150 * time.Millisecond
	rec := newRecorder()
	c := NewChecker(rec, Options{})
	defer c.Close()
	healthy, dead := ids.MemberRef{Pool: "p", Member: "healthy"}, ids.MemberRef{Pool: "p", Member: "dead"}
	if err := c.Update([]Target{target("p", "healthy", tcpOK, m), target("p", "dead", refused, m2)}); err != nil {
		t.Fatal(err)
	}
	p := c.Passive()

	rec.wait(t, 0, dead, false, time.Second) // fall 1
	time.Sleep(interval / 2)                 // between two probes of healthy
	p.ConnectResult(healthy, tcpOK, errRefused)
	p.ConnectResult(healthy, tcpOK, errRefused)
	down := rec.wait(t, 0, healthy, false, time.Second)
	up := rec.wait(t, 0, healthy, true, 2*time.Second)
	if d := up.at.Sub(down.at); d > interval+slack {
		t.Errorf("the next successful probe should end the hold within one interval; took %v", d)
	}
	if !strings.Contains(up.reason, `tcp monitor "m-tcp" succeeded, ending the passive monitor's hold`) {
		t.Errorf("up reason %q", up.reason)
	}

	// dead is down by its active monitor; a passive hold on it expires
	// without bringing it up.
	p.ConnectResult(dead, refused, errRefused)
	p.ConnectResult(dead, refused, errRefused)
	if st, _ := c.Member(dead); !st.PassiveDown {
		t.Errorf("dead should be held by passive too: %+v", st)
	}
	time.Sleep(300 * time.Millisecond)
	for _, e := range rec.all() {
		if e.id == dead && e.up {
			t.Errorf("a member the active monitor holds down was reported up: %+v", e)
		}
	}
	if st, _ := c.Member(dead); st.PassiveDown || st.Up {
		t.Errorf("status %+v", st)
	}
}
