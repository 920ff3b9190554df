package l7

import (
	"bufio"
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/limpet-lb/limpet/l7/balance"
)

// The member side of the proxy: keep-alive HTTP/1.1 connections to each
// member, used by one request at a time on the request's own goroutine.
// net/http's Transport runs a reader and a writer goroutine per connection
// and hands every request and response between them and the caller over
// channels; on one core those hand-offs, its pool's mutex and the contexts
// it creates per request cost more than the exchange itself. Here a request
// takes a connection from a lock-free idle pool, writes its head with one
// system call, and reads the response where it runs.

// upstreamConn is one connection to a member.
type upstreamConn struct {
	conn   net.Conn
	br     *bufio.Reader // nil while idle: the buffer goes back to a pool
	member *balance.Member
	// deadline is the read and write deadline set on conn, so that it is
	// moved only when it has come closer than the timeout (see arm).
	deadline time.Time
	// idleSince is when the connection went back to the pool (Unix ns).
	idleSince int64
	reused    bool
	// aborted is set when the request using the connection was cancelled
	// (the client went away): its reads and writes fail at once.
	aborted atomic.Bool
}

// aLongTimeAgo is a deadline in the past: it interrupts blocked I/O.
var aLongTimeAgo = time.Unix(1, 0)

// abort interrupts the connection's I/O; the connection is not reused.
func (c *upstreamConn) abort() {
	c.aborted.Store(true)
	_ = c.conn.SetDeadline(aLongTimeAgo)
}

// arm keeps the connection's deadline at least d away (d > 0), moving it
// only when it has come closer than that: most requests then set no
// deadline at all. The wait allowed is between d and d + d/8, never less.
func (c *upstreamConn) arm(now time.Time, d time.Duration) error {
	if d <= 0 {
		if !c.deadline.IsZero() {
			c.deadline = time.Time{}
			return c.conn.SetDeadline(time.Time{})
		}
		return nil
	}
	if c.deadline.Sub(now) >= d {
		return nil
	}
	c.deadline = now.Add(d + d/8)
	return c.conn.SetDeadline(c.deadline)
}

var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 2<<10) }}

// reader returns the connection's buffered reader, taking one from the pool
// if it has none.
func (c *upstreamConn) reader() *bufio.Reader {
	if c.br == nil {
		c.br = readers.Get().(*bufio.Reader)
		c.br.Reset(c.conn)
	}
	return c.br
}

// releaseReader gives the read buffer back while the connection idles. It
// keeps it when bytes are buffered (they belong to nobody: the connection
// is not reused then anyway).
func (c *upstreamConn) releaseReader() {
	if c.br != nil && c.br.Buffered() == 0 {
		c.br.Reset(nil)
		readers.Put(c.br)
		c.br = nil
	}
}

func (c *upstreamConn) close() {
	_ = c.conn.Close()
	if c.br != nil {
		c.br.Reset(nil)
		readers.Put(c.br)
		c.br = nil
	}
}

// idlePool holds a member's idle connections: a fixed array of slots
// taken and filled with compare-and-swap, so that no request ever waits
// on another's lock. count is a hint that spares a scan of an empty pool.
type idlePool struct {
	slots       []atomic.Pointer[upstreamConn]
	count       atomic.Int32
	idleTimeout time.Duration
}

func newIdlePool(size int, idleTimeout time.Duration) *idlePool {
	return &idlePool{slots: make([]atomic.Pointer[upstreamConn], size), idleTimeout: idleTimeout}
}

// get takes an idle connection, closing those idle for longer than the
// idle timeout, or returns nil.
func (p *idlePool) get(now time.Time) *upstreamConn {
	for p.count.Load() > 0 {
		found := false
		for i := range p.slots {
			c := p.slots[i].Load()
			if c == nil || !p.slots[i].CompareAndSwap(c, nil) {
				continue
			}
			p.count.Add(-1)
			found = true
			if time.Duration(now.UnixNano()-c.idleSince) > p.idleTimeout {
				c.close()
				break
			}
			return c
		}
		if !found {
			return nil
		}
	}
	return nil
}

// put returns a connection to the pool; it reports false when the pool is
// full (the caller closes the connection).
func (p *idlePool) put(c *upstreamConn, now time.Time) bool {
	c.releaseReader()
	c.idleSince = now.UnixNano()
	c.reused = true
	for i := range p.slots {
		if p.slots[i].Load() == nil && p.slots[i].CompareAndSwap(nil, c) {
			p.count.Add(1)
			return true
		}
	}
	return false
}

// closeIdle closes every idle connection, or only those idle since before
// olderThan when it is not zero.
func (p *idlePool) closeIdle(olderThan time.Time) {
	for i := range p.slots {
		c := p.slots[i].Load()
		if c == nil || (!olderThan.IsZero() && c.idleSince >= olderThan.UnixNano()) {
			continue
		}
		if p.slots[i].CompareAndSwap(c, nil) {
			p.count.Add(-1)
			c.close()
		}
	}
}

// probeIdle is how long a connection may idle before it is checked, when
// taken, for a member that closed it meanwhile: the check costs a system
// call, and a member does not close a connection it has just used.
const probeIdle = time.Second

// alive checks, without blocking, that the member has neither closed the
// connection nor sent anything unasked (MSG_PEEK on the socket).
func alive(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	ok = false
	var buf [1]byte
	err = rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		ok = n < 0 && (err == syscall.EAGAIN || err == syscall.EWOULDBLOCK)
		return true
	})
	return err == nil && ok
}

// upstreams is one virtual server's connections to its members.
type upstreams struct {
	v     *virtualServer
	pools map[*balance.Member]*idlePool
}

func newUpstreams(v *virtualServer, members []*balance.Member, maxIdle int, idleTimeout time.Duration) *upstreams {
	u := &upstreams{v: v, pools: make(map[*balance.Member]*idlePool, len(members))}
	for _, m := range members {
		u.pools[m] = newIdlePool(maxIdle, idleTimeout)
	}
	return u
}

// get returns a connection to m: an idle one, or a new one (dial feeds
// passive health and reports a failure as a *dialError). probe asks for
// any idle connection to be checked before it is used, because the request
// could not be repeated if the member had closed it.
func (u *upstreams) get(ctx context.Context, m *balance.Member, now time.Time, probe bool) (*upstreamConn, error) {
	if p := u.pools[m]; p != nil {
		for {
			c := p.get(now)
			if c == nil {
				break
			}
			if (probe || time.Duration(now.UnixNano()-c.idleSince) > probeIdle) && !alive(c.conn) {
				c.close()
				continue
			}
			return c, nil
		}
	}
	return u.dial(ctx, m)
}

func (u *upstreams) dial(ctx context.Context, m *balance.Member) (*upstreamConn, error) {
	conn, err := u.v.dial(ctx, "tcp", m.Addr.String())
	if err != nil {
		return nil, err
	}
	return &upstreamConn{conn: conn, member: m}, nil
}

// put gives a connection back after a complete exchange, or closes it.
func (u *upstreams) put(c *upstreamConn, now time.Time) {
	if p := u.pools[c.member]; p != nil && !c.aborted.Load() && p.put(c, now) {
		return
	}
	c.close()
}

// sweep closes connections idle for longer than the idle timeout.
func (u *upstreams) sweep(now time.Time) {
	for _, p := range u.pools {
		p.closeIdle(now.Add(-p.idleTimeout))
	}
}

// closeIdle closes every idle connection (shutdown).
func (u *upstreams) closeIdle() {
	for _, p := range u.pools {
		p.closeIdle(time.Time{})
	}
}

// isClosedConn reports errors that mean the member closed or reset the
// connection before it answered.
func isClosedConn(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed)
}
