package l7

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/limpet-lb/limpet/l7/accesslog"
	"github.com/limpet-lb/limpet/l7/balance"
	"github.com/limpet-lb/limpet/l7/spec"
)

// defaultRetryAfter is the Retry-After of a 503 when nothing better is known.
const defaultRetryAfter = 10 * time.Second

// virtualServer is one http virtual server: a listener, a pool, a
// persistence method and a reverse proxy.
type virtualServer struct {
	srv        *Server
	name       string
	addr       string
	pool       *balance.Pool
	persist    persister
	serverDown string
	tls        *tls.Config
	log        *slog.Logger
	access     *accesslog.Logger
	now        func() time.Time

	readHeaderTimeout time.Duration
	requestTimeout    time.Duration
	idleTimeout       time.Duration
	writeTimeout      time.Duration
	serverTimeout     time.Duration
	tunnelTimeout     time.Duration
	shutdownTimeout   time.Duration
	maxHeaderBytes    int
	retries           int
	maxFails          int
	failTimeout       time.Duration
	xffAppend         bool

	byAddr map[string]*balance.Member
	dialer net.Dialer
	up     *upstreams   // keep-alive connections to the members
	h1     *h1Server    // HTTP/1.x clients
	http   *http.Server // HTTP/2 clients (over TLS)
	http2  bool

	lnMu     sync.Mutex
	ln       net.Listener
	h2ln     *chanListener
	lnClosed bool

	shuttingDown atomic.Bool
	tunnelsMu    sync.Mutex
	tunnels      map[*hijackedConn]struct{}
}

func newVirtualServer(s *Server, vc *spec.VirtualServer, pool *balance.Pool) (*virtualServer, error) {
	o := &vc.HTTP
	v := &virtualServer{
		srv:               s,
		name:              vc.Name,
		addr:              vc.Listen.String(),
		pool:              pool,
		serverDown:        spec.ServerDownImmediate,
		log:               s.log.With("virtual_server", vc.Name),
		now:               s.now,
		readHeaderTimeout: o.ReadHeaderTimeout,
		requestTimeout:    o.RequestTimeout,
		idleTimeout:       o.IdleTimeout,
		writeTimeout:      o.WriteTimeout,
		serverTimeout:     o.ServerTimeout,
		tunnelTimeout:     o.TunnelTimeout,
		shutdownTimeout:   o.ShutdownTimeout,
		maxHeaderBytes:    o.MaxHeaderBytes,
		retries:           o.Retries,
		maxFails:          o.MaxFails,
		failTimeout:       o.FailTimeout,
		xffAppend:         o.XFFAppend,
		byAddr:            map[string]*balance.Member{},
		tunnels:           map[*hijackedConn]struct{}{},
	}
	for _, m := range pool.Members {
		v.byAddr[m.Addr.String()] = m
	}
	var err error
	if v.access, err = s.sinks.Open(o.AccessLog); err != nil {
		return nil, err
	}
	if o.TLS() {
		if v.tls, err = newTLSConfig(o, s.log); err != nil {
			return nil, err
		}
	}
	if prof := vc.Persistence; prof != nil {
		v.serverDown = prof.ServerDown
		if v.persist, err = newPersister(s, vc, prof, pool); err != nil {
			return nil, fmt.Errorf("persistence profile %q: %w", prof.Name, err)
		}
	}

	v.dialer = net.Dialer{Timeout: o.ConnectTimeout, KeepAlive: 30 * time.Second}
	v.up = newUpstreams(v, pool.Members, o.MaxIdleConnsPerMember, upstreamIdleTimeout)
	v.h1 = newH1Server(v)
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	if v.tls != nil && o.HTTP2 {
		protocols.SetHTTP2(true)
		v.http2 = true
	}
	v.http = &http.Server{
		Handler:           v,
		ReadHeaderTimeout: v.readHeaderTimeout,
		IdleTimeout:       v.idleTimeout,
		MaxHeaderBytes:    v.maxHeaderBytes,
		TLSConfig:         v.tls,
		Protocols:         protocols,
		ConnContext:       v.connContext,
		ConnState:         v.connState,
		ErrorLog:          slog.NewLogLogger(v.log.Handler(), slog.LevelDebug),
	}
	return v, nil
}

// upstreamIdleTimeout is how long a keep-alive connection to a member
// may idle before the proxy closes it (http.Transport's default was 90 s).
const upstreamIdleTimeout = 90 * time.Second

// buffers are the copy buffers of bodies, both ways.
var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (v *virtualServer) listen(ln net.Listener) (net.Listener, error) {
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", v.addr); err != nil {
			return nil, err
		}
	}
	return &trackedListener{Listener: ln, vs: v}, nil
}

// serveListener serves HTTP/1.x itself and, over TLS, hands HTTP/2
// connections to net/http.
func (v *virtualServer) serveListener(ln net.Listener) error {
	v.lnMu.Lock()
	v.ln = ln
	closed := v.lnClosed
	v.lnMu.Unlock()
	if closed {
		ln.Close()
		return nil
	}
	var cfg *tls.Config
	var h2 *chanListener
	if v.tls != nil {
		cfg = v.tls.Clone()
		cfg.NextProtos = []string{"http/1.1"}
		if v.http2 {
			cfg.NextProtos = []string{"h2", "http/1.1"}
		}
		v.http.TLSConfig = cfg
		h2 = newChanListener(ln.Addr())
		v.lnMu.Lock()
		v.h2ln = h2
		v.lnMu.Unlock()
		go func() {
			if err := v.http.Serve(h2); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
				v.log.Warn("HTTP/2 server stopped", "err", err)
			}
		}()
	}
	return v.h1.serve(ln, cfg, h2)
}

// shutdown stops accepting, lets requests in flight and upgraded
// connections finish within the shutdown timeout, then closes what is left.
func (v *virtualServer) shutdown() {
	v.shuttingDown.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), v.shutdownTimeout)
	defer cancel()
	v.h1.closing.Store(true) // before the listener closes: its Accept error is expected
	v.lnMu.Lock()
	v.lnClosed = true
	if v.ln != nil {
		v.ln.Close()
	}
	if v.h2ln != nil {
		v.h2ln.Close()
	}
	v.lnMu.Unlock()
	deadline, _ := ctx.Deadline()
	var wg sync.WaitGroup
	wg.Go(func() {
		if !v.h1.shutdown(deadline) {
			v.log.Warn("shutdown timed out; closing connections", "timeout", v.shutdownTimeout)
		}
	})
	wg.Go(func() {
		if err := v.http.Shutdown(ctx); err != nil {
			v.http.Close()
		}
	})
	wg.Wait()
	if !v.waitTunnels(ctx) {
		v.tunnelsMu.Lock()
		n := len(v.tunnels)
		for c := range v.tunnels {
			c.Conn.Close()
		}
		v.tunnelsMu.Unlock()
		v.log.Warn("shutdown closed upgraded connections", "count", n)
		closed, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		v.waitTunnels(closed)
		cancel()
	}
	v.up.closeIdle()
}

// waitTunnels waits until no upgraded connection is left, or ctx is done.
func (v *virtualServer) waitTunnels(ctx context.Context) bool {
	for {
		v.tunnelsMu.Lock()
		n := len(v.tunnels)
		v.tunnelsMu.Unlock()
		if n == 0 {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ServeHTTP is net/http's way in (HTTP/2).
func (v *virtualServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	v.serve(w, r, connOf(r.Context()))
}

// serve chooses a member and proxies the request to it; cs is the client
// connection's state.
func (v *virtualServer) serve(w http.ResponseWriter, r *http.Request, cs *connState) {
	start := time.Now()
	now := start
	if v.srv.opts.Now != nil {
		now = v.now() // a test's clock
	}
	rs := newReqState()
	rs.vs, rs.start, rs.conn = v, start, cs
	if cs != nil {
		rs.client = cs.client
	} else {
		rs.client, _ = netip.ParseAddrPort(r.RemoteAddr)
	}
	// A request framed by Transfer-Encoding may have carried a
	// Content-Length as well, which net/http drops before we see it: RFC
	// 9112 6.3 asks for the connection to be closed after the response, so
	// that whatever followed the body under the other reading (a smuggled
	// request) is never read as a request.
	rs.closeAfter = len(r.TransferEncoding) > 0
	rw := &rs.rw
	rw.init(w, rs, v, r)
	defer v.finish(rs, rw, r)

	if r.Method == http.MethodConnect {
		rs.decision, rs.reason = decRejected, "connect_method"
		writeStatus(rw, http.StatusMethodNotAllowed, 0)
		return
	}
	v.choose(rs, r, now)
	if rs.member == nil {
		writeStatus(rw, rs.status, rs.retryAfter)
		return
	}
	if v.requestTimeout > 0 && hasBody(r) {
		// The deadline covers reading the body; net/http lifts it once the
		// body is read, so a long response is not cut short.
		rw.setReadDeadline(start.Add(v.requestTimeout))
	}
	if r.ProtoMajor == 1 && cs != nil {
		// One request at a time on the connection: its slot is ours, and
		// its reader aborts what we publish there when the client goes.
		rs.inflight = &cs.inflight
	} else {
		// HTTP/2 streams share the connection: each has its own slot,
		// aborted when its context ends (the client reset the stream).
		slot := new(atomic.Pointer[upstreamConn])
		rs.inflight = slot
		stop := context.AfterFunc(r.Context(), func() {
			if uc := slot.Swap(nil); uc != nil {
				uc.abort()
			}
		})
		defer stop()
	}
	v.forward(rw, r, rs)
}

// choose applies persistence, the server-down policy and the pool
// algorithm. It leaves rs.member set and acquired, or rs.status set to the
// refusal to send.
func (v *virtualServer) choose(rs *reqState, r *http.Request, now time.Time) {
	if v.persist != nil {
		v.persist.route(rs, r, now)
	}
	if pm := rs.persisted; pm != nil {
		switch {
		case pm.Admin() == balance.Disabled:
			// An administrator took the member out: its clients move,
			// whatever the server-down policy.
			rs.reason = "member_disabled"
		case pm.Available(now) && pm.Acquire():
			rs.use(pm)
			rs.decision = decPersisted
		default:
			rs.reason = "member_down"
			if pm.Healthy(now) {
				rs.reason = "member_full"
			}
			if v.serverDown == spec.ServerDownNever {
				rs.decision = decServerDown
				rs.status = http.StatusServiceUnavailable
				rs.retryAfter = v.retryAfter(rs, pm, now)
				return
			}
		}
	}
	if rs.member == nil {
		rs.pick = balance.Pick{Client: rs.client.Addr(), Now: now}
		m := v.pool.Pick(&rs.pick) // in rs: a Pick given to a selector would escape
		if m == nil {
			rs.decision = decNoMember
			rs.status = http.StatusServiceUnavailable
			rs.retryAfter = v.retryAfter(rs, nil, now)
			return
		}
		rs.use(m)
		rs.decision = decBalanced
		if rs.persisted != nil {
			rs.decision = decRebalanced
		}
	}
	if v.persist != nil {
		if err := v.persist.admit(rs, now); err != nil {
			rs.release()
			rs.member = nil
			rs.decision = decTableFull
			rs.reason = err.Error()
			rs.status = http.StatusServiceUnavailable
			rs.retryAfter = v.retryAfter(rs, nil, now)
		}
	}
}

// retryAfter is the Retry-After of a 503: when m's passive mark-down ends,
// or a default, but never past the end of the client's persistence.
func (v *virtualServer) retryAfter(rs *reqState, m *balance.Member, now time.Time) int {
	d := defaultRetryAfter
	if m != nil {
		if until := m.PassiveDownUntil(now); !until.IsZero() {
			d = until.Sub(now)
		}
	}
	if !rs.expires.IsZero() {
		if rem := rs.expires.Sub(now); rem < d {
			d = rem
		}
	}
	secs := int(math.Ceil(d.Seconds()))
	if secs < 1 {
		secs = 1
	}
	return secs
}

// finish runs after every request: it turns a panic into a defined outcome,
// releases the member and writes the access log line.
func (v *virtualServer) finish(rs *reqState, rw *responseWriter, r *http.Request) {
	p := recover()
	abort := rs.abort || p == http.ErrAbortHandler
	if rs.bodyDone != nil {
		// A request body still being written: stop it before rs is reused.
		rs.bodyConn.abort()
		<-rs.bodyDone
		rs.bodyDone = nil
	}
	if rs.inflight != nil {
		rs.inflight.Store(nil)
	}
	if abort {
		// The response was cut short: the member reset or stalled
		// mid-body, or the client went away. Let net/http abort the
		// connection so the client cannot take a truncated body for a
		// whole one.
		clientErr, upstreamErr := rs.errs()
		switch {
		case errors.Is(upstreamErr, errClientGone):
			rs.reason = "client_closed"
			rs.setErr("client went away mid-response")
		case errors.Is(upstreamErr, errServerTimeout):
			rs.reason = "server_timeout"
			rs.setErr("member stalled mid-response: " + upstreamErr.Error())
		case upstreamErr != nil:
			rs.reason = "member_aborted"
			rs.setErr("member failed mid-response: " + upstreamErr.Error())
		case clientErr != nil && isTimeout(clientErr):
			rs.reason = "client_write_timeout"
			rs.setErr("client stopped reading: " + clientErr.Error())
		case clientErr != nil:
			rs.reason = "client_closed"
			rs.setErr("client went away mid-response: " + clientErr.Error())
		default:
			rs.setErr("response aborted")
		}
	} else if p != nil {
		v.log.Error("panic serving request", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		rs.setErr(fmt.Sprintf("internal error: %v", p))
		if rw.wroteHeader || rw.hijacked {
			abort = true
		} else {
			writeStatus(rw, http.StatusBadGateway, 0)
		}
	}
	rs.release()
	if v.access.Enabled() {
		end := time.Now()
		at := end
		if v.srv.opts.Now != nil {
			at = v.now() // a test's clock
		}
		status := rw.status
		if status == 0 {
			status = rs.status
		}
		if rs.status == statusClientClosed {
			status = statusClientClosed
		}
		e := accesslog.Entry{
			Time:          at,
			Client:        r.RemoteAddr,
			VirtualServer: v.name,
			Proto:         r.Proto,
			Method:        r.Method,
			Host:          truncate(r.Host, 256),
			URI:           truncate(r.RequestURI, 2048),
			Status:        status,
			Bytes:         rw.bytes,
			Duration:      end.Sub(rs.start),
			Cookie:        rs.cookieState,
			Key:           rs.keyState,
			Decision:      rs.decision,
			Reason:        rs.reason,
			CookieSet:     rs.cookieSet,
			Retries:       rs.retries,
			Upgrade:       rs.upgrade,
			Error:         rs.errText(),
		}
		if v.persist != nil {
			e.Persistence = v.persist.kind()
		}
		if rs.member != nil {
			e.Member = rs.member.Name
			e.MemberAddr = rs.member.AddrString()
		} else if rs.persisted != nil {
			e.Member = rs.persisted.Name
			e.MemberAddr = rs.persisted.AddrString()
		}
		v.access.Log(&e)
	}
	rs.free()
	if abort {
		panic(http.ErrAbortHandler)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// statusClientClosed is logged (never sent) when the client went away
// before a response, as nginx logs it.
const statusClientClosed = 499

// writeStatus writes a short plain-text error response.
func writeStatus(w http.ResponseWriter, code, retryAfter int) {
	h := w.Header()
	for k := range h {
		delete(h, k)
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(retryAfter))
	}
	w.WriteHeader(code)
	fmt.Fprintf(w, "%d %s\n", code, http.StatusText(code))
}

func newTLSConfig(o *spec.HTTPOptions, log *slog.Logger) (*tls.Config, error) {
	cr, err := newCertReloader(o.TLSCertFile, o.TLSKeyFile, log)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:     o.TLSMinVersion,
		GetCertificate: cr.get,
	}, nil
}
