package desired

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/limpet-lb/limpet/loader"
)

// IdleTimeouts are the flow idle timeouts, in seconds.
type IdleTimeouts struct {
	TCPEstablished int `json:"tcp_established"`
	TCPFin         int `json:"tcp_fin"`
	UDP            int `json:"udp"`
}

// Tag labels a persistence table for operators (scope=tag).
type Tag struct {
	Scope string `json:"scope"`
	Tag   string `json:"tag"`
}

// MetaVersion is the version of the stored document this limpet writes.
const MetaVersion = 1

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
	AdminDown    []string     `json:"admin_down,omitempty"`
	IdleTimeouts IdleTimeouts `json:"idle_timeouts"`
	// AdminSocket is where the daemon that wrote this serves its admin
	// API, so that the CLI finds it from the pin path alone whatever
	// settings.admin_socket says. Set by the daemon, not by plan.Build.
	AdminSocket string `json:"admin_socket,omitempty"`
}

// VirtualServerMeta names a virtual server id.
type VirtualServerMeta struct {
	ID         loader.VirtualServerID `json:"id"`
	Name       string                 `json:"name"`
	Address    string                 `json:"address"`
	Port       int                    `json:"port"`
	Protocol   string                 `json:"protocol"`
	Forwarding string                 `json:"forwarding"`
	Pool       string                 `json:"pool"`
	Profile    string                 `json:"profile,omitempty"`
	TableID    loader.TableID         `json:"table_id"`
}

// PoolMeta names a pool id.
type PoolMeta struct {
	ID              loader.PoolID `json:"id"`
	Name            string        `json:"name"`
	Algorithm       string        `json:"algorithm"`
	MaglevTableSize int           `json:"maglev_table_size,omitempty"`
}

// MemberMeta names a member id.
type MemberMeta struct {
	ID      loader.MemberID `json:"id"`
	Key     string          `json:"key"`
	Pool    string          `json:"pool"`
	Name    string          `json:"name"`
	Address string          `json:"address"`
	Port    int             `json:"port"`
	State   string          `json:"state"` // as configured
	Weight  int             `json:"weight"`
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
		return MemberDisabled
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
func (m *Meta) SetAdminDown(id loader.MemberID, adminDown bool, healthDown map[string]bool) (loader.Pool, []loader.Member, error) {
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

// TableMeta describes a persistence table.
type TableMeta struct {
	ID            loader.TableID `json:"id"`
	Key           string         `json:"key"`
	Profile       string         `json:"profile"`
	Shared        bool           `json:"shared"`
	VirtualServer string         `json:"virtual_server,omitempty"` // private tables only
	Timeout       int            `json:"timeout"`                  // seconds
	MaxEntries    int            `json:"max_entries"`
	PurgeWhenFull bool           `json:"purge_when_full"`
	IPv4Prefix    int            `json:"ipv4_prefix"`
	IPv6Prefix    int            `json:"ipv6_prefix"`
	ServerDown    string         `json:"server_down"`
	HAMirroring   bool           `json:"ha_mirroring"`
	Tags          []Tag          `json:"tags,omitempty"`
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
		if down[mm.Key] && mm.Effective() != MemberDisabled {
			mm.State, mm.AdminDown = MemberDisabled, false
		}
		in = append(in, mm)
		out = append(out, loader.Member{
			ID: mm.ID, PoolID: pm.ID, Addr: netip.AddrPortFrom(netip.MustParseAddr(mm.Address), uint16(mm.Port)),
			Up: mm.Effective() != MemberDisabled, NAT: mm.NAT, MaxConns: uint32(mm.MaxConnections),
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
	if m.Version != MetaVersion {
		return nil, fmt.Errorf("pinned metadata has version %d; this limpet reads version %d", m.Version, MetaVersion)
	}
	return &m, nil
}

// Table returns the metadata of a table id, or nil.
func (m *Meta) Table(id loader.TableID) *TableMeta {
	return find(m.Tables, func(t *TableMeta) bool { return t.ID == id })
}

// VirtualServer returns the metadata of a virtual server id, or nil.
func (m *Meta) VirtualServer(id loader.VirtualServerID) *VirtualServerMeta {
	return find(m.VirtualServers, func(v *VirtualServerMeta) bool { return v.ID == id })
}

// VirtualServerByName returns the metadata of a named virtual server, or nil.
func (m *Meta) VirtualServerByName(name string) *VirtualServerMeta {
	return find(m.VirtualServers, func(v *VirtualServerMeta) bool { return v.Name == name })
}

// Member returns the metadata of a member id, or nil.
func (m *Meta) Member(id loader.MemberID) *MemberMeta {
	return find(m.Members, func(mm *MemberMeta) bool { return mm.ID == id })
}

// TablesOf lists the tables a virtual server uses (at most one today).
func (m *Meta) TablesOf(vs string) []loader.TableID {
	v := m.VirtualServerByName(vs)
	if v == nil || v.TableID == loader.TableNone {
		return nil
	}
	return []loader.TableID{v.TableID}
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

// find returns the first element of s that match accepts, or nil.
func find[T any](s []T, match func(*T) bool) *T {
	for i := range s {
		if match(&s[i]) {
			return &s[i]
		}
	}
	return nil
}
