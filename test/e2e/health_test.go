package e2e_test

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/userspace/lab"
)

const (
	healthInterval = 200 * time.Millisecond
	healthFall     = 3
	healthRise     = 2
)

// healthOf reads one member's health from 'limpet status -o json'.
func healthOf(t *testing.T, ctx context.Context, l *lab.Lab, pool, member string) string {
	t.Helper()
	out := limpetCLI(t, ctx, l, "status", "-o", "json")
	var st struct {
		Pools []struct {
			Name    string `json:"name"`
			Members []struct {
				Name   string `json:"name"`
				Health string `json:"health"`
			} `json:"members"`
		} `json:"pools"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("status -o json: %v\n%s", err, out)
	}
	for _, p := range st.Pools {
		for _, m := range p.Members {
			if p.Name == pool && m.Name == member {
				return m.Health
			}
		}
	}
	t.Fatalf("status lists no member %s of pool %s:\n%s", member, pool, out)
	return ""
}

// waitHealth polls until the member's health is want and returns how long it took.
func waitHealth(t *testing.T, ctx context.Context, l *lab.Lab, member, want string, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < limit {
		if healthOf(t, ctx, l, "web", member) == want {
			return time.Since(start)
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("%s not %s after %s", member, want, limit)
	return 0
}

func TestHealthMonitorDrivesServerDown(t *testing.T) {
	for _, policy := range []string{"immediate", "never"} {
		t.Run(policy, func(t *testing.T) {
			t.Parallel()
			l := newLab(t, lab.Spec{MemberCount: 3, ClientAddrs4: 30})
			ctx := testCtx(t, 90*time.Second)
			cfg := writeWebConfig(t, l, 0.2)
			body, _ := os.ReadFile(cfg)
			text := strings.Replace(string(body), "timeout: 300}", "timeout: 300, server_down: "+policy+"}", 1)
			text = strings.Replace(text, "  - name: web\n    members:", "  - name: web\n    health_monitor: web-http\n    members:", 1)
			text += "health_monitors:\n  - {name: web-http, type: http, path: /, interval: 0.2, timeout: 0.2, rise: 2, fall: 3}\n"
			writeCheckedConfig(t, cfg, text, 0o644)
			startLimpet(t, l, cfg)
			dst := netip.AddrPortFrom(l.VIP4(), 80)
			clients := l.ClientAddrs4()[:15]
			if _, err := l.WaitGet(ctx, l.ClientAddrs4()[29], lab.URL(dst, "/")); err != nil {
				t.Fatal(err)
			}
			a := assignment{}
			for _, c := range clients {
				rep, err := l.Get(ctx, c, lab.URL(dst, "/"))
				if err != nil {
					t.Fatal(err)
				}
				a[c] = rep.Member
			}
			if got := healthOf(t, ctx, l, "web", "m1"); got != "up" {
				t.Fatalf("m1 starts %s", got)
			}

			// Stop m1's web server: down after fall intervals, not before.
			if err := l.StopHTTP("m1"); err != nil {
				t.Fatal(err)
			}
			took := waitHealth(t, ctx, l, "m1", "down", 10*healthInterval)
			if took < (healthFall-1)*healthInterval {
				t.Fatalf("m1 went down after %s, before %d failed probes %s apart could have run", took, healthFall, healthInterval)
			}
			t.Logf("m1 down %s after its server stopped (fall %d x %s)", took, healthFall, healthInterval)

			var onM1 []netip.Addr
			for c, m := range a {
				if m == "m1" {
					onM1 = append(onM1, c)
				}
			}
			if len(onM1) == 0 {
				t.Fatal("round robin gave m1 no client")
			}
			for _, c := range onM1 {
				rctx, cancel := context.WithTimeout(ctx, time.Second)
				rep, err := l.Get(rctx, c, lab.URL(dst, "/"))
				cancel()
				switch policy {
				case "immediate":
					if err != nil || rep.Member == "m1" {
						t.Fatalf("immediate: client %s of down m1 got %v (member %s)", c, err, rep.Member)
					}
				case "never":
					if err == nil {
						t.Fatalf("never: client %s of down m1 reached %s", c, rep.Member)
					}
				}
			}
			entries := dump(t, ctx, l, "web")
			for _, c := range onM1 {
				e := entries[c.String()]
				if policy == "never" && e.Member != "m1" {
					t.Fatalf("never: %s's entry moved to %s", c, e.Member)
				}
				if policy == "immediate" && e.Member == "m1" {
					t.Fatalf("immediate: %s's entry still names m1", c)
				}
			}
			// Clients of healthy members are untouched.
			for c, m := range a {
				if m != "m1" {
					if rep, err := l.Get(ctx, c, lab.URL(dst, "/")); err != nil || rep.Member != m {
						t.Fatalf("client %s of healthy %s: %v, %s", c, m, err, rep.Member)
					}
				}
			}

			// Back: up after rise intervals, and new clients reach it again.
			if err := l.StartHTTP("m1"); err != nil {
				t.Fatal(err)
			}
			took = waitHealth(t, ctx, l, "m1", "up", 10*healthInterval)
			t.Logf("m1 up %s after its server returned (rise %d)", took, healthRise)
			got := map[string]int{}
			for _, c := range l.ClientAddrs4()[15:24] {
				rep, err := l.Get(ctx, c, lab.URL(dst, "/"))
				if err != nil {
					t.Fatal(err)
				}
				got[rep.Member]++
			}
			if got["m1"] == 0 {
				t.Fatalf("after m1 came back, 9 new clients went %v", got)
			}
		})
	}
}
