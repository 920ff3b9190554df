package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Redirect failures.
//
// A redirect that the kernel refuses is lost after the datapath has counted
// the packet as forwarded. The kernel reports the refusals it makes at
// redirect time on the xdp:xdp_redirect_err tracepoint, with the id of the
// program that redirected: since Linux 6.4 that is where a redirect into a
// device that cannot take XDP frames fails (a veth whose peer has neither an
// XDP program nor GRO: EOPNOTSUPP), as well as one into a device that is
// down or too small for the frame. limpet_redirect_err, attached there,
// counts limpet_xdp's in a pinned map. It runs only when a redirect fails,
// so forwarding pays nothing; the program id keeps other XDP programs on the
// host (and their namespaces) out of the count. Drops later, at transmit
// (a full veth ring), are not reported there; the device's own counters
// (ethtool -S: xdp_xmit_errors) have them.

const pinRedirectLink = "tp_redirect_err" // not linkPrefix: that is for XDP links

// RedirectError counts the refused redirects of limpet's program to one
// target, for one reason.
type RedirectError struct {
	// Ifindex is the target device, in the namespace of the interfaces
	// limpet is attached to.
	Ifindex int
	Errno   unix.Errno
	Count   uint64
}

// watchProgram tells limpet_redirect_err which program is limpet's: a
// (re)load gives limpet_xdp a new id.
func (d *Datapath) watchProgram() error {
	info, err := d.objs.LimpetXdp.Info()
	if err != nil {
		return fmt.Errorf("read the program's id: %w", err)
	}
	id, ok := info.ID()
	if !ok {
		return errors.New("the kernel does not report program ids")
	}
	return d.objs.RedirectWatch.Put(uint32(0), uint32(id))
}

// WatchRedirectErrors attaches the redirect failure counter to the
// xdp:xdp_redirect_err tracepoint and pins the link, replacing one that a
// previous run left (a tracepoint link cannot be moved to a new program).
// Without it, forwarding works the same and RedirectErrors stays empty.
func (d *Datapath) WatchRedirectErrors() error {
	if err := ensureTracefs(); err != nil {
		return err
	}
	pin := filepath.Join(d.pinPath, pinRedirectLink)
	if d.redirectLink != nil {
		return nil
	}
	if old, err := link.LoadPinnedLink(pin, nil); err == nil {
		_ = old.Unpin()
		old.Close()
	}
	l, err := link.Tracepoint("xdp", "xdp_redirect_err", d.objs.LimpetRedirectErr, nil)
	if err != nil {
		return fmt.Errorf("attach to the xdp:xdp_redirect_err tracepoint: %w", err)
	}
	if err := l.Pin(pin); err != nil {
		l.Close()
		return fmt.Errorf("pin the redirect error link: %w", err)
	}
	d.redirectLink = l
	return nil
}

// RedirectErrors returns the refused redirects counted so far, by target
// and error, summed over CPUs.
func (p *Pinned) RedirectErrors() ([]RedirectError, error) {
	if p.m.RedirectErrors == nil {
		return nil, nil // a datapath pinned by a version that did not count them
	}
	var (
		key limpetRedirectErrKey
		per []uint64
		out []RedirectError
	)
	it := p.m.RedirectErrors.Iterate()
	for it.Next(&key, &per) {
		var n uint64
		for _, v := range per {
			n += v
		}
		out = append(out, RedirectError{Ifindex: int(key.Ifindex), Errno: unix.Errno(-key.Err), Count: n})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read redirect errors: %w", err)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Ifindex != out[j].Ifindex {
			return out[i].Ifindex < out[j].Ifindex
		}
		return out[i].Errno < out[j].Errno
	})
	return out, nil
}

// AttachedIfindexes maps the ifindex of every interface the pinned
// datapath is attached to to its name, from the pinned links: it works
// from any namespace, like the rest of the pinned state.
func (p *Pinned) AttachedIfindexes() (map[int]string, error) {
	entries, err := os.ReadDir(p.pinPath)
	if err != nil {
		return nil, err
	}
	out := map[int]string{}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), linkPrefix) {
			continue
		}
		l, err := link.LoadPinnedLink(filepath.Join(p.pinPath, e.Name()), nil)
		if err != nil {
			continue
		}
		info, err := l.Info()
		l.Close()
		if err != nil || info.XDP() == nil {
			continue
		}
		out[int(info.XDP().Ifindex)] = strings.TrimPrefix(e.Name(), linkPrefix)
	}
	return out, nil
}

// ErrnoName is an errno's symbol, e.g. "EOPNOTSUPP".
func ErrnoName(e unix.Errno) string {
	if e == unix.EOPNOTSUPP {
		return "EOPNOTSUPP" // the kernel's name for it; ENOTSUP has the same number
	}
	if n := unix.ErrnoName(e); n != "" {
		return n
	}
	return fmt.Sprintf("errno %d", int(e))
}

// RedirectErrorHint says what a refused redirect's errno means for XDP.
func RedirectErrorHint(e unix.Errno) string {
	switch e {
	case unix.EOPNOTSUPP:
		return "the device cannot take XDP frames: a veth whose peer has neither an XDP program nor GRO, or a driver without XDP transmit"
	case unix.ENETDOWN:
		return "the device is down"
	case unix.EMSGSIZE:
		return "the frame is larger than the device's MTU"
	case unix.ENODEV:
		return "no such device"
	case unix.ENXIO:
		return "the device has no XDP transmit queue ready"
	}
	return ""
}

// ensureTracefs mounts tracefs at /sys/kernel/tracing when neither it nor
// debugfs's copy is there, as on a minimal machine.
func ensureTracefs() error {
	for _, dir := range []string{"/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events"} {
		if _, err := os.Stat(dir); err == nil {
			return nil
		}
	}
	if err := unix.Mount("tracefs", "/sys/kernel/tracing", "tracefs", 0, ""); err != nil {
		return fmt.Errorf("mount tracefs at /sys/kernel/tracing: %w", err)
	}
	return nil
}
