package health

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// ICMP message types used here.
const (
	icmp4EchoReply   = 0
	icmp4Unreachable = 3
	icmp4Echo        = 8
	icmp4TimeExceed  = 11
	icmp6Unreachable = 1
	icmp6TimeExceed  = 3
	icmp6Echo        = 128
	icmp6EchoReply   = 129
)

// icmpProber sends one echo request and waits for its reply.
type icmpProber struct {
	probeBase
	pingers *pingers
	size    int
}

func (p *icmpProber) close() {}

func (p *icmpProber) probe(ctx context.Context) error {
	dst := p.addr.Addr()
	pg, err := p.pingers.get(dst.Is6())
	if err != nil {
		return err
	}
	err = pg.ping(ctx, dst, p.size)
	if errors.Is(err, errNoReply) {
		return fmt.Errorf("icmp echo %s: no reply within %v", dst, p.timeout)
	}
	return err
}

var errNoReply = errors.New("icmp: no reply")

// pingers holds one socket per address family, shared by every icmp probe
// of a checker and opened on first use.
type pingers struct {
	closed <-chan struct{}
	mu     sync.Mutex
	v4, v6 *pinger
	// open opens a pinger; nil means openPinger. Tests replace it to open
	// sockets inside a network namespace.
	open func(v6 bool) (*pinger, error)
}

func (ps *pingers) get(v6 bool) (*pinger, error) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	select {
	case <-ps.closed:
		return nil, errors.New("icmp: checker closed")
	default:
	}
	slot := &ps.v4
	if v6 {
		slot = &ps.v6
	}
	if p := *slot; p != nil {
		select {
		case <-p.done: // its reader failed: open another
			p.conn.Close()
		default:
			return p, nil
		}
	}
	open := ps.open
	if open == nil {
		open = openPinger
	}
	p, err := open(v6)
	if err != nil {
		return nil, err
	}
	*slot = p
	return p, nil
}

func (ps *pingers) close() {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, p := range []*pinger{ps.v4, ps.v6} {
		if p != nil {
			p.close()
		}
	}
	ps.v4, ps.v6 = nil, nil
}

// pinger owns one ICMP socket: a raw socket (CAP_NET_RAW), or else an
// unprivileged ping socket (net.ipv4.ping_group_range). One reader goroutine
// hands each reply to the probe waiting for its sequence number.
type pinger struct {
	v6   bool
	raw  bool // raw: replies of every process arrive and the identifier is ours to check
	id   uint16
	conn net.PacketConn
	done chan struct{} // closed when the reader exits

	mu    sync.Mutex
	seq   uint16
	waits map[uint16]*pingWait
}

type pingWait struct {
	dst     netip.Addr
	payload []byte
	ch      chan error // buffered: the reader never blocks
}

// openPinger opens a raw ICMP socket, or an unprivileged ping socket when
// raw sockets are not permitted.
func openPinger(v6 bool) (*pinger, error) {
	network, laddr := "ip4:icmp", "0.0.0.0"
	if v6 {
		network, laddr = "ip6:ipv6-icmp", "::"
	}
	conn, rawErr := net.ListenPacket(network, laddr)
	if rawErr == nil {
		return startPinger(conn, v6, true), nil
	}
	conn, err := listenPingSocket(v6)
	if err != nil {
		return nil, fmt.Errorf("icmp: cannot open a raw socket (%v) nor a ping socket (%v)", rawErr, err)
	}
	return startPinger(conn, v6, false), nil
}

// listenPingSocket opens a SOCK_DGRAM ICMP socket: the kernel sets the
// identifier and delivers only this socket's replies.
func listenPingSocket(v6 bool) (net.PacketConn, error) {
	family, proto := unix.AF_INET, unix.IPPROTO_ICMP
	var sa unix.Sockaddr = &unix.SockaddrInet4{}
	if v6 {
		family, proto = unix.AF_INET6, unix.IPPROTO_ICMPV6
		sa = &unix.SockaddrInet6{}
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("bind", err)
	}
	f := os.NewFile(uintptr(fd), "icmp")
	defer f.Close()
	return net.FilePacketConn(f)
}

func startPinger(conn net.PacketConn, v6, raw bool) *pinger {
	p := &pinger{
		v6:    v6,
		raw:   raw,
		id:    uint16(rand.Uint32()),
		seq:   uint16(rand.Uint32()),
		conn:  conn,
		done:  make(chan struct{}),
		waits: map[uint16]*pingWait{},
	}
	go p.read()
	return p
}

func (p *pinger) close() {
	p.conn.Close()
	<-p.done
}

func (p *pinger) read() {
	defer close(p.done)
	buf := make([]byte, 65536)
	for {
		n, from, err := p.conn.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			p.failAll(fmt.Errorf("icmp: socket: %w", err))
			return
		}
		var src netip.Addr
		switch a := from.(type) {
		case *net.IPAddr:
			src, _ = netip.AddrFromSlice(a.IP)
		case *net.UDPAddr:
			src, _ = netip.AddrFromSlice(a.IP)
		}
		p.handle(buf[:n], src.Unmap())
	}
}

func (p *pinger) failAll(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for seq, w := range p.waits {
		w.ch <- err
		delete(p.waits, seq)
	}
}

// handle matches one ICMP message (without IP header) to a waiting probe.
func (p *pinger) handle(b []byte, src netip.Addr) {
	if len(b) < 8 {
		return
	}
	reply, unreach, exceed, echo, ipHdr := byte(icmp4EchoReply), byte(icmp4Unreachable), byte(icmp4TimeExceed), byte(icmp4Echo), 20
	if p.v6 {
		reply, unreach, exceed, echo, ipHdr = icmp6EchoReply, icmp6Unreachable, icmp6TimeExceed, icmp6Echo, 40
	}
	switch b[0] {
	case reply:
		id, seq := binary.BigEndian.Uint16(b[4:]), binary.BigEndian.Uint16(b[6:])
		p.mu.Lock()
		defer p.mu.Unlock()
		w := p.waits[seq]
		if w == nil || (p.raw && id != p.id) || src != w.dst || string(b[8:]) != string(w.payload) {
			return
		}
		delete(p.waits, seq)
		w.ch <- nil
	case unreach, exceed:
		// The error quotes our request: IP header, then its ICMP header.
		inner := b[8:]
		if !p.v6 {
			if len(inner) < 20 || inner[0]>>4 != 4 || inner[9] != syscall.IPPROTO_ICMP {
				return
			}
			ipHdr = int(inner[0]&0x0f) * 4
		} else if len(inner) < 40 || inner[6] != syscall.IPPROTO_ICMPV6 {
			return
		}
		if len(inner) < ipHdr+8 || inner[ipHdr] != echo {
			return
		}
		var dst netip.Addr
		if p.v6 {
			dst = netip.AddrFrom16([16]byte(inner[24:40]))
		} else {
			dst = netip.AddrFrom4([4]byte(inner[16:20]))
		}
		q := inner[ipHdr:]
		id, seq := binary.BigEndian.Uint16(q[4:]), binary.BigEndian.Uint16(q[6:])
		p.mu.Lock()
		defer p.mu.Unlock()
		w := p.waits[seq]
		if w == nil || (p.raw && id != p.id) || dst != w.dst {
			return
		}
		delete(p.waits, seq)
		what := "destination unreachable"
		if b[0] == exceed {
			what = "time exceeded"
		}
		w.ch <- fmt.Errorf("icmp echo %s: %s (type %d code %d from %s)", dst, what, b[0], b[1], src)
	}
}

// ping sends one echo request of size payload bytes to dst and waits for
// the reply until ctx is done.
func (p *pinger) ping(ctx context.Context, dst netip.Addr, size int) error {
	dst = dst.Unmap()
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte(i)
	}
	if size >= 8 {
		binary.BigEndian.PutUint64(payload, rand.Uint64())
	}
	w := &pingWait{dst: dst, payload: payload, ch: make(chan error, 1)}

	p.mu.Lock()
	select {
	case <-p.done:
		p.mu.Unlock()
		return errors.New("icmp: socket closed")
	default:
	}
	seq := p.seq
	for i := 0; i < 1<<16 && p.waits[seq] != nil; i++ {
		seq++
	}
	if p.waits[seq] != nil {
		p.mu.Unlock()
		return errors.New("icmp: too many echo requests in flight")
	}
	p.seq = seq + 1
	p.waits[seq] = w
	p.mu.Unlock()
	forget := func() {
		p.mu.Lock()
		if p.waits[seq] == w {
			delete(p.waits, seq)
		}
		p.mu.Unlock()
	}

	msg := make([]byte, 8+size)
	msg[0] = icmp4Echo
	if p.v6 {
		msg[0] = icmp6Echo
	}
	binary.BigEndian.PutUint16(msg[4:], p.id)
	binary.BigEndian.PutUint16(msg[6:], seq)
	copy(msg[8:], payload)
	if !p.v6 { // the kernel computes ICMPv6 checksums (pseudo-header)
		binary.BigEndian.PutUint16(msg[2:], checksum(msg))
	}
	var to net.Addr = &net.IPAddr{IP: dst.AsSlice()}
	if !p.raw {
		to = &net.UDPAddr{IP: dst.AsSlice()}
	}
	if _, err := p.conn.WriteTo(msg, to); err != nil {
		forget()
		var se *os.SyscallError
		var oe *net.OpError
		switch {
		case errors.As(err, &se):
			err = se.Err
		case errors.As(err, &oe) && oe.Err != nil:
			err = oe.Err
		}
		return fmt.Errorf("icmp echo %s: send: %v", dst, err)
	}
	select {
	case err := <-w.ch:
		return err
	case <-ctx.Done():
		forget()
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return errNoReply
		}
		return ctx.Err()
	}
}

// checksum is the Internet checksum (RFC 1071).
func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
