package bench

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/limpet-lb/limpet/loader"
)

// WriteReport writes the markdown report.
func WriteReport(w io.Writer, r *Results) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	o := r.Opts
	p("# limpet benchmarks\n\n")
	if r.Smoke {
		p("> **Smoke run** (`make bench-smoke`): one run of each part with tiny counts, to keep the harness working. The figures below mean nothing; `make bench` makes the real report.\n\n")
	}
	runs := fmt.Sprintf("median of %d runs, with the minimum and maximum in brackets", o.Runs)
	if o.Runs == 1 {
		runs = "result of one run"
	}
	p("Made by `%s` on %s, in %s. Every figure is the **%s**. Every comparison is a **ratio taken within each run** (run *i* of A divided by run *i* of B), then summarised the same way, so a slow moment of the machine hits both sides of a ratio.\n\n",
		r.Command, r.Started.UTC().Format("2006-01-02 15:04 UTC"), r.Finished.Sub(r.Started).Round(time.Second), runs)

	p("## Machine\n\n")
	m := r.Machine
	p("| | |\n|---|---|\n")
	p("| CPU | %s, %d vCPUs |\n| memory | %s |\n| kernel | %s |\n| OS | %s |\n| Go | %s |\n", m.CPU, m.CPUs, m.Memory, m.Kernel, m.OS, m.Go)
	if r.L7 != nil {
		for _, k := range []string{"haproxy", "caddy", "nft", "wrk"} {
			p("| %s | %s |\n", k, r.L7.Versions[k])
		}
	}
	p("| load average (1, 5, 15 min) | %s before, %s after |\n\n", r.LoadBefore, r.LoadAfter)
	p("The machine is **shared and noisy**: two vCPUs of a virtual machine on which other engineers run their test suites (builds, network-namespace labs, BPF tests) while the benchmark runs; the load average above shows how busy it was. Absolute figures are therefore low and their ranges wide; the ratios, taken within a run, are the figures to read. Differences of less than about 20%% between two medians are within the noise.\n\n")

	writeErrors(w, r)
	writeDatapath(w, r)
	writeForward(w, r)
	writeConn(w, r)
	writeL7(w, r)
	writeScale(w, r)
	writeMirror(w, r)

	p("## Reproducing\n\n")
	p("```sh\nsudo make bench        # about 20 minutes; installs haproxy, caddy, nftables and wrk when missing\nsudo make bench BASELINE=f5a5b22  # part 1 also measures that commit's datapath, in turns with this tree's\nsudo make bench-l7     # part 4 alone, with its profiles: bin/BENCHMARKS-l7.md (RUNS=n; BASELINE=path adds another limpet build)\nsudo make bench-smoke  # under 90 s: every part once with tiny counts, HEAD as part 1's baseline\n```\n\n")
	p("The harness is `test/bench` (Go); `cmd/limpet-bench` runs it, writes this file and prints it. The configurations of limpet, nftables, HAProxy and Caddy are templates in `scripts/bench/`. Single parts run as Go benchmarks too: `sudo go test -run '^$' -bench Datapath ./test/bench` (also `Forward`, `ConnRate`, `L7`, `Scale`). The BPF programs the harness needs besides the datapath (floor, driver, generator, redirect, counter) are in `bpf/floor.c`, loaded through `loader/floor.go`.\n")
}

func writeErrors(w io.Writer, r *Results) {
	if len(r.Errors) == 0 {
		return
	}
	fmt.Fprintf(w, "## Failures\n\n")
	var ps []int
	for p := range r.Errors {
		ps = append(ps, p)
	}
	sort.Ints(ps)
	for _, p := range ps {
		name := "harness"
		if p > 0 {
			name = fmt.Sprintf("part %d", p)
		}
		fmt.Fprintf(w, "- %s: `%s`\n", name, strings.ReplaceAll(r.Errors[p].Error(), "\n", " "))
	}
	fmt.Fprintln(w)
}

func writeDatapath(w io.Writer, r *Results) {
	d := r.Datapath
	if d == nil {
		return
	}
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("## 1. Datapath cost per packet (BPF_PROG_RUN)\n\n")
	p("Each figure is the kernel's own mean time per run of one BPF_PROG_RUN with %d repeats (whole nanoseconds, as the kernel reports them). The packet arrives on the balancer's client-facing veth (replies on the member-facing one) of a private namespace with static neighbours, so `bpf_fib_lookup` resolves; forwarded packets end in XDP_REDIRECT, after NAT, TTL decrement and checksum updates, exactly as on a NIC.\n\n", d.Repeat)
	p("BPF_PROG_RUN reuses one buffer for every repeat, and the datapath rewrites it (NAT changes the destination), so repeating a packet naively would measure one forwarded packet and then non-VIP passes. Every row therefore goes through `floor_drive` (`bpf/floor.c`), which writes the template packet back, varies the client address and port as the row needs, and tail-calls the program under test. The **floor** is `floor_tx` — limpet's own Ethernet/VLAN/IP/L4 parser, then XDP_TX — run through the same driver on the same packets, so *limpet − floor* is what the datapath adds to parsing (the driver's cost cancels out).\n\n")
	p("- *small table*: the persisted clients are %d; *1M table*: %d persisted clients (a persistence table holding %s entries), and the flow-hit and reverse rows cycle through one flow of each client, so their lookups miss the CPU caches as they would with a million active clients. Tables are created empty for every run and family (flow table %s entries, persistence table %s slots, so no LRU eviction happens during a run).\n",
		d.Rows[0].Entries, largeEntries(d), fmtNum(float64(largeEntries(d)), 0), fmtNum(float64(d.FlowTableSize), 0), fmtNum(float64(d.PersistTableSize), 0))
	p("- *non-VIP pass*: a SYN to an address limpet does not serve; XDP_PASS. *flow-table hit*: an ACK of an open connection. *persistence hit, new flow*: a SYN of a new connection from a persisted client (persistence lookup, member check, two flow inserts). *new client*: a SYN from a client never seen (pool choice, entry insert, two flow inserts). *reverse NAT*: the member's ACK back to the client, rewritten to come from the VIP.\n")
	p("- The next hop comes from the daemon's next-hop cache (resolved from the namespace's neighbours, as `limpet run` keeps it), a reply's from the hop its flow stored at its first reply; the *FIB lookup* rows turn the cache off, so every packet asks `bpf_fib_lookup`, as before the cache.\n")
	p("- Every run checks limpet's verdict and counters (hits, misses, new flows, rewritten replies) against the number of packets.\n\n")
	p("| path | family | table | limpet ns/packet | floor ns/packet | limpet ÷ floor | limpet − floor (ns) | packets |\n")
	p("|---|---|---|---:|---:|---:|---:|---|\n")
	for _, large := range []bool{false, true} {
		for _, fam := range []string{"IPv4", "IPv6"} {
			for _, c := range DatapathCases {
				for _, row := range d.Rows {
					if row.Key != (DatapathKey{c, fam, large}) || len(row.Limpet) == 0 {
						continue
					}
					table := "small"
					if large {
						table = "1M"
					}
					p("| %s | %s | %s | %s | %s | %s | %s | %s |\n", c, fam, table, row.Limpet.Format(0), row.Floor.Format(0),
						Ratios(row.Limpet, row.Floor).FormatRatio(), Diffs(row.Limpet, row.Floor).Format(0), row.Sweep)
				}
			}
		}
	}
	p("\nWithout the driver (plain repeated BPF_PROG_RUN, possible because these packets are not rewritten): floor_tx %s ns (IPv4), %s ns (IPv6); limpet's non-VIP pass %s ns (IPv4), %s ns (IPv6). The difference to the driven rows is the driver's template copy and tail call.\n\n",
		d.FloorPlain["IPv4"].Format(0), d.FloorPlain["IPv6"].Format(0), d.NonVIPPlain["IPv4"].Format(0), d.NonVIPPlain["IPv6"].Format(0))
	writeDatapathModes(w, d)
	writeDatapathBaseline(w, d)
	writeDatapathSizes(w, d)
}

// EncapTarget is issue 17's: encapsulated DSR costs at most this many times
// plain DSR per packet.
const EncapTarget = 1.3

// encapForm names the encapsulation of a family's row: the client's and
// the member's family are the same in part 1.
func encapForm(m DatapathMode, fam string) string {
	if m.Encap == loader.EncapNone {
		return "MAC rewrite"
	}
	if fam == "IPv6" {
		return "6in6"
	}
	return "4in4"
}

// HasModes says whether part 1 measured DatapathModes: a baseline commit
// whose part 1 predates them has none of their rows.
func (r *DatapathResult) HasModes() bool {
	for _, m := range DatapathModes {
		for _, fam := range []string{"IPv4", "IPv6"} {
			if row := r.Row(DatapathKey{m.Hit, fam, false}); row != nil && len(row.Limpet) > 0 {
				return true
			}
		}
	}
	return false
}

// writeDatapathModes is part 1's DSR, IPIP and GUE rows, each against
// plain DSR's same case in the same run.
func writeDatapathModes(w io.Writer, d *DatapathResult) {
	if !d.HasModes() {
		return
	}
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("### Forwarding modes: DSR, IPIP and GUE\n\n")
	p("A virtual server of each mode on the same VIP as the NAT rows (ports 81, 82 and 83), with the same persistence and pool choice; the encapsulations' outer source is the balancer's member-side address, GUE's port %d. The three modes run on one fresh datapath per run and family (small world), DSR first: *new client* is a SYN from a client never seen on every packet (pool choice, persistence insert, one flow insert: DSR and the encapsulations keep no reverse flow), *flow-table hit* an ACK of the first of those connections. The family is the client's and the member's, so IPv4 is 4in4 and IPv6 6in6. Encapsulation grows the head with `bpf_xdp_adjust_head`; BPF_PROG_RUN keeps the moved start from one repeat to the next, so `floor_drive` moves it back first (one more `bpf_xdp_adjust_head`, which these rows pay and their floor does not). *÷ DSR* divides by plain DSR's same case and family in the same run; the target is at most %.1f× for the encapsulations.\n\n", loader.DefaultGUEPort, EncapTarget)
	p("| mode | form | case | family | limpet ns/packet | floor ns/packet | limpet ÷ floor | ÷ DSR | (limpet − floor) ÷ DSR's |\n")
	p("|---|---|---|---|---:|---:|---:|---:|---:|\n")
	dsr := DatapathModes[0]
	var worst float64
	for _, fam := range []string{"IPv4", "IPv6"} {
		for _, m := range DatapathModes {
			for _, pair := range [][2]DatapathCase{{m.Hit, dsr.Hit}, {m.New, dsr.New}} {
				row, ref := d.Row(DatapathKey{pair[0], fam, false}), d.Row(DatapathKey{pair[1], fam, false})
				if row == nil || len(row.Limpet) == 0 || ref == nil {
					continue
				}
				r := Ratios(row.Limpet, ref.Limpet)
				if m.Encap != loader.EncapNone && r.Median() > worst {
					worst = r.Median()
				}
				caseName := "flow-table hit"
				if pair[0] == m.New {
					caseName = "new client"
				}
				p("| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", m.Name, encapForm(m, fam), caseName, fam, row.Limpet.Format(0), row.Floor.Format(0),
					Ratios(row.Limpet, row.Floor).FormatRatio(), r.FormatRatio(), Ratios(Diffs(row.Limpet, row.Floor), Diffs(ref.Limpet, ref.Floor)).FormatRatio())
			}
		}
	}
	verdict := "met"
	if worst > EncapTarget {
		verdict = "**missed**"
	}
	p("\nEncapsulated ÷ plain DSR, worst median of the rows above: %.2f× against the target of at most %.1f×: %s.\n\n", worst, EncapTarget, verdict)
}

// writeDatapathBaseline is the before and after of part 1: the baseline
// commit's datapath and this tree's, measured in turns in the same runs.
func writeDatapathBaseline(w io.Writer, d *DatapathResult) {
	b := d.Baseline
	if b == nil {
		return
	}
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("### Before and after: %s against the baseline\n\n", d.Name)
	p("The **baseline** is commit `%s`, checked out in a scratch worktree and built there with its own `go.mod`, loader and committed bpf2go output; its datapath is measured by its own part 1 (`limpet-bench-agent`, a process per run and side), in turns with this tree's in every run: this tree first in odd runs, the baseline first in even ones. Each side's floor is its own tree's `floor_tx` through its own driver; *÷ floor* is taken within a side and run, *this ÷ baseline* between the two sides of one run.\n\n", b.Name)
	if d.HasModes() && !b.HasModes() {
		p("The baseline `%s` has no DSR, IPIP or GUE rows (its part 1 predates them, or its datapath has no encapsulation): those rows are skipped on its side, and measured for this tree only (above).\n\n", b.Name)
	}
	p("| path | family | table | baseline ns/packet | this ns/packet | baseline ÷ floor | this ÷ floor | this ÷ baseline |\n")
	p("|---|---|---|---:|---:|---:|---:|---:|\n")
	cases := DatapathCases
	if b.HasModes() {
		for _, m := range DatapathModes {
			cases = append(cases[:len(cases):len(cases)], m.Hit, m.New)
		}
	}
	for _, large := range []bool{false, true} {
		for _, fam := range []string{"IPv4", "IPv6"} {
			for _, c := range cases {
				k := DatapathKey{c, fam, large}
				cur, base := d.Row(k), b.Row(k)
				if cur == nil && base == nil {
					continue
				}
				var cs, bs DatapathRow
				if cur != nil {
					cs = *cur
				}
				if base != nil {
					bs = *base
				}
				p("| %s | %s | %s | %s | %s | %s | %s | %s |\n", c, fam, tableName(large), bs.Limpet.Format(0), cs.Limpet.Format(0),
					Ratios(bs.Limpet, bs.Floor).FormatRatio(), Ratios(cs.Limpet, cs.Floor).FormatRatio(), Ratios(cs.Limpet, bs.Limpet).FormatRatio())
			}
		}
	}
	p("\n")
	// The targets of issue 11: the hit paths against the floor, the
	// new-flow paths and the large table against the baseline.
	type target struct {
		what  string
		k     DatapathKey
		floor bool
		goal  string
	}
	targets := []target{
		{"flow-table hit ÷ floor", DatapathKey{CaseFlowHit, "IPv4", false}, true, "≤ 4×"},
		{"flow-table hit, IPv6 ÷ floor", DatapathKey{CaseFlowHit, "IPv6", false}, true, "≤ 5×"},
		{"reverse NAT ÷ floor", DatapathKey{CaseReverse, "IPv4", false}, true, "≤ 5×"},
		{"persistence hit, new flow ÷ baseline", DatapathKey{CasePersistHit, "IPv4", false}, false, "≤ 0.45×"},
		{"new client ÷ baseline", DatapathKey{CaseNewClient, "IPv4", false}, false, "≤ 0.5×"},
		{"flow-table hit, 1M flows ÷ baseline", DatapathKey{CaseFlowHit, "IPv4", true}, false, "≤ 0.5×"},
	}
	p("Against the datapath targets (IPv4 and the small table unless named; the baseline is the datapath the targets were set against only when it is f5a5b22):\n\n")
	p("| path | baseline | this tree | target |\n|---|---:|---:|---:|\n")
	for _, t := range targets {
		cur, base := d.Row(t.k), b.Row(t.k)
		if cur == nil || base == nil {
			continue
		}
		if t.floor {
			p("| %s | %s | %s | %s |\n", t.what, Ratios(base.Limpet, base.Floor).FormatRatio(), Ratios(cur.Limpet, cur.Floor).FormatRatio(), t.goal)
		} else {
			p("| %s | 1.00× | %s | %s |\n", t.what, Ratios(cur.Limpet, base.Limpet).FormatRatio(), t.goal)
		}
	}
	if cm, bm := natConnMemory(d.FlowMemory, "IPv4"), natConnMemory(b.FlowMemory, "IPv4"); cm > 0 && bm > 0 {
		p("| memory per NAT connection in the flow table (kernel's, IPv4) | %.0f B | %.0f B | ≤ 128 B |\n", bm, cm)
	}
	p("\n")
}

// natConnMemory is the kernel's memory of one connection of fam over every
// flow map.
func natConnMemory(mem []FlowMemory, fam string) float64 {
	var sum float64
	for _, m := range mem {
		if m.Family == fam {
			sum += m.MemlockPerConn()
		}
	}
	return sum
}

func tableName(large bool) string {
	if large {
		return "1M"
	}
	return "small"
}

// writeDatapathSizes lists the programs part 1 ran and the flow table's
// memory per NAT connection, for this tree and the baseline.
func writeDatapathSizes(w io.Writer, d *DatapathResult) {
	if d.Programs == nil {
		return
	}
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	sides := []*DatapathResult{d}
	if d.Baseline != nil && d.Baseline.Programs != nil {
		sides = append(sides, d.Baseline)
	}
	p("### Programs and flow memory\n\n")
	p("The programs each side's agent held while it probed its datapath: the datapath's (those reached only through its prog arrays too) and the floor's two that part 1 runs. Sizes are `bpftool prog show`'s (*xlated* and *jited* bytes); *verified* is the instructions the verifier processed (`verified_insns`, from the program's fdinfo).\n\n")
	p("| program | type |")
	for _, s := range sides {
		p(" %s: xlated / jited bytes | verified |", sideName(d, s))
	}
	if len(sides) == 2 {
		p(" xlated, this ÷ baseline |")
	}
	p("\n|---|---|")
	for range sides {
		p("---:|---:|")
	}
	if len(sides) == 2 {
		p("---:|")
	}
	p("\n")
	var names []string
	for _, s := range sides {
		for _, prog := range s.Programs {
			if partOneProgram(prog.Name) && !slices.Contains(names, prog.Name) {
				names = append(names, prog.Name)
			}
		}
	}
	sort.Strings(names)
	for _, n := range names {
		var typ string
		var xl []int
		cells := ""
		for _, s := range sides {
			pr, ok := findProgram(s.Programs, n)
			if !ok {
				cells += " absent | |"
				xl = append(xl, 0)
				continue
			}
			typ = pr.Type
			cells += fmt.Sprintf(" %s / %s | %s |", fmtNum(float64(pr.XlatedBytes), 0), fmtNum(float64(pr.JitedBytes), 0), fmtNum(float64(pr.VerifiedInsns), 0))
			xl = append(xl, pr.XlatedBytes)
		}
		p("| %s | %s |%s", n, typ, cells)
		if len(sides) == 2 {
			if xl[0] > 0 && xl[1] > 0 {
				p(" %.2f× |", float64(xl[0])/float64(xl[1]))
			} else {
				p(" |")
			}
		}
		p("\n")
	}
	p("\nMemory per NAT connection in the flow table: the probe opens %d new NAT connections per family (a SYN from a new client each, through the driver) on a fresh datapath and counts the entries they added to every flow map (`bpftool map dump`). *key + value* is the map's sizes; *kernel* is the map's memlock (what the kernel allocated, per-element overhead included, for every preallocated slot) divided by its slots.\n\n", probeConnections)
	p("| datapath | map (type) | family | key + value bytes | entries per connection | key + value per connection | kernel bytes per slot | kernel bytes per connection |\n")
	p("|---|---|---|---:|---:|---:|---:|---:|\n")
	for _, s := range sides {
		for _, m := range s.FlowMemory {
			p("| %s | %s (%s) | %s | %d + %d | %.2f | %.0f B | %.0f B | %.0f B |\n", sideName(d, s), m.Map, m.Type, m.Family, m.KeyBytes, m.ValueBytes,
				m.EntriesPerConn(), m.BytesPerConn(), float64(m.MemlockBytes)/float64(max(m.MaxEntries, 1)), m.MemlockPerConn())
		}
	}
	p("\n")
}

func sideName(d, s *DatapathResult) string {
	if s == d {
		return "this tree"
	}
	return "baseline"
}

// partOneProgram: the floor's generator, counter and redirect serve part 2.
func partOneProgram(name string) bool {
	return !strings.HasPrefix(name, "floor_") || name == "floor_tx" || name == "floor_drive"
}

func findProgram(ps []ProgramSize, name string) (ProgramSize, bool) {
	for _, pr := range ps {
		if pr.Name == name {
			return pr, true
		}
	}
	return ProgramSize{}, false
}

func largeEntries(d *DatapathResult) int {
	for _, row := range d.Rows {
		if row.Key.Large {
			return row.Entries
		}
	}
	return 0
}

func writeForward(w io.Writer, r *Results) {
	f := r.Forward
	if f == nil {
		return
	}
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("## 2. End-to-end forwarding rate (namespace lab)\n\n")
	p("Client, balancer and three members are network namespaces joined by veth pairs (`userspace/lab`). The client generates with BPF_PROG_RUN and `BPF_F_TEST_XDP_LIVE_FRAMES` (`floor_gen`): %s frames per measurement, each XDP_TX'd out of the client's veth from the next of **%s source addresses** (198.19.0.1 upwards, one flow per source and protocol), 64-byte UDP datagrams or TCP SYNs. The members count what arrives with a minimal XDP program (`floor_count`, then XDP_DROP). *Mpps* is packets counted at the members divided by the generator's wall time.\n\n",
		fmtNum(float64(f.Frames), 0), fmtNum(float64(f.Sources), 0))
	p("- **floor**: `floor_redirect` on the balancer's veth, native XDP: rewrite the MACs, `bpf_redirect` to the members in turn.\n")
	p("- **limpet**: the real `limpet run` (native XDP on every balancer veth), source-IP persistence on; NAT, DSR, IPIP and GUE virtual servers (the encapsulations IPv4 in IPv4 from the balancer's address; the members count the tunnelled packets at their XDP, before any decapsulation, as they count the others). Started afresh for each run, with `gc_interval: 60` so that no sweep runs during a measurement; the last row is the default `gc_interval: 1`.\n")
	p("- **nftables**: no XDP on the balancer; the kernel stack with conntrack, DNAT, `numgen random` over the members and one dynamic set per member keyed by client address with a 300 s timeout, chained as kube-proxy's nftables mode does for `sessionAffinity: ClientIP` (`scripts/bench/nftables.nft.tmpl`). Conntrack is flushed before each run.\n")
	p("- Before each measurement every source sends one packet per protocol, so the figures are for established flows and existing persistence (or conntrack) entries. New connections are parts 1 and 3.\n")
	p("- The veth pairs live in one kernel: the generator, the balancer's NAPI and the members' NAPI run one after another, mostly on the generator's CPU. A figure is the rate of the whole chain on one core, generator included; that is why the floor is measured on the same chain, and the ratios are the result.\n\n")
	p("| path | UDP Mpps | TCP SYN Mpps | UDP ÷ floor | TCP ÷ floor |\n|---|---:|---:|---:|---:|\n")
	floorU, floorT := f.Row(PathFloor, "UDP"), f.Row(PathFloor, "TCP SYN")
	for _, path := range ForwardPaths {
		u, t := f.Row(path, "UDP"), f.Row(path, "TCP SYN")
		if u == nil || len(u.Delivered) == 0 {
			continue
		}
		p("| %s | %s | %s | %s | %s |\n", path, u.Delivered.Format(3), t.Delivered.Format(3),
			Ratios(u.Delivered, floorU.Delivered).FormatRatio(), Ratios(t.Delivered, floorT.Delivered).FormatRatio())
	}
	nftU, nftT := f.Row(PathNft, "UDP"), f.Row(PathNft, "TCP SYN")
	p("\n| comparison | UDP | TCP SYN |\n|---|---:|---:|\n")
	for _, path := range []string{PathLimpetNAT, PathLimpetDSR, PathLimpetIPIP, PathLimpetGUE, PathLimpetGC1} {
		u, t := f.Row(path, "UDP"), f.Row(path, "TCP SYN")
		if u == nil || len(u.Delivered) == 0 || nftU == nil || len(nftU.Delivered) == 0 {
			continue
		}
		p("| %s ÷ nftables | %s | %s |\n", path, Ratios(u.Delivered, nftU.Delivered).FormatRatio(), Ratios(t.Delivered, nftT.Delivered).FormatRatio())
	}
	dsrU, dsrT := f.Row(PathLimpetDSR, "UDP"), f.Row(PathLimpetDSR, "TCP SYN")
	for _, path := range []string{PathLimpetIPIP, PathLimpetGUE} {
		u, t := f.Row(path, "UDP"), f.Row(path, "TCP SYN")
		if u == nil || len(u.Delivered) == 0 || dsrU == nil || len(dsrU.Delivered) == 0 {
			continue
		}
		p("| %s ÷ limpet DSR | %s | %s |\n", path, Ratios(u.Delivered, dsrU.Delivered).FormatRatio(), Ratios(t.Delivered, dsrT.Delivered).FormatRatio())
	}
	gc1, nat := f.Row(PathLimpetGC1, "UDP"), f.Row(PathLimpetNAT, "UDP")
	if gc1 != nil && len(gc1.Delivered) > 0 {
		p("| limpet NAT, 1 s sweep ÷ no sweep (UDP) | %s | |\n", Ratios(gc1.Delivered, nat.Delivered).FormatRatio())
	}
	writeForwardTargets(w, f)
	p("\nEvery generated frame reached a member in these runs unless the two columns below differ (generated Mpps, UDP / TCP SYN): ")
	var parts []string
	for _, path := range ForwardPaths {
		u, t := f.Row(path, "UDP"), f.Row(path, "TCP SYN")
		if u == nil || len(u.Generated) == 0 {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %s / %s", path, u.Generated.Format(3), t.Generated.Format(3)))
	}
	p("%s.\n\n", strings.Join(parts, "; "))
}

func writeConn(w io.Writer, r *Results) {
	c := r.Conn
	if c == nil {
		return
	}
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("## 3. Connection rate and latency (real TCP)\n\n")
	p("%d workers in the client namespace, each on its own OS thread, open a TCP connection from one of %d client addresses, send `GET / HTTP/1.0`, read the member's whole answer and close, for %s per measurement (at most %s connections). The latency is that whole exchange. The members are the lab's Go HTTP servers. **direct** goes to the member addresses, routed by the balancer's kernel with neither limpet nor nftables loaded; **limpet** and **nftables** go to the VIP (the same configurations as part 2; each run starts limpet afresh and flushes conntrack).\n\n",
		c.Opts.Workers, c.Opts.Sources, c.Opts.Duration, fmtNum(float64(c.Opts.MaxConns), 0))
	p("| target | connections/s | p50 ms | p99 ms | rate ÷ direct | failed |\n|---|---:|---:|---:|---:|---:|\n")
	direct := c.Row(ConnDirect)
	for _, t := range ConnTargets {
		row := c.Row(t)
		if row == nil || len(row.Rate) == 0 {
			continue
		}
		failed := 0
		for _, e := range row.Errors {
			failed += e
		}
		p("| %s | %s | %s | %s | %s | %d |\n", t, row.Rate.Format(0), row.P50.Format(2), row.P99.Format(2), Ratios(row.Rate, direct.Rate).FormatRatio(), failed)
	}
	if l, n := c.Row(ConnLimpet), c.Row(ConnNft); l != nil && n != nil && len(l.Rate) > 0 && len(n.Rate) > 0 {
		p("\nlimpet ÷ nftables: connections/s %s, p50 %s, p99 %s.\n", Ratios(l.Rate, n.Rate).FormatRatio(), Ratios(l.P50, n.P50).FormatRatio(), Ratios(l.P99, n.P99).FormatRatio())
	}
	p("\nThe client, the members and the balancer share the same two vCPUs, so the rate is bound by the Go client and servers more than by either balancer; the differences between the rows are what the balancer adds per connection.\n\n")
}

func writeL7(w io.Writer, r *Results) {
	l := r.L7
	if l == nil {
		return
	}
	o := l.Opts
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("## 4. L7: cookie persistence against HAProxy and Caddy\n\n")
	p("On the loopback of a lab namespace: three members (small Go HTTP servers, GOMAXPROCS=1, pinned with wrk to CPU %s), the proxies **pinned to CPU %s with %d worker** (`limpet l7` and Caddy: GOMAXPROCS=%d; HAProxy: `nbthread %d`), `wrk -t1 -c%d -d%s --latency --timeout 10s` (pinned to CPU %s). The proxies run for the whole part, one listener per case, idle while another is measured; each listener was warmed up for a second, and the proxies are measured one after the other, in an order that rotates every run.\n\n",
		o.LoadCPUs, o.ProxyCPUs, o.Workers, o.Workers, o.Workers, o.Connections, o.Duration, o.LoadCPUs)
	p("- **limpet l7**: `type: http_cookie` (AES-256-GCM sealed cookie), round robin. **HAProxy**: `cookie SRV insert indirect nocache`, round robin. **Caddy**: `reverse_proxy` with `lb_policy cookie` (HMAC-signed cookie). Configurations in `scripts/bench/`.\n")
	p("- *plain*: HTTP, no access log. *access log on*: limpet `access_log: FILE`; HAProxy `log stdout` with a JSON `log-format` of the same fields, its stdout appended to a file. *HTTPS*: TLS 1.3 only, ECDSA P-256 certificate, session tickets on (both servers' default), ALPN h2 and http/1.1 offered (wrk speaks HTTP/1.1 and keeps its connections, so handshakes are outside the steady state). *many clients*: plain, with `wrk -c%d`.\n", o.ManyConnections)
	p("- *new session*: requests carry no cookie; the proxy balances and sets one. *existing session*: every request carries a valid cookie, checked beforehand to keep the client on one member without a new Set-Cookie.\n")
	p("- **direct** is wrk against one member pinned to the proxies' CPU: the ceiling of a request on this CPU.\n")
	if o.Baseline != "" {
		p("- **limpet l7, baseline build** is another build of limpet (`%s`, %s) with the same configuration, measured in the same runs: *limpet ÷ this* on its rows is the change between the two builds.\n", o.Baseline, l.Versions["baseline"])
	}
	p("- RSS is the proxy's peak resident set (VmHWM) during the measurement (reset through `/proc/PID/clear_refs` just before). *CPU µs/request* is the proxy's CPU time (user and system, `/proc/PID/stat`) during the measurement divided by the requests served: unlike requests/s it hardly depends on how much of the CPU the other users of the machine left to the proxy. Any socket error or non-2xx answer fails the run.\n\n")
	sessName := func(existing bool) string {
		if existing {
			return "existing"
		}
		return "new"
	}
	p("| case | target | sessions | requests/s | p50 ms | p99 ms | peak RSS MiB | CPU µs/request | requests/s ÷ direct | limpet ÷ this (requests/s) |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
	direct := l.Row(L7Direct, L7Plain, false)
	for _, c := range L7Cases {
		for _, t := range L7Targets {
			for _, existing := range []bool{false, true} {
				row := l.Row(t, c, existing)
				if row == nil || len(row.RPS) == 0 {
					continue
				}
				sess := sessName(existing)
				if t == L7Direct {
					sess = "—"
				}
				vsLimpet := "—"
				if lim := l.Row(L7Limpet, c, existing); t != L7Direct && t != L7Limpet && lim != nil {
					vsLimpet = Ratios(lim.RPS, row.RPS).FormatRatio()
				}
				vsDirect := "—"
				if t != L7Direct && direct != nil {
					vsDirect = Ratios(row.RPS, direct.RPS).FormatRatio()
				}
				p("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", c, t, sess, row.RPS.Format(0), row.P50.Format(2), row.P99.Format(2), row.RSS.Format(1), row.CPU.Format(1), vsDirect, vsLimpet)
			}
		}
	}
	p("\n")

	// The targets of issue 15, each a ratio taken within every run.
	p("**Targets** (issue 15), each a ratio within every run:\n\n| measure | sessions | result | target | met |\n|---|---|---:|---:|---|\n")
	target := func(name string, existing bool, s Series, want float64, atMost bool) {
		if len(s) == 0 {
			return
		}
		met := s.Median() >= want
		cmp := "≥"
		if atMost {
			met = s.Median() <= want
			cmp = "≤"
		}
		mark := "yes"
		if !met {
			mark = "**no**"
		}
		p("| %s | %s | %s | %s %.2f× | %s |\n", name, sessName(existing), s.FormatRatio(), cmp, want, mark)
	}
	ratio := func(a, b *L7Row, f func(*L7Row) Series) Series {
		if a == nil || b == nil {
			return nil
		}
		return Ratios(f(a), f(b))
	}
	rps := func(r *L7Row) Series { return r.RPS }
	p99 := func(r *L7Row) Series { return r.P99 }
	rss := func(r *L7Row) Series { return r.RSS }
	for _, existing := range []bool{false, true} {
		target("requests/s, limpet ÷ HAProxy", existing, ratio(l.Row(L7Limpet, L7Plain, existing), l.Row(L7HAProxy, L7Plain, existing), rps), 0.85, false)
	}
	for _, existing := range []bool{false, true} {
		target("p99, limpet ÷ HAProxy", existing, ratio(l.Row(L7Limpet, L7Plain, existing), l.Row(L7HAProxy, L7Plain, existing), p99), 1.2, true)
	}
	for _, existing := range []bool{false, true} {
		target("requests/s, limpet access log on ÷ off", existing, ratio(l.Row(L7Limpet, L7Log, existing), l.Row(L7Limpet, L7Plain, existing), rps), 0.9, false)
	}
	for _, existing := range []bool{false, true} {
		target("requests/s, limpet HTTPS ÷ HAProxy HTTPS", existing, ratio(l.Row(L7Limpet, L7TLS, existing), l.Row(L7HAProxy, L7TLS, existing), rps), 0.8, false)
	}
	for _, existing := range []bool{false, true} {
		target(fmt.Sprintf("peak RSS at -c%d, limpet ÷ HAProxy", o.ManyConnections), existing, ratio(l.Row(L7Limpet, L7Many, existing), l.Row(L7HAProxy, L7Many, existing), rss), 2, true)
	}
	cpuPerReq := func(r *L7Row) Series { return r.CPU }
	p("\nFor reference: HAProxy's CPU per request ÷ limpet's (requests per CPU-second, limpet ÷ HAProxy), plain case: %s (new sessions), %s (existing); HTTPS: %s, %s. ",
		ratio(l.Row(L7HAProxy, L7Plain, false), l.Row(L7Limpet, L7Plain, false), cpuPerReq).FormatRatio(),
		ratio(l.Row(L7HAProxy, L7Plain, true), l.Row(L7Limpet, L7Plain, true), cpuPerReq).FormatRatio(),
		ratio(l.Row(L7HAProxy, L7TLS, false), l.Row(L7Limpet, L7TLS, false), cpuPerReq).FormatRatio(),
		ratio(l.Row(L7HAProxy, L7TLS, true), l.Row(L7Limpet, L7TLS, true), cpuPerReq).FormatRatio())
	p("HAProxy's own access log on ÷ off: %s (new sessions), %s (existing).\n\n",
		ratio(l.Row(L7HAProxy, L7Log, false), l.Row(L7HAProxy, L7Plain, false), rps).FormatRatio(),
		ratio(l.Row(L7HAProxy, L7Log, true), l.Row(L7HAProxy, L7Plain, true), rps).FormatRatio())
	p("Which figure to read: on a shared, loaded machine, requests/s ratios also measure how each proxy fares against the other users of its CPU (HAProxy runs one thread, limpet's Go runtime several), and the load average above shows how loaded it was. CPU µs per request hardly depends on that: the requests per CPU-second ratios above are the per-core comparison.\n\n")
	writeL7Profiles(w, l)
}

// writeL7Profiles writes the top of limpet's profiles taken in this run,
// after those of the proxy before issue 15 rewrote its request path.
func writeL7Profiles(w io.Writer, l *L7Result) {
	if len(l.Profiles) == 0 {
		return
	}
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("### Where limpet's time goes (pprof)\n\n")
	p("After the measured runs, `limpet l7 --pprof-listen` is profiled for %s under the plain case's load, once per kind of session: a CPU profile (`/debug/pprof/profile`) and, over the same seconds, the allocations (`/debug/pprof/allocs?seconds=N`). Allocations per request divide the profile's totals by wrk's rate times the profile's length. The tables are `go tool pprof -top -nodecount=15` (by own time, then with callees, `-cum`); *before* is the same profile of the proxy as it was before issue 15 (net/http's server, `httputil.ReverseProxy` and `http.Transport`), kept for comparison.\n\n", l.Opts.Profile)
	p("%s\n", l7ProfileBefore)
	for _, pr := range l.Profiles {
		sess := "new sessions"
		if pr.Existing {
			sess = "existing sessions"
		}
		p("#### Now, %s\n\n", sess)
		if pr.Err != "" {
			p("Profiling failed: %s\n\n", pr.Err)
			continue
		}
		p("%.0f requests profiled; **%.1f allocations and %.0f bytes allocated per request**.\n\n", pr.Requests, pr.ObjectsPerRequest, pr.BytesPerRequest)
		p("CPU, by own time:\n\n```\n%s\n```\n\nCPU, with callees:\n\n```\n%s\n```\n\nAllocated space:\n\n```\n%s\n```\n\n", pr.CPU, pr.CPUCum, pr.Allocs)
	}
}

func writeScale(w io.Writer, r *Results) {
	s := r.Scale
	if s == nil {
		return
	}
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("## 5. Scale: %s persistence entries\n\n", fmtNum(float64(s.Entries), 0))
	p("A datapath loaded from a config with two tables of %s clients, one LRU (`purge_when_full: true`) and one plain hash (`false`), filled from userspace; nothing attached. Memory is the kernel's accounting of each map (`memlock` in fdinfo, which since Linux 6.4 is the map's own estimate of what it allocated); both kinds preallocate every slot, so it does not depend on how full the table is. A key and a value are %d bytes.\n\n",
		fmtNum(float64(s.Entries), 0), s.KeyValueBytes)
	p("| figure | value |\n|---|---:|\n")
	p("| memory per entry, LRU table (%s slots: %.1f MiB) | %.0f bytes |\n", fmtNum(float64(s.LRUSlots), 0), float64(s.LRUBytes)/(1<<20), float64(s.LRUBytes)/float64(max(s.LRUSlots, 1)))
	p("| memory per entry, plain hash table (%s slots: %.1f MiB) | %.0f bytes |\n", fmtNum(float64(s.HashSlots), 0), float64(s.HashBytes)/(1<<20), float64(s.HashBytes)/float64(max(s.HashSlots, 1)))
	p("| memory per flow, flow table (%s slots; a connection under NAT takes two) | %.0f bytes |\n", fmtNum(float64(s.Entries), 0), float64(s.FlowBytes)/float64(max(s.Entries, 1)))
	p("| GC sweep, both tables (%s entries), nothing expired | %s ms |\n", fmtNum(float64(2*s.Entries), 0), s.SweepLive.Format(0))
	p("| GC sweep, both tables, half of the entries expired (deleted by the sweep) | %s ms |\n", s.SweepHalf.Format(0))
	p("| read one table (%s entries) with batch lookups (`loader.TableEntries`) | %s ms |\n", fmtNum(float64(s.Entries), 0), s.ReadTable.Format(0))
	p("| `limpet persistence dump --vs web-hash` (%s entries, table output, to a file) | %s ms |\n", fmtNum(float64(s.Entries), 0), s.DumpTable.Format(0))
	p("| `limpet persistence dump --vs web-hash -o json` (same) | %s ms |\n", s.DumpJS.Format(0))
	p("\nThe sweep is the daemon's (`userspace/gc`): it reads every table and the flow table, and deletes expired entries through the in-kernel GC program, 48 per BPF_PROG_RUN. The dumps run the real binary against the pinned maps, as an operator would.\n\n")
}

// writeForwardTargets is issue 11's end-to-end targets for NAT: at least
// half the floor's rate and four times nftables', ratios within each run.
func writeForwardTargets(w io.Writer, f *ForwardResult) {
	type target struct {
		what, ref string
		goal      float64
	}
	var lines []string
	for _, t := range []target{{"limpet NAT ÷ floor", PathFloor, 0.5}, {"limpet NAT ÷ nftables", PathNft, 4}} {
		for _, proto := range []string{"UDP", "TCP SYN"} {
			nat, ref := f.Row(PathLimpetNAT, proto), f.Row(t.ref, proto)
			if nat == nil || ref == nil || len(nat.Delivered) == 0 || len(ref.Delivered) == 0 {
				continue
			}
			r := Ratios(nat.Delivered, ref.Delivered)
			verdict := "met"
			if r.Median() < t.goal {
				verdict = "**missed**"
			}
			lines = append(lines, fmt.Sprintf("| %s, %s | %s | ≥ %g× | %s |", t.what, proto, r.FormatRatio(), t.goal, verdict))
		}
	}
	if len(lines) == 0 {
		return
	}
	fmt.Fprintf(w, "\nAgainst the end-to-end targets (issue 11):\n\n| ratio | measured | target | |\n|---|---:|---:|---|\n%s\n", strings.Join(lines, "\n"))
}
