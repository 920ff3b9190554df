package bench

import "net"

// agent_world.go for the trees whose micro benchmark world is a dpWorld on
// an nsThread (test/bench/netns.go): BuildBaseline copies it into them.

type probeWorld interface {
	do(fn func() error) error
	client() (ifindex int, mac net.HardwareAddr)
	close()
}

func openProbeWorld() (probeWorld, error) {
	w, err := newDPWorld()
	if err != nil {
		return nil, err
	}
	return nsThreadWorld{w}, nil
}

type nsThreadWorld struct{ w *dpWorld }

func (t nsThreadWorld) do(fn func() error) error { return t.w.ns.do(fn) }

func (t nsThreadWorld) client() (int, net.HardwareAddr) { return t.w.cliIdx, t.w.cliMAC }

func (t nsThreadWorld) close() { t.w.close() }
