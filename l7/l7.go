// Package l7 is limpet's HTTP proxy: it serves the virtual servers of type
// http with HTTP cookie, app cookie, generic and source-IP persistence, as
// the NSX ALB and NSX seeds describe, over pools balanced by the pool's
// algorithm. It needs no BPF: its persistence tables are in memory unless
// the caller provides others (persist.Provider).
package l7

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/limpet-lb/limpet/l7/accesslog"
	"github.com/limpet-lb/limpet/l7/balance"
	"github.com/limpet-lb/limpet/l7/persist"
	"github.com/limpet-lb/limpet/l7/spec"
	"github.com/limpet-lb/limpet/userspace/ids"
)

// HealthSource is where member health comes from; the control plane's
// monitors implement it. Watch calls update with the state of the members it
// knows, then with every change, until ctx is done. A member it never
// mentions stays up (passive health still applies).
type HealthSource interface {
	Watch(ctx context.Context, update func(id ids.MemberRef, up bool)) error
}

// FailureReporter hears the outcome of every new connection the proxy opens
// to a member: err is nil on success. A passive monitor counts consecutive
// failures from it. It is called on the proxy's request path and must not block.
type FailureReporter interface {
	ConnectResult(id ids.MemberRef, addr netip.AddrPort, err error)
}

// Options tune a Server beyond the config file. The zero value is usable.
type Options struct {
	// Logger receives operational messages (listeners, errors); nil discards them.
	Logger *slog.Logger
	// Stdout and Stderr are where access_log: stdout and stderr go
	// (os.Stdout and os.Stderr when nil).
	Stdout, Stderr io.Writer
	// Tables provides persistence tables; nil means in-memory tables.
	Tables persist.Provider
	// Health pushes monitor verdicts; nil means members are up unless
	// passive health marks them down.
	Health HealthSource
	// Failures hears connection outcomes; nil means nobody listens.
	Failures FailureReporter
	// Listeners holds listeners opened by the caller, by virtual server
	// name; the others are opened on the configured address and port.
	Listeners map[string]net.Listener
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// GCInterval is how often in-memory tables are swept; 0 means the
	// Spec's (settings.gc_interval).
	GCInterval time.Duration
}

// Server runs every http virtual server of a Spec.
type Server struct {
	opts    Options
	log     *slog.Logger
	now     func() time.Time
	vss     []*virtualServer
	members map[ids.MemberRef][]*balance.Member
	sinks   *accesslog.Sinks
	memory  *persist.MemoryProvider // nil when the caller provides tables
	gc      time.Duration

	started   atomic.Bool // Serve runs once
	mu        sync.Mutex
	ready     chan struct{}
	readyOnce sync.Once
	bound     map[string]net.Addr
}

// Spec is what the proxy runs: the compiled http virtual servers of a
// config (plan.L7 builds it).
type Spec = spec.Spec

// Run serves every http virtual server of sp until ctx is done, then shuts
// down gracefully. It returns nil after a clean shutdown.
func Run(ctx context.Context, sp Spec, logger *slog.Logger) error {
	s, err := New(sp, Options{Logger: logger})
	if err != nil {
		return err
	}
	return s.Serve(ctx)
}

// New builds a server for the http virtual servers of sp. It opens no
// sockets yet.
func New(sp Spec, opts Options) (*Server, error) {
	s := &Server{
		opts:    opts,
		log:     opts.Logger,
		now:     opts.Now,
		members: map[ids.MemberRef][]*balance.Member{},
		ready:   make(chan struct{}),
		bound:   map[string]net.Addr{},
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if opts.Tables == nil {
		s.memory = persist.NewMemoryProvider()
		s.opts.Tables = s.memory
	}
	s.gc = opts.GCInterval
	if s.gc <= 0 {
		s.gc = sp.GCInterval
	}
	s.sinks = accesslog.NewSinks(opts.Stdout, opts.Stderr)
	pools := map[string]*balance.Pool{}
	for i := range sp.VirtualServers {
		vc := &sp.VirtualServers[i]
		pool, err := s.pool(vc, pools)
		if err != nil {
			s.sinks.Close()
			return nil, err
		}
		vs, err := newVirtualServer(s, vc, pool)
		if err != nil {
			s.sinks.Close()
			return nil, fmt.Errorf("virtual server %q: %w", vc.Name, err)
		}
		s.vss = append(s.vss, vs)
	}
	if len(s.vss) == 0 {
		s.sinks.Close()
		return nil, errors.New("the config has no virtual server of type http")
	}
	return s, nil
}

// pool returns the balance pool of a virtual server. Pools are shared by
// virtual servers, so that connection counts and health are per server,
// except that members with port 0 take the virtual server's port, and so
// differ between virtual servers on different ports.
func (s *Server) pool(vc *spec.VirtualServer, pools map[string]*balance.Pool) (*balance.Pool, error) {
	pc := &vc.Pool
	key := pc.Name
	for _, m := range pc.Members {
		if m.Port == 0 {
			key = fmt.Sprintf("%s:%d", pc.Name, vc.Listen.Port())
			break
		}
	}
	if p, ok := pools[key]; ok {
		return p, nil
	}
	members := make([]*balance.Member, 0, len(pc.Members))
	for _, mc := range pc.Members {
		port := mc.Port
		if port == 0 {
			port = vc.Listen.Port()
		}
		m := balance.NewMember(pc.Name, mc.Name, netip.AddrPortFrom(mc.Addr, port), mc.Weight)
		switch {
		case mc.Disabled:
			m.SetAdmin(balance.Disabled)
		case mc.Draining:
			m.SetAdmin(balance.Draining)
		}
		members = append(members, m)
		id := ids.MemberRef{Pool: pc.Name, Member: mc.Name}
		s.members[id] = append(s.members[id], m)
	}
	p, err := balance.NewPool(pc.Name, pc.Algorithm, members)
	if err != nil {
		return nil, fmt.Errorf("pool %q: %w", pc.Name, err)
	}
	pools[key] = p
	return p, nil
}

// SetMemberUp applies a monitor verdict to a member (every copy of it).
// It reports whether the member is known.
func (s *Server) SetMemberUp(id ids.MemberRef, up bool) bool {
	ms, ok := s.members[id]
	for _, m := range ms {
		m.SetMonitorUp(up)
	}
	return ok
}

// SetMemberAdmin changes a member's administrative state at run time. It
// reports whether the member is known.
func (s *Server) SetMemberAdmin(id ids.MemberRef, a balance.Admin) bool {
	ms, ok := s.members[id]
	for _, m := range ms {
		m.SetAdmin(a)
	}
	return ok
}

// Member returns the member objects the proxy uses for id (one per distinct
// port when the member's port follows the virtual server's).
func (s *Server) Member(id ids.MemberRef) []*balance.Member { return s.members[id] }

// Ready is closed once every listener is bound (or Serve failed to bind one).
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addr returns the address a virtual server listens on, once Ready.
func (s *Server) Addr(vs string) net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bound[vs]
}

// Serve opens the listeners and serves until ctx is done, then shuts every
// virtual server down gracefully (each within its shutdown_timeout). It
// returns the first listener error, or nil after a clean shutdown.
func (s *Server) Serve(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("l7: Serve called twice")
	}
	defer s.sinks.Close()
	markReady := func() { s.readyOnce.Do(func() { close(s.ready) }) }
	defer markReady()

	lns := make([]net.Listener, len(s.vss))
	for i, vs := range s.vss {
		ln, err := vs.listen(s.opts.Listeners[vs.name])
		if err != nil {
			for _, l := range lns[:i] {
				l.Close()
			}
			return fmt.Errorf("virtual server %q: %w", vs.name, err)
		}
		lns[i] = ln
		s.mu.Lock()
		s.bound[vs.name] = ln.Addr()
		s.mu.Unlock()
		s.log.Info("l7 virtual server listening", "virtual_server", vs.name, "addr", ln.Addr().String(), "tls", vs.tls != nil, "pool", vs.pool.Name)
	}
	markReady()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, len(s.vss))
	for i, vs := range s.vss {
		wg.Go(func() {
			if err := vs.serveListener(lns[i]); err != nil {
				errc <- fmt.Errorf("virtual server %q: %w", vs.name, err)
				cancel()
			}
		})
	}
	if s.opts.Health != nil {
		wg.Go(func() {
			err := s.opts.Health.Watch(ctx, func(id ids.MemberRef, up bool) {
				if s.SetMemberUp(id, up) {
					s.log.Info("member health", "pool", id.Pool, "member", id.Member, "up", up)
				}
			})
			if err != nil && ctx.Err() == nil {
				s.log.Warn("health source stopped", "err", err)
			}
		})
	}
	for _, vs := range s.vss {
		wg.Go(func() {
			// Close member connections idle past their timeout, also when
			// no request comes to take them.
			t := time.NewTicker(upstreamIdleTimeout / 3)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case now := <-t.C:
					vs.up.sweep(now)
				}
			}
		})
	}
	if s.memory != nil {
		wg.Go(func() {
			t := time.NewTicker(s.gc)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					if n := s.memory.Sweep(s.now()); n > 0 {
						s.log.Debug("persistence entries expired", "count", n)
					}
				}
			}
		})
	}

	<-ctx.Done()
	var sw sync.WaitGroup
	for _, vs := range s.vss {
		sw.Go(vs.shutdown)
	}
	sw.Wait()
	wg.Wait()
	close(errc)
	if err, ok := <-errc; ok {
		return err
	}
	return nil
}
