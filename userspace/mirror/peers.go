package mirror

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

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
	ended        linkTotals    // of the connections that ended
	lastSync     time.Time
	syncs        uint64
}

// linkTotals are a connection's counters, or the sum of several.
type linkTotals struct {
	sent, received, skipped, applyErrs, dropped uint64
	lastRecv                                    time.Time
}

// totals reads the link's counters now.
func (l *link) totals() linkTotals {
	return linkTotals{sent: l.sent.Load(), received: l.received.Load(), skipped: l.skipped.Load(),
		applyErrs: l.applyErrs.Load(), dropped: l.dropped.Load(), lastRecv: l.lastRecvTime()}
}

// plus is t with u added: the counts summed, the later receive time.
func (t linkTotals) plus(u linkTotals) linkTotals {
	t.sent += u.sent
	t.received += u.received
	t.skipped += u.skipped
	t.applyErrs += u.applyErrs
	t.dropped += u.dropped
	if u.lastRecv.After(t.lastRecv) {
		t.lastRecv = u.lastRecv
	}
	return t
}

func (r *row) notify() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// errDuplicate: the connection lost to another one with the same peer.
var errDuplicate = errors.New("duplicate connection: another connection to the same node is kept")

// setRowState changes a row's state when no connection owns it. n.mu is held.
func (n *Node) setRowState(r *row, s State) {
	if r.link == nil && r.state != s {
		r.state, r.since = s, time.Now()
	}
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
	r.ended = r.ended.plus(l.totals())
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

// Status describes every peer, configured ones first, in config order.
func (n *Node) Status() []PeerStatus {
	n.mu.Lock()
	defer n.mu.Unlock()
	now := time.Now()
	out := make([]PeerStatus, 0, len(n.rows))
	for _, r := range n.rows {
		t := r.ended
		if r.link != nil {
			t = t.plus(r.link.totals())
		}
		s := PeerStatus{
			Addr: r.addr, Configured: r.configured, State: r.state, Since: r.since,
			Sent: t.sent, Received: t.received, Skipped: t.skipped, ApplyErrors: t.applyErrs, Dropped: t.dropped,
			LastReceived: t.lastRecv, LastError: r.lastErr, LastSync: r.lastSync, Syncs: r.syncs,
		}
		if l := r.link; l != nil {
			s.Inbound = !l.outbound
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
