package l7

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/limpet-lb/limpet/l7/balance"
	"github.com/limpet-lb/limpet/l7/h1"
	"github.com/limpet-lb/limpet/l7/spec"
)

// Forwarding a request to its member and the response back, in place of
// httputil.ReverseProxy and http.Transport, with the same rules: hop-by-hop
// fields (and those the Connection field names) are not forwarded either
// way; X-Forwarded-For, -Host and -Proto are set; Host passes through; the
// body is framed afresh (Content-Length, or chunked when the length is not
// known); informational responses pass through; a protocol upgrade becomes
// a tunnel; a response body of unknown length is flushed as it comes. The
// request head is parsed by net/http's server and the response by
// http.ReadResponse: this file parses nothing itself.

// hopHeader reports the fields that describe one connection (RFC 9110
// 7.6.1), as httputil.ReverseProxy removes them.
func hopHeader(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

// skipRequestHeader reports the request fields written by the proxy itself
// rather than copied from the client.
func skipRequestHeader(k string) bool {
	switch k {
	case "Content-Length", "Expect", "Host", "Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Cookie":
		return true
	}
	return hopHeader(k)
}

// hasToken reports whether a comma-separated field lists token
// (case-insensitive).
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for v != "" {
			var t string
			t, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// upgradeType is the protocol a message asks to switch to, or "".
func upgradeType(h http.Header) string {
	if !hasToken(h["Connection"], "upgrade") {
		return ""
	}
	if u := h["Upgrade"]; len(u) > 0 {
		return u[0]
	}
	return ""
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// appendValue appends a field value, with CR, LF and NUL (which no parser
// upstream of here lets through) turned into spaces, as http.Transport does.
func appendValue(b []byte, v string) []byte {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c == '\r' || c == '\n' || c == 0 {
			b = append(b, v[:i]...)
			for ; i < len(v); i++ {
				c := v[i]
				if c == '\r' || c == '\n' || c == 0 {
					c = ' '
				}
				b = append(b, c)
			}
			return b
		}
	}
	return append(b, v...)
}

func appendField(b []byte, k, v string) []byte {
	b = append(b, k...)
	b = append(b, ": "...)
	b = appendValue(b, v)
	return append(b, "\r\n"...)
}

// requestTarget is what the member is asked for: the client's target as
// it came (net/http has checked it), or, for an absolute-form target, its
// origin form (the authority went to Host).
func requestTarget(r *http.Request) string {
	if u := r.RequestURI; u != "" && (u[0] == '/' || u == "*") {
		return cleanQuery(u)
	}
	return cleanQuery(r.URL.RequestURI())
}

// cleanQuery re-encodes a query that a member could read differently from
// the proxy (a ';' separator, a bad escape), as httputil.ReverseProxy does
// with Rewrite; other targets pass unchanged.
func cleanQuery(target string) string {
	path, q, ok := strings.Cut(target, "?")
	if !ok {
		return target
	}
	for i := 0; i < len(q); {
		switch q[i] {
		case ';':
			return reencode(path, q)
		case '%':
			if i+2 >= len(q) || !isHex(q[i+1]) || !isHex(q[i+2]) {
				return reencode(path, q)
			}
			i += 3
		default:
			i++
		}
	}
	return target
}

func reencode(path, q string) string {
	v, _ := url.ParseQuery(q)
	return path + "?" + v.Encode()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// idempotent reports whether a request may be sent again after a
// connection failed under it (RFC 9110 9.2.2), as http.Transport decides.
func idempotent(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, k1 := r.Header["Idempotency-Key"]
	_, k2 := r.Header["X-Idempotency-Key"]
	return k1 || k2
}

// bodyless reports methods whose empty body needs no Content-Length: 0.
func bodyless(method string) bool {
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch:
		return false
	}
	return true
}

// buildHead writes the request to the member, up to the body, into
// rs.head. It depends on nothing member-specific, so that a retry sends it
// unchanged.
func (v *virtualServer) buildHead(rs *reqState, r *http.Request) error {
	up := upgradeType(r.Header)
	if up != "" && !printableASCII(up) {
		return fmt.Errorf("client asked to switch to the invalid protocol %q", up)
	}
	rs.upType = up
	b := rs.head[:0]
	b = append(b, r.Method...)
	b = append(b, ' ')
	b = append(b, requestTarget(r)...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = appendValue(b, r.Host)
	b = append(b, "\r\n"...)
	conn := r.Header["Connection"]
	for k, vv := range r.Header {
		if skipRequestHeader(k) || (len(conn) > 0 && hasToken(conn, k)) {
			continue
		}
		for _, val := range vv {
			b = appendField(b, k, val)
		}
	}
	if lines := r.Header["Cookie"]; len(lines) > 0 {
		// HTTP/2 clients send a cookie per field; an HTTP/1.1 member
		// expects one Cookie field (RFC 6265 5.4), so they are joined
		// (RFC 9113 8.2.3). The persistence may take its own cookie out.
		if v.persist != nil {
			b = v.persist.appendCookies(b, rs, lines)
		} else {
			b = appendCookieLines(b, lines)
		}
	}
	// X-Forwarded-*, as httputil.ProxyRequest.SetXForwarded sets them.
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		b = append(b, "X-Forwarded-For: "...)
		if prior := r.Header["X-Forwarded-For"]; v.xffAppend && len(prior) > 0 {
			for _, p := range prior {
				b = appendValue(b, p)
				b = append(b, ", "...)
			}
		}
		b = append(b, host...)
		b = append(b, "\r\n"...)
	}
	b = appendField(b, "X-Forwarded-Host", r.Host)
	if r.TLS != nil {
		b = append(b, "X-Forwarded-Proto: https\r\n"...)
	} else {
		b = append(b, "X-Forwarded-Proto: http\r\n"...)
	}
	if hasToken(r.Header["Te"], "trailers") {
		b = append(b, "Te: trailers\r\n"...)
	}
	if up != "" {
		b = append(b, "Connection: Upgrade\r\nUpgrade: "...)
		b = appendValue(b, up)
		b = append(b, "\r\n"...)
	}
	switch {
	case !hasBody(r):
		if !bodyless(r.Method) {
			b = append(b, "Content-Length: 0\r\n"...)
		}
	case r.ContentLength > 0:
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, r.ContentLength, 10)
		b = append(b, "\r\n"...)
	default:
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
		if len(r.Trailer) > 0 {
			b = append(b, "Trailer: "...)
			first := true
			for k := range r.Trailer {
				if !first {
					b = append(b, ", "...)
				}
				first = false
				b = append(b, k...)
			}
			b = append(b, "\r\n"...)
		}
	}
	b = append(b, "\r\n"...)
	rs.head = b
	return nil
}

// appendCookieLines writes the client's Cookie fields as one.
func appendCookieLines(b []byte, lines []string) []byte {
	b = append(b, "Cookie: "...)
	for i, l := range lines {
		if i > 0 {
			b = append(b, "; "...)
		}
		b = appendValue(b, l)
	}
	return append(b, "\r\n"...)
}

func hasBody(r *http.Request) bool {
	return r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
}

// errNoResponse wraps a failure before any byte of a response came back:
// on a reused connection, the member may have closed it while it idled.
type errNoResponse struct{ err error }

func (e *errNoResponse) Error() string { return "member sent no response: " + e.err.Error() }
func (e *errNoResponse) Unwrap() error { return e.err }

// forward sends the request to rs.member and its response to the client,
// retrying other members when a connection cannot be made, as the
// server-down policy allows.
func (v *virtualServer) forward(w *responseWriter, r *http.Request, rs *reqState) {
	if err := v.buildHead(rs, r); err != nil {
		rs.reason = "bad_request"
		rs.setErr(err.Error())
		writeStatus(w, http.StatusBadRequest, 0)
		return
	}
	var body *replayBody
	if hasBody(r) {
		body = &rs.body
		body.reset(r.Body, rs)
	}
	canRepeat := idempotent(r)
	fresh := false // a stale connection failed: dial a new one
	for {
		var uc *upstreamConn
		var err error
		if fresh {
			uc, err = v.up.dial(r.Context(), rs.member)
		} else {
			uc, err = v.up.get(r.Context(), rs.member, rs.start, body != nil || !canRepeat)
		}
		if err != nil {
			var de *dialError
			if !errors.As(err, &de) || r.Context().Err() != nil {
				v.fail(w, r, rs, err)
				return
			}
			if err := v.nextMember(rs, err); err != nil {
				v.fail(w, r, rs, err)
				return
			}
			fresh = false
			continue
		}
		hd, err := v.roundTrip(w, r, rs, uc, body)
		if err == nil {
			v.relay(w, r, rs, uc, hd)
			return
		}
		if _, werr := v.endBody(rs, uc); werr != nil {
			err = werr
		}
		uc.close()
		var nr *errNoResponse
		if uc.reused && !fresh && errors.As(err, &nr) && !uc.aborted.Load() && canRepeat && (body == nil || !body.started()) {
			// The member closed the idle connection as we used it:
			// nothing reached it, so try once on a new connection.
			fresh = true
			continue
		}
		if uc.aborted.Load() {
			err = errClientGone
		}
		v.fail(w, r, rs, err)
		return
	}
}

// errClientGone: the client closed its connection while the member worked.
var errClientGone = errors.New("client went away")

// nextMember moves the request to another member after a failed connection.
func (v *virtualServer) nextMember(rs *reqState, err error) error {
	failed := rs.member
	rs.tried = append(rs.tried, failed)
	rs.release()
	if rs.decision == decPersisted && v.serverDown == spec.ServerDownNever {
		return &serverDownError{cause: err}
	}
	if rs.retries >= v.retries {
		return err
	}
	rs.pick = balance.Pick{Client: rs.client.Addr(), Now: v.now(), Exclude: rs.tried}
	next := v.pool.Pick(&rs.pick)
	if next == nil {
		return &noMemberError{cause: err}
	}
	rs.use(next)
	rs.retries++
	rs.reason = "connect_failed"
	if rs.decision == decPersisted {
		rs.decision = decRebalanced
	}
	v.log.Debug("retrying on another member", "failed", failed.Name, "member", next.Name, "err", err)
	return nil
}

// roundTrip writes the request on uc and reads the response head into
// the client's header map, passing informational responses (but 100 and
// 101) on to the client.
func (v *virtualServer) roundTrip(w *responseWriter, r *http.Request, rs *reqState, uc *upstreamConn, body *replayBody) (h1.Head, error) {
	rs.watch(uc)
	// The request's start is recent enough unless a connection was dialed
	// since (arm's check is off by the clock's staleness).
	at := rs.start
	if !uc.reused || rs.retries > 0 {
		at = time.Now()
	}
	if err := uc.arm(at, v.serverTimeout); err != nil {
		return h1.Head{}, &errNoResponse{err}
	}
	if body == nil {
		if _, err := uc.conn.Write(rs.head); err != nil {
			return h1.Head{}, &errNoResponse{err}
		}
	} else {
		rs.bodyDone = make(chan error, 1)
		rs.bodyConn = uc
		go v.sendBody(uc, r, rs, body)
	}
	br := uc.reader()
	h := w.Header()
	for n1xx := 0; ; n1xx++ {
		if _, err := br.Peek(1); err != nil {
			return h1.Head{}, &errNoResponse{err}
		}
		hd, err := h1.ReadHead(br, &rs.respHead, r.Method, h)
		if err != nil {
			return hd, err
		}
		if hd.Status >= 200 || hd.Status == http.StatusSwitchingProtocols {
			return hd, nil
		}
		if n1xx >= 5 {
			return hd, errors.New("member sent too many informational responses")
		}
		if hd.Status != http.StatusContinue {
			// 102, 103 Early Hints: on to the client. (100 Continue is
			// the client's business with net/http, which sends it when
			// the body is first read.)
			w.WriteHeader(hd.Status)
		}
		clear(h)
	}
}

// sendBody writes the head and the request body on uc, on its own
// goroutine: a member may answer before it has read the whole body.
func (v *virtualServer) sendBody(uc *upstreamConn, r *http.Request, rs *reqState, body *replayBody) {
	bw := writers.Get().(*bufio.Writer)
	bw.Reset(&deadlineWriter{conn: uc.conn, d: v.serverTimeout})
	err := func() error {
		if _, err := bw.Write(rs.head); err != nil {
			return err
		}
		buf := buffers.Get().(*[]byte)
		defer buffers.Put(buf)
		if r.ContentLength > 0 {
			n, err := io.CopyBuffer(bw, io.LimitReader(body, r.ContentLength), *buf)
			if err == nil && n < r.ContentLength {
				err = io.ErrUnexpectedEOF
				body.rs.setBodyErr(err)
			}
			if err != nil {
				return err
			}
		} else {
			cw := httputil.NewChunkedWriter(bw)
			if _, err := io.CopyBuffer(cw, body, *buf); err != nil {
				return err
			}
			if err := cw.Close(); err != nil {
				return err
			}
			for k, vv := range r.Trailer {
				for _, val := range vv {
					if _, err := bw.Write(appendField(nil, k, val)); err != nil {
						return err
					}
				}
			}
			if _, err := bw.WriteString("\r\n"); err != nil {
				return err
			}
		}
		return bw.Flush()
	}()
	bw.Reset(nil)
	writers.Put(bw)
	if err != nil {
		// Wake the reader: no response is coming to a request cut short.
		_ = uc.conn.SetReadDeadline(aLongTimeAgo)
	}
	rs.bodyDone <- err
}

// endBody waits for the request body's writer, if any, stopping it by
// closing the connection when it is still sending. It returns the writer's
// error when the writer failed on its own (before being stopped): that
// failure, not the reader's, is what went wrong.
func (v *virtualServer) endBody(rs *reqState, uc *upstreamConn) (sent bool, failed error) {
	if rs.bodyDone == nil {
		return true, nil
	}
	defer func() { rs.bodyDone = nil }()
	select {
	case err := <-rs.bodyDone:
		return err == nil, err
	default:
	}
	_ = uc.conn.SetDeadline(aLongTimeAgo)
	<-rs.bodyDone
	return false, nil
}

var writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 16<<10) }}

// deadlineWriter gives every write on a member connection server_timeout
// to complete: a member that stops reading a request body is cut off.
type deadlineWriter struct {
	conn net.Conn
	d    time.Duration
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	if w.d > 0 {
		_ = w.conn.SetWriteDeadline(time.Now().Add(w.d))
	}
	return w.conn.Write(p)
}

// relay sends the member's response to the client; its fields are in
// w.Header() already.
func (v *virtualServer) relay(w *responseWriter, r *http.Request, rs *reqState, uc *upstreamConn, hd h1.Head) {
	rs.setStatus(hd.Status)
	h := w.Header()
	now := time.Now()
	w.clock = now // the writes that follow at once need not read the clock again
	if v.persist != nil {
		at := now
		if v.srv.opts.Now != nil {
			at = v.now() // a test's clock
		}
		v.persist.respond(rs, h, at)
	}
	if hd.Status == http.StatusSwitchingProtocols {
		v.tunnel(w, r, rs, uc, hd)
		return
	}
	w.WriteHeader(hd.Status)
	br := uc.reader()
	var body io.Reader
	switch hd.Framing {
	case h1.Length:
		rs.lbody = lengthBody{r: br, n: hd.Length}
		body = &rs.lbody
	case h1.Chunked:
		body = httputil.NewChunkedReader(br)
	case h1.UntilClose:
		body = br
	}
	ok, now := v.copyBody(w, rs, uc, body, hd.Framing != h1.Length || hd.EventStream, now)
	sent, _ := v.endBody(rs, uc)
	if ok && hd.Framing == h1.Chunked {
		trailer, err := h1.ReadTrailer(br, &rs.respHead)
		if err != nil {
			rs.setUpstreamErr(err)
			ok = false
		} else if len(trailer) > 0 {
			w.flush() // forces chunking, so that the trailers can follow
			announced := h["Trailer"]
			for k, vv := range trailer {
				if !hasToken(announced, k) {
					k = http.TrailerPrefix + k
				}
				h[k] = vv
			}
		}
	}
	if !ok {
		uc.close()
		rs.abort = true
		return
	}
	if hd.Close || !sent || !rs.unwatch(uc) {
		uc.close()
		return
	}
	v.up.put(uc, now)
}

// lengthBody reads a body of a known length; a member that closes before
// the end has cut it short.
type lengthBody struct {
	r io.Reader
	n int64
}

func (b *lengthBody) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.r.Read(p)
	b.n -= int64(n)
	if err == io.EOF && b.n > 0 {
		err = io.ErrUnexpectedEOF
	}
	if err == nil && b.n == 0 {
		err = io.EOF
	}
	return n, err
}

// copyBody copies the member's body to the client, keeping the member's
// deadline server_timeout ahead of every read (a member that pauses longer
// is cut off). It reports whether the whole body went through, and the
// time of its last read.
func (v *virtualServer) copyBody(w *responseWriter, rs *reqState, uc *upstreamConn, body io.Reader, flush bool, now time.Time) (bool, time.Time) {
	defer func() { w.clock = time.Time{} }()
	if body == nil {
		return true, now
	}
	bp := buffers.Get().(*[]byte)
	defer buffers.Put(bp)
	buf := *bp
	for {
		if err := uc.arm(now, v.serverTimeout); err != nil {
			rs.setUpstreamErr(err)
			return false, now
		}
		n, err := body.Read(buf)
		// The read may have waited: the write deadline and the next read's
		// need the time after it.
		now = time.Now()
		w.clock = now
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return false, now // recorded by w
			}
			if flush {
				w.flush()
			}
		}
		if err == io.EOF {
			return true, now
		}
		if err != nil {
			if uc.aborted.Load() {
				err = errClientGone
			} else if isTimeout(err) {
				err = errServerTimeout
			}
			rs.setUpstreamErr(err)
			return false, now
		}
	}
}

// tunnel hands the connection over to the protocol the member switched to
// (a WebSocket, say): it writes the 101 to the client and copies bytes
// both ways until one side closes, or nothing moves for tunnel_timeout.
func (v *virtualServer) tunnel(w *responseWriter, r *http.Request, rs *reqState, uc *upstreamConn, hd h1.Head) {
	resUp := hd.Upgrade
	if !printableASCII(resUp) || !strings.EqualFold(resUp, rs.upType) {
		uc.close()
		v.fail(w, r, rs, fmt.Errorf("member switched to protocol %q when %q was asked for", resUp, rs.upType))
		return
	}
	rs.upgrade = truncate(resUp, 64)
	if !rs.unwatch(uc) {
		uc.close()
		v.fail(w, r, rs, errClientGone)
		return
	}
	defer uc.close()
	v.endBody(rs, uc)
	_ = uc.conn.SetDeadline(time.Time{})
	h := w.Header()
	conn, brw, err := w.Hijack()
	if err != nil {
		v.fail(w, r, rs, fmt.Errorf("switching protocols: %w", err))
		return
	}
	defer conn.Close()
	_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	_ = h.Write(brw)
	_, _ = brw.WriteString("\r\n")
	if err := brw.Flush(); err != nil {
		rs.setClientErr(err)
		return
	}
	member := newTunnelBody(&bufferedConn{Conn: uc.conn, r: uc.reader()}, v.tunnelTimeout)
	client := &bufferedConn{Conn: conn, r: brw.Reader}
	errc := make(chan error, 2)
	go func() { errc <- pipe(member, client) }()
	go func() { errc <- pipe(client, member) }()
	<-errc
	// Closing both ends the other direction; its reader must be done
	// before the deferred uc.close gives the read buffer back.
	_ = member.Close()
	_ = conn.Close()
	<-errc
}

// pipe copies src to dst. The tunnel ends when either side ends, as
// httputil.ReverseProxy's does.
func pipe(dst io.Writer, src io.Reader) error {
	if _, err := io.Copy(dst, src); err != nil {
		return err
	}
	return errTunnelDone
}

var errTunnelDone = errors.New("tunnel closed")

// bufferedConn reads what a bufio.Reader still holds before the connection.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
