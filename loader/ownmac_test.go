package loader

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
)

// reasonDelta is how far each exception counter moved across fn.
func (f *fixture) reasonDelta(fn func()) map[string]uint64 {
	f.t.Helper()
	before := f.reasons()
	fn()
	after := f.reasons()
	out := map[string]uint64{}
	for i := range after {
		if d := after[i] - before[i]; d != 0 {
			out[ReasonNames[i]] = d
		}
	}
	return out
}

// A frame whose Ethernet destination is not the receiving interface's own
// MAC is not balanced: a unicast a switch floods to every node of a shared
// L2 (each would forward it), a broadcast, a multicast. It goes to the
// stack untouched and counts as not_our_mac, and makes no flow: the same
// client's frame to our MAC afterwards is a new connection, balanced. A
// member's reply flooded to us is not rewritten either. On an interface
// whose MAC the loader has not learnt, nothing is checked.
func TestFramesForAnotherMACAreNotBalanced(t *testing.T) {
	f := newStandardFixture(t)
	other := net.HardwareAddr{0x02, 0x42, 0, 0, 0, 0x99}
	// Before the loader knows the client link's MAC, a frame to any
	// unicast MAC is balanced (the fixtures' default is not the link's).
	if act, _ := f.run(syn(client4a, vip4, 40000, 80).build(t), f.cli); act != XDPRedirect {
		t.Fatalf("on an interface whose MAC is not learnt: verdict %v, want XDP_REDIRECT", act)
	}
	if err := f.d.SetInterfaceMAC(f.cli.Index, f.cliMAC); err != nil {
		t.Fatal(err)
	}
	if err := f.d.SetInterfaceMAC(f.mem.Index, f.memMAC); err != nil {
		t.Fatal(err)
	}
	if mac, ok, err := f.d.InterfaceMAC(f.cli.Index); err != nil || !ok || mac.String() != f.cliMAC.String() {
		t.Fatalf("InterfaceMAC(client link) = %v %v %v, want %v", mac, ok, err, f.cliMAC)
	}
	flowsBefore := len(f.flows())
	for i, c := range []struct {
		name string
		pkt  pkt
	}{
		{"unicast to another node", pkt{src: client4a, dst: vip4, sport: 40001, dport: 80, flags: "S", dstMAC: other}},
		{"ipv6 unicast to another node", pkt{src: client6a, dst: vip6, sport: 40001, dport: 80, flags: "S", dstMAC: other}},
		{"broadcast", pkt{src: client4a, dst: vip4, sport: 40002, dport: 53, udp: true, dstMAC: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}},
		{"ipv4 multicast", pkt{src: client4a, dst: vip4, sport: 40003, dport: 80, flags: "S", dstMAC: net.HardwareAddr{0x01, 0x00, 0x5e, 0, 0, 1}}},
		{"ipv6 multicast", pkt{src: client6a, dst: vip6, sport: 40003, dport: 80, flags: "S", dstMAC: net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}}},
		{"our MAC but one bit", pkt{src: client4a, dst: vip4, sport: 40004, dport: 80, flags: "S", dstMAC: flipLastBit(f.cliMAC)}},
	} {
		in := c.pkt.build(t)
		var act XDPAction
		var out []byte
		got := f.reasonDelta(func() { act, out = f.run(in, f.cli) })
		if act != XDPPass {
			t.Errorf("%d %s: verdict %v, want XDP_PASS", i, c.name, act)
		}
		if !bytes.Equal(out[:len(in)], in) {
			t.Errorf("%s: the passed frame was changed", c.name)
		}
		if len(got) != 1 || got["not_our_mac"] != 1 {
			t.Errorf("%s: counters moved by %v, want not_our_mac by 1", c.name, got)
		}
	}
	if n := len(f.flows()); n != flowsBefore {
		t.Fatalf("frames for another MAC made %d flows", n-flowsBefore)
	}
	// To our MAC: balanced, and a flow; the member's reply to our MAC is
	// rewritten, the same reply flooded to another node's MAC is not.
	req := pkt{src: client4a, dst: vip4, sport: 40001, dport: 80, flags: "S", dstMAC: f.cliMAC}
	var act XDPAction
	var out []byte
	if got := f.reasonDelta(func() { act, out = f.run(req.build(t), f.cli) }); act != XDPRedirect || len(got) != 0 {
		t.Fatalf("a SYN to our MAC: verdict %v, counters %v; want XDP_REDIRECT and none", act, got)
	}
	fwd := checkChecksums(t, out)
	member, _ := netip.AddrFromSlice(fwd.NetworkLayer().NetworkFlow().Dst().Raw())
	reply := pkt{src: member, dst: client4a, sport: 8080, dport: 40001, flags: "SA", srcMAC: memberMAC(0)}
	reply.dstMAC = other
	in := reply.build(t)
	if got := f.reasonDelta(func() { act, out = f.run(in, f.mem) }); act != XDPPass || got["not_our_mac"] != 1 || !bytes.Equal(out[:len(in)], in) {
		t.Fatalf("the reply flooded to another MAC: verdict %v, counters %v; want XDP_PASS, untouched, not_our_mac", act, got)
	}
	reply.dstMAC = f.memMAC
	if act, _ = f.run(reply.build(t), f.mem); act != XDPRedirect {
		t.Fatalf("the reply to our MAC: verdict %v, want XDP_REDIRECT", act)
	}
	// Host traffic to a group (mDNS here) is the host's: passed, not
	// counted. Host unicast for another MAC is counted: it was flooded.
	mdns := pkt{src: client4a, dst: netip.MustParseAddr("224.0.0.251"), sport: 5353, dport: 5353, udp: true, dstMAC: net.HardwareAddr{0x01, 0x00, 0x5e, 0, 0, 0xfb}}
	if got := f.reasonDelta(func() { act, _ = f.run(mdns.build(t), f.cli) }); act != XDPPass || len(got) != 0 {
		t.Fatalf("host multicast: verdict %v, counters %v; want XDP_PASS and none", act, got)
	}
	// A MAC change is followed: the old MAC is another node's now.
	newMAC := net.HardwareAddr{0x02, 0x42, 0, 0, 0, 0x01}
	if err := f.d.SetInterfaceMAC(f.cli.Index, newMAC); err != nil {
		t.Fatal(err)
	}
	if act, _ := f.run(syn(client4b, vip4, 40010, 80).build(t), f.cli); act != XDPPass {
		t.Fatalf("to the old MAC after a change: verdict %v, want XDP_PASS", act)
	}
	if act, _ := f.run(pkt{src: client4b, dst: vip4, sport: 40011, dport: 80, flags: "S", dstMAC: newMAC}.build(t), f.cli); act != XDPRedirect {
		t.Fatalf("to the new MAC: verdict %v, want XDP_REDIRECT", act)
	}
	// Forgotten (detached), the interface is not checked.
	if err := f.d.ClearInterfaceMAC(f.cli.Index); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := f.d.InterfaceMAC(f.cli.Index); ok {
		t.Fatal("InterfaceMAC after ClearInterfaceMAC still holds one")
	}
	if act, _ := f.run(pkt{src: client4b, dst: vip4, sport: 40012, dport: 80, flags: "S", dstMAC: other}.build(t), f.cli); act != XDPRedirect {
		t.Fatalf("after ClearInterfaceMAC: verdict %v, want XDP_REDIRECT", act)
	}
}

// Two interfaces whose ifindexes share a slot of if_macs: the second is
// kept in if_macs_spill and checked all the same.
func TestInterfaceMACsThatShareASlot(t *testing.T) {
	f := newStandardFixture(t)
	twin := f.cli.Index + ifMACSlots // no such interface: it only holds the slot
	if err := f.d.SetInterfaceMAC(twin, net.HardwareAddr{0x02, 0x42, 0, 0, 0, 0x77}); err != nil {
		t.Fatal(err)
	}
	if err := f.d.SetInterfaceMAC(f.cli.Index, f.cliMAC); err != nil {
		t.Fatal(err)
	}
	if !f.d.macs.written[f.cli.Index].spill {
		t.Fatal("the second interface of a slot is not in the spill map")
	}
	if act, _ := f.run(syn(client4a, vip4, 40020, 80).build(t), f.cli); act != XDPPass {
		t.Fatalf("to another MAC on a spilled interface: verdict %v, want XDP_PASS", act)
	}
	if act, _ := f.run(pkt{src: client4a, dst: vip4, sport: 40021, dport: 80, flags: "S", dstMAC: f.cliMAC}.build(t), f.cli); act != XDPRedirect {
		t.Fatalf("to our MAC on a spilled interface: verdict %v, want XDP_REDIRECT", act)
	}
	if mac, ok, err := f.d.InterfaceMAC(f.cli.Index); err != nil || !ok || mac.String() != f.cliMAC.String() {
		t.Fatalf("InterfaceMAC(spilled) = %v %v %v", mac, ok, err)
	}
	if err := f.d.SetInterfaceMAC(0, f.cliMAC); err == nil {
		t.Fatal("SetInterfaceMAC accepted ifindex 0")
	}
	if err := f.d.SetInterfaceMAC(f.cli.Index, net.HardwareAddr{1, 2, 3}); err == nil {
		t.Fatal("SetInterfaceMAC accepted a 3-byte MAC")
	}
}

// Attach learns the interface's MAC; Detach of the interface forgets it.
func TestAttachLearnsTheInterfaceMAC(t *testing.T) {
	f := newFixture(t, Options{})
	d := loadTemp(t, Options{})
	f.attach(d, f.cli.Name, XDPGeneric)
	if mac, ok, err := d.InterfaceMAC(f.cli.Index); err != nil || !ok || mac.String() != f.cliMAC.String() {
		t.Fatalf("after Attach the datapath holds %v %v %v as %s's MAC, want %v", mac, ok, err, f.cli.Name, f.cliMAC)
	}
	if err := f.world.Do(func() error { return d.DetachInterface(f.cli.Name) }); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := d.InterfaceMAC(f.cli.Index); ok {
		t.Fatal("after DetachInterface the datapath still holds the MAC")
	}
}

// to addresses the frame to mac.
func (p pkt) to(mac net.HardwareAddr) pkt { p.dstMAC = mac; return p }

func flipLastBit(mac net.HardwareAddr) net.HardwareAddr {
	m := append(net.HardwareAddr(nil), mac...)
	m[5] ^= 1
	return m
}

func (f *fixture) flows() []Flow {
	f.t.Helper()
	fl, err := f.d.Flows()
	if err != nil {
		f.t.Fatal(err)
	}
	return fl
}
