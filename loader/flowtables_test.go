package loader

import (
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// flowMapKeys counts the entries of one of the flow maps.
func flowMapEntries(t *testing.T, m *ebpf.Map) int {
	t.Helper()
	var n int
	var k []byte
	it := m.Iterate()
	v := make([]byte, m.ValueSize())
	for it.Next(&k, &v) {
		n++
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// IPv4 and IPv6 connections at once, each in its family's flow map: the
// IPv4 ones in flows4 under the 16-byte key, the IPv6 ones in flows6. Both
// keep their member, their persistence entry (its client masked by the
// virtual server's prefix, which a flow rebuilds from its key when it
// closes) and their replies' next hop with the egress interface's MAC.
func TestDatapathMixedFamiliesFlowTables(t *testing.T) {
	f := newFixture(t, Options{})
	s := standardState()
	s.VirtualServers[0].IPv4Prefix = 24 // VIP4:80
	s.VirtualServers[2].IPv6Prefix = 64 // VIP6:80
	if err := f.d.Apply(s); err != nil {
		t.Fatal(err)
	}
	gen := f.publishAll(1500, time.Hour)
	type conn struct {
		client, vip netip.Addr
		sport       uint16
		vs          int
		masked      netip.Addr
		member      netip.Addr
	}
	conns := []*conn{
		{client: client4a, vip: vip4, sport: 43000, vs: 0, masked: netip.MustParseAddr("198.51.100.0")},
		{client: client6a, vip: vip6, sport: 43001, vs: 2, masked: netip.MustParseAddr("2001:db8:c1::")},
		{client: client4b, vip: vip4, sport: 43002, vs: 0, masked: netip.MustParseAddr("198.51.100.0")},
		{client: client6b, vip: vip6, sport: 43003, vs: 2, masked: netip.MustParseAddr("2001:db8:c1::")},
	}
	for _, c := range conns {
		c.member, _ = f.forwardedTo(syn(c.client, c.vip, c.sport, 80))
		reply := pkt{src: c.member, dst: c.client, sport: 8080, dport: c.sport, flags: "SA",
			srcMAC: memberMAC(memberIndex(c.member)), dstMAC: f.memMAC}
		act, out := f.run(reply.build(t), f.mem)
		if act != XDPRedirect {
			t.Fatalf("reply of %s: verdict %v, want XDP_REDIRECT", c.client, act)
		}
		p := checkChecksums(t, out)
		if src, _ := netip.AddrFromSlice(p.NetworkLayer().NetworkFlow().Src().Raw()); src != c.vip {
			t.Fatalf("reply of %s left from %s, want the VIP %s", c.client, src, c.vip)
		}
	}
	if n4, n6 := flowMapEntries(t, f.d.objs.Flows4), flowMapEntries(t, f.d.objs.Flows6); n4 != 2 || n6 != 2 {
		t.Fatalf("flows4 holds %d flows and flows6 %d, want 2 each", n4, n6)
	}
	flows := f.flows()
	if len(flows) != len(conns) {
		t.Fatalf("%d flows, want %d: %+v", len(flows), len(conns), flows)
	}
	byPort := map[uint16]Flow{}
	for _, fl := range flows {
		byPort[fl.Src.Port()] = fl
	}
	for _, c := range conns {
		fl, ok := byPort[c.sport]
		vs := s.VirtualServers[c.vs]
		switch {
		case !ok:
			t.Fatalf("no flow of %s", c.client)
		case fl.Src != netip.AddrPortFrom(c.client, c.sport) || fl.Dst != netip.AddrPortFrom(c.vip, 80) || fl.Proto != ProtoTCP:
			t.Errorf("flow of %s: 5-tuple %s -> %s %v", c.client, fl.Src, fl.Dst, fl.Proto)
		case fl.Target != netip.AddrPortFrom(c.member, 8080) || fl.VSID != vs.ID || fl.DSR || fl.Reverse:
			t.Errorf("flow of %s: target %s vs %d dsr %v reverse %v, want %s:8080 vs %d", c.client, fl.Target, fl.VSID, fl.DSR, fl.Reverse, c.member, vs.ID)
		case fl.TableID != vs.TableID || fl.Client != c.masked || !fl.Counted || !fl.MemberCounted:
			t.Errorf("flow of %s: table %v client %s counted %v/%v, want %v %s", c.client, fl.TableID, fl.Client, fl.Counted, fl.MemberCounted, vs.TableID, c.masked)
		case fl.ReplyHop == nil || fl.ReplyHop.Gen != gen || fl.ReplyHop.Ifindex != f.cli.Index ||
			fl.ReplyHop.DstMAC.String() != gwMAC.String() || fl.ReplyHop.SrcMAC.String() != f.cliMAC.String():
			t.Errorf("flow of %s: reply hop %+v, want the gateway's through %d from %s", c.client, fl.ReplyHop, f.cli.Index, f.cliMAC)
		}
		if got, ok, err := f.d.LookupFlow(fl.Src, fl.Dst, fl.Proto); err != nil || !ok || got.Target != fl.Target || got.Client != fl.Client {
			t.Errorf("LookupFlow of %s: %+v %v %v, want the dump's", c.client, got, ok, err)
		}
	}
	// Two clients of one family share their masked entry: two connections.
	for _, c := range conns[:2] {
		if e, ok := f.entry(s.VirtualServers[c.vs].TableID, c.masked); !ok || e.Conns != 2 {
			t.Fatalf("entry %s: %+v (present %v), want 2 connections", c.masked, e, ok)
		}
	}
	// An RST ends each connection: the flow gives back the connection of
	// the entry its key and prefix name.
	for _, c := range conns {
		if act, _ := f.run(pkt{src: c.client, dst: c.vip, sport: c.sport, dport: 80, flags: "R"}.build(t), f.cli); act != XDPRedirect {
			t.Fatalf("RST of %s: verdict %v", c.client, act)
		}
	}
	for _, c := range conns[:2] {
		if e, ok := f.entry(s.VirtualServers[c.vs].TableID, c.masked); !ok || e.Conns != 0 {
			t.Fatalf("entry %s after the RSTs: %+v (present %v), want no connection", c.masked, e, ok)
		}
	}
	flows = f.flows()
	for _, fl := range flows {
		if !fl.Closed || fl.Counted || fl.MemberCounted {
			t.Errorf("flow %s after its RST: closed %v counted %v/%v", fl.Src, fl.Closed, fl.Counted, fl.MemberCounted)
		}
	}
}

// Each family's flow table has settings.flow_table_size slots unless the
// IPv6 one is sized on its own; an adopted datapath keeps its sizes, and
// asking for others names the table.
func TestFlowTableSizesPerFamily(t *testing.T) {
	d := loadTemp(t, Options{FlowTableSize: 4096, FlowTableSizeV6: 1024})
	if v4, v6 := d.FlowTableSizes(); v4 != 4096 || v6 != 1024 {
		t.Fatalf("flow tables of %d and %d slots, want 4096 and 1024", v4, v6)
	}
	pin := d.PinPath()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := Load(Options{PinPath: pin, FlowTableSize: 4096})
	if err == nil || !strings.Contains(err.Error(), "flows6") || !strings.Contains(err.Error(), "limpet detach") {
		t.Fatalf("adopting with another IPv6 size: %v, want a refusal naming flows6", err)
	}
	d2, err := Load(Options{PinPath: pin, FlowTableSize: 4096, FlowTableSizeV6: 1024})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	if !d2.Adopted() {
		t.Fatal("not adopted")
	}
}

// A datapath pinned by a limpet that kept one flow table for both families
// ("flows", 40-byte keys) is not adopted, nor opened by a view: the
// refusal names the table and 'limpet detach', and the pins stay as they
// were (its program keeps forwarding).
func TestLoadRefusesSingleFlowTableLayout(t *testing.T) {
	pin := pinOlderLayout(t, []string{"flows4", "flows6", "egress_macs"},
		[]*ebpf.MapSpec{{Name: "flows", Type: ebpf.LRUHash, KeySize: 40, ValueSize: 96, MaxEntries: 4096}})
	err := refusedAdoption(t, pin)
	if msg := err.Error(); !strings.Contains(msg, `"flows"`) || !strings.Contains(msg, "limpet detach") {
		t.Fatalf("refusal %q does not name the flow table and 'limpet detach'", msg)
	}
	before, err := os.ReadDir(pin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenPinned(pin); err == nil || !strings.Contains(err.Error(), "limpet detach") {
		t.Fatalf("OpenPinned of a single flow table: %v, want the refusal", err)
	}
	if after, err := os.ReadDir(pin); err != nil || len(after) != len(before) {
		t.Fatalf("pins changed by the refused view: %d before, %d after (%v)", len(before), len(after), err)
	}
}
