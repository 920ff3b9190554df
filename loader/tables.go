package loader

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

func (p *Pinned) outer(id TableID) *ebpf.Map {
	if id.Purges() {
		return p.m.PersistLruTables
	}
	return p.m.PersistHashTables
}

// table returns the inner map of a persistence table, or ErrKeyNotExist.
//
// Every inner map is also pinned (tablePin), and opened through that pin:
// a map-in-map lookup from userspace yields only the inner map's id, and
// turning an id into a map (BPF_MAP_GET_FD_BY_ID) needs CAP_SYS_ADMIN,
// which the systemd unit does not grant. The pin is trusted only when it
// holds the very map the outer map points to; a datapath pinned by an
// older limpet, or a crash between installing a table and pinning it, falls
// back to the id (and repins it) where the privilege allows.
func (p *Pinned) table(id TableID) (*ebpf.Map, error) {
	var innerID uint32
	if err := p.outer(id).Lookup(id.Index(), &innerID); err != nil {
		return nil, err
	}
	for _, path := range []string{p.tablePin(id), p.tablePin(id) + pinNewSuffix} {
		m, err := ebpf.LoadPinnedMap(path, nil)
		if err != nil {
			continue
		}
		if info, err := m.Info(); err == nil {
			if mid, ok := info.ID(); ok && uint32(mid) == innerID {
				return m, nil
			}
		}
		m.Close()
	}
	m, err := ebpf.NewMapFromID(ebpf.MapID(innerID))
	if err != nil {
		if errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("table %d has no current pin, and opening it by id needs CAP_SYS_ADMIN (run once as full root to repin it): %w", id.Index(), err)
		}
		return nil, err
	}
	_ = p.pinTable(id, m) // best effort: the next open needs no privilege
	return m, nil
}

// openTable is table with the table's number in its error, as every
// reader and writer of one table reports it.
func (p *Pinned) openTable(id TableID) (*ebpf.Map, error) {
	m, err := p.table(id)
	if err != nil {
		return nil, fmt.Errorf("table %d: %w", id.Index(), err)
	}
	return m, nil
}

// pinNewSuffix names a table's pin while it replaces the previous one.
const pinNewSuffix = "_new"

// tablePin is where a persistence table's inner map is pinned.
func (p *Pinned) tablePin(id TableID) string {
	return filepath.Join(p.pinPath, fmt.Sprintf("%s%s_%d", tablePinPrefix, id.Kind(), id.Index()))
}

// pinTable pins m as table id's inner map, replacing the previous pin in one
// rename.
func (p *Pinned) pinTable(id TableID, m *ebpf.Map) error {
	path := p.tablePin(id)
	tmp := path + pinNewSuffix
	_ = os.Remove(tmp)
	if err := m.Pin(tmp); err != nil {
		return fmt.Errorf("pin table %d: %w", id.Index(), err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("pin table %d: %w", id.Index(), err)
	}
	return nil
}

// unpinTable removes a table's pins.
func (p *Pinned) unpinTable(id TableID) {
	_ = os.Remove(p.tablePin(id))
	_ = os.Remove(p.tablePin(id) + pinNewSuffix)
}

func newTable(id TableID, maxEntries uint32) (*ebpf.Map, error) {
	typ := ebpf.LRUHash
	if !id.Purges() {
		typ = ebpf.Hash
	}
	return ebpf.NewMap(&ebpf.MapSpec{
		Name:       fmt.Sprintf("persist_%d", id.Index()),
		Type:       typ,
		KeySize:    uint32(sizeOfPersistKey),
		ValueSize:  uint32(sizeOfPersistEntry),
		MaxEntries: maxEntries,
	})
}

// ensureTable creates a table, or resizes one whose capacity changed. A
// resize copies the entries over before the new table replaces the old one
// in a single update of the outer map.
func (d *Datapath) ensureTable(t Table) error {
	if !t.ID.valid() || t.ID == TableNone {
		return fmt.Errorf("table id %#x is out of range", uint32(t.ID))
	}
	var flags uint32
	if t.Mirror {
		flags |= tableMirror
	}
	if err := d.objs.TableConfig.Put(t.ID.Index(), flags); err != nil {
		return fmt.Errorf("table %d flags: %w", t.ID.Index(), err)
	}
	// The same index of the other kind must not linger: a profile that
	// switched purge_when_full gets a table of the new kind.
	other := t.ID ^ tablePlainHash
	if slices.Contains(d.tableIDs(), other) {
		if err := d.outer(other).Delete(other.Index()); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("remove table %d of the other kind: %w", t.ID.Index(), err)
		}
		d.unpinTable(other)
		d.slots.note(other, false)
	}
	cur, err := d.table(t.ID)
	if err == nil {
		defer cur.Close()
		if cur.MaxEntries() == t.MaxEntries {
			return nil
		}
	} else if !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("look up table %d: %w", t.ID.Index(), err)
	}
	next, err := newTable(t.ID, t.MaxEntries)
	if err != nil {
		return fmt.Errorf("create persistence table %d with %d entries: %w", t.ID.Index(), t.MaxEntries, err)
	}
	defer next.Close()
	if cur != nil {
		var k limpetPersistKey
		var v limpetPersistEntry
		it := cur.Iterate()
		for n := uint32(0); n < t.MaxEntries && it.Next(&k, &v); n++ {
			_ = next.Put(&k, &v)
		}
	}
	// Pinned before it is installed, so that a crash in between leaves a
	// pin (the _new one) that table() can find.
	tmp := d.tablePin(t.ID) + pinNewSuffix
	_ = os.Remove(tmp)
	if err := next.Pin(tmp); err != nil {
		return fmt.Errorf("pin persistence table %d: %w", t.ID.Index(), err)
	}
	if err := d.outer(t.ID).Put(t.ID.Index(), next); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("install persistence table %d: %w", t.ID.Index(), err)
	}
	d.slots.note(t.ID, true)
	if err := os.Rename(tmp, d.tablePin(t.ID)); err != nil {
		return fmt.Errorf("pin persistence table %d: %w", t.ID.Index(), err)
	}
	return nil
}

func (d *Datapath) removeStaleTables(want map[TableID]bool) error {
	var errs []error
	for _, id := range d.tableIDs() {
		if want[id] {
			continue
		}
		if err := d.outer(id).Delete(id.Index()); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, err)
			continue
		}
		d.unpinTable(id)
		d.slots.note(id, false)
	}
	return errors.Join(errs...)
}

// tableSlots remembers which table ids hold a table, so that Apply and
// Tables do not probe all 2048 slots of the outer maps, one system call
// each, every time (the sweeper calls Tables every second). One scan fills
// it; after that this Datapath's own changes keep it: only the process that
// holds the manager's lock adds or removes tables.
type tableSlots struct {
	mu      sync.Mutex
	scanned bool
	ids     map[TableID]bool
}

func (s *tableSlots) note(id TableID, present bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.scanned {
		return
	}
	if present {
		s.ids[id] = true
	} else {
		delete(s.ids, id)
	}
}

// tableIDs lists the ids of the loaded tables: purging ones first, each
// kind by index.
func (p *Pinned) tableIDs() []TableID {
	p.slots.mu.Lock()
	defer p.slots.mu.Unlock()
	if !p.slots.scanned {
		p.slots.ids = map[TableID]bool{}
		for _, purge := range []bool{true, false} {
			for idx := uint32(0); idx < MaxPersistTables; idx++ {
				id := NewTableID(idx, purge)
				var innerID ebpf.MapID
				if err := p.outer(id).Lookup(idx, &innerID); err == nil {
					p.slots.ids[id] = true
				}
			}
		}
		p.slots.scanned = true
	}
	return slices.Sorted(maps.Keys(p.slots.ids))
}

// PersistEntry is one client's persistence record.
type PersistEntry struct {
	TableID   TableID
	Client    netip.Addr // masked by the profile's prefix
	Server    netip.AddrPort
	VSID      VirtualServerID
	MemberID  MemberID
	Conns     uint32 // live connections holding the entry
	Gen       uint32 // bumped on every open, close and correction
	Dying     bool   // claimed for expiry, about to be deleted
	Created   time.Duration
	LastSeen  time.Duration // countdown base once Conns is 0
	connState uint64
}

// Tables lists the ids and capacities of the loaded persistence tables.
func (p *Pinned) Tables() ([]Table, error) {
	var out []Table
	for _, id := range p.tableIDs() {
		inner, err := p.table(id)
		if err != nil {
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				p.slots.note(id, false)
			}
			continue
		}
		out = append(out, Table{ID: id, MaxEntries: inner.MaxEntries()})
		inner.Close()
	}
	return out, nil
}

// TableEntries reads a whole table with batch lookups.
func (p *Pinned) TableEntries(id TableID) ([]PersistEntry, error) {
	inner, err := p.openTable(id)
	if err != nil {
		return nil, err
	}
	defer inner.Close()
	keys, vals, err := batchRead[rawPersistKey, rawPersistEntry](inner)
	if err != nil {
		return nil, fmt.Errorf("read table %d: %w", id.Index(), err)
	}
	out := make([]PersistEntry, len(keys))
	for i := range keys {
		out[i] = decodeEntry(&keys[i], &vals[i])
	}
	return out, nil
}

// ScanTable calls fn for every entry of a table, reading it with batch
// lookups into reused buffers: a sweep of a million entries allocates for
// the entries it keeps, not for the table.
func (p *Pinned) ScanTable(id TableID, fn func(*PersistEntry)) error {
	inner, err := p.openTable(id)
	if err != nil {
		return err
	}
	defer inner.Close()
	const chunk = 8192
	keys := make([]rawPersistKey, chunk)
	vals := make([]rawPersistEntry, chunk)
	var cursor ebpf.MapBatchCursor
	var e PersistEntry
	for {
		n, err := inner.BatchLookup(&cursor, keys, vals, nil)
		for i := 0; i < n; i++ {
			e = decodeEntry(&keys[i], &vals[i])
			fn(&e)
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read table %d: %w", id.Index(), err)
		}
	}
}

// DeleteEntry removes one client's entry. Open flows keep their member.
func (e *Editor) DeleteEntry(tableID TableID, client netip.Addr) error {
	inner, err := e.openTable(tableID)
	if err != nil {
		return err
	}
	defer inner.Close()
	k := encodePersistKey(tableID, client)
	if err := inner.Delete(&k); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("no entry for %s in table %d", client, tableID.Index())
		}
		return err
	}
	return nil
}

// ErrTableFull means a table that does not purge had no room for a new entry.
var ErrTableFull = errors.New("persistence table is full")

// LookupEntry returns one client's entry.
func (p *Pinned) LookupEntry(tableID TableID, client netip.Addr) (PersistEntry, bool, error) {
	inner, err := p.openTable(tableID)
	if err != nil {
		return PersistEntry{}, false, err
	}
	defer inner.Close()
	k := encodePersistKey(tableID, client)
	var v rawPersistEntry
	if err := inner.Lookup(&k, &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return PersistEntry{}, false, nil
		}
		return PersistEntry{}, false, err
	}
	return decodeEntry(&k, &v), true, nil
}

// InsertEntry adds an entry that must not exist yet. It returns
// ebpf.ErrKeyExist's wrapper when it does, and ErrTableFull when a plain
// table has no room.
func (d *Datapath) InsertEntry(e PersistEntry) error {
	err := d.writeEntry(e, ebpf.UpdateNoExist)
	if errors.Is(err, unix.E2BIG) {
		return ErrTableFull
	}
	return err
}

// ErrEntryExists is returned by InsertEntry for a key that is present.
var ErrEntryExists = ebpf.ErrKeyExist

// FlushTable removes every entry of a table and returns how many it removed.
func (e *Editor) FlushTable(tableID TableID) (int, error) {
	inner, err := e.openTable(tableID)
	if err != nil {
		return 0, err
	}
	defer inner.Close()
	keys, _, err := batchRead[rawPersistKey, rawPersistEntry](inner)
	if err != nil {
		return 0, err
	}
	if len(keys) == 0 {
		return 0, nil
	}
	n, err := inner.BatchDelete(keys, nil)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return n, err
	}
	return n, nil
}

// PutEntry writes an entry as is. Tests use it to plant entries with chosen
// timestamps; HA mirroring will use it to install a peer's entries.
func (d *Datapath) PutEntry(e PersistEntry) error {
	return d.writeEntry(e, ebpf.UpdateAny)
}

// writeEntry writes one entry into its table with the update flags given.
func (d *Datapath) writeEntry(e PersistEntry, flags ebpf.MapUpdateFlags) error {
	inner, err := d.openTable(e.TableID)
	if err != nil {
		return err
	}
	defer inner.Close()
	k, v := encodeEntry(e)
	return inner.Update(&k, &v, flags)
}

// PutEntries writes many entries of one table with batch updates.
func (d *Datapath) PutEntries(tableID TableID, es []PersistEntry) error {
	inner, err := d.openTable(tableID)
	if err != nil {
		return err
	}
	defer inner.Close()
	const chunk = 8192
	keys := make([]rawPersistKey, 0, chunk)
	vals := make([]rawPersistEntry, 0, chunk)
	for start := 0; start < len(es); start += chunk {
		keys, vals = keys[:0], vals[:0]
		for _, e := range es[start:min(start+chunk, len(es))] {
			e.TableID = tableID
			k, v := encodeEntry(e)
			keys, vals = append(keys, k), append(vals, v)
		}
		if _, err := inner.BatchUpdate(keys, vals, nil); err != nil {
			return fmt.Errorf("write table %d: %w", tableID.Index(), err)
		}
	}
	return nil
}

// batchRead reads a whole hash map in batches; a map changing underneath
// may yield an entry twice or miss one, as any hash iteration may.
func batchRead[K, V any](m *ebpf.Map) ([]K, []V, error) {
	const chunk = 4096
	var keys []K
	var vals []V
	var cursor ebpf.MapBatchCursor
	kbuf := make([]K, chunk)
	vbuf := make([]V, chunk)
	for {
		n, err := m.BatchLookup(&cursor, kbuf, vbuf, nil)
		keys = append(keys, kbuf[:n]...)
		vals = append(vals, vbuf[:n]...)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return keys, vals, nil
		}
		if err != nil {
			return nil, nil, err
		}
	}
}
