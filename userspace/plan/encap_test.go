package plan

import (
	"net/netip"
	"testing"

	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/userspace/config"
)

// TestBuildEncap: ipip and gue virtual servers are DSR with their tunnel,
// the node's outer sources and GUE port go with the state, and their
// members are not NAT members (their replies never pass the balancer).
func TestBuildEncap(t *testing.T) {
	const y = `
settings: {encap_source_v4: 10.0.0.1, encap_source_v6: "fd00::1", gue_port: 7000}
pools:
  - name: far
    members: [{name: a, address: 10.20.0.5}, {name: b, address: "fd00:20::5"}]
virtual_servers:
  - {name: t4, address: 192.0.2.10, port: 80, protocol: tcp, pool: far, forwarding: ipip}
  - {name: g6, address: "2001:db8:f::10", port: 53, protocol: udp, pool: far, forwarding: gue}
`
	if _, err := config.Parse([]byte(y + "  - {name: d, address: 192.0.2.10, port: 81, protocol: tcp, pool: far, forwarding: dsr}\n")); err == nil {
		t.Fatal("dsr over a mixed pool was accepted")
	}
	cfg := parseConfig(t, y)
	st, meta, err := Build(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]loader.Encap{"t4": loader.EncapIPIP, "g6": loader.EncapGUE}
	for i, vs := range st.VirtualServers {
		name := meta.VirtualServers[i].Name
		if !vs.DSR || vs.Encap != want[name] {
			t.Errorf("%s: DSR %v encap %v, want DSR with %v", name, vs.DSR, vs.Encap, want[name])
		}
		if meta.VirtualServers[i].Forwarding != cfg.VirtualServers[i].Forwarding {
			t.Errorf("%s: meta forwarding %q", name, meta.VirtualServers[i].Forwarding)
		}
	}
	if st.Encap != (loader.EncapSettings{SourceV4: netip.MustParseAddr("10.0.0.1"), SourceV6: netip.MustParseAddr("fd00::1"), GUEPort: 7000}) {
		t.Errorf("encap settings %+v", st.Encap)
	}
	for _, m := range st.Members {
		if m.NAT {
			t.Errorf("member %s is marked NAT", m.Addr)
		}
	}
}
