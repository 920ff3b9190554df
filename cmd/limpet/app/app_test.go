package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/test/testutil"
	"github.com/limpet-lb/limpet/userspace/config"
	"github.com/limpet-lb/limpet/userspace/plan"
)

// limpet runs the CLI in process and returns its exit code and output.
func limpet(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Main(&Env{Stdout: &out, Stderr: &errOut, Context: context.Background()}, append([]string{"limpet"}, args...))
	return code, out.String(), errOut.String()
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "limpet.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const goodConfig = `
persistence_profiles:
  - name: sticky
    description: web clients
    timeout: 300
    tags: [{scope: team, tag: web}]
  - name: shared-dns
    timeout: 60
    share_persistence: true
    ipv4_prefix: 24
pools:
  - name: web
    members:
      - {name: m1, address: 10.1.0.11, port: 8080}
      - {name: m2, address: 10.1.0.12, port: 8080}
      - {name: m3, address: 10.1.0.13, port: 8080}
virtual_servers:
  - {name: web, address: 203.0.113.10, port: 80, protocol: tcp, pool: web, persistence: sticky}
  - {name: dns, address: 203.0.113.10, port: 53, protocol: udp, pool: web, persistence: shared-dns}
`

func TestConfigCheck(t *testing.T) {
	code, out, errOut := limpet(t, "config", "check", writeFile(t, goodConfig))
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "ok (2 l4 and 0 http virtual servers, 1 pools, 2 persistence profiles)") {
		t.Fatalf("output %q", out)
	}
	for _, tc := range []struct {
		name, body, field string
	}{
		{"timeout zero", strings.Replace(goodConfig, "timeout: 300", "timeout: 0", 1), "persistence_profiles[0] (sticky).timeout"},
		{"timeout negative", strings.Replace(goodConfig, "timeout: 300", "timeout: -5", 1), "persistence_profiles[0] (sticky).timeout"},
		{"max entries zero", strings.Replace(goodConfig, "timeout: 300", "timeout: 300\n    max_entries: 0", 1), "persistence_profiles[0] (sticky).max_entries"},
		{"ipv4 prefix 33", strings.Replace(goodConfig, "ipv4_prefix: 24", "ipv4_prefix: 33", 1), "persistence_profiles[1] (shared-dns).ipv4_prefix"},
		{"bad address", strings.Replace(goodConfig, "10.1.0.12", "10.1.0.300", 1), "pools[0] (web).members[1].address"},
		{"unknown pool", strings.Replace(goodConfig, "pool: web, persistence: sticky", "pool: nope, persistence: sticky", 1), "virtual_servers[0] (web).pool"},
		{"bad port", strings.Replace(goodConfig, "port: 80,", "port: 70000,", 1), "virtual_servers[0] (web).port"},
		{"unknown field", strings.Replace(goodConfig, "timeout: 300", "timeout: 300\n    timout: 5", 1), "timout"},
		{"bad protocol", strings.Replace(goodConfig, "protocol: udp", "protocol: sctp", 1), "virtual_servers[1] (dns).protocol"},
		{"not yaml", "pools: [", "parse"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := limpet(t, "config", "check", writeFile(t, tc.body))
			if code != ExitUsage {
				t.Fatalf("exit %d, want %d", code, ExitUsage)
			}
			if !strings.Contains(errOut, tc.field) {
				t.Fatalf("error %q does not name %q", errOut, tc.field)
			}
		})
	}
	if code, _, errOut := limpet(t, "config", "check", "/nonexistent/limpet.yaml"); code != ExitUsage || !strings.Contains(errOut, "/nonexistent/limpet.yaml") {
		t.Fatalf("missing file: exit %d, %q", code, errOut)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"nosuchcommand"},
		{"persistence", "dump", "-o", "yaml"},
		{"persistence", "dump", "--tag", "="},
		{"persistence", "dump", "--client", "not-an-ip"},
		{"persistence", "delete"},
		{"config", "check"},
		{"run"},
		{"run", "-c", "x.yaml", "--xdp-mode", "turbo"},
		{"version", "extra"},
		{"member", "disable", "only-pool"},
	} {
		code, _, errOut := limpet(t, args...)
		if code != ExitUsage {
			t.Errorf("%v: exit %d (%s), want %d", args, code, strings.TrimSpace(errOut), ExitUsage)
		}
		if errOut == "" {
			t.Errorf("%v: no message", args)
		}
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := limpet(t, "version")
	if code != 0 || !strings.HasPrefix(out, "limpet ") {
		t.Fatalf("exit %d, %q", code, out)
	}
}

// pinned loads a datapath with cfg applied, at a private pin path.
func pinned(t *testing.T, body string) (*loader.Datapath, string) {
	t.Helper()
	testutil.RequireRoot(t)
	cfg, err := config.Parse([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	// The pid keeps two runs of these tests (two checkouts on one machine)
	// off each other's pins: a name of the test alone made one run detach
	// and lock the other's datapath.
	pin := filepath.Join("/sys/fs/bpf", fmt.Sprintf("limpet-clitest-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "-")))
	_ = loader.Detach(pin) // what a crashed run with this pid left
	dp, err := loader.Load(loader.Options{PinPath: pin, FlowTableSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := dp.Detach(); err != nil {
			t.Error(err)
		}
	})
	st, meta, err := plan.Build(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := dp.Apply(st); err != nil {
		t.Fatal(err)
	}
	doc, _ := meta.Marshal()
	if err := dp.WriteMeta(doc); err != nil {
		t.Fatal(err)
	}
	return dp, pin
}

// send runs one packet through the datapath, as a client would send it.
func send(t *testing.T, dp *loader.Datapath, src, dst netip.Addr, sport, dport uint16, udp bool) {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, SrcIP: src.AsSlice(), DstIP: dst.AsSlice(), Protocol: layers.IPProtocolTCP}
	var l4 gopacket.SerializableLayer
	if udp {
		ip.Protocol = layers.IPProtocolUDP
		u := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
		_ = u.SetNetworkLayerForChecksum(ip)
		l4 = u
	} else {
		tcp := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), SYN: true, Window: 100}
		_ = tcp.SetNetworkLayerForChecksum(ip)
		l4 = tcp
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, l4, gopacket.Payload(make([]byte, 12))); err != nil {
		t.Fatal(err)
	}
	if _, _, err := dp.RunPacket(buf.Bytes(), 0); err != nil {
		t.Fatal(err)
	}
}

func dump(t *testing.T, pin string, args ...string) DumpView {
	t.Helper()
	code, out, errOut := limpet(t, append([]string{"--pin-path", pin, "persistence", "dump", "-o", "json"}, args...)...)
	if code != 0 {
		t.Fatalf("dump exit %d: %s", code, errOut)
	}
	var d DumpView
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatalf("dump output is not JSON: %v\n%s", err, out)
	}
	return d
}

func TestPersistenceDumpAfterTraffic(t *testing.T) {
	dp, pin := pinned(t, goodConfig)
	vip := netip.MustParseAddr("203.0.113.10")
	c1, c2 := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("198.51.100.8")
	send(t, dp, c1, vip, 1000, 80, false)
	send(t, dp, c1, vip, 1001, 80, false)
	send(t, dp, c2, vip, 1000, 80, false)
	send(t, dp, c1, vip, 1002, 53, true)
	send(t, dp, c2, vip, 1002, 53, true) // same /24: shares c1's entry

	d := dump(t, pin)
	if d.Count != 3 || len(d.Entries) != 3 {
		t.Fatalf("want 3 entries (2 web, 1 dns /24), got %+v", d)
	}
	byClient := map[string]EntryView{}
	for _, e := range d.Entries {
		byClient[e.Profile+" "+e.Client] = e
	}
	w1, ok := byClient["sticky 198.51.100.7"]
	if !ok || w1.VirtualServer != "web" || w1.Connections != 2 || w1.State != "held" || w1.ExpiresInSecond != nil {
		t.Fatalf("client 1 web entry: %+v", w1)
	}
	if !strings.HasPrefix(w1.Server, "10.1.0.1") || !strings.HasSuffix(w1.Server, ":8080") || w1.Member == "" {
		t.Fatalf("server %q member %q", w1.Server, w1.Member)
	}
	if w2 := byClient["sticky 198.51.100.8"]; w2.Server == w1.Server || w2.Connections != 1 {
		t.Fatalf("client 2 should be balanced to another member with 1 connection: %+v", w2)
	}
	dns, ok := byClient["shared-dns 198.51.100.0/24"]
	if !ok || dns.Connections != 2 || dns.Tags != nil {
		t.Fatalf("dns /24 entry: %+v", dns)
	}
	if w1.Tags == nil || w1.Tags[0] != "team=web" {
		t.Fatalf("tags %v", w1.Tags)
	}

	// Filters.
	for _, f := range []struct {
		flag, value string
		want        int
	}{
		{"--vs", "dns", 1},
		{"--profile", "sticky", 2},
		{"--client", "198.51.100.8", 2}, // its own entry and the /24 one
		{"--client", "192.0.2.0/24", 0},
		{"--tag", "team=web", 2},
		{"--tag", "team=db", 0},
	} {
		if got := dump(t, pin, f.flag, f.value); got.Count != f.want {
			t.Fatalf("%s %s: %d entries, want %d", f.flag, f.value, got.Count, f.want)
		}
	}
	if code, _, errOut := limpet(t, "--pin-path", pin, "persistence", "dump", "--vs", "nope"); code != ExitUsage || !strings.Contains(errOut, `"nope"`) {
		t.Fatalf("--vs nope: %d %q", code, errOut)
	}

	// The table form, as an operator reads it.
	code, out, _ := limpet(t, "--pin-path", pin, "persistence", "dump")
	if code != 0 || !strings.Contains(out, "held by 2 connections") || !strings.Contains(out, "3 entries") {
		t.Fatalf("table output:\n%s", out)
	}

	// Delete and flush.
	if code, out, _ := limpet(t, "--pin-path", pin, "persistence", "delete", "--client", "198.51.100.8", "--vs", "web"); code != 0 || !strings.Contains(out, "deleted 198.51.100.8") {
		t.Fatalf("delete: %d %q", code, out)
	}
	if code, _, errOut := limpet(t, "--pin-path", pin, "persistence", "delete", "--client", "198.51.100.99", "--vs", "web"); code != ExitRuntime || !strings.Contains(errOut, "no persistence entry for 198.51.100.99") {
		t.Fatalf("delete of an absent client: %d %q", code, errOut)
	}
	if code, out, _ := limpet(t, "--pin-path", pin, "persistence", "flush", "--profile", "shared-dns"); code != 0 || !strings.Contains(out, "flushed 1 entry from 1 table") {
		t.Fatalf("flush: %d %q", code, out)
	}
	if got := dump(t, pin); got.Count != 1 || got.Entries[0].Client != "198.51.100.7" {
		t.Fatalf("after delete and flush: %+v", got)
	}
}

func TestStatsJSON(t *testing.T) {
	dp, pin := pinned(t, goodConfig)
	vip := netip.MustParseAddr("203.0.113.10")
	for i := 0; i < 6; i++ {
		send(t, dp, netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + i)}), vip, 2000, 80, false)
	}
	code, out, errOut := limpet(t, "--pin-path", pin, "stats", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var s StatsView
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatal(err)
	}
	var web VSStatsView
	for _, v := range s.VirtualServers {
		if v.VirtualServer == "web" {
			web = v
		}
	}
	if web.Packets != 6 || web.NewConnections != 6 || web.PersistMisses != 6 || web.Address != "203.0.113.10" || web.Port != 80 || web.Protocol != "tcp" {
		t.Fatalf("web counters %+v", web)
	}
	var perMember uint64
	for _, m := range s.Members {
		if m.NewConnections != 2 || m.ActiveConnections != 2 {
			t.Errorf("member %s took %d new connections (%d open); round robin over 3 should give 2 each", m.Member, m.NewConnections, m.ActiveConnections)
		}
		perMember += m.NewConnections
	}
	if perMember != 6 {
		t.Fatalf("members took %d connections", perMember)
	}
	if _, ok := s.DroppedPackets["fragment"]; !ok {
		t.Fatalf("drop counters missing: %v", s.DroppedPackets)
	}
	if _, ok := s.ExceptionPackets["ttl_expired"]; !ok {
		t.Fatalf("exception counters missing: %v", s.ExceptionPackets)
	}
}

func TestMemberDisableEnable(t *testing.T) {
	dp, pin := pinned(t, goodConfig)
	vip := netip.MustParseAddr("203.0.113.10")
	if code, out, errOut := limpet(t, "--pin-path", pin, "member", "disable", "web", "m2"); code != 0 || !strings.Contains(out, "m2 (10.1.0.12:8080) of pool web disabled") {
		t.Fatalf("disable: %d %q %q", code, out, errOut)
	}
	for i := 0; i < 6; i++ {
		send(t, dp, netip.AddrFrom4([4]byte{198, 51, 100, byte(20 + i)}), vip, 3000, 80, false)
	}
	for _, e := range dump(t, pin, "--vs", "web").Entries {
		if e.Member == "m2" {
			t.Fatalf("disabled member got client %s", e.Client)
		}
	}
	if code, _, _ := limpet(t, "--pin-path", pin, "member", "enable", "web", "10.1.0.12:8080"); code != 0 {
		t.Fatal("enable failed")
	}
	got := 0
	for i := 0; i < 6; i++ {
		send(t, dp, netip.AddrFrom4([4]byte{198, 51, 100, byte(40 + i)}), vip, 3000, 80, false)
	}
	for _, e := range dump(t, pin, "--vs", "web").Entries {
		if e.Member == "m2" {
			got++
		}
	}
	if got == 0 {
		t.Fatal("re-enabled member took no new clients")
	}
	if code, _, errOut := limpet(t, "--pin-path", pin, "member", "disable", "web", "m9"); code != ExitUsage || !strings.Contains(errOut, `no member "m9"`) {
		t.Fatalf("unknown member: %d %q", code, errOut)
	}
}
