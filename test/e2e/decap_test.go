package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/limpet-lb/limpet/userspace/lab"
)

// decapView is what this test reads of 'limpet member-decap --status -o json'.
type decapView struct {
	Interfaces []struct {
		Iface     string `json:"iface"`
		Ifindex   int    `json:"ifindex"`
		GUEPort   uint16 `json:"gue_port"`
		ProgramID uint32 `json:"program_id"`
		Counters  map[string]struct {
			Packets uint64 `json:"packets_total"`
		} `json:"counters"`
	} `json:"interfaces"`
}

func decapPinPath(l *lab.Lab, member string) string {
	return filepath.Join(l.PinDir(), "decap-"+member)
}

// memberDecap runs the real CLI in a member's namespace.
func memberDecap(t *testing.T, ctx context.Context, l *lab.Lab, member string, args ...string) string {
	t.Helper()
	out, err := l.RunCommand(ctx, member, limpetBin(t), append([]string{"member-decap", "--decap-pin-path", decapPinPath(l, member)}, args...)...)
	if err != nil {
		t.Fatalf("%s: limpet member-decap %s: %v\n%s", member, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// startTunnelling starts limpet on cfg, a config that tunnels to the
// members, and then attaches 'limpet member-decap' to every member: after
// limpet has moved its pins into place, since the decapsulators pin under
// its directory (the lab removes it).
func startTunnelling(t *testing.T, ctx context.Context, l *lab.Lab, cfg string) {
	t.Helper()
	startLimpet(t, l, cfg)
	for _, m := range l.Members() {
		memberDecap(t, ctx, l, m.Name, "--iface", m.Iface.Name)
	}
}

// decapCounters sums the named counters of a member's decapsulator.
func decapCounters(t *testing.T, ctx context.Context, l *lab.Lab, member string) (map[string]uint64, uint32) {
	t.Helper()
	var v decapView
	out := memberDecap(t, ctx, l, member, "--status", "-o", "json")
	if err := json.Unmarshal([]byte(out), &v); err != nil || len(v.Interfaces) != 1 {
		t.Fatalf("%s: member-decap --status -o json: %v\n%s", member, err, out)
	}
	c := map[string]uint64{}
	for name, n := range v.Interfaces[0].Counters {
		c[name] = n.Packets
	}
	return c, v.Interfaces[0].ProgramID
}

// decapWatch tells what a tunnel test's traffic added: it holds where every
// member's decapsulator counters and the balancer's front interface stood
// before the traffic.
type decapWatch struct {
	l      *lab.Lab
	front  string
	rx0    uint64
	before map[string]map[string]uint64
}

// watchDecap reads the counters of every member's decapsulator (attached
// already) and of the balancer's front interface.
func watchDecap(t *testing.T, ctx context.Context, l *lab.Lab) *decapWatch {
	t.Helper()
	w := &decapWatch{l: l, front: l.Balancers()[0].ClientIface.Name, before: map[string]map[string]uint64{}}
	for _, m := range l.Members() {
		w.before[m.Name], _ = decapCounters(t, ctx, l, m.Name)
	}
	w.rx0 = rxPackets(t, l, lab.HostBalancer, w.front)
	return w
}

// rx is what the balancer's front interface has received since.
func (w *decapWatch) rx(t *testing.T) uint64 {
	t.Helper()
	return rxPackets(t, w.l, lab.HostBalancer, w.front) - w.rx0
}

// decapsulated sums over the members what each of the counters named
// counted since, and fails for every packet a member's decapsulator
// refused.
func (w *decapWatch) decapsulated(t *testing.T, ctx context.Context, stats ...string) []uint64 {
	t.Helper()
	sums := make([]uint64, len(stats))
	for _, m := range w.l.Members() {
		before := w.before[m.Name]
		after, _ := decapCounters(t, ctx, w.l, m.Name)
		for i, s := range stats {
			sums[i] += after[s] - before[s]
		}
		for _, name := range []string{"truncated", "bad_outer", "fragment", "bad_inner", "gue_version", "gue_proto", "gue_options", "ecn_drop", "adjust_failed"} {
			if d := after[name] - before[name]; d != 0 {
				t.Errorf("%s: %d packets counted %s", m.Name, d, name)
			}
		}
	}
	return sums
}

// checkDecapsulated checks the members' sums of the two counters of a
// tunnel form (IPv4 and IPv6 clients', or the two families' of a VIP
// across families): each of the lab's clients sent at least a TCP
// handshake, request and close, and a UDP query, in each, and the members
// decapsulated no more than was tunnelled to them.
func checkDecapsulated(t *testing.T, l *lab.Lab, stat4, stat6 string, decap4, decap6, tunnelled uint64) {
	t.Helper()
	if decap4+decap6 > tunnelled {
		t.Errorf("members decapsulated %d (%s) + %d (%s), more than the %d tunnelled", decap4, stat4, decap6, stat6, tunnelled)
	}
	n := uint64(len(l.ClientAddrs4()))
	if decap4 < 4*n || decap6 < 4*n {
		t.Errorf("decapsulated %d %s and %d %s, want at least %d each", decap4, stat4, decap6, stat6, 4*n)
	}
}

// waitQuiet waits until the relay has tunnelled nothing for 300ms and
// returns its count.
func waitQuiet(t *testing.T, r *lab.Relay) uint64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	n := r.Relayed()
	for time.Now().Before(deadline) {
		time.Sleep(300 * time.Millisecond)
		m := r.Relayed()
		if m == n {
			return n
		}
		n = m
	}
	t.Fatalf("the relay never went quiet (%d packets)", n)
	return 0
}

func rxPackets(t *testing.T, l *lab.Lab, host, iface string) uint64 {
	t.Helper()
	var n uint64
	if err := l.Run(host, func() error {
		lk, err := netlink.LinkByName(iface)
		if err != nil {
			return err
		}
		n = lk.Attrs().Statistics.RxPackets
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// Members beyond the balancer's L2 get the client's packets inside IPIP or
// GUE (from an encapsulating relay in the balancer host, standing in for
// the datapath's forwarding ipip/gue), strip the tunnel with the tc
// decapsulator that 'limpet member-decap' left attached, and answer real
// TCP and UDP clients directly, through the router: the member sees the
// client's own address, and no reply passes the balancer.
func TestMemberDecapRouted(t *testing.T) {
	l := newLab(t, lab.Spec{Routed: true, MemberCount: 2, ClientAddrs4: 6, ClientAddrs6: 6})
	ctx := testCtx(t, 3*time.Minute)
	members := l.Members()
	for _, m := range members {
		out := memberDecap(t, ctx, l, m.Name, "--iface", m.Iface.Name)
		if !strings.Contains(out, "GUE (UDP port 6080) to any destination on "+m.Iface.Name) {
			t.Fatalf("%s: attach said %q", m.Name, out)
		}
	}

	forms := []struct {
		name         string
		spec         lab.RelaySpec
		stat4, stat6 string // the counters of IPv4 and IPv6 clients' packets
	}{
		{"ipip over ipv4", lab.RelaySpec{Encap: lab.EncapIPIP}, "ipip_4in4", "ipip_6in4"},
		{"ipip over ipv6", lab.RelaySpec{Encap: lab.EncapIPIP, OuterV6: true}, "ipip_4in6", "ipip_6in6"},
		{"gue over ipv4", lab.RelaySpec{Encap: lab.EncapGUE}, "gue_4in4", "gue_6in4"},
		{"gue over ipv6", lab.RelaySpec{Encap: lab.EncapGUE, OuterV6: true}, "gue_4in6", "gue_6in6"},
		{"gue variant 1 over ipv4", lab.RelaySpec{Encap: lab.EncapGUE, GUEVariant: 1}, "gue_4in4", "gue_6in4"},
	}
	for _, f := range forms {
		t.Run(f.name, func(t *testing.T) {
			w := watchDecap(t, ctx, l)
			// Counted from its start, after the counters above: the
			// relay's count covers every packet they will see.
			relay, err := l.StartEncapRelay(f.spec)
			if err != nil {
				t.Fatal(err)
			}
			defer relay.Close()

			seen := map[string]bool{}
			srcs := append(l.ClientAddrs4(), l.ClientAddrs6()...)
			for _, src := range srcs {
				vip := l.VIP4()
				if src.Is6() {
					vip = l.VIP6()
				}
				r, err := l.Get(ctx, src, lab.URL(netip.AddrPortFrom(vip, 80), "/"))
				if err != nil {
					t.Fatalf("GET %s from %s: %v", vip, src, err)
				}
				if r.Status != 200 || r.Peer.Addr() != src || r.Local != netip.AddrPortFrom(vip, 80) {
					t.Fatalf("GET %s from %s: %d %+v: want the member to see the client's address and the VIP", vip, src, r.Status, r.Reply)
				}
				seen[r.Member] = true
				b, err := l.UDPQuery(ctx, src, netip.AddrPortFrom(vip, 53), []byte("query"))
				if err != nil {
					t.Fatalf("UDP %s:53 from %s: %v", vip, src, err)
				}
				u, err := lab.ParseReply(string(b))
				if err != nil || u.Peer.Addr() != src || u.Local != netip.AddrPortFrom(vip, 53) {
					t.Fatalf("UDP %s:53 from %s: %+v %v", vip, src, u, err)
				}
			}
			// A response of many packets, all of them straight to the client.
			const big = 400_000
			r, err := l.Get(ctx, srcs[0], lab.URL(netip.AddrPortFrom(l.VIP4(), 80), fmt.Sprintf("/bytes?n=%d", big)))
			if err != nil || len(r.Body) < big {
				t.Fatalf("GET /bytes: %d bytes, %v", len(r.Body), err)
			}
			if len(seen) != len(members) {
				t.Errorf("flows reached %v only, want every member", seen)
			}
			if n, err := relay.Errors(); n != 0 {
				t.Errorf("relay: %d packets not sent (%v)", n, err)
			}
			// Connections end after the requests return (FIN, last ACK):
			// count once nothing has been tunnelled for a while, and read
			// the relay's count last, so that it includes whatever the
			// balancer received and the members decapsulated before.
			waitQuiet(t, relay)
			rx := w.rx(t)
			d := w.decapsulated(t, ctx, f.stat4, f.stat6)
			decap4, decap6 := d[0], d[1]
			relayed := relay.Relayed()
			// Everything the balancer received it tunnelled: no reply (of
			// the ~300 packets of the download alone) came its way.
			if rx > relayed+2 {
				t.Errorf("balancer received %d packets but tunnelled %d: replies passed it", rx, relayed)
			}
			checkDecapsulated(t, l, f.stat4, f.stat6, decap4, decap6, relayed)
			t.Logf("%s: tunnelled %d packets; decapsulated %s %d, %s %d; balancer received %d", f.name, relayed, f.stat4, decap4, f.stat6, decap6, rx)
		})
	}

	// Attaching again swaps this binary's program in, keeps the counters
	// and takes the new port: GUE on 6080 is no longer decapsulated.
	m := members[0]
	c0, prog0 := decapCounters(t, ctx, l, m.Name)
	memberDecap(t, ctx, l, m.Name, "--iface", m.Iface.Name, "--gue-port", "7000")
	c1, prog1 := decapCounters(t, ctx, l, m.Name)
	if prog1 == prog0 || c1["gue_4in4"] < c0["gue_4in4"] || c1["gue_4in4"] == 0 {
		t.Errorf("re-attach: program %d -> %d, gue_4in4 %d -> %d: want a new program and the counters kept", prog0, prog1, c0["gue_4in4"], c1["gue_4in4"])
	}
	relay, err := l.StartEncapRelay(lab.RelaySpec{Encap: lab.EncapGUE, GUEPort: 7000, Members: []string{m.Name}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Get(ctx, l.ClientAddrs4()[0], lab.URL(netip.AddrPortFrom(l.VIP4(), 80), "/")); err != nil {
		t.Errorf("GUE on port 7000 after re-attach: %v", err)
	}
	relay.Close()

	// --only-to: the member decapsulates only what is sent to the address
	// listed, and counts the rest.
	if out := memberDecap(t, ctx, l, m.Name, "--iface", m.Iface.Name, "--only-to", m.Addr4.String()); !strings.Contains(out, "to "+m.Addr4.String()+" on ") {
		t.Fatalf("attach --only-to said %q", out)
	}
	c2, _ := decapCounters(t, ctx, l, m.Name)
	for _, outerV6 := range []bool{false, true} {
		relay, err := l.StartEncapRelay(lab.RelaySpec{Encap: lab.EncapIPIP, OuterV6: outerV6, Members: []string{m.Name}})
		if err != nil {
			t.Fatal(err)
		}
		b, err := l.UDPQuery(ctx, l.ClientAddrs4()[0], netip.AddrPortFrom(l.VIP4(), 53), []byte("query"))
		if !outerV6 && err != nil {
			t.Errorf("--only-to %s: UDP tunnelled to it: %v", m.Addr4, err)
		}
		if outerV6 && err == nil {
			t.Errorf("--only-to %s: UDP tunnelled to %s answered: %q", m.Addr4, m.Addr6, b)
		}
		relay.Close()
	}
	c3, _ := decapCounters(t, ctx, l, m.Name)
	if c3["other_destination"] == c2["other_destination"] || c3["ipip_4in4"] == c2["ipip_4in4"] || c3["ipip_4in6"] != c2["ipip_4in6"] {
		t.Errorf("--only-to %s: other_destination %d -> %d, ipip_4in4 %d -> %d, ipip_4in6 %d -> %d", m.Addr4,
			c2["other_destination"], c3["other_destination"], c2["ipip_4in4"], c3["ipip_4in4"], c2["ipip_4in6"], c3["ipip_4in6"])
	}

	for _, m := range members {
		if out := memberDecap(t, ctx, l, m.Name, "--iface", m.Iface.Name, "--detach"); !strings.Contains(out, "detached") {
			t.Errorf("%s: detach said %q", m.Name, out)
		}
	}
	// Detached, a tunnelled packet reaches a stack that has no tunnel
	// module: nothing answers.
	relay, err = l.StartEncapRelay(lab.RelaySpec{Encap: lab.EncapIPIP})
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	if b, err := l.UDPQuery(ctx, l.ClientAddrs4()[0], netip.AddrPortFrom(l.VIP4(), 53), []byte("query")); err == nil {
		t.Errorf("UDP to the VIP answered with the decapsulators detached: %q", b)
	}
	if relay.Relayed() == 0 {
		t.Error("the relay tunnelled nothing after detach: the last check proved nothing")
	}
}

// A bulk upload, the direction that is tunnelled: 16 MiB per form, about
// 11,700 full-sized tunnel packets each, must arrive whole and in order
// (the member checks a SHA-256 of the stream), and nothing may be counted
// malformed. (The member's veth has GRO on, but here it coalesces none of
// them: the counters count one packet per segment.)
func TestMemberDecapBulkUpload(t *testing.T) {
	l := newLab(t, lab.Spec{Routed: true, MemberCount: 1})
	ctx := testCtx(t, 2*time.Minute)
	m := l.Members()[0]
	memberDecap(t, ctx, l, m.Name, "--iface", m.Iface.Name)
	const size = 16 << 20
	for _, f := range []struct {
		name string
		spec lab.RelaySpec
		vip  netip.Addr
		src  netip.Addr
	}{
		{"ipip 4in4", lab.RelaySpec{Encap: lab.EncapIPIP}, l.VIP4(), l.ClientAddrs4()[0]},
		{"ipip 6in6", lab.RelaySpec{Encap: lab.EncapIPIP, OuterV6: true}, l.VIP6(), l.ClientAddrs6()[0]},
		{"gue 4in6", lab.RelaySpec{Encap: lab.EncapGUE, OuterV6: true}, l.VIP4(), l.ClientAddrs4()[1]},
		{"gue 6in4", lab.RelaySpec{Encap: lab.EncapGUE}, l.VIP6(), l.ClientAddrs6()[1]},
	} {
		t.Run(f.name, func(t *testing.T) {
			relay, err := l.StartEncapRelay(f.spec)
			if err != nil {
				t.Fatal(err)
			}
			defer relay.Close()
			upload(t, ctx, l, f.src, netip.AddrPortFrom(f.vip, 9000), size)
		})
	}
	counts, _ := decapCounters(t, ctx, l, m.Name)
	for _, name := range []string{"truncated", "bad_outer", "fragment", "bad_inner", "adjust_failed"} {
		if counts[name] != 0 {
			t.Errorf("%d packets counted %s", counts[name], name)
		}
	}
	t.Logf("decapsulator counters after 4 x %d MiB: %v", size>>20, counts)
}
