package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/userspace/config"
	"github.com/limpet-lb/limpet/userspace/mirror"
	"github.com/limpet-lb/limpet/userspace/plan"
)

// mirrorLocal is the node's side of HA mirroring: its pinned tables, as
// mirror entries keyed by the table's stable key (not its index, which
// differs between nodes).
type mirrorLocal struct{ d *daemon }

// startMirror starts mirroring when the config has an ha_mirroring section.
func (d *daemon) startMirror(ctx context.Context, cfg *config.Config) error {
	if cfg.HAMirroring == nil {
		return nil
	}
	mcfg, err := mirror.FromConfig(cfg.HAMirroring)
	if err != nil {
		return &ConfigError{fmt.Errorf("ha_mirroring: %w", err)}
	}
	node, err := mirror.New(mcfg, mirrorLocal{d}, d.log.With("component", "mirror"))
	if err != nil {
		return &ConfigError{fmt.Errorf("ha_mirroring: %w", err)}
	}
	node.SetScope(mirror.ScopeFromConfig(cfg))
	if addr, err := node.Listen(); err != nil {
		return fmt.Errorf("ha_mirroring.listen: %w", err)
	} else if addr != nil {
		d.log.Info("mirroring", "listen", addr.String(), "peers", cfg.HAMirroring.Peers)
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
		d.mu.Lock()
		tm := d.meta.Table(ev.TableID)
		d.mu.Unlock()
		if tm == nil {
			continue
		}
		at := d.wallTime(ev.Time)
		e := mirror.Entry{Table: tm.Key, Client: ev.Client.Unmap(), Server: serverOf(ev.Server), Op: mirror.Upsert, Updated: at, Created: at}
		if ev.Type == loader.EventExpired {
			e.Op = mirror.Delete
		}
		d.mirror.Publish(e)
	}
}

// The datapath's clock is the boot clock; peers compare wall clocks. The
// conversions are the loader's (see loader/clock.go for a time before boot).
func (d *daemon) wallTime(dp time.Duration) time.Time {
	now, err := d.dp.Now()
	if err != nil {
		return time.Now()
	}
	return loader.ClockToWall(dp, now, time.Now())
}

func serverOf(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

// mirroredTables lists the tables of this node in the mirror's scope.
func (d *daemon) mirroredTables() []plan.TableMeta {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []plan.TableMeta
	for _, t := range d.meta.Tables {
		if t.HAMirroring {
			out = append(out, t)
		}
	}
	return out
}

func (l mirrorLocal) Snapshot(ctx context.Context) ([]mirror.Entry, error) {
	var out []mirror.Entry
	for _, t := range l.d.mirroredTables() {
		err := l.d.dp.ScanTable(t.ID, func(e *loader.PersistEntry) {
			if e.Dying {
				return
			}
			at := l.d.wallTime(e.Created)
			out = append(out, mirror.Entry{Table: t.Key, Client: e.Client.Unmap(), Server: serverOf(e.Server),
				Op: mirror.Upsert, Updated: at, Created: at})
		})
		if err != nil {
			return nil, err
		}
	}
	// The L7 proxy's mirrored tables (app cookie, generic) too.
	out = append(out, l.d.tables.MirrorSnapshot()...)
	return out, ctx.Err()
}

// Apply installs a peer's entry. The newer change wins; an entry that local
// connections hold is never deleted by a peer.
func (l mirrorLocal) Apply(e mirror.Entry) error {
	d := l.d
	var tm *plan.TableMeta
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
	cur, ok, err := d.dp.LookupEntry(tm.ID, client)
	if err != nil {
		return err
	}
	wallNow := time.Now()
	clockNow, err := d.dp.Now()
	if err != nil {
		return err
	}
	if ok {
		at := d.wallTime(cur.Created)
		local := mirror.Entry{Table: e.Table, Client: client, Server: serverOf(cur.Server), Op: mirror.Upsert, Updated: at, Created: at}
		same := local.Server == e.Server && e.Op == mirror.Upsert
		if !same && !mirror.Newer(e, local) {
			return nil
		}
		if e.Op == mirror.Delete {
			if cur.Conns > 0 {
				return nil
			}
			_ = d.dp.DeleteEntry(tm.ID, client)
			return nil
		}
		if same {
			// A refresh of a held entry: restart the countdown here too.
			return d.dp.RunGC([]loader.GCRequest{loader.TouchEntry(tm.ID, client)})
		}
	} else if e.Op == mirror.Delete {
		return nil
	} else if timeout := time.Duration(tm.Timeout) * time.Second; wallNow.Sub(e.Updated) > timeout {
		// A new entry whose countdown ran out on the peer's clock: it
		// would be swept at once, or, older than this node's uptime,
		// live on from the boot instant (see loader.ClockTime).
		return nil
	}
	// A peer's clock ahead of ours must not stretch the timeout: no time
	// after now.
	at := min(loader.WallToClock(e.Updated, wallNow, clockNow), clockNow)
	ne := loader.PersistEntry{TableID: tm.ID, Client: client, Server: e.Server, VSID: loader.TableNone,
		MemberID: d.memberIDByAddr(e.Server.Addr()), Created: at, LastSeen: at}
	if ok {
		ne.Conns, ne.Gen = cur.Conns, cur.Gen+1
	}
	return d.dp.PutEntry(ne)
}

// memberIDByAddr labels a mirrored entry with a local member of that
// address, for dumps; the datapath itself matches by address.
func (d *daemon) memberIDByAddr(a netip.Addr) uint32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, m := range d.meta.Members {
		if m.Address == a.String() {
			return m.ID
		}
	}
	return loader.TableNone
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
		_ = d.dp.ScanTable(t.ID, func(e *loader.PersistEntry) {
			if e.Conns == 0 || e.Dying {
				return
			}
			at := d.wallTime(e.Created)
			d.mirror.Publish(mirror.Entry{Table: t.Key, Client: e.Client.Unmap(), Server: serverOf(e.Server),
				Op: mirror.Upsert, Updated: at, Created: at})
		})
	}
}
