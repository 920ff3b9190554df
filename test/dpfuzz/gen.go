package dpfuzz

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"github.com/limpet-lb/limpet/test/model"
	"github.com/limpet-lb/limpet/test/testutil"
	"github.com/limpet-lb/limpet/userspace/pooltable"
)

// An input is a header that chooses the configuration, then operations of
// opSize bytes each: a packet from a client, a member's reply, the clock
// moving on, a member changing state, a sweep, a reload. Removing an
// operation's bytes removes that operation, which is what the minimiser
// does; bytes past the end read as zero.
const (
	headerSize = 64
	opSize     = 16
	maxOps     = 4096
)

// reader hands out an input's bytes as choices.
type reader struct {
	b   []byte
	pos int
}

func (r *reader) u8() byte {
	if r.pos >= len(r.b) {
		r.pos++
		return 0
	}
	v := r.b[r.pos]
	r.pos++
	return v
}

func (r *reader) u16() uint16 { return uint16(r.u8())<<8 | uint16(r.u8()) }

// pick is a choice among n.
func (r *reader) pick(n int) int {
	if n <= 0 {
		return 0
	}
	return int(r.u8()) % n
}

// chance is true pct times in a hundred (over the byte's 256 values).
func (r *reader) chance(pct int) bool { return int(r.u8())*100 < pct*256 }

// weighted picks an index with the given weights.
func (r *reader) weighted(ws ...int) int {
	total := 0
	for _, w := range ws {
		total += w
	}
	v := int(r.u8()) * total / 256
	for i, w := range ws {
		if v < w {
			return i
		}
		v -= w
	}
	return len(ws) - 1
}

// Address pools. Members are mostly reachable ones; the rest exercise every
// FIB answer. Clients include some that share a prefix, one whose masked
// prefix is a VIP, unrouted and unresolved ones, and a member.
var (
	goodMembers = [2][]netip.Addr{testutil.Member4, testutil.Member6}
	badMembers  = [2][]netip.Addr{
		{testutil.Unresolved4, netip.MustParseAddr("10.9.0.5"), netip.MustParseAddr("10.9.1.5"), netip.MustParseAddr("10.9.2.5"),
			netip.MustParseAddr("10.1.0.1"), netip.MustParseAddr("172.31.0.5")},
		{testutil.Unresolved6, netip.MustParseAddr("2001:db8:b0::5"), netip.MustParseAddr("2001:db8:b1::5"), netip.MustParseAddr("2001:db8:b2::5"),
			netip.MustParseAddr("fd00:1::1"), netip.MustParseAddr("2001:db8:dead::5")},
	}
	vipPool = [2][]netip.Addr{
		{testutil.VIP4, netip.MustParseAddr("203.0.113.11"), netip.MustParseAddr("198.51.100.0")},
		{testutil.VIP6, netip.MustParseAddr("2001:db8:f::11"), netip.MustParseAddr("2001:db8:c1::")},
	}
	clientPool = [2][]netip.Addr{
		{netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("198.51.100.8"), netip.MustParseAddr("198.51.100.9"),
			netip.MustParseAddr("198.51.100.200"), netip.MustParseAddr("198.51.100.129"), netip.MustParseAddr("100.64.0.7"),
			netip.MustParseAddr("192.0.2.50"), testutil.Member4[0]},
		{netip.MustParseAddr("2001:db8:c1::7"), netip.MustParseAddr("2001:db8:c1::8"), netip.MustParseAddr("2001:db8:c1:1::7"),
			netip.MustParseAddr("2001:db8:c1:ffff::9"), netip.MustParseAddr("2001:db8:c2::7"), netip.MustParseAddr("2001:db8:c::50"),
			testutil.Member6[0]},
	}
	otherDst     = [2]netip.Addr{netip.MustParseAddr("203.0.113.99"), netip.MustParseAddr("2001:db8:f::99")}
	vsPorts      = []uint16{80, 53, 443, 8080}
	memberPorts  = []uint16{8080, 8081, 0, 80}
	clientPorts  = []uint16{1000, 1001, 1002, 40000, 65535, 53}
	tableIDs     = []uint32{0, 1, 2, 5, 1023}
	capacities   = []int{2, 4, 8, 1024}
	timeouts     = []time.Duration{time.Second, 5 * time.Second, 300 * time.Second}
	v4Prefixes   = []uint8{32, 32, 24, 16, 0, 31, 25, 28}
	v6Prefixes   = []uint8{128, 128, 64, 48, 0, 127, 56, 120}
	maglevSizes  = []int{7, 13, 31, 251}
	idleUDP      = []time.Duration{2 * time.Second, 5 * time.Second, 300 * time.Second}
	idleFin      = []time.Duration{time.Second, 120 * time.Second}
	idleEstab    = []time.Duration{10 * time.Second, 900 * time.Second}
	memberStates = []string{"enabled", "graceful_disabled", "disabled"}
)

func famIdx(a netip.Addr) int {
	if a.Is4() {
		return 0
	}
	return 1
}

// scenario is a generated configuration plus what the generator needs to
// change it: member states and weights, and the sweeper's timeouts.
type scenario struct {
	cfg         model.Config
	family      map[uint32]int // pool id to family
	state       map[uint32]string
	weight      map[uint32]int
	maglevSize  map[uint32]int
	idle        idleTimeouts
	tableTmo    map[uint32]time.Duration
	clients     [2][]netip.Addr
	memberNames map[uint32]string
}

type idleTimeouts struct{ udp, fin, estab time.Duration }

// genScenario builds a configuration from the header.
// encapSource is the balancer's outer source of tunnels, by family: its
// address on the member link.
var encapSource = [2]netip.Addr{netip.MustParseAddr("10.1.0.1"), netip.MustParseAddr("fd00:1::1")}

func genScenario(h *reader, net model.Network) *scenario {
	sc := &scenario{
		family: map[uint32]int{}, state: map[uint32]string{}, weight: map[uint32]int{},
		maglevSize: map[uint32]int{}, tableTmo: map[uint32]time.Duration{}, memberNames: map[uint32]string{},
	}
	cfg := model.Config{Network: net, DecrementTTL: true, Encap: model.EncapSettings{
		SourceV4: encapSource[0], SourceV6: encapSource[1], GUEPort: 6080}}
	nTables := h.pick(4)
	var tables []uint32
	for i := 0; i < nTables; i++ {
		id := tableIDs[h.pick(len(tableIDs))]
		dup := false
		for _, t := range tables {
			dup = dup || t == id
		}
		if dup {
			continue
		}
		tables = append(tables, id)
		cfg.Tables = append(cfg.Tables, model.Table{ID: id, Capacity: capacities[h.pick(len(capacities))], Purge: h.chance(50)})
	}
	nPools := 1 + h.pick(3)
	var memberID uint32
	for p := 0; p < nPools; p++ {
		fam := h.pick(2)
		pool := model.Pool{ID: uint32(p), Algorithm: model.Algorithm(h.pick(5))}
		sc.family[pool.ID] = fam
		sc.maglevSize[pool.ID] = maglevSizes[h.pick(len(maglevSizes))]
		n := 1 + h.pick(6)
		seen := map[netip.AddrPort]bool{}
		for i := 0; i < n; i++ {
			var a netip.Addr
			if h.chance(85) {
				a = goodMembers[fam][h.pick(len(goodMembers[fam]))]
			} else {
				a = badMembers[fam][h.pick(len(badMembers[fam]))]
			}
			port := memberPorts[h.pick(len(memberPorts))]
			for seen[netip.AddrPortFrom(a, port)] {
				port++
			}
			seen[netip.AddrPortFrom(a, port)] = true
			mem := model.Member{ID: memberID, Pool: pool.ID, Addr: netip.AddrPortFrom(a, port)}
			switch h.weighted(80, 8, 12) {
			case 0:
				sc.state[mem.ID] = "enabled"
			case 1:
				sc.state[mem.ID] = "graceful_disabled"
			default:
				sc.state[mem.ID] = "disabled"
			}
			sc.weight[mem.ID] = 1 + h.pick(4)
			mem.MaxConns = []uint32{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 8}[h.pick(16)]
			sc.memberNames[mem.ID] = fmt.Sprintf("p%d-m%d", p, i)
			cfg.Members = append(cfg.Members, mem)
			memberID++
		}
		cfg.Pools = append(cfg.Pools, pool)
	}
	nVS := 1 + h.pick(4)
	used := map[netip.AddrPort]map[uint8]bool{}
	for i := 0; i < nVS; i++ {
		pool := uint32(h.pick(nPools))
		fam := sc.family[pool]
		proto := uint8(6)
		if h.chance(35) {
			proto = 17
		}
		vip := netip.AddrPortFrom(vipPool[fam][h.pick(len(vipPool[fam]))], vsPorts[h.pick(len(vsPorts))])
		for used[vip][proto] {
			vip = netip.AddrPortFrom(vip.Addr(), vip.Port()+1)
		}
		if used[vip] == nil {
			used[vip] = map[uint8]bool{}
		}
		used[vip][proto] = true
		vs := model.VirtualServer{
			ID: uint32(i), VIP: vip, Proto: proto, Pool: pool,
			V4Prefix: v4Prefixes[h.pick(len(v4Prefixes))], V6Prefix: v6Prefixes[h.pick(len(v6Prefixes))],
			Timeout: timeouts[h.pick(len(timeouts))],
		}
		if h.chance(25) {
			// A third each of dsr, ipip and gue, told by the VIP rather
			// than by another draw, so that a seed generates the same
			// sequence as before the tunnels existed.
			vs.Mode = []model.Mode{model.DSR, model.IPIP, model.GUE}[(int(vip.Port())+i)%3]
			if vs.Mode != model.DSR && (int(vip.Port())/3+i)%2 == 1 {
				// Half the tunnels cross families: a VIP of the other
				// family than its pool's members (IPv6-in-IPv4 for a
				// v6 VIP whose members have only v4 addresses, and
				// IPv4-in-IPv6), as ipip and gue allow. Again no draw.
				delete(used[vip], proto)
				vip = mixedVIP(vip, used, proto)
				vs.VIP = vip
			}
		}
		if h.chance(30) {
			vs.ServerDown = model.Never
		}
		switch {
		case len(tables) > 0 && h.chance(75):
			vs.Persist, vs.Table = true, tables[h.pick(len(tables))]
			// A shared table's entries expire by each virtual server's
			// own timeout; the sweeper uses the first one's.
			if _, ok := sc.tableTmo[vs.Table]; !ok {
				sc.tableTmo[vs.Table] = vs.Timeout
			}
		case h.chance(2):
			vs.Persist, vs.Table = true, 77 // a table that is not loaded
		}
		cfg.VirtualServers = append(cfg.VirtualServers, vs)
	}
	sc.idle = idleTimeouts{idleUDP[h.pick(len(idleUDP))], idleFin[h.pick(len(idleFin))], idleEstab[h.pick(len(idleEstab))]}
	sc.cfg = cfg
	sc.rebuild()
	sc.clients = clientPool
	return sc
}

// mixedVIP is vip's counterpart in the other family (the same place in
// vipPool, the same port), moved up a port until no virtual server of
// proto uses it, and marked used.
func mixedVIP(vip netip.AddrPort, used map[netip.AddrPort]map[uint8]bool, proto uint8) netip.AddrPort {
	fam := famIdx(vip.Addr())
	idx := 0
	for j, a := range vipPool[fam] {
		if a == vip.Addr() {
			idx = j
		}
	}
	out := netip.AddrPortFrom(vipPool[1-fam][idx], vip.Port())
	for used[out][proto] {
		out = netip.AddrPortFrom(out.Addr(), out.Port()+1)
	}
	if used[out] == nil {
		used[out] = map[uint8]bool{}
	}
	used[out][proto] = true
	return out
}

// rebuild derives what the control plane derives from member states: who
// is up, the NAT flag, and every pool's eligible list and table, as
// userspace/plan does.
func (sc *scenario) rebuild() {
	nat := map[uint32]bool{}
	for _, vs := range sc.cfg.VirtualServers {
		if vs.Mode == model.NAT {
			nat[vs.Pool] = true
		}
	}
	for i := range sc.cfg.Members {
		m := &sc.cfg.Members[i]
		m.Up = sc.state[m.ID] != "disabled"
		m.NAT = nat[m.Pool]
	}
	for i := range sc.cfg.Pools {
		p := &sc.cfg.Pools[i]
		p.Eligible, p.Weights, p.Table = nil, nil, nil
		var keys []string
		var weights []int
		for _, m := range sc.cfg.Members {
			if m.Pool != p.ID || sc.state[m.ID] != "enabled" {
				continue
			}
			p.Eligible = append(p.Eligible, m.ID)
			p.Weights = append(p.Weights, uint16(sc.weight[m.ID]))
			keys = append(keys, sc.memberNames[m.ID])
			weights = append(weights, sc.weight[m.ID])
		}
		switch p.Algorithm {
		case model.WeightedRoundRobin:
			for _, i := range pooltable.Schedule(weights) {
				p.Table = append(p.Table, p.Eligible[i])
			}
		case model.IPHash:
			idx, err := pooltable.Maglev(keys, weights, sc.maglevSize[p.ID])
			if err != nil {
				panic(err) // sizes are primes and weights positive
			}
			for _, i := range idx {
				p.Table = append(p.Table, p.Eligible[i])
			}
		}
	}
}

// opKind is what an operation does.
type opKind int

const (
	opClient opKind = iota
	opReply
	opAdvance
	opMember
	opSweep
	opEntry
	opReload
	opICMP
)

// kindOf weighs the operations: mostly packets; member changes and reloads
// are rarer, as they are in life (and each waits for an RCU grace period
// when it swaps a pool's table).
func kindOf(b byte) opKind {
	switch {
	case b < 155:
		return opClient
	case b < 201:
		return opReply
	case b < 213:
		return opICMP
	case b < 232:
		return opAdvance
	case b < 234:
		return opMember
	case b < 247:
		return opSweep
	case b < 255:
		return opEntry
	}
	return opReload
}

// mangle is what spoils a generated packet once it is serialised.
type mangle struct {
	kind  int
	param byte
}

// Mangles applied to a serialised packet.
const (
	mgNone = iota
	mgBadIPCsum
	mgBadL4Csum
	mgUDPZeroCsum
	mgTruncate
	mgLongerIPLen
	mgShorterIPLen
	mgUDPLen
	mgTCPDoff
	mgPadding
	mgVersion
	mgIHL
)

func genMangle(r *reader) mangle {
	k := r.weighted(70, 3, 4, 4, 5, 2, 2, 2, 2, 4, 1, 1)
	return mangle{kind: k, param: r.u8()}
}

// tcpFlagSets are the flag combinations a client or member sends, weighted
// towards the ordinary ones.
var tcpFlagSets = []struct {
	flags  string
	weight int
}{
	{"S", 22}, {"A", 18}, {"PA", 14}, {"FA", 10}, {"R", 4}, {"RA", 3}, {"F", 3}, {"SA", 4},
	{"", 2}, {"SF", 2}, {"SR", 1}, {"U", 1}, {"SE", 1}, {"SAC", 1}, {"FPAU", 1},
}

func genFlags(r *reader) string {
	ws := make([]int, len(tcpFlagSets))
	for i, f := range tcpFlagSets {
		ws[i] = f.weight
	}
	return tcpFlagSets[r.weighted(ws...)].flags
}

var payloadSizes = []int{0, 0, 1, 5, 12, 100, 1400, 1452, 1472, 1480, 1600, 3000}

func genPayload(r *reader) []byte {
	n := payloadSizes[r.weighted(20, 10, 6, 10, 10, 14, 6, 3, 3, 3, 3, 2)]
	b := make([]byte, n)
	seed := r.u8()
	for i := range b {
		b[i] = byte(i) ^ seed
	}
	return b
}

func genTTL(r *reader) (uint8, bool) {
	switch r.weighted(85, 5, 5, 2, 3) {
	case 1:
		return 1, false
	case 2:
		return 2, false
	case 3:
		return 0, true
	case 4:
		return 255, false
	}
	return 64, false
}

func seq32(r *reader) uint32 { return binary.BigEndian.Uint32([]byte{r.u8(), r.u8(), r.u8(), r.u8()}) }
