// Command limpet-bench runs limpet's benchmarks against the peers and writes
// the markdown report (make bench; make bench-smoke). It needs root.
//
// Exit status: 0 when every part ran and passed its checks, 1 otherwise
// (the report still holds what did run), 2 on bad usage.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/limpet-lb/limpet/test/bench"
)

func main() {
	// The L7 part starts this binary again as its HTTP members.
	bench.MaybeServeMember()

	runs := flag.Int("runs", 5, "runs of every measurement (the report's medians need 5 or more)")
	smoke := flag.Bool("smoke", false, "one run of every part with tiny counts (make bench-smoke)")
	out := flag.String("out", "BENCHMARKS.md", "markdown report to write ('' for none)")
	limpetBin := flag.String("limpet", "bin/limpet", "the limpet binary")
	templates := flag.String("templates", "scripts/bench", "directory of the configuration templates")
	parts := flag.String("parts", "1,2,3,4,5,6", "parts to run: 1 datapath, 2 forwarding, 3 connection rate, 4 L7, 5 scale, 6 HA mirroring")
	command := flag.String("command", "", "command line to name in the report (default: this one)")
	quiet := flag.Bool("q", false, "do not print the report")
	gotool := flag.String("go", "go", "the go command, for go tool pprof (part 4's profiles)")
	profileDir := flag.String("l7-profile-dir", "", "keep part 4's raw pprof profiles in this directory")
	l7Baseline := flag.String("l7-baseline", "", "another limpet binary (an earlier build) to measure next to this one in part 4")
	baseline := flag.String("baseline", "", "a commit whose datapath part 1 measures in turns with this tree's (built in a scratch worktree); a file: the same as -l7-baseline")
	agent := flag.String("agent", "", "this tree's limpet-bench-agent, which part 1 runs (default: part 1 in this process)")
	current := flag.String("current", "", "a commit part 1 measures instead of this tree, built as -baseline is (a change against its parent: -current C -baseline C^)")
	repo := flag.String("repo", ".", "the git repository of -baseline and -current")
	l7Profile := flag.Duration("l7-profile", -1, "length of part 4's profiles of limpet l7 (0: none; default: the report's)")
	flag.Parse()

	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "limpet-bench: needs root (network namespaces, XDP, bpffs)")
		os.Exit(2)
	}
	o := bench.ReportOptions(*runs)
	if *smoke {
		o = bench.SmokeOptions()
	}
	o.L7.GoTool, o.L7.ProfileDir, o.L7.Baseline = *gotool, *profileDir, *l7Baseline
	// make bench BASELINE=x: an earlier limpet binary is part 4's
	// baseline, as it always was; anything else names a commit.
	if *baseline != "" {
		if st, err := os.Stat(*baseline); err == nil && st.Mode().IsRegular() {
			o.L7.Baseline = *baseline
		} else {
			o.Baseline = *baseline
		}
	}
	o.Current = *current
	if *l7Profile >= 0 {
		o.L7.Profile = *l7Profile
	}
	o.Parts = map[int]bool{}
	for _, s := range strings.Split(*parts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 6 {
			fmt.Fprintf(os.Stderr, "limpet-bench: -parts %q: want numbers 1 to 6\n", *parts)
			os.Exit(2)
		}
		o.Parts[n] = true
	}
	if *command == "" {
		*command = strings.Join(os.Args, " ")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	start := time.Now()
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "[%5.0fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	env := bench.Env{LimpetBin: *limpetBin, Templates: *templates, AgentBin: *agent, Repo: *repo, Go: *gotool, Log: logf}
	res, err := bench.Run(ctx, env, o)
	if res != nil {
		res.Smoke = *smoke
		res.Command = *command
		var b bytes.Buffer
		bench.WriteReport(&b, res)
		if !*quiet {
			os.Stdout.Write(b.Bytes())
		}
		if *out != "" {
			if werr := os.WriteFile(*out, b.Bytes(), 0o644); werr != nil {
				fmt.Fprintf(os.Stderr, "limpet-bench: %v\n", werr)
				os.Exit(1)
			}
			logf("report written to %s", *out)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "limpet-bench: %v\n", err)
		os.Exit(1)
	}
	logf("done in %s", time.Since(start).Round(time.Second))
}
