package l7

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/limpet-lb/limpet/l7/h1"
)

// The client side of HTTP/1.x, in place of net/http's server (which keeps
// serving HTTP/2). Per request, net/http starts a goroutine to watch the
// connection, moves read deadlines three times, builds two contexts,
// copies the response header and sorts it: on one core, more than the
// proxy's own work. Here a connection's goroutine reads the head (l7/h1,
// strictly), runs the handler and writes the response through a pooled
// buffer; a request is watched for a client that goes away only once its
// member has kept it waiting (watchEvery).

// watchEvery is how often requests waiting on a member are checked; one
// that has waited for a check is then watched for its client going away.
const watchEvery = 100 * time.Millisecond

// maxDrain is the most of an unread request body that is read and thrown
// away to keep the connection; a longer one closes it (as net/http does).
const maxDrain = 256 << 10

// h1Server serves HTTP/1.x for one virtual server.
type h1Server struct {
	v *virtualServer

	mu       sync.Mutex
	conns    map[*h1Conn]struct{}
	closing  atomic.Bool
	wg       sync.WaitGroup
	stopTick chan struct{}
	tickOnce sync.Once
	stopOnce sync.Once
}

func newH1Server(v *virtualServer) *h1Server {
	return &h1Server{v: v, conns: map[*h1Conn]struct{}{}, stopTick: make(chan struct{})}
}

// Connection states.
const (
	connIdle   int32 = iota // waiting for a request
	connActive              // reading or answering one
	connDone                // hijacked or closed: not ours any more
)

// h1Conn is one client connection.
type h1Conn struct {
	s   *h1Server
	c   net.Conn // what the requests come on (a *tls.Conn over HTTPS)
	cs  *connState
	br  *bufio.Reader
	tls *tls.ConnectionState // shared by the connection's requests

	state atomic.Int32
	// src is what br reads: the connection, after the byte the watcher
	// may have read while a request waited (the next request's first).
	src       peekReader
	head      []byte // the request head as read
	req       http.Request
	w         h1Writer
	body      h1Body
	waiting   atomic.Bool // inflight was seen set by the last tick
	pipelined atomic.Bool // bytes of the next request were in when this one started
	watcher   chan struct{}
}

// peekReader is the connection as the buffered reader reads it: first the
// byte the watcher took, if any.
type peekReader struct {
	c      net.Conn
	b      [1]byte
	has    bool
	closed bool // the watcher saw the client go
}

func (p *peekReader) Read(b []byte) (int, error) {
	if p.has && len(b) > 0 {
		p.has = false
		b[0] = p.b[0]
		return 1, nil
	}
	return p.c.Read(b)
}

// serve accepts connections until ln fails; tls, when set, makes them HTTPS
// (and hands the HTTP/2 ones to h2).
func (s *h1Server) serve(ln net.Listener, tlsCfg *tls.Config, h2 *chanListener) error {
	s.tickOnce.Do(func() { go s.tick() })
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			if s.closing.Load() {
				return nil
			}
			return err
		}
		cs := stateOfConn(c)
		if tlsCfg == nil {
			s.start(c, cs, nil)
			continue
		}
		go s.handshake(c, cs, tlsCfg, h2)
	}
}

// handshake runs the TLS handshake, then serves HTTP/1 itself or hands an
// HTTP/2 connection to net/http.
func (s *h1Server) handshake(c net.Conn, cs *connState, cfg *tls.Config, h2 *chanListener) {
	tc := tls.Server(c, cfg)
	if d := s.v.readHeaderTimeout; d > 0 {
		_ = c.SetDeadline(time.Now().Add(d))
	}
	if err := tc.Handshake(); err != nil {
		s.v.log.Debug("TLS handshake failed", "client", c.RemoteAddr().String(), "err", err)
		c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	st := tc.ConnectionState()
	if st.NegotiatedProtocol == "h2" {
		if !h2.deliver(tc) {
			tc.Close()
		}
		return
	}
	s.start(tc, cs, &st)
}

func (s *h1Server) start(c net.Conn, cs *connState, st *tls.ConnectionState) {
	hc := &h1Conn{s: s, c: c, cs: cs, tls: st}
	hc.src.c = c
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		c.Close()
		return
	}
	s.conns[hc] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go hc.serve()
}

func (s *h1Server) forget(hc *h1Conn) {
	s.mu.Lock()
	delete(s.conns, hc)
	s.mu.Unlock()
	s.wg.Done()
}

// tick watches requests that wait long on their member, and keeps the
// Date of responses current.
func (s *h1Server) tick() {
	t := time.NewTicker(watchEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stopTick:
			return
		case now := <-t.C:
			setDate(now)
			s.mu.Lock()
			for hc := range s.conns {
				if hc.cs == nil || hc.cs.inflight.Load() == nil {
					hc.waiting.Store(false)
					continue
				}
				// Waiting since the last tick at least: watch the client
				// (once its body is read, and unless the next request is
				// already in: the client is still there then).
				if hc.waiting.Swap(true) && hc.body.done.Load() && !hc.pipelined.Load() {
					hc.watch()
				}
			}
			s.mu.Unlock()
		}
	}
}

// shutdown stops accepting (the caller closes the listener), closes idle
// connections, and waits for the others to finish until deadline; then it
// closes them. It reports whether all finished in time.
func (s *h1Server) shutdown(deadline time.Time) bool {
	s.mu.Lock()
	s.closing.Store(true)
	for hc := range s.conns {
		if hc.state.Load() == connIdle {
			_ = hc.c.SetReadDeadline(aLongTimeAgo) // wakes its wait for a request
		}
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	ok := true
	select {
	case <-done:
	case <-time.After(time.Until(deadline)):
		ok = false
		s.mu.Lock()
		for hc := range s.conns {
			hc.c.Close()
		}
		s.mu.Unlock()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
	}
	s.stopOnce.Do(func() { close(s.stopTick) })
	return ok
}

func (s *h1Server) isClosing() bool { return s.closing.Load() }

// watch starts reading the client connection while its request waits on
// the member (net/http's background read, for slow requests only): a
// byte is kept for the next request, an end or an error aborts the
// exchange with the member. The tick calls it with s.mu held.
func (hc *h1Conn) watch() {
	if hc.watcher != nil {
		return
	}
	done := make(chan struct{})
	hc.watcher = done
	go func() {
		defer close(done)
		n, err := hc.c.Read(hc.src.b[:])
		if n > 0 {
			hc.src.has = true
			return
		}
		if err != nil && !isTimeout(err) {
			hc.src.closed = true
			if uc := hc.cs.inflight.Swap(nil); uc != nil {
				uc.abort()
			}
		}
	}()
}

// unwatch stops the watcher, if one runs, before the connection is read
// again.
func (hc *h1Conn) unwatch() {
	hc.s.mu.Lock()
	done := hc.watcher
	hc.watcher = nil
	hc.waiting.Store(false)
	hc.s.mu.Unlock()
	if done == nil {
		return
	}
	hc.setReadDeadline(aLongTimeAgo)
	<-done
	hc.setReadDeadline(time.Time{})
}

var readerBufs = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}

func (hc *h1Conn) serve() {
	v := hc.s.v
	hc.br = readerBufs.Get().(*bufio.Reader)
	hc.br.Reset(&hc.src)
	hijacked := false
	defer func() {
		if p := recover(); p != nil && p != http.ErrAbortHandler {
			v.log.Error("panic serving a connection", "panic", fmt.Sprint(p))
		}
		if !hijacked {
			hc.state.Store(connDone)
			hc.c.Close()
			if hc.cs != nil {
				hc.cs.releaseHolds(v.now())
			}
		}
		hc.br.Reset(nil)
		readerBufs.Put(hc.br)
		hc.s.forget(hc)
	}()
	first := true
	cs := hc.cs
	for {
		hc.state.Store(connIdle)
		now := time.Now()
		switch {
		case first && v.readHeaderTimeout > 0:
			hc.setReadDeadline(now.Add(v.readHeaderTimeout))
		case first:
		case cs != nil:
			cs.armRead(now, v.idleTimeout)
		case v.idleTimeout > 0:
			_ = hc.c.SetReadDeadline(now.Add(v.idleTimeout))
		}
		if hc.s.isClosing() && !first && hc.br.Buffered() == 0 {
			return
		}
		if _, err := hc.br.Peek(1); err != nil {
			return // the client closed, or idled out, between requests
		}
		hc.state.Store(connActive)
		started := time.Now()
		if !first && v.readHeaderTimeout > 0 && !headBuffered(hc.br) {
			// The head is still coming: it has read_header_timeout. (When
			// it is all in, as it mostly is, no deadline need move.)
			hc.setReadDeadline(started.Add(v.readHeaderTimeout))
		}
		first = false
		if !hc.request(started) {
			return
		}
		if hc.w.hijacked {
			hijacked = true
			return
		}
	}
}

// setReadDeadline sets the connection's read deadline exactly.
func (hc *h1Conn) setReadDeadline(t time.Time) {
	if hc.cs != nil {
		hc.cs.setReadDeadline(t)
		return
	}
	_ = hc.c.SetReadDeadline(t)
}

// headBuffered reports whether a whole request head is in br's buffer.
func headBuffered(br *bufio.Reader) bool {
	b, _ := br.Peek(br.Buffered())
	return bytes.Contains(b, crlfcrlf) || bytes.Contains(b, lflf)
}

var crlfcrlf, lflf = []byte("\r\n\r\n"), []byte("\n\n")

// refused answers (when it may) and logs a request that could not be read.
func (hc *h1Conn) refused(err error, started time.Time) {
	v := hc.s.v
	status, reason := h1.Status(err), "bad_request"
	switch {
	case hc.s.isClosing() && isTimeout(err):
		status, reason = http.StatusServiceUnavailable, "shutting_down"
	case isTimeout(err):
		status, reason = http.StatusRequestTimeout, "header_timeout"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isClosedConn(err):
		status, reason = statusClientClosed, "client_closed"
	case status == http.StatusRequestHeaderFieldsTooLarge:
		reason = "headers_too_large"
	case status == http.StatusNotImplemented:
		reason = "unsupported_transfer_encoding"
	case status == http.StatusHTTPVersionNotSupported:
		reason = "unsupported_http_version"
	}
	if status != http.StatusRequestTimeout && status != statusClientClosed {
		// As nginx does, 408 and 499 are logged but not sent.
		if d := v.writeTimeout; d > 0 {
			_ = hc.c.SetWriteDeadline(time.Now().Add(d))
		}
		text := http.StatusText(status)
		fmt.Fprintf(hc.c, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%d %s\n",
			status, text, len(text)+5, status, text)
	}
	if hc.cs != nil {
		v.logRejected(hc.cs, status, reason, err, started)
	}
}

// request reads one request and answers it; it reports whether the
// connection may carry another.
func (hc *h1Conn) request(started time.Time) bool {
	v := hc.s.v
	r := &hc.req
	header := r.Header
	if header == nil {
		header = http.Header{}
	} else {
		clear(header)
	}
	rq, err := h1.ReadRequest(hc.br, &hc.head, v.maxHeaderBytes, header)
	if err != nil {
		hc.refused(err, started)
		return false
	}
	u, err := h1.RequestURL(rq.Method, rq.Target)
	if err != nil {
		hc.refused(fmt.Errorf("%w: %v", h1.ErrMalformed, err), started)
		return false
	}
	*r = http.Request{
		Method:     rq.Method,
		URL:        u,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: rq.Minor,
		Header:     header,
		Host:       rq.Host,
		RemoteAddr: hc.remote(),
		RequestURI: rq.Target,
		Close:      rq.Close || rq.CloseAfter,
		TLS:        hc.tls,
	}
	if rq.Minor == 0 {
		r.Proto = "HTTP/1.0"
	}
	b := &hc.body
	b.reset(hc, rq)
	switch rq.Framing {
	case h1.Length:
		r.ContentLength = rq.Length
		r.Body = b
	case h1.Chunked:
		r.ContentLength = -1
		r.TransferEncoding = chunkedTE
		r.Body = b
	default:
		r.Body = http.NoBody
		b.done.Store(true)
	}
	w := &hc.w
	w.reset(hc, r, rq)
	hc.pipelined.Store(hc.br.Buffered() > 0 || hc.src.has)
	aborted := hc.handle(w, r)
	hc.unwatch()
	if cap(hc.head) > 16<<10 {
		hc.head = nil // a large head once: do not keep its buffer for the connection's life
	}
	if aborted || hc.src.closed {
		return false
	}
	if w.hijacked {
		return false
	}
	if err := w.finish(); err != nil {
		return false
	}
	if w.closeAfter || r.Close || hc.s.isClosing() {
		return false
	}
	return b.drain()
}

var chunkedTE = []string{"chunked"}

func (hc *h1Conn) remote() string {
	if hc.cs != nil {
		return hc.cs.remote
	}
	return hc.c.RemoteAddr().String()
}

// handle runs the handler; it reports whether the response was aborted.
func (hc *h1Conn) handle(w *h1Writer, r *http.Request) (aborted bool) {
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler {
				hc.s.v.log.Error("panic serving request", "panic", fmt.Sprint(p))
			}
			aborted = true
		}
	}()
	hc.s.v.serve(w, r, hc.cs)
	return false
}

// h1Body is a request body, read from the connection's buffered reader.
type h1Body struct {
	hc       *h1Conn
	req      *http.Request
	left     int64 // Length: bytes to come
	chunked  bool
	cr       io.Reader
	expect   bool // 100 Continue still to send
	done     atomic.Bool
	err      error
	consumed int64
}

func (b *h1Body) reset(hc *h1Conn, rq h1.ReqHead) {
	b.hc, b.req = hc, &hc.req
	b.left, b.chunked, b.cr, b.err, b.consumed = 0, false, nil, nil, 0
	b.expect = rq.ExpectContinue && rq.Framing != h1.NoBody
	b.done.Store(false)
	switch rq.Framing {
	case h1.Length:
		b.left = rq.Length
	case h1.Chunked:
		b.chunked = true
	}
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.done.Load() {
		return 0, io.EOF
	}
	if b.expect {
		b.expect = false
		hc := b.hc
		if d := hc.s.v.writeTimeout; d > 0 {
			_ = hc.c.SetWriteDeadline(time.Now().Add(d))
		}
		if _, err := io.WriteString(hc.c, "HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
			b.err = err
			return 0, err
		}
	}
	var n int
	var err error
	if b.chunked {
		if b.cr == nil {
			b.cr = httputil.NewChunkedReader(b.hc.br)
		}
		n, err = b.cr.Read(p)
		if err == io.EOF {
			var t http.Header
			if t, err = h1.ReadTrailer(b.hc.br, &b.hc.head); err == nil {
				b.req.Trailer = t
				err = io.EOF
			}
		}
	} else {
		if int64(len(p)) > b.left {
			p = p[:b.left]
		}
		n, err = b.hc.br.Read(p)
		b.left -= int64(n)
		if err == io.EOF && b.left > 0 {
			err = io.ErrUnexpectedEOF
		}
		if err == nil && b.left == 0 {
			err = io.EOF
		}
	}
	b.consumed += int64(n)
	if err == io.EOF {
		b.done.Store(true)
	} else if err != nil {
		b.err = err
	}
	return n, err
}

func (b *h1Body) Close() error { return nil }

// drain reads what the handler left of the body, if it is short, so that
// the connection can carry the next request; it reports whether it can.
func (b *h1Body) drain() bool {
	if b.done.Load() {
		return true
	}
	if b.err != nil || b.expect {
		return false // broken, or the client still waits for a 100 Continue
	}
	if !b.chunked && b.left > maxDrain {
		return false
	}
	if d := b.hc.s.v.readHeaderTimeout; d > 0 {
		b.hc.setReadDeadline(time.Now().Add(d))
	}
	n, err := io.Copy(io.Discard, io.LimitReader(b, maxDrain+1))
	b.hc.setReadDeadline(time.Time{})
	return err == nil && n <= maxDrain && b.done.Load()
}

// h1Writer writes a response to an HTTP/1.x client. The head is written
// when the handler first flushes, writes past the buffer, or returns; a
// body of unknown length is sent chunked (to HTTP/1.0 clients, until the
// connection closes).
type h1Writer struct {
	hc          *h1Conn
	req         *http.Request
	header      http.Header
	bw          *bufio.Writer
	status      int
	wroteHeader bool // WriteHeader was called (final status)
	committed   bool // the head is written
	head        bool // a HEAD request
	minor       int
	chunked     bool
	noBody      bool
	length      int64 // -1: not known
	written     int64
	pending     []byte // body bytes before the head is committed
	closeAfter  bool
	hijacked    bool
	trailers    []string
	err         error
}

var writerBufs = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}

func (w *h1Writer) reset(hc *h1Conn, r *http.Request, rq h1.ReqHead) {
	header := w.header
	if header == nil {
		header = http.Header{}
	} else {
		clear(header)
	}
	pending := w.pending[:0]
	*w = h1Writer{hc: hc, req: r, header: header, pending: pending, head: r.Method == http.MethodHead, minor: rq.Minor, length: -1}
	w.closeAfter = rq.Close || rq.CloseAfter
}

func (w *h1Writer) Header() http.Header { return w.header }

func (w *h1Writer) WriteHeader(code int) {
	if w.committed || w.hijacked || w.wroteHeader {
		return
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		w.informational(code)
		return
	}
	w.wroteHeader = true
	w.status = code
}

// informational writes a 1xx response with the current fields.
func (w *h1Writer) informational(code int) {
	if w.minor == 0 {
		return // HTTP/1.0 clients know no 1xx
	}
	bw := w.writer()
	writeStatusLine(bw, 1, code)
	writeFields(bw, w.header)
	bw.WriteString("\r\n")
	if err := bw.Flush(); err != nil {
		w.err = err
	}
}

func (w *h1Writer) writer() *bufio.Writer {
	if w.bw == nil {
		w.bw = writerBufs.Get().(*bufio.Writer)
		w.bw.Reset(w.hc.c)
	}
	return w.bw
}

func (w *h1Writer) Write(p []byte) (int, error) {
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	if !w.committed {
		if len(w.pending)+len(p) <= 4<<10 {
			w.pending = append(w.pending, p...)
			return len(p), nil
		}
		w.commit(false)
		if w.err != nil {
			return 0, w.err
		}
	}
	return w.body(p)
}

// body writes p as body bytes (chunked if need be).
func (w *h1Writer) body(p []byte) (int, error) {
	if w.noBody || len(p) == 0 {
		return len(p), nil
	}
	bw := w.writer()
	if w.chunked {
		var size [18]byte
		b := strconv.AppendInt(size[:0], int64(len(p)), 16)
		bw.Write(append(b, '\r', '\n'))
	}
	n, err := bw.Write(p)
	if w.chunked && err == nil {
		_, err = bw.WriteString("\r\n")
	}
	w.written += int64(n)
	if err != nil {
		w.err = err
	}
	return n, err
}

// commit writes the head; last says the handler has returned, so that a
// body that was all buffered gets its length.
func (w *h1Writer) commit(last bool) {
	if w.committed {
		return
	}
	w.committed = true
	if !w.wroteHeader {
		w.wroteHeader, w.status = true, http.StatusOK
	}
	h := w.header
	code := w.status
	w.noBody = w.head || code == http.StatusNoContent || code == http.StatusNotModified || code < 200
	if cl := h["Content-Length"]; len(cl) == 1 {
		if n, err := strconv.ParseInt(cl[0], 10, 64); err == nil && n >= 0 {
			w.length = n
		}
	} else if len(cl) > 1 {
		delete(h, "Content-Length")
	}
	delete(h, "Transfer-Encoding")
	switch {
	case code == http.StatusNoContent || code < 200:
		delete(h, "Content-Length")
		w.length = -1
	case w.length >= 0 || w.noBody:
	case last:
		w.length = int64(len(w.pending))
		h["Content-Length"] = []string{strconv.Itoa(len(w.pending))}
	case w.minor >= 1:
		w.chunked = true
	default:
		w.closeAfter = true // an HTTP/1.0 body of unknown length ends with the connection
	}
	// Trailers: declared by a Trailer field, or set with the TrailerPrefix.
	if tr := h["Trailer"]; len(tr) > 0 && w.chunked {
		for _, v := range tr {
			for k := range strings.SplitSeq(v, ",") {
				if k = strings.TrimSpace(k); k != "" {
					w.trailers = append(w.trailers, http.CanonicalHeaderKey(k))
				}
			}
		}
	}
	if !w.chunked {
		delete(h, "Trailer")
	}
	if w.hc.s.isClosing() {
		w.closeAfter = true
	}
	conn := h["Connection"]
	if hasToken(conn, "close") {
		w.closeAfter = true
	}
	delete(h, "Connection")
	bw := w.writer()
	writeStatusLine(bw, w.minor, code)
	if _, ok := h["Date"]; !ok {
		bw.WriteString("Date: ")
		bw.WriteString(date())
		bw.WriteString("\r\n")
	}
	writeFields(bw, h)
	if w.chunked {
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	switch {
	case w.closeAfter:
		bw.WriteString("Connection: close\r\n")
	case w.minor == 0:
		bw.WriteString("Connection: keep-alive\r\n")
	}
	bw.WriteString("\r\n")
	if len(w.pending) > 0 {
		p := w.pending
		w.pending = w.pending[:0]
		_, _ = w.body(p)
	}
}

// FlushError sends what is buffered.
func (w *h1Writer) FlushError() error {
	if w.hijacked {
		return http.ErrHijacked
	}
	w.commit(false)
	if w.err != nil {
		return w.err
	}
	if err := w.writer().Flush(); err != nil {
		w.err = err
	}
	return w.err
}

// finish ends the response after the handler has returned.
func (w *h1Writer) finish() error {
	if w.hijacked {
		return nil
	}
	w.commit(true)
	bw := w.writer()
	if w.chunked && w.err == nil {
		bw.WriteString("0\r\n")
		for k, vv := range w.header {
			if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
				for _, v := range vv {
					writeField(bw, http.CanonicalHeaderKey(name), v)
				}
			}
		}
		for _, k := range w.trailers {
			for _, v := range w.header[k] {
				writeField(bw, k, v)
			}
		}
		bw.WriteString("\r\n")
	}
	if w.err == nil {
		if err := bw.Flush(); err != nil {
			w.err = err
		}
	}
	bw.Reset(nil)
	writerBufs.Put(bw)
	w.bw = nil
	if w.err == nil && w.length >= 0 && !w.noBody && w.written != w.length {
		// The handler wrote another length than it announced: the
		// connection cannot be trusted to delimit the next response.
		return fmt.Errorf("wrote %d bytes of a %d-byte body", w.written, w.length)
	}
	return w.err
}

// Hijack hands the connection over (protocol upgrades).
func (w *h1Writer) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.committed {
		return nil, nil, errors.New("hijack after the response started")
	}
	w.hijacked = true
	hc := w.hc
	hc.state.Store(connDone)
	if w.bw != nil {
		w.bw.Reset(nil)
		writerBufs.Put(w.bw)
		w.bw = nil
	}
	// The reader and its buffered bytes go with the connection.
	br := bufio.NewReader(&hc.src)
	if n := hc.br.Buffered(); n > 0 {
		b, _ := hc.br.Peek(n)
		br = bufio.NewReaderSize(io.MultiReader(strings.NewReader(string(b)), &hc.src), 4<<10)
	}
	return hc.c, bufio.NewReadWriter(br, bufio.NewWriter(hc.c)), nil
}

func writeStatusLine(bw *bufio.Writer, minor, code int) {
	if minor == 0 {
		bw.WriteString("HTTP/1.0 ")
	} else {
		bw.WriteString("HTTP/1.1 ")
	}
	var b [3]byte
	bw.Write(strconv.AppendInt(b[:0], int64(code), 10))
	bw.WriteByte(' ')
	text := http.StatusText(code)
	if text == "" {
		text = "status code " + strconv.Itoa(code)
	}
	bw.WriteString(text)
	bw.WriteString("\r\n")
}

func writeFields(bw *bufio.Writer, h http.Header) {
	for k, vv := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			continue
		}
		for _, v := range vv {
			writeField(bw, k, v)
		}
	}
}

func writeField(bw *bufio.Writer, k, v string) {
	bw.WriteString(k)
	bw.WriteString(": ")
	for i := 0; i < len(v); i++ {
		if c := v[i]; c == '\r' || c == '\n' || c == 0 {
			b := []byte(v)
			for j := range b {
				if b[j] == '\r' || b[j] == '\n' || b[j] == 0 {
					b[j] = ' '
				}
			}
			bw.Write(b)
			bw.WriteString("\r\n")
			return
		}
	}
	bw.WriteString(v)
	bw.WriteString("\r\n")
}

// The Date of responses, renewed by the servers' ticks (to the second).
var dateNow atomic.Pointer[string]

func setDate(now time.Time) {
	d := now.UTC().Format(http.TimeFormat)
	if p := dateNow.Load(); p == nil || *p != d {
		dateNow.Store(&d)
	}
}

func date() string {
	if p := dateNow.Load(); p != nil {
		return *p
	}
	setDate(time.Now())
	return *dateNow.Load()
}

// chanListener hands connections (HTTP/2, after our TLS handshake) to a
// net/http server.
type chanListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) deliver(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }
