package sharedtable_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/l7"
	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/test/packets"
	"github.com/limpet-lb/limpet/test/testutil"
	"github.com/limpet-lb/limpet/userspace/config"
	"github.com/limpet-lb/limpet/userspace/plan"
	"github.com/limpet-lb/limpet/userspace/sharedtable"
)

// members starts an HTTP server on each of 127.0.0.2-4 (one port for all)
// that names itself.
func members(t *testing.T) (port int, addrs []netip.Addr) {
	t.Helper()
	for i := 2; i <= 4; i++ {
		a := netip.AddrFrom4([4]byte{127, 0, 0, byte(i)})
		l, err := net.Listen("tcp", netip.AddrPortFrom(a, uint16(port)).String())
		if err != nil {
			t.Fatal(err)
		}
		port = l.Addr().(*net.TCPAddr).Port
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, a)
		})}
		go srv.Serve(l)
		t.Cleanup(func() { srv.Close() })
		addrs = append(addrs, a)
	}
	return port, addrs
}

func TestL4AndL7ShareOneTable(t *testing.T) {
	testutil.RequireRoot(t)
	mport, addrs := members(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	vsPort := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cfg, err := config.Parse([]byte(fmt.Sprintf(`
persistence_profiles:
  - {name: shared, share_persistence: true, timeout: 60}
pools:
  - name: servers
    members:
      - {name: a, address: %[1]s, port: %[4]d}
      - {name: b, address: %[2]s, port: %[4]d}
      - {name: c, address: %[3]s, port: %[4]d}
virtual_servers:
  - {name: tcp, address: 203.0.113.10, port: 443, protocol: tcp, pool: servers, persistence: shared}
  - {name: web, type: http, address: 127.0.0.1, port: %[5]d, pool: servers, persistence: shared, access_log: "off"}
`, addrs[0], addrs[1], addrs[2], mport, vsPort)))
	if err != nil {
		t.Fatal(err)
	}
	pin := fmt.Sprintf("/sys/fs/bpf/limpet-shared-%d", os.Getpid())
	dp, err := loader.Load(loader.Options{PinPath: pin, FlowTableSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dp.Detach() })
	st, meta, err := plan.Build(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := dp.Apply(st); err != nil {
		t.Fatal(err)
	}
	tables := sharedtable.New(dp, meta)
	sp, err := plan.L7(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := l7.New(sp, l7.Options{Tables: tables, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-served })

	get := func(src netip.Addr) string {
		t.Helper()
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}, Timeout: 2 * time.Second}
		c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
		var last error
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/", vsPort))
			if err != nil {
				last = err
				continue
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return string(b)
		}
		t.Fatalf("GET from %s: %v", src, last)
		return ""
	}
	l4 := func(src netip.Addr) netip.Addr {
		t.Helper()
		from := netip.AddrPortFrom(src, 40000)
		vip := netip.MustParseAddrPort("203.0.113.10:443")
		if _, _, err := dp.RunPacket(packets.TCP(from, vip, "S").Bytes(), 0); err != nil {
			t.Fatal(err)
		}
		flows, err := dp.Flows()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range flows {
			if f.Src == from && !f.Reverse {
				return f.Target.Addr()
			}
		}
		t.Fatalf("no flow for %s", src)
		return netip.Addr{}
	}

	// Both layers balance new clients round robin over the same members;
	// start them at different points, so agreement can only come from the
	// shared table.
	get(netip.MustParseAddr("127.0.0.30"))

	// L7 first: the proxy persists the client; the datapath follows.
	c1 := netip.MustParseAddr("127.0.0.9")
	viaL7 := get(c1)
	if got := l4(c1); got.String() != viaL7 {
		t.Fatalf("client persisted to %s at L7 went to %s at L4", viaL7, got)
	}
	for i := 0; i < 3; i++ {
		if again := get(c1); again != viaL7 {
			t.Fatalf("L7 moved the client from %s to %s", viaL7, again)
		}
	}
	// L4 first: the datapath persists the client; the proxy follows.
	for _, c := range []string{"127.0.0.10", "127.0.0.11", "127.0.0.12"} {
		client := netip.MustParseAddr(c)
		viaL4 := l4(client)
		if got := get(client); got != viaL4.String() {
			t.Fatalf("client %s persisted to %s at L4 went to %s at L7", c, viaL4, got)
		}
	}
	es, err := dp.TableEntries(meta.Tables[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 5 {
		t.Fatalf("one shared table should hold the 5 clients, has %d entries", len(es))
	}
	if !strings.HasPrefix(meta.Tables[0].Key, "profile:shared") {
		t.Fatalf("table key %q", meta.Tables[0].Key)
	}
}
