package daemon

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/userspace/admin"
	"github.com/limpet-lb/limpet/userspace/desired"
	"github.com/limpet-lb/limpet/userspace/gc"
	"github.com/limpet-lb/limpet/userspace/ids"
	"github.com/limpet-lb/limpet/userspace/metrics"
	"github.com/limpet-lb/limpet/userspace/mirror"
	"github.com/limpet-lb/limpet/userspace/statuspage"
)

func listenMetrics(s desired.Settings) (net.Listener, error) {
	if s.MetricsListen == "" {
		return nil, nil
	}
	ln, err := metrics.Listen(s.MetricsListen)
	if err != nil {
		return nil, fmt.Errorf("settings.metrics_listen: %w", err)
	}
	return ln, nil
}

// ---- metrics.Source ----

func (d *daemon) Info() metrics.Info {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.info
}

func (d *daemon) snapshot() (*desired.Meta, *desired.Desired, gc.Report, map[string]bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	down := make(map[string]bool, len(d.healthDown))
	for k, v := range d.healthDown {
		down[k] = v
	}
	return d.meta, d.want, d.lastReport, down
}

func (d *daemon) VirtualServers() ([]metrics.VirtualServer, error) {
	meta, _, _, _ := d.snapshot()
	var out []metrics.VirtualServer
	for _, vs := range meta.VirtualServers {
		c, err := d.dp.VSCounters(vs.ID)
		if err != nil {
			return nil, err
		}
		out = append(out, metrics.VirtualServer{Name: vs.Name, Protocol: vs.Protocol, Counters: c})
	}
	return out, nil
}

func (d *daemon) memberConns() (map[loader.MemberID]uint32, error) {
	mc, err := d.dp.MemberConns()
	if err != nil {
		return nil, err
	}
	out := make(map[loader.MemberID]uint32, len(mc))
	for _, m := range mc {
		out[m.ID] = m.Conns
	}
	return out, nil
}

func (d *daemon) Members() ([]metrics.Member, error) {
	meta, _, _, down := d.snapshot()
	conns, err := d.memberConns()
	if err != nil {
		return nil, err
	}
	var out []metrics.Member
	for _, m := range meta.Members {
		c, err := d.dp.MemberCounters(m.ID)
		if err != nil {
			return nil, err
		}
		out = append(out, metrics.Member{Pool: m.Pool, Name: m.Name, Counters: c, State: m.Effective(),
			Up: !down[m.Key], ActiveConnections: uint64(conns[m.ID]), Weight: m.Weight, MaxConnections: m.MaxConnections})
	}
	return out, nil
}

func (d *daemon) Tables() ([]metrics.Table, error) {
	meta, _, rep, _ := d.snapshot()
	var out []metrics.Table
	for _, tm := range meta.Tables {
		c, err := d.dp.TableCounters(tm.ID)
		if err != nil {
			return nil, err
		}
		t := metrics.TableFrom(c, rep.Tables[tm.ID])
		t.ID, t.Profile, t.VirtualServer, t.MaxEntries = tm.ID.Index(), tm.Profile, tm.VirtualServer, tm.MaxEntries
		out = append(out, t)
	}
	return out, nil
}

func (d *daemon) Reasons() ([]metrics.Reason, error) {
	r, err := d.dp.ReasonCounters()
	if err != nil {
		return nil, err
	}
	return metrics.ReasonsFrom(r), nil
}

func (d *daemon) Sweeps() metrics.SweepStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.sweeps
}

// Cluster is metrics.ClusterSource: BGP sessions and announcements, the
// initial sync, the mirroring peers.
func (d *daemon) Cluster() metrics.Cluster {
	_, want, _, _ := d.snapshot()
	peers, cl := d.clusterStatus(want)
	out := metrics.Cluster{BGP: d.bgpStatus()}
	if cl != nil {
		d.mu.Lock()
		out.SyncKnown, out.Synced = d.syncKnown, d.synced
		d.mu.Unlock()
	}
	for _, p := range peers {
		out.Peers = append(out.Peers, metrics.MirrorPeer{Address: p.Address, State: p.State, Up: p.State == string(mirror.StateUp),
			Sent: p.Sent, Received: p.Received, Dropped: p.Dropped, Syncs: p.Syncs, QueueLen: p.QueueLen,
			Lag: time.Duration(p.LagSeconds * float64(time.Second)), ClockOffset: time.Duration(p.ClockOffsetSeconds * float64(time.Second))})
	}
	return out
}

// ---- admin.Handler ----

func (d *daemon) Status() admin.Status {
	meta, want, rep, down := d.snapshot()
	d.mu.Lock()
	st := admin.Status{Version: d.opts.Version, PID: os.Getpid(), StartedAt: d.start, ConfigPath: d.opts.ConfigPath,
		AppliedAt: meta.AppliedAt, LastReloadError: d.reloadErr, PinPath: d.pinPath, MetricsListen: want.Settings.MetricsListen}
	for _, name := range slices.Sorted(maps.Keys(d.ifaces)) {
		st.Interfaces = append(st.Interfaces, admin.Interface{Name: name, XDPMode: d.ifaces[name]})
	}
	d.mu.Unlock()
	conns, _ := d.memberConns()
	hops := d.nextHops()
	for _, vs := range want.VirtualServers {
		st.VirtualServers = append(st.VirtualServers, admin.VirtualServer{Name: vs.Name, Type: vs.Type, Address: vs.Address,
			Port: vs.Port, Protocol: vs.Protocol, Forwarding: vs.Forwarding, Pool: vs.Pool, Profile: vs.Profile})
	}
	for _, p := range meta.Pools {
		pool := admin.Pool{Name: p.Name, Algorithm: p.Algorithm}
		monitor := want.PoolMonitor[p.Name]
		for _, m := range meta.Members {
			if m.Pool != p.Name {
				continue
			}
			health := admin.HealthUnchecked
			if monitor != "" {
				health = admin.HealthUp
				if down[m.Key] {
					health = admin.HealthDown
				}
			}
			am := admin.Member{Name: m.Name, Address: m.Address, Port: m.Port, Weight: m.Weight, MaxConnections: m.MaxConnections,
				State: m.State, AdminDown: m.AdminDown, Monitor: monitor, Health: health, ActiveConnections: uint64(conns[m.ID])}
			d.decorateHealth(&am, p.Name, m.Name)
			am.NextHop = hops.member(m.ID)
			pool.Members = append(pool.Members, am)
		}
		st.Pools = append(st.Pools, pool)
	}
	st.NextHopCache = hops.cache
	st.Mirroring, st.Cluster = d.clusterStatus(want)
	st.BGP = d.bgpStatus()
	for _, tm := range meta.Tables {
		st.Tables = append(st.Tables, admin.Table{ID: tm.ID.Index(), Profile: tm.Profile, Shared: tm.Shared,
			VirtualServer: tm.VirtualServer, Entries: rep.Tables[tm.ID].Entries, MaxEntries: tm.MaxEntries,
			PurgeWhenFull: tm.PurgeWhenFull, Timeout: tm.Timeout})
	}
	for _, p := range d.interfaceWarnings() {
		st.Warnings = append(st.Warnings, admin.Warning{Interface: p.Interface, Peer: p.Peer, PeerNetns: p.PeerNetns,
			Problem: p.Kind, Message: p.Message, Fix: p.Fix})
	}
	if res, err := d.RedirectErrors(); err == nil {
		for _, r := range res {
			st.RedirectErrors = append(st.RedirectErrors, admin.RedirectErrors{Interface: r.Interface, Ifindex: r.Ifindex,
				Error: r.Error, Hint: loader.RedirectErrorHint(r.Errno), Count: r.Count})
		}
	}
	return st
}

// nextHopView is the next-hop cache as status shows it: the datapath's
// live generation and hops, and the watcher's view of why a member has none.
type nextHopView struct {
	d          *daemon
	cache      *admin.NextHopCache
	hops       map[loader.MemberID]loader.NextHop
	unresolved map[loader.MemberID]string
	published  time.Time
}

func (d *daemon) nextHops() *nextHopView {
	v := &nextHopView{d: d}
	c, err := d.dp.NextHops()
	if err != nil {
		return v
	}
	now, err := d.dp.Now()
	if err != nil {
		return v
	}
	v.cache = &admin.NextHopCache{Generation: c.Gen, Live: c.Live(now)}
	if v.cache.Live {
		v.hops = c.Hops
		v.cache.LeaseExpiresInSeconds = (c.Expires - now).Seconds()
	}
	if d.nexthops != nil {
		ws := d.nexthops.Stats()
		v.unresolved, v.published = ws.Unresolved, ws.LastRefresh
		v.cache.LastPublished, v.cache.LastResolved = ws.LastRefresh, ws.LastResolve
		v.cache.Publishes, v.cache.NetlinkEvents = ws.Refreshes, ws.Events
	}
	v.cache.MembersCached = len(v.hops)
	return v
}

// member is member id's hop and counters, and adds them to the cache's.
func (v *nextHopView) member(id loader.MemberID) *admin.MemberNextHop {
	if v.cache == nil {
		return nil
	}
	nh := &admin.MemberNextHop{State: admin.NextHopNotCached}
	if c, err := v.d.dp.MemberCounters(id); err == nil {
		nh.Hits, nh.Misses, nh.MTUFallbacks = c.NexthopHits, c.NexthopMisses, c.NexthopMTU
		v.cache.Hits += c.NexthopHits
		v.cache.Misses += c.NexthopMisses
		v.cache.MTUFallbacks += c.NexthopMTU
	}
	if h, ok := v.hops[id]; ok {
		nh.State, nh.Generation, nh.Ifindex, nh.MTU = admin.NextHopCached, v.cache.Generation, h.Ifindex, h.MTU
		nh.SrcMAC, nh.DstMAC, nh.LastRefresh = h.SrcMAC.String(), h.DstMAC.String(), v.published
		if ifc, err := net.InterfaceByIndex(h.Ifindex); err == nil {
			nh.Interface = ifc.Name
		}
	} else if why, ok := v.unresolved[id]; ok {
		nh.State, nh.Reason = admin.NextHopUnresolved, why
		v.cache.MembersUnresolved++
	}
	return nh
}

// RedirectErrors implements metrics.Source: the refused redirects, named
// by the daemon's own namespace, where the targets are.
func (d *daemon) RedirectErrors() ([]metrics.RedirectErrors, error) {
	res, err := d.dp.RedirectErrors()
	if err != nil {
		return nil, err
	}
	out := make([]metrics.RedirectErrors, 0, len(res))
	for _, r := range res {
		name := fmt.Sprintf("ifindex %d", r.Ifindex)
		if ifc, err := net.InterfaceByIndex(r.Ifindex); err == nil {
			name = ifc.Name
		}
		out = append(out, metrics.RedirectErrors{Interface: name, Ifindex: r.Ifindex, Errno: r.Errno, Error: loader.ErrnoName(r.Errno), Count: r.Count})
	}
	return out, nil
}

// clusterStatus is the mirroring peers and the node's cluster view.
func (d *daemon) clusterStatus(want *desired.Desired) ([]admin.MirrorPeer, *admin.Cluster) {
	if d.mirror == nil && d.bgp == nil {
		return nil, nil
	}
	cl := &admin.Cluster{Synced: true}
	var peers []admin.MirrorPeer
	if d.mirror != nil {
		cl.Mode = want.MirrorMode
		for _, p := range d.mirror.Status() {
			peers = append(peers, admin.MirrorPeer{Address: p.Addr, State: string(p.State), Since: p.Since,
				Sent: p.Sent, Received: p.Received, Dropped: p.Dropped, QueueLen: p.QueueLen, LagSeconds: p.Lag.Seconds(), LastError: p.LastError,
				Configured: p.Configured, LastSync: p.LastSync, Syncs: p.Syncs, ClockOffsetSeconds: p.ClockOffset.Seconds()})
			cl.Peers++
			if p.State == mirror.StateUp {
				cl.PeersUp++
			}
			cl.MaxLagSeconds = max(cl.MaxLagSeconds, p.Lag.Seconds())
		}
	}
	d.mu.Lock()
	if d.syncKnown {
		cl.Synced, cl.SyncedAt, cl.SyncDetail = d.synced, d.syncedAt, d.syncDetail
	}
	d.mu.Unlock()
	return peers, cl
}

// Drain is 'limpet drain' (admin.Drainer).
func (d *daemon) Drain(on bool) error {
	err := d.setDraining(on)
	if err != nil && !errors.Is(err, errStopping) {
		return fmt.Errorf("%w: %v", admin.ErrInvalid, err)
	}
	return err
}

func (d *daemon) Reload() (admin.Summary, error) {
	var want *desired.Desired
	err := d.exec(func() (err error) {
		want, err = d.reload()
		return err
	})
	if err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) {
			return admin.Summary{}, &admin.ConfigError{Err: ce.Err}
		}
		return admin.Summary{}, err
	}
	d.mu.Lock()
	at := d.meta.AppliedAt
	d.mu.Unlock()
	return admin.Summarize(want.Counts, want.Warnings, d.opts.ConfigPath, at), nil
}

func (d *daemon) SetMember(pool, member string, enabled bool) error {
	return d.exec(func() error {
		d.mu.Lock()
		meta, down := d.meta, d.healthDown
		d.mu.Unlock()
		mm, err := meta.FindMember(pool, member)
		if errors.Is(err, desired.ErrNoMember) {
			return fmt.Errorf("%w: %v", admin.ErrNotFound, err)
		}
		if errors.Is(err, desired.ErrAmbiguousMember) {
			return fmt.Errorf("%w: %v", admin.ErrInvalid, err)
		}
		if err != nil {
			return err
		}
		p, members, err := meta.SetAdminDown(mm.ID, !enabled, down)
		if err != nil {
			return err
		}
		if err := d.dp.WritePool(p, members, !enabled); err != nil {
			return err
		}
		d.log.Info("member admin state", "pool", pool, "member", mm.Name, "enabled", enabled)
		if err := d.writeMeta(meta); err != nil {
			return err
		}
		d.evaluateBGP()
		return nil
	})
}

// decorateHealth adds the monitor's detail to a member's status. The verdict
// itself (m.Health) stays the one the datapath enforces, which the checker's
// report reaches a moment later.
func (d *daemon) decorateHealth(m *admin.Member, pool, name string) {
	if d.checker == nil || m.Monitor == "" {
		return
	}
	st, ok := d.checker.Member(ids.MemberRef{Pool: pool, Member: name})
	if !ok {
		return
	}
	m.HealthSince = st.Since
	m.HealthDetail = st.Reason
	if st.LastError != "" {
		m.HealthDetail = st.LastError
	}
}

// ---- the metrics listener's credentials ----

// setMetricsAuth reads settings.metrics_auth's secret into the guard. A
// listener that was not opened (no metrics_listen at start) has no guard;
// the listener itself changes only with a restart.
func (d *daemon) setMetricsAuth(want *desired.Desired) error {
	if d.guard == nil {
		return nil
	}
	if err := want.Settings.MetricsAuthErr; err != nil {
		return err
	}
	d.guard.Set(want.Settings.MetricsAuth)
	return nil
}

// ---- statuspage.Source ----

// LookupClient finds a client's entry in every persistence table, masked
// by each table's prefix.
func (d *daemon) LookupClient(client netip.Addr) ([]statuspage.Match, error) {
	meta, _, _, _ := d.snapshot()
	now, err := d.dp.Now()
	if err != nil {
		return nil, err
	}
	var out []statuspage.Match
	for i := range meta.Tables {
		t := &meta.Tables[i]
		key := t.ClientKey(client)
		m := statuspage.Match{Table: t.ID.Index(), Profile: t.Profile, VirtualServer: t.VirtualServer, Key: key.String()}
		bits := t.IPv6Prefix
		if key.Is4() {
			bits = t.IPv4Prefix
		}
		if bits > 0 && bits < key.BitLen() {
			m.Key = netip.PrefixFrom(key, bits).String()
		}
		e, ok, err := d.dp.LookupEntry(t.ID, key)
		if err != nil {
			return nil, err
		}
		if ok {
			m.Found, m.Conns = true, e.Conns
			m.Server = desired.EntryServer(e)
			if mm := meta.EntryMember(e); mm != nil {
				m.Member = mm.Name
			}
			m.State, m.Expires = t.EntryState(e, now)
		}
		out = append(out, m)
	}
	return out, nil
}
