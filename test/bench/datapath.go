package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/test/packets"
	"github.com/limpet-lb/limpet/test/testutil"
	"github.com/limpet-lb/limpet/userspace/nexthop"
	"github.com/vishvananda/netlink"
)

// Part 1: the datapath's cost per packet, through BPF_PROG_RUN.
//
// BPF_PROG_RUN runs a program repeat times on one buffer, and the datapath
// rewrites that buffer (NAT changes the destination, a reply's source), so a
// plain repeated run measures the first packet once and a non-VIP packet
// after it. Every case here therefore goes through floor_drive
// (bpf/floor.c): it writes the template packet back, varies the client
// address and port as the case needs, and tail-calls the program under test.
// The floor (floor_tx: limpet's own parser, then XDP_TX) goes through the
// same driver with the same packets, so "limpet − floor" is what the
// datapath adds to parsing, and the driver's own cost cancels out.

// DatapathCase names one measured path.
type DatapathCase string

// The cases of part 1.
const (
	CaseNonVIP     DatapathCase = "non-VIP pass"
	CaseFlowHit    DatapathCase = "flow-table hit"
	CasePersistHit DatapathCase = "persistence hit, new flow"
	CaseNewClient  DatapathCase = "new client (selection + insert)"
	CaseReverse    DatapathCase = "reverse NAT (member reply)"
	// The same two paths with the next-hop cache off: bpf_fib_lookup on
	// every packet, as before the cache; measured in the same run.
	CaseFlowHitFIB DatapathCase = "flow-table hit, FIB lookup"
	CaseReverseFIB DatapathCase = "reverse NAT, FIB lookup"
)

// DatapathCases in report order.
var DatapathCases = []DatapathCase{CaseNonVIP, CaseFlowHit, CaseFlowHitFIB, CasePersistHit, CaseNewClient, CaseReverse, CaseReverseFIB}

// The forwarding modes other than NAT, small table only: a flow-table hit
// and a new client of a DSR, an IPIP and a GUE virtual server (the family is
// the client's and the member's: IPv4 is 4in4, IPv6 6in6). Encapsulation
// grows the head with bpf_xdp_adjust_head, which the driver undoes before
// the next repeat (bpf/floor.c); the driver's undo is a part of these rows,
// the floor's driven packet has none.
const (
	CaseDSRHit  DatapathCase = "DSR flow-table hit"
	CaseDSRNew  DatapathCase = "DSR new client"
	CaseIPIPHit DatapathCase = "IPIP flow-table hit"
	CaseIPIPNew DatapathCase = "IPIP new client"
	CaseGUEHit  DatapathCase = "GUE flow-table hit"
	CaseGUENew  DatapathCase = "GUE new client"
)

// DatapathMode is one forwarding mode of part 1 and its two cases.
type DatapathMode struct {
	Name     string // nat, dsr, ipip, gue: the config's forwarding
	Encap    loader.Encap
	Port     uint16 // the virtual server's port on the family's VIP
	Hit, New DatapathCase
}

// DatapathModes in report order; DSR first: the encapsulations' reference.
var DatapathModes = []DatapathMode{
	{"dsr", loader.EncapNone, 81, CaseDSRHit, CaseDSRNew},
	{"ipip", loader.EncapIPIP, 82, CaseIPIPHit, CaseIPIPNew},
	{"gue", loader.EncapGUE, 83, CaseGUEHit, CaseGUENew},
}

// DatapathKey identifies one row of part 1.
type DatapathKey struct {
	Case   DatapathCase
	Family string // "IPv4" or "IPv6"
	Large  bool   // a table of LargeEntries clients and flows spread over them
}

// DatapathRow is one row: per run, limpet's and the floor's ns per packet.
type DatapathRow struct {
	Key           DatapathKey
	Limpet, Floor Series
	Entries       int // persistence entries when the case ran
	Sweep         string
}

// DatapathOptions size part 1.
type DatapathOptions struct {
	Repeat       int // BPF_PROG_RUN repeats per measurement (>= 1e6 for the report)
	LargeEntries int // the "1M-entry table"
	SmallClients int // clients of the small table (persistence hit on a new flow)
	Runs         int
	Log          func(format string, args ...any)
}

// DatapathResult is part 1.
type DatapathResult struct {
	Rows []*DatapathRow
	// FloorPlain is floor_tx without the driver, IPv4 then IPv6, and
	// NonVIPPlain limpet's non-VIP pass without the driver
	// (Datapath.BenchmarkPacket): what the driver adds.
	FloorPlain, NonVIPPlain map[string]Series
	Repeat                  int
	FlowTableSize           uint32
	PersistTableSize        uint32

	// Set when part 1 runs through agents (RunDatapathSides).
	Name       string        // the datapath measured: a commit, this tree
	Programs   []ProgramSize // its programs, as loaded
	FlowMemory []FlowMemory  // its flow maps and the entries of a connection
	// Baseline is the baseline commit's datapath, measured in turns with
	// this one in the same runs (make bench BASELINE=<commit>).
	Baseline *DatapathResult
}

// Fixed world of the micro benchmarks: a client-facing and a member-facing
// veth in a private namespace with static neighbours, so bpf_fib_lookup
// answers deterministically, and routes for the client ranges.
// errSanity marks a measurement whose packet did not do what it should.
var errSanity = errors.New("sanity check failed")

var (
	dpVIP4     = netip.MustParseAddr("203.0.113.10")
	dpVIP6     = netip.MustParseAddr("2001:db8:f::10")
	dpOther4   = netip.MustParseAddr("203.0.113.99")
	dpOther6   = netip.MustParseAddr("2001:db8:f::99")
	dpClientA4 = netip.MustParseAddr("100.64.0.1") // persisted clients
	dpClientB4 = netip.MustParseAddr("100.96.0.1") // new clients
	dpClientA6 = netip.MustParseAddr("2001:db8:c1:a::1")
	dpClientB6 = netip.MustParseAddr("2001:db8:c1:b::1")
	dpMembers4 = []netip.Addr{netip.MustParseAddr("10.1.0.11"), netip.MustParseAddr("10.1.0.12"), netip.MustParseAddr("10.1.0.13"), netip.MustParseAddr("10.1.0.14")}
	dpMembers6 = []netip.Addr{netip.MustParseAddr("fd00:1::11"), netip.MustParseAddr("fd00:1::12"), netip.MustParseAddr("fd00:1::13"), netip.MustParseAddr("fd00:1::14")}
	dpGwMAC    = net.HardwareAddr{0x02, 0, 0, 0, 0xc0, 0xfe}
	// The balancer's addresses on the member side (bmem).
	dpBalancer4 = netip.MustParseAddr("10.1.0.1")
	dpBalancer6 = netip.MustParseAddr("fd00:1::1")
)

const (
	dpVSPort     = 80
	dpMemberPort = 8080
	// Client ports of the three populations: the persistence-hit run's
	// flows, which the flow-hit and reverse cases reuse; new clients.
	dpPortPersistSmall = 10000
	dpPortPersistLarge = 20000
	dpPortNew          = 30000
)

func dpMemberMAC(i int) net.HardwareAddr { return testutil.MemberMAC(i) }

// dpNet is the network of the micro benchmarks' world.
func dpNet() testutil.NetSpec {
	gw4, gw6 := netip.MustParseAddr("192.0.2.254"), netip.MustParseAddr("2001:db8:c::fe")
	n := testutil.NetSpec{
		Links: []testutil.LinkSpec{
			{Name: "bcli", Prefixes: []netip.Prefix{netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("2001:db8:c::1/64")}},
			{Name: "bmem", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.1.0.1/24"), netip.MustParsePrefix("fd00:1::1/64")}},
		},
		Neighbours: []testutil.NeighbourSpec{{Link: "bcli", IP: gw4, MAC: dpGwMAC}, {Link: "bcli", IP: gw6, MAC: dpGwMAC}},
		Routes: []testutil.RouteSpec{
			{Dst: netip.MustParsePrefix("100.64.0.0/10"), Via: gw4, Link: "bcli"},
			{Dst: netip.MustParsePrefix("2001:db8:c1::/48"), Via: gw6, Link: "bcli"},
		},
	}
	for i := range dpMembers4 {
		n.Neighbours = append(n.Neighbours,
			testutil.NeighbourSpec{Link: "bmem", IP: dpMembers4[i], MAC: dpMemberMAC(i)},
			testutil.NeighbourSpec{Link: "bmem", IP: dpMembers6[i], MAC: dpMemberMAC(i)})
	}
	return n
}

func newDPWorld() (*testutil.World, error) {
	w, err := testutil.BuildWorld(dpNet())
	if err != nil {
		return nil, fmt.Errorf("micro benchmark namespace: %w", err)
	}
	err = w.Do(func() error {
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		return err
	})
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("micro benchmark namespace: lo: %w", err)
	}
	return w, nil
}

// Table sizes, with n the larger of LargeEntries and Repeat: at most n
// persisted clients plus n new ones, and two flow entries (forward and
// reverse) for each of 2n new connections; with room to spare, so that no
// LRU eviction happens during a measurement.
func dpSizes(o DatapathOptions) (flows, persist uint32) {
	n := uint32(max(o.LargeEntries, o.Repeat))
	return n*9/2 + 4096, n*5/2 + 4096
}

// dpState is the world's configuration: for each family (IPv4 with id 0,
// IPv6 with 1), the NAT virtual server on port 80 and one of each of
// DatapathModes, the mode's i-th at id 2+2i+family; each has its pool of the
// family's four members (pool id = virtual server id, member ids
// memberID) and its own persistence table.
func dpState(persistSize uint32) loader.State {
	s := loader.State{
		// The outer source of the encapsulations: the balancer's address
		// on the member side.
		Encap: loader.EncapSettings{SourceV4: dpBalancer4, SourceV6: dpBalancer6, GUEPort: loader.DefaultGUEPort},
	}
	add := func(vsID uint32, vip netip.Addr, port uint16, m DatapathMode, members []netip.Addr) {
		pool := loader.Pool{ID: loader.PoolID(vsID)}
		for i, a := range members {
			mid := loader.MemberID(vsID*uint32(len(members)) + uint32(i))
			pool.Eligible = append(pool.Eligible, mid)
			mem := loader.Member{ID: mid, PoolID: loader.PoolID(vsID), Addr: netip.AddrPortFrom(a, dpMemberPort), Up: true, NAT: true}
			if m.Name != "nat" {
				// DSR keeps the port: member port 0 means the virtual server's.
				mem.Addr, mem.NAT = netip.AddrPortFrom(a, 0), false
			}
			s.Members = append(s.Members, mem)
		}
		s.Pools = append(s.Pools, pool)
		tid := loader.NewTableID(vsID, true)
		s.Tables = append(s.Tables, loader.Table{ID: tid, MaxEntries: persistSize})
		s.VirtualServers = append(s.VirtualServers, loader.VirtualServer{
			ID: loader.VirtualServerID(vsID), VIP: netip.AddrPortFrom(vip, port), Proto: loader.ProtoTCP, PoolID: loader.PoolID(vsID),
			TableID: tid, IPv4Prefix: 32, IPv6Prefix: 128, Timeout: 300 * time.Second,
			DSR: m.Name != "nat", Encap: m.Encap,
		})
	}
	for _, fam := range dpFamilies {
		add(fam.vsID, fam.vip, dpVSPort, DatapathMode{Name: "nat"}, fam.members)
	}
	for i, m := range DatapathModes {
		for _, fam := range dpFamilies {
			add(modeVSID(i, fam), fam.vip, m.Port, m, fam.members)
		}
	}
	return s
}

// modeVSID is the virtual server of DatapathModes[i] in family fam.
func modeVSID(i int, fam dpFamily) uint32 { return uint32(len(dpFamilies)*(1+i)) + fam.vsID }

// dpFamily holds what differs between IPv4 and IPv6.
type dpFamily struct {
	name             string
	vsID             uint32
	vip, other       netip.Addr
	clientA, clientB netip.Addr
	members          []netip.Addr
}

var dpFamilies = []dpFamily{
	{"IPv4", 0, dpVIP4, dpOther4, dpClientA4, dpClientB4, dpMembers4},
	{"IPv6", 1, dpVIP6, dpOther6, dpClientA6, dpClientB6, dpMembers6},
}

// addN adds n to the last 32-bit word of a, as floor_drive does.
func addN(a netip.Addr, n uint32) netip.Addr {
	b := a.As16()
	v := uint32(b[12])<<24 | uint32(b[13])<<16 | uint32(b[14])<<8 | uint32(b[15])
	v += n
	b[12], b[13], b[14], b[15] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
	out := netip.AddrFrom16(b)
	if a.Is4() {
		return out.Unmap()
	}
	return out
}

// frame builds a packet whose length is a multiple of 8 (the driver copies
// 8 bytes at a time), padding the payload.
func frame(s packets.Spec) []byte {
	// gopacket pads Ethernet frames to 60 bytes, so grow the payload a
	// byte at a time rather than computing the padding.
	s.Payload = append([]byte(nil), s.Payload...)
	b := s.Bytes()
	for len(b)%8 != 0 {
		s.Payload = append(s.Payload, 0)
		b = s.Bytes()
	}
	return b
}

func tcpFrame(src, dst netip.AddrPort, flags string, smac, dmac net.HardwareAddr) []byte {
	s := packets.TCP(src, dst, flags)
	s.Seq, s.Ack = 1000, 2000
	s.SrcMAC, s.DstMAC = smac, dmac
	return frame(s)
}

// RunDatapath runs part 1: for each run, family and table size a fresh
// datapath (fresh tables), the five cases, each next to the floor.
func RunDatapath(ctx context.Context, o DatapathOptions) (*DatapathResult, error) {
	logf := o.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	w, err := newDPWorld()
	if err != nil {
		return nil, err
	}
	defer w.Close()
	fl, err := loader.LoadFloor()
	if err != nil {
		return nil, err
	}
	defer fl.Close()

	flowSize, persistSize := dpSizes(o)
	res := &DatapathResult{
		FloorPlain: map[string]Series{}, NonVIPPlain: map[string]Series{},
		Repeat: o.Repeat, FlowTableSize: flowSize, PersistTableSize: persistSize,
	}
	rows := map[DatapathKey]*DatapathRow{}
	for _, large := range []bool{false, true} {
		for _, fam := range dpFamilies {
			cases := DatapathCases
			if !large {
				for _, m := range DatapathModes {
					cases = append(cases[:len(cases):len(cases)], m.Hit, m.New)
				}
			}
			for _, c := range cases {
				k := DatapathKey{Case: c, Family: fam.name, Large: large}
				rows[k] = &DatapathRow{Key: k}
				res.Rows = append(res.Rows, rows[k])
			}
		}
	}
	for run := 0; run < o.Runs; run++ {
		for _, fam := range dpFamilies {
			// Without the driver, for reference.
			syn := tcpFrame(netip.AddrPortFrom(fam.clientA, dpPortPersistSmall), netip.AddrPortFrom(fam.vip, dpVSPort), "S", dpGwMAC, w.Client.MAC)
			err := addPlain(w, res.FloorPlain, fam.name, func() (loader.XDPAction, time.Duration, error) {
				return fl.BenchmarkFloor(syn, w.Client.Index, o.Repeat)
			})
			if err != nil {
				return nil, err
			}
			for _, large := range []bool{false, true} {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				start := time.Now()
				if err := dpRun(w, fl, o, fam, large, flowSize, persistSize, rows, res); err != nil {
					return nil, fmt.Errorf("run %d, %s, large=%v: %w", run+1, fam.name, large, err)
				}
				logf("datapath: run %d/%d %s %s table done in %.1fs", run+1, o.Runs, fam.name, map[bool]string{false: "small", true: "1M"}[large], time.Since(start).Seconds())
			}
			start := time.Now()
			if err := dpModesRun(w, fl, o, fam, flowSize, persistSize, rows); err != nil {
				return nil, fmt.Errorf("run %d, %s, forwarding modes: %w", run+1, fam.name, err)
			}
			logf("datapath: run %d/%d %s forwarding modes done in %.1fs", run+1, o.Runs, fam.name, time.Since(start).Seconds())
		}
	}
	return res, nil
}

// loadDP loads a fresh datapath with the world's state and fills its
// next-hop cache from the namespace's neighbours, as the daemon's watcher
// does; it returns the function that fills the cache again. The caller
// detaches the datapath.
func loadDP(w *testutil.World, flowSize, persistSize uint32) (*loader.Datapath, func() error, error) {
	pin := fmt.Sprintf("/sys/fs/bpf/limpet-bench-dp-%d", os.Getpid())
	_ = loader.Detach(pin) // a crashed earlier run of this pid, if any
	d, err := loader.Load(loader.Options{PinPath: pin, FlowTableSize: flowSize})
	if err != nil {
		return nil, nil, fmt.Errorf("load datapath: %w", err)
	}
	if err := d.Apply(dpState(persistSize)); err != nil {
		d.Detach()
		return nil, nil, err
	}
	// The interfaces' own MACs, as Attach learns them: every frame pays
	// for the destination check in full.
	for _, l := range []testutil.Link{w.Client, w.Member} {
		if err := d.SetInterfaceMAC(l.Index, l.MAC); err != nil {
			d.Detach()
			return nil, nil, err
		}
	}
	// The daemon's next-hop cache, resolved from the namespace's
	// neighbours as the daemon's watcher does; the FIB rows turn it off.
	publish, err := dpNextHops(w, d)
	if err != nil {
		d.Detach()
		return nil, nil, err
	}
	return d, publish, nil
}

// dpCase is one measurement of part 1: a template, how the driver varies
// it, and what limpet must do with every packet.
type dpCase struct {
	c       DatapathCase
	vsID    uint32 // whose counters check tells apart
	desc    string // the row's packets
	pkt     []byte
	ingress int
	sw      loader.Sweep
	want    loader.XDPAction
	check   func(before, after loader.VSCounters, n uint64) error
}

// addPlain runs bench, one packet's runs without the driver, on w's thread
// and adds its time per packet to series[fam].
func addPlain(w *testutil.World, series map[string]Series, fam string, bench func() (loader.XDPAction, time.Duration, error)) error {
	return w.Do(func() error {
		_, per, err := bench()
		if err != nil {
			return err
		}
		s := series[fam]
		s.Add(float64(per.Nanoseconds()))
		series[fam] = s
		return nil
	})
}

// dpMeasure runs one case through the driver, limpet then the floor (the
// floor leaves no state), checks limpet's verdict and counters, and adds
// the figures to row.
func dpMeasure(w *testutil.World, fl *loader.Floor, d *loader.Datapath, repeat int, fam dpFamily, row *DatapathRow, k dpCase) error {
	return w.Do(func() error {
		before, err := d.VSCounters(loader.VirtualServerID(k.vsID))
		if err != nil {
			return err
		}
		r, err := fl.Drive(d, k.pkt, k.sw, k.ingress, repeat)
		if err != nil {
			return fmt.Errorf("%s: %w", k.c, err)
		}
		if r.Verdict != k.want {
			return fmt.Errorf("%w: %s %s: verdict %v, want %v", errSanity, fam.name, k.c, r.Verdict, k.want)
		}
		after, err := d.VSCounters(loader.VirtualServerID(k.vsID))
		if err != nil {
			return err
		}
		if k.check != nil {
			if err := k.check(before, after, r.Packets); err != nil {
				return fmt.Errorf("%w: %s %s: %v", errSanity, fam.name, k.c, err)
			}
		}
		f, err := fl.Drive(nil, k.pkt, k.sw, k.ingress, repeat)
		if err != nil {
			return fmt.Errorf("%s floor: %w", k.c, err)
		}
		row.Limpet.Add(float64(r.PerPacket.Nanoseconds()))
		row.Floor.Add(float64(f.PerPacket.Nanoseconds()))
		row.Sweep = k.desc
		return nil
	})
}

// dpRun measures the NAT cases on one fresh datapath.
func dpRun(w *testutil.World, fl *loader.Floor, o DatapathOptions, fam dpFamily, large bool, flowSize, persistSize uint32, rows map[DatapathKey]*DatapathRow, res *DatapathResult) error {
	// The daemon's next-hop cache; the FIB rows turn it off.
	d, publish, err := loadDP(w, flowSize, persistSize)
	if err != nil {
		return err
	}
	defer d.Detach()
	table := loader.NewTableID(fam.vsID, true)
	vipPort := netip.AddrPortFrom(fam.vip, dpVSPort)
	member0 := netip.AddrPortFrom(fam.members[0], dpMemberPort)

	// The persisted clients, all on member 0 (so that one reply template,
	// from member 0, matches every reverse flow).
	persisted := o.SmallClients
	persistPort := uint16(dpPortPersistSmall)
	if large {
		persisted = o.LargeEntries
		persistPort = dpPortPersistLarge
	}
	now, err := d.Now()
	if err != nil {
		return err
	}
	entries := make([]loader.PersistEntry, persisted)
	for i := range entries {
		entries[i] = loader.PersistEntry{TableID: table, Client: addN(fam.clientA, uint32(i)), Server: member0,
			VSID: loader.VirtualServerID(fam.vsID), MemberID: memberID(fam, 0), Created: now, LastSeen: now}
	}
	if err := d.PutEntries(table, entries); err != nil {
		return fmt.Errorf("fill persistence table: %w", err)
	}

	measure := func(c DatapathCase, desc string, pkt []byte, ingress int, sw loader.Sweep, want loader.XDPAction, check func(before, after loader.VSCounters, n uint64) error) error {
		row := rows[DatapathKey{Case: c, Family: fam.name, Large: large}]
		row.Entries = persisted
		return dpMeasure(w, fl, d, o.Repeat, fam, row, dpCase{c: c, vsID: fam.vsID, desc: desc, pkt: pkt, ingress: ingress, sw: sw, want: want, check: check})
	}
	cliA := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(fam.clientA, port) }

	// 1. Non-VIP pass: host traffic, nothing changes.
	nonVIP := tcpFrame(cliA(persistPort), netip.AddrPortFrom(fam.other, dpVSPort), "S", dpGwMAC, w.Client.MAC)
	if err := measure(CaseNonVIP, "the same packet", nonVIP, w.Client.Index, loader.Sweep{}, loader.XDPPass, func(b, a loader.VSCounters, _ uint64) error {
		if a.Packets != b.Packets {
			return fmt.Errorf("non-VIP packets reached the virtual server (%d)", a.Packets-b.Packets)
		}
		return nil
	}); err != nil {
		return err
	}
	if !large {
		err := addPlain(w, res.NonVIPPlain, fam.name, func() (loader.XDPAction, time.Duration, error) {
			return d.BenchmarkPacket(nonVIP, o.Repeat)
		})
		if err != nil {
			return err
		}
	}

	// 2. Persistence hit on a new flow: every packet a SYN of a new
	// connection from a persisted client. Small: SmallClients clients, the
	// port advancing once per round; large: each of the clients once.
	sw := loader.Sweep{Clients: uint32(persisted), Ports: uint32((o.Repeat + persisted - 1) / persisted)}
	desc := fmt.Sprintf("each a new connection: %d clients × %d ports", sw.Clients, sw.Ports)
	if sw.Ports == 1 {
		desc = fmt.Sprintf("each a new connection: %d clients, one each", sw.Clients)
	}
	if err := measure(CasePersistHit, desc, tcpFrame(cliA(persistPort), vipPort, "S", dpGwMAC, w.Client.MAC), w.Client.Index, sw, loader.XDPRedirect,
		func(b, a loader.VSCounters, n uint64) error {
			if a.PersistHits-b.PersistHits != n || a.NewFlows-b.NewFlows != n {
				return fmt.Errorf("%d packets: %d persistence hits and %d new flows", n, a.PersistHits-b.PersistHits, a.NewFlows-b.NewFlows)
			}
			return nil
		}); err != nil {
		return err
	}

	// 3. Flow-table hit: data of the connections just opened. Small: one
	// flow; large: one flow of each client in turn.
	sw, desc = loader.Sweep{}, "one flow"
	if large {
		sw, desc = loader.Sweep{Clients: uint32(persisted)}, fmt.Sprintf("%d flows in turn", persisted)
	}
	if err := measure(CaseFlowHit, desc, tcpFrame(cliA(persistPort), vipPort, "A", dpGwMAC, w.Client.MAC), w.Client.Index, sw, loader.XDPRedirect, flowHits); err != nil {
		return err
	}
	replied := func(b, a loader.VSCounters, n uint64) error {
		if a.ReplyPackets-b.ReplyPackets != n {
			return fmt.Errorf("%d replies, %d rewritten", n, a.ReplyPackets-b.ReplyPackets)
		}
		return nil
	}
	reply := tcpFrame(member0, cliA(persistPort), "A", dpMemberMAC(0), w.Member.MAC)
	replySweep := sw
	replySweep.Reply = true

	// 3b and 4b. The same with the cache off: a FIB lookup per packet.
	if err := d.DropNextHops(); err != nil {
		return err
	}
	if err := measure(CaseFlowHitFIB, desc, tcpFrame(cliA(persistPort), vipPort, "A", dpGwMAC, w.Client.MAC), w.Client.Index, sw, loader.XDPRedirect, flowHits); err != nil {
		return err
	}
	if err := measure(CaseReverseFIB, desc, reply, w.Member.Index, replySweep, loader.XDPRedirect, replied); err != nil {
		return err
	}
	if err := publish(); err != nil {
		return err
	}

	// 4. Reverse NAT: member 0 answers those connections; each flow's
	// first reply stores its next hop (a FIB lookup), the others use it.
	if err := measure(CaseReverse, desc, reply, w.Member.Index, replySweep, loader.XDPRedirect, replied); err != nil {
		return err
	}

	// 5. New client: a client never seen, every packet; the pool chooses
	// and the entry and both flow entries are inserted.
	sw = loader.Sweep{Clients: uint32(o.Repeat) * 2} // never wraps, even if a signal restarts the run
	syn := tcpFrame(netip.AddrPortFrom(fam.clientB, dpPortNew), vipPort, "S", dpGwMAC, w.Client.MAC)
	return measure(CaseNewClient, "each from a new client", syn, w.Client.Index, sw, loader.XDPRedirect, newClients)
}

// newClients checks a new-client case: every packet a persistence miss
// and a new flow.
func newClients(b, a loader.VSCounters, n uint64) error {
	if a.PersistMisses-b.PersistMisses != n || a.NewFlows-b.NewFlows != n {
		return fmt.Errorf("%d packets: %d misses and %d new flows", n, a.PersistMisses-b.PersistMisses, a.NewFlows-b.NewFlows)
	}
	return nil
}

// flowHits checks a flow-hit case: every packet counted, no new flow.
func flowHits(b, a loader.VSCounters, n uint64) error {
	if a.NewFlows != b.NewFlows || a.Packets-b.Packets != n {
		return fmt.Errorf("%d packets: %d counted, %d new flows", n, a.Packets-b.Packets, a.NewFlows-b.NewFlows)
	}
	return nil
}

// dpModesRun measures DatapathModes on one fresh datapath of the small
// world, in turn: for each mode a new client on every packet, then a
// flow-table hit of the first of those connections (the one of the
// template's own address and port).
func dpModesRun(w *testutil.World, fl *loader.Floor, o DatapathOptions, fam dpFamily, flowSize, persistSize uint32, rows map[DatapathKey]*DatapathRow) error {
	d, _, err := loadDP(w, flowSize, persistSize)
	if err != nil {
		return err
	}
	defer d.Detach()
	client := netip.AddrPortFrom(fam.clientB, dpPortNew)
	for i, m := range DatapathModes {
		vs := netip.AddrPortFrom(fam.vip, m.Port)
		vsID := modeVSID(i, fam)
		for _, k := range []dpCase{
			{c: m.New, desc: "each from a new client", pkt: tcpFrame(client, vs, "S", dpGwMAC, w.Client.MAC),
				sw: loader.Sweep{Clients: uint32(o.Repeat) * 2}, check: newClients},
			{c: m.Hit, desc: "one flow", pkt: tcpFrame(client, vs, "A", dpGwMAC, w.Client.MAC), check: flowHits},
		} {
			k.vsID, k.ingress, k.want = vsID, w.Client.Index, loader.XDPRedirect
			row := rows[DatapathKey{Case: k.c, Family: fam.name}]
			row.Entries = o.SmallClients
			if err := dpMeasure(w, fl, d, o.Repeat, fam, row, k); err != nil {
				return err
			}
		}
	}
	return nil
}

// dpNextHops fills d's next-hop cache from the namespace's routes and
// neighbours, and returns the function that fills it again.
func dpNextHops(w *testutil.World, d *loader.Datapath) (func() error, error) {
	var targets []nexthop.Target
	for _, m := range dpState(0).Members {
		targets = append(targets, nexthop.Target{Member: m.ID, Addr: m.Addr.Addr()})
	}
	publish := func() error {
		return w.Do(func() error {
			res, err := nexthop.ResolveHere(targets)
			if err != nil {
				return err
			}
			if len(res.Unresolved) > 0 {
				return fmt.Errorf("%w: next hops unresolved: %v", errSanity, res.Unresolved)
			}
			_, err = d.PublishNextHops(res.Hops, time.Hour)
			return err
		})
	}
	return publish, publish()
}

func memberID(fam dpFamily, i int) loader.MemberID {
	return loader.MemberID(fam.vsID*uint32(len(dpMembers4)) + uint32(i))
}
