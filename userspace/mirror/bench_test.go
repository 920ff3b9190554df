package mirror

import (
	"context"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// countingLocal counts applied entries, as cheaply as possible, so the
// benchmark measures the mirroring and not a table.
type countingLocal struct {
	n    atomic.Int64
	want atomic.Int64
	done chan struct{}
}

func (c *countingLocal) Snapshot(context.Context) ([]Entry, error) { return nil, nil }

func (c *countingLocal) Apply(Entry) error {
	if c.n.Add(1) == c.want.Load() {
		close(c.done)
	}
	return nil
}

// BenchmarkMirrorThroughput mirrors b.N entries from one node to another
// over loopback and reports entries per second. The publisher backs off
// when the queue is three quarters full, so nothing is dropped: this is
// the rate the connection sustains.
func BenchmarkMirrorThroughput(b *testing.B) {
	ca := newTestCA(b, "bench CA")
	for _, auth := range []string{"psk", "tls"} {
		b.Run(auth, func(b *testing.B) {
			cfgA, cfgB := testConfig(), testConfig()
			if auth == "tls" {
				cfgA = tlsTestConfig(ca, ca.issue(b, "a"))
				cfgB = tlsTestConfig(ca, ca.issue(b, "b"))
			}
			cfgA.HeartbeatTimeout, cfgB.HeartbeatTimeout = 10*time.Second, 10*time.Second
			cfgA.QueueSize = 1 << 16
			recv := &countingLocal{done: make(chan struct{})}
			recv.want.Store(int64(b.N))
			nb, err := New(cfgB, recv, nil)
			if err != nil {
				b.Fatal(err)
			}
			addr, err := nb.Listen()
			if err != nil {
				b.Fatal(err)
			}
			cfgA.Listen = ""
			cfgA.Peers = []string{addr.String()}
			na, err := New(cfgA, newMemLocal(), nil)
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go nb.Run(ctx)
			go na.Run(ctx)
			for len(na.Status()) != 1 || na.Status()[0].State != StateUp {
				time.Sleep(time.Millisecond)
			}
			links := *na.links.Load()
			if len(links) != 1 {
				b.Fatalf("%d links", len(links))
			}
			q := links[0].q
			high := cfgA.QueueSize * 3 / 4
			e := Entry{Table: "profile:bench", Server: netip.MustParseAddrPort("10.0.1.11:8080"), Op: Upsert}
			now := time.Now()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				if i%1024 == 0 {
					for {
						if n, _ := q.stats(); n < high {
							break
						}
						time.Sleep(50 * time.Microsecond)
					}
				}
				e.Client = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
				e.Created, e.Updated = now, now
				na.Publish(e)
			}
			select {
			case <-recv.done:
			case <-time.After(60 * time.Second):
				b.Fatalf("received %d of %d entries; status %+v", recv.n.Load(), b.N, na.Status())
			}
			elapsed := time.Since(start)
			b.StopTimer()
			if s := na.Status()[0]; s.Dropped != 0 {
				b.Errorf("%d entries dropped", s.Dropped)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "entries/s")
		})
	}
}
