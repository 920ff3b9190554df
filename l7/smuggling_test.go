package l7

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// The request-smuggling suite: crafted requests from a raw client socket
// through the proxy to a raw-socket member that records every byte it
// receives. Whatever the proxy accepts, the member must receive as the
// same requests, each framed one way only (exactly one of Content-Length
// and Transfer-Encoding: chunked), with CRLF line ends, no obs-fold, no
// NUL or bare CR, so that no member can split the stream other than the
// proxy did; and what the proxy refuses never reaches the member. The
// member then misbehaves in the same ways towards the proxy, which must
// never pass a second response, or a piece of one, to the client.

// seenRequest is a request as the member parsed it.
type seenRequest struct {
	method, uri, host string
	header            http.Header
	body              string
}

// rawMember is a member on a raw TCP socket.
type rawMember struct {
	t  *testing.T
	ln net.Listener

	mu         sync.Mutex
	raw        []string // bytes received, per connection
	reqs       []seenRequest
	violations []string
	conns      int
	// respond returns the bytes to answer the n-th request with (n from
	// 0); nil answers 200 with the body "ok".
	respond func(n int, r *http.Request) string
}

func startRawMember(t *testing.T) *rawMember {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &rawMember{t: t, ln: ln}
	go m.serve()
	t.Cleanup(func() { ln.Close() })
	return m
}

func (m *rawMember) port() int { return m.ln.Addr().(*net.TCPAddr).Port }

func (m *rawMember) serve() {
	for {
		c, err := m.ln.Accept()
		if err != nil {
			return
		}
		m.mu.Lock()
		m.conns++
		idx := len(m.raw)
		m.raw = append(m.raw, "")
		m.mu.Unlock()
		go m.conn(c, idx)
	}
}

// byteRecorder keeps what is read from the connection.
type byteRecorder struct {
	m   *rawMember
	idx int
	c   net.Conn
}

func (r *byteRecorder) Read(p []byte) (int, error) {
	n, err := r.c.Read(p)
	r.m.mu.Lock()
	r.m.raw[r.idx] += string(p[:n])
	r.m.mu.Unlock()
	return n, err
}

func (m *rawMember) conn(c net.Conn, idx int) {
	defer c.Close()
	br := bufio.NewReaderSize(&byteRecorder{m, idx, c}, 1<<20)
	for {
		head, err := peekHead(br)
		if err != nil {
			return
		}
		if v := strictHeadViolations(head); v != "" {
			m.violate(v)
		}
		req, err := http.ReadRequest(br)
		if err != nil {
			m.violate("unreadable request: " + err.Error())
			return
		}
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return // cut short: never a complete request
		}
		m.mu.Lock()
		n := len(m.reqs)
		m.reqs = append(m.reqs, seenRequest{req.Method, req.RequestURI, req.Host, req.Header, string(body)})
		respond := m.respond
		m.mu.Unlock()
		out := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
		if respond != nil {
			out = respond(n, req)
		}
		closeConn := strings.HasSuffix(out, closeMarker)
		if _, err := io.WriteString(c, strings.TrimSuffix(out, closeMarker)); err != nil || closeConn {
			return
		}
	}
}

func (m *rawMember) violate(v string) {
	m.mu.Lock()
	m.violations = append(m.violations, v)
	m.mu.Unlock()
}

func (m *rawMember) seen() ([]seenRequest, []string, int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]seenRequest(nil), m.reqs...), append([]string(nil), m.violations...), m.conns
}

// peekHead returns the bytes of the next request head (up to and with the
// empty line) without consuming them.
func peekHead(br *bufio.Reader) ([]byte, error) {
	for n := 1; ; n++ {
		b, err := br.Peek(n)
		if err != nil {
			return nil, err
		}
		if bytes.HasSuffix(b, []byte("\r\n\r\n")) || bytes.HasSuffix(b, []byte("\n\n")) {
			return b, nil
		}
	}
}

// strictHeadViolations checks a request head as a strict member would
// need it: CRLF only, no NUL or lone CR, no obs-fold, token names right
// before the colon, and one framing only.
func strictHeadViolations(head []byte) string {
	for i, c := range head {
		switch {
		case c == 0:
			return "NUL in the head"
		case c == '\n' && (i == 0 || head[i-1] != '\r'):
			return "a line ends with LF alone"
		case c == '\r' && (i+1 >= len(head) || head[i+1] != '\n'):
			return "a CR that does not end a line"
		}
	}
	lines := strings.Split(strings.TrimSuffix(string(head), "\r\n\r\n"), "\r\n")
	var cl, te int
	for _, l := range lines[1:] {
		if l == "" || l[0] == ' ' || l[0] == '\t' {
			return "obs-fold: " + l
		}
		name, value, ok := strings.Cut(l, ":")
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return "bad field: " + l
		}
		switch strings.ToLower(name) {
		case "content-length":
			cl++
		case "transfer-encoding":
			te++
			if strings.TrimSpace(value) != "chunked" {
				return "Transfer-Encoding " + value
			}
		}
	}
	if cl > 1 || te > 1 || (cl > 0 && te > 0) {
		return fmt.Sprintf("framing: %d Content-Length and %d Transfer-Encoding fields", cl, te)
	}
	return ""
}

// smugglingProxy serves one virtual server over the raw member.
func smugglingProxy(t *testing.T, m *rawMember, vs string) *harness {
	return startProxy(t, fmt.Sprintf(`
pools:
  - name: p
    members:
      - {name: raw, address: 127.0.0.1, port: %d}
virtual_servers:
%s%s`, m.port(), httpVS("web", ""), indent(vs, 4)), nil, nil)
}

// exchange writes raw to the proxy and reads the responses until the
// proxy closes the connection or stays quiet.
func exchange(t *testing.T, url, raw string, quiet time.Duration) (resps []*http.Response, bodies []string, closed bool) {
	t.Helper()
	c := rawConn(t, url)
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for {
		c.SetReadDeadline(time.Now().Add(quiet))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			var ne net.Error
			return resps, bodies, !(errorsAs(err, &ne) && ne.Timeout())
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return append(resps, resp), append(bodies, string(b)+" [cut: "+err.Error()+"]"), true
		}
		resps = append(resps, resp)
		bodies = append(bodies, string(b))
	}
}

func errorsAs(err error, target *net.Error) bool {
	ne, ok := err.(net.Error)
	if ok {
		*target = ne
	}
	return ok
}

func TestRequestSmuggling(t *testing.T) {
	for _, tc := range []struct {
		name   string
		raw    string
		status []int // the answers, in order
		closed bool  // the proxy closes the connection after them
		seen   []seenRequest
	}{
		{
			name:   "CL.TE: Content-Length and chunked, a request hidden after the chunked body",
			raw:    "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGPOST /hidden HTTP/1.1\r\nHost: x\r\n\r\n",
			status: []int{200}, closed: true,
			seen: []seenRequest{{method: "POST", uri: "/a", host: "x"}},
		},
		{
			name:   "TE.CL: chunked then Content-Length",
			raw:    "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /hidden HTTP/1.1\r\nHost: x\r\n\r\n",
			status: []int{200}, closed: true,
			seen: []seenRequest{{method: "POST", uri: "/a", host: "x", body: "hello"}},
		},
		{
			name:   "two different Content-Lengths",
			raw:    "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
			status: []int{400}, closed: true,
		},
		{
			name:   "the same Content-Length twice",
			raw:    "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
			status: []int{200},
			seen:   []seenRequest{{method: "POST", uri: "/a", host: "x", body: "hello"}},
		},
		{
			name:   "obs-fold",
			raw:    "GET /a HTTP/1.1\r\nHost: x\r\nX-Folded: one\r\n two\r\n\r\n",
			status: []int{400}, closed: true,
		},
		{
			name:   "obs-fold hiding a Transfer-Encoding",
			raw:    "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-A: a\r\n Transfer-Encoding: chunked\r\n\r\nhello",
			status: []int{400}, closed: true,
		},
		{
			name:   "bare LF line ends",
			raw:    "GET /a HTTP/1.1\nHost: x\nX-B: 1\n\n",
			status: []int{200},
			seen:   []seenRequest{{method: "GET", uri: "/a", host: "x", header: http.Header{"X-B": {"1"}}}},
		},
		{
			name:   "bare LF before a Transfer-Encoding",
			raw:    "POST /a HTTP/1.1\r\nHost: x\r\nX-A: a\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
			status: []int{200}, closed: true,
			seen: []seenRequest{{method: "POST", uri: "/a", host: "x", body: "hello"}},
		},
		{
			name:   "NUL in a field",
			raw:    "GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\x00Transfer-Encoding: chunked\r\n\r\n",
			status: []int{400}, closed: true,
		},
		{
			name:   "bare CR in a field",
			raw:    "GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\rTransfer-Encoding: chunked\r\n\r\n",
			status: []int{400}, closed: true,
		},
		{
			name:   "white space before the colon",
			raw:    "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello",
			status: []int{400}, closed: true,
		},
		{
			name:   "chunk size overflow",
			raw:    "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff1\r\nx\r\n0\r\n\r\nGET /hidden HTTP/1.1\r\nHost: x\r\n\r\n",
			status: []int{400}, closed: true,
		},
		{
			name:   "Transfer-Encoding: chunked, identity",
			raw:    "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\nGET /hidden HTTP/1.1\r\nHost: x\r\n\r\n",
			status: []int{501}, closed: true,
		},
		{
			name:   "Transfer-Encoding in HTTP/1.0",
			raw:    "POST /a HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello",
			status: []int{400}, closed: true,
		},
		{
			name:   "no Host in HTTP/1.1",
			raw:    "GET /a HTTP/1.1\r\nX-A: 1\r\n\r\n",
			status: []int{400}, closed: true,
		},
		{
			name:   "two Hosts",
			raw:    "GET /a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
			status: []int{400}, closed: true,
		},
		{
			name:   "a Host with a slash",
			raw:    "GET /a HTTP/1.1\r\nHost: x/y\r\n\r\n",
			status: []int{400}, closed: true,
		},
		{
			name:   "HTTP/1.2",
			raw:    "GET /a HTTP/1.2\r\nHost: x\r\n\r\n",
			status: []int{505}, closed: true,
		},
		{
			name:   "a target with a control character",
			raw:    "GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n",
			status: []int{400}, closed: true,
		},
		{
			name:   "Expect: 100-continue",
			raw:    "POST /a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
			status: []int{100, 200},
			seen:   []seenRequest{{method: "POST", uri: "/a", host: "x", body: "hi"}},
		},
		{
			name:   "absolute-form target: its authority is the Host the member sees",
			raw:    "GET http://other.example/p?q=1 HTTP/1.1\r\nHost: x\r\n\r\n",
			status: []int{200},
			seen: []seenRequest{{method: "GET", uri: "/p?q=1", host: "other.example",
				header: http.Header{"X-Forwarded-Host": {"other.example"}}}},
		},
		{
			name:   "oversized request line",
			raw:    "GET /" + strings.Repeat("a", 70000) + " HTTP/1.1\r\nHost: x\r\n\r\n",
			status: []int{431}, closed: true,
		},
		{
			name:   "pipelined requests",
			raw:    "GET /1 HTTP/1.1\r\nHost: x\r\n\r\nPOST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /3 HTTP/1.1\r\nHost: x\r\n\r\n",
			status: []int{200, 200, 200},
			seen: []seenRequest{{method: "GET", uri: "/1", host: "x"}, {method: "POST", uri: "/2", host: "x", body: "abc"},
				{method: "GET", uri: "/3", host: "x"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := startRawMember(t)
			h := smugglingProxy(t, m, "")
			resps, bodies, closed := exchange(t, h.urls["web"], tc.raw, 500*time.Millisecond)
			var got []int
			for _, r := range resps {
				got = append(got, r.StatusCode)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.status) {
				t.Fatalf("answers %v, want %v (bodies %q)", got, tc.status, bodies)
			}
			for i, r := range resps {
				if r.StatusCode == 200 && bodies[i] != "ok" {
					t.Errorf("answer %d: body %q, want the member's \"ok\"", i, bodies[i])
				}
			}
			if tc.closed && !closed {
				t.Errorf("the proxy kept the connection open")
			}
			seen, violations, _ := m.seen()
			if len(violations) > 0 {
				t.Errorf("the member received what a strict parser refuses: %q", violations)
			}
			if len(seen) != len(tc.seen) {
				t.Fatalf("the member received %d requests, want %d: %+v", len(seen), len(tc.seen), seen)
			}
			for i, want := range tc.seen {
				s := seen[i]
				if s.method != want.method || s.uri != want.uri || s.host != want.host || s.body != want.body {
					t.Errorf("request %d: %s %s Host %s body %q, want %s %s Host %s body %q", i,
						s.method, s.uri, s.host, s.body, want.method, want.uri, want.host, want.body)
				}
				for k, v := range want.header {
					if fmt.Sprint(s.header[k]) != fmt.Sprint(v) {
						t.Errorf("request %d: %s %q, want %q", i, k, s.header[k], v)
					}
				}
				if strings.Contains(s.body, "hidden") || strings.Contains(s.uri, "hidden") {
					t.Errorf("a smuggled request reached the member: %+v", s)
				}
			}
		})
	}
}

func TestResponseSmuggling(t *testing.T) {
	const follow = "GET /second HTTP/1.1\r\nHost: x\r\n\r\n"
	for _, tc := range []struct {
		name   string
		first  string // the member's answer to the first request
		status int
		body   string // what the client reads of it ("" with cut)
		cut    bool   // the client connection is aborted mid-body
		fresh  bool   // the second request goes on a new member connection
		closes bool   // the member closes the connection after its answer
	}{
		{
			name:   "Content-Length and chunked, a response hidden after the chunked body",
			first:  "HTTP/1.1 200 OK\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil",
			status: 200, body: "hello", fresh: true,
		},
		{
			name:   "two different Content-Lengths",
			first:  "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 4\r\n\r\nhello",
			status: 502, fresh: true,
		},
		{
			name:   "obs-fold",
			first:  "HTTP/1.1 200 OK\r\nX-A: a\r\n Content-Length: 4\r\nContent-Length: 5\r\n\r\nhello",
			status: 502, fresh: true,
		},
		{
			name:   "bare CR in a field",
			first:  "HTTP/1.1 200 OK\r\nX-A: a\rContent-Length: 4\r\nContent-Length: 5\r\n\r\nhello",
			status: 502, fresh: true,
		},
		{
			name:   "NUL in a field",
			first:  "HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 5\r\n\r\nhello",
			status: 502, fresh: true,
		},
		{
			name:   "Transfer-Encoding: chunked, identity",
			first:  "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
			status: 502, fresh: true,
		},
		{
			name:   "chunk size overflow",
			first:  "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nffffffffffffffffff1\r\nx\r\n0\r\n\r\n",
			status: 200, cut: true, fresh: true,
		},
		{
			name:   "a body until the connection closes",
			first:  "HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\nall of it",
			status: 200, body: "all of it", fresh: true, closes: true,
		},
		{
			name:   "a well-framed response keeps the connection",
			first:  "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
			status: 200, body: "hello",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := startRawMember(t)
			m.respond = func(n int, r *http.Request) string {
				if n == 0 {
					return tc.first
				}
				return "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond"
			}
			if tc.closes {
				m.closeAfterFirst()
			}
			h := smugglingProxy(t, m, "max_fails: 0")
			c := rawConn(t, h.urls["web"])
			br := bufio.NewReader(c)
			io.WriteString(c, "GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				if tc.cut {
					return // aborted before the head: as good as cut
				}
				t.Fatalf("first answer: %v", err)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("first answer %d, want %d", resp.StatusCode, tc.status)
			}
			b, err := io.ReadAll(resp.Body)
			if tc.cut {
				if err == nil {
					t.Fatalf("the body %q looks complete; it must be cut", b)
				}
				l := h.log.last(t, 1)
				if str(l, "reason") != "member_aborted" {
					t.Errorf("access log: %v", l)
				}
				return
			}
			if err != nil {
				t.Fatalf("first body: %v", err)
			}
			if tc.status == 200 && string(b) != tc.body {
				t.Fatalf("first body %q, want %q", b, tc.body)
			}
			if tc.status == 502 {
				if l := h.log.last(t, 1); str(l, "reason") != "member_error" || str(l, "error") == "" {
					t.Errorf("access log: %v", l)
				}
			}
			// The second request gets the member's second answer, not
			// what the first one smuggled.
			io.WriteString(c, follow)
			resp, err = http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("second answer: %v", err)
			}
			b, _ = io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || string(b) != "second" {
				t.Fatalf("second answer %d %q, want 200 \"second\"", resp.StatusCode, b)
			}
			_, _, conns := m.seen()
			if want := 1; tc.fresh {
				if conns != 2 {
					t.Errorf("%d member connections, want 2: the first one must not be reused", conns)
				}
			} else if conns != want {
				t.Errorf("%d member connections, want %d", conns, want)
			}
		})
	}
}

// closeAfterFirst makes the member close its connection after the first
// answer, so that a body delimited by the close ends.
func (m *rawMember) closeAfterFirst() {
	m.mu.Lock()
	defer m.mu.Unlock()
	inner := m.respond
	m.respond = func(n int, r *http.Request) string {
		out := inner(n, r)
		if n == 0 {
			return out + closeMarker
		}
		return out
	}
}

// closeMarker, at the end of an answer, closes the member's connection.
const closeMarker = "\x00close"
