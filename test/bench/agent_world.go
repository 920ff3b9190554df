package bench

import (
	"net"

	"github.com/limpet-lb/limpet/test/testutil"
)

// The probe's view of part 1's world (agent.go). A commit that predates
// the agent gets the version of this file that fits its world instead:
// testdata/agent_world_nsthread.go for the trees whose world was a
// dpWorld on an nsThread (up to 45fe0a8), this file for the later ones.

func probeWorldOf(w *testutil.World) probeWorld { return testutilWorld{w} }

type testutilWorld struct{ w *testutil.World }

func (t testutilWorld) do(fn func() error) error { return t.w.Do(fn) }

func (t testutilWorld) client() (int, net.HardwareAddr) { return t.w.Client.Index, t.w.Client.MAC }

func (t testutilWorld) close() { t.w.Close() }
