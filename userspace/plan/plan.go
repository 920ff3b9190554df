// Package plan translates a config into the datapath's map contents, and
// keeps the ids it assigns stable across reloads and restarts so open flows
// and persistence entries keep meaning the same thing.
package plan

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/userspace/config"
	"github.com/limpet-lb/limpet/userspace/ids"
	"github.com/limpet-lb/limpet/userspace/pooltable"
)

// Meta is stored next to the pinned maps: the names behind every id, so that
// a CLI with no daemon can label what it reads, and a restarted daemon
// reuses the same ids.
type Meta struct {
	Version        int                 `json:"version"`
	AppliedAt      time.Time           `json:"applied_at"`
	VirtualServers []VirtualServerMeta `json:"virtual_servers"`
	Pools          []PoolMeta          `json:"pools"`
	Members        []MemberMeta        `json:"members"`
	Tables         []TableMeta         `json:"tables"`
	// AdminDown lists members taken down with 'limpet member disable', by
	// member key; they stay down across reloads until enabled again.
	AdminDown    []string            `json:"admin_down,omitempty"`
	IdleTimeouts config.IdleTimeouts `json:"idle_timeouts"`
	// AdminSocket is where the daemon that wrote this serves its admin
	// API, so that the CLI finds it from the pin path alone whatever
	// settings.admin_socket says. Set by the daemon, not by Build.
	AdminSocket string `json:"admin_socket,omitempty"`
}

// VirtualServerMeta names a virtual server id.
type VirtualServerMeta struct {
	ID         uint32 `json:"id"`
	Name       string `json:"name"`
	Address    string `json:"address"`
	Port       int    `json:"port"`
	Protocol   string `json:"protocol"`
	Forwarding string `json:"forwarding"`
	Pool       string `json:"pool"`
	Profile    string `json:"profile,omitempty"`
	TableID    uint32 `json:"table_id"`
}

// PoolMeta names a pool id.
type PoolMeta struct {
	ID              uint32 `json:"id"`
	Name            string `json:"name"`
	Algorithm       string `json:"algorithm"`
	MaglevTableSize int    `json:"maglev_table_size,omitempty"`
}

// MemberMeta names a member id.
type MemberMeta struct {
	ID      uint32 `json:"id"`
	Key     string `json:"key"`
	Pool    string `json:"pool"`
	Name    string `json:"name"`
	Address string `json:"address"`
	Port    int    `json:"port"`
	State   string `json:"state"` // as configured
	Weight  int    `json:"weight"`
	// MaxConnections caps active connections; 0: no limit.
	MaxConnections int `json:"max_connections,omitempty"`
	// AdminDown is set by 'limpet member disable' and wins over State.
	AdminDown bool `json:"admin_down,omitempty"`
	// NAT: a NAT virtual server uses the member's pool, so its replies are
	// rewritten back to the VIP.
	NAT bool `json:"nat,omitempty"`
}

// Effective is the state the datapath enforces.
func (m *MemberMeta) Effective() string {
	if m.AdminDown {
		return config.MemberDisabled
	}
	return m.State
}

// Errors of FindMember.
var (
	ErrNoMember        = errors.New("no such member")
	ErrAmbiguousMember = errors.New("ambiguous member")
)

// FindMember finds a pool's member by name, address or address:port.
func (m *Meta) FindMember(pool, which string) (*MemberMeta, error) {
	var hits []*MemberMeta
	ap, apErr := netip.ParseAddrPort(which)
	a, aErr := netip.ParseAddr(which)
	poolKnown := false
	for i := range m.Members {
		mm := &m.Members[i]
		if mm.Pool != pool {
			continue
		}
		poolKnown = true
		switch {
		case mm.Name == which,
			apErr == nil && mm.Address == ap.Addr().Unmap().String() && mm.Port == int(ap.Port()),
			aErr == nil && mm.Address == a.Unmap().String():
			hits = append(hits, mm)
		}
	}
	switch {
	case !poolKnown:
		return nil, fmt.Errorf("%w: no pool %q serves l4 virtual servers", ErrNoMember, pool)
	case len(hits) == 0:
		return nil, fmt.Errorf("%w: pool %q has no member %q", ErrNoMember, pool, which)
	case len(hits) > 1:
		return nil, fmt.Errorf("%w: %q matches %d members of pool %q; give address:port", ErrAmbiguousMember, which, len(hits), pool)
	}
	return hits[0], nil
}

// SetAdminDown records an operator's enable or disable of a member and
// returns the datapath view of its pool, with health verdicts applied.
func (m *Meta) SetAdminDown(id uint32, adminDown bool, healthDown map[string]bool) (loader.Pool, []loader.Member, error) {
	mm := m.Member(id)
	if mm == nil {
		return loader.Pool{}, nil, fmt.Errorf("%w: no member with id %d", ErrNoMember, id)
	}
	mm.AdminDown = adminDown
	m.AdminDown = m.AdminDown[:0]
	for _, o := range m.Members {
		if o.AdminDown {
			m.AdminDown = append(m.AdminDown, o.Key)
		}
	}
	sort.Strings(m.AdminDown)
	return m.PoolState(mm.Pool, healthDown)
}

var algorithms = map[string]uint32{
	config.AlgoRoundRobin:              loader.AlgoRoundRobin,
	config.AlgoWeightedRoundRobin:      loader.AlgoWeightedRoundRobin,
	config.AlgoLeastConnection:         loader.AlgoLeastConnection,
	config.AlgoWeightedLeastConnection: loader.AlgoWeightedLeastConnection,
	config.AlgoIPHash:                  loader.AlgoIPHash,
}

// buildPool describes a pool to the datapath: the members that may take new
// clients (enabled, in config order), their weights, and the schedule or
// Maglev table its algorithm balances with.
func buildPool(pm PoolMeta, members []MemberMeta) (loader.Pool, error) {
	pool := loader.Pool{ID: pm.ID, Algorithm: algorithms[pm.Algorithm]}
	var keys []string
	var weights []int
	for _, m := range members {
		if m.Effective() != config.MemberEnabled {
			continue
		}
		w := max(m.Weight, 1)
		pool.Eligible = append(pool.Eligible, m.ID)
		pool.Weights = append(pool.Weights, uint16(w))
		keys = append(keys, m.Key)
		weights = append(weights, w)
	}
	switch pm.Algorithm {
	case config.AlgoWeightedRoundRobin:
		for _, i := range pooltable.Schedule(weights) {
			pool.Table = append(pool.Table, pool.Eligible[i])
		}
	case config.AlgoIPHash:
		if len(keys) == 0 {
			break
		}
		size := pm.MaglevTableSize
		if size == 0 {
			size = config.DefaultMaglevTableSize
		}
		idx, err := pooltable.Maglev(keys, weights, size)
		if err != nil {
			return pool, fmt.Errorf("pool %s: %w", pm.Name, err)
		}
		pool.Table = make([]uint32, len(idx))
		for i, k := range idx {
			pool.Table[i] = pool.Eligible[k]
		}
	}
	return pool, nil
}

// TableMeta describes a persistence table.
type TableMeta struct {
	ID            uint32       `json:"id"`
	Key           string       `json:"key"`
	Profile       string       `json:"profile"`
	Shared        bool         `json:"shared"`
	VirtualServer string       `json:"virtual_server,omitempty"` // private tables only
	Timeout       int          `json:"timeout"`                  // seconds
	MaxEntries    int          `json:"max_entries"`
	PurgeWhenFull bool         `json:"purge_when_full"`
	IPv4Prefix    int          `json:"ipv4_prefix"`
	IPv6Prefix    int          `json:"ipv6_prefix"`
	ServerDown    string       `json:"server_down"`
	HAMirroring   bool         `json:"ha_mirroring"`
	Tags          []config.Tag `json:"tags,omitempty"`
}

const metaVersion = 1

// MemberKey identifies a member across reloads: its pool, address and port.
// Renaming a member keeps its id; moving it to another address does not.
func MemberKey(pool string, addr netip.Addr, port int) string {
	return fmt.Sprintf("%s/%s", pool, netip.AddrPortFrom(addr.Unmap(), uint16(port)))
}

// idAllocator hands out the smallest free id, reusing previous ids by key.
type idAllocator struct {
	prev  map[string]uint32
	used  map[uint32]bool
	limit uint32
	what  string
}

func newAllocator(what string, limit uint32, prev map[string]uint32, wanted []string) *idAllocator {
	a := &idAllocator{prev: map[string]uint32{}, used: map[uint32]bool{}, limit: limit, what: what}
	want := map[string]bool{}
	for _, k := range wanted {
		want[k] = true
	}
	// Reserve the previous ids of everything still configured first, so a
	// new object never takes the id an existing one keeps.
	for k, id := range prev {
		if want[k] && id < limit {
			a.prev[k] = id
			a.used[id] = true
		}
	}
	return a
}

func (a *idAllocator) get(key string) (uint32, error) {
	if id, ok := a.prev[key]; ok {
		return id, nil
	}
	for id := uint32(0); id < a.limit; id++ {
		if !a.used[id] {
			a.used[id] = true
			a.prev[key] = id
			return id, nil
		}
	}
	return 0, fmt.Errorf("more than %d %s", a.limit, a.what)
}

// Build computes the datapath state for the l4 virtual servers of cfg,
// reusing the ids in prev (which may be nil).
func Build(cfg *config.Config, prev *Meta) (loader.State, *Meta, error) {
	var st loader.State
	meta := &Meta{Version: metaVersion, AppliedAt: time.Now().UTC(), IdleTimeouts: cfg.Settings.IdleTimeouts}
	if prev == nil {
		prev = &Meta{}
	}
	adminDown := map[string]bool{}
	for _, k := range prev.AdminDown {
		adminDown[k] = true
	}

	var l4 []config.VirtualServer
	for _, vs := range cfg.VirtualServers {
		if vs.Type == config.VSTypeL4 {
			l4 = append(l4, vs)
		}
	}

	// Which pools serve l4 traffic, and in which modes.
	poolNAT := map[string]bool{}
	poolUsed := map[string]bool{}
	for _, vs := range l4 {
		poolUsed[vs.Pool] = true
		if vs.Forwarding == config.ForwardNAT {
			poolNAT[vs.Pool] = true
		}
	}

	prevPools, prevMembers, prevVS, prevTables := map[string]uint32{}, map[string]uint32{}, map[string]uint32{}, map[string]uint32{}
	for _, p := range prev.Pools {
		prevPools[p.Name] = p.ID
	}
	for _, m := range prev.Members {
		prevMembers[m.Key] = m.ID
	}
	for _, v := range prev.VirtualServers {
		prevVS[v.Name] = v.ID
	}
	for _, t := range prev.Tables {
		prevTables[t.Key] = loader.TableIndex(t.ID)
	}

	var poolNames, memberKeys, vsNames, tableKeys []string
	for _, p := range cfg.Pools {
		if !poolUsed[p.Name] {
			continue
		}
		poolNames = append(poolNames, p.Name)
		for _, m := range p.Members {
			memberKeys = append(memberKeys, MemberKey(p.Name, netip.MustParseAddr(m.Address), m.Port))
		}
	}
	for _, vs := range l4 {
		vsNames = append(vsNames, vs.Name)
		if p := cfg.Profile(vs.Persistence); p != nil {
			tableKeys = append(tableKeys, ids.TableOf(p.Name, p.SharePersistence, vs.Name).String())
		}
	}
	poolIDs := newAllocator("pools", loader.MaxPools, prevPools, poolNames)
	memberIDs := newAllocator("members", loader.MaxMembers, prevMembers, memberKeys)
	vsIDs := newAllocator("l4 virtual servers", loader.MaxVirtualServers, prevVS, vsNames)
	tableIDs := newAllocator("persistence tables", loader.MaxPersistTables, prevTables, tableKeys)

	poolID := map[string]uint32{}
	for _, p := range cfg.Pools {
		if !poolUsed[p.Name] {
			continue
		}
		pid, err := poolIDs.get(p.Name)
		if err != nil {
			return st, nil, err
		}
		poolID[p.Name] = pid
		pm := PoolMeta{ID: pid, Name: p.Name, Algorithm: p.Algorithm, MaglevTableSize: p.MaglevTableSize}
		meta.Pools = append(meta.Pools, pm)
		for _, m := range p.Members {
			addr := netip.MustParseAddr(m.Address).Unmap()
			key := MemberKey(p.Name, addr, m.Port)
			mid, err := memberIDs.get(key)
			if err != nil {
				return st, nil, err
			}
			if adminDown[key] {
				meta.AdminDown = append(meta.AdminDown, key)
			}
			meta.Members = append(meta.Members, MemberMeta{ID: mid, Key: key, Pool: p.Name, Name: m.Name, Address: addr.String(),
				Port: m.Port, State: m.State, AdminDown: adminDown[key], Weight: m.Weight, MaxConnections: m.MaxConnections, NAT: poolNAT[p.Name]})
		}
	}

	tableByKey := map[string]uint32{}
	for _, vs := range l4 {
		vid, err := vsIDs.get(vs.Name)
		if err != nil {
			return st, nil, err
		}
		vip := netip.MustParseAddr(vs.Address).Unmap()
		lv := loader.VirtualServer{
			ID: vid, VIP: netip.AddrPortFrom(vip, uint16(vs.Port)), PoolID: poolID[vs.Pool],
			TableID: loader.TableNone, DSR: vs.Forwarding == config.ForwardDSR, Proto: loader.ProtoTCP,
		}
		if vs.Protocol == config.ProtoUDP {
			lv.Proto = loader.ProtoUDP
		}
		vm := VirtualServerMeta{ID: vid, Name: vs.Name, Address: vip.String(), Port: vs.Port, Protocol: vs.Protocol,
			Forwarding: vs.Forwarding, Pool: vs.Pool, Profile: vs.Persistence, TableID: loader.TableNone}
		if p := cfg.Profile(vs.Persistence); p != nil {
			key := ids.TableOf(p.Name, p.SharePersistence, vs.Name).String()
			tid, ok := tableByKey[key]
			if !ok {
				idx, err := tableIDs.get(key)
				if err != nil {
					return st, nil, err
				}
				tid = loader.TableID(idx, *p.PurgeWhenFull)
				tableByKey[key] = tid
				st.Tables = append(st.Tables, loader.Table{ID: tid, MaxEntries: uint32(*p.MaxEntries), Mirror: p.HAMirroring})
				tm := TableMeta{ID: tid, Key: key, Profile: p.Name, Shared: p.SharePersistence,
					Timeout: *p.Timeout, MaxEntries: *p.MaxEntries, PurgeWhenFull: *p.PurgeWhenFull,
					IPv4Prefix: *p.IPv4Prefix, IPv6Prefix: *p.IPv6Prefix, ServerDown: p.ServerDown,
					HAMirroring: p.HAMirroring, Tags: p.Tags}
				if !p.SharePersistence {
					tm.VirtualServer = vs.Name
				}
				meta.Tables = append(meta.Tables, tm)
			}
			lv.TableID = tid
			lv.Timeout = time.Duration(*p.Timeout) * time.Second
			lv.IPv4Prefix = uint8(*p.IPv4Prefix)
			lv.IPv6Prefix = uint8(*p.IPv6Prefix)
			lv.ServerDownNever = p.ServerDown == config.ServerDownNever
			vm.TableID = tid
		}
		st.VirtualServers = append(st.VirtualServers, lv)
		meta.VirtualServers = append(meta.VirtualServers, vm)
	}
	sort.Strings(meta.AdminDown)
	var err error
	if st.Members, st.Pools, err = meta.MembersAndPools(nil); err != nil {
		return st, nil, err
	}
	return st, meta, nil
}

// MembersAndPools describes every member and pool to the datapath, with
// the operator's admin-down and the health monitors' verdicts (down, by
// member key) applied: a member down either way takes no traffic.
func (m *Meta) MembersAndPools(down map[string]bool) ([]loader.Member, []loader.Pool, error) {
	var members []loader.Member
	var pools []loader.Pool
	for _, pm := range m.Pools {
		pool, ms, err := m.poolState(pm, down)
		if err != nil {
			return nil, nil, err
		}
		members = append(members, ms...)
		pools = append(pools, pool)
	}
	return members, pools, nil
}

// PoolState describes one pool and its members, as MembersAndPools does.
func (m *Meta) PoolState(name string, down map[string]bool) (loader.Pool, []loader.Member, error) {
	for _, pm := range m.Pools {
		if pm.Name == name {
			return m.poolState(pm, down)
		}
	}
	return loader.Pool{}, nil, fmt.Errorf("%w: no pool %q serves l4 virtual servers", ErrNoMember, name)
}

func (m *Meta) poolState(pm PoolMeta, down map[string]bool) (loader.Pool, []loader.Member, error) {
	var in []MemberMeta
	var out []loader.Member
	for _, mm := range m.Members {
		if mm.Pool != pm.Name {
			continue
		}
		if down[mm.Key] && mm.Effective() != config.MemberDisabled {
			mm.State, mm.AdminDown = config.MemberDisabled, false
		}
		in = append(in, mm)
		out = append(out, loader.Member{
			ID: mm.ID, PoolID: pm.ID, Addr: netip.AddrPortFrom(netip.MustParseAddr(mm.Address), uint16(mm.Port)),
			Up: mm.Effective() != config.MemberDisabled, NAT: mm.NAT, MaxConns: uint32(mm.MaxConnections),
		})
	}
	pool, err := buildPool(pm, in)
	return pool, out, err
}

// Marshal encodes meta for the datapath's meta map.
func (m *Meta) Marshal() ([]byte, error) { return json.Marshal(m) }

// ParseMeta decodes a stored document; nil or empty input gives nil.
func ParseMeta(b []byte) (*Meta, error) {
	if len(b) == 0 {
		return nil, nil
	}
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("pinned metadata is corrupt: %w", err)
	}
	if m.Version != metaVersion {
		return nil, fmt.Errorf("pinned metadata has version %d; this limpet reads version %d", m.Version, metaVersion)
	}
	return &m, nil
}

// Table returns the metadata of a table id, or nil.
func (m *Meta) Table(id uint32) *TableMeta {
	for i := range m.Tables {
		if m.Tables[i].ID == id {
			return &m.Tables[i]
		}
	}
	return nil
}

// VirtualServer returns the metadata of a virtual server id, or nil.
func (m *Meta) VirtualServer(id uint32) *VirtualServerMeta {
	for i := range m.VirtualServers {
		if m.VirtualServers[i].ID == id {
			return &m.VirtualServers[i]
		}
	}
	return nil
}

// VirtualServerByName returns the metadata of a named virtual server, or nil.
func (m *Meta) VirtualServerByName(name string) *VirtualServerMeta {
	for i := range m.VirtualServers {
		if m.VirtualServers[i].Name == name {
			return &m.VirtualServers[i]
		}
	}
	return nil
}

// Member returns the metadata of a member id, or nil.
func (m *Meta) Member(id uint32) *MemberMeta {
	for i := range m.Members {
		if m.Members[i].ID == id {
			return &m.Members[i]
		}
	}
	return nil
}

// TablesOf lists the tables a virtual server uses (at most one today).
func (m *Meta) TablesOf(vs string) []uint32 {
	v := m.VirtualServerByName(vs)
	if v == nil || v.TableID == loader.TableNone {
		return nil
	}
	return []uint32{v.TableID}
}

// ClientKey is the key a client's entry has in t: its address masked by
// the profile's prefix.
func (t *TableMeta) ClientKey(client netip.Addr) netip.Addr {
	client = client.Unmap()
	bits := t.IPv6Prefix
	if client.Is4() {
		bits = t.IPv4Prefix
	}
	if bits <= 0 || bits > client.BitLen() {
		return client
	}
	return netip.PrefixFrom(client, bits).Masked().Addr()
}

// Entry states, as 'persistence dump' and the status page show them.
const (
	EntryHeld      = "held"          // connections hold it
	EntryCountdown = "counting down" // no connection; the timeout runs
	EntryExpired   = "expired"       // timed out, awaiting the sweep
)

// EntryState says where an entry of t is in its life at datapath time now,
// and how long it has left (nil while connections hold it).
func (t *TableMeta) EntryState(e loader.PersistEntry, now time.Duration) (string, *time.Duration) {
	switch {
	case e.Dying:
		var zero time.Duration
		return EntryExpired, &zero
	case e.Conns > 0:
		return EntryHeld, nil
	}
	left := time.Duration(t.Timeout)*time.Second - loader.Age(e.LastSeen, now)
	if left <= 0 {
		left = 0
		return EntryExpired, &left
	}
	return EntryCountdown, &left
}
