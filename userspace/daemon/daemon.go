// Package daemon is 'limpet run': it loads or adopts the datapath, applies
// the config, attaches to interfaces, sweeps the tables, and reloads on
// request. It stops leaving the datapath pinned and forwarding.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/userspace/config"
	"github.com/limpet-lb/limpet/userspace/gc"
	"github.com/limpet-lb/limpet/userspace/plan"
	"github.com/limpet-lb/limpet/userspace/sharedtable"
)

// Options configure a daemon run.
type Options struct {
	ConfigPath   string
	Interfaces   []string // added to the config's settings.interfaces
	XDPMode      string   // overrides settings.xdp_mode when set
	PinPath      string   // overrides settings.pin_path when set
	DetachOnExit bool
	Logger       *slog.Logger
	// Reload receives a value for each reload request (SIGHUP).
	Reload <-chan struct{}
	// Ready, if set, is called once the datapath is attached.
	Ready func()
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
	meta    *plan.Meta
	cfg     *config.Config
}

// Run runs until ctx is done.
func Run(ctx context.Context, opts Options) error {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	cfg, err := config.Load(opts.ConfigPath)
	if err != nil {
		return &ConfigError{err}
	}
	for _, w := range cfg.Warnings() {
		log.Warn("config", "warning", w)
	}
	pinPath := cfg.Settings.PinPath
	if opts.PinPath != "" {
		pinPath = opts.PinPath
	}
	modeName := cfg.Settings.XDPMode
	if opts.XDPMode != "" {
		modeName = opts.XDPMode
	}
	mode, err := loader.ParseXDPMode(modeName)
	if err != nil {
		return &ConfigError{err}
	}
	ifaces := slices.Compact(slices.Sorted(slices.Values(append(slices.Clone(cfg.Settings.Interfaces), opts.Interfaces...))))
	l4, http := countVirtualServers(cfg)
	if l4 == 0 {
		// Only http virtual servers: no BPF, no interface, as 'limpet l7'.
		if http == 0 {
			return &ConfigError{errors.New("virtual_servers: nothing to serve")}
		}
		return runL7Only(ctx, opts, cfg, log)
	}
	if len(ifaces) == 0 {
		return &ConfigError{errors.New("no interface to attach to: give --iface or settings.interfaces")}
	}

	dp, err := loader.Load(loader.Options{PinPath: pinPath, FlowTableSize: uint32(cfg.Settings.FlowTableSize)})
	if err != nil {
		return err
	}
	d := &daemon{opts: opts, log: log, dp: dp}
	if dp.Adopted() {
		log.Info("adopted pinned datapath", "pin_path", pinPath)
	} else {
		log.Info("loaded datapath", "pin_path", pinPath, "flow_table_size", cfg.Settings.FlowTableSize)
	}
	detach := opts.DetachOnExit
	defer func() {
		if detach {
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

	if d.meta, err = d.readMeta(); err != nil {
		return err
	}
	if err := d.apply(cfg); err != nil {
		return err
	}
	if err := d.attach(ifaces, mode); err != nil {
		return err
	}
	proxy := newProxy(ctx, log)
	defer proxy.stop()
	// The proxy shares the pinned tables of source_ip profiles that l4
	// virtual servers use too.
	tables := sharedtable.New(dp, d.meta)
	if err := proxy.start(cfg, tables); err != nil {
		return &ConfigError{err}
	}
	if opts.Ready != nil {
		opts.Ready()
	}

	interval := time.Duration(cfg.Settings.GCInterval * float64(time.Second))
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-opts.Reload:
			cfg, err := d.reload()
			if err != nil {
				log.Error("reload refused; the running config stays", "error", err)
				continue
			}
			tables = sharedtable.New(dp, d.meta)
			if err := proxy.start(cfg, tables); err != nil {
				log.Error("reload: http virtual servers", "error", err)
			}
		case err := <-proxy.failed:
			return fmt.Errorf("http virtual servers: %w", err)
		case <-ticker.C:
			tables.Sweep(time.Now())
			rep, err := d.sweeper.Sweep()
			if err != nil {
				log.Error("sweep", "error", err)
				continue
			}
			if rep.FlowsExpired+rep.EntriesExpired+rep.Corrected > 0 {
				log.Debug("sweep", "flows", rep.Flows, "flows_expired", rep.FlowsExpired,
					"entries", rep.Entries, "entries_expired", rep.EntriesExpired,
					"counts_corrected", rep.Corrected, "took", rep.Duration)
			}
		}
	}
}

func (d *daemon) readMeta() (*plan.Meta, error) {
	raw, err := d.dp.ReadMeta()
	if err != nil {
		return nil, err
	}
	return plan.ParseMeta(raw)
}

// apply translates cfg and writes it to the datapath. The meta document is
// written last, so ids in it always describe what the maps hold.
func (d *daemon) apply(cfg *config.Config) error {
	if uint32(cfg.Settings.FlowTableSize) != d.dp.FlowTableSize() {
		d.log.Warn("settings.flow_table_size differs from the pinned flow table; keeping the pinned size until 'limpet detach'",
			"configured", cfg.Settings.FlowTableSize, "pinned", d.dp.FlowTableSize())
	}
	state, meta, err := plan.Build(cfg, d.meta)
	if err != nil {
		return &ConfigError{err}
	}
	if err := d.dp.Apply(state); err != nil {
		return fmt.Errorf("apply config to the datapath: %w", err)
	}
	doc, err := meta.Marshal()
	if err != nil {
		return err
	}
	if err := d.dp.WriteMeta(doc); err != nil {
		return err
	}
	d.meta, d.cfg = meta, cfg
	t := cfg.Settings.IdleTimeouts
	timeouts := gc.Timeouts{
		TCPEstablished: time.Duration(t.TCPEstablished) * time.Second,
		TCPFin:         time.Duration(t.TCPFin) * time.Second,
		UDP:            time.Duration(t.UDP) * time.Second,
	}
	entryTimeout := func(id uint32) (time.Duration, bool) {
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

func (d *daemon) reload() (*config.Config, error) {
	cfg, err := config.Load(d.opts.ConfigPath)
	if err != nil {
		return nil, err
	}
	// Another process may have changed admin state since we last applied.
	if m, err := d.readMeta(); err == nil && m != nil {
		d.meta = m
	}
	return cfg, d.apply(cfg)
}

func (d *daemon) attach(ifaces []string, mode loader.XDPMode) error {
	// The stack forwards what XDP hands it, and bpf_fib_lookup answers only
	// for interfaces that forward: a load balancer is a router.
	if err := writeSysctl("/proc/sys/net/ipv6/conf/all/forwarding", "1"); err != nil {
		d.log.Warn("could not enable IPv6 forwarding", "error", err)
	}
	for _, ifname := range ifaces {
		if err := writeSysctl(fmt.Sprintf("/proc/sys/net/ipv4/conf/%s/forwarding", ifname), "1"); err != nil {
			d.log.Warn("could not enable IPv4 forwarding", "iface", ifname, "error", err)
		}
		used, err := d.dp.Attach(ifname, mode)
		if err != nil {
			return err
		}
		d.log.Info("attached", "iface", ifname, "mode", used)
	}
	for _, ifname := range d.dp.Interfaces() {
		if !slices.Contains(ifaces, ifname) {
			if err := d.dp.DetachInterface(ifname); err != nil {
				return err
			}
			d.log.Info("detached from interface no longer configured", "iface", ifname)
		}
	}
	return nil
}

func writeSysctl(path, value string) error {
	return os.WriteFile(path, []byte(value), 0o644)
}
