package health

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"
)

// maxRead bounds what a probe reads of an answer: the response body an http
// monitor searches, or the stream a tcp monitor searches for receive.
const maxRead = 64 << 10

// userAgent is sent by http monitors unless a header sets another.
const userAgent = "limpet-health-monitor"

// prober runs one kind of probe against one target; a probe loop owns one.
type prober interface {
	// probe returns nil when the member answered as expected. ctx carries
	// the probe's timeout.
	probe(ctx context.Context) error
	close()
}

func (c *Checker) newProber(t *Target) prober {
	base := probeBase{addr: t.ProbeAddr(), timeout: t.Monitor.Timeout}
	m := &t.Monitor
	switch m.Type {
	case MonitorTCP:
		return &tcpProber{newExchange(base, m)}
	case MonitorUDP:
		return &udpProber{newExchange(base, m)}
	case MonitorHTTP, MonitorHTTPS:
		return newHTTPProber(base, m)
	case MonitorICMP:
		return &icmpProber{probeBase: base, pingers: &c.icmp, size: m.DataLength}
	}
	return errProber{fmt.Errorf("unknown monitor type %q", m.Type)}
}

type probeBase struct {
	addr    netip.AddrPort
	timeout time.Duration
}

// describe turns a network error into a short reason: what failed and why,
// with timeouts reported as such rather than as a context error.
func (b *probeBase) describe(ctx context.Context, what string, err error) error {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) ||
		errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		return fmt.Errorf("%s %s: no answer within %v", what, b.addr, b.timeout)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%s %s: connection refused", what, b.addr)
	case errors.Is(err, syscall.ECONNRESET):
		return fmt.Errorf("%s %s: connection reset", what, b.addr)
	case errors.Is(err, syscall.EHOSTUNREACH):
		return fmt.Errorf("%s %s: host unreachable", what, b.addr)
	case errors.Is(err, syscall.ENETUNREACH):
		return fmt.Errorf("%s %s: network unreachable", what, b.addr)
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		err = oe.Err
	}
	return fmt.Errorf("%s %s: %v", what, b.addr, err)
}

// dial connects to the target over network; a failure is described as
// what failed.
func (b *probeBase) dial(ctx context.Context, network, what string) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, b.addr.String())
	if err != nil {
		return nil, b.describe(ctx, what, err)
	}
	return conn, nil
}

type errProber struct{ err error }

func (p errProber) probe(context.Context) error { return p.err }
func (errProber) close()                        {}

// exchange is what the tcp and udp probers send and expect to receive;
// they hold nothing open between probes.
type exchange struct {
	probeBase
	send, receive []byte
}

func newExchange(base probeBase, m *Monitor) exchange {
	return exchange{probeBase: base, send: []byte(m.Send), receive: []byte(m.Receive)}
}

func (exchange) close() {}

// tcpProber connects; with send it writes, with receive it reads until
// the text appears.
type tcpProber struct{ exchange }

func (p *tcpProber) probe(ctx context.Context) error {
	conn, err := p.dial(ctx, "tcp", "connect")
	if err != nil {
		return err
	}
	defer conn.Close()
	if len(p.send) == 0 && len(p.receive) == 0 {
		// A connect check: reset rather than close, so that probes leave
		// no TIME_WAIT behind on the balancer.
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		return nil
	}
	stop := bindToContext(ctx, conn)
	defer stop()
	if len(p.send) > 0 {
		if _, err := conn.Write(p.send); err != nil {
			return p.describe(ctx, "send to", err)
		}
	}
	if len(p.receive) == 0 {
		return nil
	}
	return readUntil(ctx, &p.probeBase, conn, p.receive)
}

// bindToContext gives conn ctx's deadline, and ends its reads and writes
// when ctx is cancelled; stop ends the latter.
func bindToContext(ctx context.Context, conn net.Conn) (stop func() bool) {
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	return context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
}

// readUntil reads r until want appears, for at most maxRead bytes.
func readUntil(ctx context.Context, b *probeBase, r io.Reader, want []byte) error {
	buf := make([]byte, 0, 4096)
	chunk := make([]byte, 4096)
	for len(buf) < maxRead {
		n, err := r.Read(chunk)
		buf = append(buf, chunk[:n]...)
		if bytes.Contains(buf, want) {
			return nil
		}
		if err == io.EOF {
			return fmt.Errorf("answer of %s lacks %q (closed after %d bytes)", b.addr, want, len(buf))
		}
		if err != nil {
			if len(buf) > 0 {
				return fmt.Errorf("answer of %s lacks %q (%d bytes read): %w", b.addr, want, len(buf), b.describe(ctx, "read from", err))
			}
			return b.describe(ctx, "read from", err)
		}
	}
	return fmt.Errorf("answer of %s lacks %q in its first %d bytes", b.addr, want, maxRead)
}

// udpProber sends a datagram and waits for a reply holding receive (any
// reply when receive is empty). An ICMP port unreachable fails at once.
type udpProber struct{ exchange }

func (p *udpProber) probe(ctx context.Context) error {
	conn, err := p.dial(ctx, "udp", "udp")
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := bindToContext(ctx, conn)
	defer stop()
	if _, err := conn.Write(p.send); err != nil {
		return p.describe(ctx, "udp send to", err)
	}
	buf := make([]byte, 65536)
	n, err := conn.Read(buf)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("udp %s: port unreachable", p.addr)
		}
		return p.describe(ctx, "udp reply from", err)
	}
	if len(p.receive) > 0 && !bytes.Contains(buf[:n], p.receive) {
		return fmt.Errorf("udp reply from %s lacks %q (%d bytes)", p.addr, p.receive, n)
	}
	return nil
}

// httpProber sends one request on a fresh connection and checks the status
// code and, optionally, the body.
type httpProber struct {
	probeBase
	client   *http.Client
	tr       *http.Transport
	url      string
	m        *Monitor
	setupErr error
}

func newHTTPProber(base probeBase, m *Monitor) *httpProber {
	p := &httpProber{probeBase: base, m: m}
	scheme := "http"
	tr := &http.Transport{
		Proxy:                  nil, // never the environment's proxy
		DialContext:            (&net.Dialer{}).DialContext,
		DisableKeepAlives:      true,
		DisableCompression:     true,
		MaxResponseHeaderBytes: maxRead,
	}
	if m.Type == MonitorHTTPS {
		scheme = "https"
		conf := &tls.Config{InsecureSkipVerify: !m.TLSVerify, ServerName: m.TLSServerName}
		if conf.ServerName == "" && m.Host != "" {
			conf.ServerName = hostOnly(m.Host)
		}
		conf.RootCAs = m.RootCAs
		tr.TLSClientConfig = conf
	}
	p.tr = tr
	p.client = &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	p.url = scheme + "://" + base.addr.String() + m.Path
	if _, err := url.ParseRequestURI(p.url); err != nil && p.setupErr == nil {
		p.setupErr = fmt.Errorf("path %q: %v", m.Path, err)
	}
	return p
}

func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return strings.Trim(hostport, "[]")
}

func (p *httpProber) close() { p.tr.CloseIdleConnections() }

func (p *httpProber) probe(ctx context.Context) error {
	if p.setupErr != nil {
		return p.setupErr
	}
	var body io.Reader
	if p.m.RequestBody != "" {
		body = strings.NewReader(p.m.RequestBody)
	}
	req, err := http.NewRequestWithContext(ctx, p.m.Method, p.url, body)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", userAgent)
	for _, h := range p.m.Headers {
		req.Header.Set(h.Name, h.Value)
	}
	if p.m.Host != "" {
		req.Host = p.m.Host
	}
	resp, err := p.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return p.describe(ctx, p.m.Method, err)
	}
	defer resp.Body.Close()
	codeOK := len(p.m.Codes) == 0
	for _, r := range p.m.Codes {
		if resp.StatusCode >= r.Lo && resp.StatusCode <= r.Hi {
			codeOK = true
			break
		}
	}
	if !codeOK {
		return fmt.Errorf("%s %s%s: status %d, expected %s", p.m.Method, p.addr, p.m.Path, resp.StatusCode, codeList(p.m.Codes))
	}
	if p.m.ResponseBody == "" {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxRead))
		return nil
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxRead))
	if bytes.Contains(b, []byte(p.m.ResponseBody)) {
		return nil
	}
	if err != nil {
		return p.describe(ctx, "reading the body from", err)
	}
	return fmt.Errorf("%s %s%s: status %d but the body lacks %q (%d bytes searched)", p.m.Method, p.addr, p.m.Path, resp.StatusCode, p.m.ResponseBody, len(b))
}

func codeList(rs []CodeRange) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = r.String()
	}
	return strings.Join(s, ", ")
}
