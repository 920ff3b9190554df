// Package l7health connects the health monitors to the L7 proxy: it adapts
// a health.Passive to l7.FailureReporter, and turns the checker's reports
// into an l7.HealthSource.
package l7health

import (
	"context"
	"net/netip"
	"sync"

	"github.com/limpet-lb/limpet/l7"
	"github.com/limpet-lb/limpet/userspace/health"
	"github.com/limpet-lb/limpet/userspace/ids"
)

// FailureReporter returns an l7.FailureReporter that feeds p.
func FailureReporter(p *health.Passive) l7.FailureReporter { return reporter{p} }

type reporter struct{ p *health.Passive }

func (r reporter) ConnectResult(id ids.MemberRef, addr netip.AddrPort, err error) {
	r.p.ConnectResult(id, addr, err)
}

// Source is an l7.HealthSource and a health.Sink: give it to the checker
// (alone or through health.Tee) and to the proxy's Options.Health. It
// remembers the last verdict of every member it heard of, so that a proxy
// started later (a reload) learns the current states first.
type Source struct {
	mu       sync.Mutex
	states   map[ids.MemberRef]bool
	watchers map[*watcher]struct{}
}

var (
	_ l7.HealthSource = (*Source)(nil)
	_ health.Sink     = (*Source)(nil)
)

// NewSource returns an empty Source.
func NewSource() *Source {
	return &Source{states: map[ids.MemberRef]bool{}, watchers: map[*watcher]struct{}{}}
}

type watcher struct {
	mu     sync.Mutex
	queue  []update
	signal chan struct{} // capacity 1
}

type update struct {
	id ids.MemberRef
	up bool
}

func (w *watcher) push(u update) {
	w.mu.Lock()
	w.queue = append(w.queue, u)
	w.mu.Unlock()
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

// SetMemberHealth records a verdict and passes it to every watcher. It never blocks.
func (s *Source) SetMemberHealth(id ids.MemberRef, up bool, _ string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.states[id] = up
	for w := range s.watchers {
		w.push(update{id, up})
	}
}

// Watch calls update with every known verdict, then with every change,
// until ctx is done; it returns nil then.
func (s *Source) Watch(ctx context.Context, fn func(id ids.MemberRef, up bool)) error {
	w := &watcher{signal: make(chan struct{}, 1)}
	s.mu.Lock()
	for id, up := range s.states {
		w.queue = append(w.queue, update{id, up})
	}
	s.watchers[w] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.watchers, w)
		s.mu.Unlock()
	}()
	for {
		w.mu.Lock()
		batch := w.queue
		w.queue = nil
		w.mu.Unlock()
		for _, u := range batch {
			fn(u.id, u.up)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-w.signal:
		}
	}
}
