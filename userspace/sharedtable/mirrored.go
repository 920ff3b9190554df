package sharedtable

import (
	"net/netip"
	"time"

	"github.com/limpet-lb/limpet/l7/persist"
	"github.com/limpet-lb/limpet/userspace/mirror"
)

// mirroredStore is an in-memory L7 table (app cookie, generic, or a
// source_ip table not shared with L4) of a profile with ha_mirroring: its
// changes go to the HA peers, and theirs come in through Apply.
type mirroredStore struct {
	persist.Store
	table   string // the table key peers know it by
	publish func(mirror.Entry)
	memory  *persist.Memory
}

func entryOf(table string, key persist.Key) mirror.Entry {
	e := mirror.Entry{Table: table}
	if key.Addr.IsValid() {
		e.Client = key.Addr.Unmap()
	} else {
		e.Key = key.Text
	}
	return e
}

func keyOf(e mirror.Entry) persist.Key {
	if e.Client.IsValid() {
		return persist.Key{Addr: e.Client}
	}
	return persist.Key{Text: e.Key}
}

// Set implements persist.Store and publishes the new mapping.
func (m *mirroredStore) Set(key persist.Key, server netip.AddrPort, now time.Time) error {
	if err := m.Store.Set(key, server, now); err != nil {
		return err
	}
	e := entryOf(m.table, key)
	e.Server, e.Op, e.Updated, e.Created = server, mirror.Upsert, now, now
	m.publish(e)
	return nil
}

// Delete implements persist.Store and publishes the deletion.
func (m *mirroredStore) Delete(key persist.Key) bool {
	ok := m.Store.Delete(key)
	if ok {
		e := entryOf(m.table, key)
		e.Op, e.Updated = mirror.Delete, time.Now()
		m.publish(e)
	}
	return ok
}

// MirrorSnapshot lists the mirrored in-memory tables' entries, for a peer's bulk sync.
func (p *Provider) MirrorSnapshot() []mirror.Entry {
	p.mu.Lock()
	stores := make([]*mirroredStore, 0, len(p.mirrored))
	for _, m := range p.mirrored {
		stores = append(stores, m)
	}
	p.mu.Unlock()
	var out []mirror.Entry
	now := time.Now()
	for _, m := range stores {
		if m.memory == nil {
			continue
		}
		for k, v := range m.memory.Snapshot(now) {
			e := entryOf(m.table, k)
			e.Server, e.Op, e.Updated, e.Created = v.Server, mirror.Upsert, v.Updated, v.Created
			out = append(out, e)
		}
	}
	return out
}

// MirrorApply installs a peer's entry into a mirrored in-memory table,
// newer change first; it reports whether the table is one of them.
func (p *Provider) MirrorApply(e mirror.Entry) (bool, error) {
	p.mu.Lock()
	m, ok := p.mirrored[e.Table]
	p.mu.Unlock()
	if !ok {
		return false, nil
	}
	key := keyOf(e)
	now := time.Now()
	if cur, found := m.Store.Get(key, now); found {
		local := entryOf(m.table, key)
		local.Server, local.Op, local.Updated, local.Created = cur.Server, mirror.Upsert, cur.Updated, cur.Created
		if !mirror.Newer(e, local) {
			return true, nil
		}
		if e.Op == mirror.Delete {
			if cur.Conns == 0 {
				m.Store.Delete(key) // not m.Delete: a peer's change is not published again
			}
			return true, nil
		}
	} else if e.Op == mirror.Delete {
		return true, nil
	}
	return true, m.Store.Set(key, e.Server, now)
}
