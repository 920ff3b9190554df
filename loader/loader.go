// Package loader owns limpet's kernel objects: it loads the XDP datapath,
// creates and pins its maps and links under a bpffs directory, adopts them on
// restart, and offers a typed API over the maps. Three types split the roles:
// Datapath is the manager (the process holding the lock that loads, attaches
// and applies state), Pinned a read-only view of the pins for dumps and
// stats, and Editor an operator's edits of entries, members and metadata
// beside whatever manager runs. It is the only package that imports
// cilium/ebpf.
package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// DefaultPinPath is where limpet pins its state unless told otherwise.
const DefaultPinPath = "/sys/fs/bpf/limpet"

// Options control how the datapath is loaded.
type Options struct {
	// PinPath is the bpffs directory holding maps, programs and links.
	PinPath string
	// FlowTableSize is the capacity of the flow table of each family
	// (flows4 and flows6). An adopted datapath keeps its size; asking for
	// another one is an error.
	FlowTableSize uint32
	// FlowTableSizeV6, when not 0, sizes the IPv6 flow table instead.
	FlowTableSizeV6 uint32
	// KeepTTL stops the datapath from decrementing TTL and hop limit.
	KeepTTL bool
}

// ErrNotLoaded means there is no pinned datapath at the pin path.
var ErrNotLoaded = errors.New("no limpet datapath is pinned")

// ErrLocked means another process manages the datapath.
var ErrLocked = errors.New("another limpet process manages this datapath")

// Datapath is the manager of a pinned limpet datapath: the one process
// that holds its lock, loads its programs, attaches them and writes its
// state (Apply). It reads and edits like a Pinned view and an Editor.
type Datapath struct {
	Editor
	objs    limpetObjects
	adopted bool
	lock    *os.File
	links   map[string]link.Link // XDP links, by interface
	// redirectLink attaches limpet_redirect_err (WatchRedirectErrors).
	redirectLink link.Link
	macs         ownMACs // the attached interfaces' MACs (ownmac.go)
}

// addedMaps are the maps added since the first version: adopting a
// datapath pinned before them creates them, and OpenPinned does without.
var addedMaps = map[string]bool{"redirect_watch": true, "redirect_errors": true, "clock_sync": true, "if_macs": true, "if_macs_spill": true}

const (
	pinProgXDP = "prog_xdp"
	pinProgGC  = "prog_gc"
	linkPrefix = "link_"
	// tablePinPrefix starts the pins of the persistence tables' inner maps.
	tablePinPrefix = "table_"
	lockDir        = "/run/limpet"
	bpffsSysDir    = "/sys/fs/bpf"
)

// Load loads the datapath, or adopts the one pinned at opts.PinPath, and
// takes the exclusive lock that makes this process its manager.
//
// A fresh datapath is pinned into a temporary directory first and renamed
// into place, so a crash never leaves a half-pinned state that a later run
// would adopt.
func Load(opts Options) (_ *Datapath, err error) {
	if opts.PinPath == "" {
		opts.PinPath = DefaultPinPath
	}
	if err := ensureBPFFS(opts.PinPath); err != nil {
		return nil, err
	}
	lock, err := acquireLock(opts.PinPath)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			lock.Close()
		}
	}()

	spec, err := loadLimpet()
	if err != nil {
		return nil, fmt.Errorf("load datapath spec: %w", err)
	}
	if opts.FlowTableSize != 0 {
		spec.Maps["flows4"].MaxEntries = opts.FlowTableSize
		spec.Maps["flows6"].MaxEntries = opts.FlowTableSize
	}
	if opts.FlowTableSizeV6 != 0 {
		spec.Maps["flows6"].MaxEntries = opts.FlowTableSizeV6
	}
	if err := spec.Variables["cfg_decrement_ttl"].Set(boolByte(!opts.KeepTTL)); err != nil {
		return nil, fmt.Errorf("set cfg_decrement_ttl: %w", err)
	}

	d := &Datapath{lock: lock, links: map[string]link.Link{}}
	d.pinPath, d.m = opts.PinPath, &d.objs.limpetMaps
	pinned, err := pinnedDatapath(opts.PinPath)
	if err != nil {
		return nil, err
	}
	if pinned {
		err = d.adopt(spec)
	} else {
		err = d.create(spec)
	}
	if err != nil {
		return nil, err
	}
	// The datapath's clock is on the boot clock from the start (see
	// SyncClock); the daemon keeps it there.
	if _, err = d.SyncClock(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func boolByte(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// create loads everything afresh and pins it via a temporary directory.
func (d *Datapath) create(spec *ebpf.CollectionSpec) error {
	if err := os.MkdirAll(filepath.Dir(d.pinPath), 0o700); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(d.pinPath), filepath.Base(d.pinPath)+"-tmp-") // bpffs forbids dots in names
	if err != nil {
		return fmt.Errorf("create temporary pin directory: %w", err)
	}
	defer os.RemoveAll(tmp)

	// The maps pin themselves by name (LIBBPF_PIN_BY_NAME in bpf/maps.h)
	// into the empty temporary directory, so every one is created afresh.
	if err := spec.LoadAndAssign(&d.objs, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: tmp}}); err != nil {
		return fmt.Errorf("load datapath: %w", verifierError(err))
	}
	if err := d.pinPrograms(tmp); err != nil {
		d.objs.Close()
		return err
	}
	if err := d.watchProgram(); err != nil {
		d.objs.Close()
		return err
	}
	// An empty directory waiting at the pin path (made by an operator or a
	// test harness) is ours to replace; bpffs will not rename over it.
	if entries, err := os.ReadDir(d.pinPath); err == nil && len(entries) == 0 {
		_ = os.Remove(d.pinPath)
	}
	if err := os.Rename(tmp, d.pinPath); err != nil {
		d.objs.Close()
		return fmt.Errorf("move pins into place at %s: %w", d.pinPath, err)
	}
	return nil
}

// pinPrograms pins the programs into dir, replacing the pins of a previous
// version's programs: a pinned program keeps a datapath inspectable (and its
// maps alive) while no link holds it.
func (d *Datapath) pinPrograms(dir string) error {
	for _, p := range []struct {
		name string
		prog *ebpf.Program
	}{{pinProgXDP, d.objs.LimpetXdp}, {pinProgGC, d.objs.LimpetGc}} {
		path := filepath.Join(dir, p.name)
		_ = os.Remove(path)
		if err := p.prog.Pin(path); err != nil {
			return fmt.Errorf("pin program %s: %w", p.name, err)
		}
	}
	return nil
}

// adopt reuses the pinned maps, loads this binary's programs against them,
// and moves any pinned links over to the new program: an upgrade or restart
// keeps every flow and persistence entry.
func (d *Datapath) adopt(spec *ebpf.CollectionSpec) error {
	if err := checkPinnedMaps(spec, d.pinPath); err != nil {
		return err
	}
	// Pinned by name, the maps open their pins; a map this version added
	// is created empty and pinned next to them.
	if err := spec.LoadAndAssign(&d.objs, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: d.pinPath}}); err != nil {
		return fmt.Errorf("load datapath against pinned maps: %w", verifierError(err))
	}
	if err := d.watchProgram(); err != nil {
		d.objs.Close()
		return err
	}
	if err := d.pinPrograms(d.pinPath); err != nil {
		d.objs.Close()
		return err
	}
	entries, err := os.ReadDir(d.pinPath)
	if err != nil {
		d.objs.Close()
		return err
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), linkPrefix) {
			continue
		}
		l, err := link.LoadPinnedLink(filepath.Join(d.pinPath, e.Name()), nil)
		if err != nil {
			d.Close()
			return fmt.Errorf("adopt pinned link %s: %w", e.Name(), err)
		}
		if err := l.Update(d.objs.LimpetXdp); err != nil {
			l.Close()
			d.Close()
			return fmt.Errorf("move link %s to the new program: %w", e.Name(), err)
		}
		d.links[strings.TrimPrefix(e.Name(), linkPrefix)] = l
	}
	d.adopted = true
	return nil
}

// Adopted reports whether Load found pinned state and took it over.
func (d *Datapath) Adopted() bool { return d.adopted }

// Close releases this process's handles and lock. Pinned state, and so the
// datapath, keeps running.
func (d *Datapath) Close() error {
	for _, l := range d.links {
		l.Close()
	}
	d.links = map[string]link.Link{}
	if d.redirectLink != nil {
		d.redirectLink.Close()
		d.redirectLink = nil
	}
	err := d.objs.Close()
	if d.lock != nil {
		d.lock.Close()
		d.lock = nil
	}
	return err
}

// checkPinnedMaps holds the maps pinned at dir to this version's spec,
// before anything is loaded against them, so that a datapath another limpet
// pinned is refused with what to do about it, and left as it was.
// legacyFlowTable is the single flow table of both families that limpet
// kept before flows4 and flows6.
const legacyFlowTable = "flows"

// pinnedDatapath reports whether dir holds a pinned datapath of this
// layout. One that keeps its flows in the single legacy table is refused,
// not migrated: its program keeps running (and inserting flows) until the
// new one replaces it, so a copy would lose the flows made in between, and
// their connection counts with them. 'limpet detach' starts afresh.
func pinnedDatapath(dir string) (bool, error) {
	if _, err := os.Stat(filepath.Join(dir, "flows4")); err == nil {
		return true, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	if _, err := os.Stat(filepath.Join(dir, legacyFlowTable)); err == nil {
		return false, fmt.Errorf("the datapath pinned at %s was made by an older limpet that keeps one flow table %q for both families (this one keeps flows4 and flows6): it cannot be adopted; run 'limpet detach' to start afresh (its flows and persistence entries are lost), or keep running the limpet that pinned it", dir, legacyFlowTable)
	}
	return false, nil
}

func checkPinnedMaps(spec *ebpf.CollectionSpec, dir string) error {
	for name, ms := range spec.Maps {
		if ms.Pinning != ebpf.PinByName {
			continue // .rodata/.bss belong to the program, not the state
		}
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), nil)
		if errors.Is(err, os.ErrNotExist) && addedMaps[name] {
			continue // a map this version added: the load creates it empty
		}
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("the datapath pinned at %s was made by another version of limpet: it has no map %s; run 'limpet detach' to start afresh (its flows and persistence entries are lost), or the limpet that pinned it", dir, name)
		}
		if err != nil {
			return fmt.Errorf("adopt pinned map %s: %w (run 'limpet detach' to start afresh)", name, err)
		}
		err = ms.Compatible(m)
		size := m.MaxEntries()
		m.Close()
		if err != nil {
			if name == "flows4" || name == "flows6" {
				return fmt.Errorf("pinned flow table %s has %d entries but %d were asked for; run 'limpet detach' to resize it", name, size, ms.MaxEntries)
			}
			return fmt.Errorf("pinned map %s does not match this version of limpet: %w (run 'limpet detach' first)", name, err)
		}
	}
	return nil
}

// Attach attaches the datapath to an interface and pins the link, so the
// program stays attached when this process exits. Attaching an interface that
// is already ours is a no-op; it returns the mode in use.
func (d *Datapath) Attach(ifname string, mode XDPMode) (string, error) {
	iface, err := interfaceByName(ifname)
	if err != nil {
		return "", err
	}
	if _, ok := d.links[ifname]; ok {
		// Its MAC may have changed while no daemon ran.
		if err := d.learnMAC(ifname); err != nil {
			return "", err
		}
		return "adopted", nil
	}
	pin := filepath.Join(d.pinPath, linkPrefix+ifname)
	try := func(flags link.XDPAttachFlags) (link.Link, error) {
		return link.AttachXDP(link.XDPOptions{Program: d.objs.LimpetXdp, Interface: iface, Flags: flags})
	}
	var l link.Link
	used := string(mode)
	switch mode {
	case XDPNative:
		l, err = try(link.XDPDriverMode)
	case XDPGeneric:
		l, err = try(link.XDPGenericMode)
	default:
		used = string(XDPNative)
		l, err = try(link.XDPDriverMode)
		if err != nil {
			var gerr error
			used = string(XDPGeneric)
			l, gerr = try(link.XDPGenericMode)
			if gerr != nil {
				err = fmt.Errorf("native: %v; generic: %w", err, gerr)
			} else {
				err = nil
			}
		}
	}
	if err != nil {
		if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EEXIST) {
			return "", fmt.Errorf("attach XDP to %s: another XDP program is attached (%w)", ifname, err)
		}
		return "", fmt.Errorf("attach XDP to %s (mode %s): %w", ifname, mode, err)
	}
	if err := l.Pin(pin); err != nil {
		l.Close()
		return "", fmt.Errorf("pin link for %s: %w", ifname, err)
	}
	d.links[ifname] = l
	if err := d.learnMAC(ifname); err != nil {
		return used, fmt.Errorf("attached to %s, but: %w", ifname, err)
	}
	return used, nil
}

// Interfaces lists the interfaces the datapath is attached to.
func (d *Datapath) Interfaces() []string {
	var out []string
	for name := range d.links {
		out = append(out, name)
	}
	return out
}

// DetachInterface removes the datapath from one interface.
func (d *Datapath) DetachInterface(ifname string) error {
	l, ok := d.links[ifname]
	if !ok {
		return fmt.Errorf("limpet is not attached to %s", ifname)
	}
	if err := l.Unpin(); err != nil {
		return err
	}
	delete(d.links, ifname)
	if err := d.forgetMAC(ifname); err != nil {
		l.Close()
		return err
	}
	return l.Close()
}

// Detach removes everything: links (so the program leaves every interface),
// programs and maps. The datapath is unusable afterwards.
func (d *Datapath) Detach() error {
	var errs []error
	for name := range d.links {
		if err := d.DetachInterface(name); err != nil {
			errs = append(errs, err)
		}
	}
	if d.redirectLink != nil {
		if err := d.redirectLink.Unpin(); err != nil {
			errs = append(errs, err)
		}
	}
	d.Close()
	if err := removePins(d.pinPath); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Detach removes a pinned datapath that no process manages, e.g. after
// 'limpet run' exited and left it running.
func Detach(pinPath string) error {
	if pinPath == "" {
		pinPath = DefaultPinPath
	}
	if _, err := os.Stat(pinPath); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w at %s", ErrNotLoaded, pinPath)
	}
	lock, err := acquireLock(pinPath)
	if err != nil {
		return err
	}
	defer lock.Close()
	entries, err := os.ReadDir(pinPath)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), linkPrefix) {
			continue
		}
		l, err := link.LoadPinnedLink(filepath.Join(pinPath, e.Name()), nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("load link %s: %w", e.Name(), err))
			continue
		}
		if err := l.Unpin(); err != nil {
			errs = append(errs, err)
		}
		l.Close()
	}
	if err := removePins(pinPath); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func removePins(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	for _, e := range entries {
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("unpin %s: %w", e.Name(), err)
		}
	}
	return os.Remove(dir)
}

// PinName flattens a pin path into one file name ("/sys/fs/bpf/limpet-lab"
// is "sys_fs_bpf_limpet-lab"), for the files named after a datapath: its
// lock, and the admin socket of the daemon that manages it.
func PinName(pinPath string) string {
	return strings.ReplaceAll(strings.Trim(filepath.Clean(pinPath), "/"), "/", "_")
}

// acquireLock takes an exclusive, non-blocking flock that names the pin path.
// It is released when the process exits, however it exits.
func acquireLock(pinPath string) (*os.File, error) {
	if err := os.MkdirAll(lockDir, 0o700); err != nil {
		return nil, fmt.Errorf("create lock directory: %w", err)
	}
	name := PinName(pinPath) + ".lock"
	f, err := os.OpenFile(filepath.Join(lockDir, name), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		pid, _ := os.ReadFile(f.Name())
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s is held by pid %s; stop that 'limpet run' first", ErrLocked, pinPath, strings.TrimSpace(string(pid)))
		}
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(fmt.Sprintf("%d\n", os.Getpid())), 0)
	return f, nil
}

// ensureBPFFS mounts bpffs at /sys/fs/bpf when the pin path lives there and
// nothing is mounted yet, as on a fresh machine.
func ensureBPFFS(pinPath string) error {
	dir := filepath.Dir(filepath.Clean(pinPath))
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err == nil && st.Type == unix.BPF_FS_MAGIC {
		return nil
	}
	if dir != bpffsSysDir {
		return fmt.Errorf("pin path %s: %s is not a bpffs mount", pinPath, dir)
	}
	if err := unix.Mount("bpf", bpffsSysDir, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs at %s: %w", bpffsSysDir, err)
	}
	return nil
}

func verifierError(err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		return fmt.Errorf("%+v", ve)
	}
	return err
}
