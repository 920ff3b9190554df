package e2e_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/test/testutil"
	"github.com/limpet-lb/limpet/userspace/lab"
)

// Routing: BIRD learns the VIP from all three nodes and installs a 3-way
// multipath route; a node whose members are all out of service withdraws
// and BIRD drops it from the route; a pool whose members all fail their
// health checks takes the VIP off every node; all of it comes back.
// Persistence: 200 clients x 5 concurrent connections spread by ECMP over
// the nodes, every client on one member.
func TestClusterRoutingAndPersistence(t *testing.T) {
	t.Parallel()
	const n = 200
	c := newCluster(t, clusterOpts{clients: n})
	ctx := testCtx(t, 3*time.Minute)
	took := c.waitNexthops(ctx, 3, "all three nodes announce")
	nh := c.nexthops()
	for i := range 3 {
		if !slices.Contains(nh, c.nodeAddr(i)) {
			t.Fatalf("next hops %v lack node %d (%s)", nh, i, c.nodeAddr(i))
		}
	}
	t.Logf("BIRD installed a 3-way multipath route %s via %v (%.1fs after the nodes attached)", c.prefix, nh, took.Seconds())
	out, err := c.router.BIRDC(ctx, "show", "route", "for", c.prefix.String(), "all")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(out, "BGP.as_path: 65001") != 3 {
		t.Fatalf("BIRD should hold one path from each node:\n%s", out)
	}
	st := c.status(0)
	if len(st.BGP.Sessions) != 1 || st.BGP.Sessions[0].State != "established" || st.BGP.Sessions[0].PrefixesSent != 1 {
		t.Fatalf("node 0 status: sessions %+v", st.BGP.Sessions)
	}
	if len(st.BGP.Announcements) != 1 || !st.BGP.Announcements[0].Announced || st.BGP.Announcements[0].Reason != "announced" {
		t.Fatalf("node 0 status: announcements %+v", st.BGP.Announcements)
	}
	if !st.Cluster.Synced || st.Cluster.PeersUp != 2 {
		t.Fatalf("node 0 cluster view: %+v", st.Cluster)
	}

	// 200 clients, 5 concurrent connections each.
	clients := c.l.ClientAddrs4()[:n]
	got, err := c.persistAll(ctx, clients, 5)
	if err != nil {
		t.Fatal(err)
	}
	one := 0
	per := map[string]int{}
	for _, src := range clients {
		if len(got[src]) == 1 {
			one++
			for m := range got[src] {
				per[m]++
			}
		} else {
			t.Errorf("client %s reached %v", src, got[src])
		}
	}
	conns := c.newConns(t)
	t.Logf("persistence: %d of %d clients reached one member on all 5 connections; members %v; new connections per node %v", one, n, per, conns)
	if float64(one) < 0.999*n {
		t.Fatalf("only %d of %d clients stayed on one member", one, n)
	}
	for i, k := range conns {
		if k == 0 {
			t.Fatalf("node %d got no connection: ECMP did not spread (%v)", i, conns)
		}
	}

	// Node 1's members all out of service there (an operator disables
	// them): it withdraws, BIRD keeps the two others.
	for _, m := range c.l.Members() {
		if out, err := c.cli(1, "member", "disable", "web", m.Name); err != nil {
			t.Fatalf("member disable: %v %s", err, out)
		}
	}
	took = c.waitNexthops(ctx, 2, "node 1 withdraws")
	if slices.Contains(c.nexthops(), c.nodeAddr(1)) {
		t.Fatalf("node 1 is still a next hop: %v", c.nexthops())
	}
	if a := c.status(1).BGP.Announcements[0]; a.Announced || a.Reason != "no_member_in_service" {
		t.Fatalf("node 1 announcement: %+v", a)
	}
	t.Logf("members disabled on node 1: withdrawn, route 2-way after %.2fs", took.Seconds())
	for _, m := range c.l.Members() {
		if out, err := c.cli(1, "member", "enable", "web", m.Name); err != nil {
			t.Fatalf("member enable: %v %s", err, out)
		}
	}
	c.waitNexthops(ctx, 3, "node 1 announces again")

	// Every member fails its health checks: every node withdraws.
	for _, m := range c.l.Members() {
		if err := c.l.StopHTTP(m.Name); err != nil {
			t.Fatal(err)
		}
	}
	took = c.waitNexthops(ctx, 0, "every node withdraws when no member is healthy")
	t.Logf("all members down: route removed after %.2fs (monitor interval 0.2s, fall 2)", took.Seconds())
	for _, m := range c.l.Members() {
		if err := c.l.StartHTTP(m.Name); err != nil {
			t.Fatal(err)
		}
	}
	took = c.waitNexthops(ctx, 3, "members healthy again")
	t.Logf("members back: route 3-way again after %.2fs (rise 2 and damping 1s)", took.Seconds())
	if ch := c.status(2).BGP.Announcements[0].Changes; ch < 2 {
		t.Fatalf("node 2 counted %d announcement changes", ch)
	}
}

// memberOf returns the one member each client reached (clients split over
// several members are left out).
func memberOf(got map[netip.Addr]map[string]int) map[netip.Addr]string {
	out := map[netip.Addr]string{}
	for src, ms := range got {
		if len(ms) == 1 {
			for m := range ms {
				out[src] = m
			}
		}
	}
	return out
}

// waitTables waits until every running node's table holds n entries.
func (c *cluster) waitTables(ctx context.Context, n int, nodes ...int) {
	c.t.Helper()
	waitFor(c.t, ctx, fmt.Sprintf("every node to hold %d mirrored entries", n), func() bool {
		for _, i := range nodes {
			out, err := osexec(limpetBin(c.t), "--pin-path", c.pins[i], "persistence", "dump", "-o", "json")
			if err != nil || len(parseDump(c.t, out)) != n {
				return false
			}
		}
		return true
	})
}

// dumps reads every node's persistence table, keyed by client.
func (c *cluster) dumps() []map[string]entry {
	c.t.Helper()
	out := make([]map[string]entry, len(c.pins))
	for i := range c.pins {
		b, err := osexec(limpetBin(c.t), "--pin-path", c.pins[i], "persistence", "dump", "-o", "json")
		if err != nil {
			c.t.Fatalf("persistence dump of node %d: %v\n%s", i, err, b)
		}
		out[i] = parseDump(c.t, b)
	}
	return out
}

// disagreeing lists the clients whose entries name different servers on
// different nodes (or are missing on some), with every node's entry.
func disagreeing(dumps []map[string]entry, clients []netip.Addr) []string {
	var out []string
	for _, src := range clients {
		k := src.String()
		e0, ok0 := dumps[0][k]
		same := ok0
		for _, d := range dumps[1:] {
			if e, ok := d[k]; !ok || e.Server != e0.Server {
				same = false
			}
		}
		if !same {
			line := k + ":"
			for i, d := range dumps {
				line += fmt.Sprintf(" node %d %v;", i, d[k])
			}
			out = append(out, line)
		}
	}
	return out
}

// keepRate checks, client by client, that the clients keep their member.
func keepRate(t *testing.T, before, after map[netip.Addr]map[string]int) (kept int) {
	t.Helper()
	b := memberOf(before)
	for src, want := range b {
		ms := after[src]
		if len(ms) == 1 && ms[want] > 0 {
			kept++
		} else {
			t.Logf("client %s: had %s, now reaches %v", src, want, ms)
		}
	}
	return kept
}

// A node dies: its daemon is SIGKILLed (the kernel closes its BGP session at
// once), or its front link is cut (the router hears nothing and waits for
// the hold timer, 3 s). Clients keep their members through the mirrored
// tables and the Maglev choice every node shares.
func TestClusterNodeFailure(t *testing.T) {
	for _, mode := range []string{"sigkill", "link_cut"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			const n = 200
			c := newCluster(t, clusterOpts{clients: n})
			ctx := testCtx(t, 3*time.Minute)
			c.waitNexthops(ctx, 3, "all three nodes announce")
			clients := c.l.ClientAddrs4()[:n]
			before, err := c.persistAll(ctx, clients, 5)
			if err != nil {
				t.Fatal(err)
			}
			if len(memberOf(before)) != n {
				t.Fatalf("%d of %d clients on one member before the failure", len(memberOf(before)), n)
			}
			c.waitTables(ctx, n, 0, 1, 2)
			ld := c.startLoad(ctx, clients, memberOf(before))
			time.Sleep(500 * time.Millisecond)
			okBefore, badBefore := ld.OK.Load(), ld.Bad.Load()
			t0 := time.Now()
			switch mode {
			case "sigkill":
				if err := c.proc[2].Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
			case "link_cut":
				if err := c.l.SetFrontLink(2, false); err != nil {
					t.Fatal(err)
				}
			}
			c.waitNexthops(ctx, 2, "the router drops the dead node")
			conv := time.Since(t0)
			time.Sleep(3 * time.Second) // requests held by SYN retransmits finish
			ld.Stop()
			if badBefore != 0 {
				t.Fatalf("%d requests failed before the failure: %v", badBefore, ld.Errors())
			}
			after, err := c.persistAll(ctx, clients, 5)
			if err != nil {
				t.Fatal(err)
			}
			kept := keepRate(t, before, after)
			failed, slow, total := ld.Bad.Load()-badBefore, ld.Slow.Load(), ld.OK.Load()+ld.Bad.Load()-okBefore-badBefore
			t.Logf("%s of node 2: BGP converged in %.2fs (%s); from the failure to 3s after convergence: %d requests (each a new connection), %d failed, %d took over 1s (their SYN went to the dead node and was retransmitted); "+
				"%d of %d clients kept their member afterwards; the load saw %d clients reach another member",
				mode, conv.Seconds(), map[string]string{"sigkill": "the kernel closed the dead daemon's TCP session, BIRD withdrew at once",
					"link_cut": "BIRD's hold timer, 3s"}[mode], total, failed, slow, kept, n, len(ld.Moved()))
			if float64(kept) < 0.999*n {
				t.Fatalf("only %d of %d clients kept their member", kept, n)
			}
			if mode == "link_cut" && (conv < 1500*time.Millisecond || conv > 6*time.Second) {
				t.Fatalf("convergence %s after a link cut: want about the 3s hold time", conv)
			}
			if mode == "sigkill" && conv > 2*time.Second {
				t.Fatalf("convergence %s after SIGKILL: the session should close at once", conv)
			}
			if mode == "sigkill" && failed > 0 {
				t.Fatalf("%d requests failed although the killed node's datapath kept forwarding until the withdrawal: %v", failed, ld.Errors())
			}
			if mode == "link_cut" && slow == 0 {
				t.Fatal("no request was held up by the cut link: the cut did not take the node out of the path")
			}
		})
	}
}

// Graceful drain: limpet drain withdraws node 1 while load runs, and SIGTERM
// makes node 2 withdraw and serve for its shutdown grace before it exits:
// no request fails.
func TestClusterDrain(t *testing.T) {
	t.Parallel()
	const n = 150
	c := newCluster(t, clusterOpts{clients: n, grace: 2})
	ctx := testCtx(t, 3*time.Minute)
	c.waitNexthops(ctx, 3, "all three nodes announce")
	clients := c.l.ClientAddrs4()[:n]
	before, err := c.persistAll(ctx, clients, 3)
	if err != nil {
		t.Fatal(err)
	}
	c.waitTables(ctx, n, 0, 1, 2)
	ld := c.startLoad(ctx, clients, memberOf(before))
	time.Sleep(time.Second)
	if out, err := c.cli(1, "drain"); err != nil || !strings.Contains(out, "withdrawn") {
		t.Fatalf("limpet drain: %v %s", err, out)
	}
	took := c.waitNexthops(ctx, 2, "limpet drain withdraws node 1")
	st := c.status(1)
	if a := st.BGP.Announcements[0]; a.Announced || a.Reason != "draining" || !st.BGP.Draining {
		t.Fatalf("node 1 after drain: %+v", st.BGP)
	}
	time.Sleep(1500 * time.Millisecond)
	if out, err := c.cli(1, "drain", "--cancel"); err != nil {
		t.Fatalf("limpet drain --cancel: %v %s", err, out)
	}
	c.waitNexthops(ctx, 3, "drain cancelled")
	time.Sleep(time.Second)
	sig := time.Now()
	if err := c.proc[2].Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	tookTerm := c.waitNexthops(ctx, 2, "SIGTERM withdraws node 2")
	if err := c.proc[2].Wait(ctx); err != nil {
		t.Fatalf("node 2 exited with %v:\n%s", err, c.proc[2].Output())
	}
	exited := time.Since(sig)
	time.Sleep(time.Second)
	ld.Stop()
	t.Logf("drain: route 2-way %.2fs after limpet drain; SIGTERM: withdrawn after %.2fs, exited after %.2fs (grace 2s); %d requests, %d failed, %d clients moved",
		took.Seconds(), tookTerm.Seconds(), exited.Seconds(), ld.OK.Load()+ld.Bad.Load(), ld.Bad.Load(), len(ld.Moved()))
	if ld.Bad.Load() != 0 {
		t.Fatalf("%d requests failed across the drains: %v", ld.Bad.Load(), ld.Errors())
	}
	if len(ld.Moved()) != 0 {
		t.Fatalf("%d clients reached another member: %v", len(ld.Moved()), ld.Moved())
	}
	if exited < 2*time.Second {
		t.Fatalf("node 2 exited %s after SIGTERM, before its 2s grace", exited)
	}
	if !strings.Contains(c.proc[2].Output(), "shutdown grace over") {
		t.Fatalf("node 2 did not log its grace:\n%s", c.proc[2].Output())
	}
}

// Other algorithms in a cluster: two nodes that see a client's first
// connections at the same moment may pick different members; the mirror
// converges them (newer wins, ties broken by server address) and later
// connections all reach one member. Measured here with round_robin. Then a
// node rejoins with empty tables: it announces only once its bulk sync has
// finished, and no client moves.
func TestClusterConflictsAndRejoin(t *testing.T) {
	t.Parallel()
	const n = 200
	c := newCluster(t, clusterOpts{clients: n, algorithm: "round_robin"})
	ctx := testCtx(t, 3*time.Minute)
	c.waitNexthops(ctx, 3, "all three nodes announce")
	clients := c.l.ClientAddrs4()[:n]
	first, err := c.persistAll(ctx, clients, 5)
	if err != nil {
		t.Fatal(err)
	}
	split := n - len(memberOf(first))
	sent := time.Now()
	c.waitTables(ctx, n, 0, 1, 2)
	full := time.Since(sent)
	// The tables are full once every node has some version of every
	// client; conflicting versions may still be on their way. The nodes
	// must then agree on every client within a bounded time.
	const convergeWithin = 15 * time.Second
	atFull := -1
	var dumps []map[string]entry
	var converged time.Duration
	for {
		at := time.Since(sent)
		dumps = c.dumps()
		left := disagreeing(dumps, clients)
		if atFull < 0 {
			atFull = len(left)
		}
		if len(left) == 0 {
			converged = at // the reading that showed it started then
			break
		}
		if at > convergeWithin {
			t.Fatalf("the nodes still disagree on %d of %d clients %.1fs after the first connections (%d when the tables were full):\n%s",
				len(left), n, at.Seconds(), atFull, strings.Join(left, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	second, err := c.persistAll(ctx, clients, 5)
	if err != nil {
		t.Fatal(err)
	}
	one := len(memberOf(second))
	// Converged means for good: the tables still agree after more traffic.
	after := c.dumps()
	later := disagreeing(after, clients)
	t.Logf("round_robin, 5 concurrent first connections per client over 3 nodes: %d of %d clients (%.1f%%) were split at first; every table held all %d clients %.2fs after the first connections had completed, and the nodes then disagreed on %d; they agreed on every client by %.2fs after them; after 5 more connections per client they disagree on %d; those reached one member for %d of %d",
		split, n, 100*float64(split)/n, n, full.Seconds(), atFull, converged.Seconds(), len(later), one, n)
	if len(later) != 0 || float64(one) < 0.999*n {
		t.Fatalf("the nodes did not stay converged: %d disagree, %d of %d clients on one member\n%s", len(later), one, n, strings.Join(later, "\n"))
	}
	for _, src := range clients {
		if m := memberOf(second)[src]; m != "" && dumps[0][src.String()].Member != m {
			t.Errorf("client %s: reaches %s, the converged entry says %s", src, m, dumps[0][src.String()].Member)
		}
		if a, b := dumps[0][src.String()], after[0][src.String()]; a.Server != b.Server {
			t.Errorf("client %s: the converged entry moved from %s to %s", src, a.Server, b.Server)
		}
	}

	// Node 2 is lost with its tables, and comes back empty.
	if err := c.proc[2].Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-c.proc[2].Done()
	c.waitNexthops(ctx, 2, "node 2 is gone")
	if out, err := run(limpetBin(t), "--pin-path", c.pins[2], "detach"); err != nil {
		t.Fatalf("detach: %v %s", err, out)
	}
	c.start(2)
	p := c.proc[2]
	c.waitNexthops(ctx, 3, "node 2 announces again")
	log := p.Output()
	syncAt, annAt := strings.Index(log, "HA bulk sync finished"), strings.Index(log, "bgp: announced")
	if syncAt < 0 || annAt < 0 || annAt < syncAt || strings.Count(log[:syncAt], "mirror: bulk sync received") < 2 {
		t.Fatalf("node 2 must announce only after the bulk sync of both peers:\n%s", log)
	}
	out, err := osexec(limpetBin(t), "--pin-path", c.pins[2], "persistence", "dump", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	if got := len(parseDump(t, out)); got != n {
		t.Fatalf("node 2 holds %d entries after rejoining, want %d", got, n)
	}
	connsBefore := c.newConns(t)[2]
	third, err := c.persistAll(ctx, clients, 5)
	if err != nil {
		t.Fatal(err)
	}
	moved := n - keepRate(t, second, third)
	t.Logf("node 2 rejoined empty: announced after the bulk sync of both peers (its log: sync finished, then announced); it took %d new connections; %d of %d clients moved",
		c.newConns(t)[2]-connsBefore, moved, n)
	if moved != 0 {
		t.Fatalf("%d clients moved when node 2 rejoined", moved)
	}
	if c.newConns(t)[2] == connsBefore {
		t.Fatal("node 2 got no connection after rejoining: the test shows nothing")
	}
}

// Bad BGP peers are refused and logged: the router expects another ASN from
// node 0; node 1 expects another ASN from the router; node 2 has the wrong
// TCP MD5 password. A flapping member does not flap the route faster than
// the damping interval. Config errors name the field.
func TestClusterBadInput(t *testing.T) {
	t.Parallel()
	t.Run("peers", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t, clusterOpts{clients: 10, password: "s3cret-limpet",
			router:       lab.RouterSpec{NodeASNs: map[int]uint32{0: 65099}},
			peerASN:      map[int]uint32{1: 65123},
			nodePassword: map[int]string{2: "wrong-password"}})
		ctx := testCtx(t, time.Minute)
		want := map[int]string{0: "the peer refused this node", 1: "refused the peer: as number mismatch", 2: "wrong MD5 signature"}
		waitFor(t, ctx, "every node to log why its session failed", func() bool {
			for i, w := range want {
				if !strings.Contains(c.proc[i].Output(), w) {
					return false
				}
			}
			return true
		})
		for i, w := range want {
			st := c.status(i)
			s := st.BGP.Sessions[0]
			if s.State == "established" || !strings.Contains(s.LastError, w) {
				t.Errorf("node %d session: %+v, want not established with %q", i, s, w)
			}
			t.Logf("node %d: %s (%s)", i, s.State, s.LastError)
		}
		if nh := c.nexthops(); len(nh) != 0 {
			t.Fatalf("the router installed %v from refused peers", nh)
		}
		// The router's side of the story.
		birdLog := c.router.Proc.Output()
		for _, w := range []string{"node0: Error: Bad peer AS: 65001", "node1: Received: Bad peer AS"} {
			if !strings.Contains(birdLog, w) {
				t.Errorf("BIRD did not log %q:\n%s", w, birdLog)
			}
		}
	})
	t.Run("flapping_member", func(t *testing.T) {
		t.Parallel()
		const damping = 2.0
		c := newCluster(t, clusterOpts{clients: 10, damping: damping, rise: 1, fall: 1})
		ctx := testCtx(t, 2*time.Minute)
		c.waitNexthops(ctx, 3, "all three nodes announce")
		// m1 is the only member left; it flaps every 300ms for 8s.
		for _, m := range []string{"m2", "m3"} {
			if err := c.l.StopHTTP(m); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(time.Second)
		var changes int
		last := len(c.nexthops())
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
				if k := len(c.nexthops()); (k == 0) != (last == 0) {
					changes++
					last = k
				}
			}
		}()
		start := time.Now()
		flips := 0
		var stable time.Time // when m1 last started: it serves from then on
		for time.Since(start) < 8*time.Second || flips%2 == 1 {
			if flips%2 == 0 {
				_ = c.l.StopHTTP("m1")
			} else {
				stable = time.Now()
				if err := c.l.StartHTTP("m1"); err != nil {
					t.Fatal(err)
				}
			}
			flips++
			time.Sleep(300 * time.Millisecond)
		}
		c.waitNexthops(ctx, 3, "m1 stable again")
		took := time.Since(stable)
		close(stop)
		<-done
		healthFlips := countLines(c.proc[0].Output(), "msg=\"member health\" pool=web member=m1")
		t.Logf("m1 flapped %d times in %.1fs (node 0 saw %d health changes); the route changed %d times; announced again %.2fs after m1 settled (damping %gs)",
			flips, stable.Sub(start).Seconds(), healthFlips, changes, took.Seconds(), damping)
		if maxChanges := int(8/damping) + 2; changes > maxChanges {
			t.Fatalf("the route changed %d times in 8s of flapping; damping %gs allows %d", changes, damping, maxChanges)
		}
		if healthFlips < 6 {
			t.Fatalf("node 0 saw only %d health changes of m1: the member did not flap", healthFlips)
		}
		// No node can see m1 healthy before it started, so none may
		// announce before a whole damping interval after that.
		if took < time.Duration(damping*float64(time.Second)) {
			t.Fatalf("re-announced %s after the member settled, before the %gs damping interval", took, damping)
		}
	})
	t.Run("config", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		bad := `settings: {interfaces: [eth0]}
bgp:
  asn: 0
  router_id: 2001:db8::1
  damping_interval: 0
  neighbors:
    - {address: 10.0.0.1, peer_asn: 4294967295, hold_time: 2}
    - {address: 10.0.0.1, peer_asn: 65000, families: [ipv6_unicast], password: x, password_file: /nope}
  communities: ["65000:100000"]
pools: [{name: p, members: [{name: a, address: 10.1.0.1}]}]
virtual_servers:
  - {name: v, address: 192.0.2.1, port: 80, protocol: tcp, pool: p, bgp: {communities: ["x:y"]}}
`
		path := filepath.Join(dir, "bad.yaml")
		if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := osexecCommand(limpetBin(t), "config", "check", path)
		out, err := cmd.CombinedOutput()
		if err == nil || cmd.ProcessState.ExitCode() != 2 {
			t.Fatalf("config check of a bad bgp section: exit %v\n%s", err, out)
		}
		for _, f := range []string{"bgp.asn", "bgp.router_id", "bgp.neighbors[0].hold_time", "bgp.neighbors[1].address",
			"bgp.neighbors[1].families[0]", "bgp.neighbors[1]: set password or password_file", "bgp.communities[0]", "virtual_servers[0] (v).bgp.communities[0]"} {
			if !strings.Contains(string(out), f) {
				t.Errorf("config check does not name %s:\n%s", f, out)
			}
		}
	})
}

// limpet demo --cluster checks its own claims and exits 0 only if they hold.
func TestDemoCluster(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	start := time.Now()
	cmd := osexecCommand(limpetBin(t), "demo", "--cluster", "--clients", "40")
	out, err := cmd.CombinedOutput()
	if err != nil || strings.Contains(string(out), "[FAIL]") || !strings.Contains(string(out), "nothing left behind") {
		t.Fatalf("limpet demo --cluster: %v\n%s", err, out)
	}
	if d := time.Since(start); d > 90*time.Second {
		t.Fatalf("limpet demo --cluster took %s, over 90s", d)
	}
}
