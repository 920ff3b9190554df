package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const bgpBase = `
settings: {interfaces: [eth0]}
pools:
  - {name: web, members: [{name: a, address: 10.0.0.1}]}
virtual_servers:
  - {name: web, address: 192.0.2.10, port: 80, protocol: tcp, pool: web, forwarding: dsr, bgp: {communities: ["65001:7"], local_preference: 200}}
  - {name: dns, address: 192.0.2.10, port: 53, protocol: udp, pool: web, forwarding: dsr}
`

func TestBGPDefaultsAndCluster(t *testing.T) {
	cfg, err := Parse([]byte(bgpBase + `
bgp:
  asn: 65001
  router_id: 192.0.2.2
  neighbors:
    - {address: 192.0.2.1, peer_asn: 65000}
    - {address: "2001:db8::1", peer_asn: 65000}
`))
	if err != nil {
		t.Fatal(err)
	}
	b := cfg.BGP
	if *b.ListenPort != 179 || b.DampingInterval != 5 || *b.ShutdownGrace != 5 || b.SyncTimeout != 30 {
		t.Fatalf("defaults: %+v", b)
	}
	n := b.Neighbors[0]
	if *n.HoldTime != 9 || n.KeepaliveInterval != 3 || n.ConnectRetry != 5 || n.Port != 179 || n.Families[0] != BGPFamilyIPv4Unicast {
		t.Fatalf("neighbor defaults: %+v", n)
	}
	if b.Neighbors[1].Families[0] != BGPFamilyIPv6Unicast {
		t.Fatalf("an IPv6 neighbor carries ipv6_unicast: %+v", b.Neighbors[1])
	}
	// A cluster balances new clients with ip_hash unless told otherwise.
	if cfg.Pools[0].Algorithm != AlgoIPHash || !cfg.InCluster() {
		t.Fatalf("algorithm %q in a cluster", cfg.Pools[0].Algorithm)
	}
	cfg, err = Parse([]byte(strings.Replace(bgpBase, "{name: web, members", "{name: web, algorithm: round_robin, members", 1) + `
bgp: {asn: 65001, router_id: 192.0.2.2, neighbors: [{address: 192.0.2.1, peer_asn: 65000}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	if w := strings.Join(cfg.Warnings(), "\n"); !strings.Contains(w, "pools[0] (web).algorithm: round_robin in a cluster") {
		t.Fatalf("warnings: %s", w)
	}
	// Without a cluster the default stays round robin.
	cfg, err = Parse([]byte(strings.ReplaceAll(bgpBase, ", bgp: {communities: [\"65001:7\"], local_preference: 200}", "")))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Pools[0].Algorithm != AlgoRoundRobin {
		t.Fatalf("algorithm %q outside a cluster", cfg.Pools[0].Algorithm)
	}
}

func TestBGPErrorsNameTheField(t *testing.T) {
	dir := t.TempDir()
	long := filepath.Join(dir, "long.pw")
	if err := os.WriteFile(long, []byte(strings.Repeat("x", 81)), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ yaml, want string }{
		{`bgp: {asn: 0, router_id: 192.0.2.2, neighbors: [{address: 192.0.2.1, peer_asn: 65000}]}`, "bgp.asn: 0 must be between 1 and 4294967294"},
		{`bgp: {asn: 65001, router_id: "2001:db8::2", neighbors: [{address: 192.0.2.1, peer_asn: 65000}]}`, "bgp.router_id"},
		{`bgp: {asn: 65001, router_id: 192.0.2.2}`, "bgp.neighbors: at least one neighbor is required"},
		{`bgp: {asn: 65001, router_id: 192.0.2.2, neighbors: [{address: 192.0.2.1, peer_asn: 4294967295}]}`, "bgp.neighbors[0].peer_asn"},
		{`bgp: {asn: 65001, router_id: 192.0.2.2, neighbors: [{address: nope, peer_asn: 65000}]}`, "bgp.neighbors[0].address: \"nope\" is not an IP address"},
		{`bgp: {asn: 65001, router_id: 192.0.2.2, neighbors: [{address: 192.0.2.1, peer_asn: 65000}, {address: 192.0.2.1, peer_asn: 65000}]}`, "bgp.neighbors[1].address: 192.0.2.1 is listed twice"},
		{`bgp: {asn: 65001, router_id: 192.0.2.2, neighbors: [{address: 192.0.2.1, peer_asn: 65000, hold_time: 2}]}`, "bgp.neighbors[0].hold_time: 2 must be 0"},
		{`bgp: {asn: 65001, router_id: 192.0.2.2, neighbors: [{address: 192.0.2.1, peer_asn: 65000, hold_time: 9, keepalive_interval: 6}]}`, "bgp.neighbors[0].keepalive_interval"},
		{`bgp: {asn: 65001, router_id: 192.0.2.2, neighbors: [{address: 192.0.2.1, peer_asn: 65000, password: a, password_file: /x}]}`, "bgp.neighbors[0]: set password or password_file, not both"},
		{`bgp: {asn: 65001, router_id: 192.0.2.2, neighbors: [{address: 192.0.2.1, peer_asn: 65000, password_file: ` + long + `}]}`, "bgp.neighbors[0].password_file: " + long + " holds 81 bytes"},
		{`bgp: {asn: 65001, router_id: 192.0.2.2, neighbors: [{address: 192.0.2.1, peer_asn: 65000, families: [ipv6_unicast]}]}`, "bgp.neighbors[0].families[0]: an IPv4 session carrying ipv6_unicast needs bgp.next_hop_ipv6"},
		{`bgp: {asn: 65001, router_id: 192.0.2.2, neighbors: [{address: 192.0.2.1, peer_asn: 65000, families: [vpnv4]}]}`, "bgp.neighbors[0].families[0]: \"vpnv4\" must be"},
		{`bgp: {asn: 65001, router_id: 192.0.2.2, communities: ["65000:70000"], neighbors: [{address: 192.0.2.1, peer_asn: 65000}]}`, "bgp.communities[0]: \"65000:70000\" part \"70000\" is not a number of 16 bits"},
		{`bgp: {asn: 65001, router_id: 192.0.2.2, damping_interval: 0.01, neighbors: [{address: 192.0.2.1, peer_asn: 65000}]}`, "bgp.damping_interval"},
		{`bgp: {asn: 65001, router_id: 192.0.2.2, listen_port: 70000, neighbors: [{address: 192.0.2.1, peer_asn: 65000}]}`, "bgp.listen_port"},
		{`bgp: {asn: 65001, router_id: 192.0.2.2, next_hop_ipv6: 192.0.2.9, neighbors: [{address: 192.0.2.1, peer_asn: 65000}]}`, "bgp.next_hop_ipv6"},
	} {
		_, err := Parse([]byte(bgpBase + tc.yaml + "\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\n got %v\nwant %q", tc.yaml, err, tc.want)
		}
	}
	// A virtual server's bgp block needs the section; local preferences of
	// one address must agree.
	_, err := Parse([]byte(bgpBase))
	if err == nil || !strings.Contains(err.Error(), "virtual_servers[0] (web).bgp: needs the top-level bgp section") {
		t.Errorf("got %v", err)
	}
	y := strings.Replace(bgpBase, "forwarding: dsr}\n", "forwarding: dsr, bgp: {local_preference: 100}}\n", 1) +
		"bgp: {asn: 65001, router_id: 192.0.2.2, neighbors: [{address: 192.0.2.1, peer_asn: 65000}]}\n"
	_, err = Parse([]byte(y))
	if err == nil || !strings.Contains(err.Error(), "virtual_servers[1] (dns).bgp.local_preference: 100 differs from virtual_servers[0]'s 200") {
		t.Errorf("got %v", err)
	}
}
