package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/userspace/lab"
)

// Options are the harness's: how many runs and how big each part is.
type Options struct {
	Runs     int
	Datapath DatapathOptions
	Forward  ForwardOptions
	Conn     ConnOptions
	L7       L7Options
	Scale    ScaleOptions
	Mirror   MirrorOptions
	Parts    map[int]bool // which parts to run (1-6); nil: all
	// Baseline is a commit whose datapath part 1 measures in turns with
	// this tree's (make bench BASELINE=<commit>); "" for none.
	Baseline string
	// Current, if set, is a commit part 1 measures instead of this tree,
	// built as the baseline is: a change and its parent, both committed.
	Current string
}

// ReportOptions are the sizes of `make bench`.
func ReportOptions(runs int) Options {
	return Options{
		Runs:     runs,
		Datapath: DatapathOptions{Repeat: 1 << 20, LargeEntries: 1 << 20, SmallClients: 32, Runs: runs},
		Forward:  ForwardOptions{Frames: 1 << 20, Sources: 65534, Runs: runs},
		Conn:     ConnOptions{Workers: 16, Duration: 2 * time.Second, MaxConns: 100000, Sources: 4096, Runs: runs},
		L7:       L7Options{Duration: 3 * time.Second, Connections: 32, ManyConnections: 1000, ProxyCPUs: "1", LoadCPUs: "0", Workers: 1, Runs: runs, Profile: 10 * time.Second},
		Scale:    ScaleOptions{Entries: 1 << 20, Runs: runs},
		Mirror:   MirrorOptions{Entries: 1 << 20, Runs: runs},
	}
}

// SmokeOptions are the sizes of `make bench-smoke`: every code path once,
// tiny counts, no figure worth reporting.
func SmokeOptions() Options {
	return Options{
		Runs:     1,
		Datapath: DatapathOptions{Repeat: 1 << 12, LargeEntries: 1 << 12, SmallClients: 32, Runs: 1},
		Forward:  ForwardOptions{Frames: 1 << 15, Sources: 4096, Runs: 1},
		Conn:     ConnOptions{Workers: 4, Duration: 500 * time.Millisecond, MaxConns: 2000, Sources: 256, Runs: 1},
		L7:       L7Options{Duration: time.Second, Connections: 8, ManyConnections: 100, ProxyCPUs: "1", LoadCPUs: "0", Workers: 1, Runs: 1, Profile: time.Second},
		Scale:    ScaleOptions{Entries: 1 << 14, Runs: 1},
		Mirror:   MirrorOptions{Entries: 1 << 12, Runs: 1},
	}
}

// Results are everything one harness run measured.
type Results struct {
	Started, Finished time.Time
	Machine           Machine
	Opts              Options
	Smoke             bool
	Command           string
	Datapath          *DatapathResult
	Forward           *ForwardResult
	Conn              *ConnResult
	L7                *L7Result
	Scale             *ScaleResult
	Mirror            *MirrorResult
	Errors            map[int]error // per part
	LoadBefore        string
	LoadAfter         string
}

// Run runs the selected parts. A part that fails is reported and the others
// still run; the returned error joins every part's.
func Run(ctx context.Context, env Env, o Options) (*Results, error) {
	var err error
	if env, err = env.resolved(); err != nil {
		return nil, err
	}
	if o.L7.MemberExe == "" {
		if o.L7.MemberExe, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	cleanStalePins(env)
	cleanStaleBaselines(env, env.Repo)
	res := &Results{Started: time.Now(), Opts: o, Errors: map[int]error{}, Machine: describeMachine(), LoadBefore: loadavg()}
	want := func(p int) bool { return o.Parts == nil || o.Parts[p] }
	part := func(p int, name string, fn func() error) {
		if !want(p) || ctx.Err() != nil {
			return
		}
		start := time.Now()
		env.logf("part %d (%s) ...", p, name)
		if err := fn(); err != nil {
			res.Errors[p] = err
			env.logf("part %d (%s) FAILED after %.0fs: %v", p, name, time.Since(start).Seconds(), err)
			return
		}
		env.logf("part %d (%s) done in %.0fs", p, name, time.Since(start).Seconds())
	}
	part(1, "datapath cost", func() (err error) {
		o.Datapath.Log = env.Log
		res.Datapath, err = runDatapathPart(ctx, env, o)
		return err
	})
	part(5, "scale", func() (err error) {
		res.Scale, err = RunScale(ctx, env, o.Scale)
		return err
	})
	if want(2) || want(3) {
		bl, err := newBenchLab(ctx, env)
		if err != nil {
			if want(2) {
				res.Errors[2] = err
			}
			if want(3) {
				res.Errors[3] = err
			}
		} else {
			part(2, "end-to-end forwarding", func() (err error) {
				res.Forward, err = runForward(ctx, bl, o.Forward)
				return err
			})
			part(3, "connection rate", func() (err error) {
				res.Conn, err = runConnRate(ctx, bl, o.Conn)
				return err
			})
			if err := bl.close(); err != nil {
				res.Errors[3] = errors.Join(res.Errors[3], err)
			}
		}
	}
	part(4, "L7", func() (err error) {
		res.L7, err = RunL7(ctx, env, o.L7)
		return err
	})
	part(6, "HA mirroring", func() (err error) {
		res.Mirror, err = RunMirror(ctx, o.Mirror)
		return err
	})
	if err := ctx.Err(); err != nil {
		res.Errors[0] = err
	}
	if err := CheckLeftovers(); err != nil {
		res.Errors[0] = errors.Join(res.Errors[0], err)
	}
	res.Finished = time.Now()
	res.LoadAfter = loadavg()
	var errs []error
	for p := 0; p <= 6; p++ {
		if e := res.Errors[p]; e != nil {
			errs = append(errs, fmt.Errorf("part %d: %w", p, e))
		}
	}
	return res, errors.Join(errs...)
}

// runDatapathPart is part 1: this tree's datapath through its agent (or
// the Current commit's) and, with a baseline, the baseline's, built for the
// run and removed after it.
func runDatapathPart(ctx context.Context, env Env, o Options) (*DatapathResult, error) {
	current := AgentSide{Name: TreeName(ctx, env.Repo), Bin: env.AgentBin}
	if o.Current != "" {
		c, err := buildSide(ctx, env, o.Current)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		current = c.Side
		current.Name = c.Side.Name + " " + c.Subject
	}
	if o.Baseline == "" {
		return RunDatapathSides(ctx, o.Datapath, current, nil)
	}
	b, err := buildSide(ctx, env, o.Baseline)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	res, err := RunDatapathSides(ctx, o.Datapath, current, &b.Side)
	if res != nil {
		res.Baseline.Name = b.Side.Name + " " + b.Subject
		if res.HasModes() && !res.Baseline.HasModes() {
			env.logf("datapath: the baseline %s measured no DSR, IPIP or GUE rows (its part 1 predates them): skipped on its side", b.Side.Name)
		}
	}
	return res, err
}

func buildSide(ctx context.Context, env Env, rev string) (*Baseline, error) {
	start := time.Now()
	b, err := BuildBaseline(ctx, env.Repo, rev, env.Repo, env.Go)
	if err != nil {
		return nil, err
	}
	how := "its own agent"
	if b.Copied {
		how = "this tree's agent copied in"
	}
	env.logf("datapath: %s built with %s in %.0fs", b.Side.Name, how, time.Since(start).Seconds())
	return b, nil
}

// Labs created by this process, for the leftover check.
var labs struct {
	sync.Mutex
	suffixes []string
}

func recordLab(l *lab.Lab) {
	labs.Lock()
	labs.suffixes = append(labs.suffixes, l.Suffix())
	labs.Unlock()
}

// CheckLeftovers fails if anything this process created is still there:
// lab namespaces, links, pins, processes, and the harness's own pins.
func CheckLeftovers() error {
	labs.Lock()
	defer labs.Unlock()
	errs := []error{lab.CheckLeftovers(labs.suffixes...)}
	pins, _ := filepath.Glob(fmt.Sprintf("/sys/fs/bpf/limpet-bench-*-%d", os.Getpid()))
	if len(pins) > 0 {
		errs = append(errs, fmt.Errorf("pins left behind: %s", strings.Join(pins, ", ")))
	}
	return errors.Join(errs...)
}

// cleanStalePins removes the datapaths that a harness killed before its
// cleanup (SIGKILL) left pinned: /sys/fs/bpf/limpet-bench-*-PID of a PID
// that no longer runs. Labs are lab.Clean's business (limpet lab clean).
func cleanStalePins(env Env) {
	pins, _ := filepath.Glob("/sys/fs/bpf/limpet-bench-*-*")
	for _, pin := range pins {
		// A load in progress pins into PIN-tmp-RANDOM, whose last part is
		// digits too: taking RANDOM for a dead pid removed another
		// harness's maps in the middle of its load.
		if strings.Contains(filepath.Base(pin), "-tmp-") {
			continue
		}
		i := strings.LastIndexByte(pin, '-')
		pid, err := strconv.Atoi(pin[i+1:])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue // its harness still runs
		}
		if err := loader.Detach(pin); err != nil {
			env.logf("stale pins %s: %v", pin, err)
		} else {
			env.logf("removed stale pins %s", pin)
		}
	}
}

// Machine describes where the figures come from.
type Machine struct {
	CPU, Kernel, OS, Go, Memory string
	CPUs                        int
}

func describeMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := exec.Command("uname", "-srvm").Output(); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
				m.OS = strings.Trim(v, `"`)
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				var kb float64
				fmt.Sscanf(strings.TrimSpace(v), "%f", &kb)
				m.Memory = fmt.Sprintf("%.1f GiB", kb/1024/1024)
			}
		}
	}
	return m
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
