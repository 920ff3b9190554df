package e2e_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	osexecpkg "os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/userspace/lab"
)

// haPair is two balancers in front of the same members, each running
// limpet with its own pins, mirroring to the other.
type haPair struct {
	l    *lab.Lab
	cfg  [2]string
	pins [2]string
	proc [2]*lab.Process
}

func writeKey(t *testing.T, path string) {
	t.Helper()
	// As the docs say to make one (openssl rand -base64 48): raw random
	// bytes would lose a last byte that happens to be a newline, which
	// the key file's format strips, once in 128 keys.
	raw := make([]byte, 48)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	key := base64.StdEncoding.AppendEncode(nil, raw)
	if err := os.WriteFile(path, append(key, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
}

func newHAPair(t *testing.T, mirroring bool, clients int) *haPair {
	t.Helper()
	l := newLab(t, lab.Spec{Balancers: 2, MemberCount: 3, ClientAddrs4: clients})
	h := &haPair{l: l}
	key := filepath.Join(l.RunDir(), "mirror.key")
	writeKey(t, key)
	bs := l.Balancers()
	for i, b := range bs {
		h.pins[i] = fmt.Sprintf("%s-b%d", l.PinDir(), i)
		var ifs []string
		for _, f := range b.Ifaces() {
			ifs = append(ifs, f.Name)
		}
		other := bs[1-i]
		var c strings.Builder
		fmt.Fprintf(&c, "settings:\n  interfaces: [%s]\n  pin_path: %s\n  gc_interval: 0.2\n", strings.Join(ifs, ", "), h.pins[i])
		fmt.Fprintf(&c, "ha_mirroring:\n  listen: %s\n  peers: [%s]\n  heartbeat_interval: 0.2\n  reconnect_backoff: {initial: 0.1, max: 0.5}\n  auth: {psk_file: %s}\n",
			netip.AddrPortFrom(b.Addr4, 7946), netip.AddrPortFrom(other.Addr4, 7946), key)
		fmt.Fprintf(&c, "persistence_profiles:\n  - {name: sticky, timeout: 300, ha_mirroring: %v}\n", mirroring)
		c.WriteString("pools:\n  - name: web\n    members:\n")
		for _, m := range l.Members() {
			fmt.Fprintf(&c, "      - {name: %s, address: %s}\n", m.Name, m.Addr4)
		}
		fmt.Fprintf(&c, "virtual_servers:\n  - {name: web, address: %s, port: 80, protocol: tcp, pool: web, persistence: sticky}\n", l.VIP4())
		h.cfg[i] = filepath.Join(l.RunDir(), fmt.Sprintf("limpet-b%d.yaml", i))
		if err := os.WriteFile(h.cfg[i], []byte(c.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i := range bs {
		h.start(t, i)
	}
	// Each balancer's pins live beside the lab's: stop the daemons (detach
	// is refused while one runs), then remove them.
	t.Cleanup(func() {
		for i := range h.pins {
			if h.proc[i] != nil {
				_ = h.proc[i].Stop(5 * time.Second)
			}
			if out, err := run(limpetBin(t), "--pin-path", h.pins[i], "detach"); err != nil && !strings.Contains(err.Error(), "no limpet datapath") {
				t.Errorf("detach balancer %d: %v %s", i, err, out)
			}
		}
	})
	return h
}

func run(path string, args ...string) (string, error) {
	out, err := osexec(path, args...)
	return string(out), err
}

// osexec runs a command and returns its standard output; a failure's
// error carries its standard error.
func osexec(path string, args ...string) ([]byte, error) {
	out, err := osexecpkg.Command(path, args...).Output()
	var ee *osexecpkg.ExitError
	if errors.As(err, &ee) {
		err = fmt.Errorf("%w: %s", err, ee.Stderr)
	}
	return out, err
}

func osexecCommand(path string, args ...string) *osexecpkg.Cmd {
	return osexecpkg.Command(path, args...)
}

func parseDump(t *testing.T, out []byte) map[string]entry {
	t.Helper()
	var d dumpResult
	if err := json.Unmarshal(out, &d); err != nil {
		t.Fatalf("persistence dump -o json: %v\n%s", err, out)
	}
	m := map[string]entry{}
	for _, e := range d.Entries {
		m[e.Client] = e
	}
	return m
}

func (h *haPair) start(t *testing.T, i int) {
	t.Helper()
	p, err := h.l.StartProcess(lab.BalancerHost(i), limpetBin(t), "run", "-c", h.cfg[i])
	if err != nil {
		t.Fatal(err)
	}
	suite.Lock()
	suite.procs = append(suite.procs, p)
	suite.pinDirs = append(suite.pinDirs, h.pins[i])
	suite.Unlock()
	h.proc[i] = p
	waitLog(t, p, "attached", func(out string) bool { return countLines(out, "msg=attached ") >= len(h.l.Balancers()[i].Ifaces()) })
}

// entries counts balancer i's persistence entries, by client.
func (h *haPair) entries(t *testing.T, ctx context.Context, i int) map[string]entry {
	t.Helper()
	cmdOut, err := osexec(limpetBin(t), "--pin-path", h.pins[i], "persistence", "dump", "-o", "json")
	if err != nil {
		t.Fatalf("dump on balancer %d: %v\n%s", i, err, cmdOut)
	}
	return parseDump(t, cmdOut)
}

func TestHAFailover(t *testing.T) {
	for _, mirroring := range []bool{true, false} {
		t.Run(fmt.Sprintf("mirroring=%v", mirroring), func(t *testing.T) {
			t.Parallel()
			const n = 200
			h := newHAPair(t, mirroring, n)
			l := h.l
			ctx := testCtx(t, 2*time.Minute)
			dst := netip.AddrPortFrom(l.VIP4(), 80)
			clients := l.ClientAddrs4()[:n]
			if l.ActiveBalancer() != 0 {
				if err := l.SetActiveBalancer(0); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := l.WaitGet(ctx, clients[0], lab.URL(dst, "/")); err != nil {
				t.Fatal(err)
			}
			before, err := getEach(ctx, l, clients, dst, 1, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(before) != n {
				t.Fatalf("%d of %d clients persisted through the active balancer", len(before), n)
			}
			if mirroring {
				waitFor(t, ctx, "the standby to hold every entry", func() bool { return len(h.entries(t, ctx, 1)) == n })
			} else {
				time.Sleep(time.Second) // give a wrongly configured mirror time to show itself
				if got := len(h.entries(t, ctx, 1)); got != 0 {
					t.Fatalf("mirroring off, yet the standby holds %d entries", got)
				}
			}

			// The active balancer dies; the router moves the VIP to the standby.
			if err := h.proc[0].Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			if err := l.SetActiveBalancer(1); err != nil {
				t.Fatal(err)
			}
			after, err := getEach(ctx, l, clients, dst, 1, nil)
			if err != nil {
				t.Fatal(err)
			}
			moved := 0
			for c, m := range before {
				if after[c] != m {
					moved++
					if mirroring {
						t.Errorf("client %s: %s before failover, %s after", c, m, after[c])
					}
				}
			}
			if mirroring {
				t.Logf("all %d clients kept their server across failover", n)
				return
			}
			t.Logf("without mirroring, %d of %d clients were re-balanced to another server", moved, n)
			if moved < n/4 {
				t.Fatalf("only %d of %d clients moved without mirroring: the test does not show what mirroring is for", moved, n)
			}
		})
	}
}

// Restarting the standby from empty tables: the bulk sync restores every
// entry. A peer with the wrong key is refused and logged; garbage on the
// mirroring port closes that connection and nothing else.
func TestHAReconnectAndAuthentication(t *testing.T) {
	t.Parallel()
	const n = 60
	h := newHAPair(t, true, n)
	l := h.l
	ctx := testCtx(t, 2*time.Minute)
	dst := netip.AddrPortFrom(l.VIP4(), 80)
	clients := l.ClientAddrs4()[:n]
	if _, err := l.WaitGet(ctx, clients[0], lab.URL(dst, "/")); err != nil {
		t.Fatal(err)
	}
	if _, err := getEach(ctx, l, clients, dst, 1, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the standby to hold every entry", func() bool { return len(h.entries(t, ctx, 1)) == n })

	// Standby down, its pins gone: it comes back empty.
	if err := h.proc[1].Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if out, err := run(limpetBin(t), "--pin-path", h.pins[1], "detach"); err != nil {
		t.Fatalf("detach: %v %s", err, out)
	}
	// First with the wrong key: refused on both sides, nothing synced.
	good, _ := os.ReadFile(h.cfg[1])
	badKey := filepath.Join(l.RunDir(), "wrong.key")
	writeKey(t, badKey)
	if err := os.WriteFile(h.cfg[1], []byte(strings.Replace(string(good), filepath.Join(l.RunDir(), "mirror.key"), badKey, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	h.start(t, 1)
	waitLog(t, h.proc[0], "the active refusing the wrong key", func(out string) bool {
		return strings.Contains(out, "mirror: refused connection") || strings.Contains(out, "mirror: authentication with peer failed")
	})
	if got := len(h.entries(t, ctx, 1)); got != 0 {
		t.Fatalf("a standby with the wrong key received %d entries", got)
	}
	if err := h.proc[1].Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if out, err := run(limpetBin(t), "--pin-path", h.pins[1], "detach"); err != nil {
		t.Fatalf("detach: %v %s", err, out)
	}

	// Garbage at the active's mirroring port, from the client host.
	conn, err := l.Dial(ctx, "tcp", l.ClientPrimary4(), netip.AddrPortFrom(l.Balancers()[0].Addr4, 7946))
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff\xff\xff\xffgarbage"))
	conn.Close()

	// Then with the right key: the bulk sync restores the full table.
	if err := os.WriteFile(h.cfg[1], good, 0o644); err != nil {
		t.Fatal(err)
	}
	h.start(t, 1)
	waitFor(t, ctx, "the bulk sync to restore every entry", func() bool { return len(h.entries(t, ctx, 1)) == n })
	if !h.proc[0].Running() {
		t.Fatalf("the active balancer died:\n%s", h.proc[0].Output())
	}
	if !strings.Contains(h.proc[1].Output(), "mirror: bulk sync received") {
		t.Fatalf("the standby did not log a bulk sync:\n%s", h.proc[1].Output())
	}
	st := limpetStatusOf(t, h.pins[0])
	if !strings.Contains(st, "HA PEER") || !strings.Contains(st, " up ") {
		t.Fatalf("limpet status of the active does not show an up peer:\n%s", st)
	}
}

func limpetStatusOf(t *testing.T, pin string) string {
	t.Helper()
	out, err := osexec(limpetBin(t), "--pin-path", pin, "status")
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	return string(out)
}
