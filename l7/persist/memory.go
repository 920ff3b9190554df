package persist

import (
	"container/list"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Memory is an in-process Store: a map plus a recency list, so that a full
// table evicts its least recently used entry in O(1) and a sweep stops at
// the first entry that cannot have expired.
type Memory struct {
	timeout time.Duration
	max     int
	purge   bool

	mu      sync.Mutex
	entries map[Key]*list.Element
	lru     list.List // front = most recently touched; values are *memEntry
}

type memEntry struct {
	key     Key
	e       Entry
	touched time.Time
}

// NewMemory returns an empty table. maxEntries <= 0 means no limit.
func NewMemory(timeout time.Duration, maxEntries int, purgeWhenFull bool) *Memory {
	return &Memory{timeout: timeout, max: maxEntries, purge: purgeWhenFull, entries: map[Key]*list.Element{}}
}

func (m *Memory) live(me *memEntry, now time.Time) bool {
	return me.e.Conns > 0 || now.Before(me.e.Expires)
}

func (m *Memory) touch(el *list.Element, now time.Time) {
	el.Value.(*memEntry).touched = now
	m.lru.MoveToFront(el)
}

func (m *Memory) remove(el *list.Element) {
	delete(m.entries, el.Value.(*memEntry).key)
	m.lru.Remove(el)
}

// Get implements Store.
func (m *Memory) Get(key Key, now time.Time) (Entry, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	el, ok := m.entries[key]
	if !ok {
		return Entry{}, false
	}
	me := el.Value.(*memEntry)
	if !m.live(me, now) {
		m.remove(el)
		return Entry{}, false
	}
	m.touch(el, now)
	return me.e, true
}

// Set implements Store.
func (m *Memory) Set(key Key, server netip.AddrPort, now time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if el, ok := m.entries[key]; ok {
		me := el.Value.(*memEntry)
		if !m.live(me, now) {
			// An expired entry is a new client: start afresh.
			me.e = Entry{Created: now, Updated: now}
		}
		if me.e.Server != server {
			me.e.Server = server
			me.e.Updated = now
		}
		if me.e.Conns == 0 {
			me.e.Expires = now.Add(m.timeout)
		}
		m.touch(el, now)
		return nil
	}
	if m.max > 0 && len(m.entries) >= m.max {
		if back := m.lru.Back(); back != nil && !m.live(back.Value.(*memEntry), now) {
			m.remove(back)
		} else if m.purge && back != nil {
			m.remove(back)
		} else {
			return ErrFull
		}
	}
	me := &memEntry{key: key, e: Entry{Server: server, Created: now, Updated: now, Expires: now.Add(m.timeout)}, touched: now}
	m.entries[key] = m.lru.PushFront(me)
	return nil
}

// Hold implements Store.
func (m *Memory) Hold(key Key, now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	el, ok := m.entries[key]
	if !ok {
		return false
	}
	me := el.Value.(*memEntry)
	if !m.live(me, now) {
		m.remove(el)
		return false
	}
	me.e.Conns++
	me.e.Expires = time.Time{}
	m.touch(el, now)
	return true
}

// Release implements Store.
func (m *Memory) Release(key Key, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	el, ok := m.entries[key]
	if !ok {
		return
	}
	me := el.Value.(*memEntry)
	if me.e.Conns > 0 {
		me.e.Conns--
	}
	if me.e.Conns == 0 {
		me.e.Expires = now.Add(m.timeout)
	}
	m.touch(el, now)
}

// Delete implements Store.
func (m *Memory) Delete(key Key) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	el, ok := m.entries[key]
	if ok {
		m.remove(el)
	}
	return ok
}

// Len implements Store.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.entries)
}

// Sweep removes expired entries and returns how many. It walks from the
// least recently touched end and stops at the first entry touched within
// the last timeout, so its cost follows the entries it can remove, not the
// table size. An entry's expiry is never later than its last touch plus the
// timeout, so every entry is swept within one timeout of expiring (lookups
// drop expired entries at once); held entries are skipped, never removed.
func (m *Memory) Sweep(now time.Time) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for el := m.lru.Back(); el != nil; {
		me := el.Value.(*memEntry)
		if me.touched.Add(m.timeout).After(now) {
			break
		}
		prev := el.Prev()
		if !m.live(me, now) {
			m.remove(el)
			n++
		}
		el = prev
	}
	return n
}

// Snapshot copies the live entries, for dumps and tests.
func (m *Memory) Snapshot(now time.Time) map[Key]Entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[Key]Entry, len(m.entries))
	for k, el := range m.entries {
		if me := el.Value.(*memEntry); m.live(me, now) {
			out[k] = me.e
		}
	}
	return out
}

// MemoryProvider hands out Memory tables, one per Spec.Name.
type MemoryProvider struct {
	mu     sync.Mutex
	tables map[string]*Memory
	specs  map[string]Spec
}

// NewMemoryProvider returns a provider with no tables.
func NewMemoryProvider() *MemoryProvider {
	return &MemoryProvider{tables: map[string]*Memory{}, specs: map[string]Spec{}}
}

// Table implements Provider: the same name gives the same table. A second
// request for a name with a different type is refused.
func (p *MemoryProvider) Table(spec Spec) (Store, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if t, ok := p.tables[spec.Name]; ok {
		if prev := p.specs[spec.Name]; prev.Type != spec.Type {
			return nil, fmt.Errorf("table %q is a %s table, not %s", spec.Name, prev.Type, spec.Type)
		}
		return t, nil
	}
	t := NewMemory(spec.Timeout, spec.MaxEntries, spec.PurgeWhenFull)
	p.tables[spec.Name] = t
	p.specs[spec.Name] = spec
	return t, nil
}

// Sweep sweeps every table and returns the number of entries removed.
func (p *MemoryProvider) Sweep(now time.Time) int {
	p.mu.Lock()
	tables := slices.Collect(maps.Values(p.tables))
	p.mu.Unlock()
	n := 0
	for _, t := range tables {
		n += t.Sweep(now)
	}
	return n
}

// Tables lists the tables by name.
func (p *MemoryProvider) Tables() map[string]*Memory {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.tables)
}
