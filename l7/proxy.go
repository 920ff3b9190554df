package l7

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/limpet-lb/limpet/l7/balance"
	"github.com/limpet-lb/limpet/userspace/ids"
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
		f.ConnectResult(ids.MemberRef{Pool: m.Pool, Member: m.Name}, m.Addr, err)
	}
}

// fail answers when no response came from a member. It never answers
// 500: each cause has its status.
func (v *virtualServer) fail(w http.ResponseWriter, r *http.Request, rs *reqState, err error) {
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
	case errors.Is(err, errClientGone) || r.Context().Err() != nil:
		rs.reason = "client_closed"
		rs.setStatus(statusClientClosed)
		rs.status = statusClientClosed
		// Nobody is listening; answer anyway so the server has a response.
		writeStatus(w, http.StatusBadGateway, 0)
	case errors.As(err, &de):
		rs.reason = "connect_failed"
		writeStatus(w, http.StatusBadGateway, 0)
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout(), errors.Is(err, errServerTimeout):
		rs.reason = "server_timeout"
		writeStatus(w, http.StatusGatewayTimeout, 0)
	default:
		rs.reason = "member_error"
		writeStatus(w, http.StatusBadGateway, 0)
	}
}

// isTimeout reports a deadline or timeout error without allocating (it
// runs on every request: net/http ends its background read with one).
func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	for err != nil {
		if t, ok := err.(interface{ Timeout() bool }); ok && t.Timeout() {
			return true
		}
		err = errors.Unwrap(err)
	}
	return false
}

// replayBody counts what has been read of a request body, so that a
// request whose connection failed before any of it was read can go to
// another member, and records the client's read errors for the log.
type replayBody struct {
	rc io.Reader
	rs *reqState
	n  atomic.Int64
}

func (b *replayBody) reset(rc io.Reader, rs *reqState) {
	b.rc, b.rs = rc, rs
	b.n.Store(0)
}

func (b *replayBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.n.Add(int64(n))
	if err != nil && err != io.EOF {
		b.rs.setBodyErr(err)
	}
	return n, err
}

func (b *replayBody) started() bool { return b.n.Load() > 0 }

// tunnelBody is the member's side of an upgraded connection; it closes the
// tunnel after tunnel_timeout without traffic either way.
type tunnelBody struct {
	rwc   io.ReadWriteCloser
	guard *idleGuard
}

func newTunnelBody(rwc io.ReadWriteCloser, timeout time.Duration) io.ReadWriteCloser {
	t := &tunnelBody{rwc: rwc}
	if timeout > 0 {
		t.guard = newIdleGuard(timeout, func() { rwc.Close() })
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

// idleGuard calls fire once nothing has happened for d (a tunnel idle
// both ways). It costs an atomic store per event instead of a timer reset.
type idleGuard struct {
	d       time.Duration
	last    atomic.Int64
	fire    func()
	t       *time.Timer
	stopped atomic.Bool
}

func newIdleGuard(d time.Duration, fire func()) *idleGuard {
	g := &idleGuard{d: d, fire: fire}
	g.touch()
	g.t = time.AfterFunc(d, g.check)
	return g
}

func (g *idleGuard) touch() { g.last.Store(time.Now().UnixNano()) }

func (g *idleGuard) check() {
	if g.stopped.Load() {
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
	rc          *http.ResponseController // made when first needed (HTTP/2, hijack)
	cs          *connState               // HTTP/1: deadlines go on the connection itself
	rs          *reqState
	vs          *virtualServer
	status      int
	bytes       int64
	wroteHeader bool
	hijacked    bool
	lastExtend  time.Time
	// clock, when set, is a recent time.Now() of the caller's, which
	// extend may use instead of reading the clock again.
	clock time.Time
}

func (w *responseWriter) init(inner http.ResponseWriter, rs *reqState, v *virtualServer, r *http.Request) {
	*w = responseWriter{w: inner, rs: rs, vs: v}
	if r.ProtoMajor == 1 && rs.conn != nil && rs.conn.nc != nil {
		w.cs = rs.conn
	}
	w.extendAt(rs.start)
}

func (w *responseWriter) controller() *http.ResponseController {
	if w.rc == nil {
		w.rc = http.NewResponseController(w.w)
	}
	return w.rc
}

// extend keeps the write deadline at least write_timeout away. On an
// HTTP/1 connection the deadline is the connection's, kept across its
// requests and moved only when it has come closer than the timeout (so a
// write may block between write_timeout and 9/8 of it); an HTTP/2 stream's
// is moved at most a few times per timeout.
func (w *responseWriter) extend() {
	if w.vs.writeTimeout <= 0 {
		return
	}
	now := w.clock
	if now.IsZero() {
		now = time.Now()
	}
	w.extendAt(now)
}

func (w *responseWriter) extendAt(now time.Time) {
	d := w.vs.writeTimeout
	if d <= 0 {
		return
	}
	if cs := w.cs; cs != nil {
		if cs.writeDeadline.Sub(now) >= d {
			return
		}
		cs.writeDeadline = now.Add(d + d/8)
		_ = cs.nc.SetWriteDeadline(cs.writeDeadline)
		return
	}
	if now.Sub(w.lastExtend) < d/8 {
		return
	}
	w.lastExtend = now
	_ = w.controller().SetWriteDeadline(now.Add(d))
}

// setReadDeadline bounds the reading of the request body.
func (w *responseWriter) setReadDeadline(t time.Time) {
	if w.cs != nil {
		w.cs.setReadDeadline(t)
		return
	}
	_ = w.controller().SetReadDeadline(t)
}

// flush sends what is buffered to the client.
func (w *responseWriter) flush() { _ = w.FlushError() }

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
	if w.rs.closeAfter {
		w.w.Header().Set("Connection", "close")
	}
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
	var err error
	switch f := w.w.(type) {
	case interface{ FlushError() error }:
		err = f.FlushError()
	case http.Flusher:
		f.Flush()
	default:
		err = http.ErrNotSupported
	}
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
	c, brw, err := w.controller().Hijack()
	if err != nil {
		return nil, nil, err
	}
	_ = c.SetDeadline(time.Time{})
	if w.cs != nil {
		w.cs.writeDeadline = time.Time{}
	}
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
