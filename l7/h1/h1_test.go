package h1

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"reflect"
	"strings"
	"testing"
)

// readWith parses raw through a 16-byte buffer, so that fields cross
// buffer fills, and returns what parse read, the fields and the reader.
func readWith[H any](raw string, parse func(*bufio.Reader, *[]byte, http.Header) (H, error)) (H, http.Header, *bufio.Reader, error) {
	br := bufio.NewReaderSize(strings.NewReader(raw), 16)
	h := http.Header{}
	var buf []byte
	hd, err := parse(br, &buf, h)
	return hd, h, br, err
}

func read(t testing.TB, raw, method string) (Head, http.Header, *bufio.Reader, error) {
	t.Helper()
	return readWith(raw, func(br *bufio.Reader, buf *[]byte, h http.Header) (Head, error) { return ReadHead(br, buf, method, h) })
}

// checkRead holds what a read returned to what a case wants: the head, the
// fields, and the bytes it left unread for the body.
func checkRead[H comparable](t *testing.T, got H, fields http.Header, br *bufio.Reader, err error, want H, wantFields http.Header, wantRest string) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("head %+v, want %+v", got, want)
	}
	if !reflect.DeepEqual(fields, wantFields) {
		t.Errorf("fields %v, want %v", fields, wantFields)
	}
	rest, _ := io.ReadAll(br)
	if string(rest) != wantRest {
		t.Errorf("left %q, want %q", rest, wantRest)
	}
}

func TestReadHeadFramings(t *testing.T) {
	for _, tc := range []struct {
		name, raw, method string
		want              Head
		fields            http.Header
		rest              string
	}{
		{"length", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello", "GET",
			Head{Status: 200, Minor: 1, Framing: Length, Length: 5},
			http.Header{"Content-Type": {"text/plain"}, "Content-Length": {"5"}}, "hello"},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "GET",
			Head{Status: 200, Minor: 1, Framing: Chunked}, http.Header{}, "5\r\nhello\r\n0\r\n\r\n"},
		{"chunked wins over length and closes", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: CHUNKED\r\n\r\n", "GET",
			Head{Status: 200, Minor: 1, Framing: Chunked, Close: true}, http.Header{}, ""},
		{"until close", "HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\nall of it", "GET",
			Head{Status: 200, Minor: 1, Framing: UntilClose, Close: true}, http.Header{"X-A": {"1"}}, "all of it"},
		{"head keeps its length", "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", "HEAD",
			Head{Status: 200, Minor: 1, Framing: NoBody}, http.Header{"Content-Length": {"99"}}, ""},
		{"204", "HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n", "GET",
			Head{Status: 204, Minor: 1, Framing: NoBody}, http.Header{}, ""},
		{"304 keeps its length", "HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\nETag: \"x\"\r\n\r\n", "GET",
			Head{Status: 304, Minor: 1, Framing: NoBody}, http.Header{"Content-Length": {"7"}, "Etag": {`"x"`}}, ""},
		{"103", "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n", "GET",
			Head{Status: 103, Minor: 1, Framing: NoBody}, http.Header{"Link": {"</a.css>; rel=preload"}}, ""},
		{"101 keeps its hop fields", "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nframes", "GET",
			Head{Status: 101, Minor: 1, Framing: NoBody, Upgrade: "websocket"},
			http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}}, "frames"},
		{"1.0 closes", "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", "GET",
			Head{Status: 200, Minor: 0, Framing: Length, Close: true}, http.Header{"Content-Length": {"0"}}, ""},
		{"1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", "GET",
			Head{Status: 200, Minor: 0, Framing: Length}, http.Header{"Content-Length": {"0"}}, ""},
		{"connection close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx", "GET",
			Head{Status: 200, Minor: 1, Framing: Length, Length: 1, Close: true}, http.Header{"Content-Length": {"1"}}, "x"},
		{"hop fields and those Connection names are dropped",
			"HTTP/1.1 200 OK\r\nConnection: X-Secret, keep-alive\r\nKeep-Alive: timeout=5\r\nX-Secret: s\r\nProxy-Connection: x\r\nUpgrade: h2c\r\nX-Kept: k\r\nContent-Length: 0\r\n\r\n", "GET",
			Head{Status: 200, Minor: 1, Framing: Length}, http.Header{"X-Kept": {"k"}, "Content-Length": {"0"}}, ""},
		{"repeated fields keep their order", "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nContent-Length: 0\r\n\r\n", "GET",
			Head{Status: 200, Minor: 1, Framing: Length}, http.Header{"Set-Cookie": {"a=1", "b=2"}, "Content-Length": {"0"}}, ""},
		{"same length twice", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", "GET",
			Head{Status: 200, Minor: 1, Framing: Length, Length: 2}, http.Header{"Content-Length": {"2"}}, "ok"},
		{"bare LF line ends", "HTTP/1.1 200 OK\nX-A:  spaced \t\nContent-Length: 1\n\nz", "GET",
			Head{Status: 200, Minor: 1, Framing: Length, Length: 1}, http.Header{"X-A": {"spaced"}, "Content-Length": {"1"}}, "z"},
		{"no reason phrase", "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", "GET",
			Head{Status: 200, Minor: 1, Framing: Length}, http.Header{"Content-Length": {"0"}}, ""},
		{"event stream", "HTTP/1.1 200 OK\r\nContent-Type: Text/Event-Stream; charset=utf-8\r\n\r\n", "GET",
			Head{Status: 200, Minor: 1, Framing: UntilClose, Close: true, EventStream: true},
			http.Header{"Content-Type": {"Text/Event-Stream; charset=utf-8"}}, ""},
		{"long field across buffer fills", "HTTP/1.1 200 OK\r\nX-Long: " + strings.Repeat("v", 100) + "\r\nContent-Length: 0\r\n\r\n", "GET",
			Head{Status: 200, Minor: 1, Framing: Length}, http.Header{"X-Long": {strings.Repeat("v", 100)}, "Content-Length": {"0"}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hd, h, br, err := read(t, tc.raw, tc.method)
			checkRead(t, hd, h, br, err, tc.want, tc.fields, tc.rest)
		})
	}
}

func TestReadHeadRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, raw string
		want      error
	}{
		{"HTTP/2 status line", "HTTP/2 200 OK\r\n\r\n", ErrMalformed},
		{"HTTP/1.2", "HTTP/1.2 200 OK\r\n\r\n", ErrMalformed},
		{"lower-case version", "http/1.1 200 OK\r\n\r\n", ErrMalformed},
		{"two-digit status", "HTTP/1.1 20 OK\r\n\r\n", ErrMalformed},
		{"status 600", "HTTP/1.1 600 Odd\r\n\r\n", ErrMalformed},
		{"status 099", "HTTP/1.1 099 Odd\r\n\r\n", ErrMalformed},
		{"no space after status", "HTTP/1.1 200OK\r\n\r\n", ErrMalformed},
		{"NUL in reason", "HTTP/1.1 200 O\x00K\r\n\r\n", ErrMalformed},
		{"obs-fold", "HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\nContent-Length: 0\r\n\r\n", ErrMalformed},
		{"space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello", ErrMalformed},
		{"no colon", "HTTP/1.1 200 OK\r\nNoColon\r\n\r\n", ErrMalformed},
		{"empty name", "HTTP/1.1 200 OK\r\n: v\r\n\r\n", ErrMalformed},
		{"NUL in value", "HTTP/1.1 200 OK\r\nX-A: a\x00b\r\n\r\n", ErrMalformed},
		{"bare CR in value", "HTTP/1.1 200 OK\r\nX-A: a\rTransfer-Encoding: chunked\r\n\r\n", ErrMalformed},
		{"DEL in value", "HTTP/1.1 200 OK\r\nX-A: a\x7fb\r\n\r\n", ErrMalformed},
		{"control in name", "HTTP/1.1 200 OK\r\nX\x01A: v\r\n\r\n", ErrMalformed},
		{"two lengths", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", ErrMalformed},
		{"length list", "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello", ErrMalformed},
		{"signed length", "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello", ErrMalformed},
		{"hex length", "HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\nhello", ErrMalformed},
		{"huge length", "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n", ErrMalformed},
		{"chunked, identity", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, identity\r\n\r\n", ErrUnsupported},
		{"identity", "HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n", ErrUnsupported},
		{"gzip, chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", ErrUnsupported},
		{"chunked twice", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", ErrUnsupported},
		{"chunked in HTTP/1.0", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", ErrMalformed},
		{"cut short", "HTTP/1.1 200 OK\r\nX-A: 1\r\n", ErrMalformed},
		{"too large", "HTTP/1.1 200 OK\r\n" + strings.Repeat("X-A: "+strings.Repeat("a", 1000)+"\r\n", 1100) + "\r\n", ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, _, err := read(t, tc.raw, "GET"); !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
		})
	}
	if _, _, _, err := read(t, "", "GET"); err != io.EOF {
		t.Errorf("nothing at all: %v, want io.EOF", err)
	}
}

func TestReadTrailer(t *testing.T) {
	br := bufio.NewReader(strings.NewReader("Expires: never\r\nContent-Length: 9\r\nX-Sum: abc\r\n\r\nnext"))
	var buf []byte
	tr, err := ReadTrailer(br, &buf)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(tr, http.Header{"Expires": {"never"}, "X-Sum": {"abc"}}) {
		t.Errorf("trailer %v", tr)
	}
	if rest, _ := io.ReadAll(br); string(rest) != "next" {
		t.Errorf("left %q", rest)
	}
	if tr, err := ReadTrailer(bufio.NewReader(strings.NewReader("\r\n")), &buf); err != nil || tr != nil {
		t.Errorf("empty trailer: %v %v", tr, err)
	}
	if _, err := ReadTrailer(bufio.NewReader(strings.NewReader("X: a\x00\r\n\r\n")), &buf); !errors.Is(err, ErrMalformed) {
		t.Errorf("NUL in a trailer: %v", err)
	}
	if _, err := ReadTrailer(bufio.NewReader(strings.NewReader("X: a\r\n")), &buf); !errors.Is(err, ErrMalformed) {
		t.Errorf("trailer cut short: %v", err)
	}
}

// FuzzReadHead checks the parser against net/http's on arbitrary input:
// whatever it accepts, http.ReadResponse accepts too and reads the same
// status, fields and body; and it never accepts what net/http refuses
// (it refuses more: obs-fold, bare CR, odd Transfer-Encodings...).
func FuzzReadHead(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
		"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
		"HTTP/1.1 200 OK\r\nConnection: X-A\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\nX: y\n\nbody",
		"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, raw string, head bool) {
		method := http.MethodGet
		if head {
			method = http.MethodHead
		}
		hd, h, br, err := read(t, raw, method)
		if err != nil {
			return
		}
		req := &http.Request{Method: method}
		resp, rerr := http.ReadResponse(bufio.NewReader(strings.NewReader(raw)), req)
		if rerr != nil {
			t.Fatalf("accepted what net/http refuses (%v): %+v %v", rerr, hd, h)
		}
		if resp.StatusCode != hd.Status || resp.ProtoMinor != hd.Minor {
			t.Fatalf("status %d HTTP/1.%d, net/http %d HTTP/1.%d", hd.Status, hd.Minor, resp.StatusCode, resp.ProtoMinor)
		}
		// Every end-to-end field is net/http's too, with the same values.
		for k, vv := range h {
			if k == "Content-Length" {
				continue
			}
			if !reflect.DeepEqual(resp.Header[k], vv) {
				t.Fatalf("field %s: %q, net/http %q", k, vv, resp.Header[k])
			}
		}
		// The same body, read the same way.
		switch hd.Framing {
		case Length:
			if resp.ContentLength != hd.Length {
				t.Fatalf("length %d, net/http %d", hd.Length, resp.ContentLength)
			}
		case Chunked:
			if resp.ContentLength != -1 || len(resp.TransferEncoding) != 1 {
				t.Fatalf("chunked, net/http: length %d, encodings %q", resp.ContentLength, resp.TransferEncoding)
			}
		}
		if hd.Status == http.StatusSwitchingProtocols || hd.Status < 200 && hd.Status != 101 {
			return // net/http gives 1xx no body either
		}
		mine, myErr := readBody(br, hd.Framing, hd.Length)
		theirs, theirErr := io.ReadAll(resp.Body)
		if (myErr == nil) != (theirErr == nil) && !(myErr != nil && theirErr == nil) {
			t.Fatalf("body errors differ: %v, net/http %v", myErr, theirErr)
		}
		if myErr == nil && theirErr == nil && string(mine) != string(theirs) {
			t.Fatalf("body %q, net/http %q", mine, theirs)
		}
		if !hd.Close && resp.Close {
			t.Fatalf("keeps a connection net/http would close")
		}
	})
}

// readBody reads from br a body of framing f (length bytes for Length) as
// the proxy does, and the trailer after a chunked one.
func readBody(br *bufio.Reader, f Framing, length int64) ([]byte, error) {
	var body io.Reader
	switch f {
	case NoBody:
		body = strings.NewReader("")
	case Length:
		b, err := io.ReadAll(io.LimitReader(br, length))
		if err == nil && int64(len(b)) < length {
			err = io.ErrUnexpectedEOF // the body ends before its length
		}
		return b, err
	case Chunked:
		body = httputil.NewChunkedReader(br)
	case UntilClose:
		body = br
	}
	b, err := io.ReadAll(body)
	if err == nil && f == Chunked {
		var buf []byte
		_, err = ReadTrailer(br, &buf)
	}
	return b, err
}

// benchmarkRead parses raw again and again, as the proxy does: with one
// reader, one scratch buffer and one header map for every head.
func benchmarkRead(b *testing.B, raw string, parse func(*bufio.Reader, *[]byte, http.Header) error) {
	sr := strings.NewReader(raw)
	br := bufio.NewReader(sr)
	var buf []byte
	h := http.Header{}
	b.ReportAllocs()
	for b.Loop() {
		sr.Reset(raw)
		br.Reset(sr)
		clear(h)
		if err := parse(br, &buf, h); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadHead(b *testing.B) {
	raw := "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nContent-Type: text/plain\r\nDate: Tue, 01 Dec 2026 22:49:09 GMT\r\nX-Member: m1\r\n\r\n"
	benchmarkRead(b, raw, func(br *bufio.Reader, buf *[]byte, h http.Header) error {
		_, err := ReadHead(br, buf, "GET", h)
		return err
	})
}
