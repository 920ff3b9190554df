package gc_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/test/dptest"
	"github.com/limpet-lb/limpet/test/packets"
	"github.com/limpet-lb/limpet/userspace/gc"
)

var (
	vip      = netip.MustParseAddr("203.0.113.10")
	members  = []netip.Addr{netip.MustParseAddr("10.1.0.11"), netip.MustParseAddr("10.1.0.12"), netip.MustParseAddr("10.1.0.13")}
	webVIP   = netip.AddrPortFrom(vip, 80)
	altVIP   = netip.AddrPortFrom(vip, 8080)
	dnsVIP   = netip.AddrPortFrom(vip, 53)
	timeouts = gc.Timeouts{TCPEstablished: 900 * time.Second, TCPFin: 120 * time.Second, UDP: 300 * time.Second}
)

const entryTimeout = 10 * time.Second

// world is a dptest.World with the real sweeper.
type world struct {
	*dptest.World
	sw    *gc.Sweeper
	state loader.State
}

type vsOpts struct {
	purge      bool
	maxEntries uint32
	prefix4    uint8
	never      bool
	dsr        bool
}

// oneVS: VS 0 = webVIP/tcp over pool 0 (members 0-2 on port 8080), VS 1 =
// dnsVIP/udp over the same pool, each with a private table.
func oneVS(o vsOpts) loader.State {
	if o.maxEntries == 0 {
		o.maxEntries = 1024
	}
	if o.prefix4 == 0 {
		o.prefix4 = 32
	}
	port := uint16(8080)
	if o.dsr {
		port = 0
	}
	s := loader.State{Pools: []loader.Pool{{ID: 0, Eligible: []loader.MemberID{0, 1, 2}}}}
	for i, m := range members {
		s.Members = append(s.Members, loader.Member{ID: loader.MemberID(i), PoolID: 0, Addr: netip.AddrPortFrom(m, port), Up: true, NAT: !o.dsr})
	}
	for id, v := range []struct {
		vip   netip.AddrPort
		proto loader.Protocol
	}{{webVIP, loader.ProtoTCP}, {dnsVIP, loader.ProtoUDP}} {
		tid := loader.NewTableID(uint32(id), o.purge)
		s.Tables = append(s.Tables, loader.Table{ID: tid, MaxEntries: o.maxEntries})
		s.VirtualServers = append(s.VirtualServers, loader.VirtualServer{
			ID: loader.VirtualServerID(id), VIP: v.vip, Proto: v.proto, PoolID: 0, TableID: tid, DSR: o.dsr,
			ServerDownNever: o.never, IPv4Prefix: o.prefix4, IPv6Prefix: 128, Timeout: entryTimeout,
		})
	}
	return s
}

func newWorld(t *testing.T, s loader.State, flowTable uint32) *world {
	t.Helper()
	dw := dptest.New(t, s, flowTable)
	w := &world{World: dw, state: s}
	w.sw = gc.New(dw.DP, timeouts, func(id loader.TableID) (time.Duration, bool) {
		for _, v := range w.state.VirtualServers {
			if v.TableID == id {
				return v.Timeout, true
			}
		}
		return 0, false
	})
	return w
}

func (w *world) apply(s loader.State) {
	w.state = s
	w.Apply(s)
}

func (w *world) sweep() gc.Report {
	w.T.Helper()
	r, err := w.sw.Sweep()
	if err != nil {
		w.T.Fatal(err)
	}
	return r
}

func client(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 51, byte(100 + i/250), byte(1 + i%250)})
}

var web = loader.NewTableID(0, true)

func TestManyConnectionsOneServerAndClientsSpread(t *testing.T) {
	w := newWorld(t, oneVS(vsOpts{purge: true}), 4096)
	perMember := map[netip.AddrPort]int{}
	for c := 0; c < 30; c++ {
		first := w.Connect(client(c), 10000, webVIP)
		if !first.IsValid() {
			t.Fatalf("client %d not forwarded", c)
		}
		perMember[first]++
		for k := 1; k < 8; k++ {
			if got := w.Connect(client(c), uint16(10000+k), webVIP); got != first {
				t.Fatalf("client %d connection %d went to %s, its first went to %s", c, k, got, first)
			}
		}
		if e, _ := w.Entry(web, client(c)); e.Conns != 8 {
			t.Fatalf("client %d entry holds %d connections, want 8", c, e.Conns)
		}
	}
	if len(perMember) != 3 {
		t.Fatalf("30 clients reached %d members", len(perMember))
	}
	for m, n := range perMember {
		if n != 10 {
			t.Errorf("round robin gave %s %d of 30 clients, want 10", m, n)
		}
	}
}

func TestTimeoutIdleOpenConnectionHoldsEntry(t *testing.T) {
	w := newWorld(t, oneVS(vsOpts{purge: true}), 4096)
	c := client(1)
	m := w.Connect(c, 20000, webVIP)
	e0, _ := w.Entry(web, c)

	// Idle far past the persistence timeout, but well inside TCP's 900 s.
	w.Advance(10 * entryTimeout)
	w.sweep()
	e, ok := w.Entry(web, c)
	if !ok || e.Conns != 1 {
		t.Fatalf("idle open connection lost its entry: %+v ok=%v", e, ok)
	}
	if got := w.Connect(c, 20001, webVIP); got != m {
		t.Fatalf("new connection went to %s, want persisted %s", got, m)
	}
	if e, _ := w.Entry(web, c); e.Created != e0.Created {
		t.Fatal("entry was recreated while held")
	}
}

func TestTimeoutCountdownStartsAtLastClose(t *testing.T) {
	for _, how := range []string{"fin both sides", "rst", "dsr client fin"} {
		t.Run(how, func(t *testing.T) {
			w := newWorld(t, oneVS(vsOpts{purge: true, dsr: how == "dsr client fin"}), 4096)
			c := client(2)
			m := w.Connect(c, 21000, webVIP)
			e0, _ := w.Entry(web, c)
			w.Advance(time.Minute) // the connection lives a while

			switch how {
			case "fin both sides":
				w.Send(packets.TCP(netip.AddrPortFrom(c, 21000), webVIP, "FA"))
				if e, _ := w.Entry(web, c); e.Conns != 1 {
					t.Fatalf("a FIN from one side closed the connection: %+v", e)
				}
				w.Send(packets.TCP(m, netip.AddrPortFrom(c, 21000), "FA"))
			case "rst":
				w.Reset(c, 21000, webVIP)
			case "dsr client fin":
				w.Send(packets.TCP(netip.AddrPortFrom(c, 21000), webVIP, "FA"))
			}
			e, _ := w.Entry(web, c)
			if e.Conns != 0 {
				t.Fatalf("closed connection still counted: %+v", e)
			}

			w.Advance(entryTimeout - time.Second)
			w.sweep()
			if _, ok := w.Entry(web, c); !ok {
				t.Fatal("entry expired before its timeout counted from the close")
			}
			if got := w.Connect(c, 21001, webVIP); got != m {
				t.Fatalf("within the timeout the client went to %s, want %s", got, m)
			}
			w.Reset(c, 21001, webVIP)

			w.Advance(entryTimeout + time.Second)
			w.sweep()
			if _, ok := w.Entry(web, c); ok {
				t.Fatal("entry survived its timeout")
			}
			// Afresh: a new entry with a new creation time.
			if got := w.Connect(c, 21002, webVIP); !got.IsValid() {
				t.Fatal("client not balanced after expiry")
			}
			e1, ok := w.Entry(web, c)
			if !ok || e1.Created <= e0.Created || e1.Conns != 1 {
				t.Fatalf("entry not recreated afresh: before %+v after %+v", e0, e1)
			}
		})
	}
}

func TestTimeoutExpiredEntryRebalancedBeforeSweep(t *testing.T) {
	w := newWorld(t, oneVS(vsOpts{purge: true}), 4096)
	c := client(3)
	w.Connect(c, 22000, webVIP)
	w.Reset(c, 22000, webVIP)
	e0, _ := w.Entry(web, c)
	w.Advance(entryTimeout + time.Second)
	// No sweep: the datapath itself must see that the entry has expired.
	w.Connect(c, 22001, webVIP)
	e1, _ := w.Entry(web, c)
	if e1.Created == e0.Created {
		t.Fatal("an expired entry was reused because no sweep had run")
	}
	c1, _ := w.DP.TableCounters(web)
	if c1.Expired != 1 {
		t.Fatalf("expired counter %d", c1.Expired)
	}
}

func TestUDPFlowEndsWhenIdle(t *testing.T) {
	w := newWorld(t, oneVS(vsOpts{purge: true}), 4096)
	dns := loader.NewTableID(1, true)
	c := client(4)
	w.Send(packets.UDP(netip.AddrPortFrom(c, 5000), dnsVIP))
	if e, _ := w.Entry(dns, c); e.Conns != 1 {
		t.Fatalf("udp flow not counted: %+v", e)
	}
	w.Advance(timeouts.UDP - time.Second)
	w.sweep()
	if e, _ := w.Entry(dns, c); e.Conns != 1 {
		t.Fatal("udp flow ended before its idle timeout")
	}
	w.Advance(2 * time.Second)
	w.sweep()
	e, ok := w.Entry(dns, c)
	if !ok || e.Conns != 0 {
		t.Fatalf("after the UDP idle timeout the flow should end and the entry start its countdown: %+v ok=%v", e, ok)
	}
	w.Advance(entryTimeout + time.Second)
	w.sweep()
	if _, ok := w.Entry(dns, c); ok {
		t.Fatal("entry outlived its countdown")
	}
}

// A few clients open and close thousands of connections through a flow
// table too small to hold them, so the LRU drops open flows. After a sweep,
// every entry's count equals the flows that still hold it; closing the rest
// brings every count to zero.
func TestLiveConnectionCountsDoNotDrift(t *testing.T) {
	const flowTable = 512
	w := newWorld(t, oneVS(vsOpts{purge: true}), flowTable)
	rng := rand.New(rand.NewPCG(1, 2))
	type conn struct {
		c      netip.Addr
		sport  uint16
		member netip.AddrPort
	}
	var open []conn
	next := uint16(1024)
	for i := 0; i < 6000; i++ {
		if len(open) > 0 && rng.IntN(100) < 45 {
			k := rng.IntN(len(open))
			cn := open[k]
			open = append(open[:k], open[k+1:]...)
			if rng.IntN(2) == 0 {
				w.CloseBoth(cn.c, cn.sport, webVIP, cn.member)
			} else {
				w.Reset(cn.c, cn.sport, webVIP)
			}
			continue
		}
		c := client(rng.IntN(5))
		next++
		m := w.Connect(c, next, webVIP)
		if !m.IsValid() {
			t.Fatalf("connection %d not forwarded", i)
		}
		open = append(open, conn{c, next, m})
	}
	if len(open) <= flowTable {
		t.Fatalf("test needs more open connections (%d) than flow slots (%d) to force evictions", len(open), flowTable)
	}
	rep := w.sweep()
	if rep.Corrected == 0 || rep.MembersCorrected == 0 {
		t.Fatalf("entries corrected %d, members corrected %d: the LRU evicted nothing?", rep.Corrected, rep.MembersCorrected)
	}
	checkCounts := func(stage string) {
		t.Helper()
		flows, err := w.DP.Flows()
		if err != nil {
			t.Fatal(err)
		}
		want := map[netip.Addr]uint32{}
		for _, f := range flows {
			if f.Counted && !f.Reverse {
				want[f.Client]++
			}
		}
		for c, e := range w.Entries(web) {
			if e.Conns != want[c] {
				t.Errorf("%s: client %s entry counts %d connections, the flow table holds %d", stage, c, e.Conns, want[c])
			}
		}
		perMember := map[loader.MemberID]uint32{}
		for _, f := range flows {
			if f.MemberCounted && !f.Reverse {
				perMember[f.MemberID]++
			}
		}
		mc, err := w.DP.MemberConns()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range mc {
			if m.Conns != perMember[m.ID] {
				t.Errorf("%s: member %d counts %d active connections, the flow table holds %d", stage, m.ID, m.Conns, perMember[m.ID])
			}
		}
	}
	checkCounts("after sweep")
	// A second sweep with nothing changed corrects nothing.
	if r := w.sweep(); r.Corrected != 0 || r.MembersCorrected != 0 {
		t.Fatalf("second sweep corrected %d entry and %d member counts", r.Corrected, r.MembersCorrected)
	}
	for _, cn := range open {
		w.Reset(cn.c, cn.sport, webVIP)
	}
	w.sweep()
	checkCounts("after closing everything")
	for c, e := range w.Entries(web) {
		if e.Conns != 0 {
			t.Errorf("client %s still counts %d connections with none open", c, e.Conns)
		}
	}
}

func TestSharePersistence(t *testing.T) {
	// Two virtual servers on ports 80 and 8080, over pools listing the same
	// servers on different ports, with pool B's order rotated so that round
	// robin alone would pick another server.
	build := func(shared bool) loader.State {
		s := oneVS(vsOpts{purge: true})
		s.Pools = append(s.Pools, loader.Pool{ID: 1, Eligible: []loader.MemberID{4, 5, 3}})
		for i, m := range members {
			s.Members = append(s.Members, loader.Member{ID: loader.MemberID(3 + i), PoolID: 1, Addr: netip.AddrPortFrom(m, 9090), Up: true, NAT: true})
		}
		tid := loader.NewTableID(2, true)
		if shared {
			tid = web
		} else {
			s.Tables = append(s.Tables, loader.Table{ID: tid, MaxEntries: 1024})
		}
		s.VirtualServers = append(s.VirtualServers, loader.VirtualServer{ID: 2, VIP: altVIP, Proto: loader.ProtoTCP, PoolID: 1, TableID: tid, IPv4Prefix: 32, IPv6Prefix: 128, Timeout: entryTimeout})
		return s
	}
	for _, shared := range []bool{true, false} {
		t.Run(fmt.Sprintf("shared=%v", shared), func(t *testing.T) {
			w := newWorld(t, build(shared), 4096)
			c := client(5)
			a := w.Connect(c, 23000, webVIP)
			b := w.Connect(c, 23001, altVIP)
			if b.Port() != 9090 {
				t.Fatalf("virtual server B sent the client to %s, not a port-9090 member", b)
			}
			if shared && b.Addr() != a.Addr() {
				t.Fatalf("shared table: A persisted the client to %s, B sent it to %s", a.Addr(), b.Addr())
			}
			if !shared && b.Addr() == a.Addr() {
				t.Fatalf("private tables: B followed A's persistence to %s", a.Addr())
			}
			if e, _ := w.Entry(web, c); shared && e.Conns != 2 {
				t.Fatalf("shared entry should hold both connections: %+v", e)
			}
		})
	}
}

func TestPurgeWhenFullOnEvictsLeastRecentlyUsed(t *testing.T) {
	const size, extra = 64, 16
	w := newWorld(t, oneVS(vsOpts{purge: true, maxEntries: size}), 4096)
	dptest.OnOneCPU(t, func() {
		for i := 0; i < size; i++ {
			if !w.Connect(client(i), 24000, webVIP).IsValid() {
				t.Fatalf("client %d not served", i)
			}
		}
		// Client 0, the oldest, comes back: it is now recently used.
		if !w.Connect(client(0), 24001, webVIP).IsValid() {
			t.Fatal("client 0 not served")
		}
		for i := size; i < size+extra; i++ {
			if !w.Connect(client(i), 24000, webVIP).IsValid() {
				t.Fatalf("client %d rejected although the table purges", i)
			}
		}
	})
	es := w.Entries(web)
	if len(es) > size {
		t.Fatalf("%d entries in a table of %d", len(es), size)
	}
	if _, ok := es[client(0)]; !ok {
		t.Error("client 0 was used again before the table overflowed, yet it was evicted")
	}
	for i := 1; i <= extra; i++ {
		if _, ok := es[client(i)]; ok {
			t.Errorf("client %d, among the least recently used, survived", i)
		}
	}
	// The kernel frees a small batch at a time, so a few entries beyond the
	// k least recently used may go too; the newest half are always kept.
	for i := size + extra - size/2; i < size+extra; i++ {
		if _, ok := es[client(i)]; !ok {
			t.Errorf("recent client %d was evicted", i)
		}
	}
	t.Logf("%d of %d entries kept after %d clients", len(es), size, size+extra)
}

func TestPurgeWhenFullOffRejectsNewClients(t *testing.T) {
	const size = 16
	w := newWorld(t, oneVS(vsOpts{purge: false, maxEntries: size}), 4096)
	table := loader.NewTableID(0, false)
	served := map[int]netip.AddrPort{}
	for i := 0; i < size; i++ {
		served[i] = w.Connect(client(i), 25000, webVIP)
		if !served[i].IsValid() {
			t.Fatalf("client %d rejected before the table was full", i)
		}
	}
	// Client N+1: answered with a RST from the balancer.
	syn := packets.TCP(netip.AddrPortFrom(client(size), 25000), webVIP, "S")
	syn.Seq = 1000
	act, d := w.Send(syn)
	// Redirected back out of the ingress interface, not XDP_TX: see
	// reply_rst in bpf/limpet.c (test/e2e checks that it arrives).
	if act != loader.XDPRedirect || d.TCP == nil || !d.TCP.RST || !d.TCP.ACK || d.TCP.Ack != 1001 {
		t.Fatalf("new client got %v %+v, want XDP_REDIRECT of RST|ACK acking 1001", act, d.TCP)
	}
	if d.Src != webVIP || d.Dst != netip.AddrPortFrom(client(size), 25000) {
		t.Fatalf("RST goes %s -> %s", d.Src, d.Dst)
	}
	if err := d.ChecksumError(); err != nil {
		t.Fatalf("RST: %v", err)
	}
	// UDP from a new client to a full table: dropped.
	dnsTable := loader.NewTableID(1, false)
	for i := 0; len(w.Entries(dnsTable)) < size; i++ {
		w.Send(packets.UDP(netip.AddrPortFrom(client(100+i), 5000), dnsVIP))
	}
	if act, _ := w.Send(packets.UDP(netip.AddrPortFrom(client(200), 5000), dnsVIP)); act != loader.XDPDrop {
		t.Fatalf("udp from a new client to a full table: %v, want XDP_DROP", act)
	}
	// Existing clients keep working, on new connections too.
	for i := 0; i < size; i++ {
		if got := w.Connect(client(i), 25001, webVIP); got != served[i] {
			t.Fatalf("existing client %d went to %s, want %s", i, got, served[i])
		}
	}
	c, err := w.DP.VSCounters(0)
	if err != nil {
		t.Fatal(err)
	}
	tc, _ := w.DP.TableCounters(table)
	if c.Rejects != 1 || tc.Rejects != 1 {
		t.Fatalf("rejects: vs %d table %d, want 1", c.Rejects, tc.Rejects)
	}
}

func TestPrefixGroupsClients(t *testing.T) {
	w := newWorld(t, oneVS(vsOpts{purge: true, prefix4: 24}), 4096)
	a := w.Connect(netip.MustParseAddr("198.51.100.7"), 26000, webVIP)
	for _, other := range []string{"198.51.100.200", "198.51.100.1", "198.51.100.7"} {
		if got := w.Connect(netip.MustParseAddr(other), 26001, webVIP); got != a {
			t.Fatalf("%s went to %s, its /24 is persisted to %s", other, got, a)
		}
	}
	es := w.Entries(web)
	if len(es) != 1 {
		t.Fatalf("%d entries for one /24", len(es))
	}
	if e, ok := es[netip.MustParseAddr("198.51.100.0")]; !ok || e.Conns != 4 {
		t.Fatalf("entry for 198.51.100.0/24: %+v", es)
	}
	if got := w.Connect(netip.MustParseAddr("198.51.101.7"), 26000, webVIP); got == a {
		t.Fatal("a client of another /24 shared the entry")
	}
}

func TestServerDownPolicy(t *testing.T) {
	for _, never := range []bool{false, true} {
		t.Run(map[bool]string{false: "immediate", true: "never"}[never], func(t *testing.T) {
			s := oneVS(vsOpts{purge: true, never: never})
			w := newWorld(t, s, 4096)
			c := client(6)
			m := w.Connect(c, 27000, webVIP)
			// Take that member down: not eligible, not up.
			var down loader.MemberID
			for i := range s.Members {
				if s.Members[i].Addr == m {
					s.Members[i].Up = false
					down = s.Members[i].ID
				}
			}
			var eligible []loader.MemberID
			for _, id := range s.Pools[0].Eligible {
				if id != down {
					eligible = append(eligible, id)
				}
			}
			s.Pools[0].Eligible = eligible
			w.apply(s)

			// The open flow keeps its member either way.
			act, d := w.Send(packets.TCP(netip.AddrPortFrom(c, 27000), webVIP, "PA"))
			if act == loader.XDPDrop || d.Dst != m {
				t.Fatalf("open flow moved or dropped: %v to %s", act, d.Dst)
			}
			got := w.Connect(c, 27001, webVIP)
			e, _ := w.Entry(web, c)
			vc, _ := w.DP.VSCounters(0)
			if never {
				if got.IsValid() {
					t.Fatalf("never: new connection went to %s", got)
				}
				if e.Server != m || vc.ServerDownDrops != 1 {
					t.Fatalf("never: entry %s, server-down drops %d", e.Server, vc.ServerDownDrops)
				}
				return
			}
			if !got.IsValid() || got == m {
				t.Fatalf("immediate: new connection went to %s", got)
			}
			if e.Server != got || vc.PersistMoved != 1 || e.Conns != 2 {
				t.Fatalf("immediate: entry %+v, moved %d", e, vc.PersistMoved)
			}
		})
	}
}

// BenchmarkSweep1M measures one sweep over a table of a million entries
// with a flow table beside it: a typical sweep, where 1% of the entries
// have expired, and a worst case, where half have. Each iteration refills
// the table outside the timer.
func BenchmarkSweep1M(b *testing.B) {
	for _, bc := range []struct {
		name  string
		every int // one entry in every expires
	}{{"1pct-expired", 100}, {"half-expired", 2}} {
		b.Run(bc.name, func(b *testing.B) { benchmarkSweep(b, 1<<20, bc.every) })
	}
}

func benchmarkSweep(b *testing.B, n, every int) {
	// A plain hash holds exactly n entries; an LRU hash written from
	// userspace keeps some of its nodes in per-CPU free lists.
	s := oneVS(vsOpts{purge: false, maxEntries: uint32(n)})
	table := loader.NewTableID(0, false)
	w := dptest.New(b, s, 1<<16)
	dp := w.DP
	// The boot clock may be younger than the ages below.
	w.Advance(3 * time.Hour)
	now, _ := dp.Now()
	entries := make([]loader.PersistEntry, n)
	for i := range entries {
		// An hour-long timeout: a slow refill on a loaded machine must not
		// age the fresh entries into expiry.
		last := now
		if i%every == 0 {
			last = now - 2*time.Hour // expired
		}
		entries[i] = loader.PersistEntry{
			TableID: table, Client: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}),
			Server: netip.AddrPortFrom(members[i%3], 8080), MemberID: loader.MemberID(i % 3), Created: last, LastSeen: last,
		}
	}
	sw := gc.New(dp, timeouts, func(loader.TableID) (time.Duration, bool) { return time.Hour, true })
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if _, err := dp.FlushTable(table); err != nil {
			b.Fatal(err)
		}
		if err := dp.PutEntries(table, entries); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		rep, err := sw.Sweep()
		if err != nil {
			b.Fatal(err)
		}
		if want := (n + every - 1) / every; rep.Entries != n || rep.EntriesExpired != want {
			b.Fatalf("sweep saw %d entries and expired %d, want %d and %d", rep.Entries, rep.EntriesExpired, n, want)
		}
	}
}

// A full flow table is defined: the LRU table evicts its least recently
// used flows to take new connections (no connection is refused, none
// counts flow_table_full), and the sweeper finds every connection whose
// flow was evicted before it closed, corrects the counts it held and
// reports it in FlowsEvicted.
func TestFullFlowTableEvictsAndCounts(t *testing.T) {
	const flowTable = 64
	w := newWorld(t, oneVS(vsOpts{purge: true}), flowTable)
	reasonsBefore, err := w.DP.ReasonCounters()
	if err != nil {
		t.Fatal(err)
	}
	const opened = 400
	for i := 0; i < opened; i++ {
		if m := w.Connect(client(i%7), uint16(20000+i), webVIP); !m.IsValid() {
			t.Fatalf("connection %d into a full flow table not forwarded", i)
		}
	}
	flows, err := w.DP.Flows()
	if err != nil {
		t.Fatal(err)
	}
	if len(flows) > flowTable || len(flows) == 0 {
		t.Fatalf("%d flows in a table of %d", len(flows), flowTable)
	}
	reasons, err := w.DP.ReasonCounters()
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range loader.ReasonNames {
		if n == "flow_table_full" && reasons[i] != reasonsBefore[i] {
			t.Errorf("flow_table_full counted %d: an LRU table evicts rather than refuse", reasons[i]-reasonsBefore[i])
		}
	}
	rep := w.sweep()
	if rep.FlowsEvicted != opened-len(flows) {
		t.Fatalf("sweep reports %d evicted flows, %d of %d connections have one", rep.FlowsEvicted, len(flows), opened)
	}
	mc, err := w.DP.MemberConns()
	if err != nil {
		t.Fatal(err)
	}
	var held uint32
	for _, m := range mc {
		held += m.Conns
	}
	if int(held) != len(flows) {
		t.Fatalf("members count %d connections after the sweep, the flow table holds %d", held, len(flows))
	}
	if r := w.sweep(); r.FlowsEvicted != 0 {
		t.Fatalf("a second sweep reports %d evicted flows", r.FlowsEvicted)
	}
}
