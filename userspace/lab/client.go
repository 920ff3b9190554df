package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"time"
)

// Timeouts of the client helpers: the effective limit is the sooner of these
// and the context's deadline.
const (
	DialTimeout = 3 * time.Second
	HTTPTimeout = 10 * time.Second
	UDPTimeout  = 2 * time.Second
)

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
	d := net.Dialer{Timeout: DialTimeout}
	if src.IsValid() {
		switch network {
		case "tcp", "tcp4", "tcp6":
			d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
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
func (l *Lab) HTTPClient(src netip.Addr) *http.Client {
	return &http.Client{
		Timeout: HTTPTimeout,
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
	resp, err := l.HTTPClient(src).Do(req)
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
