package plan

import (
	"errors"
	"fmt"

	"github.com/limpet-lb/limpet/userspace/config"
	"github.com/limpet-lb/limpet/userspace/desired"
	"github.com/limpet-lb/limpet/userspace/metrics"
)

// Compile compiles a validated config for every consumer, reusing the ids
// of prev (which may be nil). A part that does not compile keeps its error
// in the result (see desired.Desired); Compile itself does not fail.
func Compile(cfg *config.Config, prev *desired.Meta) *desired.Desired {
	s := cfg.Settings
	d := &desired.Desired{
		Settings: desired.Settings{PinPath: s.PinPath, XDPMode: s.XDPMode, AdminSocket: s.AdminSocket,
			Interfaces: s.Interfaces, FlowTableSize: s.FlowTableSize, FlowTableSizeV6: s.FlowTableSizeV6, GCInterval: secs(s.GCInterval), MetricsListen: s.MetricsListen},
		Warnings:    cfg.Warnings(),
		Counts:      Counts(cfg),
		PoolMonitor: map[string]string{},
		MirrorScope: MirrorScope(cfg),
		HasBGP:      cfg.BGP != nil,
	}
	d.Settings.MetricsAuth, d.Settings.MetricsAuthKind, d.Settings.MetricsAuthErr = metricsAuth(s.MetricsAuth)
	for _, vs := range cfg.VirtualServers {
		d.VirtualServers = append(d.VirtualServers, desired.VirtualServer{Name: vs.Name, Type: vs.Type, Address: vs.Address,
			Port: vs.Port, Protocol: vs.Protocol, Forwarding: vs.Forwarding, Pool: vs.Pool, Profile: vs.Persistence})
	}
	for _, p := range cfg.Pools {
		if p.HealthMonitor != "" {
			d.PoolMonitor[p.Name] = p.HealthMonitor
		}
	}
	d.L4, d.Meta, d.L4Err = Build(cfg, prev)
	if d.Counts.HTTPVirtualServers > 0 {
		d.L7, d.L7Err = L7(cfg)
	}
	d.Monitors, d.MonitorWarnings, d.MonitorsErr = Monitors(cfg)
	if cfg.HAMirroring != nil {
		d.MirrorMode = cfg.HAMirroring.Mode
		m, err := MirrorConfig(cfg.HAMirroring)
		if err == nil {
			d.Mirror = &m
		}
		d.MirrorErr = err
	}
	d.BGP, d.BGPErr = BGP(cfg)
	return d
}

// Load reads, validates and compiles the config file at path: what the
// daemon calls on start and on every reload.
func Load(path string) func(prev *desired.Meta) (*desired.Desired, error) {
	return func(prev *desired.Meta) (*desired.Desired, error) {
		cfg, err := config.Load(path)
		if err != nil {
			return nil, err
		}
		return Compile(cfg, prev), nil
	}
}

// Counts says how much cfg holds.
func Counts(cfg *config.Config) desired.Counts {
	c := desired.Counts{Pools: len(cfg.Pools), Profiles: len(cfg.Profiles)}
	for _, vs := range cfg.VirtualServers {
		if vs.Type == config.VSTypeHTTP {
			c.HTTPVirtualServers++
		} else {
			c.L4VirtualServers++
		}
	}
	for _, p := range cfg.Pools {
		c.Members += len(p.Members)
	}
	return c
}

// metricsAuth reads settings.metrics_auth's secret.
func metricsAuth(a *config.MetricsAuth) (*metrics.Credentials, string, error) {
	if a == nil {
		return nil, "none", nil
	}
	switch a.Type {
	case config.MetricsAuthBasic:
		pw, err := config.LoadMetricsSecret(a.PasswordFile, 1)
		if err != nil {
			return nil, a.Type, fmt.Errorf("settings.metrics_auth.password_file: %w", err)
		}
		return &metrics.Credentials{Username: a.Username, Secret: pw}, a.Type, nil
	case config.MetricsAuthBearer:
		tok, err := config.LoadMetricsSecret(a.TokenFile, config.MinMetricsTokenBytes)
		if err != nil {
			return nil, a.Type, fmt.Errorf("settings.metrics_auth.token_file: %w", err)
		}
		return &metrics.Credentials{Bearer: true, Secret: tok}, a.Type, nil
	}
	return nil, a.Type, errors.New("settings.metrics_auth.type: " + a.Type + " is not basic or bearer")
}
