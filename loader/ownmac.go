package loader

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/cilium/ebpf"
)

// The datapath balances only frames sent to the receiving interface's own
// MAC (bpf/l2dst.h): a unicast a switch floods to every node of a shared
// L2 would otherwise be forwarded once per node. The loader writes each
// attached interface's MAC at attach and follows a change
// (SyncInterfaceMACs, which the daemon's netlink watcher calls on a link
// event and every resync). An interface it has not learnt is not checked:
// BPF_PROG_RUN fixtures run on interfaces nothing attached to.

// ifMACSlots is IF_MAC_SLOTS in bpf/consts.h.
const ifMACSlots = 256

// ownMACs is what the loader wrote to if_macs and if_macs_spill, by
// ifindex, and the interfaces it follows. The daemon's watcher calls
// SyncInterfaceMACs from its own goroutine, so it has its own lock.
type ownMACs struct {
	mu      sync.Mutex
	ifaces  map[string]bool // attached, by name
	written map[int]ownMAC  // by ifindex
}

type ownMAC struct {
	mac   net.HardwareAddr
	spill bool // in if_macs_spill: another interface holds the slot
}

// SetInterfaceMAC records mac as the own MAC of the interface with that
// index: a frame the interface receives for another unicast MAC, or for a
// group, is passed to the stack and counted as not_our_mac.
func (d *Datapath) SetInterfaceMAC(ifindex int, mac net.HardwareAddr) error {
	d.macs.mu.Lock()
	defer d.macs.mu.Unlock()
	return d.setMACLocked(ifindex, mac)
}

func (d *Datapath) setMACLocked(ifindex int, mac net.HardwareAddr) error {
	if ifindex <= 0 {
		return fmt.Errorf("interface MAC: ifindex %d", ifindex)
	}
	if len(mac) != 6 {
		return fmt.Errorf("interface %d: MAC %q is not an Ethernet address (limpet balances only on Ethernet interfaces)", ifindex, mac)
	}
	if d.macs.written == nil {
		d.macs.written = map[int]ownMAC{}
	}
	if old, ok := d.macs.written[ifindex]; ok && bytes.Equal(old.mac, mac) {
		return nil
	}
	v := limpetIfMac{Ifindex: uint32(ifindex)}
	copy(v.Mac[:], mac)
	slot := uint32(ifindex) % ifMACSlots
	var held limpetIfMac
	if err := d.objs.IfMacs.Lookup(slot, &held); err != nil {
		return fmt.Errorf("read if_macs: %w", err)
	}
	spill := held.Ifindex != 0 && held.Ifindex != uint32(ifindex)
	var err error
	if spill {
		err = d.objs.IfMacsSpill.Put(uint32(ifindex), &v)
	} else {
		err = d.objs.IfMacs.Put(slot, &v)
	}
	if err != nil {
		return fmt.Errorf("write the MAC of interface %d: %w", ifindex, err)
	}
	d.macs.written[ifindex] = ownMAC{mac: append(net.HardwareAddr(nil), mac...), spill: spill}
	return nil
}

// ClearInterfaceMAC forgets an interface's MAC: its frames are no longer
// checked.
func (d *Datapath) ClearInterfaceMAC(ifindex int) error {
	d.macs.mu.Lock()
	defer d.macs.mu.Unlock()
	return d.clearMACLocked(ifindex)
}

func (d *Datapath) clearMACLocked(ifindex int) error {
	w, ok := d.macs.written[ifindex]
	delete(d.macs.written, ifindex)
	if !ok {
		// Not written by this process: an adopted datapath's, maybe.
		w.spill = true
		_ = d.clearSlot(ifindex)
	}
	if w.spill {
		if err := d.objs.IfMacsSpill.Delete(uint32(ifindex)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("forget the MAC of interface %d: %w", ifindex, err)
		}
		return nil
	}
	return d.clearSlot(ifindex)
}

// clearSlot empties ifindex's slot of if_macs if it holds ifindex.
func (d *Datapath) clearSlot(ifindex int) error {
	slot := uint32(ifindex) % ifMACSlots
	var held limpetIfMac
	if err := d.objs.IfMacs.Lookup(slot, &held); err != nil {
		return fmt.Errorf("read if_macs: %w", err)
	}
	if held.Ifindex != uint32(ifindex) {
		return nil
	}
	if err := d.objs.IfMacs.Put(slot, &limpetIfMac{}); err != nil {
		return fmt.Errorf("forget the MAC of interface %d: %w", ifindex, err)
	}
	return nil
}

// learnMAC starts following an attached interface's MAC.
func (d *Datapath) learnMAC(ifname string) error {
	d.macs.mu.Lock()
	defer d.macs.mu.Unlock()
	if d.macs.ifaces == nil {
		d.macs.ifaces = map[string]bool{}
	}
	d.macs.ifaces[ifname] = true
	return d.syncMACLocked(ifname)
}

// forgetMAC stops following a detached interface's MAC.
func (d *Datapath) forgetMAC(ifname string) error {
	d.macs.mu.Lock()
	defer d.macs.mu.Unlock()
	delete(d.macs.ifaces, ifname)
	iface, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil // gone: nothing arrives on it
	}
	return d.clearMACLocked(iface.Index)
}

func (d *Datapath) syncMACLocked(ifname string) error {
	iface, err := net.InterfaceByName(ifname)
	if err != nil {
		return fmt.Errorf("interface %q: %w", ifname, err)
	}
	return d.setMACLocked(iface.Index, iface.HardwareAddr)
}

// SyncInterfaceMACs rereads the MAC of every attached interface and writes
// the ones that changed.
func (d *Datapath) SyncInterfaceMACs() error {
	d.macs.mu.Lock()
	defer d.macs.mu.Unlock()
	var errs []error
	for name := range d.macs.ifaces {
		if err := d.syncMACLocked(name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// InterfaceMAC is the MAC the datapath holds as the interface's own, and
// false if it holds none.
func (p *Pinned) InterfaceMAC(ifindex int) (net.HardwareAddr, bool, error) {
	if p.m.IfMacs == nil {
		return nil, false, nil
	}
	var v limpetIfMac
	if err := p.m.IfMacs.Lookup(uint32(ifindex)%ifMACSlots, &v); err != nil {
		return nil, false, fmt.Errorf("read if_macs: %w", err)
	}
	if v.Ifindex != uint32(ifindex) {
		if p.m.IfMacsSpill == nil {
			return nil, false, nil
		}
		if err := p.m.IfMacsSpill.Lookup(uint32(ifindex), &v); errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil, false, nil
		} else if err != nil {
			return nil, false, fmt.Errorf("read if_macs_spill: %w", err)
		}
	}
	return net.HardwareAddr(v.Mac[:]), true, nil
}
