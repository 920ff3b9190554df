package daemon

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"net/netip"
	"sync"
	"time"

	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/userspace/desired"
	"github.com/limpet-lb/limpet/userspace/mirror"
)

// mirrorLocal is the node's side of HA mirroring: its pinned tables, as
// mirror entries keyed by the table's stable key (not its index, which
// differs between nodes).
type mirrorLocal struct{ d *daemon }

// startMirror starts mirroring when the config has an ha_mirroring section.
func (d *daemon) startMirror(ctx context.Context, want *desired.Desired) error {
	if want.MirrorErr != nil {
		return &ConfigError{fmt.Errorf("ha_mirroring: %w", want.MirrorErr)}
	}
	if want.Mirror == nil {
		return nil
	}
	mcfg := *want.Mirror
	node, err := mirror.New(mcfg, mirrorLocal{d}, d.log.With("component", "mirror"))
	if err != nil {
		return &ConfigError{fmt.Errorf("ha_mirroring: %w", err)}
	}
	node.SetScope(want.MirrorScope)
	if addr, err := node.Listen(); err != nil {
		return fmt.Errorf("ha_mirroring.listen: %w", err)
	} else if addr != nil {
		d.log.Info("mirroring", "listen", addr.String(), "peers", mcfg.Peers)
	}
	events, err := d.dp.Events()
	if err != nil {
		return err
	}
	d.mirror = node
	d.tables.SetPublisher(node.Publish)
	go func() {
		if err := node.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			d.log.Error("mirroring stopped", "error", err)
		}
	}()
	go func() {
		<-ctx.Done()
		events.Close()
	}()
	go d.publishEvents(events)
	return nil
}

// publishEvents turns the datapath's persistence events into mirror entries.
func (d *daemon) publishEvents(events *loader.EventReader) {
	for {
		ev, err := events.Read()
		if errors.Is(err, loader.ErrClosed) {
			return
		}
		if err != nil {
			d.log.Error("persistence events", "error", err)
			continue
		}
		d.publishEvent(ev)
	}
}

// publishEvent publishes one change the datapath made: a version of the
// client's entry (created or moved: an upsert stamped with the entry's
// creation time; expired: a delete stamped with the expiry).
func (d *daemon) publishEvent(ev loader.Event) {
	d.mu.Lock()
	tm := d.meta.Table(ev.TableID)
	d.mu.Unlock()
	if tm == nil {
		return
	}
	cm, err := d.clockMap()
	if err != nil {
		d.log.Error("persistence events", "error", err)
		return
	}
	at := cm.Wall(ev.Time)
	e := mirror.Entry{Table: tm.Key, Client: ev.Client.Unmap(), Server: serverOf(ev.Server), Op: mirror.Upsert, Updated: at, Created: at}
	if ev.Type == loader.EventExpired {
		e.Op = mirror.Delete
	} else if err := d.keepNewest(tm, e, ev.Time, cm); err != nil {
		d.log.Warn("mirroring: reinstalling this node's newer entry", "table", tm.Key, "client", e.Client.String(), "error", err)
	}
	d.mirror.Publish(e)
}

// keepNewest makes sure the table holds the newest version this node has
// seen after its datapath created version e (at datapath time created).
// Apply may have written a peer's version over it without seeing it: it
// looked the client up a moment before the datapath created its entry.
// Then e, which the peers are about to receive and may keep, must win here
// as well, or the nodes would disagree for good.
func (d *daemon) keepNewest(tm *desired.TableMeta, e mirror.Entry, created time.Duration, cm loader.ClockMap) error {
	defer d.entryLocks.lock(tm.ID, e.Client)()
	cur, ok, err := d.dp.LookupEntry(tm.ID, e.Client)
	if err != nil || !ok || cur.Dying {
		return err
	}
	if cur.Created == created && serverOf(cur.Server) == e.Server {
		return nil // still the event's entry
	}
	if !mirror.Newer(e, entryVersion(tm.Key, &cur, cm)) {
		return nil // replaced by a newer version: a peer's, or the datapath's own next one
	}
	return d.dp.PutEntry(loader.PersistEntry{TableID: tm.ID, Client: e.Client, Server: e.Server, VSID: loader.NoVirtualServer,
		MemberID: d.memberIDByAddr(e.Server.Addr()), Created: created, LastSeen: max(cur.LastSeen, min(created, cm.ClockNow)),
		Conns: cur.Conns, Gen: cur.Gen + 1})
}

// clockMap reads the node's one mapping between the datapath clock and the
// wall clock (loader.WallClock): every version this node publishes or
// compares is converted through it, so that it reads the same every time.
func (d *daemon) clockMap() (loader.ClockMap, error) {
	cm, err := d.clock.Read(d.dp)
	if err == nil && cm.Step != 0 {
		d.log.Info("mirroring: the wall clock and the datapath clock moved apart; entry versions now read through the new offset", "step", cm.Step.String())
	}
	return cm, err
}

// entryVersion is the mirror version of a datapath entry: an upsert of its
// server, stamped with its creation time. The datapath keeps one timestamp,
// so a version's Updated and Created are equal for datapath tables.
func entryVersion(table string, e *loader.PersistEntry, cm loader.ClockMap) mirror.Entry {
	at := cm.Wall(e.Created)
	return mirror.Entry{Table: table, Client: e.Client.Unmap(), Server: serverOf(e.Server), Op: mirror.Upsert, Updated: at, Created: at}
}

// entryLocks serialize the check and the write of one client's entry
// between the goroutines that apply peers' entries (one per connection) and
// the event reader: two versions of a client arriving from two peers at
// once must be compared one after the other, or the older may be written
// last. Striped by key, so bulk syncs from several peers still run in
// parallel.
type entryLocks [64]sync.Mutex

var entryLockSeed = maphash.MakeSeed()

func (l *entryLocks) lock(table loader.TableID, client netip.Addr) (unlock func()) {
	type key struct {
		table  loader.TableID
		client netip.Addr
	}
	m := &l[maphash.Comparable(entryLockSeed, key{table, client})%uint64(len(l))]
	m.Lock()
	return m.Unlock
}

func serverOf(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

// mirroredTables lists the tables of this node in the mirror's scope.
func (d *daemon) mirroredTables() []desired.TableMeta {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []desired.TableMeta
	for _, t := range d.meta.Tables {
		if t.HAMirroring {
			out = append(out, t)
		}
	}
	return out
}

func (l mirrorLocal) Snapshot(ctx context.Context) ([]mirror.Entry, error) {
	var out []mirror.Entry
	cm, err := l.d.clockMap()
	if err != nil {
		return nil, err
	}
	for _, t := range l.d.mirroredTables() {
		err := l.d.dp.ScanTable(t.ID, func(e *loader.PersistEntry) {
			if e.Dying {
				return
			}
			out = append(out, entryVersion(t.Key, e, cm))
		})
		if err != nil {
			return nil, err
		}
	}
	// The L7 proxy's mirrored tables (app cookie, generic) too.
	out = append(out, l.d.tables.MirrorSnapshot()...)
	return out, ctx.Err()
}

// Apply installs a peer's entry if it is newer than the version the table
// holds (mirror.Newer, on exact wall-clock nanoseconds: see clockMap), so
// that every node ends up holding the newest version any node made. A
// delete does not remove an entry that local connections hold (the peer
// saw only its own connections end). An upsert of the server the table
// already holds, newer or not, restarts the entry's countdown: it is a
// holder's refresh.
func (l mirrorLocal) Apply(e mirror.Entry) error {
	d := l.d
	var tm *desired.TableMeta
	for _, t := range d.mirroredTables() {
		if t.Key == e.Table {
			tm = &t
			break
		}
	}
	if tm == nil {
		if handled, err := d.tables.MirrorApply(e); handled {
			return err
		}
		return fmt.Errorf("no table %q here", e.Table)
	}
	client := e.Client.Unmap()
	defer d.entryLocks.lock(tm.ID, client)()
	cm, err := d.clockMap()
	if err != nil {
		return err
	}
	// An insert that finds the client present (the datapath created an
	// entry since the lookup) compares again with that entry.
	for range 3 {
		again, err := d.applyEntry(tm, client, e, cm)
		if !again {
			return err
		}
	}
	return fmt.Errorf("entry of %s in %q kept changing while it was applied", client, e.Table)
}

// applyEntry is one attempt of Apply, under the client's lock; it reports
// whether to try again.
func (d *daemon) applyEntry(tm *desired.TableMeta, client netip.Addr, e mirror.Entry, cm loader.ClockMap) (bool, error) {
	cur, ok, err := d.dp.LookupEntry(tm.ID, client)
	if err != nil {
		return false, err
	}
	created := cm.Clock(e.Updated)
	if ok && !cur.Dying {
		local := entryVersion(e.Table, &cur, cm)
		if !mirror.Newer(e, local) {
			if e.Op == mirror.Upsert && e.Server == local.Server {
				// A refresh of a held entry: restart the countdown here too.
				return false, d.dp.RunGC([]loader.GCRequest{loader.TouchEntry(tm.ID, client)})
			}
			return false, nil
		}
		if e.Op == mirror.Delete {
			if cur.Conns > 0 {
				return false, nil
			}
			_ = d.dp.DeleteEntry(tm.ID, client)
			return false, nil
		}
		// The newer version replaces the entry, keeping its connection
		// count and never moving its countdown back; for the same server
		// only the version changes, which later comparisons need.
		return false, d.dp.PutEntry(loader.PersistEntry{TableID: tm.ID, Client: client, Server: e.Server, VSID: loader.NoVirtualServer,
			MemberID: d.memberIDByAddr(e.Server.Addr()), Created: created, LastSeen: max(cur.LastSeen, min(created, cm.ClockNow)),
			Conns: cur.Conns, Gen: cur.Gen + 1})
	}
	if e.Op == mirror.Delete {
		return false, nil
	}
	if timeout := time.Duration(tm.Timeout) * time.Second; cm.WallNow.Sub(e.Updated) > timeout {
		// A new entry whose countdown ran out on the peer's clock: it
		// would be swept at once, or, older than this node's uptime,
		// live on from the boot instant (see loader.ClockTime).
		return false, nil
	}
	// Created is the version's time exactly, so that the entry reads back
	// as the version it is; the countdown starts no later than now, so a
	// peer's clock ahead of ours does not stretch the timeout.
	ne := loader.PersistEntry{TableID: tm.ID, Client: client, Server: e.Server, VSID: loader.NoVirtualServer,
		MemberID: d.memberIDByAddr(e.Server.Addr()), Created: created, LastSeen: min(created, cm.ClockNow)}
	if ok {
		// Claimed for expiry: the datapath treats it as absent too.
		ne.Conns, ne.Gen = cur.Conns, cur.Gen+1
		return false, d.dp.PutEntry(ne)
	}
	err = d.dp.InsertEntry(ne)
	if errors.Is(err, loader.ErrEntryExists) {
		return true, nil
	}
	return false, err
}

// memberIDByAddr labels a mirrored entry with a local member of that
// address, for dumps; the datapath itself matches by address.
func (d *daemon) memberIDByAddr(a netip.Addr) loader.MemberID {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, m := range d.meta.Members {
		if m.Address == a.String() {
			return m.ID
		}
	}
	return loader.NoMember
}

// refreshHeld republishes the entries local connections hold: no event
// marks them while they are held, and a peer's copy must not time out
// while this node still uses them.
func (d *daemon) refreshHeld() {
	if d.mirror == nil {
		return
	}
	for _, t := range d.mirroredTables() {
		every := min(max(time.Duration(t.Timeout)*time.Second/3, time.Second), 30*time.Second)
		if last := d.refreshed[t.ID]; time.Since(last) < every {
			continue
		}
		d.refreshed[t.ID] = time.Now()
		cm, err := d.clockMap()
		if err != nil {
			return
		}
		// The version the table holds, not a newer one: a refresh must
		// not override a newer version of another node.
		_ = d.dp.ScanTable(t.ID, func(e *loader.PersistEntry) {
			if e.Conns == 0 || e.Dying {
				return
			}
			d.mirror.Publish(entryVersion(t.Key, e, cm))
		})
	}
}
