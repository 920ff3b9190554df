// Package sharedtable lets the L7 proxy use the datapath's pinned
// persistence table of a source_ip profile, so that an l4 and an http
// virtual server sharing the profile share one persistence: a client
// persisted to a server over TCP/443 at L4 finds the same server at L7, and
// the other way round.
//
// The datapath owns an entry's live-connection count (its sweeper recounts it
// from the flow table), so the proxy does not touch it: the proxy's
// connections hold an entry by restarting its countdown while they live and
// once more when the last one closes.
package sharedtable

import (
	"errors"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/limpet-lb/limpet/l7/persist"
	l7spec "github.com/limpet-lb/limpet/l7/spec"
	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/userspace/desired"
	"github.com/limpet-lb/limpet/userspace/ids"
	"github.com/limpet-lb/limpet/userspace/mirror"
)

// Datapath is what the shared tables need of the loader.
type Datapath interface {
	Now() (time.Duration, error)
	LookupEntry(tableID loader.TableID, client netip.Addr) (loader.PersistEntry, bool, error)
	InsertEntry(e loader.PersistEntry) error
	PutEntry(e loader.PersistEntry) error
	DeleteEntry(tableID loader.TableID, client netip.Addr) error
	TableEntries(id loader.TableID) ([]loader.PersistEntry, error)
	RunGC([]loader.GCRequest) error
}

// Provider hands out the pinned table for shared source_ip profiles that an
// l4 virtual server also uses, and in-memory tables for everything else. It
// lives as long as the daemon, so a reload keeps the L7 tables' entries.
type Provider struct {
	dp       Datapath
	memory   *persist.MemoryProvider
	mu       sync.Mutex
	meta     *desired.Meta
	stores   map[loader.TableID]*Store
	publish  func(mirror.Entry)
	mirrored map[string]*mirroredStore // by table key
}

// New returns a provider over the datapath's tables as meta describes them.
func New(dp Datapath, meta *desired.Meta) *Provider {
	return &Provider{dp: dp, meta: meta, memory: persist.NewMemoryProvider(), stores: map[loader.TableID]*Store{},
		mirrored: map[string]*mirroredStore{}}
}

// SetMeta follows a reload.
func (p *Provider) SetMeta(meta *desired.Meta) {
	p.mu.Lock()
	p.meta = meta
	p.mu.Unlock()
}

// SetPublisher makes the in-memory tables of profiles with ha_mirroring
// publish their changes; set it before the proxy asks for tables.
func (p *Provider) SetPublisher(publish func(mirror.Entry)) {
	p.mu.Lock()
	p.publish = publish
	p.mu.Unlock()
}

// Table implements persist.Provider.
func (p *Provider) Table(spec persist.Spec) (persist.Store, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if spec.Type == l7spec.ProfileSourceIP && spec.Shared && p.meta != nil {
		key := ids.SharedTable(spec.Profile).String()
		for _, t := range p.meta.Tables {
			if t.Key != key {
				continue
			}
			s, ok := p.stores[t.ID]
			if !ok {
				s = &Store{dp: p.dp, table: t.ID, timeout: time.Duration(t.Timeout) * time.Second, holds: map[netip.Addr]int{}}
				p.stores[t.ID] = s
			}
			return s, nil
		}
	}
	st, err := p.memory.Table(spec)
	if err != nil || !spec.Mirrored || p.publish == nil {
		return st, err
	}
	key := ids.TableOf(spec.Profile, spec.Shared, spec.VirtualServer).String()
	if m, ok := p.mirrored[key]; ok {
		return m, nil
	}
	m := &mirroredStore{Store: st, table: key, publish: p.publish, memory: p.memory.Tables()[spec.Name]}
	p.mirrored[key] = m
	return m, nil
}

// Sweep expires the in-memory tables and keeps the pinned entries that the
// proxy's connections hold alive. The datapath's own sweeper expires
// pinned entries.
func (p *Provider) Sweep(now time.Time) int {
	p.mu.Lock()
	stores := slices.Collect(maps.Values(p.stores))
	p.mu.Unlock()
	for _, s := range stores {
		s.refreshHeld()
	}
	return p.memory.Sweep(now)
}

// Store is a pinned source_ip table seen as a persist.Store.
type Store struct {
	dp      Datapath
	table   loader.TableID
	timeout time.Duration
	mu      sync.Mutex
	holds   map[netip.Addr]int
}

var _ persist.Store = (*Store)(nil)

// The proxy's clock is wall time; the datapath's is the boot clock. Entry
// times are converted through "how long ago" (loader/clock.go).
func (s *Store) toWall(d time.Duration, now time.Time) time.Time {
	dpNow, err := s.dp.Now()
	if err != nil {
		return now
	}
	return loader.ClockToWall(d, dpNow, now)
}

func (s *Store) live(e loader.PersistEntry) bool {
	if e.Dying {
		return false
	}
	if e.Conns > 0 || s.held(e.Client) {
		return true
	}
	dpNow, err := s.dp.Now()
	return err == nil && loader.Age(e.LastSeen, dpNow) <= s.timeout
}

func (s *Store) held(a netip.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.holds[a] > 0
}

// Get implements persist.Store. The server comes back with port 0: the
// table is shared with pools that may list the server on other ports.
func (s *Store) Get(key persist.Key, now time.Time) (persist.Entry, bool) {
	e, ok, err := s.dp.LookupEntry(s.table, key.Addr)
	if err != nil || !ok || !s.live(e) {
		return persist.Entry{}, false
	}
	out := persist.Entry{
		Server:  netip.AddrPortFrom(e.Server.Addr(), 0),
		Conns:   int(e.Conns),
		Created: s.toWall(e.Created, now),
		Updated: s.toWall(e.Created, now),
	}
	s.mu.Lock()
	out.Conns += s.holds[key.Addr]
	s.mu.Unlock()
	if out.Conns == 0 {
		out.Expires = s.toWall(e.LastSeen+s.timeout, now)
	}
	return out, true
}

// Set implements persist.Store.
func (s *Store) Set(key persist.Key, server netip.AddrPort, now time.Time) error {
	dpNow, err := s.dp.Now()
	if err != nil {
		return err
	}
	e := loader.PersistEntry{TableID: s.table, Client: key.Addr, Server: netip.AddrPortFrom(server.Addr(), 0),
		MemberID: loader.NoMember, VSID: loader.NoVirtualServer, Created: dpNow, LastSeen: dpNow}
	err = s.dp.InsertEntry(e)
	if errors.Is(err, loader.ErrTableFull) {
		return persist.ErrFull
	}
	if !errors.Is(err, loader.ErrEntryExists) {
		return err
	}
	// Moving an existing entry keeps the count the datapath holds.
	cur, ok, err := s.dp.LookupEntry(s.table, key.Addr)
	if err != nil {
		return err
	}
	if ok {
		e.Conns, e.Gen = cur.Conns, cur.Gen+1
		if cur.Server.Addr() == server.Addr() {
			e.Created = cur.Created
		}
	}
	return s.dp.PutEntry(e)
}

// Hold implements persist.Store.
func (s *Store) Hold(key persist.Key, now time.Time) bool {
	e, ok, err := s.dp.LookupEntry(s.table, key.Addr)
	if err != nil || !ok || e.Dying {
		return false
	}
	s.mu.Lock()
	s.holds[key.Addr]++
	s.mu.Unlock()
	s.touch(key.Addr)
	return true
}

// Release implements persist.Store: the countdown restarts now.
func (s *Store) Release(key persist.Key, now time.Time) {
	s.mu.Lock()
	if s.holds[key.Addr] > 1 {
		s.holds[key.Addr]--
	} else {
		delete(s.holds, key.Addr)
	}
	s.mu.Unlock()
	s.touch(key.Addr)
}

// Delete implements persist.Store.
func (s *Store) Delete(key persist.Key) bool {
	return s.dp.DeleteEntry(s.table, key.Addr) == nil
}

// Len implements persist.Store.
func (s *Store) Len() int {
	es, err := s.dp.TableEntries(s.table)
	if err != nil {
		return 0
	}
	return len(es)
}

func (s *Store) touch(addrs ...netip.Addr) {
	reqs := make([]loader.GCRequest, len(addrs))
	for i, a := range addrs {
		reqs[i] = loader.TouchEntry(s.table, a)
	}
	_ = s.dp.RunGC(reqs)
}

// refreshHeld restarts the countdown of every entry a proxy connection
// holds, so the datapath's sweeper never expires one in use.
func (s *Store) refreshHeld() {
	s.mu.Lock()
	addrs := make([]netip.Addr, 0, len(s.holds))
	for a := range s.holds {
		addrs = append(addrs, a)
	}
	s.mu.Unlock()
	if len(addrs) > 0 {
		s.touch(addrs...)
	}
}
