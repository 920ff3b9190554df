package plan

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/userspace/bgp"
)

func TestBGPCompile(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := parseConfig(t, `
settings: {interfaces: [eth0]}
pools:
  - {name: web, members: [{name: a, address: 10.0.0.1}]}
  - {name: web6, members: [{name: a, address: "2001:db8:1::1"}]}
virtual_servers:
  - {name: web, address: 192.0.2.10, port: 80, protocol: tcp, pool: web, forwarding: dsr, bgp: {communities: ["65001:7", "65001:1:2"], local_preference: 200}}
  - {name: dns, address: 192.0.2.10, port: 53, protocol: udp, pool: web, forwarding: dsr, bgp: {communities: ["65001:8"]}}
  - {name: quiet, address: 192.0.2.11, port: 80, protocol: tcp, pool: web, bgp: {announce: false}}
  - {name: web6, address: "2001:db8::10", port: 80, protocol: tcp, pool: web6}
bgp:
  asn: 65001
  router_id: 192.0.2.2
  communities: ["65001:1"]
  damping_interval: 2.5
  neighbors:
    - {address: 192.0.2.1, peer_asn: 65000, hold_time: 3, password_file: `+pw+`}
`)
	spec, err := BGP(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if spec.Config.ASN != 65001 || spec.Config.RouterID != netip.MustParseAddr("192.0.2.2") || spec.Damping != 2500*time.Millisecond {
		t.Fatalf("%+v", spec)
	}
	n := spec.Config.Neighbors[0]
	if n.Password != "s3cret" || n.HoldTime != 3*time.Second || n.Keepalive != time.Second || !n.Carries(bgp.IPv4Unicast) {
		t.Fatalf("neighbor %+v", n)
	}
	if len(spec.VIPs) != 2 {
		t.Fatalf("VIPs %+v: want 192.0.2.10 (web, dns) and 2001:db8::10; quiet is not announced", spec.VIPs)
	}
	v := spec.VIPs[0]
	if v.Prefix != netip.MustParsePrefix("192.0.2.10/32") || !slices.Equal(v.VirtualServers, []string{"web", "dns"}) || v.LocalPref != 200 {
		t.Fatalf("%+v", v)
	}
	if !slices.Equal(v.Communities, []bgp.Community{65001<<16 | 1, 65001<<16 | 7, 65001<<16 | 8}) ||
		!slices.Equal(v.LargeCommunities, []bgp.LargeCommunity{{Global: 65001, Local1: 1, Local2: 2}}) {
		t.Fatalf("communities %v %v", v.Communities, v.LargeCommunities)
	}
	if spec.VIPs[1].Prefix != netip.MustParsePrefix("2001:db8::10/128") || spec.VIPs[1].LocalPref != 0 {
		t.Fatalf("%+v", spec.VIPs[1])
	}
	cfg.BGP = nil
	if s, err := BGP(cfg); s != nil || err != nil {
		t.Fatalf("no bgp section: %v %v", s, err)
	}
}
