// Package bench measures limpet against what users would run instead, on the
// same machine and in the same run, and writes BENCHMARKS.md. It has five
// parts: the datapath's cost per packet through BPF_PROG_RUN, end-to-end
// forwarding in a namespace lab with a BPF_F_TEST_XDP_LIVE_FRAMES generator,
// TCP connection rate and latency, the L7 proxy against HAProxy and Caddy,
// and scale (memory per entry, GC sweep and dump of a million entries).
//
// cmd/limpet-bench runs everything (make bench, make bench-smoke); the
// Benchmark functions of this package run single parts under go test -bench.
// Everything needs root: namespaces, XDP, bpffs.
package bench

import (
	"fmt"
	"math"
	"sort"
	"strings"
)

// Series is one figure measured once per run.
type Series []float64

// Add appends one run's value.
func (s *Series) Add(v float64) { *s = append(*s, v) }

func (s Series) sorted() []float64 {
	c := append([]float64(nil), s...)
	sort.Float64s(c)
	return c
}

// Median of the runs (the mean of the middle two for an even count).
func (s Series) Median() float64 {
	if len(s) == 0 {
		return math.NaN()
	}
	c := s.sorted()
	n := len(c)
	if n%2 == 1 {
		return c[n/2]
	}
	return (c[n/2-1] + c[n/2]) / 2
}

// Min of the runs.
func (s Series) Min() float64 {
	if len(s) == 0 {
		return math.NaN()
	}
	return s.sorted()[0]
}

// Max of the runs.
func (s Series) Max() float64 {
	if len(s) == 0 {
		return math.NaN()
	}
	return s.sorted()[len(s)-1]
}

// Ratios divides run i of a by run i of b: comparisons are made within a run.
func Ratios(a, b Series) Series {
	var out Series
	for i := range min(len(a), len(b)) {
		if b[i] != 0 {
			out = append(out, a[i]/b[i])
		}
	}
	return out
}

// Diffs subtracts run i of b from run i of a.
func Diffs(a, b Series) Series {
	var out Series
	for i := range min(len(a), len(b)) {
		out = append(out, a[i]-b[i])
	}
	return out
}

// Format writes "median (min–max)" with the given number of decimals.
func (s Series) Format(decimals int) string {
	if len(s) == 0 {
		return "n/a"
	}
	f := func(v float64) string { return fmtNum(v, decimals) }
	if len(s) == 1 {
		return f(s[0])
	}
	return fmt.Sprintf("%s (%s–%s)", f(s.Median()), f(s.Min()), f(s.Max()))
}

// FormatRatio writes a ratio as "1.23× (1.20–1.25)".
func (s Series) FormatRatio() string {
	if len(s) == 0 {
		return "n/a"
	}
	if len(s) == 1 {
		return fmt.Sprintf("%.2f×", s[0])
	}
	return fmt.Sprintf("%.2f× (%.2f–%.2f)", s.Median(), s.Min(), s.Max())
}

func fmtNum(v float64, decimals int) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	s := fmt.Sprintf("%.*f", decimals, v)
	// Thousands separators for big integers make the tables readable.
	if decimals == 0 && math.Abs(v) >= 10000 {
		neg := strings.HasPrefix(s, "-")
		s = strings.TrimPrefix(s, "-")
		var b strings.Builder
		for i, r := range s {
			if i > 0 && (len(s)-i)%3 == 0 {
				b.WriteByte(',')
			}
			b.WriteRune(r)
		}
		s = b.String()
		if neg {
			s = "-" + s
		}
	}
	return s
}
