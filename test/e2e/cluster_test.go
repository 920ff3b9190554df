package e2e_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

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
	_ = lab.HostRouter
	_ = fmt.Sprint
	_ = context.Background
}
