package h1

import (
	"bufio"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
)

// Request heads from clients, read as strictly as response heads, into
// what the proxy needs to forward them one way only. Refused (the caller
// answers with the status of the error, see Status):
//
//   - a request line that is not METHOD SP target SP HTTP/1.x (505 for
//     another version), a method that is not a token, a target with a
//     control character or white space;
//   - a field as ReadHead refuses it, an obs-fold included (RFC 9112 5.2
//     lets a server refuse it rather than unfold it);
//   - two different Content-Lengths, a Content-Length that is not a
//     decimal number, a Transfer-Encoding other than a single "chunked"
//     (501), any Transfer-Encoding in an HTTP/1.0 request;
//   - no Host in HTTP/1.1 (but for CONNECT), more than one, or one with
//     characters no host has;
//   - a head of more than the limit given (431).
//
// A request with both Transfer-Encoding: chunked and Content-Length is
// read as chunked, and the connection must be closed after the response
// (CloseAfter), as RFC 9112 6.3 asks. Lines may end with LF alone.

// ReqHead is what the proxy needs of a request besides its fields.
type ReqHead struct {
	Method string
	Target string // as it came: origin, absolute, authority (CONNECT) or asterisk form
	Minor  int    // HTTP/1.Minor
	Host   string // the Host field, or the authority of an absolute-form target
	Framing
	Length int64
	// Close: the client asked for the connection to close after the
	// response (Connection: close, or HTTP/1.0 without keep-alive).
	Close bool
	// CloseAfter: the framing was suspect (chunked and a Content-Length);
	// close after the response whatever the client asked.
	CloseAfter bool
	// ExpectContinue: the client waits for 100 Continue before the body.
	ExpectContinue bool
}

// Errors of ReadRequest besides those of ReadHead; Status maps each to
// the answer.
var (
	ErrVersion = errors.New("unsupported HTTP version")
	ErrNoHost  = errors.New("missing or malformed Host")
)

// Status is the status a refused request is answered with.
func Status(err error) int {
	switch {
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestHeaderFieldsTooLarge
	case errors.Is(err, ErrUnsupported):
		return http.StatusNotImplemented
	case errors.Is(err, ErrVersion):
		return http.StatusHTTPVersionNotSupported
	}
	return http.StatusBadRequest
}

// ReadRequest reads a request head of at most max bytes from br. The fields
// but Host go into h (canonical keys; hop-by-hop ones too: the proxy
// decides what to forward); buf is the caller's scratch space. It returns
// io.EOF, untouched, when the connection ends before a request starts.
func ReadRequest(br *bufio.Reader, buf *[]byte, max int, h http.Header) (ReqHead, error) {
	var rq ReqHead
	lines, err := readHead(br, buf, max)
	if err != nil {
		return rq, err
	}
	s := string(*buf)
	line, s := nextLine(s)
	if rq.Method, rq.Target, rq.Minor, err = requestLine(line); err != nil {
		return rq, err
	}
	vals := make([]string, 0, lines)
	var (
		te, cl, host        string
		teSeen, clSeen      bool
		hosts               int
		keepAlive, closeTok bool
	)
	for s != "" {
		line, s = nextLine(s)
		if line == "" {
			break
		}
		name, value, err := field(line)
		if err != nil {
			return rq, err
		}
		key := textproto.CanonicalMIMEHeaderKey(name)
		switch key {
		case "Host":
			hosts++
			host = value
			continue
		case "Content-Length":
			if clSeen && value != cl {
				return rq, malformed("Content-Length %q and %q", cl, value)
			}
			cl, clSeen = value, true
			continue
		case "Transfer-Encoding":
			if teSeen {
				te += ", " + value
			} else {
				te = value
			}
			teSeen = true
			continue
		case "Connection":
			for tok := range strings.SplitSeq(value, ",") {
				tok = strings.TrimSpace(tok)
				if strings.EqualFold(tok, "close") {
					closeTok = true
				} else if strings.EqualFold(tok, "keep-alive") {
					keepAlive = true
				}
			}
		case "Expect":
			if strings.EqualFold(value, "100-continue") {
				rq.ExpectContinue = true
			}
		}
		vv := h[key]
		if vv == nil && len(vals) < cap(vals) {
			vals = append(vals, value)
			h[key] = vals[len(vals)-1 : len(vals) : len(vals)]
		} else {
			h[key] = append(vv, value)
		}
	}
	rq.Close = closeTok || (rq.Minor == 0 && !keepAlive)

	// The target, and the host it names.
	authority := ""
	switch {
	case rq.Method == http.MethodConnect && rq.Target[0] != '/':
		if !validHost(rq.Target) {
			return rq, malformed("CONNECT target %q", trim(rq.Target))
		}
		authority = rq.Target
	case rq.Target == "*":
		if rq.Method != http.MethodOptions {
			return rq, malformed("target * with %s", rq.Method)
		}
	case rq.Target[0] == '/':
	default:
		// Absolute form: its authority is the host (RFC 9112 3.2.2).
		rest, ok := cutScheme(rq.Target)
		if !ok {
			return rq, malformed("request target %q", trim(rq.Target))
		}
		auth, _, _ := strings.Cut(rest, "/")
		auth, _, _ = strings.Cut(auth, "?")
		if strings.IndexByte(auth, '@') >= 0 || auth == "" || !validHost(auth) {
			return rq, malformed("request target %q", trim(rq.Target))
		}
		authority = auth
	}
	if hosts > 1 {
		return rq, fmt.Errorf("%w: %d Host fields", ErrNoHost, hosts)
	}
	if hosts == 0 && authority == "" && rq.Minor == 1 {
		return rq, fmt.Errorf("%w: no Host field", ErrNoHost)
	}
	if !validHost(host) {
		return rq, fmt.Errorf("%w: %q", ErrNoHost, trim(host))
	}
	// An authority in the target wins over the Host field (RFC 9112 3.2.2).
	rq.Host = host
	if authority != "" {
		rq.Host = authority
	}

	// Framing (RFC 9112 6.3).
	if clSeen {
		n, ok := parseLength(cl)
		if !ok {
			return rq, malformed("Content-Length %q", cl)
		}
		rq.Framing, rq.Length = Length, n
		if n == 0 {
			rq.Framing = NoBody
		}
	}
	if teSeen {
		if rq.Minor == 0 {
			return rq, malformed("Transfer-Encoding in an HTTP/1.0 request")
		}
		if !strings.EqualFold(strings.TrimSpace(te), "chunked") {
			return rq, fmt.Errorf("%w: %q", ErrUnsupported, te)
		}
		rq.CloseAfter = clSeen
		rq.Framing, rq.Length = Chunked, -1
	}
	return rq, nil
}

// readHead is readLines with the caller's limit and the leading empty
// lines a client may send between requests (RFC 9112 2.2) skipped.
func readHead(br *bufio.Reader, buf *[]byte, max int) (int, error) {
	for {
		b, err := br.Peek(1)
		if err != nil {
			return 0, err
		}
		if b[0] != '\r' && b[0] != '\n' {
			break
		}
		if b[0] == '\r' {
			if b, err := br.Peek(2); err != nil || b[1] != '\n' {
				break // a lone CR: readLines refuses it
			}
			br.Discard(2)
			continue
		}
		br.Discard(1)
	}
	return readLinesMax(br, buf, max)
}

// requestLine parses "METHOD SP target SP HTTP/1.x".
func requestLine(line string) (method, target string, minor int, err error) {
	method, rest, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || method == "" || target == "" {
		return "", "", 0, malformed("request line %q", trim(line))
	}
	for i := 0; i < len(method); i++ {
		if !isTchar(method[i]) {
			return "", "", 0, malformed("method %q", trim(method))
		}
	}
	for i := 0; i < len(target); i++ {
		if c := target[i]; c <= ' ' || c == 0x7f {
			return "", "", 0, malformed("request target with a control character or white space")
		}
	}
	switch proto {
	case "HTTP/1.1":
		minor = 1
	case "HTTP/1.0":
	default:
		if strings.HasPrefix(proto, "HTTP/") && len(proto) == 8 && proto[6] == '.' {
			return "", "", 0, fmt.Errorf("%w: %q", ErrVersion, proto)
		}
		return "", "", 0, malformed("request line %q", trim(line))
	}
	return method, target, minor, nil
}

// RequestURL parses a request target as net/http's server does: an
// authority for CONNECT, "*", or a URL.
func RequestURL(method, target string) (*url.URL, error) {
	switch {
	case method == http.MethodConnect && !strings.HasPrefix(target, "/"):
		// An authority: parsed as a URL's, as net/http does.
		u, err := url.ParseRequestURI("http://" + target)
		if err != nil {
			return nil, err
		}
		u.Scheme = ""
		return u, nil
	case target == "*":
		return &url.URL{Path: "*"}, nil
	}
	return url.ParseRequestURI(target)
}

// cutScheme removes "http://" or "https://" (any case) from an absolute
// target.
func cutScheme(t string) (string, bool) {
	for _, p := range []string{"http://", "https://"} {
		if len(t) > len(p) && strings.EqualFold(t[:len(p)], p) {
			return t[len(p):], true
		}
	}
	return "", false
}

// validHost accepts what a Host field may hold: a reg-name, an IPv4 or a
// bracketed IPv6 address, and a port; nothing else (no white space, no
// '/', '@' or control character, and no percent-encoding, which two
// parsers could decode differently).
func validHost(h string) bool {
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("-._~!$&'()*+,;=:[]", c) >= 0:
		default:
			return false
		}
	}
	return true
}
