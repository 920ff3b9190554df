package l7

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/limpet-lb/limpet/l7/accesslog"
	"github.com/limpet-lb/limpet/l7/persist"
)

// trackedListener wraps every accepted connection in a connState: the
// client's address (parsed once), the member exchange a client that goes
// away must abort, the deadlines set on it, and the persistence entries it
// holds until it closes.
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
	if err != nil && !isTimeout(err) {
		// The client closed or reset the connection: abort the exchange
		// with the member it was waiting for. (A timeout is a deadline of
		// ours, handled where it was set.)
		if uc := c.cs.inflight.Swap(nil); uc != nil {
			uc.abort()
		}
	}
	return n, err
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

	mu     sync.Mutex
	holds  []held
	closed bool
}

type held struct {
	st  persist.Store
	key persist.Key
}

// maxHolds bounds the entries one connection holds; past it, entries
// simply count down from their last use.
const maxHolds = 8

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

// connState follows net/http's view of its (HTTP/2) connections: the
// entries one held start their countdown when it closes.
func (v *virtualServer) connState(c net.Conn, state http.ConnState) {
	if state != http.StateClosed {
		return
	}
	if cs := stateOfConn(c); cs != nil {
		cs.releaseHolds(v.now())
	}
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
