package l7

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/userspace/config"
)

func TestForwardedHeaders(t *testing.T) {
	ms := twoMembers(t)
	h := startProxy(t, cookieYAML("", ""), ms, nil)
	resp, _ := get(t, &http.Client{}, h.urls["web"], "X-Forwarded-For", "203.0.113.7", "Host", "shop.example")
	if got := resp.Header.Get("X-Seen-XFF"); got != "203.0.113.7, 127.0.0.1" {
		t.Errorf("append: X-Forwarded-For %q", got)
	}
	if got := resp.Header.Get("X-Seen-XFP"); got != "http" {
		t.Errorf("X-Forwarded-Proto %q", got)
	}
	h.stop()
	h = startProxy(t, cookieYAML("", "forwarded_for: replace"), ms, nil)
	resp, _ = get(t, &http.Client{}, h.urls["web"], "X-Forwarded-For", "203.0.113.7")
	if got := resp.Header.Get("X-Seen-XFF"); got != "127.0.0.1" {
		t.Errorf("replace: X-Forwarded-For %q", got)
	}
}

func TestHostHeaderPreserved(t *testing.T) {
	ms := twoMembers(t)
	h := startProxy(t, cookieYAML("", ""), ms, nil)
	req, _ := http.NewRequest(http.MethodGet, h.urls["web"]+"/path?q=1", nil)
	req.Host = "shop.example"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("X-Seen-Host"); got != "shop.example" {
		t.Errorf("member saw Host %q", got)
	}
	h.log.wantLast(t, map[string]any{"uri": "/path?q=1", "host": "shop.example"})
}

// wsMember answers an Upgrade: websocket handshake and echoes the bytes
// that follow, upper-cased, so the test sees the tunnel is real.
func wsMember(t *testing.T, name string) *member {
	return startMember(t, name, func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			fmt.Fprintf(w, "member=%s\n", name)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Member: %s\r\n\r\n", name)
		brw.Flush()
		buf := make([]byte, 1024)
		for {
			n, err := brw.Read(buf)
			if err != nil {
				return
			}
			c.Write([]byte(strings.ToUpper(string(buf[:n]))))
		}
	})
}

func TestWebSocketUpgradePassesThrough(t *testing.T) {
	ms := map[string]*member{"a": wsMember(t, "a"), "b": wsMember(t, "b")}
	h := startProxy(t, cookieYAML("cookie_name: LB", "tunnel_timeout: 0.5"), ms, nil)
	c, br, resp := rawRequest(t, h.urls["web"], "GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	if resp.StatusCode != 101 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if len(setCookies(resp, "LB")) != 1 {
		t.Errorf("the handshake response should carry the persistence cookie: %q", resp.Header.Values("Set-Cookie"))
	}
	for _, msg := range []string{"hello", "tunnel"} {
		io.WriteString(c, msg)
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(br, buf); err != nil {
			t.Fatal(err)
		}
		if string(buf) != strings.ToUpper(msg) {
			t.Fatalf("echo %q", buf)
		}
	}
	// Idle past tunnel_timeout: the tunnel closes.
	start := time.Now()
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("tunnel sent data after going idle")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("idle tunnel lived %v with tunnel_timeout 0.5s", d)
	}
	h.log.wantLast(t, map[string]any{"status": 101, "upgrade": "websocket"})
}

func TestKeepAliveBothSides(t *testing.T) {
	ms := twoMembers(t)
	h := startProxy(t, cookieYAML("cookie_name: LB", ""), ms, nil)
	c := newClient(t)
	reused := 0
	for i := 0; i < 40; i++ {
		req, _ := http.NewRequest(http.MethodGet, h.urls["web"], nil)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(ci httptrace.GotConnInfo) {
				if ci.Reused {
					reused++
				}
			},
		}))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if reused != 39 {
		t.Errorf("client side: %d of 39 requests reused the connection", reused)
	}
	mine := ms["a"]
	if ms["b"].hits.Load() > 0 {
		mine = ms["b"]
	}
	if n := mine.conns.Load(); n != 1 {
		t.Errorf("member side: %d connections for 40 sequential requests, want 1", n)
	}
}

func TestGracefulShutdownFinishesRequestsInFlight(t *testing.T) {
	started := make(chan struct{}, 1)
	a := startMember(t, "a", func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		time.Sleep(300 * time.Millisecond)
		fmt.Fprint(w, "done")
	})
	ms := map[string]*member{"a": a}
	yaml := oneMember(cookieYAML("", "shutdown_timeout: 5"))
	h := startProxy(t, yaml, ms, nil)
	type result struct {
		body string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := http.Get(h.urls["web"])
		if err != nil {
			res <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		res <- result{string(b), err}
	}()
	<-started
	h.stop()
	r := <-res
	if r.err != nil || r.body != "done" {
		t.Fatalf("request in flight during shutdown: %q %v", r.body, r.err)
	}
	if _, err := net.DialTimeout("tcp", strings.TrimPrefix(h.urls["web"], "http://"), time.Second); err == nil {
		t.Errorf("listener still accepts after shutdown")
	}
}

func TestIPv6Loopback(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6 loopback:", err)
	}
	ln.Close()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Seen-XFF", r.Header.Get("X-Forwarded-For"))
		fmt.Fprint(w, "member=six\n")
	})}
	l6, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l6)
	t.Cleanup(func() { srv.Close() })
	port6 := l6.Addr().(*net.TCPAddr).Port
	vsln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	yaml := fmt.Sprintf(`
persistence_profiles:
  - {name: web, type: http_cookie, cookie_name: LB, keys: [{base64: "%s"}]}
pools:
  - name: p
    members:
      - {name: six, address: "::1", port: %d}
virtual_servers:
  - {name: web, type: http, address: "::1", port: %d, pool: p, persistence: web}
`, keyB64(testKey), port6, vsln.Addr().(*net.TCPAddr).Port)
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	out := &syncBuffer{}
	s, err := New(compile(t, cfg), Options{Stdout: out, Listeners: map[string]net.Listener{"web": vsln}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	defer func() { cancel(); <-done }()
	<-s.Ready()
	resp, body := get(t, &http.Client{}, "http://"+vsln.Addr().String())
	if body != "member=six\n" || resp.Header.Get("X-Seen-XFF") != "::1" || len(setCookies(resp, "LB")) != 1 {
		t.Fatalf("IPv6: %q %q %q", body, resp.Header.Get("X-Seen-XFF"), resp.Header.Values("Set-Cookie"))
	}
}

func TestRunServesConfigFileUntilCancelled(t *testing.T) {
	m := startMember(t, "a", nil)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "cookie.key")
	if err := os.WriteFile(keyFile, []byte(keyB64(testKey)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	logFile := filepath.Join(dir, "access.log")
	cfgFile := filepath.Join(dir, "limpet.yaml")
	os.WriteFile(cfgFile, []byte(fmt.Sprintf(`
persistence_profiles:
  - name: web
    type: http_cookie
    cookie_name: LB
    keys: [{file: %s}]
pools:
  - name: p
    members: [{name: a, address: 127.0.0.1, port: %d}]
virtual_servers:
  - {name: web, type: http, address: 127.0.0.1, port: %d, pool: p, persistence: web, access_log: %s}
`, keyFile, m.addr.Port(), port, logFile)), 0o600)
	cfg, err := config.Load(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, compile(t, cfg), slog.New(slog.DiscardHandler)) }()
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	var resp *http.Response
	for i := 0; i < 100; i++ {
		if resp, err = http.Get(url); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if len(setCookies(resp, "LB")) != 1 {
		t.Fatalf("no cookie from Run: %q", resp.Header.Values("Set-Cookie"))
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	data, _ := os.ReadFile(logFile)
	if !strings.Contains(string(data), `"decision":"balanced"`) || !strings.Contains(string(data), `"virtual_server":"web"`) {
		t.Errorf("access log file: %q", data)
	}
}

func TestListenErrorIsReported(t *testing.T) {
	m := startMember(t, "a", nil)
	busy, _ := net.Listen("tcp", "127.0.0.1:0")
	defer busy.Close()
	cfg, err := config.Parse([]byte(fmt.Sprintf(`
pools: [{name: p, members: [{name: a, address: 127.0.0.1, port: %d}]}]
virtual_servers: [{name: web, type: http, address: 127.0.0.1, port: %d, pool: p}]
`, m.addr.Port(), busy.Addr().(*net.TCPAddr).Port)))
	if err != nil {
		t.Fatal(err)
	}
	err = Run(context.Background(), compile(t, cfg), nil)
	if err == nil || !strings.Contains(err.Error(), `virtual server "web"`) {
		t.Fatalf("want a listen error naming the virtual server, got %v", err)
	}
}

func TestNoPersistenceRoundRobin(t *testing.T) {
	ms := twoMembers(t)
	h := startProxy(t, `
pools:
  - name: p
    algorithm: weighted_round_robin
    members:
      - {name: a, address: 127.0.0.1, port: {{M:a}}, weight: 3}
      - {name: b, address: 127.0.0.1, port: {{M:b}}, weight: 1}
virtual_servers:
  - {name: web, type: http, address: 127.0.0.1, port: {{VS:web}}, pool: p}
`, ms, nil)
	count := map[string]int{}
	for i := 0; i < 8; i++ {
		resp, _ := get(t, &http.Client{}, h.urls["web"])
		count[resp.Header.Get("X-Member")]++
		if len(resp.Header.Values("Set-Cookie")) != 0 {
			t.Fatal("no persistence profile, yet a cookie")
		}
	}
	if count["a"] != 6 || count["b"] != 2 {
		t.Errorf("weights 3:1 over 8 requests: %v", count)
	}
	if l := h.log.last(t, 1); l["persistence"] != nil || str(l, "decision") != "balanced" {
		t.Errorf("access log: %v", l)
	}
}

func TestShutdownClosesTunnelsAfterTimeout(t *testing.T) {
	ms := map[string]*member{"a": wsMember(t, "a")}
	yaml := oneMember(cookieYAML("", "shutdown_timeout: 0.3"))
	h := startProxy(t, yaml, ms, nil)
	_, br, resp := rawRequest(t, h.urls["web"], "GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	if resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v", resp)
	}
	start := time.Now()
	h.stop() // Serve must return: the tunnel is closed once shutdown_timeout is over
	if d := time.Since(start); d < 250*time.Millisecond || d > 3*time.Second {
		t.Errorf("shutdown took %v with shutdown_timeout 0.3s and an open tunnel", d)
	}
	if _, err := br.ReadByte(); err == nil {
		t.Error("tunnel still open after shutdown")
	}
}
