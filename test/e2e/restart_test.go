package e2e_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/userspace/lab"
)

// holdMS is how long the held requests stay open: long enough to span the
// kill and the daemonless checks, short enough to keep the suite fast.
const holdMS = 3000

// heldRequest is a GET /hold whose headers have arrived (the connection is
// established through the balancer) and whose body is still to come.
type heldRequest struct {
	src    netip.Addr
	member string // from the headers
	done   chan struct{}
	body   string
	err    error
	at     time.Time // when the body was complete
}

func startHold(ctx context.Context, l *lab.Lab, src netip.Addr, dst netip.AddrPort) (*heldRequest, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, lab.URL(dst, fmt.Sprintf("/hold?ms=%d", holdMS)), nil)
	if err != nil {
		return nil, err
	}
	resp, err := l.HTTPClient(src).Do(req) // returns once the headers are in
	if err != nil {
		return nil, fmt.Errorf("client %s: GET /hold: %w", src, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("client %s: GET /hold: status %d", src, resp.StatusCode)
	}
	h := &heldRequest{src: src, member: resp.Header.Get(lab.HeaderMember), done: make(chan struct{})}
	go func() {
		defer close(h.done)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		h.body, h.err, h.at = string(b), err, time.Now()
	}()
	return h, nil
}

// serverMap is client -> persisted server, as the dump shows it.
func serverMap(entries map[string]entry) map[string]string {
	m := map[string]string{}
	for c, e := range entries {
		m[c] = e.Server
	}
	return m
}

func diffServerMaps(before, after map[string]string) []string {
	var d []string
	for c, s := range before {
		if a, ok := after[c]; !ok {
			d = append(d, fmt.Sprintf("%s: lost (was %s)", c, s))
		} else if a != s {
			d = append(d, fmt.Sprintf("%s: %s -> %s", c, s, a))
		}
	}
	for c, a := range after {
		if _, ok := before[c]; !ok {
			d = append(d, fmt.Sprintf("%s: new entry %s", c, a))
		}
	}
	return d
}

// TestKillDaemonKeepsTrafficAndState: SIGKILL `limpet run` while clients
// hold connections open through the balancer. The pinned datapath must go
// on forwarding with no daemon: the held requests complete, and new
// connections of every persisted client reach its member. A new
// `limpet run` must adopt the pinned state (and say so), and the persistence
// table must be exactly what it was before the kill: the same clients on the
// same servers, the same entries (their ages kept growing, none was
// recreated), zero lost.
func TestKillDaemonKeepsTrafficAndState(t *testing.T) {
	t.Parallel()
	l := newLab(t, lab.Spec{MemberCount: memberCount, ClientAddrs4: clientCount, ClientAddrs6: 8})
	vss := []vsConf{
		{Name: "web4", VIP: l.VIP4(), Port: 80, Protocol: "tcp", Forwarding: "nat", Persistence: "sticky"},
		{Name: "web6", VIP: l.VIP6(), Port: 80, Protocol: "tcp", Forwarding: "nat", Persistence: "sticky"},
	}
	cfg := writeConfig(t, l, 0.2, []profileConf{{"sticky", 300}}, vss)
	p1 := startLimpet(t, l, cfg)
	ctx := testCtx(t, 45*time.Second)

	vipOf := func(src netip.Addr) netip.AddrPort {
		if src.Is6() {
			return netip.AddrPortFrom(l.VIP6(), 80)
		}
		return netip.AddrPortFrom(l.VIP4(), 80)
	}
	clients := append(l.ClientAddrs4(), l.ClientAddrs6()...)
	// get checks that every client reaches the member it had before.
	getAll := func(phase string, want assignment) assignment {
		t.Helper()
		got := safeAssignment{a: assignment{}}
		err := forEach(clients, func(src netip.Addr) error {
			r, err := l.Get(ctx, src, lab.URL(vipOf(src), "/"))
			if err != nil {
				return fmt.Errorf("%s: client %s: %w", phase, src, err)
			}
			if r.Status != http.StatusOK || r.Peer.Addr() != src {
				return fmt.Errorf("%s: client %s: status %d, member %s saw %s", phase, src, r.Status, r.Member, r.Peer)
			}
			if want != nil && r.Member != want[src] {
				return fmt.Errorf("%s: client %s reached %s, want its persisted member %s", phase, src, r.Member, want[src])
			}
			got.set(src, r.Member)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return got.a
	}

	// 1. Every client gets persisted to a member.
	assigned := getAll("before the kill", nil)
	checkSpread(t, l, assigned)

	// 2. Some clients (both families) open connections that stay open.
	var held []*heldRequest
	for _, src := range []netip.Addr{clients[0], clients[1], clients[2], clients[3], clients[len(clients)-1], clients[len(clients)-2]} {
		h, err := startHold(ctx, l, src, vipOf(src))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { <-h.done })
		if h.member != assigned[src] {
			t.Errorf("client %s: held connection reached %s, want its persisted member %s", src, h.member, assigned[src])
		}
		held = append(held, h)
	}

	// 3. The table before the kill: one entry per client, and the holders'
	// entries are held by their open connection.
	beforeStart := time.Now()
	before := dump(t, ctx, l, "")
	beforeEnd := time.Now()
	checkDump(t, l, "web4", filterVS(before, "web4"), only(assigned, false))
	checkDump(t, l, "web6", filterVS(before, "web6"), only(assigned, true))
	for _, h := range held {
		e := before[h.src.String()]
		if e.Connections < 1 || e.State != "held" {
			t.Errorf("client %s holds a connection, but its entry has %d connections, state %q", h.src, e.Connections, e.State)
		}
	}

	// 4. SIGKILL: no chance to clean up anything.
	if err := p1.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p1.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("limpet run did not die on SIGKILL")
	}
	killedAt := time.Now()
	if err := p1.Wait(ctx); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("limpet run exit: %v, want killed by SIGKILL", err)
	}

	// 5. No daemon: new connections of every client reach its member...
	getAll("no daemon", assigned)
	// ...the held requests complete, after the kill, from their member...
	var wg sync.WaitGroup
	for _, h := range held {
		wg.Go(func() {
			select {
			case <-h.done:
			case <-ctx.Done():
				t.Errorf("client %s: held request never completed", h.src)
				return
			}
			if h.err != nil {
				t.Errorf("client %s: held request: %v (body %q)", h.src, h.err, h.body)
				return
			}
			r, err := lab.ParseReply(h.body)
			if err != nil {
				t.Errorf("client %s: held request: %v", h.src, err)
				return
			}
			if r.Member != assigned[h.src] || r.Peer.Addr() != h.src {
				t.Errorf("client %s: held request answered by %s (peer %s), want %s", h.src, r.Member, r.Peer, assigned[h.src])
			}
			if !h.at.After(killedAt) {
				t.Errorf("client %s: held request completed at %v, before the kill at %v: it proves nothing", h.src, h.at, killedAt)
			}
		})
	}
	wg.Wait()
	// ...and the tables are still readable and unchanged.
	if d := diffServerMaps(serverMap(before), serverMap(dump(t, ctx, l, ""))); len(d) > 0 {
		t.Errorf("with no daemon, the persistence table changed: %v", d)
	}
	if t.Failed() {
		t.FailNow()
	}

	// 6. A new daemon adopts the pinned datapath.
	p2 := startLimpet(t, l, cfg)
	if !strings.Contains(p2.Output(), "adopted pinned datapath") {
		t.Errorf("the new limpet run did not adopt the pinned datapath:\n%s", p2.Output())
	}
	if strings.Contains(p2.Output(), "loaded datapath") {
		t.Errorf("the new limpet run loaded a fresh datapath:\n%s", p2.Output())
	}

	// 7. Zero entries lost: the same clients on the same servers, and the
	// same entries (an entry's age grew by the time that passed; a
	// recreated one would be younger).
	afterStart := time.Now()
	after := dump(t, ctx, l, "")
	afterEnd := time.Now()
	if len(after) != len(before) || len(before) != len(clients) {
		t.Errorf("entries: %d before the kill, %d after adoption, want %d", len(before), len(after), len(clients))
	}
	if d := diffServerMaps(serverMap(before), serverMap(after)); len(d) > 0 {
		t.Errorf("persistence table changed across the kill and adoption: %v", d)
	}
	// Each dump read the clock somewhere between its start and end, so the
	// age of an entry that survived grew by at least minGrowth and at most
	// maxGrowth (plus a little for the two clocks' granularity).
	const slack = 0.05
	minGrowth := afterStart.Sub(beforeEnd).Seconds() - slack
	maxGrowth := afterEnd.Sub(beforeStart).Seconds() + slack
	for c, b := range before {
		a, ok := after[c]
		if !ok {
			continue
		}
		if grew := a.AgeSeconds - b.AgeSeconds; grew < minGrowth || grew > maxGrowth {
			t.Errorf("client %s: entry age %.3fs -> %.3fs, grew %.3fs, want %.3f..%.3fs: not the same entry",
				c, b.AgeSeconds, a.AgeSeconds, grew, minGrowth, maxGrowth)
		}
		if a.Member != b.Member || a.VirtualServer != b.VirtualServer {
			t.Errorf("client %s: entry %s/%s -> %s/%s", c, b.VirtualServer, b.Member, a.VirtualServer, a.Member)
		}
	}

	// 8. And under the new daemon every client still reaches its member.
	getAll("after adoption", assigned)
	if d := diffServerMaps(serverMap(before), serverMap(dump(t, ctx, l, ""))); len(d) > 0 {
		t.Errorf("after adoption and more traffic, the persistence table changed: %v", d)
	}
}

func filterVS(entries map[string]entry, vs string) map[string]entry {
	out := map[string]entry{}
	for c, e := range entries {
		if e.VirtualServer == vs {
			out[c] = e
		}
	}
	return out
}

func only(a assignment, v6 bool) assignment {
	out := assignment{}
	for src, m := range a {
		if src.Is6() == v6 {
			out[src] = m
		}
	}
	return out
}
