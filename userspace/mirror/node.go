package mirror

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Mode is active_standby or active_active. Both stream entries both ways;
// see the package documentation for what differs.
type Mode uint8

// Modes.
const (
	ActiveStandby Mode = 1
	ActiveActive  Mode = 2
)

func (m Mode) String() string {
	switch m {
	case ActiveStandby:
		return "active_standby"
	case ActiveActive:
		return "active_active"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// ParseMode parses "active_standby" or "active_active".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "active_standby":
		return ActiveStandby, nil
	case "active_active":
		return ActiveActive, nil
	}
	return 0, fmt.Errorf("mode %q must be active_standby or active_active", s)
}

// TLSAuth is mutual TLS with a shared CA: the node presents Certificate as
// server and client, and accepts peers whose certificate CA signed.
type TLSAuth struct {
	CA          *x509.CertPool
	Certificate tls.Certificate
}

// Config configures a Node. Exactly one of PSK and TLS is set.
type Config struct {
	// Listen is the address to accept peers on ("10.0.0.1:7946"); empty
	// means the node only dials.
	Listen string
	// Advertise is the address peers list this node under; empty means
	// the address the listener is bound to.
	Advertise string
	// Peers are the host:port addresses to dial.
	Peers []string
	// Mode must be the same on every peer.
	Mode Mode
	// PSK is the pre-shared key, at least 32 bytes.
	PSK []byte
	// TLS is mutual TLS.
	TLS *TLSAuth
	// QueueSize bounds each connection's queue (distinct keys); default 65536.
	QueueSize int
	// ReconnectMin and ReconnectMax bound the exponential backoff between
	// dials of a peer; defaults 500ms and 30s.
	ReconnectMin, ReconnectMax time.Duration
	// HeartbeatInterval is how often an idle connection sends a heartbeat
	// (default 1s); a connection that receives nothing for HeartbeatTimeout
	// (default 5s), or cannot send for as long, is closed.
	HeartbeatInterval, HeartbeatTimeout time.Duration
	// HandshakeTimeout bounds authentication; default 5s.
	HandshakeTimeout time.Duration
	// ResyncInterval is the least time between two bulk syncs of one
	// connection that dropped entries (its queue overflowed); default 30s.
	ResyncInterval time.Duration
	// MaxPendingHandshakes bounds the inbound connections being
	// authenticated at once; more are closed. Default 64.
	MaxPendingHandshakes int
	// Scope reports whether a table is mirrored; nil mirrors every table.
	// SetScope changes it at run time.
	Scope func(table string) bool
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.QueueSize == 0 {
		c.QueueSize = 65536
	}
	def(&c.ReconnectMin, 500*time.Millisecond)
	def(&c.ReconnectMax, max(30*time.Second, c.ReconnectMin))
	def(&c.HeartbeatInterval, time.Second)
	def(&c.HeartbeatTimeout, max(5*time.Second, 3*c.HeartbeatInterval))
	def(&c.HandshakeTimeout, 5*time.Second)
	def(&c.ResyncInterval, 30*time.Second)
	if c.MaxPendingHandshakes == 0 {
		c.MaxPendingHandshakes = 64
	}
}

func (c *Config) validate() error {
	switch {
	case c.Listen == "" && len(c.Peers) == 0:
		return errors.New("set Listen, Peers or both")
	case c.Mode != ActiveStandby && c.Mode != ActiveActive:
		return fmt.Errorf("unknown mode %d", uint8(c.Mode))
	case (c.PSK == nil) == (c.TLS == nil):
		return errors.New("set exactly one of PSK and TLS")
	case c.PSK != nil && len(c.PSK) < 32:
		return fmt.Errorf("the pre-shared key has %d bytes; at least 32 are required", len(c.PSK))
	case c.QueueSize < 1:
		return fmt.Errorf("queue size %d is not positive", c.QueueSize)
	case c.ReconnectMin <= 0 || c.ReconnectMax < c.ReconnectMin:
		return errors.New("reconnect backoff needs 0 < min <= max")
	case c.HeartbeatInterval <= 0 || c.HeartbeatTimeout < 2*c.HeartbeatInterval:
		return errors.New("heartbeat timeout must be at least twice the interval")
	case len(c.Advertise) > maxAdvertise:
		return fmt.Errorf("advertised address is longer than %d bytes", maxAdvertise)
	}
	if c.TLS != nil && (c.TLS.CA == nil || len(c.TLS.Certificate.Certificate) == 0) {
		return errors.New("tls needs a CA pool and a certificate")
	}
	seen := map[string]bool{}
	for _, p := range c.Peers {
		if _, _, err := net.SplitHostPort(p); err != nil {
			return fmt.Errorf("peer %q: %v", p, err)
		}
		if seen[p] {
			return fmt.Errorf("peer %q is listed twice", p)
		}
		seen[p] = true
	}
	return nil
}

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

// State of a peer.
type State string

// Peer states.
const (
	StateConnecting     State = "connecting"     // dialing
	StateAuthenticating State = "authenticating" // TCP is up, proving keys or certificates
	StateSyncing        State = "syncing"        // authenticated, bulk syncs under way
	StateUp             State = "up"             // both bulk syncs done, streaming
	StateDown           State = "down"           // no connection; see LastError
)

// PeerStatus describes one peer: one of the configured peers, or a node
// that connected without being in the peers list (while it is connected).
type PeerStatus struct {
	// Addr is the configured address, or the remote address of a peer
	// that is not configured.
	Addr       string
	Configured bool
	// Inbound is true when the current connection was dialed by the peer.
	Inbound bool
	State   State
	// Since is when State was entered.
	Since time.Time
	// Sent and Received count entries (bulk syncs included) over every
	// connection to the peer since the node started. Skipped counts
	// received entries of tables out of scope; ApplyErrors those Local
	// refused. Dropped counts entries not queued because the queue was full.
	Sent, Received, Skipped, ApplyErrors, Dropped uint64
	// QueueLen is the number of entries waiting to be sent.
	QueueLen int
	// Lag is the age of the oldest queued entry (0 when the queue is empty).
	Lag time.Duration
	// LastReceived is when the last frame arrived from the peer.
	LastReceived time.Time
	// LastError is why the last connection ended or failed.
	LastError string
	// ClockOffset is how far the peer's clock is ahead of this node's, as
	// its last heartbeat showed (network delay included); a large offset
	// misleads newer-wins.
	ClockOffset time.Duration
	// LastSync is when the peer's last bulk sync to this node finished
	// (zero: none since this node started); Syncs counts them.
	LastSync time.Time
	Syncs    uint64
}

// row is one line of Status: a configured peer, or a connected peer that is
// not configured. Its fields are guarded by Node.mu.
type row struct {
	addr         string
	configured   bool
	state        State
	since        time.Time
	lastErr      string
	lastInstance uint64 // instance of the node last reached through this row
	link         *link
	changed      chan struct{} // closed and replaced whenever link changes
	// totals of the connections that ended
	sent, received, skipped, applyErrs, dropped uint64
	lastRecv                                    time.Time
	lastSync                                    time.Time
	syncs                                       uint64
}

func (r *row) notify() {
	close(r.changed)
	r.changed = make(chan struct{})
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
	running bool
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
	n.mu.Lock()
	if n.running {
		n.mu.Unlock()
		return errors.New("mirror: Run called twice")
	}
	n.running = true
	n.mu.Unlock()
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

// errDuplicate: the connection lost to another one with the same peer.
var errDuplicate = errors.New("duplicate connection: another connection to the same node is kept")

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

// setRowState changes a row's state when no connection owns it. n.mu is held.
func (n *Node) setRowState(r *row, s State) {
	if r.link == nil && r.state != s {
		r.state, r.since = s, time.Now()
	}
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

// matchRow finds the configured row an inbound connection comes from: the
// row that last reached the same node instance, or the row whose address
// is the one the peer advertises (a wildcard advertised address matches
// the connection's source address and the advertised port). n.mu is held.
func (n *Node) matchRow(l *link) *row {
	for _, r := range n.rows {
		if r.configured && r.lastInstance == l.remote.instance {
			return r
		}
	}
	adv := l.remote.advertise
	if adv == "" {
		return nil
	}
	for _, r := range n.rows {
		if r.configured && r.addr == adv {
			return r
		}
	}
	ap, err := netip.ParseAddrPort(adv)
	if err != nil {
		return nil
	}
	src, err := netip.ParseAddrPort(l.remoteAddr)
	if err != nil {
		return nil
	}
	for _, r := range n.rows {
		if !r.configured {
			continue
		}
		pa, err := netip.ParseAddrPort(r.addr)
		if err != nil || pa.Port() != ap.Port() {
			continue
		}
		if ap.Addr().Unmap() == pa.Addr().Unmap() || (ap.Addr().IsUnspecified() && src.Addr().Unmap() == pa.Addr().Unmap()) {
			return r
		}
	}
	return nil
}

// register makes l the connection of its peer's row, or refuses it with
// errDuplicate when the peer already has a connection that wins.
//
// Two nodes that list each other may dial each other at the same time;
// both then keep the connection dialed by the node with the lower instance
// number, so they agree without talking. A new connection from the same
// node in the same direction replaces the old one (the peer saw the old
// one die first), and so does one from a new instance of the node (it
// restarted).
func (n *Node) register(l *link, dialRow *row) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	var cur *row // a row whose live connection reaches the same instance
	for _, r := range n.rows {
		if r.link != nil && !r.link.replaced && r.link.remote.instance == l.remote.instance {
			cur = r
			break
		}
	}
	home := dialRow
	if home == nil {
		home = n.matchRow(l)
	}
	if home == nil {
		home = cur
	}
	if cur != nil {
		old := cur.link
		if cur != home && cur.configured && home != nil && home.configured {
			return fmt.Errorf("%w (peers %s and %s are the same node)", errDuplicate, cur.addr, home.addr)
		}
		newWins := old.outbound == l.outbound || l.outbound == (n.instance < l.remote.instance)
		if !newWins {
			if home != nil && home != cur && !cur.configured {
				// Move the kept connection to the configured row.
				n.removeRow(cur)
				n.attach(home, old)
				home.state, home.since, home.lastErr = cur.state, cur.since, ""
			}
			return errDuplicate
		}
		old.replaced = true
		old.close(errors.New("replaced by a newer connection from the same node"))
	}
	if home == nil {
		home = &row{addr: l.remoteAddr, changed: make(chan struct{})}
		n.rows = append(n.rows, home)
	}
	if home.link != nil && home.link != l && !home.link.replaced {
		// The row's connection reaches an older instance: it restarted.
		home.link.replaced = true
		home.link.close(errors.New("the peer restarted: replaced by its new connection"))
	}
	n.attach(home, l)
	home.state, home.since, home.lastErr = StateSyncing, time.Now(), ""
	links := append(slices.Clone(*n.links.Load()), l)
	n.links.Store(&links)
	dir := "outbound"
	if !l.outbound {
		dir = "inbound"
	}
	n.log.Info("mirror: peer connected", "peer", home.addr, "remote", l.remoteAddr, "direction", dir, "advertised", l.remote.advertise)
	return nil
}

// attach moves l to row r. n.mu is held.
func (n *Node) attach(r *row, l *link) {
	if l.row != nil && l.row != r && l.row.link == l {
		l.row.link = nil
	}
	l.row = r
	r.link = l
	r.lastInstance = l.remote.instance
	r.notify()
}

// removeRow drops a row that is not configured. n.mu is held.
func (n *Node) removeRow(r *row) {
	if r.configured {
		return
	}
	n.rows = slices.DeleteFunc(n.rows, func(x *row) bool { return x == r })
}

func (n *Node) unregister(l *link, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	links := slices.DeleteFunc(slices.Clone(*n.links.Load()), func(x *link) bool { return x == l })
	n.links.Store(&links)
	r := l.row
	r.sent += l.sent.Load()
	r.received += l.received.Load()
	r.skipped += l.skipped.Load()
	r.applyErrs += l.applyErrs.Load()
	r.dropped += l.dropped.Load()
	if t := l.lastRecvTime(); t.After(r.lastRecv) {
		r.lastRecv = t
	}
	if r.link != l {
		return
	}
	r.link = nil
	reason := "closed"
	if err != nil {
		reason = err.Error()
	}
	r.state, r.since, r.lastErr = StateDown, time.Now(), reason
	r.notify()
	var bye *goodbyeError
	switch {
	case errors.Is(err, context.Canceled):
		n.log.Info("mirror: connection closed", "peer", r.addr, "remote", l.remoteAddr, "reason", "shutting down")
	case errors.As(err, &bye) && bye.benign():
		n.log.Info("mirror: connection closed", "peer", r.addr, "remote", l.remoteAddr, "reason", reason)
	default:
		n.log.Warn("mirror: connection closed", "peer", r.addr, "remote", l.remoteAddr, "reason", reason)
	}
	if !r.configured {
		n.removeRow(r)
	}
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

// Status describes every peer, configured ones first, in config order.
func (n *Node) Status() []PeerStatus {
	n.mu.Lock()
	defer n.mu.Unlock()
	now := time.Now()
	out := make([]PeerStatus, 0, len(n.rows))
	for _, r := range n.rows {
		s := PeerStatus{
			Addr: r.addr, Configured: r.configured, State: r.state, Since: r.since,
			Sent: r.sent, Received: r.received, Skipped: r.skipped, ApplyErrors: r.applyErrs, Dropped: r.dropped,
			LastReceived: r.lastRecv, LastError: r.lastErr, LastSync: r.lastSync, Syncs: r.syncs,
		}
		if l := r.link; l != nil {
			s.Inbound = !l.outbound
			s.Sent += l.sent.Load()
			s.Received += l.received.Load()
			s.Skipped += l.skipped.Load()
			s.ApplyErrors += l.applyErrs.Load()
			s.Dropped += l.dropped.Load()
			if t := l.lastRecvTime(); t.After(s.LastReceived) {
				s.LastReceived = t
			}
			s.ClockOffset = time.Duration(l.offset.Load())
			var oldest time.Time
			s.QueueLen, oldest = l.q.stats()
			if !oldest.IsZero() {
				s.Lag = now.Sub(oldest)
			}
		}
		out = append(out, s)
	}
	return out
}

// Started is when New made the node.
func (n *Node) Started() time.Time { return n.started }

// InvalidPublished counts the entries Publish ignored because they were
// invalid.
func (n *Node) InvalidPublished() uint64 { return n.invalid.Load() }
