package bench

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/test/packets"
	"github.com/limpet-lb/limpet/userspace/lab"
)

// Part 2: end-to-end forwarding in the lab.
//
// The client runs floor_gen through BPF_PROG_RUN with
// BPF_F_TEST_XDP_LIVE_FRAMES: every frame is XDP_TX'd out of the client's
// veth, from one of Sources client addresses in turn, and arrives at the
// balancer's veth in native XDP. The balancer runs one of the paths below and
// the members count what reaches them with floor_count (then drop it). The
// rate is what the members counted over the generator's wall time. With the
// veth pairs in one kernel, the generator, the balancer's NAPI and the
// members' NAPI mostly run on the generator's CPU, one after the other: the
// figures are per-core rates of the whole chain, generator included, which
// is why the floor is measured on the same chain.

// Forwarding paths.
const (
	PathFloor     = "floor: plain redirect (XDP)"
	PathLimpetNAT = "limpet NAT (XDP)"
	PathLimpetDSR = "limpet DSR (XDP)"
	// Encapsulated DSR, IPv4 in IPv4: the members count the tunnelled
	// packets at their XDP, before any decapsulation.
	PathLimpetIPIP = "limpet IPIP 4in4 (XDP)"
	PathLimpetGUE  = "limpet GUE 4in4 (XDP)"
	PathNft        = "nftables DNAT + conntrack (kernel stack)"
	// PathLimpetGC1 is limpet NAT with the default 1 s sweep: on two
	// cores the daemon's sweep of every flow and entry competes with the
	// packets for CPU.
	PathLimpetGC1 = "limpet NAT, default 1 s sweep"
)

// ForwardPaths in report order.
var ForwardPaths = []string{PathFloor, PathLimpetNAT, PathLimpetDSR, PathLimpetIPIP, PathLimpetGUE, PathNft, PathLimpetGC1}

// ForwardKey is one row of part 2.
type ForwardKey struct {
	Path  string
	Proto string // "UDP" or "TCP SYN"
}

// ForwardRow holds per run the delivered and offered rates in Mpps.
type ForwardRow struct {
	Key                  ForwardKey
	Delivered, Generated Series
}

// ForwardOptions size part 2.
type ForwardOptions struct {
	Frames  int // frames per measurement
	Sources int // client source addresses (>= 65k for the report)
	Runs    int
}

// ForwardResult is part 2.
type ForwardResult struct {
	Rows    []*ForwardRow
	Frames  int
	Sources int
}

// Row returns the row of a path and protocol.
func (r *ForwardResult) Row(path, proto string) *ForwardRow {
	for _, row := range r.Rows {
		if row.Key == (ForwardKey{path, proto}) {
			return row
		}
	}
	return nil
}

// forwardPorts: destination ports of each path's virtual servers (the
// floor and nftables use the NAT ports).
var forwardPorts = map[string][2]uint16{ // UDP, TCP
	PathFloor: {53, 80}, PathLimpetNAT: {53, 80}, PathLimpetDSR: {5353, 8080}, PathNft: {53, 80}, PathLimpetGC1: {53, 80},
	PathLimpetIPIP: {5354, 8081}, PathLimpetGUE: {5355, 8082},
}

// RunForward runs part 2 in a lab of its own.
func RunForward(ctx context.Context, env Env, o ForwardOptions) (*ForwardResult, error) {
	return inBenchLab(ctx, env, func(bl *benchLab) (*ForwardResult, error) { return runForward(ctx, bl, o) })
}

func runForward(ctx context.Context, bl *benchLab, o ForwardOptions) (*ForwardResult, error) {
	env := bl.env
	fl, err := loader.LoadFloor()
	if err != nil {
		return nil, err
	}
	defer fl.Close()
	res := &ForwardResult{Frames: o.Frames, Sources: o.Sources}
	rows := map[ForwardKey]*ForwardRow{}
	for _, p := range ForwardPaths {
		for _, proto := range []string{"UDP", "TCP SYN"} {
			k := ForwardKey{p, proto}
			rows[k] = &ForwardRow{Key: k}
			res.Rows = append(res.Rows, rows[k])
		}
	}

	// Members count and drop.
	var counters []io.Closer
	defer func() { closeAll(counters) }()
	for _, m := range bl.Members() {
		err := bl.Run(m.Name, func() error {
			c, err := fl.AttachCounter(m.Iface.Index)
			if err == nil {
				counters = append(counters, c)
			}
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("member %s: %w", m.Name, err)
		}
	}

	client := bl.ClientIface()
	lb := bl.Balancers()[0]
	frames := func(path string) [2][]byte {
		src := netip.AddrPortFrom(lab.ClientAddr4(1), 40000)
		ports := forwardPorts[path]
		u := packets.UDP(src, netip.AddrPortFrom(bl.VIP4(), ports[0]))
		u.SrcMAC, u.DstMAC = client.MAC, lb.ClientIface.MAC
		t := packets.TCP(src, netip.AddrPortFrom(bl.VIP4(), ports[1]), "S")
		t.Seq = 1
		t.SrcMAC, t.DstMAC = client.MAC, lb.ClientIface.MAC
		return [2][]byte{frame(u), frame(t)}
	}
	sweep := loader.Sweep{Clients: uint32(o.Sources)}

	// generate sends n frames of one template and returns delivered and
	// generated Mpps.
	generate := func(fr []byte, n int) (delivered, generated float64, err error) {
		before, _, err := fl.Counted()
		if err != nil {
			return 0, 0, err
		}
		var lr loader.LiveResult
		err = bl.Run(lab.HostClient, func() error {
			var err error
			lr, err = fl.GenerateLiveFrames(client.Index, [][]byte{fr}, n, sweep)
			return err
		})
		if err != nil {
			return 0, 0, err
		}
		// Let the last frames drain through the veth rings.
		time.Sleep(100 * time.Millisecond)
		after, _, err := fl.Counted()
		if err != nil {
			return 0, 0, err
		}
		sec := lr.Elapsed.Seconds()
		return float64(after-before) / sec / 1e6, float64(lr.Frames) / sec / 1e6, nil
	}

	// measure warms a path up (every source once per protocol: flows,
	// persistence entries, conntrack entries exist) and measures it.
	measure := func(path string) error {
		fr := frames(path)
		for i, proto := range []string{"UDP", "TCP SYN"} {
			if _, _, err := generate(fr[i], o.Sources); err != nil {
				return fmt.Errorf("%s %s warm-up: %w", path, proto, err)
			}
		}
		for i, proto := range []string{"UDP", "TCP SYN"} {
			d, g, err := generate(fr[i], o.Frames)
			if err != nil {
				return fmt.Errorf("%s %s: %w", path, proto, err)
			}
			if d < g*0.01 {
				return fmt.Errorf("%w: %s %s: members counted %.3f Mpps of %.3f generated", errSanity, path, proto, d, g)
			}
			row := rows[ForwardKey{path, proto}]
			row.Delivered.Add(d)
			row.Generated.Add(g)
		}
		return nil
	}

	var targets []loader.RedirectTarget
	for _, m := range bl.Members() {
		targets = append(targets, loader.RedirectTarget{Ifindex: m.BalancerIface.Index, SrcMAC: m.BalancerIface.MAC, DstMAC: m.Iface.MAC})
	}
	for run := 0; run < o.Runs; run++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		start := time.Now()
		// The floor.
		floor := func() (func() error, error) {
			var redirect io.Closer
			err := bl.Run(lab.HostBalancer, func() error {
				var err error
				redirect, err = fl.AttachRedirect(lb.ClientIface.Index, targets)
				return err
			})
			if err != nil {
				return nil, err
			}
			return redirect.Close, nil
		}
		// limpet, started afresh for each measurement.
		limpet := func(cfg string) func() (func() error, error) {
			return func() (func() error, error) { return bl.stopLimpet, bl.startLimpet(ctx, cfg) }
		}
		// nftables, with an empty conntrack table.
		nft := func() (func() error, error) {
			return func() error { return bl.unloadNft(ctx) }, bl.loadNft(ctx)
		}
		for _, step := range []struct {
			setUp func() (tearDown func() error, err error)
			paths []string
		}{
			{floor, []string{PathFloor}},
			{limpet(bl.limpetCfg), []string{PathLimpetNAT, PathLimpetDSR, PathLimpetIPIP, PathLimpetGUE}},
			{nft, []string{PathNft}},
			// limpet NAT again, with the default sweep interval.
			{limpet(bl.limpetGC1), []string{PathLimpetGC1}},
		} {
			if err := measureBetween(step.setUp, step.paths, measure); err != nil {
				return nil, err
			}
		}
		env.logf("forwarding: run %d/%d done in %.1fs", run+1, o.Runs, time.Since(start).Seconds())
	}
	return res, nil
}

// measureBetween measures paths with what setUp sets up, then tears it
// down whatever happened; the first error wins. A failed setUp leaves
// nothing to tear down.
func measureBetween(setUp func() (tearDown func() error, err error), paths []string, measure func(path string) error) error {
	tearDown, err := setUp()
	if err != nil {
		return err
	}
	for _, path := range paths {
		if err = measure(path); err != nil {
			break
		}
	}
	if terr := tearDown(); err == nil {
		err = terr
	}
	return err
}
