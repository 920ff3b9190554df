package e2e_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/userspace/lab"
)

// TestPersistenceExpiresAfterLastConnection: with a 2 s timeout over real
// TCP, a client's entry starts counting down once its connections have
// closed, a new connection within the timeout keeps the member (and the
// entry), and once the timeout has run out the entry is deleted and the
// client is load balanced afresh: a new entry, younger than the wait, on
// the next member of the round robin.
func TestPersistenceExpiresAfterLastConnection(t *testing.T) {
	t.Parallel()
	const timeout = 2
	l := newLab(t, lab.Spec{MemberCount: memberCount, ClientAddrs4: 1, ClientAddrs6: 1})
	vss := []vsConf{{Name: "short", VIP: l.VIP4(), Port: 80, Protocol: "tcp", Forwarding: "nat", Persistence: "brief"}}
	cfg := writeConfig(t, l, 0.1, []profileConf{{"brief", timeout}}, vss)
	startLimpet(t, l, cfg)
	ctx := testCtx(t, 30*time.Second)
	src := l.ClientAddrs4()[0]
	url := lab.URL(netip.AddrPortFrom(l.VIP4(), 80), "/")

	get := func() string {
		t.Helper()
		r, err := l.Get(ctx, src, url)
		if err != nil {
			t.Fatal(err)
		}
		return r.Member
	}
	ce := clientEntry{t: t, ctx: ctx, l: l, vs: "short", src: src}
	e3, gone := ce.checkExpiry(get(), timeout, get)
	if limit := time.Since(gone).Seconds(); e3.AgeSeconds > limit+0.2 {
		t.Errorf("new entry is %.2fs old, but the old one went %.2fs ago: not a fresh entry", e3.AgeSeconds, limit)
	}
}

// clientEntry is one client's persistence entry in one virtual server, as
// the dump shows it.
type clientEntry struct {
	t   *testing.T
	ctx context.Context
	l   *lab.Lab
	vs  string
	src netip.Addr
}

// wait polls the dump until cond holds for the entry (nil if there is
// none) and returns it; it fails the test after limit.
func (c clientEntry) wait(what string, limit time.Duration, cond func(*entry) bool) *entry {
	c.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		var e *entry
		if got, ok := dump(c.t, c.ctx, c.l, c.vs)[c.src.String()]; ok {
			e = &got
		}
		if cond(e) {
			return e
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("after %v: client %s's entry is %v, want %s", limit, c.src, e, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func countingDown(e *entry) bool {
	return e != nil && e.Connections == 0 && e.State == "counting down" && e.ExpiresIn != nil
}

// checkExpiry follows the entry from the close of the client's last
// connection, which first served: it counts down with at most timeout
// seconds left; a connection within the timeout (get opens one and returns
// the member that answered) keeps the member and the entry (it only gets
// older); once the timeout has run out the entry goes, not before; and the
// next connection is balanced afresh, to the next member of the round
// robin (the client is the only one of the virtual server's own pool), with
// a new entry. It returns that entry and when the old one was seen gone.
func (c clientEntry) checkExpiry(first string, timeout int, get func() string) (*entry, time.Time) {
	t := c.t
	t.Helper()
	e1 := c.wait("counting down with no connections", 3*time.Second, countingDown)
	if e1.Member != first || *e1.ExpiresIn > float64(timeout) {
		t.Fatalf("entry after the last connection closed: %v, want member %s and at most %ds left", *e1, first, timeout)
	}

	// Within the timeout: same member, same entry.
	if m := get(); m != first {
		t.Fatalf("a connection within the timeout reached %s, want %s", m, first)
	}
	lastClose := time.Now()
	e2 := c.wait("counting down again", 3*time.Second, countingDown)
	if e2.Member != first || e2.AgeSeconds < e1.AgeSeconds {
		t.Fatalf("entry after the second connection: %v, want the same entry as %v", *e2, *e1)
	}

	// The countdown runs out: the entry goes, not before the timeout.
	c.wait("gone", time.Duration(timeout)*time.Second+3*time.Second, func(e *entry) bool { return e == nil })
	if waited := time.Since(lastClose); waited < time.Duration(timeout)*time.Second-300*time.Millisecond {
		t.Fatalf("the entry went %v after the client's last connection closed; the timeout is %ds", waited, timeout)
	}
	gone := time.Now()

	// Balanced afresh.
	second := get()
	if second == first {
		t.Errorf("after expiry the client went back to %s; round robin should pick the next member", first)
	}
	e3 := c.wait("a new entry", 3*time.Second, func(e *entry) bool { return e != nil })
	if e3.Member != second {
		t.Errorf("new entry names %s, but %s answered", e3.Member, second)
	}
	return e3, gone
}
