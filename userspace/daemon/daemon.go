// Package daemon is 'limpet run': it loads or adopts the datapath, applies
// the config, attaches to interfaces, sweeps the tables, serves the http
// virtual servers, metrics and the admin API, and reloads on request. It
// stops leaving the datapath pinned and forwarding.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/userspace/admin"
	"github.com/limpet-lb/limpet/userspace/bgp"
	"github.com/limpet-lb/limpet/userspace/desired"
	"github.com/limpet-lb/limpet/userspace/gc"
	"github.com/limpet-lb/limpet/userspace/health"
	"github.com/limpet-lb/limpet/userspace/health/l7health"
	"github.com/limpet-lb/limpet/userspace/ids"
	"github.com/limpet-lb/limpet/userspace/metrics"
	"github.com/limpet-lb/limpet/userspace/mirror"
	"github.com/limpet-lb/limpet/userspace/nexthop"
	"github.com/limpet-lb/limpet/userspace/notify"
	"github.com/limpet-lb/limpet/userspace/sharedtable"
	"github.com/limpet-lb/limpet/userspace/statuspage"
	"github.com/limpet-lb/limpet/userspace/veth"
)

// Options configure a daemon run.
type Options struct {
	ConfigPath string
	// Compile reads the config file at ConfigPath and compiles it, reusing
	// the ids of prev (plan.Load(ConfigPath) does both).
	Compile      func(prev *desired.Meta) (*desired.Desired, error)
	Interfaces   []string // added to the config's settings.interfaces
	XDPMode      string   // overrides settings.xdp_mode when set
	PinPath      string   // overrides settings.pin_path when set
	DetachOnExit bool
	Logger       *slog.Logger
	// Reload receives a value for each reload request (SIGHUP).
	Reload <-chan struct{}
	// Ready, if set, is called once the datapath is attached.
	Ready func()
	// Notify tells the service manager (systemd) about start-up, reloads,
	// shutdown and liveness; nil means no manager.
	Notify notify.Notifier
	// Version is reported by the admin API and metrics.
	Version string
}

// ConfigError marks a problem with the config file, as opposed to the system.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

type daemon struct {
	opts    Options
	log     *slog.Logger
	dp      *loader.Datapath
	sweeper *gc.Sweeper
	pinPath string
	// adminSocket is recorded in the pinned metadata for the CLI.
	adminSocket string
	start       time.Time
	jobs        chan func()
	done        chan struct{} // closed when the main loop has exited
	proxy       *proxy
	tables      *sharedtable.Provider
	checker     *health.Checker
	l7src       *l7health.Source
	mirror      *mirror.Node
	bgp         *bgpState
	// nexthops keeps the datapath's next-hop cache in step with the
	// kernel's routes and neighbours.
	nexthops *nexthop.Watcher
	// refreshed is when each mirrored table's held entries were last
	// republished (main loop only).
	refreshed map[loader.TableID]time.Time
	// mode is the XDP mode that interfaces added by a reload get.
	mode loader.XDPMode
	// guard asks for settings.metrics_auth on the metrics listener.
	guard *metrics.Guard
	// clock converts entry times for HA mirroring; entryLocks serialize
	// the apply of one client's versions (mirror.go).
	clock      loader.WallClock
	entryLocks entryLocks

	// mu guards what scrapes and status requests read while the main
	// loop works.
	mu         sync.Mutex
	want       *desired.Desired
	meta       *desired.Meta
	lastReport gc.Report
	sweeps     metrics.SweepStats
	info       metrics.Info
	reloadErr  string
	ifaces     map[string]string // name: XDP mode
	healthDown map[string]bool   // member keys the monitors find down
	// copies of the BGP state for status readers
	bgpAnns     []bgp.Announcement
	bgpDamping  time.Duration
	bgpDraining bool
	syncKnown   bool
	synced      bool
	syncedAt    time.Time
	syncDetail  string
}

// Run runs until ctx is done.
func Run(ctx context.Context, opts Options) error {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if opts.Notify == nil {
		opts.Notify = notify.Nop{}
	}
	if opts.Compile == nil {
		return errors.New("daemon: Options.Compile is not set")
	}
	want, err := opts.Compile(nil)
	if err != nil {
		return &ConfigError{err}
	}
	for _, w := range want.Warnings {
		log.Warn("config", "warning", w)
	}
	pinPath := want.Settings.PinPath
	if opts.PinPath != "" {
		pinPath = opts.PinPath
	}
	modeName := want.Settings.XDPMode
	if opts.XDPMode != "" {
		modeName = opts.XDPMode
	}
	mode, err := loader.ParseXDPMode(modeName)
	if err != nil {
		return &ConfigError{err}
	}
	ifaces := interfacesOf(want.Settings, opts)
	if l4, http := want.Counts.L4VirtualServers, want.Counts.HTTPVirtualServers; l4 == 0 {
		// Only http virtual servers: no BPF, no interface, as 'limpet l7'.
		if http == 0 {
			return &ConfigError{errors.New("virtual_servers: nothing to serve")}
		}
		return runL7Only(ctx, opts, want, log)
	}
	if len(ifaces) == 0 {
		// The packaged example config: valid, inert until the operator
		// names an interface and reloads.
		log.Warn("no interface to attach to: the datapath is loaded but forwards nothing; set settings.interfaces (or --iface) and reload")
	}
	// Bind the endpoints before touching the datapath: a taken port or
	// socket is a config problem, and should not leave a half-started daemon.
	var metricsLn, adminLn interface{ Close() error }
	mln, err := listenMetrics(want.Settings)
	if err != nil {
		return &ConfigError{err}
	}
	if mln != nil {
		metricsLn = mln
		defer metricsLn.Close()
	}
	adminSocket := admin.SocketFor(want.Settings.AdminSocket, pinPath)
	aln, err := admin.Listen(adminSocket)
	if err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	adminLn = aln
	defer adminLn.Close()

	// The daemon's parts run on their own context: on SIGTERM a node that
	// announces VIPs withdraws them and keeps serving (mirroring, health,
	// proxy) for its shutdown grace before they stop.
	life, stopLife := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLife()

	dp, err := loader.Load(loader.Options{PinPath: pinPath, FlowTableSize: uint32(want.Settings.FlowTableSize),
		FlowTableSizeV6: uint32(want.Settings.FlowTableSizeV6)})
	if err != nil {
		return err
	}
	d := &daemon{opts: opts, log: log, dp: dp, pinPath: pinPath, adminSocket: aln.Addr().String(), mode: mode, start: time.Now(), jobs: make(chan func()),
		done: make(chan struct{}), ifaces: map[string]string{}, healthDown: map[string]bool{}, refreshed: map[loader.TableID]time.Time{}}
	defer close(d.done)
	d.info = metrics.Info{Version: opts.Version, StartTime: d.start}
	if dp.Adopted() {
		log.Info("adopted pinned datapath", "pin_path", pinPath)
	} else {
		log.Info("loaded datapath", "pin_path", pinPath, "flow_table_size", want.Settings.FlowTableSize, "flow_table_size_v6", want.Settings.FlowTableSizeV6)
	}
	defer func() {
		if opts.DetachOnExit {
			if err := dp.Detach(); err != nil {
				log.Error("detach", "error", err)
			} else {
				log.Info("detached and removed pinned state", "pin_path", pinPath)
			}
			return
		}
		dp.Close()
		log.Info("exiting; the datapath stays pinned and forwarding", "pin_path", pinPath)
	}()

	// Created here, on the thread that runs Run: the watcher follows the
	// network namespace the daemon was started in.
	if d.nexthops, err = nexthop.New(dp, nexthop.Options{Logger: log}); err != nil {
		return err
	}
	meta, err := d.readMeta()
	if err != nil {
		return err
	}
	d.meta = meta
	if meta != nil {
		// The ids the pinned maps use: compile again, reusing them.
		if want, err = opts.Compile(meta); err != nil {
			return &ConfigError{err}
		}
	}
	if err := d.apply(want); err != nil {
		return err
	}
	if err := d.attach(ifaces, mode); err != nil {
		return err
	}
	// Stopped before the datapath is closed: it drops the cache on its way
	// out, so the FIB decides while no daemon follows the kernel.
	nhCtx, stopNexthops := context.WithCancel(life)
	nhDone := make(chan struct{})
	go func() {
		defer close(nhDone)
		if err := d.nexthops.Run(nhCtx); err != nil {
			log.Error("next-hop cache off; every packet asks the FIB", "error", err)
		}
	}()
	defer func() {
		stopNexthops()
		<-nhDone
	}()
	// Health verdicts reach the datapath (through the main loop) and the
	// L7 proxy; the proxy's connection failures feed the passive monitor.
	d.l7src = l7health.NewSource()
	d.checker = health.NewChecker(health.Tee(health.SinkFunc(d.setMemberHealth), d.l7src), health.Options{Logger: log})
	defer d.checker.Close()
	if err := d.updateHealth(want); err != nil {
		return &ConfigError{err}
	}
	d.tables = sharedtable.New(dp, d.meta)
	// Mirroring first: the proxy's mirrored tables need its publisher.
	if err := d.startMirror(life, want); err != nil {
		return err
	}
	// BGP after mirroring: nothing is announced before the bulk sync.
	if err := d.startBGP(life, want); err != nil {
		return err
	}
	defer func() {
		if d.bgp != nil {
			cctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			d.bgp.speaker.Close(cctx, true)
			cancel()
		}
	}()
	d.proxy = newProxy(life, log)
	d.proxy.health, d.proxy.failures = d.l7src, l7health.FailureReporter(d.checker.Passive())
	defer d.proxy.stop()
	if err := d.proxy.start(want, d.tables); err != nil {
		return &ConfigError{err}
	}
	if mln != nil {
		d.guard = metrics.NewGuard(log)
		if err := d.setMetricsAuth(want); err != nil {
			return &ConfigError{err}
		}
		go metrics.Serve(life, mln, d, log, metrics.Options{Page: statuspage.New(d, log), Guard: d.guard})
		log.Info("metrics and status page", "listen", want.Settings.MetricsListen, "auth", want.Settings.MetricsAuthKind)
	}
	go (&admin.Server{Handler: d, Log: log}).Serve(life, aln)
	log.Info("admin API", "socket", aln.Addr().String())
	if opts.Ready != nil {
		opts.Ready()
	}
	opts.Notify.Ready(d.statusLine())
	log.Info("ready", "status", d.statusLine())

	ticker := time.NewTicker(want.Settings.GCInterval)
	defer ticker.Stop()
	// The watchdog is fed from this loop, so a daemon wedged in a sweep, a
	// reload or a job stops feeding it and systemd restarts it (the pinned
	// datapath forwards meanwhile, and the new daemon adopts it).
	watchdog, stopWatchdog := startWatchdog(opts.Notify)
	defer stopWatchdog()
	// The datapath reads a coarse monotonic clock plus a boot offset that
	// only this loop keeps: after a resume from suspend it is stale (the
	// datapath's clock lags by the time asleep) until the next tick here.
	clockTick := time.NewTicker(clockSyncInterval)
	defer clockTick.Stop()
	var bgpTick <-chan time.Time
	if d.bgp != nil {
		t := time.NewTicker(bgpEvalInterval)
		defer t.Stop()
		bgpTick = t.C
	}
	stopping := func() {
		if opts.DetachOnExit {
			opts.Notify.Stopping("stopping; detaching the datapath")
		} else {
			opts.Notify.Stopping("stopping; the datapath stays pinned and forwarding")
		}
	}
	stop := ctx.Done()
	var graceOver <-chan time.Time
	for {
		select {
		case <-stop:
			grace := d.beginShutdown()
			if grace <= 0 {
				stopping()
				return nil
			}
			opts.Notify.Stopping("stopping; every VIP withdrawn, serving open flows for the shutdown grace")
			log.Info("stopping: every VIP withdrawn; serving open flows for the shutdown grace before exiting (SIGKILL skips it)", "grace", grace.String())
			stop, graceOver = nil, time.After(grace)
		case <-graceOver:
			log.Info("shutdown grace over")
			stopping()
			return nil
		case <-watchdog:
			opts.Notify.Watchdog()
		case <-bgpTick:
			d.evaluateBGP()
		case <-opts.Reload:
			if _, err := d.reload(); err != nil {
				log.Error("reload refused; the running config stays", "error", err)
			}
		case job := <-d.jobs:
			job()
		case <-ticker.C:
			d.sweep()
		case <-clockTick.C:
			d.syncClock()
		case err := <-d.proxy.failed:
			return fmt.Errorf("http virtual servers: %w", err)
		}
	}
}

// errStopping is returned for work that arrives after the main loop ended.
var errStopping = errors.New("the daemon is stopping")

// exec runs fn in the main loop, ordered with reloads and sweeps.
func (d *daemon) exec(fn func() error) error {
	result := make(chan error, 1)
	select {
	case d.jobs <- func() { result <- fn() }:
		return <-result
	case <-d.done:
		return errStopping
	}
}

// updateHealth gives the checker the members of the monitored pools.
func (d *daemon) updateHealth(want *desired.Desired) error {
	targets, warnings, err := want.Monitors, want.MonitorWarnings, want.MonitorsErr
	if err != nil {
		return err
	}
	for _, w := range warnings {
		d.log.Warn("health", "warning", w)
	}
	return d.checker.Update(targets)
}

// setMemberHealth is the checker's sink: a member found down leaves its
// pool (and its persisted clients follow the profile's server_down
// policy); found up again, it returns.
func (d *daemon) setMemberHealth(id ids.MemberRef, up bool, reason string) {
	err := d.exec(func() error {
		d.mu.Lock()
		meta := d.meta
		mm, err := meta.FindMember(id.Pool, id.Member)
		if err != nil {
			d.mu.Unlock()
			return nil // an http-only pool, or one that left the config
		}
		if up {
			delete(d.healthDown, mm.Key)
		} else {
			d.healthDown[mm.Key] = true
		}
		down := make(map[string]bool, len(d.healthDown))
		for k, v := range d.healthDown {
			down[k] = v
		}
		d.mu.Unlock()
		pool, members, err := meta.PoolState(id.Pool, down)
		if err != nil {
			return err
		}
		if err := d.dp.WritePool(pool, members, !up); err != nil {
			return err
		}
		d.evaluateBGP()
		return nil
	})
	if err != nil && !errors.Is(err, errStopping) {
		d.log.Error("member health", "pool", id.Pool, "member", id.Member, "error", err)
		return
	}
	d.log.Info("member health", "pool", id.Pool, "member", id.Member, "up", up, "reason", reason)
}

// clockSyncInterval is how often the daemon checks the datapath's boot
// offset (loader.Datapath.SyncClock): two system calls and a map read.
const clockSyncInterval = time.Second

// syncClock keeps the datapath's clock on the boot clock (see clockTick).
func (d *daemon) syncClock() {
	moved, err := d.dp.SyncClock()
	if err != nil {
		d.log.Error("sync the datapath clock", "error", err)
		return
	}
	if moved != 0 {
		d.log.Info("datapath clock resynchronised with the boot clock (a resume from suspend?)", "moved", moved.String())
	}
}

func (d *daemon) sweep() {
	// A sweep after a resume must not read the entries as older than they
	// are: the clock first.
	d.syncClock()
	d.tables.Sweep(time.Now())
	d.refreshHeld()
	rep, err := d.sweeper.Sweep()
	d.mu.Lock()
	d.sweeps.Record(rep, err)
	if err == nil {
		d.lastReport = rep
	}
	d.mu.Unlock()
	if err != nil {
		d.log.Error("sweep", "error", err)
		return
	}
	if rep.FlowsExpired+rep.EntriesExpired+rep.Corrected+rep.MembersCorrected > 0 {
		d.log.Debug("sweep", "flows", rep.Flows, "flows_expired", rep.FlowsExpired,
			"entries", rep.Entries, "entries_expired", rep.EntriesExpired,
			"counts_corrected", rep.Corrected, "member_counts_corrected", rep.MembersCorrected, "flows_evicted", rep.FlowsEvicted, "took", rep.Duration)
	}
}

func (d *daemon) readMeta() (*desired.Meta, error) {
	raw, err := d.dp.ReadMeta()
	if err != nil {
		return nil, err
	}
	return desired.ParseMeta(raw)
}

// apply writes the compiled L4 state to the datapath. The meta document is
// written last, so ids in it always describe what the maps hold.
func (d *daemon) apply(want *desired.Desired) error {
	v4, v6 := d.dp.FlowTableSizes()
	want6 := want.Settings.FlowTableSizeV6
	if want6 == 0 {
		want6 = want.Settings.FlowTableSize
	}
	if uint32(want.Settings.FlowTableSize) != v4 || uint32(want6) != v6 {
		d.log.Warn("settings.flow_table_size (or _v6) differs from the pinned flow tables; keeping the pinned sizes until 'limpet detach'",
			"configured", want.Settings.FlowTableSize, "configured_v6", want6, "pinned", v4, "pinned_v6", v6)
	}
	d.mu.Lock()
	down := d.healthDown
	d.mu.Unlock()
	state, meta, err := want.L4, want.Meta, want.L4Err
	if err != nil {
		return &ConfigError{err}
	}
	if state.Members, state.Pools, err = meta.MembersAndPools(down); err != nil {
		return &ConfigError{err}
	}
	if err := d.dp.Apply(state); err != nil {
		return fmt.Errorf("apply config to the datapath: %w", err)
	}
	if d.nexthops != nil {
		targets := make([]nexthop.Target, 0, len(state.Members))
		for _, m := range state.Members {
			targets = append(targets, nexthop.Target{Member: m.ID, Addr: m.Addr.Addr()})
		}
		d.nexthops.SetTargets(targets)
	}
	if err := d.writeMeta(meta); err != nil {
		return err
	}
	d.mu.Lock()
	d.meta, d.want = meta, want
	d.info.AppliedAt = meta.AppliedAt
	d.mu.Unlock()
	t := meta.IdleTimeouts
	timeouts := gc.Timeouts{
		TCPEstablished: time.Duration(t.TCPEstablished) * time.Second,
		TCPFin:         time.Duration(t.TCPFin) * time.Second,
		UDP:            time.Duration(t.UDP) * time.Second,
	}
	entryTimeout := func(id loader.TableID) (time.Duration, bool) {
		if tm := meta.Table(id); tm != nil {
			return time.Duration(tm.Timeout) * time.Second, true
		}
		return 0, false
	}
	if d.sweeper == nil {
		d.sweeper = gc.New(d.dp, timeouts, entryTimeout)
	} else {
		d.sweeper.SetTimeouts(timeouts)
		d.sweeper.SetEntryTimeout(entryTimeout)
	}
	d.log.Info("config applied", "virtual_servers", len(state.VirtualServers), "pools", len(state.Pools),
		"members", len(state.Members), "tables", len(state.Tables))
	return nil
}

func (d *daemon) writeMeta(meta *desired.Meta) error {
	meta.AdminSocket = d.adminSocket
	doc, err := meta.Marshal()
	if err != nil {
		return err
	}
	return d.dp.WriteMeta(doc)
}

// reload re-reads the config file and applies it; a bad file changes
// nothing. It runs in the main loop.
func (d *daemon) reload() (*desired.Desired, error) {
	d.opts.Notify.Reloading()
	want, err := d.reloadConfig()
	defer func() { d.opts.Notify.Ready(d.statusLine()) }()
	d.mu.Lock()
	if err != nil {
		d.info.ReloadFailures++
		d.info.LastReloadFailed = true
		d.reloadErr = err.Error()
	} else {
		d.info.Reloads++
		d.info.LastReloadFailed = false
		d.reloadErr = ""
	}
	d.mu.Unlock()
	return want, err
}

func (d *daemon) reloadConfig() (*desired.Desired, error) {
	// 'limpet member disable' without the daemon may have changed admin
	// state since we last applied.
	if m, err := d.readMeta(); err == nil && m != nil {
		d.mu.Lock()
		d.meta = m
		d.mu.Unlock()
	}
	d.mu.Lock()
	prev := d.meta
	d.mu.Unlock()
	want, err := d.opts.Compile(prev)
	if err != nil {
		return nil, &ConfigError{err}
	}
	ifaces := interfacesOf(want.Settings, d.opts)
	if err := checkInterfaces(ifaces); err != nil {
		return nil, &ConfigError{err}
	}
	if err := d.apply(want); err != nil {
		return nil, err
	}
	if err := d.attach(ifaces, d.mode); err != nil {
		return nil, err
	}
	if err := d.updateHealth(want); err != nil {
		d.log.Error("reload: health monitors", "error", err)
	}
	if err := d.setMetricsAuth(want); err != nil {
		return nil, &ConfigError{err}
	}
	// The same provider: the L7 tables keep their entries across reloads.
	d.tables.SetMeta(d.meta)
	if err := d.proxy.start(want, d.tables); err != nil {
		return nil, &ConfigError{err}
	}
	if d.mirror != nil {
		// Peers and keys are fixed at start; the scope follows the profiles.
		d.mirror.SetScope(want.MirrorScope)
	}
	d.reloadBGP(want)
	d.log.Info("reloaded", "config", d.opts.ConfigPath)
	return want, nil
}

func (d *daemon) attach(ifaces []string, mode loader.XDPMode) error {
	// The stack forwards what XDP hands it, and bpf_fib_lookup answers only
	// for interfaces that forward: a load balancer is a router.
	if err := writeSysctl("/proc/sys/net/ipv6/conf/all/forwarding", "1"); err != nil {
		d.log.Warn("could not enable IPv6 forwarding", "error", err)
	}
	for _, ifname := range ifaces {
		d.mu.Lock()
		_, done := d.ifaces[ifname]
		d.mu.Unlock()
		if done {
			continue
		}
		if err := writeSysctl(fmt.Sprintf("/proc/sys/net/ipv4/conf/%s/forwarding", ifname), "1"); err != nil {
			d.log.Warn("could not enable IPv4 forwarding", "iface", ifname, "error", err)
		}
		used, err := d.dp.Attach(ifname, mode)
		if err != nil {
			return err
		}
		d.mu.Lock()
		d.ifaces[ifname] = used
		d.mu.Unlock()
		d.log.Info("attached", "iface", ifname, "mode", used)
	}
	for _, ifname := range d.dp.Interfaces() {
		if !slices.Contains(ifaces, ifname) {
			if err := d.dp.DetachInterface(ifname); err != nil {
				return err
			}
			d.mu.Lock()
			delete(d.ifaces, ifname)
			d.mu.Unlock()
			d.log.Info("detached from interface no longer configured", "iface", ifname)
		}
	}
	if err := d.dp.WatchRedirectErrors(); err != nil {
		d.log.Warn("redirect failures will not be counted", "error", err)
	}
	for _, p := range d.interfaceWarnings() {
		d.log.Warn("interface setting breaks native XDP", "iface", p.Interface, "peer", p.Peer, "peer_netns", p.PeerNetns,
			"problem", p.Message, "fix", p.Fix)
	}
	return nil
}

// interfaceWarnings checks the veths limpet runs on in native mode for
// settings of their peers that break forwarding (see package veth). Status
// calls it afresh, so a fixed setting stops showing.
func (d *daemon) interfaceWarnings() []veth.Problem {
	d.mu.Lock()
	ifaces := slices.Sorted(maps.Keys(d.ifaces))
	d.mu.Unlock()
	var out []veth.Problem
	for _, ifname := range ifaces {
		ps, err := veth.Check(ifname)
		if err != nil {
			out = append(out, veth.Problem{Interface: ifname, Kind: "check_failed",
				Message: fmt.Sprintf("cannot check its settings: %v", err)})
			continue
		}
		out = append(out, ps...)
	}
	return out
}

func writeSysctl(path, value string) error {
	return os.WriteFile(path, []byte(value), 0o644)
}

// interfacesOf is the interfaces a daemon attaches to: the config's and the
// command line's.
func interfacesOf(s desired.Settings, opts Options) []string {
	return slices.Compact(slices.Sorted(slices.Values(append(slices.Clone(s.Interfaces), opts.Interfaces...))))
}

// checkInterfaces makes a reload that names a missing interface fail before
// it changes anything.
func checkInterfaces(ifaces []string) error {
	for i, name := range ifaces {
		if _, err := net.InterfaceByName(name); err != nil {
			return fmt.Errorf("settings.interfaces[%d]: no interface %q on this host: %w", i, name, err)
		}
	}
	return nil
}

// statusLine sums up what the daemon does, for systemd's STATUS=.
func (d *daemon) statusLine() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var l4, http int
	if d.want != nil {
		l4, http = d.want.Counts.L4VirtualServers, d.want.Counts.HTTPVirtualServers
	}
	var b strings.Builder
	if len(d.ifaces) == 0 {
		fmt.Fprintf(&b, "attached to no interface, forwarding nothing (set settings.interfaces and reload); %s configured", count(l4, "l4 virtual server"))
	} else {
		names := make([]string, 0, len(d.ifaces))
		for name, mode := range d.ifaces {
			names = append(names, name+" ("+mode+")")
		}
		slices.Sort(names)
		fmt.Fprintf(&b, "forwarding %s on %s", count(l4, "l4 virtual server"), strings.Join(names, ", "))
	}
	if http > 0 {
		fmt.Fprintf(&b, "; %s", count(http, "http virtual server"))
	}
	if d.reloadErr != "" {
		b.WriteString("; last reload refused: " + d.reloadErr)
	}
	return b.String()
}

// count is "1 thing" or "n things".
func count(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

// startWatchdog feeds the service manager's watchdog once, and returns the
// ticks on which to feed it again (nil when it has no watchdog) and what
// stops them.
func startWatchdog(n notify.Notifier) (<-chan time.Time, func()) {
	iv := n.WatchdogInterval()
	if iv <= 0 {
		return nil, func() {}
	}
	t := time.NewTicker(iv)
	n.Watchdog()
	return t.C, t.Stop
}
