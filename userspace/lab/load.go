package lab

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Load is clients sending GETs in a loop, each a new TCP connection, until
// Stop: the traffic that a failover test or the demo keeps up while it
// breaks something, counting what failed and which clients changed member.
type Load struct {
	// OK and Bad count the answered (status 200) and the failed GETs;
	// Slow the GETs that took over a second (SYN retransmits).
	OK, Bad, Slow atomic.Uint64

	stop  chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	want  map[netip.Addr]string
	moved map[netip.Addr]string
	errs  []string
}

// StartLoad runs a loop per client until Stop or the end of ctx: GET / of
// dst (8 s at the most), then a pause. want names the member each client
// must keep; a GET answered by another marks the client moved.
func (l *Lab) StartLoad(ctx context.Context, clients []netip.Addr, dst netip.AddrPort, want map[netip.Addr]string, pause time.Duration) *Load {
	ld := &Load{stop: make(chan struct{}), want: want, moved: map[netip.Addr]string{}}
	for _, src := range clients {
		ld.wg.Go(func() {
			for {
				start := time.Now()
				rctx, cancel := context.WithTimeout(ctx, 8*time.Second)
				r, err := l.Get(rctx, src, URL(dst, "/"))
				cancel()
				ld.count(src, r, err, time.Since(start))
				select {
				case <-ld.stop:
					return
				case <-ctx.Done():
					return
				case <-time.After(pause):
				}
			}
		})
	}
	return ld
}

func (ld *Load) count(src netip.Addr, r HTTPReply, err error, took time.Duration) {
	if took > time.Second {
		ld.Slow.Add(1)
	}
	ld.mu.Lock()
	defer ld.mu.Unlock()
	if err != nil || r.Status != 200 {
		ld.Bad.Add(1)
		if len(ld.errs) < 10 {
			ld.errs = append(ld.errs, fmt.Sprintf("%s: %v (status %d)", src, err, r.Status))
		}
		return
	}
	ld.OK.Add(1)
	if w, ok := ld.want[src]; ok && w != r.Member {
		ld.moved[src] = r.Member
	}
}

// Stop ends the loops and waits for them.
func (ld *Load) Stop() {
	close(ld.stop)
	ld.wg.Wait()
}

// Moved is the clients that reached another member than they had to keep,
// with that member.
func (ld *Load) Moved() map[netip.Addr]string {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	return ld.moved
}

// Errors is the first ten failures.
func (ld *Load) Errors() []string {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	return ld.errs
}
