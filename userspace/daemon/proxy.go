package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/limpet-lb/limpet/l7"
	"github.com/limpet-lb/limpet/l7/persist"
	"github.com/limpet-lb/limpet/userspace/desired"
	"github.com/limpet-lb/limpet/userspace/health"
	"github.com/limpet-lb/limpet/userspace/health/l7health"
)

// proxy runs the L7 proxy for the http virtual servers of the current
// config. A reload replaces it: the old server drains gracefully while the
// new one starts.
type proxy struct {
	// health and failures connect the proxy to the health monitors.
	health   l7.HealthSource
	failures l7.FailureReporter
	parent   context.Context
	log      *slog.Logger
	cancel   context.CancelFunc
	done     chan struct{}
	failed   chan error
}

func newProxy(ctx context.Context, log *slog.Logger) *proxy {
	return &proxy{parent: ctx, log: log, failed: make(chan error, 1)}
}

// start serves cfg's http virtual servers with tables from the given
// provider (nil: in-memory tables).
func (p *proxy) start(want *desired.Desired, tables persist.Provider) error {
	if want.Counts.HTTPVirtualServers == 0 {
		p.stop()
		return nil
	}
	if want.L7Err != nil {
		return want.L7Err
	}
	srv, err := l7.New(want.L7, l7.Options{Logger: p.log, Tables: tables, Health: p.health, Failures: p.failures})
	if err != nil {
		return err
	}
	p.stop()
	ctx, cancel := context.WithCancel(p.parent)
	done := make(chan struct{})
	p.cancel, p.done = cancel, done
	go func() {
		defer close(done)
		if err := srv.Serve(ctx); err != nil && !errors.Is(err, context.Canceled) {
			select {
			case p.failed <- err:
			default:
			}
		}
	}()
	return nil
}

// stop shuts the running server down and waits for it to drain.
func (p *proxy) stop() {
	if p.cancel == nil {
		return
	}
	p.cancel()
	<-p.done
	p.cancel, p.done = nil, nil
}

// runL7Only serves a config that has only http virtual servers.
func runL7Only(ctx context.Context, opts Options, want *desired.Desired, log *slog.Logger) error {
	p := newProxy(ctx, log)
	src := l7health.NewSource()
	checker := health.NewChecker(src, health.Options{Logger: log})
	defer checker.Close()
	targets, warnings, err := want.Monitors, want.MonitorWarnings, want.MonitorsErr
	if err != nil {
		return &ConfigError{err}
	}
	for _, w := range warnings {
		log.Warn("health", "warning", w)
	}
	if err := checker.Update(targets); err != nil {
		return &ConfigError{err}
	}
	p.health, p.failures = src, l7health.FailureReporter(checker.Passive())
	defer p.stop()
	if err := p.start(want, nil); err != nil {
		return &ConfigError{err}
	}
	log.Info("serving http virtual servers only; no XDP datapath is loaded")
	if opts.Ready != nil {
		opts.Ready()
	}
	n := want.Counts.HTTPVirtualServers
	status := func(n int, refused error) string {
		s := fmt.Sprintf("serving %s (no XDP datapath)", count(n, "http virtual server"))
		if refused != nil {
			s += "; last reload refused: " + refused.Error()
		}
		return s
	}
	opts.Notify.Ready(status(n, nil))
	watchdog, stopWatchdog := startWatchdog(opts.Notify)
	defer stopWatchdog()
	for {
		select {
		case <-ctx.Done():
			opts.Notify.Stopping("stopping")
			return nil
		case err := <-p.failed:
			return err
		case <-watchdog:
			opts.Notify.Watchdog()
		case <-opts.Reload:
			opts.Notify.Reloading()
			next, err := opts.Compile(nil)
			if err == nil {
				err = p.start(next, nil)
			}
			if err != nil {
				log.Error("reload refused; the running config stays", "error", err)
				opts.Notify.Ready(status(n, err))
				continue
			}
			n = next.Counts.HTTPVirtualServers
			if next.MonitorsErr == nil {
				_ = checker.Update(next.Monitors)
			}
			opts.Notify.Ready(status(n, nil))
		}
	}
}
