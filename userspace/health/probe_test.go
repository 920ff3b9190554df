package health

import (
	"context"
	"crypto/x509"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

// runProbe runs one probe of m against ap with m's timeout.
func runProbe(t *testing.T, c *Checker, ap netip.AddrPort, m Monitor) (time.Duration, error) {
	t.Helper()
	tg := target("p", "m", ap, m)
	if c == nil {
		c = &Checker{}
	}
	p := c.newProber(&tg)
	defer p.close()
	ctx, cancel := context.WithTimeout(context.Background(), m.Timeout)
	defer cancel()
	start := time.Now()
	err := p.probe(ctx)
	return time.Since(start), err
}

// wantProbeError checks a probe's outcome: with want "" it succeeded,
// otherwise its error holds want.
func wantProbeError(t *testing.T, err error, want string) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatalf("probe failed: %v", err)
		}
		return
	}
	contains(t, err, want)
}

// closedPort returns an address on which nothing listens (TCP or UDP).
func closedPort(t *testing.T, network string) netip.AddrPort {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ap := c.LocalAddr().(*net.UDPAddr).AddrPort()
		c.Close()
		return ap
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ap := l.Addr().(*net.TCPAddr).AddrPort()
	l.Close()
	return ap
}

// tcpServer accepts connections and runs handle on each.
func tcpServer(t *testing.T, network, addr string, handle func(net.Conn)) netip.AddrPort {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
	return l.Addr().(*net.TCPAddr).AddrPort()
}

// probeCase is one probe and what it must give.
type probeCase struct {
	name    string
	ap      netip.AddrPort
	m       Monitor
	wantErr string // empty: success
	slow    bool   // fails by timeout
}

// runProbeCases runs each case's probe: it succeeds, or fails with
// wantErr, after more than 200ms if and only if slow.
func runProbeCases(t *testing.T, cases []probeCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			took, err := runProbe(t, nil, tc.ap, tc.m)
			wantProbeError(t, err, tc.wantErr)
			if tc.wantErr != "" && tc.slow != (took > 200*time.Millisecond) {
				t.Errorf("took %v (a timeout: %v)", took, tc.slow)
			}
		})
	}
}

// sendReceive is a monitor of typ that sends send and expects receive,
// with a timeout of 2s.
func sendReceive(typ MonitorType, send, receive string) Monitor {
	m := mon(typ, 2*time.Second, 1, 1)
	m.Send, m.Receive = send, receive
	return m
}

// short gives m a timeout of 240ms.
func short(m Monitor) Monitor {
	m.Timeout = 240 * time.Millisecond
	return m
}

func TestTCPProbe(t *testing.T) {
	noLeaks(t)
	hold := make(chan struct{})
	t.Cleanup(func() { close(hold) })
	echo := tcpServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		buf := make([]byte, 64)
		n, _ := c.Read(buf)
		c.Write([]byte("+PONG " + string(buf[:n])))
	})
	banner := tcpServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) { c.Write([]byte("220 ready but not the right thing\r\n")) })
	silent := tcpServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) { <-hold })
	v6 := netip.AddrPort{}
	if l, err := net.Listen("tcp", "[::1]:0"); err == nil {
		l.Close()
		v6 = tcpServer(t, "tcp", "[::1]:0", func(net.Conn) {})
	}
	refused := closedPort(t, "tcp")

	m := func(send, receive string) Monitor { return sendReceive(MonitorTCP, send, receive) }
	runProbeCases(t, []probeCase{
		{"connect", echo, m("", ""), "", false},
		{"send and receive", echo, m("PING\r\n", "+PONG"), "", false},
		{"receive banner without send", banner, m("", "220 ready"), "", false},
		{"refused", refused, m("", ""), "connect " + refused.String() + ": connection refused", false},
		{"receive missing", banner, m("", "+OK"), `lacks "+OK" (closed after`, false},
		{"receive timeout", silent, short(m("PING\r\n", "+PONG")), "no answer within 240ms", true},
	})
	if v6.IsValid() {
		if _, err := runProbe(t, nil, v6, m("", "")); err != nil {
			t.Errorf("tcp probe to %s: %v", v6, err)
		}
	} else {
		t.Log("no IPv6 loopback: skipped the ::1 tcp probe")
	}
}

func TestHTTPProbe(t *testing.T) {
	noLeaks(t)
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "all good: healthy\n") })
	mux.HandleFunc("/status/", func(w http.ResponseWriter, r *http.Request) {
		code := 0
		for _, c := range strings.TrimPrefix(r.URL.Path, "/status/") {
			code = code*10 + int(c-'0')
		}
		w.WriteHeader(code)
	})
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ok", http.StatusFound) })
	mux.HandleFunc("/host", func(w http.ResponseWriter, r *http.Request) {
		if r.Host != "shop.example" || r.Header.Get("X-Probe") != "1" || r.UserAgent() != userAgent {
			w.WriteHeader(http.StatusMisdirectedRequest)
			return
		}
		io.WriteString(w, "hello shop")
	})
	mux.HandleFunc("/post", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || string(b) != "ping" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		io.WriteString(w, "pong")
	})
	mux.HandleFunc("/head", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodHead {
			w.WriteHeader(http.StatusMethodNotAllowed)
		}
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(2 * time.Second):
		case <-r.Context().Done():
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	tlsSrv := httptest.NewUnstartedServer(mux)
	tlsSrv.Config.ErrorLog = log.New(io.Discard, "", 0) // the failed verifications' handshake errors
	tlsSrv.StartTLS()
	t.Cleanup(tlsSrv.Close)
	plain := netip.MustParseAddrPort(srv.Listener.Addr().String())
	secure := netip.MustParseAddrPort(tlsSrv.Listener.Addr().String())
	refused := closedPort(t, "tcp")

	// plan.Compile reads a monitor's tls_ca_file into this pool.
	ca := x509.NewCertPool()
	ca.AddCert(tlsSrv.Certificate())

	type opt func(*Monitor)
	path := func(p string) opt { return func(m *Monitor) { m.Path = p } }
	codes := func(cs ...string) opt {
		return func(m *Monitor) {
			m.Codes = nil
			for _, c := range cs {
				lo, hi, isRange := strings.Cut(c, "-")
				if !isRange {
					hi = lo
				}
				a, errA := strconv.Atoi(lo)
				b, errB := strconv.Atoi(hi)
				if errA != nil || errB != nil {
					t.Fatalf("code range %q", c)
				}
				m.Codes = append(m.Codes, CodeRange{Lo: a, Hi: b})
			}
		}
	}
	body := func(s string) opt { return func(m *Monitor) { m.ResponseBody = s } }
	mk := func(typ MonitorType, opts ...opt) Monitor {
		m := mon(typ, 2*time.Second, 1, 1)
		for _, o := range opts {
			o(&m)
		}
		return m
	}
	for _, tc := range []struct {
		name    string
		ap      netip.AddrPort
		m       Monitor
		wantErr string
	}{
		{"200", plain, mk("http", path("/ok")), ""},
		{"body substring", plain, mk("http", path("/ok"), body("healthy")), ""},
		{"204 in 200-299", plain, mk("http", path("/status/204")), ""},
		{"404 in a list of codes and ranges", plain, mk("http", path("/status/404"), codes("301", "400-404")), ""},
		{"host, header and user agent", plain, mk("http", path("/host"), func(m *Monitor) {
			m.Host = "shop.example"
			m.Headers = []Header{{Name: "X-Probe", Value: "1"}}
		}, body("hello")), ""},
		{"post with a body", plain, mk("http", path("/post"), func(m *Monitor) { m.Method, m.RequestBody = "POST", "ping" }, body("pong")), ""},
		{"head", plain, mk("http", path("/head"), func(m *Monitor) { m.Method = "HEAD" }), ""},
		{"wrong status", plain, mk("http", path("/status/500")), "GET " + plain.String() + "/status/500: status 500, expected 200-299"},
		{"wrong status in a list", plain, mk("http", path("/status/405"), codes("301", "400-404")), "status 405, expected 301, 400-404"},
		{"redirect is not followed", plain, mk("http", path("/redirect")), "status 302"},
		{"body substring missing", plain, mk("http", path("/ok"), body("sick")), `the body lacks "sick"`},
		{"host header missing", plain, mk("http", path("/host")), "status 421"},
		{"refused", refused, mk("http"), "GET " + refused.String() + ": connection refused"},
		{"timeout", plain, mk("http", path("/slow"), func(m *Monitor) { m.Timeout = 240 * time.Millisecond }), "no answer within 240ms"},
		{"https without verification", secure, mk("https", path("/ok"), body("healthy")), ""},
		{"https verified against a CA file", secure, mk("https", path("/ok"), func(m *Monitor) { m.TLSVerify, m.RootCAs = true, ca }), ""},
		{"https verified, server name from host", secure, mk("https", path("/ok"), func(m *Monitor) {
			m.TLSVerify, m.RootCAs, m.Host = true, ca, "example.com:443"
		}), ""},
		{"https verification fails", secure, mk("https", path("/ok"), func(m *Monitor) { m.TLSVerify = true }), "certificate"},
		{"https wrong server name", secure, mk("https", path("/ok"), func(m *Monitor) {
			m.TLSVerify, m.RootCAs, m.TLSServerName = true, ca, "other.test"
		}), "other.test"},
		{"https to a plain server", plain, mk("https", path("/ok")), "GET " + plain.String()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := runProbe(t, nil, tc.ap, tc.m)
			wantProbeError(t, err, tc.wantErr)
		})
	}

	if l, err := net.Listen("tcp", "[::1]:0"); err == nil {
		srv6 := httptest.NewUnstartedServer(mux)
		srv6.Listener.Close()
		srv6.Listener = l
		srv6.Start()
		defer srv6.Close()
		ap := netip.MustParseAddrPort(l.Addr().String())
		if _, err := runProbe(t, nil, ap, mk("http", path("/ok"), body("healthy"))); err != nil {
			t.Errorf("http probe to %s: %v", ap, err)
		}
	}
}

// udpServer answers each datagram with reply(datagram); nil reply drops it.
func udpServer(t *testing.T, addr string, reply func([]byte) []byte) netip.AddrPort {
	t.Helper()
	c, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			if r := reply(buf[:n]); r != nil {
				c.WriteTo(r, from)
			}
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

func TestUDPProbe(t *testing.T) {
	noLeaks(t)
	echo := udpServer(t, "127.0.0.1:0", func(b []byte) []byte { return append([]byte("echo: "), b...) })
	drop := udpServer(t, "127.0.0.1:0", func([]byte) []byte { return nil })
	refused := closedPort(t, "udp")
	m := func(send, receive string) Monitor { return sendReceive(MonitorUDP, send, receive) }
	runProbeCases(t, []probeCase{
		{"reply holds receive", echo, m("hello", "echo: hello"), "", false},
		{"any reply", echo, m("hello", ""), "", false},
		{"reply lacks receive", echo, m("hello", "goodbye"), `lacks "goodbye"`, false},
		{"no reply", drop, short(m("hello", "x")), "udp reply from " + drop.String() + ": no answer within 240ms", true},
		{"port unreachable", refused, m("hello", "x"), "udp " + refused.String() + ": port unreachable", false},
	})
	if c, err := net.ListenPacket("udp", "[::1]:0"); err == nil {
		c.Close()
		ap := udpServer(t, "[::1]:0", func(b []byte) []byte { return b })
		if _, err := runProbe(t, nil, ap, m("v6?", "v6?")); err != nil {
			t.Errorf("udp probe to %s: %v", ap, err)
		}
	}
}
