package mirror

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Local is the node's own table set; the daemon implements it.
type Local interface {
	// Snapshot returns every entry of the mirrored tables (entries of
	// tables out of scope are filtered out), as upserts with their
	// timestamps. It is called once per connection, when the connection is
	// established, and again after the connection's queue overflowed; it
	// must be safe for concurrent use.
	Snapshot(ctx context.Context) ([]Entry, error)
	// Apply installs an entry received from a peer; the table is in scope.
	// It is called from one goroutine per connection, so it must be safe
	// for concurrent use. It resolves conflicts (Newer). An error is
	// counted and logged, and the connection goes on.
	//
	// Nodes converge only if Apply keeps the newest version it has seen:
	// versions of one entry arriving on two connections at once must be
	// compared and written one after the other, and the version it holds
	// must read as exactly the times it was made with (a version installed
	// from a peer reads back with the Updated and Created the peer sent),
	// or two nodes may order two close versions differently for good.
	Apply(Entry) error
}

// Node mirrors entries to and from its peers.
type Node struct {
	cfg      Config
	local    Local
	log      *slog.Logger
	instance uint64
	scope    atomic.Pointer[func(string) bool]
	links    atomic.Pointer[[]*link] // registered links, copy on write, for Publish
	invalid  atomic.Uint64

	mu      sync.Mutex
	rows    []*row
	ln      net.Listener
	running atomic.Bool // Run runs once
	started time.Time
}

// New checks cfg and returns a node; Run starts it.
func New(cfg Config, local Local, log *slog.Logger) (*Node, error) {
	cfg.Peers = slices.Clone(cfg.Peers)
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("mirror: %w", err)
	}
	if local == nil {
		return nil, errors.New("mirror: Local is required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, local: local, log: log.With("component", "mirror"), instance: binary.BigEndian.Uint64(id[:]), started: time.Now()}
	n.SetScope(cfg.Scope)
	n.links.Store(new([]*link))
	now := time.Now()
	for _, p := range cfg.Peers {
		n.rows = append(n.rows, &row{addr: p, configured: true, state: StateConnecting, since: now, changed: make(chan struct{})})
	}
	return n, nil
}

// SetScope replaces the scope: f reports whether a table is mirrored (nil:
// every table). Entries of other tables are neither published, synced nor
// applied.
func (n *Node) SetScope(f func(table string) bool) { n.scope.Store(&f) }

func (n *Node) inScope(table string) bool {
	f := *n.scope.Load()
	return f == nil || f(table)
}

// Listen binds the listener now, so a busy port fails before Run, and
// returns its address. Run calls it when it has not been called.
func (n *Node) Listen() (net.Addr, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cfg.Listen == "" {
		return nil, errors.New("mirror: no listen address configured")
	}
	if n.ln != nil {
		return n.ln.Addr(), nil
	}
	ln, err := net.Listen("tcp", n.cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("mirror: %w", err)
	}
	n.ln = ln
	if n.cfg.Advertise == "" {
		n.cfg.Advertise = ln.Addr().String()
	}
	return ln.Addr(), nil
}

// Run serves until ctx ends: it accepts peers, dials the configured ones
// (with exponential backoff, forever), bulk syncs every new connection and
// streams published entries. It returns nil when ctx ends, or an error when
// it cannot listen. Run may be called once.
func (n *Node) Run(ctx context.Context) error {
	if !n.running.CompareAndSwap(false, true) {
		return errors.New("mirror: Run called twice")
	}
	var ln net.Listener
	if n.cfg.Listen != "" {
		if _, err := n.Listen(); err != nil {
			return err
		}
		n.mu.Lock()
		ln = n.ln
		n.mu.Unlock()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	if ln != nil {
		n.log.Info("mirror: listening", "listen", ln.Addr().String(), "mode", n.cfg.Mode.String(), "auth", n.authName())
		wg.Go(func() { n.acceptLoop(ctx, ln, &wg) })
		stop := context.AfterFunc(ctx, func() { ln.Close() })
		defer stop()
	}
	n.mu.Lock()
	for _, r := range n.rows {
		if r.configured {
			wg.Go(func() { n.dialLoop(ctx, r) })
		}
	}
	n.mu.Unlock()
	<-ctx.Done()
	wg.Wait()
	return nil
}

func (n *Node) authName() string {
	if n.cfg.TLS != nil {
		return "tls"
	}
	return "psk"
}

func (n *Node) acceptLoop(ctx context.Context, ln net.Listener, wg *sync.WaitGroup) {
	pending := make(chan struct{}, n.cfg.MaxPendingHandshakes)
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			n.log.Warn("mirror: accept failed", "error", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		select {
		case pending <- struct{}{}:
		default:
			n.log.Warn("mirror: refused connection", "remote", conn.RemoteAddr().String(), "reason", "too many connections are authenticating")
			conn.Close()
			continue
		}
		wg.Go(func() {
			var once sync.Once
			release := func() { once.Do(func() { <-pending }) }
			defer release()
			n.serveConn(ctx, conn, nil, release)
		})
	}
}

func (n *Node) dialLoop(ctx context.Context, r *row) {
	backoff := n.cfg.ReconnectMin
	for ctx.Err() == nil {
		n.mu.Lock()
		if r.link != nil {
			ch := r.changed
			n.mu.Unlock()
			select {
			case <-ch:
			case <-ctx.Done():
				return
			}
			backoff = n.cfg.ReconnectMin
			continue
		}
		n.setRowState(r, StateConnecting)
		n.mu.Unlock()
		d := net.Dialer{Timeout: n.cfg.HandshakeTimeout}
		conn, err := d.DialContext(ctx, "tcp", r.addr)
		dialFailed := err != nil
		if err == nil {
			var registered bool
			registered, err = n.serveConn(ctx, conn, r, nil)
			if registered {
				backoff = n.cfg.ReconnectMin
			}
		} else {
			err = fmt.Errorf("dial: %w", err)
		}
		if ctx.Err() != nil {
			return
		}
		n.mu.Lock()
		if r.link == nil && err != nil {
			// serveConn logged its own failures.
			if dialFailed && (r.lastErr != err.Error() || r.state != StateDown) {
				n.log.Warn("mirror: cannot reach peer", "peer", r.addr, "error", err, "retry_in", backoff.String())
			}
			r.state, r.since, r.lastErr = StateDown, time.Now(), err.Error()
		}
		ch := r.changed
		n.mu.Unlock()
		// Jitter: wait between half and all of the backoff; an inbound
		// connection from the peer ends the wait.
		wait := backoff/2 + randDuration(backoff/2)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-ch:
		case <-t.C:
		}
		t.Stop()
		backoff = min(2*backoff, n.cfg.ReconnectMax)
	}
}

func randDuration(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	var b [8]byte
	rand.Read(b[:])
	return time.Duration(binary.BigEndian.Uint64(b[:]) % uint64(d))
}

// serveConn authenticates conn and, when it is kept, serves it until it
// ends. dialRow is the configured peer dialed, nil for an inbound
// connection; release is called once the handshake is over. It reports
// whether the connection was registered (authenticated and kept).
func (n *Node) serveConn(ctx context.Context, conn net.Conn, dialRow *row, release func()) (bool, error) {
	defer conn.Close()
	remoteAddr := conn.RemoteAddr().String()
	outbound := dialRow != nil
	if outbound {
		n.mu.Lock()
		n.setRowState(dialRow, StateAuthenticating)
		n.mu.Unlock()
	}
	fc, remote, err := n.handshake(ctx, conn, outbound)
	if release != nil {
		release()
	}
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		if outbound {
			n.log.Warn("mirror: authentication with peer failed", "peer", dialRow.addr, "remote", remoteAddr, "reason", err.Error())
		} else {
			n.log.Warn("mirror: refused connection", "remote", remoteAddr, "reason", err.Error())
		}
		return false, fmt.Errorf("authentication: %w", err)
	}
	refuse := func(reason string) (bool, error) {
		fc.write(encodeGoodbye(nil, reason))
		conn.SetWriteDeadline(time.Now().Add(time.Second))
		fc.flush()
		if outbound {
			n.log.Warn("mirror: closing connection to peer", "peer", dialRow.addr, "remote", remoteAddr, "reason", reason)
		} else {
			n.log.Warn("mirror: refused connection", "remote", remoteAddr, "reason", reason)
		}
		return false, errors.New(reason)
	}
	switch {
	case remote.instance == n.instance:
		return refuse("connected to itself: a peer address is this node's own")
	case remote.mode != n.cfg.Mode:
		return refuse(fmt.Sprintf("mode mismatch: the peer runs %s, this node %s", remote.mode, n.cfg.Mode))
	}
	l := &link{
		n: n, conn: conn, fc: fc, outbound: outbound, remote: remote, remoteAddr: remoteAddr,
		q: newQueue(n.cfg.QueueSize), wake: make(chan struct{}, 1), done: make(chan struct{}),
	}
	if err := n.register(l, dialRow); err != nil {
		if err == errDuplicate {
			fc.write(encodeGoodbye(nil, "duplicate connection"))
			conn.SetWriteDeadline(time.Now().Add(time.Second))
			fc.flush()
		}
		return false, err
	}
	err = l.run(ctx)
	n.unregister(l, err)
	return true, err
}

func (n *Node) handshake(ctx context.Context, conn net.Conn, dialer bool) (*frameConn, hello, error) {
	conn.SetDeadline(time.Now().Add(n.cfg.HandshakeTimeout))
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	n.mu.Lock()
	adv := n.cfg.Advertise
	n.mu.Unlock()
	auth := byte(authPSK)
	if n.cfg.TLS != nil {
		auth = authTLS
	}
	h, err := newHello(auth, n.cfg.Mode, n.instance, adv)
	if err != nil {
		return nil, hello{}, err
	}
	var fc *frameConn
	var remote hello
	if n.cfg.TLS != nil {
		hctx, cancel := context.WithTimeout(ctx, n.cfg.HandshakeTimeout)
		defer cancel()
		remote, fc, err = handshakeTLS(hctx, conn, n.cfg.TLS, h, dialer)
	} else {
		remote, fc, err = handshakePSK(conn, bufio.NewReaderSize(conn, 64<<10), n.cfg.PSK, h, dialer)
	}
	if err != nil {
		return nil, remote, err
	}
	conn.SetDeadline(time.Time{})
	return fc, remote, nil
}

// Publish queues e for every connected peer and returns at once: it never
// blocks on the network. A peer whose queue is full drops e and counts it
// (and is bulk synced again once its queue drains). Entries of tables out
// of scope, and invalid entries, are ignored. While a peer is not
// connected nothing is queued for it: the bulk sync at its next connection
// carries the whole table.
func (n *Node) Publish(e Entry) {
	links := *n.links.Load()
	if len(links) == 0 || !n.inScope(e.Table) {
		return
	}
	if err := e.Validate(); err != nil {
		if n.invalid.Add(1) == 1 {
			n.log.Warn("mirror: invalid entry not published (further ones are counted only)", "error", err)
		}
		return
	}
	now := time.Now()
	for _, l := range links {
		if l.q.push(&e, now) {
			select {
			case l.wake <- struct{}{}:
			default:
			}
		} else {
			l.dropped.Add(1)
			l.resync.Store(true)
		}
	}
}

// Started is when New made the node.
func (n *Node) Started() time.Time { return n.started }

// InvalidPublished counts the entries Publish ignored because they were
// invalid.
func (n *Node) InvalidPublished() uint64 { return n.invalid.Load() }
