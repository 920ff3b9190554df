package loader

import (
	"time"

	"github.com/cilium/ebpf"

	"github.com/limpet-lb/limpet/userspace/enum"
)

// XDPAction is an XDP verdict.
type XDPAction uint32

// XDP verdicts.
const (
	XDPAborted  XDPAction = 0
	XDPDrop     XDPAction = 1
	XDPPass     XDPAction = 2
	XDPTX       XDPAction = 3
	XDPRedirect XDPAction = 4
)

var xdpActionNames = enum.Names[XDPAction]{
	XDPAborted:  "XDP_ABORTED",
	XDPDrop:     "XDP_DROP",
	XDPPass:     "XDP_PASS",
	XDPTX:       "XDP_TX",
	XDPRedirect: "XDP_REDIRECT",
}

func (a XDPAction) String() string { return xdpActionNames.Name(a, "XDP_%d") }

// xdpMd mirrors struct xdp_md for BPF_PROG_RUN's context.
type xdpMd struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// RunPacket runs the datapath once on pkt through BPF_PROG_RUN, as if it
// arrived on ifindex (0: loopback), and returns the verdict and the packet as
// the program left it. FIB lookups happen in the caller thread's netns.
func (d *Datapath) RunPacket(pkt []byte, ifindex int) (XDPAction, []byte, error) {
	out := make([]byte, len(pkt)+256)
	opts := &ebpf.RunOptions{Data: pkt, DataOut: out}
	if ifindex != 0 {
		opts.Context = xdpMd{DataEnd: uint32(len(pkt)), IngressIfindex: uint32(ifindex)}
	}
	ret, err := d.objs.LimpetXdp.Run(opts)
	if err != nil {
		return 0, nil, err
	}
	return XDPAction(ret), opts.DataOut, nil
}

// BenchmarkPacket runs the datapath repeat times on pkt in the kernel and
// returns the verdict and the mean time per run, as BPF_PROG_RUN measures it.
// BPF_PROG_RUN reuses one buffer for every repeat: it measures a packet the
// datapath does not rewrite (a pass) faithfully, but a forwarded packet only
// once, then its rewritten self; test/bench drives those through a program
// that restores the packet each time.
// The packet arrives on loopback, so FIB lookups resolve in the caller's netns.
func (d *Datapath) BenchmarkPacket(pkt []byte, repeat int) (XDPAction, time.Duration, error) {
	ret, per, err := d.objs.LimpetXdp.Benchmark(pkt, repeat, nil)
	return XDPAction(ret), per, err
}
