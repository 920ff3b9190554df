package bench

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/limpet-lb/limpet/test/testutil"
	"github.com/limpet-lb/limpet/userspace/mirror"
)

// MirrorOptions size part 6: HA persistence mirroring throughput.
type MirrorOptions struct {
	Entries int // entries mirrored per measurement
	Runs    int
}

// MirrorResult is entries per second from one node to its peer, per auth mode.
type MirrorResult struct {
	Opts     MirrorOptions
	PSK, TLS Series
}

// countingLocal counts what a node receives; it keeps no table, so the
// figure is the mirroring's and not a map's.
type countingLocal struct {
	n    atomic.Int64
	want int64
	done chan struct{}
}

func (c *countingLocal) Snapshot(context.Context) ([]mirror.Entry, error) { return nil, nil }
func (c *countingLocal) Apply(mirror.Entry) error {
	if c.n.Add(1) == c.want {
		close(c.done)
	}
	return nil
}

// RunMirror mirrors Entries distinct entries from one node to another over
// loopback, with a pre-shared key and with mutual TLS, Runs times each.
func RunMirror(ctx context.Context, o MirrorOptions) (*MirrorResult, error) {
	res := &MirrorResult{Opts: o}
	ca, err := testutil.MintCA("limpet bench CA")
	if err != nil {
		return nil, err
	}
	for run := 0; run < o.Runs; run++ {
		for _, auth := range []string{"psk", "tls"} {
			rate, err := mirrorOnce(ctx, auth, ca, o.Entries)
			if err != nil {
				return nil, fmt.Errorf("%s run %d: %w", auth, run+1, err)
			}
			if auth == "psk" {
				res.PSK.Add(rate)
			} else {
				res.TLS.Add(rate)
			}
		}
	}
	return res, nil
}

func mirrorOnce(ctx context.Context, auth string, ca *testutil.CA, n int) (float64, error) {
	base := func() mirror.Config {
		return mirror.Config{Listen: "127.0.0.1:0", Mode: mirror.ActiveStandby, QueueSize: 1 << 16,
			HeartbeatInterval: 200 * time.Millisecond, HeartbeatTimeout: 10 * time.Second,
			ReconnectMin: 50 * time.Millisecond, ReconnectMax: 200 * time.Millisecond}
	}
	cfgA, cfgB := base(), base()
	if auth == "psk" {
		psk := make([]byte, 32)
		if _, err := rand.Read(psk); err != nil {
			return 0, err
		}
		cfgA.PSK, cfgB.PSK = psk, psk
	} else {
		for _, c := range []*mirror.Config{&cfgA, &cfgB} {
			cert, err := ca.Mint("limpet node", testutil.PeerUsages)
			if err != nil {
				return 0, err
			}
			c.TLS = &mirror.TLSAuth{CA: ca.Pool, Certificate: cert}
		}
	}
	recv := &countingLocal{want: int64(n), done: make(chan struct{})}
	nb, err := mirror.New(cfgB, recv, nil)
	if err != nil {
		return 0, err
	}
	addr, err := nb.Listen()
	if err != nil {
		return 0, err
	}
	cfgA.Listen, cfgA.Peers = "", []string{addr.String()}
	na, err := mirror.New(cfgA, &countingLocal{done: make(chan struct{})}, nil)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	go nb.Run(ctx)
	go na.Run(ctx)
	for {
		if st := na.Status(); len(st) == 1 && st[0].State == mirror.StateUp {
			break
		}
		if ctx.Err() != nil {
			return 0, fmt.Errorf("peers never connected")
		}
		time.Sleep(time.Millisecond)
	}
	server := netip.MustParseAddrPort("10.0.1.11:8080")
	high := cfgA.QueueSize * 3 / 4
	start := time.Now()
	for i := 0; i < n; i++ {
		// Back off before the queue fills: this measures the rate the
		// connection sustains, not drops.
		if i%1024 == 0 {
			for na.Status()[0].QueueLen > high {
				time.Sleep(100 * time.Microsecond)
			}
		}
		na.Publish(mirror.Entry{Table: "profile:bench", Client: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}),
			Server: server, Op: mirror.Upsert, Updated: start, Created: start})
	}
	select {
	case <-recv.done:
	case <-ctx.Done():
		return 0, fmt.Errorf("peer received %d of %d entries", recv.n.Load(), n)
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

func writeMirror(w interface{ Write([]byte) (int, error) }, r *Results) {
	m := r.Mirror
	if m == nil {
		return
	}
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("## 6. HA persistence mirroring\n\n")
	p("Two mirroring nodes (`userspace/mirror`, the daemon's) on loopback; one publishes %s distinct entries, as its datapath's events would, and the figure is entries received and applied by the peer per second (publish to last apply), backing off before the sending queue fills so nothing is dropped. *psk*: pre-shared key, every frame sealed with AES-256-GCM; *tls*: TLS 1.3 with client certificates.\n\n", fmtNum(float64(m.Opts.Entries), 0))
	p("| auth | entries/s | tls ÷ psk |\n|---|---:|---:|\n")
	p("| psk | %s | |\n", m.PSK.Format(0))
	p("| tls | %s | %s |\n\n", m.TLS.Format(0), Ratios(m.TLS, m.PSK).FormatRatio())
}
