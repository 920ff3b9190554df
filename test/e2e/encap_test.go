package e2e_test

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/cmd/limpet/app"
	"github.com/limpet-lb/limpet/userspace/lab"
)

// TestEncapRouted: limpet itself tunnels to members beyond its L2, with
// forwarding ipip and with gue: members on subnets of their own behind a
// router, each with 'limpet member-decap' attached, serve real HTTP and UDP
// clients. Each client keeps its member (sticky, and the dump says so), the
// member sees the client's own address and is reached at the VIP, the
// members' decapsulators count the form the datapath sent and nothing
// malformed, and no reply passes the balancer: its reply counters stay at
// zero and its interface receives no more than the clients sent it.
func TestEncapRouted(t *testing.T) {
	for _, fw := range []string{"ipip", "gue"} {
		t.Run(fw, func(t *testing.T) {
			l := newLab(t, lab.Spec{Routed: true, MemberCount: 2, ClientAddrs4: 6, ClientAddrs6: 6})
			ctx := testCtx(t, 3*time.Minute)
			members := l.Members()
			// Written as dsr (valid without the encap settings), then
			// turned into fw with the balancer's addresses as the outer
			// sources, and checked again.
			vss := []vsConf{
				{Name: "web4", VIP: l.VIP4(), Port: 80, Protocol: "tcp", Forwarding: "dsr", Persistence: "sticky"},
				{Name: "web6", VIP: l.VIP6(), Port: 80, Protocol: "tcp", Forwarding: "dsr", Persistence: "sticky"},
				{Name: "dns4", VIP: l.VIP4(), Port: 53, Protocol: "udp", Forwarding: "dsr", Persistence: "sticky"},
			}
			cfg := writeConfig(t, l, 1, []profileConf{{"sticky", 300}}, vss)
			b := l.Balancers()[0]
			addSettings(t, cfg, "encap_source_v4: "+b.Addr4.String(), fmt.Sprintf("encap_source_v6: %q", b.Addr6))
			body, err := os.ReadFile(cfg)
			if err != nil {
				t.Fatal(err)
			}
			body = []byte(strings.ReplaceAll(string(body), "forwarding: dsr}", "forwarding: "+fw+"}"))
			if err := os.WriteFile(cfg, body, 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(limpetBin(t), "config", "check", cfg).CombinedOutput(); err != nil {
				t.Fatalf("limpet config check: %v\n%s\n%s", err, out, body)
			}
			startLimpet(t, l, cfg)
			// After limpet has moved its pins into place: the
			// decapsulators pin under its directory (the lab removes it).
			for _, m := range members {
				memberDecap(t, ctx, l, m.Name, "--iface", m.Iface.Name)
			}

			front := b.ClientIface
			before := map[string]map[string]uint64{}
			for _, m := range members {
				before[m.Name], _ = decapCounters(t, ctx, l, m.Name)
			}
			rx0 := rxPackets(t, l, lab.HostBalancer, front.Name)

			for _, fam := range []struct {
				vs   string
				vip  netip.Addr
				srcs []netip.Addr
			}{{"web4", l.VIP4(), l.ClientAddrs4()}, {"web6", l.VIP6(), l.ClientAddrs6()}} {
				dst := netip.AddrPortFrom(fam.vip, 80)
				a, err := getEach(ctx, l, fam.srcs, dst, 3, func(string) netip.AddrPort { return dst })
				if err != nil {
					t.Fatalf("%s: %v", fam.vs, err)
				}
				checkSpread(t, l, a)
				checkDump(t, l, fam.vs, dump(t, ctx, l, fam.vs), a)
			}
			for _, src := range l.ClientAddrs4() {
				dst := netip.AddrPortFrom(l.VIP4(), 53)
				r, err := l.UDPQuery(ctx, src, dst, []byte("query"))
				if err != nil {
					t.Fatalf("UDP %s from %s: %v", dst, src, err)
				}
				u, err := lab.ParseReply(string(r))
				if err != nil || u.Peer.Addr() != src || u.Local != dst {
					t.Fatalf("UDP %s from %s: %+v %v: want the member to see the client and the VIP", dst, src, u, err)
				}
			}
			// Many reply packets, all of them straight to the client.
			const big = 400_000
			r, err := l.Get(ctx, l.ClientAddrs4()[0], lab.URL(netip.AddrPortFrom(l.VIP4(), 80), fmt.Sprintf("/bytes?n=%d", big)))
			if err != nil || len(r.Body) < big {
				t.Fatalf("GET /bytes: %d bytes, %v", len(r.Body), err)
			}
			time.Sleep(500 * time.Millisecond) // the last FINs and ACKs

			var st app.StatsView
			if err := json.Unmarshal(limpetCLI(t, ctx, l, "stats", "-o", "json"), &st); err != nil {
				t.Fatal(err)
			}
			var forwarded uint64
			for _, v := range st.VirtualServers {
				if v.ReplyPackets != 0 {
					t.Errorf("%s: %d reply packets passed the balancer", v.VirtualServer, v.ReplyPackets)
				}
				forwarded += v.Packets
			}
			for name, n := range st.DroppedPackets {
				if n != 0 {
					t.Errorf("datapath dropped %d packets: %s", n, name)
				}
			}
			rx := rxPackets(t, l, lab.HostBalancer, front.Name) - rx0
			// Everything the balancer received was a client's packet it
			// tunnelled: of the download's ~300 reply packets, none came.
			if rx > forwarded+8 {
				t.Errorf("balancer received %d packets, forwarded %d: replies passed it", rx, forwarded)
			}
			stat4, stat6 := fw+"_4in4", fw+"_6in6"
			var decap4, decap6 uint64
			for _, m := range members {
				after, _ := decapCounters(t, ctx, l, m.Name)
				decap4 += after[stat4] - before[m.Name][stat4]
				decap6 += after[stat6] - before[m.Name][stat6]
				for _, name := range []string{"truncated", "bad_outer", "fragment", "bad_inner", "gue_version", "gue_proto", "gue_options", "ecn_drop", "adjust_failed"} {
					if d := after[name] - before[m.Name][name]; d != 0 {
						t.Errorf("%s: %d packets counted %s", m.Name, d, name)
					}
				}
			}
			if decap4+decap6 != forwarded {
				t.Errorf("members decapsulated %d (%s) + %d (%s), the balancer forwarded %d", decap4, stat4, decap6, stat6, forwarded)
			}
			n := uint64(len(l.ClientAddrs4()))
			if decap4 < 4*n || decap6 < 4*n {
				t.Errorf("decapsulated %d %s and %d %s, want at least %d each", decap4, stat4, decap6, stat6, 4*n)
			}
			t.Logf("%s: forwarded %d packets; members decapsulated %s %d, %s %d; balancer received %d", fw, forwarded, stat4, decap4, stat6, decap6, rx)
		})
	}
}
