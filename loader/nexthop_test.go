package loader

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/vishvananda/netlink"
)

// cachedMAC is a MAC the fixture's FIB never answers: a packet that leaves
// with it took the cached hop, not bpf_fib_lookup.
func cachedMAC(i int) net.HardwareAddr { return net.HardwareAddr{0x02, 0x0c, 0, 0, 0, byte(i)} }

// publishAll caches a hop for every member of standardState, each with its
// own cachedMAC, of the given MTU.
func (f *fixture) publishAll(mtu int, lease time.Duration, skip ...MemberID) uint32 {
	f.t.Helper()
	hops := map[MemberID]NextHop{}
	for id := range MemberID(9) {
		hops[id] = NextHop{Ifindex: f.mem.Index, SrcMAC: f.memMAC, DstMAC: cachedMAC(int(id)), MTU: mtu}
	}
	for _, id := range skip {
		delete(hops, id)
	}
	gen, err := f.d.PublishNextHops(hops, lease)
	if err != nil {
		f.t.Fatal(err)
	}
	return gen
}

// forwardedTo runs in from the client link and returns the member it went
// to and the destination MAC it left with.
func (f *fixture) forwardedTo(in pkt) (netip.Addr, net.HardwareAddr) {
	f.t.Helper()
	act, out := f.run(in.build(f.t), f.cli)
	if act != XDPRedirect {
		f.t.Fatalf("verdict %v, want XDP_REDIRECT", act)
	}
	p := checkChecksums(f.t, out)
	eth := p.LinkLayer().(*layers.Ethernet)
	if got := eth.SrcMAC.String(); got != f.memMAC.String() {
		f.t.Fatalf("left with source MAC %s, want the member link's %s", got, f.memMAC)
	}
	dst, _ := netip.AddrFromSlice(p.NetworkLayer().NetworkFlow().Dst().Raw())
	return dst, eth.DstMAC
}

func memberIndex(a netip.Addr) int {
	for i, m := range append(append([]netip.Addr(nil), member4...), member6...) {
		if m == a {
			return i % len(member4)
		}
	}
	return -1
}

func TestNextHopCacheForwardsMembers(t *testing.T) {
	f := newStandardFixture(t)
	miss, mtu := reasonIndex("nexthop_miss"), reasonIndex("nexthop_mtu")
	port := uint16(41000)
	next := func(client netip.Addr) pkt {
		port++
		return syn(client, vip4, port, 80)
	}
	// expect sends a new connection of client and checks which hop it
	// took and what was counted.
	expect := func(name string, in pkt, cached bool, wantMiss, wantMTU uint64) {
		t.Helper()
		before := f.reasons()
		dst, mac := f.forwardedTo(in)
		i := memberIndex(dst)
		if i < 0 {
			t.Fatalf("%s: went to %s, no member", name, dst)
		}
		want := memberMAC(i)
		if cached {
			id := i
			if dst.Is6() {
				id += 3
			}
			want = cachedMAC(id)
		}
		if mac.String() != want.String() {
			t.Errorf("%s: left for %s with MAC %s, want %s (cached %v)", name, dst, mac, want, cached)
		}
		after := f.reasons()
		if got := after[miss] - before[miss]; got != wantMiss {
			t.Errorf("%s: %d next-hop misses counted, want %d", name, got, wantMiss)
		}
		if got := after[mtu] - before[mtu]; got != wantMTU {
			t.Errorf("%s: %d next-hop MTU fallbacks counted, want %d", name, got, wantMTU)
		}
	}

	expect("nothing published: the FIB", next(client4a), false, 0, 0)

	f.publishAll(1500, time.Hour)
	expect("published: the cached hop", next(client4a), true, 0, 0)
	expect("published, IPv6", syn(client6a, vip6, 41000, 80), true, 0, 0)
	// DSR keeps the VIP: only the MAC says which member, and it is cached.
	if _, mac := f.forwardedTo(syn(client4a, vip4, 41000, 8080)); mac.String() != cachedMAC(6).String() &&
		mac.String() != cachedMAC(7).String() && mac.String() != cachedMAC(8).String() {
		t.Errorf("DSR: left with MAC %s, none of the DSR members' cached ones", mac)
	}
	// An existing flow follows the cache too.
	expect("flow hit", pkt{src: client4a, dst: vip4, sport: port, dport: 80, flags: "A"}, true, 0, 0)

	// The client's member (persisted) without a hop: a counted miss.
	dst, _ := f.forwardedTo(next(client4a))
	f.publishAll(1500, time.Hour, MemberID(memberIndex(dst)))
	expect("member not cached: a miss, the FIB", next(client4a), false, 1, 0)

	// A hop whose MTU the packet exceeds: the FIB decides (here it
	// forwards: the link's MTU is larger), counted.
	f.publishAll(40, time.Hour) // the SYN is 45 bytes of IP
	expect("longer than the hop's MTU", next(client4a), false, 0, 1)

	// A dropped cache, or one whose lease ran out, is not used and not
	// counted: nobody follows the kernel for it.
	f.publishAll(1500, time.Hour)
	if err := f.d.DropNextHops(); err != nil {
		t.Fatal(err)
	}
	expect("dropped", next(client4a), false, 0, 0)
	f.publishAll(1500, time.Second)
	expect("leased", next(client4a), true, 0, 0)
	off, err := f.d.ClockOffset()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.d.SetClockOffset(off + 2*time.Second); err != nil {
		t.Fatal(err)
	}
	expect("lease over", next(client4a), false, 0, 0)

	// Generations alternate between the two halves of the slots, and only
	// the live one is read back.
	g1 := f.publishAll(1500, time.Hour)
	g2 := f.publishAll(1400, time.Hour, 1)
	c, err := f.d.NextHops()
	if err != nil {
		t.Fatal(err)
	}
	if c.Gen != g2 || g2 == g1 || len(c.Hops) != 8 || c.Hops[0].MTU != 1400 {
		t.Errorf("after generations %d and %d: cache %+v", g1, g2, c)
	}
	now, _ := f.d.Now()
	if !c.Live(now) {
		t.Error("the cache is not live")
	}
}

func TestNextHopCacheStoresReplyHopsInTheFlow(t *testing.T) {
	f := newStandardFixture(t)
	gen := f.publishAll(1500, time.Hour)
	member, _ := f.forwardedTo(syn(client4a, vip4, 42000, 80))
	reply := func(flags string, payload int) net.HardwareAddr {
		t.Helper()
		r := pkt{src: member, dst: client4a, sport: 8080, dport: 42000, flags: flags, payload: make([]byte, payload),
			srcMAC: memberMAC(memberIndex(member)), dstMAC: f.memMAC}
		act, out := f.run(r.build(t), f.mem)
		if act != XDPRedirect {
			t.Fatalf("reply verdict %v, want XDP_REDIRECT", act)
		}
		return checkChecksums(t, out).LinkLayer().(*layers.Ethernet).DstMAC
	}
	replyHop := func() *FlowHop {
		t.Helper()
		flows := f.flows()
		for _, fl := range flows {
			if !fl.Reverse && fl.Src.Port() == 42000 {
				return fl.ReplyHop
			}
		}
		t.Fatal("no flow")
		return nil
	}
	if h := replyHop(); h != nil {
		t.Fatalf("a reply hop before any reply: %+v", h)
	}
	if mac := reply("SA", 0); mac.String() != gwMAC.String() {
		t.Fatalf("first reply to %s, want the gateway %s", mac, gwMAC)
	}
	h := replyHop()
	if h == nil || h.Gen != gen || h.DstMAC.String() != gwMAC.String() || h.Ifindex != f.cli.Index || h.SrcMAC.String() != f.cliMAC.String() {
		t.Fatalf("stored reply hop %+v, want the gateway's in generation %d", h, gen)
	}
	small := h.FitLen

	// The gateway changes MAC in the kernel. Until a new generation, the
	// flow's stored hop is used (no FIB lookup): that is what the watcher's
	// flip on every neighbour event is for.
	newGw := net.HardwareAddr{0x02, 0, 0, 0, 0xc0, 0x0f}
	err := f.world.Do(func() error {
		return netlink.NeighSet(&netlink.Neigh{LinkIndex: f.cli.Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
			IP: net.ParseIP("192.0.2.254"), HardwareAddr: newGw})
	})
	if err != nil {
		t.Fatal(err)
	}
	if mac := reply("A", 0); mac.String() != gwMAC.String() {
		t.Fatalf("reply before the flip to %s, want the stored %s", mac, gwMAC)
	}
	// A longer reply than any before asks the FIB (the hop's MTU is not
	// known) and raises the stored length.
	if mac := reply("A", 1000); mac.String() != newGw.String() {
		t.Fatalf("a longer reply went to %s, want the FIB's %s", mac, newGw)
	}
	if h := replyHop(); h.FitLen <= small || h.DstMAC.String() != newGw.String() {
		t.Fatalf("after a longer reply: %+v (was %d bytes)", h, small)
	}
	// A new generation invalidates the stored hop.
	err = f.world.Do(func() error {
		return netlink.NeighSet(&netlink.Neigh{LinkIndex: f.cli.Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
			IP: net.ParseIP("192.0.2.254"), HardwareAddr: gwMAC})
	})
	if err != nil {
		t.Fatal(err)
	}
	gen2 := f.publishAll(1500, time.Hour)
	if mac := reply("A", 0); mac.String() != gwMAC.String() {
		t.Fatalf("reply after the flip to %s, want the FIB's %s", mac, gwMAC)
	}
	if h := replyHop(); h.Gen != gen2 {
		t.Fatalf("stored hop of generation %d, want %d", h.Gen, gen2)
	}
}

func TestNextHopPublishRefusesBadHops(t *testing.T) {
	f := newFixture(t, Options{})
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	for name, h := range map[string]map[MemberID]NextHop{
		"member id":  {MaxMembers: {Ifindex: 1, SrcMAC: mac, DstMAC: mac, MTU: 1500}},
		"ifindex":    {0: {SrcMAC: mac, DstMAC: mac, MTU: 1500}},
		"short MAC":  {0: {Ifindex: 1, SrcMAC: mac[:4], DstMAC: mac, MTU: 1500}},
		"MTU":        {0: {Ifindex: 1, SrcMAC: mac, DstMAC: mac}},
		"MTU > 64Ki": {0: {Ifindex: 1, SrcMAC: mac, DstMAC: mac, MTU: 1 << 16}},
	} {
		if _, err := f.d.PublishNextHops(h, time.Hour); err == nil {
			t.Errorf("%s: published", name)
		}
	}
	if c, err := f.d.NextHops(); err != nil || c.Gen != 0 {
		t.Errorf("after refusals: %+v, %v", c, err)
	}
	if err := f.d.RenewNextHops(time.Hour); err == nil {
		t.Error("renewed a cache never published")
	}
}
