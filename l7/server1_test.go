package l7

import (
	"bufio"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The HTTP/1 server, as a client sees it.

// rawExchange writes requests on one connection and reads n responses.
func rawExchange(t *testing.T, url, raw string, n int, method string) ([]*http.Response, []string) {
	t.Helper()
	c := rawConn(t, url)
	io.WriteString(c, raw)
	br := bufio.NewReader(c)
	var resps []*http.Response
	var bodies []string
	for i := 0; i < n; i++ {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("response %d body: %v", i, err)
		}
		resps = append(resps, resp)
		bodies = append(bodies, string(b))
	}
	return resps, bodies
}

func TestHTTP10Clients(t *testing.T) {
	m := startRawMember(t)
	m.respond = func(n int, r *http.Request) string {
		if r.URL.Path == "/chunked" {
			return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
		}
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	}
	h := smugglingProxy(t, m, "")
	// Keep-alive asked for: kept, and said so.
	resps, bodies := rawExchange(t, h.urls["web"], "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n", 2, "GET")
	if resps[0].Proto != "HTTP/1.0" || resps[0].Header.Get("Connection") != "keep-alive" || bodies[0] != "ok" {
		t.Errorf("first: %s Connection %q body %q", resps[0].Proto, resps[0].Header.Get("Connection"), bodies[0])
	}
	if !resps[1].Close || bodies[1] != "ok" {
		t.Errorf("second (no keep-alive): Close %v body %q", resps[1].Close, bodies[1])
	}
	// A body of unknown length goes to an HTTP/1.0 client until the close.
	resps, bodies = rawExchange(t, h.urls["web"], "GET /chunked HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 1, "GET")
	if len(resps[0].TransferEncoding) != 0 || !resps[0].Close || bodies[0] != "abc" {
		t.Errorf("chunked to HTTP/1.0: TE %q Close %v body %q", resps[0].TransferEncoding, resps[0].Close, bodies[0])
	}
}

func TestResponseFraming(t *testing.T) {
	m := startRawMember(t)
	m.respond = func(n int, r *http.Request) string {
		switch r.URL.Path {
		case "/chunked":
			return "HTTP/1.1 200 OK\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nX-Sum: 5\r\n\r\n"
		case "/hints":
			return "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
		case "/head":
			return "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"
		case "/nocontent":
			return "HTTP/1.1 204 No Content\r\n\r\n"
		}
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	}
	h := smugglingProxy(t, m, "")

	resps, bodies := rawExchange(t, h.urls["web"], "GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n", 1, "GET")
	r := resps[0]
	if len(r.TransferEncoding) != 1 || bodies[0] != "abcde" || r.Trailer.Get("X-Sum") != "5" {
		t.Errorf("chunked: TE %q body %q trailer %v", r.TransferEncoding, bodies[0], r.Trailer)
	}
	if r.Header.Get("Date") == "" {
		t.Error("no Date")
	}

	_, br, hint := rawRequest(t, h.urls["web"], "GET /hints HTTP/1.1\r\nHost: x\r\n\r\n")
	if hint.StatusCode != 103 || hint.Header.Get("Link") != "</a.css>; rel=preload" {
		t.Fatalf("103: %v", hint)
	}
	final, err := http.ReadResponse(br, nil)
	if err != nil || final.StatusCode != 200 || final.Header.Get("Link") != "" {
		t.Fatalf("after the 103: %v %v (the hint's fields must not stay)", final, err)
	}

	resps, bodies = rawExchange(t, h.urls["web"], "HEAD /head HTTP/1.1\r\nHost: x\r\n\r\nGET /x HTTP/1.1\r\nHost: x\r\n\r\n", 2, "HEAD")
	if resps[0].ContentLength != 1234 || bodies[0] != "" {
		t.Errorf("HEAD: length %d body %q", resps[0].ContentLength, bodies[0])
	}
	resps, bodies = rawExchange(t, h.urls["web"], "GET /nocontent HTTP/1.1\r\nHost: x\r\n\r\nGET /x HTTP/1.1\r\nHost: x\r\n\r\n", 2, "GET")
	if resps[0].StatusCode != 204 || resps[1].StatusCode != 200 || bodies[1] != "ok" {
		t.Errorf("204 then 200: %d %d %q", resps[0].StatusCode, resps[1].StatusCode, bodies[1])
	}
}

// A body the proxy did not need (it answered first) is read and thrown
// away, so the connection carries the next request; Connection: close is
// honoured.
func TestUnreadBodyAndConnectionClose(t *testing.T) {
	m := startRawMember(t)
	h := startProxy(t, `
pools:
  - name: p
    members:
      - {name: raw, address: 127.0.0.1, port: `+itoa(m.port())+`, state: disabled}
virtual_servers:
  - {name: web, type: http, address: 127.0.0.1, port: {{VS:web}}, pool: p}
`, nil, nil)
	body := strings.Repeat("b", 10000)
	resps, _ := rawExchange(t, h.urls["web"], "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 10000\r\n\r\n"+body+"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 2, "GET")
	if resps[0].StatusCode != 503 || resps[1].StatusCode != 503 {
		t.Fatalf("statuses %d %d", resps[0].StatusCode, resps[1].StatusCode)
	}
	if resps[0].Close || !resps[1].Close {
		t.Errorf("Close: %v %v, want false true", resps[0].Close, resps[1].Close)
	}
	if seen, _, _ := m.seen(); len(seen) != 0 {
		t.Errorf("a disabled member got %d requests", len(seen))
	}
}

func TestShutdownClosesIdleConnections(t *testing.T) {
	ms := twoMembers(t)
	h := startProxy(t, cookieYAML("", "shutdown_timeout: 5"), ms, nil)
	_, br, resp := rawRequest(t, h.urls["web"], "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	io.Copy(io.Discard, resp.Body)
	// The connection idles; shutting down must not wait for it.
	start := time.Now()
	h.stop()
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("shutdown waited %v for an idle connection", d)
	}
	if _, err := br.ReadByte(); err == nil {
		t.Error("the idle connection is still open")
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
