package l7

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/test/testutil"
	"github.com/limpet-lb/limpet/userspace/config"
	"github.com/limpet-lb/limpet/userspace/plan"
)

// testKey is a fixed 32-byte key; testKey2 another one.
var (
	testKey  = bytes.Repeat([]byte{0x42}, 32)
	testKey2 = bytes.Repeat([]byte{0x17}, 32)
)

func keyB64(k []byte) string { return base64.StdEncoding.EncodeToString(k) }

// member is a pool member: an httptest server that says who it is and
// echoes what it received.
type member struct {
	name  string
	srv   *httptest.Server
	hits  atomic.Int64
	conns atomic.Int64
	addr  netip.AddrPort
	// handler overrides the default behaviour when set.
	handler http.HandlerFunc
}

func startMember(t testing.TB, name string, h http.HandlerFunc) *member {
	t.Helper()
	m := &member{name: name, handler: h}
	m.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.hits.Add(1)
		if m.handler != nil {
			m.handler(w, r)
			return
		}
		w.Header().Set("X-Member", m.name)
		w.Header().Set("X-Seen-Cookie", r.Header.Get("Cookie"))
		w.Header().Set("X-Seen-XFF", strings.Join(r.Header.Values("X-Forwarded-For"), ","))
		w.Header().Set("X-Seen-XFP", r.Header.Get("X-Forwarded-Proto"))
		w.Header().Set("X-Seen-Host", r.Host)
		if r.Body != nil {
			b, _ := io.ReadAll(r.Body)
			w.Header().Set("X-Seen-Body-Len", fmt.Sprint(len(b)))
		}
		fmt.Fprintf(w, "member=%s\n", m.name)
	}))
	m.srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			m.conns.Add(1)
		}
	}
	m.srv.Start()
	t.Cleanup(m.srv.Close)
	m.addr = netip.MustParseAddrPort(m.srv.Listener.Addr().String())
	return m
}

// stop closes the member's server: its port refuses connections.
func (m *member) stop() {
	m.srv.CloseClientConnections()
	m.srv.Close()
}

// syncBuffer is a goroutine-safe buffer for the access log.
type syncBuffer struct{ testutil.Buffer }

func (s *syncBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(s.Bytes()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("access log line is not JSON: %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// last returns the last access log line, waiting briefly for it: the
// line is written after the response is complete.
func (s *syncBuffer) waitLines(t *testing.T, n int) []map[string]any {
	t.Helper()
	return s.waitLinesFor(t, n, 3*time.Second)
}

func (s *syncBuffer) waitLinesFor(t *testing.T, n int, d time.Duration) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		l := s.lines(t)
		if len(l) >= n || time.Now().After(deadline) {
			if len(l) < n {
				t.Fatalf("want %d access log lines, have %d: %v", n, len(l), l)
			}
			return l
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (s *syncBuffer) last(t *testing.T, n int) map[string]any {
	t.Helper()
	l := s.waitLines(t, n)
	return l[n-1]
}

// wantLast checks fields of the last access log line: an int as a number,
// a string as a string.
func (s *syncBuffer) wantLast(t *testing.T, want map[string]any) {
	t.Helper()
	l := s.last(t, 1)
	for k, v := range want {
		switch v := v.(type) {
		case int:
			if num(l, k) != v {
				t.Errorf("access log: %s %d, want %d: %v", k, num(l, k), v, l)
			}
		case string:
			if str(l, k) != v {
				t.Errorf("access log: %s %q, want %q: %v", k, str(l, k), v, l)
			}
		default:
			t.Fatalf("wantLast: %s: %T is neither int nor string", k, v)
		}
	}
}

// clock is a test clock: real time plus an offset the test can advance.
type clock struct{ off atomic.Int64 }

func (c *clock) now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *clock) advance(d time.Duration) { c.off.Add(int64(d)) }

// harness runs a proxy for one test.
type harness struct {
	t      testing.TB
	srv    *Server
	cfg    *config.Config
	log    *syncBuffer
	clock  *clock
	urls   map[string]string
	cancel context.CancelFunc
	done   chan error
	dir    string
}

type harnessOpts struct {
	health   HealthSource
	failures FailureReporter
}

// startProxy parses yaml (where {{VS:name}} stands for a free loopback
// port for virtual server name, {{M:name}} for a member's port, {{KEY}}
// and {{KEY2}} for base64 keys, {{DIR}} for a temp dir, {{CERT}} and
// {{CERTKEY}} for a certificate) and serves it.
func startProxy(t testing.TB, yaml string, members map[string]*member, ho *harnessOpts) *harness {
	t.Helper()
	h := &harness{t: t, log: &syncBuffer{}, clock: &clock{}, urls: map[string]string{}, done: make(chan error, 1), dir: t.TempDir()}
	lns := map[string]net.Listener{}
	for {
		i := strings.Index(yaml, "{{VS:")
		if i < 0 {
			break
		}
		j := strings.Index(yaml[i:], "}}")
		name := yaml[i+5 : i+j]
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[name] = ln
		yaml = yaml[:i] + fmt.Sprint(ln.Addr().(*net.TCPAddr).Port) + yaml[i+j+2:]
	}
	for name, m := range members {
		yaml = strings.ReplaceAll(yaml, "{{M:"+name+"}}", fmt.Sprint(m.addr.Port()))
	}
	if strings.Contains(yaml, "{{CERT}}") {
		cert, key := writeCert(t, h.dir)
		yaml = strings.ReplaceAll(yaml, "{{CERT}}", cert)
		yaml = strings.ReplaceAll(yaml, "{{CERTKEY}}", key)
	}
	yaml = strings.ReplaceAll(yaml, "{{KEY}}", keyB64(testKey))
	yaml = strings.ReplaceAll(yaml, "{{KEY2}}", keyB64(testKey2))
	yaml = strings.ReplaceAll(yaml, "{{DIR}}", h.dir)
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		for _, ln := range lns {
			ln.Close()
		}
		t.Fatalf("config: %v\n%s", err, yaml)
	}
	h.cfg = cfg
	opts := Options{Stdout: h.log, Listeners: lns, Now: h.clock.now, GCInterval: 50 * time.Millisecond}
	if ho != nil {
		opts.Health = ho.health
		opts.Failures = ho.failures
	}
	srv, err := New(compile(t, cfg), opts)
	if err != nil {
		t.Fatal(err)
	}
	h.srv = srv
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- srv.Serve(ctx) }()
	<-srv.Ready()
	for name, ln := range lns {
		scheme := "http"
		for _, vs := range cfg.VirtualServers {
			if vs.Name == name && vs.TLS() {
				scheme = "https"
			}
		}
		h.urls[name] = scheme + "://" + ln.Addr().String()
	}
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		h.t.Errorf("Serve did not return after cancel")
	}
}

// client returns an HTTP client with its own cookie jar and no redirects.
func newClient(t *testing.T) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	return &http.Client{
		Jar:     jar,
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
			ForceAttemptHTTP2: true,
		},
	}
}

// get does a GET and returns the response with its body read.
func get(t *testing.T, c *http.Client, url string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("GET %s: body: %v", url, err)
	}
	return resp, string(b)
}

// setCookies returns the Set-Cookie headers named name.
func setCookies(resp *http.Response, name string) []string {
	var out []string
	for _, l := range resp.Header.Values("Set-Cookie") {
		if strings.HasPrefix(l, name+"=") {
			out = append(out, l)
		}
	}
	return out
}

// cookieValue extracts the value of a Set-Cookie line.
func cookieValue(line string) string {
	v, _, _ := strings.Cut(line, ";")
	_, v, _ = strings.Cut(v, "=")
	return v
}

// writeCert writes a self-signed certificate for 127.0.0.1, ::1 and
// localhost, and its key, as PEM files.
func writeCert(t testing.TB, dir string) (string, string) {
	t.Helper()
	return testutil.WritePEM(t, dir, "cert.pem", "key.pem", testutil.SelfSigned(t, "localhost", "127.0.0.1", "::1"))
}

func str(m map[string]any, k string) string {
	s, _ := m[k].(string)
	return s
}

func num(m map[string]any, k string) int {
	f, _ := m[k].(float64)
	return int(f)
}

// compile is what the daemon runs the proxy on: the config compiled by plan.
func compile(t testing.TB, cfg *config.Config) Spec {
	t.Helper()
	sp, err := plan.L7(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return sp
}
