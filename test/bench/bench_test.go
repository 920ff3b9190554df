package bench

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/limpet-lb/limpet/test/testutil"
)

// The parts as Go benchmarks, with the report's sizes and one run each:
//
//	sudo go test -run '^$' -bench Datapath ./test/bench
//
// (Forward, ConnRate, L7, Scale likewise). There are no tests here: make
// test compiles this package and runs nothing. bin/limpet-bench (make bench)
// runs every part five times and writes BENCHMARKS.md.

func TestMain(m *testing.M) {
	MaybeServeMember() // the L7 part starts this test binary as its members
	os.Exit(m.Run())
}

// testEnv finds the repository's templates and a limpet binary: $LIMPET_BIN,
// or one built for this run.
func testEnv(b *testing.B) Env {
	b.Helper()
	testutil.RequireRoot(b)
	bin, err := testutil.LimpetBinary(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	return Env{Templates: filepath.Join(testutil.RepoRoot(), "scripts", "bench"), Log: b.Logf, LimpetBin: bin}
}

func BenchmarkDatapath(b *testing.B) {
	testutil.RequireRoot(b)
	o := ReportOptions(1).Datapath
	o.Log = b.Logf
	for range b.N {
		res, err := RunDatapath(context.Background(), o)
		if err != nil {
			b.Fatal(err)
		}
		for _, row := range res.Rows {
			size := "small"
			if row.Key.Large {
				size = "1M"
			}
			b.ReportMetric(row.Limpet.Median(), metricUnit("ns/pkt", shortCase(row.Key.Case), row.Key.Family, size))
		}
	}
}

// metricUnit names a reported metric: the unit, then the row's keys. A
// unit must not hold white space (ReportMetric panics), and the report's
// path and target names do: it becomes '_'.
func metricUnit(unit string, keys ...string) string {
	return unit + ":" + strings.Join(strings.Fields(strings.Join(keys, "/")), "_")
}

func shortCase(c DatapathCase) string {
	return map[DatapathCase]string{CaseNonVIP: "nonvip", CaseFlowHit: "flowhit", CasePersistHit: "persisthit",
		CaseNewClient: "newclient", CaseReverse: "reverse", CaseFlowHitFIB: "flowhitfib", CaseReverseFIB: "reversefib"}[c]
}

func BenchmarkForward(b *testing.B) {
	env := testEnv(b)
	for range b.N {
		res, err := RunForward(context.Background(), env, ReportOptions(1).Forward)
		if err != nil {
			b.Fatal(err)
		}
		for _, row := range res.Rows {
			b.ReportMetric(row.Delivered.Median(), metricUnit("Mpps", row.Key.Path, row.Key.Proto))
		}
	}
}

func BenchmarkConnRate(b *testing.B) {
	env := testEnv(b)
	for range b.N {
		res, err := RunConnRate(context.Background(), env, ReportOptions(1).Conn)
		if err != nil {
			b.Fatal(err)
		}
		for _, row := range res.Rows {
			b.ReportMetric(row.Rate.Median(), metricUnit("conn/s", row.Target))
		}
	}
}

func BenchmarkL7(b *testing.B) {
	env := testEnv(b)
	o := ReportOptions(1).L7
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	o.MemberExe = exe
	for range b.N {
		res, err := RunL7(context.Background(), env, o)
		if err != nil {
			b.Fatal(err)
		}
		for _, row := range res.Rows {
			sess := "new"
			if row.Key.Existing {
				sess = "existing"
			}
			b.ReportMetric(row.RPS.Median(), metricUnit("req/s", row.Key.Target, string(row.Key.Case), sess))
		}
	}
}

func BenchmarkScale(b *testing.B) {
	env := testEnv(b)
	for range b.N {
		res, err := RunScale(context.Background(), env, ReportOptions(1).Scale)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(res.HashBytes)/float64(res.HashSlots), "B/entry")
		b.ReportMetric(res.SweepLive.Median(), "ms/sweep")
		b.ReportMetric(res.DumpTable.Median(), "ms/dump")
	}
}
