package daemon

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/test/dptest"
	"github.com/limpet-lb/limpet/userspace/desired"
	"github.com/limpet-lb/limpet/userspace/mirror"
	"github.com/limpet-lb/limpet/userspace/sharedtable"
)

// Convergence of conflicting versions in active_active: every node must end
// up holding the newest version any node made (mirror.Newer), whatever the
// order and the concurrency in which the versions reach it. These tests play
// one node receiving versions; each client of the table stands for one
// arrival order.

const convergeTable = "profile:sticky"

var (
	serverA = netip.MustParseAddrPort("10.0.0.1:0")
	serverB = netip.MustParseAddrPort("10.0.0.2:0")
)

func convergeDaemon(t *testing.T, size int) (*daemon, loader.TableID) {
	t.Helper()
	table := loader.NewTableID(0, true)
	dp := dptest.New(t, loader.State{Tables: []loader.Table{{ID: table, MaxEntries: uint32(size), Mirror: true}}}, 1024).DP
	meta := &desired.Meta{Tables: []desired.TableMeta{{ID: table, Key: convergeTable, Profile: "sticky", Shared: true,
		Timeout: 300, MaxEntries: size, PurgeWhenFull: true, IPv4Prefix: 32, IPv6Prefix: 128, HAMirroring: true}}}
	d := &daemon{dp: dp, meta: meta, log: slog.New(slog.NewTextHandler(io.Discard, nil)), tables: sharedtable.New(dp, meta)}
	node, err := mirror.New(mirror.Config{Peers: []string{"127.0.0.1:9"}, Mode: mirror.ActiveActive, PSK: make([]byte, 32)}, mirrorLocal{d}, nil)
	if err != nil {
		t.Fatal(err)
	}
	d.mirror = node // never run: Publish has no peer to queue for
	return d, table
}

func clientN(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}) }

func version(client netip.Addr, server netip.AddrPort, at time.Time) mirror.Entry {
	return mirror.Entry{Table: convergeTable, Client: client, Server: server, Op: mirror.Upsert, Updated: at, Created: at}
}

// held is what the node's table holds, as its bulk sync would send it.
func held(t *testing.T, d *daemon) map[netip.Addr]mirror.Entry {
	t.Helper()
	snap, err := mirrorLocal{d}.Snapshot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	out := map[netip.Addr]mirror.Entry{}
	for _, e := range snap {
		out[e.Client] = e
	}
	return out
}

func newest(vs ...mirror.Entry) mirror.Entry {
	w := vs[0]
	for _, v := range vs[1:] {
		if mirror.Newer(v, w) {
			w = v
		}
	}
	return w
}

func sameVersion(a, b mirror.Entry) bool {
	return a.Server == b.Server && a.Op == b.Op && a.Updated.Equal(b.Updated) && a.Created.Equal(b.Created)
}

// Versions a few nanoseconds apart, or at the same nanosecond (the server
// breaks the tie), in every arrival order: the newest wins, and the table
// then holds exactly that version, so the node compares the next one with
// the same value its peers use and sends it on in its bulk syncs unchanged.
// Three versions, two of them of the same server, also show that a newer
// version of the server already held must replace the held version: a node
// that kept the older one would let a version between the two win.
func TestMirrorApplyNewestVersionWinsInAnyOrder(t *testing.T) {
	d, _ := convergeDaemon(t, 1024)
	local := mirrorLocal{d}
	base := time.Now().Add(-time.Minute)
	perms := [][]int{{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}}
	type trial struct {
		client netip.Addr
		order  []mirror.Entry
		want   mirror.Entry
		what   string
	}
	var trials []trial
	i := 0
	for _, gaps := range [][2]time.Duration{{0, 0}, {0, 1}, {1, 1}, {1, 2}, {1000, 1000}, {time.Millisecond, time.Millisecond}} {
		t0 := base.Add(time.Duration(i) * time.Second)
		// a and c name the same server, b another, in the middle.
		a := version(netip.Addr{}, serverA, t0)
		b := version(netip.Addr{}, serverB, t0.Add(gaps[0]))
		c := version(netip.Addr{}, serverA, t0.Add(gaps[0]+gaps[1]))
		for _, p := range perms {
			vs := []mirror.Entry{a, b, c}
			var order []mirror.Entry
			for _, k := range p {
				v := vs[k]
				v.Client = clientN(i)
				order = append(order, v)
			}
			w := newest(order...)
			trials = append(trials, trial{clientN(i), order, w, fmt.Sprintf("gaps %v, order %v", gaps, p)})
			i++
		}
		for _, pair := range [][2]mirror.Entry{{a, b}, {b, a}} {
			order := []mirror.Entry{pair[0], pair[1]}
			for k := range order {
				order[k].Client = clientN(i)
			}
			trials = append(trials, trial{clientN(i), order, newest(order...), fmt.Sprintf("gap %v, two versions", gaps[0])})
			i++
		}
	}
	for _, tr := range trials {
		for _, v := range tr.order {
			if err := local.Apply(v); err != nil {
				t.Fatalf("%s: apply: %v", tr.what, err)
			}
		}
	}
	got := held(t, d)
	for _, tr := range trials {
		if g := got[tr.client]; !sameVersion(g, tr.want) {
			t.Errorf("%s: holds %s at %s, want %s at %s", tr.what, g.Server, g.Updated.Format(time.RFC3339Nano), tr.want.Server, tr.want.Updated.Format(time.RFC3339Nano))
		}
	}
	// The versions read the same at every reading, and a re-sent version
	// (a bulk sync, a refresh) changes nothing.
	for _, tr := range trials {
		if err := local.Apply(tr.want); err != nil {
			t.Fatal(err)
		}
	}
	again := held(t, d)
	for c, g := range got {
		if !sameVersion(again[c], g) {
			t.Errorf("client %s: read %v, then %v", c, g.Updated.Format(time.RFC3339Nano), again[c].Updated.Format(time.RFC3339Nano))
		}
	}
}

// Two peers' versions of one client arrive at once, on their two
// connections' goroutines: whichever runs last, the newer is kept. Half the
// clients are new to the node, half hold an older version that both
// replace.
func TestMirrorApplyConcurrentPeersKeepTheNewer(t *testing.T) {
	const n = 600
	d, _ := convergeDaemon(t, 2*n)
	local := mirrorLocal{d}
	base := time.Now().Add(-time.Minute)
	want := map[netip.Addr]mirror.Entry{}
	var wg sync.WaitGroup
	for i := range n {
		t0 := base.Add(time.Duration(i) * time.Millisecond)
		older, newer := version(clientN(i), serverA, t0), version(clientN(i), serverB, t0.Add(time.Millisecond))
		if i%2 == 1 {
			older.Server, newer.Server = serverB, serverA
		}
		want[clientN(i)] = newer
		if i%4 >= 2 {
			if err := local.Apply(version(clientN(i), serverA, t0.Add(-time.Second))); err != nil {
				t.Fatal(err)
			}
		}
		start := make(chan struct{})
		for _, e := range []mirror.Entry{newer, older} {
			wg.Go(func() {
				<-start
				if err := local.Apply(e); err != nil {
					t.Error(err)
				}
			})
		}
		close(start)
		if i%8 == 7 {
			wg.Wait()
		}
	}
	wg.Wait()
	got := held(t, d)
	bad := 0
	for c, w := range want {
		if g := got[c]; !sameVersion(g, w) {
			if bad++; bad <= 5 {
				t.Errorf("client %s: holds %s at %s, want the newer %s at %s", c, g.Server, g.Updated.Format(time.RFC3339Nano), w.Server, w.Updated.Format(time.RFC3339Nano))
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d clients hold the older of two versions applied at once", bad, n)
	}
}

// The datapath creates an entry just after Apply looked the client up, and
// Apply writes a peer's older version over it. When the event of the
// datapath's entry is published (the peers will keep it, it is newer), this
// node reinstalls it; a newer version in the table stays.
func TestMirrorEventReinstallsTheNodesNewerVersion(t *testing.T) {
	d, table := convergeDaemon(t, 64)
	cm, err := d.clockMap()
	if err != nil {
		t.Fatal(err)
	}
	now := cm.ClockNow
	plant := func(c netip.Addr, s netip.AddrPort, created time.Duration) {
		if err := d.dp.PutEntry(loader.PersistEntry{TableID: table, Client: c, Server: s, VSID: loader.NoVirtualServer, MemberID: loader.NoMember,
			Created: created, LastSeen: created, Conns: 1}); err != nil {
			t.Fatal(err)
		}
	}
	lost, kept := clientN(1), clientN(2)
	// The datapath's entries were created at now; the table holds a
	// peer's version from a millisecond before (lost) and after (kept).
	plant(lost, serverB, now-time.Millisecond)
	plant(kept, serverB, now+time.Millisecond)
	for _, c := range []netip.Addr{lost, kept} {
		d.publishEvent(loader.Event{Type: loader.EventCreated, TableID: table, Client: c, Server: netip.AddrPortFrom(serverA.Addr(), 0), Time: now})
	}
	for c, want := range map[netip.Addr]struct {
		server  netip.AddrPort
		created time.Duration
	}{lost: {serverA, now}, kept: {serverB, now + time.Millisecond}} {
		e, ok, err := d.dp.LookupEntry(table, c)
		if err != nil || !ok {
			t.Fatalf("client %s: %v %v", c, ok, err)
		}
		if serverOf(e.Server) != want.server || e.Created != want.created || e.Conns != 1 {
			t.Errorf("client %s: %s created %v with %d connections, want %s created %v with 1", c, e.Server, e.Created, e.Conns, want.server, want.created)
		}
	}
}
