// Command limpet-bench-agent runs part 1 of the benchmarks (the datapath's
// cost per packet) once with the datapath of the tree it was built from,
// and prints the figures as JSON (bench.AgentReport) on stdout. limpet-bench
// runs it, and the agent of a baseline commit built in a scratch worktree,
// in turns (make bench BASELINE=<commit>). It needs root.
//
// Exit status: 0 when the run passed its checks, 1 otherwise (the error on
// stderr), 2 on bad usage.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/limpet-lb/limpet/test/bench"
)

func main() {
	var o bench.DatapathOptions
	flag.IntVar(&o.Repeat, "repeat", 1<<20, "BPF_PROG_RUN repeats per measurement")
	flag.IntVar(&o.LargeEntries, "large-entries", 1<<20, "clients of the large table")
	flag.IntVar(&o.SmallClients, "small-clients", 32, "clients of the small table")
	probe := flag.Bool("probe", false, "also report the programs' sizes and the flow table's memory per connection")
	protocol := flag.Bool("protocol", false, "print the protocol version of the JSON output and exit")
	flag.Parse()
	if *protocol {
		fmt.Println(bench.AgentProtocol)
		return
	}
	if flag.NArg() > 0 || o.Repeat < 1 || o.LargeEntries < 1 || o.SmallClients < 1 {
		fmt.Fprintln(os.Stderr, "limpet-bench-agent: -repeat, -large-entries and -small-clients take positive numbers, and there are no arguments")
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "limpet-bench-agent: needs root (network namespaces, BPF)")
		os.Exit(2)
	}
	o.Log = func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	rep, err := bench.RunAgent(ctx, o, *probe)
	if err != nil {
		fmt.Fprintf(os.Stderr, "limpet-bench-agent: %v\n", err)
		os.Exit(1)
	}
	if err := json.NewEncoder(os.Stdout).Encode(rep); err != nil {
		fmt.Fprintf(os.Stderr, "limpet-bench-agent: %v\n", err)
		os.Exit(1)
	}
}
