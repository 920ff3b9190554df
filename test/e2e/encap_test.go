package e2e_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/cmd/limpet/app"
	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/userspace/lab"
)

// TestEncapRouted: limpet itself tunnels to members beyond its L2, with
// forwarding ipip and with gue: members on subnets of their own behind a
// router, each with 'limpet member-decap' attached, serve real HTTP and UDP
// clients. Each client keeps its member (sticky, and the dump says so), the
// member sees the client's own address and is reached at the VIP, the
// members' decapsulators count the form the datapath sent and nothing
// malformed, and no reply passes the balancer: its reply counters stay at
// zero and its interface receives no more than the clients sent it. An
// upload of full-sized segments first gets limpet's ICMP too-big (counted),
// the client's route cache learns 1500 less the tunnel, and the upload
// arrives whole (SHA-256).
func TestEncapRouted(t *testing.T) {
	for _, fw := range []string{"ipip", "gue"} {
		t.Run(fw, func(t *testing.T) {
			l := newLab(t, lab.Spec{Routed: true, MemberCount: 2, ClientAddrs4: 6, ClientAddrs6: 6})
			ctx := testCtx(t, 3*time.Minute)
			// Written as dsr (valid without the encap settings), then
			// turned into fw with the balancer's addresses as the outer
			// sources, and checked again.
			vss := []vsConf{
				{Name: "web4", VIP: l.VIP4(), Port: 80, Protocol: "tcp", Forwarding: "dsr", Persistence: "sticky"},
				{Name: "web6", VIP: l.VIP6(), Port: 80, Protocol: "tcp", Forwarding: "dsr", Persistence: "sticky"},
				{Name: "dns4", VIP: l.VIP4(), Port: 53, Protocol: "udp", Forwarding: "dsr", Persistence: "sticky"},
				{Name: "bulk4", VIP: l.VIP4(), Port: 9000, Protocol: "tcp", Forwarding: "dsr", Persistence: "sticky"},
			}
			cfg := writeConfig(t, l, 1, []profileConf{{"sticky", 300}}, vss)
			b := l.Balancers()[0]
			addSettings(t, cfg, "encap_source_v4: "+b.Addr4.String(), fmt.Sprintf("encap_source_v6: %q", b.Addr6))
			body, err := os.ReadFile(cfg)
			if err != nil {
				t.Fatal(err)
			}
			writeCheckedConfig(t, cfg, strings.ReplaceAll(string(body), "forwarding: dsr}", "forwarding: "+fw+"}"), 0o644)
			startTunnelling(t, ctx, l, cfg)
			w := watchDecap(t, ctx, l)

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
			// An upload of full-sized segments: each is too long for the
			// tunnel until the client has learnt the MTU from limpet's
			// ICMP fragmentation needed, then they fit; it arrives whole.
			upload(t, ctx, l, l.ClientAddrs4()[1], netip.AddrPortFrom(l.VIP4(), 9000), 4<<20)
			mtu := clientPathMTU(t, l, l.VIP4())
			if want := 1500 - loader.EncapOverhead(map[string]loader.Encap{"ipip": loader.EncapIPIP, "gue": loader.EncapGUE}[fw], false); mtu != want {
				t.Errorf("the client's route cache has MTU %d for the VIP, want %d (1500 less the tunnel)", mtu, want)
			}
			time.Sleep(500 * time.Millisecond) // the last FINs and ACKs

			forwarded, tooBig, rx := checkRepliesBypassed(t, ctx, w)
			stat4, stat6 := fw+"_4in4", fw+"_6in6"
			d := w.decapsulated(t, ctx, stat4, stat6)
			decap4, decap6 := d[0], d[1]
			// What was too big was answered, not tunnelled. A member's GRO
			// may merge IPIP packets before tc sees them, so its counters
			// may count fewer.
			checkDecapsulated(t, l, stat4, stat6, decap4, decap6, forwarded-tooBig)
			t.Logf("%s: forwarded %d packets (%d answered too big, client path MTU %d); members decapsulated %s %d, %s %d; balancer received %d",
				fw, forwarded, tooBig, mtu, stat4, decap4, stat6, decap6, rx)
		})
	}
}

// upload sends size bytes from src to dst, where every member listens,
// and checks the SHA-256 digest that the member that got it sends back.
func upload(t *testing.T, ctx context.Context, l *lab.Lab, src netip.Addr, dst netip.AddrPort, size int) {
	t.Helper()
	got := make(chan error, len(l.Members()))
	for _, m := range l.Members() {
		var ln net.Listener
		if err := l.Run(m.Name, func() error {
			var err error
			ln, err = net.Listen("tcp", dst.String())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return // closed: another member got it
			}
			defer c.Close()
			h := sha256.New()
			n, err := io.Copy(h, c)
			if err == nil && n != int64(size) {
				err = fmt.Errorf("member received %d bytes, want %d", n, size)
			}
			if err == nil {
				_, err = c.Write(h.Sum(nil))
			}
			got <- err
		}()
	}
	c, err := l.Dial(ctx, "tcp", src, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i * 7 / 13)
	}
	want := sha256.Sum256(data)
	if _, err := c.Write(data); err != nil {
		t.Fatalf("upload: %v", err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	sum, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(sum, want[:]) {
		t.Fatalf("member's digest %x (%v), want %x", sum, err, want)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
}

// clientPathMTU is the MTU the client's route cache holds for dst (ip route
// get), 0 when it has learnt none.
func clientPathMTU(t *testing.T, l *lab.Lab, dst netip.Addr) int {
	t.Helper()
	out, err := l.RunCommand(context.Background(), lab.HostClient, "ip", "-o", "route", "get", dst.String())
	if err != nil {
		t.Fatalf("ip route get %s: %v\n%s", dst, err, out)
	}
	f := strings.Fields(string(out))
	for i := range f[:len(f)-1] {
		if f[i] == "mtu" {
			var n int
			fmt.Sscan(f[i+1], &n)
			return n
		}
	}
	return 0
}

// checkRepliesBypassed holds a tunnelling balancer to its promise: no reply
// passed it (its counters and its interface's since w started), the uploads
// met the tunnel's MTU (encap_too_big), and nothing was dropped. It returns
// what it counted, for the caller's own checks.
func checkRepliesBypassed(t *testing.T, ctx context.Context, w *decapWatch) (forwarded, tooBig, rx uint64) {
	t.Helper()
	l := w.l
	var st app.StatsView
	if err := json.Unmarshal(limpetCLI(t, ctx, l, "stats", "-o", "json"), &st); err != nil {
		t.Fatal(err)
	}
	for _, v := range st.VirtualServers {
		if v.ReplyPackets != 0 {
			t.Errorf("%s: %d reply packets passed the balancer", v.VirtualServer, v.ReplyPackets)
		}
		forwarded += v.Packets
	}
	if tooBig = st.ExceptionPackets["encap_too_big"]; tooBig == 0 {
		t.Errorf("no encap_too_big counted, but the uploads' first segments were too long for the tunnel")
	}
	for name, n := range st.DroppedPackets {
		if n != 0 {
			t.Errorf("datapath dropped %d packets: %s", n, name)
		}
	}
	// Everything the balancer received was a client's packet it
	// tunnelled: of the downloads' reply packets, none came.
	if rx = w.rx(t); rx > forwarded+8 {
		t.Errorf("balancer received %d packets, forwarded %d: replies passed it", rx, forwarded)
	}
	return forwarded, tooBig, rx
}
