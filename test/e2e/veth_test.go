package e2e_test

import (
	"context"
	"encoding/json"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/userspace/lab"
	"github.com/limpet-lb/limpet/userspace/veth"
)

// The two veth settings that break native XDP in a hand-built lab, each
// set back to the veth default on one peer: limpet warns about it with the
// exact command that fixes it (log and status), the traffic that crosses
// it fails (and, where the kernel refuses a redirect, limpet stats and the
// metrics count it), and once the printed command has run, the lab
// forwards every request.
func TestVethPitfallsAreReportedWithTheirFix(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		// breaks sets the offload on the peer (a veth default), and
		// returns the balancer interface whose peer it is and the host
		// and name of that peer.
		breaks  func(l *lab.Lab) (iface, host, peer string, err error)
		problem string
		fix     string // the ethtool arguments
		// redirects says whether the kernel refuses the redirects (and so
		// limpet counts them), rather than the receiver dropping packets.
		redirects bool
	}{
		{
			name: "gro_off_on_member",
			breaks: func(l *lab.Lab) (string, string, string, error) {
				m := l.Members()[0]
				err := l.Run(m.Name, func() error { return veth.Set(m.Iface.Name, veth.GRO, false) })
				return m.BalancerIface.Name, m.Name, m.Iface.Name, err
			},
			problem: veth.PeerCannotReceive, fix: "gro on", redirects: true,
		},
		{
			name: "tx_checksum_on_client",
			breaks: func(l *lab.Lab) (string, string, string, error) {
				ci := l.ClientIface()
				err := l.Run(lab.HostClient, func() error { return veth.Set(ci.Name, veth.TXChecksum, true) })
				return l.Balancers()[0].ClientIface.Name, lab.HostClient, ci.Name, err
			},
			problem: veth.PeerTXChecksum, fix: "tx off",
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			l := newLab(t, lab.Spec{MemberCount: 2, ClientAddrs4: 8})
			ctx := testCtx(t, 90*time.Second)
			iface, host, peer, err := c.breaks(l)
			if err != nil {
				t.Fatal(err)
			}
			cfg := writeWebConfig(t, l, 1)
			addSettings(t, cfg, "xdp_mode: native", "metrics_listen: 127.0.0.1:9469")
			p := startLimpet(t, l, cfg)
			fix := "ip netns exec " + l.NetNS(host) + " ethtool -K " + peer + " " + c.fix

			// The log names the interface, the peer and the fix.
			logLine := ""
			waitLog(t, p, "the veth warning", func(out string) bool {
				for _, line := range strings.Split(out, "\n") {
					if strings.Contains(line, "interface setting breaks native XDP") && strings.Contains(line, "iface="+iface+" ") {
						logLine = line
						return true
					}
				}
				return false
			})
			if !strings.Contains(logLine, `fix="`+fix+`"`) || !strings.Contains(logLine, "peer="+peer) {
				t.Errorf("warning %q does not give the fix %q", logLine, fix)
			}
			// So does limpet status.
			out := string(limpetCLI(t, ctx, l, "status"))
			if !strings.Contains(out, "warning: "+iface+": its veth peer "+peer+" (netns "+l.NetNS(host)+")") || !strings.Contains(out, "  fix: "+fix+"\n") {
				t.Errorf("limpet status does not show the warning and fix %q:\n%s", fix, out)
			}
			var st struct {
				Warnings []struct {
					Interface string `json:"interface"`
					Problem   string `json:"problem"`
					Fix       string `json:"fix"`
				} `json:"warnings"`
			}
			if err := json.Unmarshal(limpetCLI(t, ctx, l, "status", "-o", "json"), &st); err != nil || len(st.Warnings) != 1 ||
				st.Warnings[0].Interface != iface || st.Warnings[0].Problem != c.problem || st.Warnings[0].Fix != fix {
				t.Errorf("limpet status -o json warnings: %+v (%v), want one %s on %s", st.Warnings, err, c.problem, iface)
			}

			// Traffic through the misconfigured veth fails.
			dst := netip.AddrPortFrom(l.VIP4(), 80)
			clients := l.ClientAddrs4()
			failed := getAll(ctx, l, clients[:4], dst, 1500*time.Millisecond)
			if len(failed) == 0 {
				t.Fatalf("every request succeeded through a veth whose peer has %s", c.problem)
			}
			t.Logf("%d of 4 clients failed while %s", len(failed), c.problem)
			if c.redirects {
				var stats struct {
					RedirectErrors []struct {
						Interface string `json:"interface"`
						Error     string `json:"error"`
						Count     uint64 `json:"xdp_redirect_errors_total"`
					} `json:"xdp_redirect_errors"`
				}
				if err := json.Unmarshal(limpetCLI(t, ctx, l, "stats", "-o", "json"), &stats); err != nil || len(stats.RedirectErrors) != 1 ||
					stats.RedirectErrors[0].Interface != iface || stats.RedirectErrors[0].Error != "EOPNOTSUPP" || stats.RedirectErrors[0].Count == 0 {
					t.Errorf("limpet stats -o json redirect errors: %+v (%v), want EOPNOTSUPP into %s", stats.RedirectErrors, err, iface)
				}
				if out := string(limpetCLI(t, ctx, l, "stats")); !strings.Contains(out, "REDIRECTED INTO") || !strings.Contains(out, iface) {
					t.Errorf("limpet stats does not show the redirect errors:\n%s", out)
				}
				m := scrape(t, ctx, l, netip.MustParseAddrPort("127.0.0.1:9469"))
				if n := sum(m, "limpet_xdp_redirect_errors_total", `interface="`+iface+`"`, `error="EOPNOTSUPP"`); n == 0 {
					t.Errorf("limpet_xdp_redirect_errors_total for %s is 0", iface)
				}
			}

			// The fix, run as printed, clears the warning and the lab forwards.
			if out, err := exec.CommandContext(ctx, "sh", "-c", fix).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", fix, err, out)
			}
			if out := string(limpetCLI(t, ctx, l, "status")); strings.Contains(out, "warning:") {
				t.Errorf("limpet status still warns after %s:\n%s", fix, out)
			}
			if failed := getAll(ctx, l, clients, dst, 5*time.Second); len(failed) > 0 {
				t.Errorf("after %s, %d clients still fail: %v", fix, len(failed), failed)
			}
		})
	}
}

// getAll sends one GET from each client at once and returns the errors of
// those that did not get a member's answer within timeout.
func getAll(ctx context.Context, l *lab.Lab, clients []netip.Addr, dst netip.AddrPort, timeout time.Duration) map[netip.Addr]error {
	var mu sync.Mutex
	failed := map[netip.Addr]error{}
	var wg sync.WaitGroup
	for _, src := range clients {
		wg.Go(func() {
			rctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			if _, err := l.Get(rctx, src, lab.URL(dst, "/")); err != nil {
				mu.Lock()
				failed[src] = err
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return failed
}
