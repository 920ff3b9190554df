package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Floor holds the benchmark programs of bpf/floor.c: a floor for the datapath
// micro benchmarks (parse, then XDP_TX), a BPF_PROG_RUN driver that restores
// and varies the packet before tail-calling the program under test, a
// BPF_F_TEST_XDP_LIVE_FRAMES packet generator, a plain redirect program (the
// end-to-end floor) and a packet counter for members. Nothing here is part of
// the datapath; only the benchmarks (test/bench) use it.
type Floor struct {
	mu   sync.Mutex // the sweep and drive_target maps are shared by Drive and GenerateLiveFrames
	objs floorObjects
}

// LoadFloor loads the benchmark programs. Nothing is pinned: they go away
// with Close or with the process.
func LoadFloor() (*Floor, error) {
	f := &Floor{}
	if err := loadFloorObjects(&f.objs, nil); err != nil {
		return nil, fmt.Errorf("load floor programs: %w", verifierError(err))
	}
	return f, nil
}

// Close releases the programs and maps. Links made by the Attach methods are
// the caller's to close.
func (f *Floor) Close() error { return f.objs.Close() }

// Sweep says how the driver and the generator vary packet i of a run (i
// counts from Start) from the template: the client address takes the
// template's plus i % Clients (in its last 32-bit word), and the client port
// the template's plus (i / Clients) % Ports. Clients and Ports of 0 mean 1.
// Reply varies the destination address and port instead: a member's reply to
// many clients.
type Sweep struct {
	Clients uint32
	Ports   uint32
	Reply   bool
	Start   uint32
}

// Flags of struct sweep_cfg.
const (
	sweepL4Csum = 1 << 0
	sweepUDP    = 1 << 1
	sweepMax    = 128
)

// sweepConfig lays out pkt for the driver: untagged Ethernet, IPv4 without
// options or IPv6 without extension headers, then TCP or UDP.
func sweepConfig(pkt []byte, s Sweep) (floorSweepCfg, error) {
	var c floorSweepCfg
	if len(pkt) > sweepMax || len(pkt)%8 != 0 {
		return c, fmt.Errorf("template of %d bytes: want a multiple of 8, at most %d", len(pkt), sweepMax)
	}
	if len(pkt) < 14 {
		return c, errors.New("template shorter than an Ethernet header")
	}
	var l4, src, dst int
	var proto byte
	switch binary.BigEndian.Uint16(pkt[12:]) {
	case 0x0800:
		if len(pkt) < 34 || pkt[14] != 0x45 {
			return c, errors.New("template: IPv4 header with options or truncated")
		}
		proto, src, dst, l4 = pkt[23], 26, 30, 34
		c.IpCsumOff = 24
	case 0x86dd:
		if len(pkt) < 54 {
			return c, errors.New("template: truncated IPv6 header")
		}
		proto, src, dst, l4 = pkt[20], 22+12, 38+12, 54
	default:
		return c, errors.New("template: neither IPv4 nor IPv6 (VLAN tags are not supported)")
	}
	switch proto {
	case 6:
		c.L4CsumOff = uint16(l4 + 16)
		c.Flags = sweepL4Csum
	case 17:
		c.L4CsumOff = uint16(l4 + 6)
		c.Flags = sweepUDP
		if int(c.L4CsumOff)+2 <= len(pkt) && binary.BigEndian.Uint16(pkt[c.L4CsumOff:]) != 0 {
			c.Flags |= sweepL4Csum
		}
	default:
		return c, fmt.Errorf("template: protocol %d is neither TCP nor UDP", proto)
	}
	if int(c.L4CsumOff)+2 > len(pkt) {
		return c, errors.New("template: truncated L4 header")
	}
	c.AddrOff, c.PortOff = uint16(src), uint16(l4)
	if s.Reply {
		c.AddrOff, c.PortOff = uint16(dst), uint16(l4+2)
	}
	copy(c.Tmpl[:], pkt)
	c.Len = uint32(len(pkt))
	c.Clients, c.Ports, c.Start = max(s.Clients, 1), max(s.Ports, 1), s.Start
	return c, nil
}

// DriveResult is what one driven BPF_PROG_RUN measured.
type DriveResult struct {
	// Verdict of the last packet.
	Verdict XDPAction
	// PerPacket is BPF_PROG_RUN's mean time per run, driver included; the
	// kernel reports whole nanoseconds, truncated.
	PerPacket time.Duration
	// Packets the driver produced: repeat, or more when a signal made the
	// kernel start the run again.
	Packets uint64
}

// Drive runs the program under test repeat times in the kernel with one
// BPF_PROG_RUN: the datapath d, or floor_tx when d is nil. Before each run,
// floor_drive writes the template pkt over the buffer (the kernel reuses it,
// and the datapath rewrites it), applies s, and tail-calls the program. The
// packet arrives on ifindex of the calling thread's network namespace (0:
// loopback), which is where bpf_fib_lookup looks.
func (f *Floor) Drive(d *Datapath, pkt []byte, s Sweep, ifindex, repeat int) (DriveResult, error) {
	cfg, err := sweepConfig(pkt, s)
	if err != nil {
		return DriveResult{}, err
	}
	target := f.objs.FloorTx
	if d != nil {
		target = d.objs.LimpetXdp
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.objs.DriveTarget.Put(uint32(0), target); err != nil {
		return DriveResult{}, fmt.Errorf("set the program under test: %w", err)
	}
	// The slot holds a reference to the program, and through it to the
	// datapath's maps: empty it, so a detached datapath is freed at once.
	defer f.objs.DriveTarget.Delete(uint32(0))
	if err := f.objs.Sweep.Put(uint32(0), &cfg); err != nil {
		return DriveResult{}, fmt.Errorf("write the packet template: %w", err)
	}
	ret, per, err := runTimed(f.objs.FloorDrive, pkt, ingress(pkt, ifindex), repeat)
	if err != nil {
		return DriveResult{}, err
	}
	if XDPAction(ret) == XDPAborted {
		return DriveResult{}, errors.New("the driver aborted: template does not fit, or the tail call failed")
	}
	var out floorSweepCfg
	if err := f.objs.Sweep.Lookup(uint32(0), &out); err != nil {
		return DriveResult{}, err
	}
	return DriveResult{Verdict: XDPAction(ret), PerPacket: per, Packets: out.Seq}, nil
}

// progRunAttr is the BPF_PROG_TEST_RUN member of union bpf_attr.
type progRunAttr struct {
	progFD, retval, dataSizeIn, dataSizeOut uint32
	dataIn, dataOut                         uint64
	repeat, duration, ctxSizeIn, ctxSizeOut uint32
	ctxIn, ctxOut                           uint64
	flags, cpu, batchSize, _                uint32
}

// runTimed runs p repeat times with one BPF_PROG_RUN and returns the verdict
// and the kernel's mean time per run. Program.Benchmark takes no context and
// Program.Run returns no duration, so this issues the syscall itself. The
// kernel's clock stops while the task is rescheduled; a signal makes it
// start again, as cilium/ebpf does.
func runTimed(p *ebpf.Program, data []byte, ctx *xdpMd, repeat int) (uint32, time.Duration, error) {
	if repeat < 1 || len(data) == 0 {
		return 0, 0, errors.New("BPF_PROG_RUN needs data and at least one repeat")
	}
	buf := append([]byte(nil), data...) // heap memory: the kernel reads it during the call
	attr := &progRunAttr{
		progFD: uint32(p.FD()), dataSizeIn: uint32(len(buf)), repeat: uint32(repeat),
		dataIn: uint64(uintptr(unsafe.Pointer(&buf[0]))),
	}
	var cbuf []byte
	if ctx != nil {
		cbuf = make([]byte, 24)
		for i, v := range []uint32{ctx.Data, ctx.DataEnd, ctx.DataMeta, ctx.IngressIfindex, ctx.RxQueueIndex, ctx.EgressIfindex} {
			binary.NativeEndian.PutUint32(cbuf[i*4:], v)
		}
		attr.ctxSizeIn = uint32(len(cbuf))
		attr.ctxIn = uint64(uintptr(unsafe.Pointer(&cbuf[0])))
	}
	for {
		_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_TEST_RUN, uintptr(unsafe.Pointer(attr)), unsafe.Sizeof(*attr))
		runtime.KeepAlive(buf)
		runtime.KeepAlive(cbuf)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return 0, 0, fmt.Errorf("BPF_PROG_RUN %s: %w", p, errno)
		}
		return attr.retval, time.Duration(attr.duration), nil
	}
}

// ingress is the context that makes pkt arrive on ifindex; nil (loopback) for 0.
func ingress(pkt []byte, ifindex int) *xdpMd {
	if ifindex == 0 {
		return nil
	}
	return &xdpMd{DataEnd: uint32(len(pkt)), IngressIfindex: uint32(ifindex)}
}

// BenchmarkFloor runs floor_tx repeat times on pkt with one BPF_PROG_RUN,
// without the driver (the packet is not rewritten, so it needs none).
func (f *Floor) BenchmarkFloor(pkt []byte, ifindex, repeat int) (XDPAction, time.Duration, error) {
	ret, per, err := runTimed(f.objs.FloorTx, pkt, ingress(pkt, ifindex), repeat)
	return XDPAction(ret), per, err
}

// LiveResult is what GenerateLiveFrames sent.
type LiveResult struct {
	// Frames the generator program produced and handed to the device (the
	// device may still drop some, e.g. when the peer's ring is full).
	Frames uint64
	// Elapsed is the wall time of the BPF_PROG_RUN calls.
	Elapsed time.Duration
}

// GenerateLiveFrames turns BPF_PROG_RUN into a packet generator
// (BPF_F_TEST_XDP_LIVE_FRAMES): each template of frames in turn is sent
// repeat times out of ifindex, which must be in the calling thread's network
// namespace, by floor_gen (restore the template, apply s, XDP_TX). For a veth,
// the frames arrive at its peer, which needs an XDP program or GRO.
func (f *Floor) GenerateLiveFrames(ifindex int, frames [][]byte, repeat int, s Sweep) (LiveResult, error) {
	var res LiveResult
	if ifindex == 0 {
		return res, errors.New("live frames need an interface")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, fr := range frames {
		cfg, err := sweepConfig(fr, s)
		if err != nil {
			return res, err
		}
		if err := f.objs.Sweep.Put(uint32(0), &cfg); err != nil {
			return res, fmt.Errorf("write the frame template: %w", err)
		}
		start := time.Now()
		_, err = f.objs.FloorGen.Run(&ebpf.RunOptions{
			Data:    fr,
			Repeat:  uint32(repeat),
			Flags:   unix.BPF_F_TEST_XDP_LIVE_FRAMES,
			Context: xdpMd{DataEnd: uint32(len(fr)), IngressIfindex: uint32(ifindex)},
		})
		res.Elapsed += time.Since(start)
		if err != nil {
			return res, fmt.Errorf("generate live frames: %w", err)
		}
		var out floorSweepCfg
		if err := f.objs.Sweep.Lookup(uint32(0), &out); err != nil {
			return res, err
		}
		res.Frames += out.Seq
	}
	return res, nil
}

// AttachCounter attaches floor_count (count, then XDP_DROP) natively to
// ifindex of the calling thread's network namespace. Close the link to
// detach; the process exiting detaches it too.
func (f *Floor) AttachCounter(ifindex int) (io.Closer, error) {
	return attachNative(f.objs.FloorCount, ifindex)
}

// RedirectTarget is where floor_redirect sends a packet, and with which MACs.
type RedirectTarget struct {
	Ifindex        int
	SrcMAC, DstMAC net.HardwareAddr
}

// AttachRedirect attaches floor_redirect natively to ifindex of the calling
// thread's network namespace: every packet gets the next target's MACs and
// is redirected to it, in turn.
func (f *Floor) AttachRedirect(ifindex int, targets []RedirectTarget) (io.Closer, error) {
	var cfg floorRedirectCfg
	if len(targets) == 0 || len(targets) > len(cfg.T) {
		return nil, fmt.Errorf("%d redirect targets: want 1 to %d", len(targets), len(cfg.T))
	}
	cfg.N = uint32(len(targets))
	for i, t := range targets {
		cfg.T[i].Ifindex = uint32(t.Ifindex)
		copy(cfg.T[i].Smac[:], t.SrcMAC)
		copy(cfg.T[i].Dmac[:], t.DstMAC)
	}
	if err := f.objs.Redirect.Put(uint32(0), &cfg); err != nil {
		return nil, fmt.Errorf("write redirect targets: %w", err)
	}
	return attachNative(f.objs.FloorRedirect, ifindex)
}

func attachNative(p *ebpf.Program, ifindex int) (io.Closer, error) {
	l, err := link.AttachXDP(link.XDPOptions{Program: p, Interface: ifindex, Flags: link.XDPDriverMode})
	if err != nil {
		return nil, fmt.Errorf("attach %s natively to ifindex %d: %w", p, ifindex, err)
	}
	return l, nil
}

// Counted is what every floor_count attachment counted, summed over CPUs.
func (f *Floor) Counted() (packets, bytes uint64, err error) {
	var per []floorPktCount
	if err := f.objs.Counts.Lookup(uint32(0), &per); err != nil {
		return 0, 0, err
	}
	for _, c := range per {
		packets += c.Packets
		bytes += c.Bytes
	}
	return packets, bytes, nil
}
