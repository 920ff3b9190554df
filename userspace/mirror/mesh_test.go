package mirror

import (
	"testing"
	"time"
)

// A cluster's full mesh: three active_active nodes that each list the two
// others keep one connection per pair, every entry reaches every node
// directly from the node that made it, a conflict for one client converges
// to the same winner everywhere, and each node records the bulk sync of
// each peer (what a starting node waits for before it announces).
func TestThreeNodeMesh(t *testing.T) {
	cfg := func() Config { c := testConfig(); c.Mode = ActiveActive; return c }
	nodes := []*testNode{newTestNode(t, cfg(), nil), newTestNode(t, cfg(), nil), newTestNode(t, cfg(), nil)}
	for i, n := range nodes {
		for j, o := range nodes {
			if i != j {
				n.addPeer(o.addr)
			}
		}
	}
	for _, n := range nodes {
		n.run(t)
	}
	eventually(t, 5*time.Second, func() bool {
		for _, n := range nodes {
			st := n.Status()
			if len(st) != 2 {
				return false
			}
			for _, p := range st {
				if p.State != StateUp || p.LastSync.IsZero() || p.Syncs == 0 || !p.Configured {
					return false
				}
			}
		}
		return true
	}, "every node up with both peers, each bulk sync recorded")
	for _, n := range nodes {
		if n.Started().IsZero() || n.Started().After(time.Now()) {
			t.Fatalf("Started %v", n.Started())
		}
	}
	now := time.Now()
	var keys []EntryKey
	for i, n := range nodes {
		e := n.local.set(entry("profile:sticky", "198.51.100."+string(rune('1'+i)), "10.0.1.11:80", now))
		keys = append(keys, e.ID())
		n.Publish(e)
	}
	eventually(t, 5*time.Second, func() bool {
		for _, n := range nodes {
			for _, k := range keys {
				if _, ok := n.local.get(k); !ok {
					return false
				}
			}
		}
		return true
	}, "every node holds the three entries")

	// Two nodes pick different servers for one client at the same moment:
	// both converge on the newer one, and a tie goes to the higher server.
	a := nodes[0].local.set(entry("profile:sticky", "198.51.100.9", "10.0.1.11:80", now))
	b := nodes[1].local.set(entry("profile:sticky", "198.51.100.9", "10.0.1.12:80", now))
	nodes[0].Publish(a)
	nodes[1].Publish(b)
	eventually(t, 5*time.Second, func() bool {
		for _, n := range nodes {
			e, ok := n.local.get(a.ID())
			if !ok || e.Server != b.Server {
				return false
			}
		}
		return true
	}, "the tie broken the same way on every node (the higher server, 10.0.1.12:80)")
}
