package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/limpet-lb/limpet/loader"
)

// The datapath agent: one run of part 1 by the datapath of the tree it was
// built from (cmd/limpet-bench-agent). `make bench BASELINE=<commit>` builds
// the agent of that commit in a scratch worktree and runs it in turns with
// this tree's, so that both datapaths are measured in one run of the
// harness, each by its own loader and its own part 1.
//
// This file and cmd/limpet-bench-agent are copied into a commit that
// predates them (BuildBaseline), so they use only what test/bench and
// loader have offered since the first commit it supports (f5a5b22):
// RunDatapath and its types, loader.Load, Apply, LoadFloor, Drive and
// VSCounters; the micro benchmarks' world through agent_world.go, which
// BuildBaseline picks to fit the tree. Everything else is read through
// bpftool, whatever the tree names its programs and maps.

// AgentProtocol is the version of the agent's JSON output: the harness
// refuses an agent that speaks another.
const AgentProtocol = 1

// AgentReport is what one run of the agent prints: JSON on stdout.
type AgentReport struct {
	Protocol int        `json:"protocol"`
	Rows     []AgentRow `json:"rows"`
	// FloorPlain and NonVIPPlain: RunDatapath's figures without the
	// driver, ns per packet by family.
	FloorPlain       map[string]float64 `json:"floor_plain"`
	NonVIPPlain      map[string]float64 `json:"non_vip_plain"`
	Repeat           int                `json:"repeat"`
	FlowTableSize    uint32             `json:"flow_table_size"`
	PersistTableSize uint32             `json:"persist_table_size"`
	// The probe's (-probe): sizes of the programs and the flow table's
	// memory per connection.
	Programs   []ProgramSize `json:"programs,omitempty"`
	FlowMemory []FlowMemory  `json:"flow_memory,omitempty"`
}

// AgentRow is one row of part 1 in one run.
type AgentRow struct {
	Case    DatapathCase `json:"case"`
	Family  string       `json:"family"`
	Large   bool         `json:"large"`
	Limpet  float64      `json:"limpet_ns"`
	Floor   float64      `json:"floor_ns"`
	Entries int          `json:"entries"`
	Sweep   string       `json:"sweep"`
}

// ProgramSize is one loaded program as `bpftool prog show` reports it.
type ProgramSize struct {
	Name          string `json:"name"`
	Type          string `json:"type"`
	XlatedBytes   int    `json:"bytes_xlated"`
	JitedBytes    int    `json:"bytes_jited"`
	VerifiedInsns int    `json:"verified_insns"`
}

// FlowMemory is one flow map and what a new NAT connection of one family
// takes in it.
type FlowMemory struct {
	Map        string `json:"map"`
	Family     string `json:"family"`
	Type       string `json:"type"`
	KeyBytes   int    `json:"bytes_key"`
	ValueBytes int    `json:"bytes_value"`
	MaxEntries int    `json:"max_entries"`
	// MemlockBytes is the kernel's accounting of the whole map (fdinfo
	// memlock), which includes the per-element overhead of a hash.
	MemlockBytes int64 `json:"bytes_memlock"`
	// Connections opened by the probe and the entries they added here.
	Connections int `json:"connections"`
	Entries     int `json:"entries"`
}

// EntriesPerConn is the map's entries per connection.
func (f FlowMemory) EntriesPerConn() float64 {
	return float64(f.Entries) / float64(max(f.Connections, 1))
}

// BytesPerConn is key and value bytes per connection.
func (f FlowMemory) BytesPerConn() float64 {
	return f.EntriesPerConn() * float64(f.KeyBytes+f.ValueBytes)
}

// MemlockPerConn is the kernel's memory per connection: the map's memlock
// per slot times the entries a connection takes.
func (f FlowMemory) MemlockPerConn() float64 {
	return f.EntriesPerConn() * float64(f.MemlockBytes) / float64(max(f.MaxEntries, 1))
}

// RunAgent is one run of part 1 (o.Runs is ignored: one), then the probe if
// asked for.
func RunAgent(ctx context.Context, o DatapathOptions, probe bool) (*AgentReport, error) {
	o.Runs = 1
	res, err := RunDatapath(ctx, o)
	if err != nil {
		return nil, err
	}
	rep := &AgentReport{
		Protocol: AgentProtocol, Repeat: res.Repeat, FlowTableSize: res.FlowTableSize, PersistTableSize: res.PersistTableSize,
		FloorPlain: map[string]float64{}, NonVIPPlain: map[string]float64{},
	}
	for fam, s := range res.FloorPlain {
		rep.FloorPlain[fam] = s.Median()
	}
	for fam, s := range res.NonVIPPlain {
		rep.NonVIPPlain[fam] = s.Median()
	}
	for _, row := range res.Rows {
		if len(row.Limpet) == 0 {
			continue
		}
		rep.Rows = append(rep.Rows, AgentRow{Case: row.Key.Case, Family: row.Key.Family, Large: row.Key.Large,
			Limpet: row.Limpet.Median(), Floor: row.Floor.Median(), Entries: row.Entries, Sweep: row.Sweep})
	}
	if probe {
		if rep.Programs, rep.FlowMemory, err = probeDatapath(ctx); err != nil {
			return nil, fmt.Errorf("probe: %w", err)
		}
	}
	return rep, nil
}

// probeWorld is what the probe needs of the micro benchmarks' namespace.
type probeWorld interface {
	do(fn func() error) error
	client() (ifindex int, mac net.HardwareAddr)
	close()
}

// openProbeWorld builds the micro benchmarks' world and gives the probe
// its view of it (probeWorldOf, from the agent_world.go that fits the
// tree).
func openProbeWorld() (probeWorld, error) {
	w, err := newDPWorld()
	if err != nil {
		return nil, err
	}
	return probeWorldOf(w), nil
}

// probeConnections is how many new connections per family the probe opens.
const probeConnections = 256

// probeDatapath loads the datapath and the floor once more, lists the
// programs this process holds with their sizes, and opens
// probeConnections NAT connections per family through the driver to see
// how many entries each takes in every flow map.
func probeDatapath(ctx context.Context) ([]ProgramSize, []FlowMemory, error) {
	w, err := openProbeWorld()
	if err != nil {
		return nil, nil, err
	}
	defer w.close()
	cliIdx, cliMAC := w.client()
	fl, err := loader.LoadFloor()
	if err != nil {
		return nil, nil, err
	}
	defer fl.Close()
	pin := fmt.Sprintf("/sys/fs/bpf/limpet-bench-probe-%d", os.Getpid())
	_ = loader.Detach(pin)
	d, err := loader.Load(loader.Options{PinPath: pin, FlowTableSize: 1 << 16})
	if err != nil {
		return nil, nil, fmt.Errorf("load datapath: %w", err)
	}
	defer d.Detach()
	if err := d.Apply(dpState(1 << 12)); err != nil {
		return nil, nil, err
	}
	progs, err := ownPrograms()
	if err != nil {
		return nil, nil, err
	}
	flowMaps, err := pinnedFlowMaps(pin)
	if err != nil {
		return nil, nil, err
	}
	var mem []FlowMemory
	for _, fam := range dpFamilies {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		before := map[string]int{}
		for _, m := range flowMaps {
			if before[m.path], err = bpftoolCount(m.path); err != nil {
				return nil, nil, err
			}
		}
		syn := tcpFrame(netip.AddrPortFrom(fam.clientB, dpPortNew), netip.AddrPortFrom(fam.vip, dpVSPort), "S", dpGwMAC, cliMAC)
		var conns int
		err := w.do(func() error {
			b, err := withID(d.VSCounters, fam.vsID)
			if err != nil {
				return err
			}
			r, err := fl.Drive(d, syn, loader.Sweep{Clients: probeConnections}, cliIdx, probeConnections)
			if err != nil {
				return err
			}
			if r.Verdict != loader.XDPRedirect {
				return fmt.Errorf("%w: %s new connection: verdict %v, want %v", errSanity, fam.name, r.Verdict, loader.XDPRedirect)
			}
			a, err := withID(d.VSCounters, fam.vsID)
			if err != nil {
				return err
			}
			conns = int(a.NewFlows - b.NewFlows)
			if conns == 0 {
				return fmt.Errorf("%w: %s: %d SYNs of new clients opened no flow", errSanity, fam.name, r.Packets)
			}
			return nil
		})
		if err != nil {
			return nil, nil, err
		}
		for _, m := range flowMaps {
			after, err := bpftoolCount(m.path)
			if err != nil {
				return nil, nil, err
			}
			f := m.FlowMemory
			f.Family, f.Connections, f.Entries = fam.name, conns, after-before[m.path]
			mem = append(mem, f)
		}
	}
	return progs, mem, nil
}

// bpftoolJSON runs bpftool -j and decodes its output into v.
func bpftoolJSON(v any, args ...string) error {
	out, err := exec.Command("bpftool", append([]string{"-j"}, args...)...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("bpftool %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(ee.Stderr)))
		}
		return fmt.Errorf("bpftool %s: %w", strings.Join(args, " "), err)
	}
	if err := json.Unmarshal(out, v); err != nil {
		return fmt.Errorf("bpftool %s: %w", strings.Join(args, " "), err)
	}
	return nil
}

// ownPrograms lists the programs this process holds open: the datapath's
// (those only in its prog arrays too, whose fds the loader keeps) and the
// floor's. The program ids come from the fds' fdinfo: bpftool's pid
// iterator, which would say the same, is not built into every bpftool.
func ownPrograms() ([]ProgramSize, error) {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil, err
	}
	var out []ProgramSize
	seen := map[string]bool{}
	for _, fd := range fds {
		if l, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err != nil || l != "anon_inode:bpf-prog" {
			continue
		}
		info, err := os.ReadFile(filepath.Join("/proc/self/fdinfo", fd.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		var id, verified string
		for _, line := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "prog_id:"); ok {
				id = strings.TrimSpace(v)
			}
			if v, ok := strings.CutPrefix(line, "verified_insns:"); ok {
				verified = strings.TrimSpace(v)
			}
		}
		if id == "" || seen[id] {
			continue
		}
		seen[id] = true
		var p ProgramSize
		if err := bpftoolJSON(&p, "prog", "show", "id", id); err != nil {
			return nil, err
		}
		// bpftool 7.1 leaves verified_insns out of its JSON; the kernel
		// (5.16 and later) has it in fdinfo.
		if p.VerifiedInsns == 0 && verified != "" {
			if p.VerifiedInsns, err = strconv.Atoi(verified); err != nil {
				return nil, fmt.Errorf("fdinfo of program %s: verified_insns %q", id, verified)
			}
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, errors.New("this process holds no BPF program")
	}
	slices.SortFunc(out, func(a, b ProgramSize) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

type pinnedMap struct {
	FlowMemory
	path string
}

// pinnedFlowMaps are the maps pinned in dir whose name says they hold flows.
func pinnedFlowMaps(dir string) ([]pinnedMap, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []pinnedMap
	for _, e := range ents {
		if !strings.Contains(e.Name(), "flow") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		var m struct {
			Type       string `json:"type"`
			KeyBytes   int    `json:"bytes_key"`
			ValueBytes int    `json:"bytes_value"`
			MaxEntries int    `json:"max_entries"`
			Memlock    int64  `json:"bytes_memlock"`
		}
		if err := bpftoolJSON(&m, "map", "show", "pinned", p); err != nil {
			continue // a program or link pin
		}
		if !strings.Contains(m.Type, "hash") {
			continue
		}
		out = append(out, pinnedMap{path: p, FlowMemory: FlowMemory{Map: e.Name(), Type: m.Type, KeyBytes: m.KeyBytes,
			ValueBytes: m.ValueBytes, MaxEntries: m.MaxEntries, MemlockBytes: m.Memlock}})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no flow map pinned in %s", dir)
	}
	return out, nil
}

// bpftoolCount counts a pinned map's entries.
func bpftoolCount(path string) (int, error) {
	var ents []json.RawMessage
	if err := bpftoolJSON(&ents, "map", "dump", "pinned", path); err != nil {
		return 0, err
	}
	return len(ents), nil
}

// withID calls f with id as whatever id type f takes: the agent is built
// into baseline trees from before loader's typed ids (VirtualServerID),
// whose methods take a bare uint32, as well as into this one.
func withID[ID ~uint32, R any](f func(ID) (R, error), id uint32) (R, error) { return f(ID(id)) }
