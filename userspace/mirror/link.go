package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// link is one authenticated connection to a peer: its send queue, a sender
// (the caller of run) and a reader goroutine.
type link struct {
	n          *Node
	conn       net.Conn
	fc         *frameConn
	outbound   bool
	remote     hello
	remoteAddr string
	q          *queue
	wake       chan struct{} // capacity 1: entries were queued
	done       chan struct{} // closed by close
	closeOnce  sync.Once
	err        error // why the link closed; set once, before done closes

	// guarded by Node.mu
	row                *row
	replaced           bool
	synced, peerSynced bool

	sent, received, skipped, applyErrs, dropped atomic.Uint64
	lastRecv                                    atomic.Int64 // Unix nanoseconds
	lastApplyLog                                atomic.Int64
	resync                                      atomic.Bool  // the queue overflowed: bulk sync again
	offset                                      atomic.Int64 // the peer's clock minus ours, from heartbeats
	offsetLogged                                atomic.Bool
}

// close ends the link; the first error given is the link's.
func (l *link) close(err error) {
	l.closeOnce.Do(func() {
		l.err = err
		close(l.done)
		l.conn.Close()
	})
}

func (l *link) lastRecvTime() time.Time {
	if v := l.lastRecv.Load(); v != 0 {
		return time.Unix(0, v)
	}
	return time.Time{}
}

// goodbyeError is the reason a peer gave for closing the connection.
type goodbyeError struct{ reason string }

func (e *goodbyeError) Error() string { return "the peer closed the connection: " + e.reason }

// benign reports a goodbye that is part of normal operation.
func (e *goodbyeError) benign() bool {
	return e.reason == reasonShutdown || e.reason == reasonDuplicate
}

const (
	reasonShutdown  = "shutting down"
	reasonDuplicate = "duplicate connection"
)

// run serves the link until it fails or ctx ends, and returns why it ended.
func (l *link) run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		// Unblock a write stuck on a peer that does not read; the sender
		// then says goodbye if it can.
		l.conn.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
	})
	defer stop()
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		l.close(l.readLoop(ctx))
	}()
	l.close(l.sendLoop(ctx))
	<-readerDone
	return l.err
}

// sendLoop bulk syncs, then streams the queue and heartbeats.
func (l *link) sendLoop(ctx context.Context) error {
	n := l.n
	lastWrite := time.Now()
	// The buffered writer may send on any write, so the deadline is set
	// before writing, not only before flushing.
	deadline := func() { l.conn.SetWriteDeadline(time.Now().Add(n.cfg.HeartbeatTimeout)) }
	flush := func() error {
		deadline()
		if err := l.fc.flush(); err != nil {
			return l.sendErr(ctx, err)
		}
		lastWrite = time.Now()
		return nil
	}
	if err := l.bulkSync(ctx, flush); err != nil {
		return err
	}
	lastSync := time.Now()
	hb := time.NewTicker(n.cfg.HeartbeatInterval)
	defer hb.Stop()
	batch := make([]Entry, 0, 512)
	var ef entriesFrame
	for {
		select {
		case <-ctx.Done():
			l.fc.write(encodeGoodbye(nil, reasonShutdown))
			l.fc.flush()
			return ctx.Err()
		case <-l.done:
			return nil
		case <-l.wake:
		case <-hb.C:
			if time.Since(lastWrite) >= n.cfg.HeartbeatInterval/2 {
				deadline()
				if err := l.fc.write(encodeHeartbeat(nil, time.Now())); err != nil {
					return l.sendErr(ctx, err)
				}
				if err := flush(); err != nil {
					return err
				}
			}
		}
		for ctx.Err() == nil {
			batch = l.q.pop(batch[:0], cap(batch))
			if len(batch) == 0 {
				break
			}
			deadline()
			ef.reset()
			count := 0
			for i := range batch {
				if !n.inScope(batch[i].Table) {
					continue
				}
				ef.add(&batch[i])
				count++
				if ef.full() {
					if err := l.fc.write(ef.buf); err != nil {
						return l.sendErr(ctx, err)
					}
					ef.reset()
				}
			}
			if ef.n > 0 {
				if err := l.fc.write(ef.buf); err != nil {
					return l.sendErr(ctx, err)
				}
			}
			if err := flush(); err != nil {
				return err
			}
			l.sent.Add(uint64(count))
		}
		if l.resync.Load() && time.Since(lastSync) >= n.cfg.ResyncInterval {
			l.resync.Store(false)
			n.log.Warn("mirror: the peer's queue overflowed: bulk syncing it again", "peer", l.rowAddr(), "dropped", l.dropped.Load())
			if err := l.bulkSync(ctx, flush); err != nil {
				return err
			}
			lastSync = time.Now()
		}
	}
}

func (l *link) sendErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	select {
	case <-l.done:
		return l.err
	default:
	}
	if isTimeout(err) {
		return fmt.Errorf("the peer has not read what was sent for %s", l.n.cfg.HeartbeatTimeout)
	}
	return fmt.Errorf("send: %w", err)
}

func (l *link) rowAddr() string {
	l.n.mu.Lock()
	defer l.n.mu.Unlock()
	return l.row.addr
}

// bulkSync sends Local's snapshot: SyncBegin, entries, SyncEnd(count).
func (l *link) bulkSync(ctx context.Context, flush func() error) error {
	n := l.n
	snap, err := n.local.Snapshot(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("snapshot of the local tables: %w", err)
	}
	write := func(p []byte) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// Set the deadline per frame: the buffered writer may flush on any write.
		l.conn.SetWriteDeadline(time.Now().Add(n.cfg.HeartbeatTimeout))
		if err := l.fc.write(p); err != nil {
			return l.sendErr(ctx, err)
		}
		return nil
	}
	if err := write(encodeSyncBegin(nil)); err != nil {
		return err
	}
	var ef entriesFrame
	ef.reset()
	var count uint64
	for i := range snap {
		e := &snap[i]
		if e.Op == 0 {
			e.Op = Upsert
		}
		if !n.inScope(e.Table) {
			continue
		}
		if err := e.Validate(); err != nil {
			if n.invalid.Add(1) == 1 {
				n.log.Warn("mirror: invalid entry in the snapshot not sent (further ones are counted only)", "error", err)
			}
			continue
		}
		ef.add(e)
		count++
		if ef.full() {
			if err := write(ef.buf); err != nil {
				return err
			}
			l.sent.Add(uint64(ef.n))
			ef.reset()
		}
	}
	if ef.n > 0 {
		if err := write(ef.buf); err != nil {
			return err
		}
		l.sent.Add(uint64(ef.n))
	}
	if err := write(encodeSyncEnd(nil, count)); err != nil {
		return err
	}
	if err := flush(); err != nil {
		return err
	}
	n.mu.Lock()
	l.synced = true
	l.maybeUp()
	n.mu.Unlock()
	return nil
}

// maybeUp marks the row up once both bulk syncs are done. n.mu is held.
func (l *link) maybeUp() {
	r := l.row
	if l.synced && l.peerSynced && r.link == l && r.state != StateUp {
		r.state, r.since = StateUp, time.Now()
	}
}

// readLoop reads frames until the connection fails, and applies entries.
func (l *link) readLoop(ctx context.Context) error {
	n := l.n
	var scratch []Entry
	for {
		l.conn.SetReadDeadline(time.Now().Add(n.cfg.HeartbeatTimeout))
		p, err := l.fc.read()
		if err != nil {
			select {
			case <-l.done:
				return nil
			default:
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var fe *frameError
			switch {
			case errors.As(err, &fe):
				return err
			case isTimeout(err):
				return fmt.Errorf("nothing received from the peer for %s (heartbeat timeout)", n.cfg.HeartbeatTimeout)
			case errors.Is(err, io.EOF):
				return errors.New("the peer closed the connection")
			}
			return fmt.Errorf("receive: %w", err)
		}
		m, err := decodeMessage(p, scratch[:0])
		if err != nil {
			return err
		}
		now := time.Now()
		l.lastRecv.Store(now.UnixNano())
		switch m.typ {
		case msgEntries:
			scratch = m.entries
			for i := range m.entries {
				l.apply(m.entries[i], now)
			}
		case msgSyncEnd:
			n.mu.Lock()
			l.peerSynced = true
			l.row.lastSync = now
			l.row.syncs++
			l.maybeUp()
			addr := l.row.addr
			n.mu.Unlock()
			n.log.Info("mirror: bulk sync received", "peer", addr, "entries", m.count)
		case msgHeartbeat:
			l.clockOffset(m.at, now)
		case msgGoodbye:
			return &goodbyeError{m.reason}
		}
	}
}

// maxClockOffset is the clock difference from a peer that is logged:
// Newer compares wall-clock times set on different nodes.
const maxClockOffset = time.Second

// clockOffset records how far the peer's clock is ahead of this node's, as
// seen in a heartbeat (network delay included).
func (l *link) clockOffset(peer, now time.Time) {
	if peer.IsZero() {
		return
	}
	off := peer.Sub(now)
	l.offset.Store(int64(off))
	if (off > maxClockOffset || off < -maxClockOffset) && l.offsetLogged.CompareAndSwap(false, true) {
		l.n.log.Warn("mirror: the peer's clock differs from this node's: newer-wins between entries can pick the wrong one; synchronize the clocks (NTP)",
			"remote", l.remoteAddr, "offset", off.String())
	}
}

func (l *link) apply(e Entry, now time.Time) {
	l.received.Add(1)
	if !l.n.inScope(e.Table) {
		l.skipped.Add(1)
		return
	}
	if err := l.n.local.Apply(e); err != nil {
		l.applyErrs.Add(1)
		if last := l.lastApplyLog.Load(); now.UnixNano()-last > int64(time.Second) && l.lastApplyLog.CompareAndSwap(last, now.UnixNano()) {
			l.n.log.Warn("mirror: cannot apply a received entry", "remote", l.remoteAddr, "table", e.Table, "error", err, "errors", l.applyErrs.Load())
		}
	}
}
