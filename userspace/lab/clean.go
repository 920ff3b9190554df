package lab

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// A run directory holds:
//
//	owner  "PID STARTTIME" of the process that built the lab
//	pids   one "PID STARTTIME HOST PATH" line per started process
//
// STARTTIME (field 22 of /proc/PID/stat) guards against pid reuse.

var suffixRE = regexp.MustCompile(`^[0-9a-f]{6}$`)

// suffixOf extracts the run suffix from a lab name ("lmp-lb-3fa9c1",
// "lmpb0c-3fa9c1", "limpet-lab-3fa9c1", "3fa9c1"); "" if it has none.
func suffixOf(name string) string {
	i := strings.LastIndexByte(name, '-')
	s := name[i+1:]
	if suffixRE.MatchString(s) {
		return s
	}
	return ""
}

// procStart returns the start time of pid, and false if pid does not exist
// or is a zombie.
func procStart(pid int) (uint64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state), so field 22 (starttime) is f[19].
	if len(f) < 20 || f[0] == "Z" || f[0] == "X" {
		return 0, false
	}
	st, err := strconv.ParseUint(f[19], 10, 64)
	return st, err == nil
}

func alive(pid int, start uint64) bool {
	st, ok := procStart(pid)
	return ok && st == start
}

func writeOwner(runDir string) error {
	pid := os.Getpid()
	st, _ := procStart(pid)
	return os.WriteFile(filepath.Join(runDir, "owner"), fmt.Appendf(nil, "%d %d\n", pid, st), 0o644)
}

func recordPid(runDir string, pid int, hostName, path string) error {
	st, ok := procStart(pid)
	if !ok {
		return nil // already gone
	}
	f, err := os.OpenFile(filepath.Join(runDir, "pids"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("lab: pidfile: %w", err)
	}
	_, err = fmt.Fprintf(f, "%d %d %s %s\n", pid, st, hostName, path)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

type pidEntry struct {
	pid   int
	start uint64
	desc  string
}

func readPids(runDir, name string) []pidEntry {
	f, err := os.Open(filepath.Join(runDir, name))
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []pidEntry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 2 {
			continue
		}
		pid, err1 := strconv.Atoi(fs[0])
		st, err2 := strconv.ParseUint(fs[1], 10, 64)
		if err1 != nil || err2 != nil || pid <= 1 {
			continue
		}
		out = append(out, pidEntry{pid, st, strings.Join(fs[2:], " ")})
	}
	return out
}

// ownerAlive reports whether the process that built run sfx still runs. A
// run directory that has no owner file yet but was made in the last 10
// seconds counts as alive: New is filling it in.
func ownerAlive(sfx string) bool {
	dir := filepath.Join(RunDir, sfx)
	for _, e := range readPids(dir, "owner") {
		if alive(e.pid, e.start) {
			return true
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "owner")); errors.Is(err, os.ErrNotExist) {
		if st, err := os.Stat(dir); err == nil && time.Since(st.ModTime()) < 10*time.Second {
			return true
		}
	}
	return false
}

// runObjects is everything found on the system that belongs to one run.
type runObjects struct {
	netns []string // names under /run/netns
	links []string // links in the caller's namespace
	pins  []string // /sys/fs/bpf/limpet-lab-* paths
	dir   string   // /run/limpet-lab/<sfx>, if present
	procs []pidEntry
}

// scan finds the objects of every run (or only of run only, if not "").
func scan(only string) (map[string]*runObjects, error) {
	runs := map[string]*runObjects{}
	get := func(sfx string) *runObjects {
		if only != "" && sfx != only {
			return nil
		}
		r := runs[sfx]
		if r == nil {
			r = &runObjects{}
			runs[sfx] = r
		}
		return r
	}
	var errs []error
	if ents, err := os.ReadDir(NetnsDir); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), NSPrefix) {
				if r := get(suffixOf(e.Name())); r != nil {
					r.netns = append(r.netns, e.Name())
				}
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	if links, err := netlink.LinkList(); err == nil {
		for _, lk := range links {
			n := lk.Attrs().Name
			if strings.HasPrefix(n, LinkPrefix) && suffixOf(n) != "" {
				if r := get(suffixOf(n)); r != nil {
					r.links = append(r.links, n)
				}
			}
		}
	} else {
		errs = append(errs, err)
	}
	if pins, err := filepath.Glob(PinPrefix + "*"); err == nil {
		for _, p := range pins {
			if r := get(suffixOf(strings.SplitN(strings.TrimPrefix(p, PinPrefix), "-", 2)[0])); r != nil { // limpet's "<pin>-tmp-N" belongs to its run
				r.pins = append(r.pins, p)
			}
		}
	}
	if ents, err := os.ReadDir(RunDir); err == nil {
		for _, e := range ents {
			if r := get(suffixOf(e.Name())); r != nil {
				r.dir = filepath.Join(RunDir, e.Name())
				for _, p := range readPids(r.dir, "pids") {
					if alive(p.pid, p.start) {
						r.procs = append(r.procs, p)
					}
				}
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	// Objects whose names carry no valid suffix are still ours (the prefix
	// says so); they are filed under "" and cleaned as orphans.
	return runs, errors.Join(errs...)
}

// procsInNetns lists the processes (other than this one) whose network
// namespace is one of the named lab namespaces.
func procsInNetns(names []string) []pidEntry {
	type key struct{ dev, ino uint64 }
	want := map[key]string{}
	for _, n := range names {
		var st unix.Stat_t
		if unix.Stat(filepath.Join(NetnsDir, n), &st) == nil {
			want[key{st.Dev, st.Ino}] = n
		}
	}
	if len(want) == 0 {
		return nil
	}
	ents, _ := os.ReadDir("/proc")
	var out []pidEntry
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self || pid <= 1 {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st) != nil {
			continue
		}
		if n, ok := want[key{st.Dev, st.Ino}]; ok {
			if start, ok := procStart(pid); ok {
				out = append(out, pidEntry{pid, start, "in netns " + n})
			}
		}
	}
	return out
}

// killAll sends SIGTERM to every live entry, waits up to 2s, then SIGKILLs
// what is left.
func killAll(ps []pidEntry) error {
	live := func() []pidEntry {
		var out []pidEntry
		for _, p := range ps {
			if alive(p.pid, p.start) {
				out = append(out, p)
			}
		}
		return out
	}
	for _, p := range live() {
		_ = syscall.Kill(p.pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(2 * time.Second)
	for len(live()) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	for _, p := range live() {
		_ = syscall.Kill(p.pid, syscall.SIGKILL)
	}
	deadline = time.Now().Add(3 * time.Second)
	for len(live()) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if l := live(); len(l) > 0 {
		return fmt.Errorf("lab: could not kill pid %d (%s)", l[0].pid, l[0].desc)
	}
	return nil
}

// Clean removes what lab runs left behind: processes they started (and any
// other process inside their namespaces), namespaces, stray links, bpffs
// pins and run directories. Runs whose owner process is still alive (a
// running test or demo) are left alone; see ForceClean. This backs
// `limpet lab clean`.
func Clean() error { return clean(false, "") }

// ForceClean is Clean including runs whose owner is still alive.
func ForceClean() error { return clean(true, "") }

func clean(force bool, only string) error {
	runs, err := scan(only)
	errs := []error{err}
	for sfx, r := range runs {
		if !force && sfx != "" && ownerAlive(sfx) {
			continue
		}
		procs := append(append([]pidEntry(nil), r.procs...), procsInNetns(r.netns)...)
		if err := killAll(procs); err != nil {
			errs = append(errs, err)
		}
		for _, n := range r.links {
			if lk, err := netlink.LinkByName(n); err == nil {
				if err := netlink.LinkDel(lk); err != nil {
					errs = append(errs, fmt.Errorf("lab: delete link %s: %w", n, err))
				}
			}
		}
		for _, n := range r.netns {
			if err := deleteNamedNS(n); err != nil {
				errs = append(errs, err)
			}
		}
		for _, p := range r.pins {
			if err := os.RemoveAll(p); err != nil {
				errs = append(errs, err)
			}
		}
		if r.dir != "" {
			if err := os.RemoveAll(r.dir); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func describe(runs map[string]*runObjects) []string {
	var out []string
	for _, r := range runs {
		for _, n := range r.netns {
			out = append(out, "netns "+filepath.Join(NetnsDir, n))
		}
		for _, n := range r.links {
			out = append(out, "link "+n)
		}
		for _, p := range r.pins {
			out = append(out, "pin "+p)
		}
		for _, p := range r.procs {
			out = append(out, fmt.Sprintf("process %d (%s)", p.pid, p.desc))
		}
		for _, p := range procsInNetns(r.netns) {
			out = append(out, fmt.Sprintf("process %d (%s)", p.pid, p.desc))
		}
		if r.dir != "" {
			out = append(out, "dir "+r.dir)
		}
	}
	sort.Strings(out)
	return out
}

// Leftovers lists every lab object present on the system: namespaces named
// NSPrefix*, links named LinkPrefix*-SUFFIX in the caller's namespace, pins
// under PinPrefix*, live recorded processes, and run directories (including
// those of labs that are still open).
func Leftovers() ([]string, error) {
	runs, err := scan("")
	return describe(runs), err
}

// LeftoversOf is Leftovers restricted to one run (Lab.Suffix), for tests
// that run in parallel with other labs.
func LeftoversOf(suffix string) ([]string, error) {
	if suffix == "" {
		return nil, errors.New("lab: empty suffix")
	}
	runs, err := scan(suffix)
	return describe(runs), err
}

// CheckLeftovers is LeftoversOf over several runs: one error that names what
// each of them left behind, nil when none left anything.
func CheckLeftovers(suffixes ...string) error {
	var errs []error
	for _, sfx := range suffixes {
		left, err := LeftoversOf(sfx)
		if err != nil {
			errs = append(errs, fmt.Errorf("lab %s: leftovers: %w", sfx, err))
		}
		if len(left) > 0 {
			errs = append(errs, fmt.Errorf("lab %s left behind: %s", sfx, strings.Join(left, ", ")))
		}
	}
	return errors.Join(errs...)
}
