package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/limpet-lb/limpet/userspace/lab"
)

// Part 3: connection rate and latency over real TCP.
//
// Workers in the client namespace open a connection, send an HTTP/1.0
// request, read the member's whole answer and close: one short connection,
// as a client of a busy site makes them. The latency is that whole exchange.
// Targets: the VIP through limpet (NAT, XDP), the VIP through the nftables
// peer (DNAT + conntrack), and a member directly (routed by the balancer's
// kernel, neither limpet nor nftables loaded: the ceiling). Each worker
// goroutine sits on an OS thread of its own inside the client namespace.

// Connection-rate targets.
const (
	ConnDirect = "direct to a member (balancer routes, no LB)"
	ConnLimpet = "limpet NAT (XDP)"
	ConnNft    = "nftables DNAT + conntrack"
)

// ConnTargets in report order.
var ConnTargets = []string{ConnDirect, ConnLimpet, ConnNft}

// ConnRow is one target: per run, connections per second and latency.
type ConnRow struct {
	Target        string
	Rate          Series // connections/s
	P50, P99      Series // ms
	Conns, Errors []int
}

// ConnOptions size part 3.
type ConnOptions struct {
	Workers  int
	Duration time.Duration
	MaxConns int // per measurement, however fast
	Sources  int // client source addresses the workers cycle through
	Runs     int
}

// ConnResult is part 3.
type ConnResult struct {
	Rows []*ConnRow
	Opts ConnOptions
}

// Row returns a target's row.
func (r *ConnResult) Row(target string) *ConnRow {
	for _, row := range r.Rows {
		if row.Target == target {
			return row
		}
	}
	return nil
}

// RunConnRate runs part 3 in a lab of its own.
func RunConnRate(ctx context.Context, env Env, o ConnOptions) (*ConnResult, error) {
	return inBenchLab(ctx, env, func(bl *benchLab) (*ConnResult, error) { return runConnRate(ctx, bl, o) })
}

func runConnRate(ctx context.Context, bl *benchLab, o ConnOptions) (*ConnResult, error) {
	res := &ConnResult{Opts: o}
	rows := map[string]*ConnRow{}
	for _, t := range ConnTargets {
		rows[t] = &ConnRow{Target: t}
		res.Rows = append(res.Rows, rows[t])
	}
	vip := []netip.AddrPort{netip.AddrPortFrom(bl.VIP4(), 80)}
	var direct []netip.AddrPort
	for _, m := range bl.Members() {
		direct = append(direct, netip.AddrPortFrom(m.Addr4, 80))
	}
	record := func(t string, r connRun) error {
		row := rows[t]
		if r.conns == 0 || r.errors*100 > r.conns {
			return fmt.Errorf("%w: %s: %d connections, %d failed (first error: %v)", errSanity, t, r.conns, r.errors, r.firstErr)
		}
		row.Rate.Add(float64(r.conns) / r.elapsed.Seconds())
		row.P50.Add(r.percentile(0.50).Seconds() * 1000)
		row.P99.Add(r.percentile(0.99).Seconds() * 1000)
		row.Conns = append(row.Conns, r.conns)
		row.Errors = append(row.Errors, r.errors)
		return nil
	}
	for run := 0; run < o.Runs; run++ {
		start := time.Now()
		r, err := dialLoad(ctx, bl, direct, o, run)
		if err != nil {
			return nil, err
		}
		if err := record(ConnDirect, r); err != nil {
			return nil, err
		}

		if err := bl.startLimpet(ctx, bl.limpetCfg); err != nil {
			return nil, err
		}
		r, err = dialLoad(ctx, bl, vip, o, run)
		if serr := bl.stopLimpet(); err == nil {
			err = serr
		}
		if err != nil {
			return nil, err
		}
		if err := record(ConnLimpet, r); err != nil {
			return nil, err
		}

		if err := bl.loadNft(ctx); err != nil {
			return nil, err
		}
		r, err = dialLoad(ctx, bl, vip, o, run)
		if uerr := bl.unloadNft(ctx); err == nil {
			err = uerr
		}
		if err != nil {
			return nil, err
		}
		if err := record(ConnNft, r); err != nil {
			return nil, err
		}
		bl.env.logf("connection rate: run %d/%d done in %.1fs", run+1, o.Runs, time.Since(start).Seconds())
	}
	return res, nil
}

type connRun struct {
	conns, errors int
	firstErr      error
	elapsed       time.Duration
	lat           []time.Duration
}

func (r *connRun) percentile(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	return r.lat[min(len(r.lat)-1, int(float64(len(r.lat))*p))]
}

var httpRequest = []byte("GET / HTTP/1.0\r\nHost: bench\r\n\r\n")

// dialLoad runs o.Workers workers against dsts (in turn) for o.Duration or
// o.MaxConns connections, whichever comes first.
func dialLoad(ctx context.Context, bl *benchLab, dsts []netip.AddrPort, o ConnOptions, run int) (connRun, error) {
	ctx, cancel := context.WithTimeout(ctx, o.Duration+10*time.Second)
	defer cancel()
	var (
		mu    sync.Mutex
		total connRun
		wg    sync.WaitGroup
		left  = o.MaxConns
	)
	take := func() bool {
		mu.Lock()
		defer mu.Unlock()
		left--
		return left >= 0
	}
	// A different block of sources each run, so no run inherits another's
	// TIME_WAIT or persistence state from the same client.
	perWorker := max(o.Sources/o.Workers, 1)
	base := 1 + (run%4)*o.Sources
	start := time.Now()
	deadline := start.Add(o.Duration)
	for w := 0; w < o.Workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine connRun
			err := bl.Run(lab.HostClient, func() error {
				buf := make([]byte, 4096)
				for i := 0; time.Now().Before(deadline) && take(); i++ {
					src := lab.ClientAddr4(base + w*perWorker + i%perWorker)
					dst := dsts[(w+i)%len(dsts)]
					t0 := time.Now()
					err := oneConn(ctx, src, dst, buf)
					if err != nil {
						mine.errors++
						if mine.firstErr == nil {
							mine.firstErr = err
						}
						continue
					}
					mine.lat = append(mine.lat, time.Since(t0))
					mine.conns++
				}
				return nil
			})
			mu.Lock()
			defer mu.Unlock()
			if err != nil && total.firstErr == nil {
				total.firstErr = err
			}
			total.conns += mine.conns
			total.errors += mine.errors
			if total.firstErr == nil {
				total.firstErr = mine.firstErr
			}
			total.lat = append(total.lat, mine.lat...)
		}()
	}
	wg.Wait()
	total.elapsed = time.Since(start)
	sort.Slice(total.lat, func(i, j int) bool { return total.lat[i] < total.lat[j] })
	return total, ctx.Err()
}

func oneConn(ctx context.Context, src netip.Addr, dst netip.AddrPort, buf []byte) error {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}, Timeout: 3 * time.Second}
	c, err := d.DialContext(ctx, "tcp4", dst.String())
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write(httpRequest); err != nil {
		return err
	}
	n := 0
	for {
		k, err := c.Read(buf)
		n += k
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
	}
	if n < 12 || string(buf[:9]) != "HTTP/1.0 " && string(buf[:9]) != "HTTP/1.1 " {
		return fmt.Errorf("%s: not an HTTP answer (%d bytes)", dst, n)
	}
	return nil
}
