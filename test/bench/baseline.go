package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/limpet-lb/limpet/loader"
)

// Part 1 through agents: this tree's datapath and, with a baseline commit,
// that commit's, each measured by the agent built from its own tree
// (agent.go), in alternating turns within every run.

// AgentSide is one datapath measured by part 1: an agent binary, or this
// process when Bin is empty.
type AgentSide struct {
	Name string // what the report calls it: a commit, "this tree"
	Bin  string
}

func (s AgentSide) run(ctx context.Context, o DatapathOptions, probe bool) (*AgentReport, error) {
	if s.Bin == "" {
		return RunAgent(ctx, o, probe)
	}
	args := []string{"-repeat", strconv.Itoa(o.Repeat), "-large-entries", strconv.Itoa(o.LargeEntries), "-small-clients", strconv.Itoa(o.SmallClients)}
	if probe {
		args = append(args, "-probe")
	}
	cmd := exec.CommandContext(ctx, s.Bin, args...)
	// Interrupted, the agent stops at its next check and removes its pins.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	pid := 0
	if cmd.Process != nil {
		pid = cmd.Process.Pid
	}
	leftErr := removeAgentPins(pid)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("agent of %s: %w: %s", s.Name, err, strings.TrimSpace(stderr.String())), leftErr)
	}
	if leftErr != nil {
		return nil, fmt.Errorf("agent of %s: %w", s.Name, leftErr)
	}
	var rep AgentReport
	if err := json.Unmarshal(out, &rep); err != nil {
		return nil, fmt.Errorf("agent of %s: output: %w", s.Name, err)
	}
	if rep.Protocol != AgentProtocol {
		return nil, fmt.Errorf("agent of %s speaks protocol %d, this harness %d", s.Name, rep.Protocol, AgentProtocol)
	}
	return &rep, nil
}

// removeAgentPins removes what an agent that has exited left pinned, and
// says so: an agent removes its pins itself, even when a run fails.
func removeAgentPins(pid int) error {
	if pid == 0 {
		return nil
	}
	pins, _ := filepath.Glob(fmt.Sprintf("/sys/fs/bpf/limpet-bench-*-%d", pid))
	for _, p := range pins {
		_ = loader.Detach(p)
	}
	if len(pins) > 0 {
		return fmt.Errorf("pins left behind: %s", strings.Join(pins, ", "))
	}
	return nil
}

// RunDatapathSides runs part 1 for the current side and, if baseline is
// not nil, the baseline's, in turns: current then baseline in even runs,
// baseline then current in odd ones, so that neither always runs on a
// machine the other has just warmed (or a neighbour has just loaded). The
// first run of each side also probes its programs and flow memory.
func RunDatapathSides(ctx context.Context, o DatapathOptions, current AgentSide, baseline *AgentSide) (*DatapathResult, error) {
	logf := o.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	res := &DatapathResult{Name: current.Name}
	sides := []struct {
		side AgentSide
		res  *DatapathResult
	}{{current, res}}
	if baseline != nil {
		res.Baseline = &DatapathResult{Name: baseline.Name}
		sides = append(sides, struct {
			side AgentSide
			res  *DatapathResult
		}{*baseline, res.Baseline})
	}
	for run := 0; run < o.Runs; run++ {
		for i := range sides {
			if run%2 == 1 {
				i = len(sides) - 1 - i
			}
			s := sides[i]
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			rep, err := s.side.run(ctx, o, run == 0)
			if err != nil {
				return nil, fmt.Errorf("run %d: %w", run+1, err)
			}
			s.res.add(rep)
			logf("datapath: run %d/%d of %s done", run+1, o.Runs, s.side.Name)
		}
	}
	return res, nil
}

// add appends one agent run to the result.
func (r *DatapathResult) add(rep *AgentReport) {
	if r.FloorPlain == nil {
		r.FloorPlain, r.NonVIPPlain = map[string]Series{}, map[string]Series{}
	}
	r.Repeat, r.FlowTableSize, r.PersistTableSize = rep.Repeat, rep.FlowTableSize, rep.PersistTableSize
	for fam, v := range rep.FloorPlain {
		s := r.FloorPlain[fam]
		s.Add(v)
		r.FloorPlain[fam] = s
	}
	for fam, v := range rep.NonVIPPlain {
		s := r.NonVIPPlain[fam]
		s.Add(v)
		r.NonVIPPlain[fam] = s
	}
	for _, ar := range rep.Rows {
		k := DatapathKey{Case: ar.Case, Family: ar.Family, Large: ar.Large}
		row := r.Row(k)
		if row == nil {
			row = &DatapathRow{Key: k}
			r.Rows = append(r.Rows, row)
		}
		row.Limpet.Add(ar.Limpet)
		row.Floor.Add(ar.Floor)
		row.Entries, row.Sweep = ar.Entries, ar.Sweep
	}
	if rep.Programs != nil {
		r.Programs, r.FlowMemory = rep.Programs, rep.FlowMemory
	}
}

// Row is the row of key k, or nil.
func (r *DatapathResult) Row(k DatapathKey) *DatapathRow {
	for _, row := range r.Rows {
		if row.Key == k {
			return row
		}
	}
	return nil
}

// Baseline is a baseline commit's agent, built in a scratch worktree.
type Baseline struct {
	Side    AgentSide
	Commit  string // full hash
	Subject string // its commit message's first line
	// Copied: the commit predates the agent, so this tree's agent source
	// was built against the commit's test/bench and loader.
	Copied bool
	dir    string
}

// baselineDirPrefix starts the scratch directories of BuildBaseline; the
// pid of the harness that made one follows, for cleanStaleBaselines.
const baselineDirPrefix = "limpet-bench-baseline-"

// BuildBaseline builds the agent of rev (a commit of the repository at
// repo) in a scratch worktree under a temporary directory, with its own
// go.mod, loader and committed bpf2go output. The worktree is removed
// before it returns, even on failure; Close removes the binary.
// agentSrc is this tree's root: its agent is copied into a commit that
// has none.
func BuildBaseline(ctx context.Context, repo, rev, agentSrc, gotool string) (_ *Baseline, err error) {
	commit, err := git(ctx, repo, "rev-parse", "--verify", "--quiet", rev+"^{commit}")
	if err != nil {
		return nil, fmt.Errorf("baseline %q is not a commit of %s: %w", rev, repo, err)
	}
	short, err := git(ctx, repo, "log", "-1", "--format=%h", commit)
	if err != nil {
		return nil, err
	}
	subject, err := git(ctx, repo, "log", "-1", "--format=%s", commit)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", baselineDirPrefix, os.Getpid()))
	if err != nil {
		return nil, err
	}
	b := &Baseline{Commit: commit, Subject: subject, dir: dir}
	defer func() {
		if err != nil {
			b.Close()
		}
	}()
	tree := filepath.Join(dir, "tree")
	if _, err := git(ctx, repo, "worktree", "add", "--detach", tree, commit); err != nil {
		return nil, fmt.Errorf("scratch worktree of %s: %w", rev, err)
	}
	defer func() {
		// Without ctx: an interrupted build still removes its worktree.
		if _, rerr := git(context.Background(), repo, "worktree", "remove", "--force", tree); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}()
	const agentMain = "test/bench/cmd/limpet-bench-agent/main.go"
	if _, serr := os.Stat(filepath.Join(tree, agentMain)); serr != nil {
		b.Copied = true
		// The probe's view of the world: the tree's world was a dpWorld
		// on an nsThread while test/bench had netns.go.
		world := "test/bench/agent_world.go"
		if _, err := os.Stat(filepath.Join(tree, "test/bench/netns.go")); err == nil {
			world = "test/bench/testdata/agent_world_nsthread.go"
		}
		for src, dst := range map[string]string{"test/bench/agent.go": "", agentMain: "", world: "test/bench/agent_world.go"} {
			if dst == "" {
				dst = src
			}
			if err := copyFile(filepath.Join(agentSrc, src), filepath.Join(tree, dst)); err != nil {
				return nil, fmt.Errorf("copy the agent into the scratch worktree: %w", err)
			}
		}
	}
	bin := filepath.Join(dir, "limpet-bench-agent")
	cmd := exec.CommandContext(ctx, gotool, "build", "-trimpath", "-o", bin, "./test/bench/cmd/limpet-bench-agent")
	cmd.Dir = tree
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
	// Interrupted, the go command's compilers go with it: they hold the
	// output pipe, and the worktree must not vanish under them.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		how := "its own agent"
		if b.Copied {
			how = "this tree's agent, copied in (the commit predates it; its test/bench or loader API differs from what agent.go uses)"
		}
		return nil, fmt.Errorf("build the agent of %s with %s: %w\n%s", rev, how, err, out)
	}
	b.Side = AgentSide{Name: short, Bin: bin}
	return b, nil
}

// Close removes the baseline's binary and scratch directory.
func (b *Baseline) Close() error {
	if b == nil || b.dir == "" {
		return nil
	}
	return os.RemoveAll(b.dir)
}

// cleanStaleBaselines removes the scratch directories of harnesses that
// were killed before their cleanup, and the worktrees git still lists for
// them.
func cleanStaleBaselines(env Env, repo string) {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), baselineDirPrefix+"*-*"))
	removed := false
	for _, d := range dirs {
		rest := strings.TrimPrefix(filepath.Base(d), baselineDirPrefix)
		pid, err := strconv.Atoi(rest[:max(strings.IndexByte(rest, '-'), 0)])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue
		}
		if err := os.RemoveAll(d); err != nil {
			env.logf("stale baseline %s: %v", d, err)
			continue
		}
		env.logf("removed stale baseline %s", d)
		removed = true
	}
	if removed && repo != "" {
		_, _ = git(context.Background(), repo, "worktree", "prune")
	}
}

func git(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", append([]string{"-C", dir}, args...)...)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(ee.Stderr)))
		}
		return "", fmt.Errorf("git %s: %w", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}

// TreeName names the tree at dir for the report: its commit, and whether
// it has changes beyond it.
func TreeName(ctx context.Context, dir string) string {
	s, err := git(ctx, dir, "describe", "--always", "--dirty", "--abbrev=7")
	if err != nil {
		return "this tree"
	}
	return "this tree (" + s + ")"
}
