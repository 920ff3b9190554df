package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/userspace/lab"
)

// rejectConfig is a profile that does not purge when full, with a table of
// capacity entries, for one TCP virtual server per address family.
func rejectConfig(t *testing.T, l *lab.Lab, xdpMode string, capacity int) string {
	t.Helper()
	var b strings.Builder
	var ifs []string
	for _, i := range l.BalancerIfaces() {
		ifs = append(ifs, i.Name)
	}
	fmt.Fprintf(&b, "settings:\n  interfaces: [%s]\n  pin_path: %s\n  xdp_mode: %s\n", strings.Join(ifs, ", "), l.PinDir(), xdpMode)
	fmt.Fprintf(&b, "persistence_profiles:\n  - {name: small, timeout: 300, purge_when_full: false, max_entries: %d}\n", capacity)
	b.WriteString("pools:\n")
	for _, fam := range []string{"4", "6"} {
		fmt.Fprintf(&b, "  - name: web%s\n    members:\n", fam)
		for _, m := range l.Members() {
			a := m.Addr4
			if fam == "6" {
				a = m.Addr6
			}
			fmt.Fprintf(&b, "      - {name: %s, address: %q}\n", m.Name, a)
		}
	}
	b.WriteString("virtual_servers:\n")
	fmt.Fprintf(&b, "  - {name: web4, address: %q, port: 80, protocol: tcp, pool: web4, persistence: small}\n", l.VIP4())
	fmt.Fprintf(&b, "  - {name: web6, address: %q, port: 80, protocol: tcp, pool: web6, persistence: small}\n", l.VIP6())
	path := filepath.Join(l.RunDir(), "limpet-"+xdpMode+".yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// A profile with purge_when_full off rejects a new client of a full table
// with a TCP RST sent from XDP. The client must see "connection refused"
// at once, in native XDP mode too, where the RST leaves through the veth's
// XDP transmit path rather than the stack.
func TestRejectedClientGetsConnectionRefused(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"native", "generic"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			const capacity = 4
			l := newLab(t, lab.Spec{MemberCount: 2, ClientAddrs4: capacity + 2, ClientAddrs6: capacity + 2})
			cfg := rejectConfig(t, l, mode, capacity)
			p := startLimpet(t, l, cfg)
			if !strings.Contains(p.Output(), "mode="+mode) {
				t.Fatalf("limpet did not attach in %s mode:\n%s", mode, p.Output())
			}
			for _, fam := range []struct {
				name string
				vip  netip.Addr
				srcs []netip.Addr
			}{
				{"ipv4", l.VIP4(), l.ClientAddrs4()},
				{"ipv6", l.VIP6(), l.ClientAddrs6()},
			} {
				t.Run(fam.name, func(t *testing.T) {
					ctx := testCtx(t, 30*time.Second)
					dst := netip.AddrPortFrom(fam.vip, 80)
					// Fill the table: these clients are admitted.
					for _, src := range fam.srcs[:capacity] {
						if _, err := l.WaitGet(ctx, src, lab.URL(dst, "/")); err != nil {
							t.Fatalf("admitted client %s: %v", src, err)
						}
					}
					// The next clients find it full.
					for _, src := range fam.srcs[capacity:] {
						dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
						start := time.Now()
						c, err := l.Dial(dctx, "tcp", src, dst)
						took := time.Since(start)
						cancel()
						if err == nil {
							c.Close()
							t.Fatalf("client %s of a full table connected; want it refused", src)
						}
						if !errors.Is(err, syscall.ECONNREFUSED) {
							t.Fatalf("client %s of a full table: %v after %v; want connection refused", src, err, took.Round(time.Millisecond))
						}
						if took > 100*time.Millisecond {
							t.Errorf("client %s of a full table was refused after %v; want within 100ms", src, took.Round(time.Millisecond))
						}
						t.Logf("client %s refused in %v", src, took.Round(time.Microsecond))
					}
					// Admitted clients keep working.
					if _, err := l.Get(ctx, fam.srcs[0], lab.URL(dst, "/")); err != nil {
						t.Errorf("admitted client %s after the rejections: %v", fam.srcs[0], err)
					}
				})
			}
			// limpet stats says what happened to them.
			ctx := testCtx(t, 10*time.Second)
			out := string(limpetCLI(t, ctx, l, "stats"))
			if !regexp.MustCompile(`(?m)^table_full\s+\d+\s+TCP: RST sent, UDP: dropped$`).MatchString(out) {
				t.Errorf("limpet stats does not say that table_full packets got a RST:\n%s", out)
			}
		})
	}
}
