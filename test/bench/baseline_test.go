package bench

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// agentRun is one side's agent output in one run: flow hit and new client
// at the given ns, the floor at floor ns.
func agentRun(flowHit, newClient, floor float64, probe bool) *AgentReport {
	r := &AgentReport{Protocol: AgentProtocol, Repeat: 1 << 20,
		FloorPlain: map[string]float64{"IPv4": 8}, NonVIPPlain: map[string]float64{"IPv4": 26}}
	r.Rows = []AgentRow{
		{Case: CaseFlowHit, Family: "IPv4", Limpet: flowHit, Floor: floor, Entries: 32, Sweep: "one flow"},
		{Case: CaseNewClient, Family: "IPv4", Limpet: newClient, Floor: floor, Entries: 32, Sweep: "each from a new client"},
	}
	if probe {
		r.Programs = []ProgramSize{{Name: "limpet_xdp", Type: "xdp", XlatedBytes: 2000, JitedBytes: 1000, VerifiedInsns: 5000}, {Name: "floor_gen", Type: "xdp", XlatedBytes: 1}}
		r.FlowMemory = []FlowMemory{{Map: "flows", Family: "IPv4", Type: "lru_hash", KeyBytes: 40, ValueBytes: 72, MaxEntries: 1024, MemlockBytes: 1024 * 176, Connections: 256, Entries: 512}}
	}
	return r
}

// The ratios of the before-and-after table pair the two sides run by run:
// a slow run hits both sides of its ratio.
func TestDatapathBaselineRatiosPerRun(t *testing.T) {
	cur := &DatapathResult{Name: "this tree"}
	base := &DatapathResult{Name: "f5a5b22 old"}
	cur.Baseline = base
	// Run 2 is twice as slow for both sides: its ratios are those of run 1.
	base.add(agentRun(150, 2600, 15, true))
	cur.add(agentRun(60, 1300, 15, true))
	base.add(agentRun(300, 5200, 30, false))
	cur.add(agentRun(120, 2600, 30, false))
	base.add(agentRun(150, 2600, 15, false))
	cur.add(agentRun(75, 1300, 15, false))

	hit := cur.Row(DatapathKey{CaseFlowHit, "IPv4", false})
	if hit == nil || len(hit.Limpet) != 3 {
		t.Fatalf("flow-hit row %+v, want 3 runs", hit)
	}
	if got := Ratios(hit.Limpet, base.Row(hit.Key).Limpet).Median(); got != 0.4 {
		t.Errorf("flow hit this ÷ baseline median %v, want 0.4", got)
	}
	if got := cur.FloorPlain["IPv4"]; len(got) != 3 {
		t.Errorf("floor without the driver: %v, want 3 runs", got)
	}

	var b bytes.Buffer
	writeDatapathBaseline(&b, cur)
	writeDatapathSizes(&b, cur)
	out := b.String()
	for _, want := range []string{
		"| flow-table hit | IPv4 | small | 150 (150–300) | 75 (60–120) | 10.00× (10.00–10.00) | 4.00× (4.00–5.00) | 0.40× (0.40–0.50) |",
		"| new client ÷ baseline | 1.00× | 0.50× (0.50–0.50) | ≤ 0.5× |",
		"| memory per NAT connection in the flow table (kernel's, IPv4) | 352 B | 352 B | ≤ 128 B |",
		"| limpet_xdp | xdp | 2000 / 1000 | 5000 | 2000 / 1000 | 5000 | 1.00× |",
		"| this tree | flows (lru_hash) | IPv4 | 40 + 72 | 2.00 | 224 B | 176 B | 352 B |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "floor_gen") {
		t.Errorf("report lists part 2's floor_gen among part 1's programs:\n%s", out)
	}
}

func TestBuildBaselineRefusesWhatIsNotACommit(t *testing.T) {
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(repo, ".git")); err != nil {
		t.Skip("not a git checkout (a source archive): no commit to build")
	}
	before, _ := filepath.Glob(filepath.Join(os.TempDir(), baselineDirPrefix+"*"))
	_, err = BuildBaseline(context.Background(), repo, "no-such-rev-of-limpet", repo, "go")
	if err == nil || !strings.Contains(err.Error(), `baseline "no-such-rev-of-limpet" is not a commit`) {
		t.Fatalf("BuildBaseline of a bad revision: %v, want an error naming it", err)
	}
	after, _ := filepath.Glob(filepath.Join(os.TempDir(), baselineDirPrefix+"*"))
	if len(after) > len(before) {
		t.Errorf("scratch directories left: %v, before %v", after, before)
	}
}

// issueBaseline is the datapath issue 11's targets were set against: `make
// bench BASELINE=f5a5b22` must keep building it, with this tree's agent
// copied in (the commit predates the agent and loader's typed ids).
const issueBaseline = "f5a5b22"

func TestBuildBaselineOfTheTargetsCommit(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: building a baseline compiles a second tree")
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(repo, ".git")); err != nil {
		t.Skip("not a git checkout (a source archive): no commit to build")
	}
	if _, err := git(context.Background(), repo, "rev-parse", "--verify", "--quiet", issueBaseline+"^{commit}"); err != nil {
		t.Skipf("%s is not in this clone's history (a shallow clone): %v", issueBaseline, err)
	}
	b, err := BuildBaseline(context.Background(), repo, issueBaseline, repo, "go")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if !b.Copied {
		t.Errorf("%s has its own agent? Copied = false", issueBaseline)
	}
	if fi, err := os.Stat(b.Side.Bin); err != nil || fi.Mode()&0o111 == 0 {
		t.Errorf("baseline agent %s: %v", b.Side.Bin, err)
	}
}
