package l7

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func rawConn(t *testing.T, url string) net.Conn {
	t.Helper()
	addr := strings.TrimPrefix(strings.TrimPrefix(url, "http://"), "https://")
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(url, "https://") {
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		c = tc
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rawRequest writes raw on a new connection to url and reads the head of
// the answer, within 5 s; br reads on after it.
func rawRequest(t *testing.T, url, raw string) (c net.Conn, br *bufio.Reader, resp *http.Response) {
	t.Helper()
	c = rawConn(t, url)
	io.WriteString(c, raw)
	br = bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	return c, br, resp
}

func TestHugeCookieHeaderIs431AndLogged(t *testing.T) {
	for _, tlsOn := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", tlsOn), func(t *testing.T) {
			ms := twoMembers(t)
			vs := "max_header_bytes: 8192"
			if tlsOn {
				vs += "\ntls_cert_file: {{CERT}}\ntls_key_file: {{CERTKEY}}"
			}
			h := startProxy(t, cookieYAML("", vs), ms, nil)
			huge := "Cookie: " + strings.Repeat("x", 40000) + "\r\n"
			_, _, resp := rawRequest(t, h.urls["web"], "GET / HTTP/1.1\r\nHost: t\r\n"+huge+"\r\n")
			if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
				t.Fatalf("status %d, want 431", resp.StatusCode)
			}
			h.log.wantLast(t, map[string]any{"status": 431, "decision": "rejected", "reason": "headers_too_large"})
			if ms["a"].hits.Load()+ms["b"].hits.Load() != 0 {
				t.Errorf("an oversized request reached a member")
			}
		})
	}
}

// A request the proxy refuses itself is answered with the status and
// logged so.
func TestRefusedRequestAnsweredAndLogged(t *testing.T) {
	for _, tc := range []struct {
		name, vs, raw string
		status        int
		log           map[string]any
	}{
		{"malformed is 400", "", "GET / HTTP/1.1\r\nHost: t\r\nBad Header Without Colon\r\n\r\n",
			400, map[string]any{"status": 400, "decision": "rejected"}},
		{"slow body times out", "request_timeout: 0.3", "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789",
			http.StatusRequestTimeout, map[string]any{"status": 408, "reason": "client_body_timeout"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ms := twoMembers(t)
			h := startProxy(t, cookieYAML("", tc.vs), ms, nil)
			_, _, resp := rawRequest(t, h.urls["web"], tc.raw)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			h.log.wantLast(t, tc.log)
		})
	}
}

func TestSlowClientHeadersTimeOut(t *testing.T) {
	ms := twoMembers(t)
	h := startProxy(t, cookieYAML("", "read_header_timeout: 0.3"), ms, nil)
	c := rawConn(t, h.urls["web"])
	start := time.Now()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Read(make([]byte, 1))
	if err == nil {
		t.Fatal("the proxy answered a request it never fully received")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("slow client held the connection %v", d)
	}
	h.log.wantLast(t, map[string]any{"status": 408, "reason": "header_timeout"})
}

func TestClientGoneMidHeadersLogged(t *testing.T) {
	ms := twoMembers(t)
	h := startProxy(t, cookieYAML("", ""), ms, nil)
	c := rawConn(t, h.urls["web"])
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\n")
	time.Sleep(50 * time.Millisecond)
	c.Close()
	h.log.wantLast(t, map[string]any{"status": 499, "reason": "client_closed"})
}

func TestMemberResetMidResponse(t *testing.T) {
	a := startMember(t, "a", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100000")
		w.WriteHeader(200)
		w.Write([]byte(strings.Repeat("x", 1000)))
		w.(http.Flusher).Flush()
		c, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		c.(*net.TCPConn).SetLinger(0) // RST
		c.Close()
	})
	ms := map[string]*member{"a": a, "b": a}
	yaml := oneMember(cookieYAML("", ""))
	h := startProxy(t, yaml, ms, nil)
	expectTruncated(t, h.urls["web"])
	l := h.log.last(t, 1)
	if str(l, "reason") != "member_aborted" || !strings.Contains(str(l, "error"), "member failed mid-response") {
		t.Errorf("access log: %v", l)
	}
	// The proxy still serves.
	a.handler = nil
	if resp, _ := get(t, &http.Client{}, h.urls["web"]); resp.StatusCode != 200 {
		t.Fatalf("after a reset: status %d", resp.StatusCode)
	}
}

// stallingProxy is a proxy with server_timeout 0.3s over member a alone,
// which runs answer and then stalls until the request is cancelled or the
// test ends.
func stallingProxy(t *testing.T, answer func(w http.ResponseWriter)) *harness {
	release := make(chan struct{})
	a := startMember(t, "a", func(w http.ResponseWriter, r *http.Request) {
		answer(w)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	h := startProxy(t, oneMember(cookieYAML("", "server_timeout: 0.3")), map[string]*member{"a": a}, nil)
	t.Cleanup(func() { close(release) })
	return h
}

func TestMemberStallsBeforeHeadersIs504(t *testing.T) {
	h := stallingProxy(t, func(http.ResponseWriter) {})
	resp, _ := get(t, &http.Client{}, h.urls["web"])
	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("status %d, want 504", resp.StatusCode)
	}
	h.log.wantLast(t, map[string]any{"reason": "server_timeout"})
}

func TestMemberStallsMidBodyIsCut(t *testing.T) {
	h := stallingProxy(t, func(w http.ResponseWriter) {
		w.Header().Set("Content-Length", "10")
		w.Write([]byte("12345"))
		w.(http.Flusher).Flush()
	})
	start := time.Now()
	expectTruncated(t, h.urls["web"])
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("stalled member held the client %v", d)
	}
	h.log.wantLast(t, map[string]any{"reason": "server_timeout"})
}

func TestConnectMethodRefused(t *testing.T) {
	ms := twoMembers(t)
	h := startProxy(t, cookieYAML("", ""), ms, nil)
	c := rawConn(t, h.urls["web"])
	io.WriteString(c, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

func TestNoMemberIs503(t *testing.T) {
	ms := twoMembers(t)
	ms["a"].stop()
	ms["b"].stop()
	h := startProxy(t, cookieYAML("", ""), ms, nil)
	resp, _ := get(t, &http.Client{}, h.urls["web"])
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("status %d Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	h.log.wantLast(t, map[string]any{"decision": "no_member"})
	// Both are now passively down: the next answer comes without dialing.
	resp, _ = get(t, &http.Client{}, h.urls["web"])
	if resp.StatusCode != 503 {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

// expectTruncated fetches url and wants the exchange to fail: either the
// connection drops before the headers (they were still buffered) or the
// body ends short. A complete-looking response or a 5xx made up after the
// 200 was sent would both be wrong.
func expectTruncated(t *testing.T, url string) {
	t.Helper()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: the member's 200 was already on its way", resp.StatusCode)
	}
	if n, err := io.Copy(io.Discard, resp.Body); err == nil {
		t.Fatalf("client read %d bytes and no error: a truncated body must not look complete", n)
	}
}

func TestClientThatStopsReadingIsCut(t *testing.T) {
	chunk := []byte(strings.Repeat("z", 64<<10))
	a := startMember(t, "a", func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i < 4096; i++ { // up to 256 MiB, far past any socket buffer
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	ms := map[string]*member{"a": a}
	yaml := oneMember(cookieYAML("", "write_timeout: 0.3"))
	h := startProxy(t, yaml, ms, nil)
	c := rawConn(t, h.urls["web"])
	c.(*net.TCPConn).SetReadBuffer(4096)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	// Read nothing. The proxy must give up on us, not hold the member forever.
	l := h.log.waitLinesFor(t, 1, 15*time.Second)[0]
	if str(l, "reason") != "client_write_timeout" || num(l, "status") != 200 {
		t.Errorf("access log: %v", l)
	}
}
