// Package veth checks the veth pairs that limpet's XDP program runs on in
// native mode, whose behaviour depends on settings of the other end (the
// peer), which usually lives in another network namespace:
//
//   - A frame XDP redirects into a veth is handed to its peer's NAPI, which
//     exists only while the peer has an XDP program attached or GRO on.
//     Without either, the kernel refuses the redirect (Linux 6.4 on) or
//     drops the frame, and every connection through that veth times out.
//   - A peer with TX checksum offload on (the veth default) sends packets
//     whose TCP and UDP checksums are only partial, finished "by the
//     hardware" that a veth does not have. Native XDP sees them without that
//     promise, a NAT rewrite updates them as if they were whole, and the
//     receiver drops them as corrupt.
//
// Generic (skb) mode has neither problem. The package also reads and sets
// the two offloads, for labs (see userspace/lab).
package veth

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"unsafe"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Peer is the other end of a veth.
type Peer struct {
	Name  string
	Index int
	// Netns says where the peer is: "" for the caller's own namespace, else
	// a name under /run/netns (as ip netns knows it) or a
	// /proc/PID/ns/net path.
	Netns string
	named bool
	// XDP is set when an XDP program is attached to the peer in native
	// mode, which gives it a NAPI like GRO does.
	XDP        bool
	GRO        bool
	TXChecksum bool
}

// Kinds of Problem.
const (
	// PeerCannotReceive: the peer has neither GRO nor a native XDP
	// program, so frames redirected into the veth are dropped.
	PeerCannotReceive = "peer_cannot_receive_redirects"
	// PeerTXChecksum: the peer's TX checksum offload leaves partial
	// checksums that a rewrite in XDP cannot complete.
	PeerTXChecksum = "peer_tx_checksum_offload"
)

// Problem is a setting of a veth's peer that breaks native XDP on it.
type Problem struct {
	Interface string // the veth limpet is attached to
	Peer      string
	PeerNetns string // see Peer.Netns
	Kind      string // PeerCannotReceive or PeerTXChecksum
	// Message says what is wrong and what it does to traffic; Fix is the
	// command that corrects it.
	Message, Fix string
}

func (p Problem) String() string { return p.Interface + ": " + p.Message + "; fix: " + p.Fix }

// Check inspects the peer of ifname, a name in the caller's namespace, if
// ifname is a veth with an XDP program in native mode, and returns what
// breaks forwarding through it.
func Check(ifname string) ([]Problem, error) {
	lk, err := netlink.LinkByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("veth: %s: %w", ifname, err)
	}
	if x := lk.Attrs().Xdp; x == nil || !nativeXDP(x) {
		return nil, nil
	}
	peer, err := PeerOf(ifname)
	if err != nil || peer == nil {
		return nil, err
	}
	where := ""
	if peer.Netns != "" {
		where = " (netns " + peer.Netns + ")"
	}
	var out []Problem
	add := func(kind, msg, args string) {
		out = append(out, Problem{Interface: ifname, Peer: peer.Name, PeerNetns: peer.Netns, Kind: kind,
			Message: msg, Fix: peer.command("ethtool -K " + peer.Name + " " + args)})
	}
	if !peer.GRO && !peer.XDP {
		add(PeerCannotReceive, fmt.Sprintf("its veth peer %s%s has neither GRO nor an XDP program, so every frame XDP redirects into %s is dropped (counted in limpet stats as redirect errors)",
			peer.Name, where, ifname), "gro on")
	}
	if peer.TXChecksum {
		add(PeerTXChecksum, fmt.Sprintf("its veth peer %s%s has TX checksum offload on, so the packets it sends reach XDP with partial checksums, which a NAT rewrite cannot complete: the receiver drops them",
			peer.Name, where), "tx off")
	}
	return out, nil
}

// command is cmd run where the peer is.
func (p *Peer) command(cmd string) string {
	switch {
	case p.Netns == "":
		return cmd
	case p.named:
		return "ip netns exec " + p.Netns + " " + cmd
	}
	return "nsenter --net=" + p.Netns + " " + cmd
}

// PeerOf finds the peer of ifname (a name in the caller's namespace) and
// reads its settings; nil when ifname is not a veth.
func PeerOf(ifname string) (*Peer, error) {
	lk, err := netlink.LinkByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("veth: %s: %w", ifname, err)
	}
	v, ok := lk.(*netlink.Veth)
	if !ok {
		return nil, nil
	}
	peer := &Peer{Index: v.Attrs().ParentIndex} // IFLA_LINK: the peer's ifindex, in its namespace
	if peer.Index == 0 {
		if peer.Index, err = netlink.VethPeerIndex(v); err != nil {
			return nil, fmt.Errorf("veth: %s: peer index: %w", ifname, err)
		}
	}
	ns := netns.None()
	if nsid := v.Attrs().NetNsID; nsid > math.MaxInt32 {
		// -1 read as unsigned: the peer's namespace has no id here, as
		// while it is being destroyed.
		return nil, fmt.Errorf("veth: %s: its peer's namespace has no id here", ifname)
	} else if nsid >= 0 {
		// IFLA_LINK_NETNSID: the peer is in the namespace this one
		// numbers nsid.
		if ns, peer.Netns, peer.named, err = netnsByID(nsid); err != nil {
			return nil, fmt.Errorf("veth: %s: its peer (ifindex %d) is in namespace id %d: %w", ifname, peer.Index, nsid, err)
		}
		defer ns.Close()
	}
	err = inNetns(ns, func() error {
		plk, err := netlink.LinkByIndex(peer.Index)
		if err != nil {
			return err
		}
		peer.Name = plk.Attrs().Name
		if x := plk.Attrs().Xdp; x != nil {
			peer.XDP = nativeXDP(x) // only a native program gives it a NAPI
		}
		if peer.GRO, err = Get(peer.Name, GRO); err != nil {
			return err
		}
		peer.TXChecksum, err = Get(peer.Name, TXChecksum)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("veth: %s: its peer: %w", ifname, err)
	}
	return peer, nil
}

// netnsByID opens the network namespace that the caller's namespace numbers
// nsid: the kernel reports a veth's peer namespace only as such an id, so
// the known namespaces are tried in turn, the named ones (/run/netns) first,
// then those of every process.
func netnsByID(nsid int) (netns.NsHandle, string, bool, error) {
	seen := map[[2]uint64]bool{}
	try := func(path string) (netns.NsHandle, bool) {
		var st unix.Stat_t
		if unix.Stat(path, &st) != nil {
			return netns.None(), false
		}
		id := [2]uint64{uint64(st.Dev), st.Ino}
		if seen[id] {
			return netns.None(), false
		}
		seen[id] = true
		h, err := netns.GetFromPath(path)
		if err != nil {
			return netns.None(), false
		}
		if got, err := netlink.GetNetNsIdByFd(int(h)); err == nil && got == nsid {
			return h, true
		}
		h.Close()
		return netns.None(), false
	}
	if ents, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range ents {
			if h, ok := try(filepath.Join("/run/netns", e.Name())); ok {
				return h, e.Name(), true, nil
			}
		}
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return netns.None(), "", false, err
	}
	for _, e := range procs {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		p := filepath.Join("/proc", e.Name(), "ns", "net")
		if h, ok := try(p); ok {
			return h, p, false, nil
		}
	}
	return netns.None(), "", false, errors.New("no named namespace or process is in it")
}

// inNetns runs fn in ns (the caller's namespace when ns is None) on a
// fresh OS thread, which is thrown away afterwards: a thread that has
// joined another namespace must never run other goroutines.
func inNetns(ns netns.NsHandle, fn func() error) error {
	if !ns.IsOpen() {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Offload is an ethtool offload that XDP on a veth depends on.
type Offload struct {
	name     string
	get, set uint32 // legacy SIOCETHTOOL commands (struct ethtool_value)
}

// The offloads.
var (
	GRO        = Offload{"generic-receive-offload", 0x2b, unix.ETHTOOL_SGRO} // ETHTOOL_GGRO
	TXChecksum = Offload{"tx-checksumming", 0x16, unix.ETHTOOL_STXCSUM}      // ETHTOOL_GTXCSUM
)

func (o Offload) String() string { return o.name }

// Get reads an offload of ifname, in the calling thread's namespace.
func Get(ifname string, o Offload) (bool, error) {
	v, err := ethtoolValue(ifname, o.get, 0)
	return v != 0, err
}

// Set turns an offload of ifname on or off, in the calling thread's
// namespace (as ethtool -K does).
func Set(ifname string, o Offload, on bool) error {
	v := uint32(0)
	if on {
		v = 1
	}
	_, err := ethtoolValue(ifname, o.set, v)
	return err
}

type ethtoolValueCmd struct {
	cmd  uint32
	data uint32
}

// ifreqData is struct ifreq with the ifr_data member of the union (40 bytes on 64-bit).
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

func ethtoolValue(ifname string, cmd, val uint32) (uint32, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	ev := ethtoolValueCmd{cmd: cmd, data: val}
	var ifr ifreqData
	copy(ifr.name[:unix.IFNAMSIZ-1], ifname)
	ifr.data = unsafe.Pointer(&ev)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	runtime.KeepAlive(&ev)
	if errno != 0 {
		return 0, fmt.Errorf("ethtool %#x on %s: %w", cmd, ifname, syscall.Errno(errno))
	}
	return ev.data, nil
}

// nativeXDP says whether a native-mode (driver) XDP program is attached.
// IFLA_XDP_ATTACHED is 1 for native, 2 generic, 3 offloaded, 4 several.
func nativeXDP(x *netlink.LinkXdp) bool { return x.AttachMode == 1 || x.AttachMode == 4 }
