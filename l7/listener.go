package l7

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/limpet-lb/limpet/l7/accesslog"
	"github.com/limpet-lb/limpet/l7/persist"
)

// trackedListener wraps every accepted connection so that the proxy can
// tell what happened to requests net/http refused before any handler ran
// (headers too large, malformed, too slow), and so that a connection can
// hold persistence entries until it closes.
type trackedListener struct {
	net.Listener
	vs *virtualServer
}

func (l *trackedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	cs := &connState{vs: l.vs, remote: c.RemoteAddr().String()}
	cs.client, _ = netip.ParseAddrPort(cs.remote)
	cs.mark.Store(time.Now().UnixNano())
	cs.waiting.Store(true)
	cs.armed.Store(true)
	tc := &trackedConn{Conn: c, cs: cs}
	cs.nc = tc
	return tc, nil
}

type trackedConn struct {
	net.Conn
	cs *connState
}

func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.cs.bytesRead.Add(int64(n))
		if c.cs.waiting.Load() {
			c.cs.waiting.Store(false)
			c.cs.mark.Store(time.Now().UnixNano())
		}
	}
	if err != nil {
		c.cs.setReadErr(err)
		if !isTimeout(err) {
			// The client closed or reset the connection: abort the
			// exchange with the member it was waiting for. (A timeout is
			// net/http ending its own background read, or a deadline of
			// ours, handled where it was set.)
			if uc := c.cs.inflight.Swap(nil); uc != nil {
				uc.abort()
			}
		}
	}
	return n, err
}

func (c *trackedConn) Write(p []byte) (int, error) {
	// Armed between a request being read and a handler starting: a write
	// then is net/http refusing the request itself ("HTTP/1.1 431 ...").
	if c.cs.armed.Load() && len(p) >= 12 && bytes.HasPrefix(p, []byte("HTTP/1.")) {
		if code := atoi3(p[9:12]); code > 0 {
			c.cs.serverStatus.Store(int32(code))
		}
	}
	return c.Conn.Write(p)
}

func atoi3(b []byte) int {
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// connState is what the proxy knows about one client connection.
type connState struct {
	vs     *virtualServer
	remote string
	client netip.AddrPort
	nc     net.Conn // the accepted connection, for deadlines

	// inflight is the member connection an HTTP/1 request is waiting on.
	inflight atomic.Pointer[upstreamConn]
	// writeDeadline and readDeadline are the deadlines set on nc (HTTP/1),
	// so that they are moved only when they must be; touched only by the
	// connection's own goroutine (and the watcher it waits for).
	writeDeadline time.Time
	readDeadline  time.Time

	bytesRead    atomic.Int64
	bytesMark    atomic.Int64
	mark         atomic.Int64 // first byte of the current request (Unix ns)
	waiting      atomic.Bool  // no byte of the next request yet
	armed        atomic.Bool
	serverStatus atomic.Int32
	handlers     atomic.Int64
	h2           atomic.Bool

	// Touched only by net/http's ConnState hook, which runs on the
	// connection's own goroutine.
	activeMark int64
	activeSeen bool

	mu      sync.Mutex
	readErr error
	holds   []held
	closed  bool
}

type held struct {
	st  persist.Store
	key persist.Key
}

// maxHolds bounds the entries one connection holds; past it, entries
// simply count down from their last use.
const maxHolds = 8

func (cs *connState) setReadErr(err error) {
	cs.mu.Lock()
	cs.readErr = err
	cs.mu.Unlock()
}

func (cs *connState) getReadErr() error {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.readErr
}

// setReadDeadline sets nc's read deadline, exactly.
func (cs *connState) setReadDeadline(t time.Time) {
	cs.readDeadline = t
	_ = cs.nc.SetReadDeadline(t)
}

// armRead keeps the read deadline between d and d + d/8 away, moving it
// only when it has come closer than d (so back-to-back requests do not
// move it each time).
func (cs *connState) armRead(now time.Time, d time.Duration) {
	if d <= 0 {
		if !cs.readDeadline.IsZero() {
			cs.setReadDeadline(time.Time{})
		}
		return
	}
	if rem := cs.readDeadline.Sub(now); rem >= d && rem <= d+d/8 {
		return
	}
	cs.setReadDeadline(now.Add(d + d/8))
}

func (cs *connState) handlerStart() {
	cs.handlers.Add(1)
	cs.armed.Store(false)
}

// hold keeps key's entry alive while this connection lives (the seed's
// "while there are connections from that client, the entry is kept").
func (cs *connState) hold(st persist.Store, key persist.Key, now time.Time) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.closed || len(cs.holds) >= maxHolds {
		return
	}
	for _, h := range cs.holds {
		if h.st == st && h.key == key {
			return
		}
	}
	if st.Hold(key, now) {
		cs.holds = append(cs.holds, held{st: st, key: key})
	}
}

// releaseHolds starts the countdown of every entry the connection held.
func (cs *connState) releaseHolds(now time.Time) {
	cs.mu.Lock()
	holds := cs.holds
	cs.holds = nil
	cs.closed = true
	cs.mu.Unlock()
	for _, h := range holds {
		h.st.Release(h.key, now)
	}
}

type connKey struct{}

func connOf(ctx context.Context) *connState {
	cs, _ := ctx.Value(connKey{}).(*connState)
	return cs
}

func stateOfConn(c net.Conn) *connState {
	switch c := c.(type) {
	case *trackedConn:
		return c.cs
	case *tls.Conn:
		if tc, ok := c.NetConn().(*trackedConn); ok {
			return tc.cs
		}
	}
	return nil
}

func (v *virtualServer) connContext(ctx context.Context, c net.Conn) context.Context {
	if cs := stateOfConn(c); cs != nil {
		return context.WithValue(ctx, connKey{}, cs)
	}
	return ctx
}

// connState follows net/http's view of each connection. A connection that
// read a request (StateActive) and closed without a handler running was
// refused by net/http; that gets an access log line like any request.
func (v *virtualServer) connState(c net.Conn, state http.ConnState) {
	cs := stateOfConn(c)
	if cs == nil {
		return
	}
	switch state {
	case http.StateActive:
		if tc, ok := c.(*tls.Conn); ok && tc.ConnectionState().NegotiatedProtocol == "h2" {
			cs.h2.Store(true)
		}
		cs.activeMark = cs.handlers.Load()
		cs.activeSeen = true
	case http.StateIdle:
		cs.activeSeen = false
		cs.setReadErr(nil)
		cs.bytesMark.Store(cs.bytesRead.Load())
		cs.waiting.Store(true)
		cs.serverStatus.Store(0)
		cs.armed.Store(true)
	case http.StateHijacked:
		cs.activeSeen = false
	case http.StateClosed:
		if cs.activeSeen && !cs.h2.Load() && cs.handlers.Load() == cs.activeMark {
			v.logRefused(cs)
		}
		cs.releaseHolds(v.now())
	}
}

// logRefused writes the access log line of a request net/http refused.
// In plain HTTP the status is the one net/http wrote; under TLS it is
// inferred from what was read. 408 (header timeout) and 499 (client went
// away mid-request) are logged, not sent, as nginx does.
func (v *virtualServer) logRefused(cs *connState) {
	status, reason := 400, "bad_request"
	readErr := cs.getReadErr()
	switch s := int(cs.serverStatus.Load()); {
	case v.shuttingDown.Load():
		status, reason = 503, "shutting_down"
	case s == 431:
		status, reason = s, "headers_too_large"
	case readErr != nil && isTimeout(readErr):
		status, reason = 408, "header_timeout"
	case readErr != nil && (errors.Is(readErr, io.EOF) || errors.Is(readErr, syscall.ECONNRESET) || errors.Is(readErr, net.ErrClosed)):
		// net/http may still write a 400 to the closed connection.
		status, reason = statusClientClosed, "client_closed"
	case s == 501:
		status, reason = s, "unsupported_transfer_encoding"
	case s == 505:
		status, reason = s, "unsupported_http_version"
	case s != 0:
		status = s
	case cs.bytesRead.Load()-cs.bytesMark.Load() >= int64(v.maxHeaderBytes):
		status, reason = 431, "headers_too_large"
	}
	now := time.Now()
	e := &accesslog.Entry{
		Time:          v.now(),
		Client:        cs.remote,
		VirtualServer: v.name,
		Status:        status,
		Duration:      now.Sub(time.Unix(0, cs.mark.Load())),
		Decision:      decRejected,
		Reason:        reason,
	}
	if readErr != nil && reason != "client_closed" {
		e.Error = readErr.Error()
	}
	v.access.Log(e)
}

// logRejected writes the access log line of a request the HTTP/1 server
// could not read (status 408 and 499 are logged, not sent).
func (v *virtualServer) logRejected(cs *connState, status int, reason string, err error, started time.Time) {
	if !v.access.Enabled() {
		return
	}
	e := &accesslog.Entry{
		Time:          v.now(),
		Client:        cs.remote,
		VirtualServer: v.name,
		Status:        status,
		Duration:      time.Since(started),
		Decision:      decRejected,
		Reason:        reason,
	}
	if err != nil && reason != "client_closed" {
		e.Error = err.Error()
	}
	v.access.Log(e)
}

// certReloader serves the certificate and key files, reloading them when
// they change (checked at most every reloadEvery), so renewals need no restart.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	modCert time.Time
	modKey  time.Time
	checked time.Time
}

const reloadEvery = 10 * time.Second

func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	cr := &certReloader{certFile: certFile, keyFile: keyFile, log: log}
	if err := cr.load(); err != nil {
		return nil, err
	}
	return cr, nil
}

func (cr *certReloader) load() error {
	ci, err := os.Stat(cr.certFile)
	if err != nil {
		return err
	}
	ki, err := os.Stat(cr.keyFile)
	if err != nil {
		return err
	}
	cert, err := tls.LoadX509KeyPair(cr.certFile, cr.keyFile)
	if err != nil {
		return err
	}
	cr.cert, cr.modCert, cr.modKey = &cert, ci.ModTime(), ki.ModTime()
	return nil
}

func (cr *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	now := time.Now()
	if now.Sub(cr.checked) >= reloadEvery {
		cr.checked = now
		ci, err1 := os.Stat(cr.certFile)
		ki, err2 := os.Stat(cr.keyFile)
		if err1 == nil && err2 == nil && (!ci.ModTime().Equal(cr.modCert) || !ki.ModTime().Equal(cr.modKey)) {
			if err := cr.load(); err != nil {
				// Keep serving the old pair; a half-written renewal must not take the site down.
				cr.log.Warn("certificate reload failed; keeping the previous one", "cert", cr.certFile, "err", err)
			} else {
				cr.log.Info("certificate reloaded", "cert", cr.certFile)
			}
		}
	}
	return cr.cert, nil
}
