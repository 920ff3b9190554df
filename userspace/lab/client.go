package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Timeouts of the client helpers: the effective limit is the sooner of these
// (or what Patient sets) and the context's deadline.
const (
	DialTimeout = 3 * time.Second
	HTTPTimeout = 10 * time.Second
	UDPTimeout  = 2 * time.Second
)

type patienceKey struct{}

type patience struct{ dial, request time.Duration }

// Patient returns a context under which Dial and Get wait up to dial for a
// connection and up to request for a whole HTTP request, instead of
// DialTimeout and HTTPTimeout (the context's own deadline still applies).
// It is for tests that check where connections go, not how fast they get
// there: on a loaded machine the test's own process may take seconds to
// notice a handshake the kernel completed in a millisecond.
func Patient(ctx context.Context, dial, request time.Duration) context.Context {
	return context.WithValue(ctx, patienceKey{}, patience{dial, request})
}

func timeouts(ctx context.Context) patience {
	if p, ok := ctx.Value(patienceKey{}).(patience); ok {
		return p
	}
	return patience{DialTimeout, HTTPTimeout}
}

// Dial opens a connection from the client host. network is "tcp" or "udp";
// src (if valid) is the source address to bind, e.g. one of ClientAddrs4/6 or
// any address of ClientPrefix4/6. The socket is created inside the client's
// namespace and can be used from any goroutine.
func (l *Lab) Dial(ctx context.Context, network string, src netip.Addr, dst netip.AddrPort) (net.Conn, error) {
	return l.DialFrom(ctx, HostClient, network, src, dst)
}

// DialFrom is Dial from any host of the lab (e.g. a member, for tests of
// traffic the balancer must leave alone).
func (l *Lab) DialFrom(ctx context.Context, hostName, network string, src netip.Addr, dst netip.AddrPort) (net.Conn, error) {
	if !dst.IsValid() {
		return nil, fmt.Errorf("lab: dial: invalid destination")
	}
	switch network {
	case "tcp", "tcp4", "tcp6":
		return l.dialTCP(ctx, hostName, src, dst)
	}
	d := net.Dialer{Timeout: timeouts(ctx).dial}
	if src.IsValid() {
		switch network {
		case "udp", "udp4", "udp6":
			d.LocalAddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
		default:
			return nil, fmt.Errorf("lab: dial: network %q", network)
		}
	}
	var c net.Conn
	err := l.Run(hostName, func() error {
		var err error
		// The socket is created (and connect started) on this goroutine,
		// which is locked to a thread inside the namespace.
		c, err = d.DialContext(ctx, network, dst.String())
		return err
	})
	return c, err
}

// dialTCP connects from the host's namespace. Only the socket is created
// on a thread inside the namespace (a socket belongs to the namespace it is
// created in, whichever thread uses it later); the connect and the wait for
// it run on the calling goroutine, through the runtime's poller. Waiting on
// the namespace thread instead would make every connection, once its
// handshake is done, wait for the runtime to hand a processor to that one
// locked thread: on a loaded machine a burst of a thousand connections
// queues up behind the kernel's scheduling of a thousand threads, and dials
// whose handshakes completed in a millisecond time out.
func (l *Lab) dialTCP(ctx context.Context, hostName string, src netip.Addr, dst netip.AddrPort) (net.Conn, error) {
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if src.IsValid() && src.Unmap().Is4() != dst.Addr().Is4() {
		return nil, fmt.Errorf("lab: dial %s from %s: address families differ", dst, src)
	}
	family, sa := unix.AF_INET6, unix.Sockaddr(&unix.SockaddrInet6{Addr: dst.Addr().As16(), Port: int(dst.Port())})
	if dst.Addr().Is4() {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Addr: dst.Addr().As4(), Port: int(dst.Port())}
	}
	fd := -1
	if err := l.Run(hostName, func() error {
		var err error
		fd, err = unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
		return err
	}); err != nil {
		return nil, fmt.Errorf("lab: dial %s: socket: %w", dst, err)
	}
	// Non-blocking, so the file is registered with the poller.
	f := os.NewFile(uintptr(fd), "tcp")
	defer f.Close() // FileConn below holds its own copy
	fail := func(what string, err error) (net.Conn, error) {
		oe := &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(dst), Err: fmt.Errorf("%s: %w", what, err)}
		if src.IsValid() {
			oe.Source = net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
		}
		return nil, oe
	}
	if src.IsValid() {
		var bsa unix.Sockaddr = &unix.SockaddrInet6{Addr: src.As16()}
		if src.Unmap().Is4() {
			bsa = &unix.SockaddrInet4{Addr: src.Unmap().As4()}
		}
		if err := unix.Bind(fd, bsa); err != nil {
			return fail("bind", err)
		}
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return fail("raw conn", err)
	}
	var cerr error
	if err := rc.Control(func(fd uintptr) { cerr = unix.Connect(int(fd), sa) }); err != nil {
		return fail("connect", err)
	}
	if cerr != nil && !errors.Is(cerr, unix.EINPROGRESS) {
		return fail("connect", cerr)
	}
	if cerr != nil {
		deadline := time.Now().Add(timeouts(ctx).dial)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		if err := f.SetWriteDeadline(deadline); err != nil {
			return fail("deadline", err)
		}
		stop := context.AfterFunc(ctx, func() { f.SetWriteDeadline(time.Now()) })
		defer stop()
		// Writable once the handshake completed or failed.
		werr := rc.Write(func(fd uintptr) bool {
			if v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR); err != nil {
				cerr = err
			} else if v != 0 {
				cerr = unix.Errno(v)
			} else if _, err := unix.Getpeername(int(fd)); errors.Is(err, unix.ENOTCONN) {
				return false // still connecting
			} else {
				cerr = nil
			}
			return true
		})
		switch {
		case ctx.Err() != nil:
			return fail("connect", ctx.Err())
		case errors.Is(werr, os.ErrDeadlineExceeded):
			return fail("connect", errDialTimeout{})
		case werr != nil:
			return fail("connect", werr)
		case cerr != nil:
			return fail("connect", cerr)
		}
	}
	c, err := net.FileConn(f)
	if err != nil {
		return fail("file conn", err)
	}
	return c, nil
}

// errDialTimeout reads like the net package's dial timeout.
type errDialTimeout struct{}

func (errDialTimeout) Error() string   { return "i/o timeout" }
func (errDialTimeout) Timeout() bool   { return true }
func (errDialTimeout) Temporary() bool { return true }

// DialContextFunc returns an http.Transport-style DialContext that dials from
// the client host with source address src. Addresses must be literal IP:port
// (no name resolution, so nothing can leave the lab).
func (l *Lab) DialContextFunc(src netip.Addr) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		dst, err := netip.ParseAddrPort(addr)
		if err != nil {
			return nil, fmt.Errorf("lab: dial %q: want a literal IP:port: %w", addr, err)
		}
		return l.Dial(ctx, network, src, dst)
	}
}

// HTTPClient returns an HTTP client whose connections start at the client
// host from source address src. Keep-alives are off, so every request is a
// new TCP connection (a new flow for the balancer); no proxy; HTTPTimeout.
func (l *Lab) HTTPClient(src netip.Addr) *http.Client { return l.httpClient(src, HTTPTimeout) }

func (l *Lab) httpClient(src netip.Addr, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext:       l.DialContextFunc(src),
			DisableKeepAlives: true,
			Proxy:             nil,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// URL formats http://IP:PORT/path for dst (brackets for IPv6).
func URL(dst netip.AddrPort, path string) string {
	return "http://" + dst.String() + path
}

// HTTPReply is a member's answer to an HTTP request.
type HTTPReply struct {
	Reply
	Status int
	Header http.Header
	Body   string
}

// Get sends GET url from the client host with source src and parses the
// member's reply. A response that is not a member reply is an error.
func (l *Lab) Get(ctx context.Context, src netip.Addr, url string) (HTTPReply, error) {
	var out HTTPReply
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return out, err
	}
	resp, err := l.httpClient(src, timeouts(ctx).request).Do(req)
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	out.Status, out.Header, out.Body = resp.StatusCode, resp.Header, string(b)
	if err != nil {
		return out, err
	}
	out.Reply, err = ParseReply(out.Body)
	if err != nil {
		return out, err
	}
	if h := resp.Header.Get(HeaderMember); h != out.Member {
		return out, fmt.Errorf("lab: header %s=%q but body says %q", HeaderMember, h, out.Member)
	}
	return out, nil
}

// WaitGet repeats Get every 50ms until it succeeds with a member reply and
// status 200, or ctx ends (returning the last error). Use it to wait for a
// balancer to come up.
func (l *Lab) WaitGet(ctx context.Context, src netip.Addr, url string) (HTTPReply, error) {
	for {
		attempt, cancel := context.WithTimeout(ctx, time.Second)
		r, err := l.Get(attempt, src, url)
		cancel()
		if err == nil && r.Status != http.StatusOK {
			err = fmt.Errorf("lab: GET %s: status %d", url, r.Status)
		}
		if err == nil {
			return r, nil
		}
		select {
		case <-ctx.Done():
			return r, fmt.Errorf("lab: waiting for %s: %w (last error: %v)", url, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// UDPQuery sends payload from the client host (source src, any port) to dst
// and returns the first reply that comes from dst (the socket is connected,
// so replies from another address, e.g. an un-NATed member, are ignored). It
// waits UDPTimeout at most, less if ctx ends sooner; use Dial for longer waits.
func (l *Lab) UDPQuery(ctx context.Context, src netip.Addr, dst netip.AddrPort, payload []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, UDPTimeout)
	defer cancel()
	c, err := l.Dial(ctx, "udp", src, dst)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	if err := c.SetDeadline(dl); err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := c.Write(payload); err != nil {
		return nil, err
	}
	buf := make([]byte, 65536)
	n, err := c.Read(buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}
