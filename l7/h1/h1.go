// Package h1 reads the heads of HTTP/1.x responses that members send to the
// proxy, strictly (RFC 9112), into the header map the proxy answers with.
//
// http.ReadResponse parses as leniently as a client may and allocates a
// Response, a header map and a string per field; the proxy, which
// re-frames every response it relays, needs neither the leniency nor the
// copies. Here a head costs one string (the fields are slices of it) and
// one slice of values, and anything a member and the proxy could read two
// ways is refused (the proxy answers 502):
//
//   - a status line other than HTTP/1.0 or HTTP/1.1, a status outside
//     100-599;
//   - a CR that does not end a line, a NUL or another control character
//     in a field, a field name that is not a token or is followed by white
//     space, an obs-fold (a line that starts with white space);
//   - a Transfer-Encoding other than a single "chunked", a
//     Transfer-Encoding in an HTTP/1.0 response, a Content-Length that is
//     not a decimal number, several Content-Lengths that differ;
//   - a head of more than MaxHead bytes.
//
// A response with both Transfer-Encoding: chunked and Content-Length is
// read as chunked, as RFC 9112 6.3 says, and its connection is not reused.
// Lines may end with LF alone, as most HTTP implementations accept (the
// head is never forwarded as it came). Chunked bodies are read by
// net/http's own chunked reader (httputil.NewChunkedReader); this package
// reads the trailer section that follows them.
package h1

import (
	"bufio"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"strings"
)

// MaxHead is the most a response head (or a trailer section) may take.
const MaxHead = 1 << 20

// Framing is how a response's body is delimited.
type Framing int

// Framings (RFC 9112 6.3).
const (
	// NoBody: a response to HEAD, 1xx, 204 or 304.
	NoBody Framing = iota
	// Length: Content-Length bytes.
	Length
	// Chunked: Transfer-Encoding: chunked.
	Chunked
	// UntilClose: neither; the body ends when the member closes.
	UntilClose
)

// Head is what the proxy needs of a response besides its fields.
type Head struct {
	Status int
	Minor  int // HTTP/1.Minor
	Framing
	Length int64 // for Length
	// Close: the connection cannot carry another request (the member
	// said so, HTTP/1.0 without keep-alive, a body until close, or a
	// framing that asked for it).
	Close bool
	// Upgrade is the protocol a 101 switches to ("" if none), when the
	// Connection field lists "upgrade".
	Upgrade string
	// EventStream: Content-Type is text/event-stream (flush as it comes).
	EventStream bool
}

// Errors, wrapped with detail.
var (
	ErrMalformed   = errors.New("malformed response head")
	ErrTooLarge    = errors.New("head too large")
	ErrUnsupported = errors.New("unsupported transfer encoding")
)

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// readLines reads a head up to and including its empty line into *buf,
// checking line endings and the size, and returns the number of lines
// before the empty one. crlf refuses lines that end with LF alone.
func readLines(br *bufio.Reader, buf *[]byte, crlf bool) (int, error) {
	return readLinesLimit(br, buf, MaxHead, crlf)
}

func readLinesMax(br *bufio.Reader, buf *[]byte, max int) (int, error) {
	return readLinesLimit(br, buf, max, false)
}

func readLinesLimit(br *bufio.Reader, buf *[]byte, max int, crlf bool) (int, error) {
	b := (*buf)[:0]
	n := 0
	lineStart := 0
	for {
		frag, err := br.ReadSlice('\n')
		if len(b)+len(frag) > max {
			*buf = b
			return 0, ErrTooLarge
		}
		b = append(b, frag...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			*buf = b
			if len(b) == 0 {
				return 0, err
			}
			return 0, fmt.Errorf("%w: head cut short: %w", ErrMalformed, err)
		}
		line := b[lineStart:]
		if crlf && (len(line) < 2 || line[len(line)-2] != '\r') {
			*buf = b
			return 0, malformed("a line of the trailer ends with LF alone")
		}
		if len(line) == 1 || (len(line) == 2 && line[0] == '\r') {
			*buf = b
			return n, nil
		}
		n++
		lineStart = len(b)
	}
}

// ReadHead reads a response head from br. The end-to-end fields go into h
// (canonical keys) and, for a 101, the hop-by-hop ones too; buf is scratch
// space kept by the caller. method is the request's (HEAD has no body).
func ReadHead(br *bufio.Reader, buf *[]byte, method string, h http.Header) (Head, error) {
	var hd Head
	lines, err := readLines(br, buf, false)
	if err != nil {
		return hd, err
	}
	s := string(*buf) // the fields are slices of this one string
	line, s := nextLine(s)
	if hd.Status, hd.Minor, err = statusLine(line); err != nil {
		return hd, err
	}
	vals := make([]string, 0, lines)
	var (
		te, cl     string
		teSeen     bool
		clSeen     bool
		conn       []string // Connection tokens other than close, keep-alive, upgrade
		keepAlive  bool
		connUpg    bool
		upgrade    string
		switching  = hd.Status == http.StatusSwitchingProtocols
		eventCheck bool
	)
	for s != "" {
		line, s = nextLine(s)
		if line == "" {
			break
		}
		name, value, err := field(line)
		if err != nil {
			return hd, err
		}
		key := textproto.CanonicalMIMEHeaderKey(name)
		hop := false
		switch key {
		case "Content-Length":
			if clSeen && value != cl {
				return hd, malformed("Content-Length %q and %q", cl, value)
			}
			cl, clSeen = value, true
			continue // set by the proxy from the framing
		case "Transfer-Encoding":
			if teSeen {
				te += ", " + value
			} else {
				te = value
			}
			teSeen = true
			hop = true
		case "Connection":
			for tok := range strings.SplitSeq(value, ",") {
				tok = strings.TrimSpace(tok)
				switch {
				case tok == "":
				case strings.EqualFold(tok, "close"):
					hd.Close = true
				case strings.EqualFold(tok, "keep-alive"):
					keepAlive = true
				case strings.EqualFold(tok, "upgrade"):
					connUpg = true
				default:
					conn = append(conn, tok)
				}
			}
			hop = true
		case "Upgrade":
			if upgrade == "" {
				upgrade = value
			}
			hop = true
		case "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization", "Te":
			hop = true
		case "Content-Type":
			if !eventCheck {
				eventCheck = true
				base, _, _ := strings.Cut(value, ";")
				hd.EventStream = strings.EqualFold(strings.TrimSpace(base), "text/event-stream")
			}
		}
		if hop && !switching {
			continue
		}
		vv := h[key]
		if vv == nil && len(vals) < cap(vals) {
			vals = append(vals, value)
			h[key] = vals[len(vals)-1 : len(vals) : len(vals)]
		} else {
			h[key] = append(vv, value)
		}
	}
	// Fields the Connection field names are this hop's (RFC 9110 7.6.1).
	if !switching {
		for _, tok := range conn {
			delete(h, textproto.CanonicalMIMEHeaderKey(tok))
		}
	}
	if connUpg {
		hd.Upgrade = upgrade
	}
	if hd.Minor == 0 && !keepAlive {
		hd.Close = true
	}

	// A Content-Length and a Transfer-Encoding must make sense even where
	// no body follows, as net/http's client requires.
	var length int64
	if clSeen {
		n, ok := parseLength(cl)
		if !ok {
			return hd, malformed("Content-Length %q", cl)
		}
		length = n
	}
	if teSeen {
		if hd.Minor == 0 {
			return hd, malformed("Transfer-Encoding in an HTTP/1.0 response")
		}
		if !strings.EqualFold(strings.TrimSpace(te), "chunked") {
			return hd, fmt.Errorf("%w: %q", ErrUnsupported, te)
		}
	}
	// Framing (RFC 9112 6.3).
	switch {
	case method == http.MethodHead || hd.Status < 200 || hd.Status == http.StatusNoContent || hd.Status == http.StatusNotModified:
		hd.Framing = NoBody
		if clSeen && (method == http.MethodHead || hd.Status == http.StatusNotModified) {
			// The length of what a GET would have had: informative.
			h["Content-Length"] = []string{cl}
		}
		if teSeen {
			hd.Close = true // framing the member got wrong: do not trust the connection
		}
	case teSeen:
		hd.Framing = Chunked
		if clSeen {
			hd.Close = true // both: chunked wins, and the connection is not reused
		}
	case clSeen:
		hd.Framing, hd.Length = Length, length
		vals = append(vals, cl) // room was left: its line was not kept
		h["Content-Length"] = vals[len(vals)-1 : len(vals) : len(vals)]
	default:
		hd.Framing = UntilClose
		hd.Close = true
	}
	return hd, nil
}

// ReadTrailer reads the trailer section after a chunked body's last
// chunk: fields up to an empty line, every line ended by CRLF (as
// net/http's client insists). It returns nil when there are none.
func ReadTrailer(br *bufio.Reader, buf *[]byte) (http.Header, error) {
	if _, err := readLines(br, buf, true); err != nil {
		if errors.Is(err, ErrMalformed) || errors.Is(err, ErrTooLarge) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: trailer cut short: %w", ErrMalformed, err)
	}
	s := string(*buf)
	var t http.Header
	for s != "" {
		var line string
		line, s = nextLine(s)
		if line == "" {
			break
		}
		name, value, err := field(line)
		if err != nil {
			return nil, err
		}
		key := textproto.CanonicalMIMEHeaderKey(name)
		switch key {
		case "Content-Length", "Transfer-Encoding", "Trailer", "Host", "Connection":
			continue // framing and routing have no place in a trailer (RFC 9110 6.5.1)
		}
		if t == nil {
			t = http.Header{}
		}
		t[key] = append(t[key], value)
	}
	return t, nil
}

// nextLine splits off the first line (without its CRLF or LF); readLines
// has checked the endings.
func nextLine(s string) (line, rest string) {
	i := strings.IndexByte(s, '\n')
	if i < 0 {
		return s, ""
	}
	line, rest = s[:i], s[i+1:]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, rest
}

// statusLine parses "HTTP/1.x NNN[ reason]".
func statusLine(line string) (status, minor int, err error) {
	if len(line) < 12 || line[:7] != "HTTP/1." || (line[7] != '0' && line[7] != '1') || line[8] != ' ' {
		return 0, 0, malformed("status line %q", trim(line))
	}
	minor = int(line[7] - '0')
	code := line[9:12]
	for i := 0; i < 3; i++ {
		if code[i] < '0' || code[i] > '9' {
			return 0, 0, malformed("status line %q", trim(line))
		}
		status = status*10 + int(code[i]-'0')
	}
	if status < 100 || status > 599 {
		return 0, 0, malformed("status %d", status)
	}
	if len(line) > 12 {
		if line[12] != ' ' {
			return 0, 0, malformed("status line %q", trim(line))
		}
		for i := 13; i < len(line); i++ {
			if c := line[i]; c < ' ' && c != '\t' || c == 0x7f {
				return 0, 0, malformed("control character in the reason phrase")
			}
		}
	}
	return status, minor, nil
}

// field splits "name: value", checking both: the name is a token right
// before the colon, the value has no control character but HTAB; white
// space around the value is not part of it.
func field(line string) (name, value string, err error) {
	if c := line[0]; c == ' ' || c == '\t' {
		return "", "", malformed("obs-fold (a line that starts with white space)")
	}
	colon := strings.IndexByte(line, ':')
	if colon <= 0 {
		return "", "", malformed("field %q has no name or no colon", trim(line))
	}
	name = line[:colon]
	for i := 0; i < len(name); i++ {
		if !isTchar(name[i]) {
			return "", "", malformed("field name %q", trim(name))
		}
	}
	v := line[colon+1:]
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return "", "", malformed("control character 0x%02x in field %s", c, name)
		}
	}
	return name, strings.Trim(v, " \t"), nil
}

// isTchar: RFC 9110 5.6.2 token characters.
func isTchar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// parseLength parses a Content-Length: decimal digits only, at most 18.
func parseLength(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

func trim(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
