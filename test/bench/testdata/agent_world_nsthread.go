package bench

import "net"

// agent_world.go for the trees whose micro benchmark world is a dpWorld on
// an nsThread (test/bench/netns.go): BuildBaseline copies it into them.

func probeWorldOf(w *dpWorld) probeWorld { return nsThreadWorld{w} }

type nsThreadWorld struct{ w *dpWorld }

func (t nsThreadWorld) do(fn func() error) error { return t.w.ns.do(fn) }

func (t nsThreadWorld) client() (int, net.HardwareAddr) { return t.w.cliIdx, t.w.cliMAC }

func (t nsThreadWorld) close() { t.w.close() }
