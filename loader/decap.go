package loader

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// DefaultDecapPinPath is where the member-side decapsulator pins its state:
// one directory per interface. It is apart from DefaultPinPath, so that
// 'limpet detach' (the balancer's) never takes a member's decapsulator away.
const DefaultDecapPinPath = "/sys/fs/bpf/limpet-decap"

// DefaultGUEPort is the UDP port of GUE unless told otherwise (Katran's).
const DefaultGUEPort = 6080

// Pins of one interface's decapsulator.
const (
	decapPinLink   = "link"
	decapPinProg   = "prog"
	decapPinStats  = "stats"
	decapPinConfig = "config"
	decapPinDsts   = "destinations"
)

// ErrDecapNotAttached means no decapsulator is pinned for the interface.
var ErrDecapNotAttached = errors.New("no decapsulator is attached")

// ErrNoSuchIface means the interface named is not valid or does not exist.
var ErrNoSuchIface = errors.New("no such interface")

// DecapStat names a counter of the decapsulator (bpf/decap.h).
type DecapStat uint32

// The counters, in the order of enum decap_stat.
const (
	DecapPass         = DecapStat(decapDecapStatDECAP_STAT_PASS)
	DecapIPIP4in4     = DecapStat(decapDecapStatDECAP_STAT_IPIP_4IN4)
	DecapIPIP6in4     = DecapStat(decapDecapStatDECAP_STAT_IPIP_6IN4)
	DecapIPIP4in6     = DecapStat(decapDecapStatDECAP_STAT_IPIP_4IN6)
	DecapIPIP6in6     = DecapStat(decapDecapStatDECAP_STAT_IPIP_6IN6)
	DecapGUE4in4      = DecapStat(decapDecapStatDECAP_STAT_GUE_4IN4)
	DecapGUE6in4      = DecapStat(decapDecapStatDECAP_STAT_GUE_6IN4)
	DecapGUE4in6      = DecapStat(decapDecapStatDECAP_STAT_GUE_4IN6)
	DecapGUE6in6      = DecapStat(decapDecapStatDECAP_STAT_GUE_6IN6)
	DecapTruncated    = DecapStat(decapDecapStatDECAP_STAT_TRUNCATED)
	DecapBadOuter     = DecapStat(decapDecapStatDECAP_STAT_BAD_OUTER)
	DecapFragment     = DecapStat(decapDecapStatDECAP_STAT_FRAGMENT)
	DecapBadInner     = DecapStat(decapDecapStatDECAP_STAT_BAD_INNER)
	DecapGUEVersion   = DecapStat(decapDecapStatDECAP_STAT_GUE_VERSION)
	DecapGUEProto     = DecapStat(decapDecapStatDECAP_STAT_GUE_PROTO)
	DecapGUEOptions   = DecapStat(decapDecapStatDECAP_STAT_GUE_OPTIONS)
	DecapECNDrop      = DecapStat(decapDecapStatDECAP_STAT_ECN_DROP)
	DecapAdjustFailed = DecapStat(decapDecapStatDECAP_STAT_ADJUST_FAILED)
	DecapOtherDst     = DecapStat(decapDecapStatDECAP_STAT_OTHER_DST)
	decapStatCount    = int(decapDecapStatDECAP_STAT_MAX)
)

var decapStatNames = [...]string{
	DecapPass: "passed", DecapIPIP4in4: "ipip_4in4", DecapIPIP6in4: "ipip_6in4",
	DecapIPIP4in6: "ipip_4in6", DecapIPIP6in6: "ipip_6in6", DecapGUE4in4: "gue_4in4",
	DecapGUE6in4: "gue_6in4", DecapGUE4in6: "gue_4in6", DecapGUE6in6: "gue_6in6",
	DecapTruncated: "truncated", DecapBadOuter: "bad_outer", DecapFragment: "fragment",
	DecapBadInner: "bad_inner", DecapGUEVersion: "gue_version", DecapGUEProto: "gue_proto",
	DecapGUEOptions: "gue_options", DecapECNDrop: "ecn_drop", DecapAdjustFailed: "adjust_failed",
	DecapOtherDst: "other_destination",
}

// MaxDecapDestinations is how many addresses DecapOptions.OnlyTo may list.
const MaxDecapDestinations = 64

// String is the counter's snake_case name, as JSON and the CLI show it.
func (s DecapStat) String() string {
	if int(s) < len(decapStatNames) {
		return decapStatNames[s]
	}
	return fmt.Sprintf("stat_%d", uint32(s))
}

// Decapsulated says whether the counter counts decapsulated packets (one
// form each) rather than passed or dropped ones.
func (s DecapStat) Decapsulated() bool { return s >= DecapIPIP4in4 && s <= DecapGUE6in6 }

// DecapCount is one counter, summed over CPUs.
type DecapCount struct {
	Stat    DecapStat
	Packets uint64
	Bytes   uint64
}

// DecapOptions say where and how to attach the decapsulator.
type DecapOptions struct {
	// PinPath is the bpffs directory of the decapsulators ("" is
	// DefaultDecapPinPath); each interface gets a directory in it.
	PinPath string
	// Iface is the interface whose ingress is decapsulated.
	Iface string
	// GUEPort is the UDP port of GUE (0 is DefaultGUEPort).
	GUEPort uint16
	// OnlyTo, when not empty, limits decapsulation to tunnel packets whose
	// outer destination is one of these addresses (the member's own); the
	// others pass untouched, counted other_destination. Empty: any
	// destination, as an "external" ipip device does.
	OnlyTo []netip.Addr
}

// DecapStatus is one attached decapsulator.
type DecapStatus struct {
	Iface   string
	Ifindex int  // of the link as attached; 0 when the interface is gone
	Gone    bool // the interface no longer exists: the link is defunct
	GUEPort uint16
	// OnlyTo lists the outer destinations decapsulated (empty: any).
	OnlyTo []netip.Addr
	// ProgramID is the kernel's id of the attached program (bpftool prog show id N).
	ProgramID uint32
	Counts    []DecapCount
}

func decapPinPath(p string) string {
	if p == "" {
		return DefaultDecapPinPath
	}
	return p
}

func checkIfaceName(name string) error {
	if name == "" || len(name) > 15 || strings.ContainsAny(name, "/ \t\n") || name == "." || name == ".." {
		return fmt.Errorf("%w: interface name %q is not a valid Linux interface name", ErrNoSuchIface, name)
	}
	return nil
}

// AttachDecap attaches the decapsulator to the ingress of opts.Iface with
// tcx, pinning the link so that it stays when this process exits. If one is
// attached there already, its program is replaced by this binary's in place
// (the link is updated, so no packet misses it) and its counters are kept;
// the GUE port takes the new value either way.
func AttachDecap(opts DecapOptions) (DecapStatus, error) {
	if err := checkIfaceName(opts.Iface); err != nil {
		return DecapStatus{}, err
	}
	if opts.GUEPort == 0 {
		opts.GUEPort = DefaultGUEPort
	}
	if len(opts.OnlyTo) > MaxDecapDestinations {
		return DecapStatus{}, fmt.Errorf("%d destination addresses: at most %d", len(opts.OnlyTo), MaxDecapDestinations)
	}
	for _, a := range opts.OnlyTo {
		if !a.IsValid() || a.Zone() != "" || a.Is4In6() {
			return DecapStatus{}, fmt.Errorf("destination %v: want a plain IPv4 or IPv6 address", a)
		}
	}
	root := decapPinPath(opts.PinPath)
	ifc, err := net.InterfaceByName(opts.Iface)
	if err != nil {
		return DecapStatus{}, fmt.Errorf("%w: %s in this network namespace (%v)", ErrNoSuchIface, opts.Iface, err)
	}
	if err := ensureBPFFS(root); err != nil {
		return DecapStatus{}, err
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return DecapStatus{}, err
	}
	dir := filepath.Join(root, opts.Iface)
	if _, err := os.Stat(filepath.Join(dir, decapPinLink)); err == nil {
		err = replaceDecap(dir, ifc.Index, opts)
		if err != nil {
			return DecapStatus{}, err
		}
	} else if err := createDecap(root, dir, ifc.Index, opts); err != nil {
		return DecapStatus{}, err
	}
	return decapStatus(root, opts.Iface)
}

func dstKey(a netip.Addr) decapDecapDstKey {
	k := decapDecapDstKey{Family: 6}
	if a.Is4() {
		k.Family = 4
		b := a.As4()
		copy(k.Addr[:], b[:])
	} else {
		k.Addr = a.As16()
	}
	return k
}

// writeDecapConfig sets the port and the destinations. New destinations go
// in before old ones leave, and the filter is switched on last, so that no
// packet to a listed address is passed during the change.
func writeDecapConfig(cfg, dsts *ebpf.Map, port uint16, onlyTo []netip.Addr) error {
	want := map[decapDecapDstKey]bool{}
	for _, a := range onlyTo {
		k := dstKey(a)
		want[k] = true
		if err := dsts.Put(k, uint8(1)); err != nil {
			return fmt.Errorf("add destination %s: %w", a, err)
		}
	}
	var stale []decapDecapDstKey
	var k decapDecapDstKey
	var v uint8
	it := dsts.Iterate()
	for it.Next(&k, &v) {
		if !want[k] {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("list destinations: %w", err)
	}
	c := decapDecapConfig{GuePort: htons(port)}
	if len(onlyTo) > 0 {
		c.OnlyListed = 1
		for _, k := range stale {
			if err := dsts.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("remove a destination: %w", err)
			}
		}
	}
	if err := cfg.Put(uint32(0), c); err != nil {
		return fmt.Errorf("set the decapsulator's configuration: %w", err)
	}
	if len(onlyTo) == 0 {
		// Off first, then emptied.
		for _, k := range stale {
			if err := dsts.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("remove a destination: %w", err)
			}
		}
	}
	return nil
}

func readDecapDsts(m *ebpf.Map) ([]netip.Addr, error) {
	var out []netip.Addr
	var k decapDecapDstKey
	var v uint8
	it := m.Iterate()
	for it.Next(&k, &v) {
		if k.Family == 4 {
			out = append(out, netip.AddrFrom4([4]byte(k.Addr[:4])))
		} else {
			out = append(out, netip.AddrFrom16(k.Addr))
		}
	}
	if err := it.Err(); err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out, nil
}

// createDecap loads and attaches afresh, pinning into a temporary directory
// that is renamed into place: a crash leaves no half-pinned decapsulator.
func createDecap(root, dir string, ifindex int, opts DecapOptions) error {
	var objs decapObjects
	if err := loadDecapObjects(&objs, nil); err != nil {
		return fmt.Errorf("load the decapsulator: %w", verifierError(err))
	}
	defer objs.Close()
	if err := writeDecapConfig(objs.DecapCfg, objs.DecapDst, opts.GUEPort, opts.OnlyTo); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(root), filepath.Base(root)+"-tmp-")
	if err != nil {
		return fmt.Errorf("create temporary pin directory: %w", err)
	}
	defer os.RemoveAll(tmp)
	for name, pin := range map[string]interface{ Pin(string) error }{
		decapPinProg: objs.LimpetDecap, decapPinStats: objs.DecapStats, decapPinConfig: objs.DecapCfg, decapPinDsts: objs.DecapDst,
	} {
		if err := pin.Pin(filepath.Join(tmp, name)); err != nil {
			return fmt.Errorf("pin %s: %w", name, err)
		}
	}
	l, err := link.AttachTCX(link.TCXOptions{
		Interface: ifindex,
		Program:   objs.LimpetDecap,
		Attach:    ebpf.AttachTCXIngress,
		// First: the packet other programs see is the client's.
		Anchor: link.Head(),
	})
	if err != nil {
		return fmt.Errorf("attach to the ingress of ifindex %d with tcx (Linux 6.6 or later): %w", ifindex, err)
	}
	defer l.Close() // the pin keeps it attached
	if err := l.Pin(filepath.Join(tmp, decapPinLink)); err != nil {
		return fmt.Errorf("pin the link: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("move pins into place at %s: %w", dir, err)
	}
	return nil
}

// replaceDecap loads this binary's program against the pinned maps and
// swaps it into the pinned link.
func replaceDecap(dir string, ifindex int, o DecapOptions) error {
	l, err := link.LoadPinnedLink(filepath.Join(dir, decapPinLink), nil)
	if err != nil {
		return fmt.Errorf("open the pinned link: %w (run 'limpet member-decap --detach' first)", err)
	}
	defer l.Close()
	if info, err := l.Info(); err == nil {
		if tcx := info.TCX(); tcx != nil && int(tcx.Ifindex) != ifindex {
			return fmt.Errorf("%s is pinned for ifindex %d, but the interface now has ifindex %d: detach it first", dir, tcx.Ifindex, ifindex)
		}
	}
	stats, err := ebpf.LoadPinnedMap(filepath.Join(dir, decapPinStats), nil)
	if err != nil {
		return fmt.Errorf("open the pinned counters: %w", err)
	}
	defer stats.Close()
	cfg, err := ebpf.LoadPinnedMap(filepath.Join(dir, decapPinConfig), nil)
	if err != nil {
		return fmt.Errorf("open the pinned configuration: %w", err)
	}
	defer cfg.Close()
	dsts, err := ebpf.LoadPinnedMap(filepath.Join(dir, decapPinDsts), nil)
	if err != nil {
		return fmt.Errorf("open the pinned destinations: %w", err)
	}
	defer dsts.Close()
	var objs decapObjects
	opts := &ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{"decap_stats": stats, "decap_cfg": cfg, "decap_dst": dsts}}
	if err := loadDecapObjects(&objs, opts); err != nil {
		return fmt.Errorf("load the decapsulator against the pinned maps: %w (run 'limpet member-decap --detach' first)", verifierError(err))
	}
	defer objs.Close()
	if err := writeDecapConfig(cfg, dsts, o.GUEPort, o.OnlyTo); err != nil {
		return err
	}
	if err := l.Update(objs.LimpetDecap); err != nil {
		return fmt.Errorf("update the pinned link: %w", err)
	}
	progPin := filepath.Join(dir, decapPinProg)
	if err := os.Remove(progPin); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := objs.LimpetDecap.Pin(progPin); err != nil {
		return fmt.Errorf("pin the program: %w", err)
	}
	return nil
}

// DetachDecap detaches the decapsulator of iface and removes its pins.
func DetachDecap(pinPath, iface string) error {
	if err := checkIfaceName(iface); err != nil {
		return err
	}
	dir := filepath.Join(decapPinPath(pinPath), iface)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w on %s (no %s)", ErrDecapNotAttached, iface, dir)
	}
	if l, err := link.LoadPinnedLink(filepath.Join(dir, decapPinLink), nil); err == nil {
		// A tcx link detaches when its last reference, the pin or this
		// fd, goes.
		_ = l.Unpin()
		l.Close()
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("open the pinned link of %s: %w", iface, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	// The last interface gone, the root goes too (it is ours alone).
	root := decapPinPath(pinPath)
	if entries, err := os.ReadDir(root); err == nil && len(entries) == 0 {
		_ = os.Remove(root)
	}
	return nil
}

// DecapStatuses lists every attached decapsulator under pinPath, by
// interface name. No pin directory is an empty list.
func DecapStatuses(pinPath string) ([]DecapStatus, error) {
	root := decapPinPath(pinPath)
	entries, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []DecapStatus
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		s, err := decapStatus(root, e.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Iface < out[j].Iface })
	return out, nil
}

// DecapStatusOf is the status of the decapsulator of one interface.
func DecapStatusOf(pinPath, iface string) (DecapStatus, error) {
	if err := checkIfaceName(iface); err != nil {
		return DecapStatus{}, err
	}
	root := decapPinPath(pinPath)
	if _, err := os.Stat(filepath.Join(root, iface)); errors.Is(err, os.ErrNotExist) {
		return DecapStatus{}, fmt.Errorf("%w on %s", ErrDecapNotAttached, iface)
	}
	return decapStatus(root, iface)
}

func decapStatus(root, iface string) (DecapStatus, error) {
	dir := filepath.Join(root, iface)
	s := DecapStatus{Iface: iface}
	l, err := link.LoadPinnedLink(filepath.Join(dir, decapPinLink), nil)
	if err != nil {
		return s, fmt.Errorf("open the pinned link of %s: %w", iface, err)
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		return s, fmt.Errorf("link info of %s: %w", iface, err)
	}
	s.ProgramID = uint32(info.Program)
	if tcx := info.TCX(); tcx != nil {
		s.Ifindex = int(tcx.Ifindex)
	}
	s.Gone = s.Ifindex == 0
	cfg, err := ebpf.LoadPinnedMap(filepath.Join(dir, decapPinConfig), nil)
	if err != nil {
		return s, fmt.Errorf("open the configuration of %s: %w", iface, err)
	}
	defer cfg.Close()
	var c decapDecapConfig
	if err := cfg.Lookup(uint32(0), &c); err != nil {
		return s, fmt.Errorf("read the configuration of %s: %w", iface, err)
	}
	s.GUEPort = htons(c.GuePort)
	if c.OnlyListed != 0 {
		dsts, err := ebpf.LoadPinnedMap(filepath.Join(dir, decapPinDsts), nil)
		if err != nil {
			return s, fmt.Errorf("open the destinations of %s: %w", iface, err)
		}
		s.OnlyTo, err = readDecapDsts(dsts)
		dsts.Close()
		if err != nil {
			return s, fmt.Errorf("read the destinations of %s: %w", iface, err)
		}
	}
	stats, err := ebpf.LoadPinnedMap(filepath.Join(dir, decapPinStats), nil)
	if err != nil {
		return s, fmt.Errorf("open the counters of %s: %w", iface, err)
	}
	defer stats.Close()
	s.Counts, err = readDecapCounts(stats)
	return s, err
}

func readDecapCounts(m *ebpf.Map) ([]DecapCount, error) {
	out := make([]DecapCount, decapStatCount)
	for i := range out {
		var per []decapDecapCount
		if err := m.Lookup(uint32(i), &per); err != nil {
			return nil, fmt.Errorf("read counter %s: %w", DecapStat(i), err)
		}
		out[i].Stat = DecapStat(i)
		for _, c := range per {
			out[i].Packets += c.Packets
			out[i].Bytes += c.Bytes
		}
	}
	return out, nil
}
