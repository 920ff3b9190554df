package loader

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// NextHop is where the datapath sends a member's packets without asking the
// kernel's FIB: what bpf_fib_lookup would answer for the member's address.
type NextHop struct {
	Ifindex        int
	SrcMAC, DstMAC net.HardwareAddr
	// MTU is the route's: a longer IP packet asks the FIB, which tells the
	// stack to answer it.
	MTU int
}

// NextHopCache is the next-hop cache as the datapath sees it.
type NextHopCache struct {
	// Gen is the live generation; 0 when nothing was ever published.
	Gen uint32
	// Expires is the end of the publisher's lease, on the datapath clock:
	// from then on every packet asks the FIB.
	Expires time.Duration
	// Hops are the members' hops of the live generation, by member id.
	Hops map[MemberID]NextHop
}

// Live reports whether the datapath uses the cache at clock time now.
func (c NextHopCache) Live(now time.Duration) bool {
	return c.Gen != nexthopGenNone && now < c.Expires
}

const (
	nexthopGenNone     = 0
	nexthopGenerations = 2
	// nexthopGrace separates two flips of the live generation: a packet
	// that read the generation before a flip reads its half of the slots
	// for a few microseconds more, and the next publish writes that half.
	nexthopGrace = 10 * time.Millisecond
)

// nexthopPublisher serializes publishes and spaces them by nexthopGrace.
type nexthopPublisher struct {
	mu      sync.Mutex
	flipped time.Time
}

var nexthopPub nexthopPublisher

func nexthopSlot(member MemberID, gen uint32) uint32 {
	return uint32(member)*nexthopGenerations + gen%nexthopGenerations
}

func nextGen(g uint32) uint32 {
	g++
	if g == nexthopGenNone {
		g++
	}
	return g
}

func (h NextHop) validate(member MemberID) error {
	switch {
	case member >= MaxMembers:
		return fmt.Errorf("next hop of member %d: member ids go up to %d", member, MaxMembers-1)
	case h.Ifindex <= 0:
		return fmt.Errorf("next hop of member %d: ifindex %d", member, h.Ifindex)
	case len(h.SrcMAC) != 6 || len(h.DstMAC) != 6:
		return fmt.Errorf("next hop of member %d: MACs %q and %q are not Ethernet addresses", member, h.SrcMAC, h.DstMAC)
	case h.MTU <= 0 || h.MTU > 0xffff:
		return fmt.Errorf("next hop of member %d: MTU %d", member, h.MTU)
	}
	return nil
}

// PublishNextHops makes hops the members' next hops, as a new generation
// that the datapath uses until the lease (from now, on the datapath clock)
// runs out; members without a hop ask the FIB. It returns the generation.
//
// The generation is written into the slots the live one does not use, and
// only then made live, so that no packet reads a half-written hop; the
// flip also invalidates every reply hop that flows stored.
func (d *Datapath) PublishNextHops(hops map[MemberID]NextHop, lease time.Duration) (uint32, error) {
	for id, h := range hops {
		if err := h.validate(id); err != nil {
			return 0, err
		}
	}
	nexthopPub.mu.Lock()
	defer nexthopPub.mu.Unlock()
	if wait := nexthopGrace - time.Since(nexthopPub.flipped); wait > 0 {
		time.Sleep(wait)
	}
	st, err := d.nexthopState()
	if err != nil {
		return 0, err
	}
	gen := nextGen(st.Gen)
	keys := make([]uint32, MaxMembers)
	vals := make([]limpetNexthop, MaxMembers)
	for id := range MemberID(MaxMembers) {
		keys[id] = nexthopSlot(id, gen)
		h, ok := hops[id]
		if !ok {
			continue
		}
		v := &vals[id]
		copy(v.Dmac[:], h.DstMAC)
		copy(v.Smac[:], h.SrcMAC)
		v.Ifindex, v.Mtu, v.Gen = uint32(h.Ifindex), uint32(h.MTU), gen
	}
	if _, err := d.objs.MemberNexthops.BatchUpdate(keys, vals, nil); err != nil {
		return 0, fmt.Errorf("write next hops: %w", err)
	}
	if err := d.writeNexthopState(gen, lease); err != nil {
		return 0, err
	}
	nexthopPub.flipped = time.Now()
	return gen, nil
}

// RenewNextHops extends the live generation's lease to lease from now.
func (d *Datapath) RenewNextHops(lease time.Duration) error {
	return d.withNexthopState(func(st limpetNexthopState) error {
		if st.Gen == nexthopGenNone {
			return errors.New("renew next hops: nothing was published")
		}
		return d.writeNexthopState(st.Gen, lease)
	})
}

// withNexthopState runs f on the cache's state, read with publishes held off.
func (d *Datapath) withNexthopState(f func(limpetNexthopState) error) error {
	nexthopPub.mu.Lock()
	defer nexthopPub.mu.Unlock()
	st, err := d.nexthopState()
	if err != nil {
		return err
	}
	return f(st)
}

// DropNextHops turns the cache off: every packet asks the FIB, as it does
// before anything is published. A daemon that stops and leaves the datapath
// forwarding does this, since nobody follows the kernel's changes after it.
func (d *Datapath) DropNextHops() error {
	return d.withNexthopState(func(st limpetNexthopState) error {
		if st.Gen == nexthopGenNone {
			return nil
		}
		// A new generation, so that a reply hop stored under the old one
		// never comes back to life when the cache does.
		if err := d.objs.NexthopCache.Put(uint32(0), &limpetNexthopState{Gen: nextGen(st.Gen)}); err != nil {
			return fmt.Errorf("drop next hops: %w", err)
		}
		nexthopPub.flipped = time.Now()
		return nil
	})
}

// NextHops reads the cache.
func (p *Pinned) NextHops() (NextHopCache, error) {
	st, err := p.nexthopState()
	if err != nil {
		return NextHopCache{}, err
	}
	c := NextHopCache{Gen: st.Gen, Expires: time.Duration(st.ExpiresNs), Hops: map[MemberID]NextHop{}}
	if st.Gen == nexthopGenNone {
		return c, nil
	}
	keys := make([]uint32, MaxMembers)
	for id := range MemberID(MaxMembers) {
		keys[id] = nexthopSlot(id, st.Gen)
	}
	vals := make([]limpetNexthop, MaxMembers)
	for i, k := range keys {
		if err := p.m.MemberNexthops.Lookup(k, &vals[i]); err != nil {
			return c, fmt.Errorf("read next hop slot %d: %w", k, err)
		}
	}
	for id, v := range vals {
		if v.Gen != st.Gen {
			continue
		}
		c.Hops[MemberID(id)] = NextHop{
			Ifindex: int(v.Ifindex), MTU: int(v.Mtu),
			SrcMAC: net.HardwareAddr(append([]byte(nil), v.Smac[:]...)),
			DstMAC: net.HardwareAddr(append([]byte(nil), v.Dmac[:]...)),
		}
	}
	return c, nil
}

func (p *Pinned) nexthopState() (limpetNexthopState, error) {
	var st limpetNexthopState
	if err := p.m.NexthopCache.Lookup(uint32(0), &st); err != nil {
		return st, fmt.Errorf("read next-hop cache state: %w", err)
	}
	return st, nil
}

func (d *Datapath) writeNexthopState(gen uint32, lease time.Duration) error {
	now, err := d.Now()
	if err != nil {
		return err
	}
	st := limpetNexthopState{Gen: gen, ExpiresNs: uint64(ClockTime(now + lease))}
	if err := d.objs.NexthopCache.Put(uint32(0), &st); err != nil {
		return fmt.Errorf("write next-hop cache state: %w", err)
	}
	return nil
}
