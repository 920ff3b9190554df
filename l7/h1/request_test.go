package h1

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

func readReq(t testing.TB, raw string, max int) (ReqHead, http.Header, *bufio.Reader, error) {
	t.Helper()
	return readWith(raw, func(br *bufio.Reader, buf *[]byte, h http.Header) (ReqHead, error) {
		return ReadRequest(br, buf, max, h)
	})
}

func TestReadRequest(t *testing.T) {
	for _, tc := range []struct {
		name, raw string
		want      ReqHead
		fields    http.Header
		rest      string
	}{
		{"get", "GET /a?b=c HTTP/1.1\r\nHost: x.example\r\nAccept: */*\r\n\r\n",
			ReqHead{Method: "GET", Target: "/a?b=c", Minor: 1, Host: "x.example"}, http.Header{"Accept": {"*/*"}}, ""},
		{"leading empty lines", "\r\n\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
			ReqHead{Method: "GET", Target: "/", Minor: 1, Host: "x"}, http.Header{}, ""},
		{"length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
			ReqHead{Method: "POST", Target: "/", Minor: 1, Host: "x", Framing: Length, Length: 3}, http.Header{}, "abc"},
		{"zero length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
			ReqHead{Method: "POST", Target: "/", Minor: 1, Host: "x"}, http.Header{}, ""},
		{"chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
			ReqHead{Method: "POST", Target: "/", Minor: 1, Host: "x", Framing: Chunked, Length: -1}, http.Header{}, "0\r\n\r\n"},
		{"chunked and length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n",
			ReqHead{Method: "POST", Target: "/", Minor: 1, Host: "x", Framing: Chunked, Length: -1, CloseAfter: true}, http.Header{}, ""},
		{"absolute form", "GET http://other.example:8080/p HTTP/1.1\r\nHost: x\r\n\r\n",
			ReqHead{Method: "GET", Target: "http://other.example:8080/p", Minor: 1, Host: "other.example:8080"}, http.Header{}, ""},
		{"1.0 closes", "GET / HTTP/1.0\r\n\r\n",
			ReqHead{Method: "GET", Target: "/", Minor: 0, Close: true}, http.Header{}, ""},
		{"1.0 keep-alive", "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
			ReqHead{Method: "GET", Target: "/", Minor: 0}, http.Header{"Connection": {"keep-alive"}}, ""},
		{"close", "GET / HTTP/1.1\r\nHost: x\r\nConnection: Close\r\n\r\n",
			ReqHead{Method: "GET", Target: "/", Minor: 1, Host: "x", Close: true}, http.Header{"Connection": {"Close"}}, ""},
		{"expect", "PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
			ReqHead{Method: "PUT", Target: "/", Minor: 1, Host: "x", Framing: Length, Length: 1, ExpectContinue: true},
			http.Header{"Expect": {"100-continue"}}, ""},
		{"connect", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
			ReqHead{Method: "CONNECT", Target: "example.com:443", Minor: 1, Host: "example.com:443"}, http.Header{}, ""},
		{"asterisk", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
			ReqHead{Method: "OPTIONS", Target: "*", Minor: 1, Host: "x"}, http.Header{}, ""},
		{"repeated fields", "GET / HTTP/1.1\r\nHost: x\r\nCookie: a=1\r\ncookie: b=2\r\n\r\n",
			ReqHead{Method: "GET", Target: "/", Minor: 1, Host: "x"}, http.Header{"Cookie": {"a=1", "b=2"}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rq, h, br, err := readReq(t, tc.raw, 1<<16)
			checkRead(t, rq, h, br, err, tc.want, tc.fields, tc.rest)
		})
	}
}

func TestReadRequestRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, raw string
		status    int
	}{
		{"two lengths", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400},
		{"bad length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1a\r\n\r\n", 400},
		{"chunked, identity", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n", 501},
		{"gzip", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
		{"chunked in 1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n\tb\r\n\r\n", 400},
		{"NUL", "GET / HTTP/1.1\r\nHost: x\r\nX: a\x00\r\n\r\n", 400},
		{"bare CR", "GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n", 400},
		{"space before colon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400},
		{"no host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"bad host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
		{"userinfo in the target", "GET http://u@h/ HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"odd scheme", "GET ftp://h/ HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"asterisk with GET", "GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"method not a token", "G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"two spaces", "GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"no version", "GET /\r\nHost: x\r\n\r\n", 400},
		{"HTTP/2.0", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505},
		{"lower-case version", "GET / http/1.1\r\nHost: x\r\n\r\n", 400},
		{"tab in the target", "GET /a\tb HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"too large", "GET /" + strings.Repeat("a", 200) + " HTTP/1.1\r\nHost: x\r\n\r\n", 431},
		{"cut short", "GET / HTTP/1.1\r\nHost: x\r\n", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, _, err := readReq(t, tc.raw, 128)
			if err == nil {
				t.Fatal("accepted")
			}
			if got := Status(err); got != tc.status {
				t.Fatalf("status %d (%v), want %d", got, err, tc.status)
			}
		})
	}
	if _, _, _, err := readReq(t, "", 128); !errors.Is(err, io.EOF) {
		t.Errorf("nothing: %v", err)
	}
	if _, _, _, err := readReq(t, "GET / HTTP/1.1\r\nHost: x\r\n", 128); !errors.Is(err, io.EOF) {
		t.Errorf("cut short: %v, want it to wrap io.EOF", err)
	}
}

// FuzzReadRequest checks the parser against net/http's: whatever it
// accepts (with the target parsed as the server does), http.ReadRequest
// accepts too, with the same method, target, host, fields and body.
func FuzzReadRequest(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
		"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nT: 1\r\n\r\n",
		"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGPOST / HTTP/1.1\r\n\r\n",
		"GET http://h.example/p?q HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
		"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET / HTTP/1.1\nHost: x\nX: a\n\n",
		"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
		"GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n",
		"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		rq, h, br, err := readReq(t, raw, 1<<16)
		if err != nil {
			return
		}
		u, err := RequestURL(rq.Method, rq.Target)
		if err != nil {
			return // the server refuses it too
		}
		// Empty lines before a request are skipped (RFC 9112 2.2), which
		// http.ReadRequest leaves to its caller.
		trimmed := raw
		for {
			if t, ok := strings.CutPrefix(trimmed, "\r\n"); ok {
				trimmed = t
			} else if t, ok := strings.CutPrefix(trimmed, "\n"); ok {
				trimmed = t
			} else {
				break
			}
		}
		req, rerr := http.ReadRequest(bufio.NewReader(strings.NewReader(trimmed)))
		if rerr != nil {
			t.Fatalf("accepted what net/http refuses (%v): %+v", rerr, rq)
		}
		if req.Method != rq.Method || req.RequestURI != rq.Target || req.ProtoMinor != rq.Minor || req.ProtoMajor != 1 {
			t.Fatalf("%s %s HTTP/1.%d, net/http %s %s %s", rq.Method, rq.Target, rq.Minor, req.Method, req.RequestURI, req.Proto)
		}
		if req.Host != rq.Host {
			t.Fatalf("host %q, net/http %q", rq.Host, req.Host)
		}
		if req.URL.String() != u.String() {
			t.Fatalf("URL %q, net/http %q", u, req.URL)
		}
		for k, vv := range h {
			if !reflect.DeepEqual(req.Header[k], vv) {
				t.Fatalf("field %s: %q, net/http %q", k, vv, req.Header[k])
			}
		}
		switch rq.Framing {
		case NoBody:
			if req.ContentLength > 0 || len(req.TransferEncoding) > 0 {
				t.Fatalf("no body, net/http: length %d, %q", req.ContentLength, req.TransferEncoding)
			}
		case Length:
			if req.ContentLength != rq.Length {
				t.Fatalf("length %d, net/http %d", rq.Length, req.ContentLength)
			}
		case Chunked:
			if len(req.TransferEncoding) != 1 {
				t.Fatalf("chunked, net/http %q", req.TransferEncoding)
			}
		}
		mine, myErr := readBody(br, rq.Framing, rq.Length)
		theirs, theirErr := io.ReadAll(req.Body)
		if myErr == nil && theirErr != nil {
			t.Fatalf("body read: mine fine, net/http %v", theirErr)
		}
		if myErr == nil && string(mine) != string(theirs) {
			t.Fatalf("body %q, net/http %q", mine, theirs)
		}
	})
}

func BenchmarkReadRequest(b *testing.B) {
	raw := "GET /index.html?x=1 HTTP/1.1\r\nHost: 127.0.0.1:18080\r\nCookie: FMJNQHUH=ARlsDfT8bmBwopFlifGM22-KCPT9DgV5aSjNkU7mwAyeGG7nHDob0PiYE1-GElAz\r\n\r\n"
	benchmarkRead(b, raw, func(br *bufio.Reader, buf *[]byte, h http.Header) error {
		_, err := ReadRequest(br, buf, 1<<16, h)
		return err
	})
}
