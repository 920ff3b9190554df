package l7

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/limpet-lb/limpet/l7/balance"
	"github.com/limpet-lb/limpet/userspace/config"
)

// errServerTimeout cancels a request whose member stalled mid-body.
var errServerTimeout = errors.New("member sent nothing for server_timeout")

// dialError marks a failed connection to a member: nothing was sent, so
// the request may go to another member whatever its method.
type dialError struct {
	addr string
	err  error
}

func (e *dialError) Error() string { return "connect to member " + e.addr + ": " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// serverDownError refuses a persisted client whose member is down under
// the never policy.
type serverDownError struct{ cause error }

func (e *serverDownError) Error() string { return "persisted member is down: " + e.cause.Error() }
func (e *serverDownError) Unwrap() error { return e.cause }

// noMemberError: every member was tried or is down.
type noMemberError struct{ cause error }

func (e *noMemberError) Error() string { return "no member can take the request: " + e.cause.Error() }
func (e *noMemberError) Unwrap() error { return e.cause }

// dial connects to a member and feeds passive health.
func (v *virtualServer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := v.dialer.DialContext(ctx, network, addr)
	m := v.byAddr[addr]
	if err != nil {
		if ctx.Err() != nil {
			// The request went away; the member did nothing wrong.
			return nil, err
		}
		if m != nil {
			if m.ConnectFailed(v.now(), v.maxFails, v.failTimeout) {
				v.log.Warn("member marked down after connection failures", "member", m.Name, "addr", addr,
					"failures", m.ConsecutiveFailures(), "for", v.failTimeout, "err", err)
			}
			v.report(m, err)
		}
		return nil, &dialError{addr: addr, err: err}
	}
	if m != nil {
		m.ConnectSucceeded()
		v.report(m, nil)
	}
	return c, nil
}

func (v *virtualServer) report(m *balance.Member, err error) {
	if f := v.srv.opts.Failures; f != nil {
		f.ConnectResult(MemberID{Pool: m.Pool, Member: m.Name}, m.Addr, err)
	}
}

// rewrite builds the request to the member.
func (v *virtualServer) rewrite(pr *httputil.ProxyRequest) {
	rs := stateOf(pr.In.Context())
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = rs.member.Addr.String()
	// pr.Out.Host stays the client's Host header.
	if v.xffAppend {
		if prior, ok := pr.In.Header["X-Forwarded-For"]; ok {
			pr.Out.Header["X-Forwarded-For"] = append([]string(nil), prior...)
		}
	}
	pr.SetXForwarded()
	if v.persist != nil {
		v.persist.rewrite(rs, pr.Out)
	}
	// HTTP/2 clients send a cookie per header field; an HTTP/1.1 member
	// expects one Cookie header (RFC 6265 5.4), so join them (RFC 9113 8.2.3).
	if c := pr.Out.Header["Cookie"]; len(c) > 1 {
		pr.Out.Header["Cookie"] = []string{strings.Join(c, "; ")}
	}
}

// modifyResponse runs once the final member's response headers are in.
func (v *virtualServer) modifyResponse(resp *http.Response) error {
	rs := stateOf(resp.Request.Context())
	if rs == nil {
		return nil
	}
	rs.setStatus(resp.StatusCode)
	if v.persist != nil {
		v.persist.respond(rs, resp, v.now())
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		rs.upgrade = truncate(resp.Header.Get("Upgrade"), 64)
		if rwc, ok := resp.Body.(io.ReadWriteCloser); ok {
			resp.Body = newTunnelBody(rwc, v.tunnelTimeout)
		}
		return nil
	}
	if resp.Body != nil && resp.Body != http.NoBody {
		resp.Body = newUpstreamBody(resp.Body, rs, v.serverTimeout)
	}
	return nil
}

// errorHandler answers when no response came from a member. It never
// answers 500: each cause has its status.
func (v *virtualServer) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	rs := stateOf(r.Context())
	if rs == nil {
		writeStatus(w, http.StatusBadGateway, 0)
		return
	}
	rs.setErr(err.Error())
	var sd *serverDownError
	var nm *noMemberError
	var de *dialError
	var ne net.Error
	bodyErr := rs.getBodyErr()
	now := v.now()
	switch {
	case errors.As(err, &sd):
		rs.decision = decServerDown
		rs.reason = "connect_failed"
		writeStatus(w, http.StatusServiceUnavailable, v.retryAfter(rs, rs.persisted, now))
	case errors.As(err, &nm):
		rs.decision = decNoMember
		rs.reason = "connect_failed"
		writeStatus(w, http.StatusServiceUnavailable, v.retryAfter(rs, nil, now))
	case bodyErr != nil:
		// The client failed to deliver its body: slow, or gone.
		if isTimeout(bodyErr) {
			rs.reason = "client_body_timeout"
			writeStatus(w, http.StatusRequestTimeout, 0)
		} else {
			rs.reason = "client_body_error"
			writeStatus(w, http.StatusBadRequest, 0)
		}
	case r.Context().Err() != nil && context.Cause(r.Context()) != errServerTimeout:
		rs.reason = "client_closed"
		rs.setStatus(statusClientClosed)
		rs.status = statusClientClosed
		// Nobody is listening; answer anyway so the server has a response.
		writeStatus(w, http.StatusBadGateway, 0)
	case errors.As(err, &de):
		rs.reason = "connect_failed"
		writeStatus(w, http.StatusBadGateway, 0)
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout(),
		context.Cause(r.Context()) == errServerTimeout:
		rs.reason = "server_timeout"
		writeStatus(w, http.StatusGatewayTimeout, 0)
	default:
		rs.reason = "member_error"
		writeStatus(w, http.StatusBadGateway, 0)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// retryTransport sends the request to its member and, when the connection
// cannot be made (nothing was sent), to other members, as the server-down
// policy allows.
type retryTransport struct{ vs *virtualServer }

func (t *retryTransport) RoundTrip(out *http.Request) (*http.Response, error) {
	v := t.vs
	rs := stateOf(out.Context())
	if rs == nil {
		return v.transport.RoundTrip(out)
	}
	var body *replayBody
	if out.Body != nil && out.Body != http.NoBody {
		body = &replayBody{rc: out.Body, rs: rs}
		body.hold.Store(true)
		out.Body = body
	}
	req := out
	for {
		resp, err := v.transport.RoundTrip(req)
		if body != nil {
			body.settle()
		}
		if err == nil {
			return resp, nil
		}
		var de *dialError
		if !errors.As(err, &de) || out.Context().Err() != nil {
			return nil, err
		}
		failed := rs.member
		rs.tried = append(rs.tried, failed)
		rs.release()
		if rs.decision == decPersisted && v.serverDown == config.ServerDownNever {
			return nil, &serverDownError{cause: err}
		}
		if rs.retries >= v.retries || (body != nil && body.started()) {
			return nil, err
		}
		next := v.pool.Pick(&balance.Pick{Client: rs.client.Addr(), Now: v.now(), Exclude: rs.tried})
		if next == nil {
			return nil, &noMemberError{cause: err}
		}
		rs.use(next)
		rs.retries++
		rs.reason = "connect_failed"
		if rs.decision == decPersisted {
			rs.decision = decRebalanced
		}
		v.log.Debug("retrying on another member", "failed", failed.Name, "member", next.Name, "err", err)
		req = out.Clone(out.Context())
		req.URL.Host = next.Addr.String()
		if body != nil {
			body.hold.Store(true)
			req.Body = body
		}
	}
}

// replayBody lets a request whose connection failed go to another member:
// while nothing has been read from it, the transport's Close is held back.
type replayBody struct {
	rc   io.ReadCloser
	rs   *reqState
	hold atomic.Bool

	mu      sync.Mutex
	n       int64
	pending bool
	closed  bool
}

func (b *replayBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.mu.Lock()
	b.n += int64(n)
	b.mu.Unlock()
	if err != nil && err != io.EOF {
		b.rs.setBodyErr(err)
	}
	return n, err
}

func (b *replayBody) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	if b.n == 0 && b.hold.Load() {
		b.pending = true
		return nil
	}
	b.closed = true
	return b.rc.Close()
}

func (b *replayBody) started() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n > 0
}

// settle ends an attempt: a Close held back during it is done now if the
// body was read, and forgotten if not (the next attempt reads it afresh).
func (b *replayBody) settle() {
	b.hold.Store(false)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pending && b.n > 0 && !b.closed {
		b.closed = true
		b.rc.Close()
	}
	b.pending = false
}

// upstreamBody watches a member's response body: read errors are recorded
// for the log, and a member silent for server_timeout is cut off.
type upstreamBody struct {
	rc    io.ReadCloser
	rs    *reqState
	guard *idleGuard
}

func newUpstreamBody(rc io.ReadCloser, rs *reqState, timeout time.Duration) *upstreamBody {
	b := &upstreamBody{rc: rc, rs: rs}
	if timeout > 0 && rs.cancel != nil {
		b.guard = newIdleGuard(timeout, true, func() { rs.cancel(errServerTimeout) })
	}
	return b
}

func (b *upstreamBody) Read(p []byte) (int, error) {
	if b.guard != nil {
		b.guard.begin()
	}
	n, err := b.rc.Read(p)
	if b.guard != nil {
		b.guard.end()
	}
	if err != nil && err != io.EOF {
		if b.rs.ctx != nil && context.Cause(b.rs.ctx) == errServerTimeout {
			err = errServerTimeout
		}
		b.rs.setUpstreamErr(err)
	}
	return n, err
}

func (b *upstreamBody) Close() error {
	if b.guard != nil {
		b.guard.stop()
	}
	return b.rc.Close()
}

// tunnelBody is the member's side of an upgraded connection; it closes the
// tunnel after tunnel_timeout without traffic either way.
type tunnelBody struct {
	rwc   io.ReadWriteCloser
	guard *idleGuard
}

func newTunnelBody(rwc io.ReadWriteCloser, timeout time.Duration) io.ReadWriteCloser {
	t := &tunnelBody{rwc: rwc}
	if timeout > 0 {
		t.guard = newIdleGuard(timeout, false, func() { rwc.Close() })
	}
	return t
}

func (t *tunnelBody) Read(p []byte) (int, error) {
	n, err := t.rwc.Read(p)
	if t.guard != nil && n > 0 {
		t.guard.touch()
	}
	return n, err
}

func (t *tunnelBody) Write(p []byte) (int, error) {
	n, err := t.rwc.Write(p)
	if t.guard != nil && n > 0 {
		t.guard.touch()
	}
	return n, err
}

func (t *tunnelBody) Close() error {
	if t.guard != nil {
		t.guard.stop()
	}
	return t.rwc.Close()
}

// idleGuard calls fire once nothing has happened for d. It costs an atomic
// store per event instead of a timer reset. A bracketed guard only counts
// the time between begin and end (waits on the member); an unbracketed one
// counts all the time since the last touch.
type idleGuard struct {
	d         time.Duration
	bracketed bool
	last      atomic.Int64
	waiting   atomic.Bool
	fire      func()
	t         *time.Timer
	stopped   atomic.Bool
}

func newIdleGuard(d time.Duration, bracketed bool, fire func()) *idleGuard {
	g := &idleGuard{d: d, bracketed: bracketed, fire: fire}
	g.touch()
	g.t = time.AfterFunc(d, g.check)
	return g
}

func (g *idleGuard) touch() { g.last.Store(time.Now().UnixNano()) }

// begin and end bracket a wait on the member; time outside them (spent
// writing to the client) does not count as the member's silence.
func (g *idleGuard) begin() {
	g.touch()
	g.waiting.Store(true)
}

func (g *idleGuard) end() {
	g.waiting.Store(false)
	g.touch()
}

func (g *idleGuard) check() {
	if g.stopped.Load() {
		return
	}
	if g.bracketed && !g.waiting.Load() {
		g.t.Reset(g.d)
		return
	}
	idle := time.Duration(time.Now().UnixNano() - g.last.Load())
	if idle >= g.d {
		g.fire()
		return
	}
	g.t.Reset(g.d - idle)
}

func (g *idleGuard) stop() {
	g.stopped.Store(true)
	g.t.Stop()
}

// responseWriter records what was sent, keeps the write deadline moving
// while the client keeps reading, and tracks hijacked connections.
type responseWriter struct {
	w           http.ResponseWriter
	rc          *http.ResponseController
	rs          *reqState
	vs          *virtualServer
	status      int
	bytes       int64
	wroteHeader bool
	hijacked    bool
	lastExtend  time.Time
}

func newResponseWriter(w http.ResponseWriter, rs *reqState, v *virtualServer) *responseWriter {
	rw := &responseWriter{w: w, rc: http.NewResponseController(w), rs: rs, vs: v}
	rw.extend()
	return rw
}

// extend pushes the write deadline out by write_timeout, at most a few
// times per timeout so that fast writes do not pay for it each time.
func (w *responseWriter) extend() {
	d := w.vs.writeTimeout
	if d <= 0 {
		return
	}
	now := time.Now()
	if now.Sub(w.lastExtend) < d/8 {
		return
	}
	w.lastExtend = now
	_ = w.rc.SetWriteDeadline(now.Add(d))
}

func (w *responseWriter) Header() http.Header { return w.w.Header() }

func (w *responseWriter) WriteHeader(code int) {
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		w.w.WriteHeader(code) // informational (103 Early Hints) passes through
		return
	}
	if w.wroteHeader {
		return
	}
	w.wroteHeader = true
	w.status = code
	w.extend()
	w.w.WriteHeader(code)
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	w.extend()
	n, err := w.w.Write(p)
	w.bytes += int64(n)
	if err != nil {
		w.rs.setClientErr(err)
	}
	return n, err
}

func (w *responseWriter) FlushError() error {
	w.extend()
	err := w.rc.Flush()
	if err != nil && !errors.Is(err, http.ErrNotSupported) {
		w.rs.setClientErr(err)
	}
	return err
}

func (w *responseWriter) Unwrap() http.ResponseWriter { return w.w }

// Hijack hands the client connection to the upgrade tunnel: deadlines set
// for the HTTP exchange are lifted (the tunnel has its own idle timeout)
// and the connection is tracked so a shutdown can close it.
func (w *responseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := w.rc.Hijack()
	if err != nil {
		return nil, nil, err
	}
	_ = c.SetDeadline(time.Time{})
	w.hijacked = true
	w.status = http.StatusSwitchingProtocols
	w.wroteHeader = true
	hc := &hijackedConn{Conn: c, vs: w.vs, cs: w.rs.conn}
	w.vs.trackTunnel(hc)
	return hc, brw, nil
}

// hijackedConn is an upgraded client connection.
type hijackedConn struct {
	net.Conn
	vs   *virtualServer
	cs   *connState
	once sync.Once
}

func (c *hijackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		if c.cs != nil {
			c.cs.releaseHolds(c.vs.now())
		}
		c.vs.untrackTunnel(c)
	})
	return err
}

func (v *virtualServer) trackTunnel(c *hijackedConn) {
	v.tunnelsMu.Lock()
	v.tunnels[c] = struct{}{}
	v.tunnelsMu.Unlock()
}

func (v *virtualServer) untrackTunnel(c *hijackedConn) {
	v.tunnelsMu.Lock()
	delete(v.tunnels, c)
	v.tunnelsMu.Unlock()
}
