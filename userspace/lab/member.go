package lab

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// HeaderMember is the response header carrying the member's name.
const HeaderMember = "X-Limpet-Member"

// member is a member host and its in-process servers.
type member struct {
	lab  *Lab
	h    *host
	info Member

	mu      sync.Mutex
	httpSrv *http.Server
	stop    chan struct{} // closed when httpSrv stops (ends /hold waits)
	udp     []*net.UDPConn
	udpDone sync.WaitGroup
}

// Reply is what a member answers, parsed by ParseReply.
type Reply struct {
	Member string
	Peer   netip.AddrPort // the client address the member saw
	Local  netip.AddrPort // the address the member was reached at (a VIP in DSR)
}

func formatReply(name string, peer, local string) string {
	return fmt.Sprintf("member=%s peer=%s local=%s\n", name, peer, local)
}

// ParseReply parses a member's HTTP body or UDP reply
// ("member=NAME peer=IP:PORT local=IP:PORT").
func ParseReply(s string) (Reply, error) {
	var r Reply
	for _, f := range strings.Fields(s) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		var err error
		switch k {
		case "member":
			r.Member = v
		case "peer":
			r.Peer, err = netip.ParseAddrPort(v)
		case "local":
			r.Local, err = netip.ParseAddrPort(v)
		}
		if err != nil {
			return r, fmt.Errorf("lab: reply %q: %w", s, err)
		}
	}
	if r.Member == "" || !r.Peer.IsValid() {
		return r, fmt.Errorf("lab: not a member reply: %q", s)
	}
	return r, nil
}

func (m *member) handler(stop <-chan struct{}) http.Handler {
	name := m.info.Name
	reply := func(w http.ResponseWriter, r *http.Request) string {
		local := ""
		if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			local = a.String()
		}
		w.Header().Set(HeaderMember, name)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		return formatReply(name, r.RemoteAddr, local)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		body := reply(w, r)
		_, _ = w.Write([]byte(body))
	})
	// /hold?ms=N sends the headers at once, keeps the connection open for N
	// milliseconds (default 1000, at most 10 minutes), then sends the body.
	mux.HandleFunc("/hold", func(w http.ResponseWriter, r *http.Request) {
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		if ms <= 0 {
			ms = 1000
		}
		ms = min(ms, 600_000)
		body := reply(w, r)
		w.WriteHeader(http.StatusOK)
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		t := time.NewTimer(time.Duration(ms) * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		case <-stop:
			return
		}
		_, _ = w.Write([]byte(body))
	})
	// /status?code=N answers with status N (for health monitor tests).
	mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(r.URL.Query().Get("code"))
		if code < 100 || code > 999 {
			code = http.StatusOK
		}
		body := reply(w, r)
		w.WriteHeader(code)
		_, _ = w.Write([]byte(body))
	})
	// /bytes?n=N answers with the reply line followed by N filler bytes (at
	// most 64 MiB), for transfers larger than one packet.
	mux.HandleFunc("/bytes", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		n = max(0, min(n, 64<<20))
		body := reply(w, r)
		w.Header().Set("Content-Length", strconv.Itoa(len(body)+n))
		_, _ = w.Write([]byte(body))
		chunk := []byte(strings.Repeat("x", 64<<10))
		for n > 0 {
			k := min(n, len(chunk))
			if _, err := w.Write(chunk[:k]); err != nil {
				return
			}
			n -= k
		}
	})
	return mux
}

// startHTTP opens the member's HTTP listeners (IPv4 and IPv6 wildcard on every
// Spec.HTTPPorts) inside its namespace and serves them.
func (m *member) startHTTP() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.httpSrv != nil {
		return nil
	}
	var lns []net.Listener
	err := m.h.run(func() error {
		for _, p := range m.lab.spec.HTTPPorts {
			for _, nw := range []string{"tcp4", "tcp6"} {
				addr := net.JoinHostPort("0.0.0.0", strconv.Itoa(int(p)))
				if nw == "tcp6" {
					addr = net.JoinHostPort("::", strconv.Itoa(int(p)))
				}
				ln, err := net.Listen(nw, addr)
				if err != nil {
					return fmt.Errorf("lab: member %s: listen %s %s: %w", m.info.Name, nw, addr, err)
				}
				lns = append(lns, ln)
			}
		}
		return nil
	})
	if err != nil {
		for _, ln := range lns {
			ln.Close()
		}
		return err
	}
	stop := make(chan struct{})
	srv := &http.Server{Handler: m.handler(stop), ReadHeaderTimeout: 10 * time.Second}
	for _, ln := range lns {
		go func() { _ = srv.Serve(ln) }()
	}
	m.httpSrv, m.stop = srv, stop
	return nil
}

func (m *member) stopHTTP() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.httpSrv == nil {
		return
	}
	close(m.stop)
	_ = m.httpSrv.Close()
	m.httpSrv, m.stop = nil, nil
}

// udpAddrs are the addresses the UDP echo binds: the member's own, plus the
// VIPs in DSR mode. (Binding each address, rather than the wildcard, makes
// replies leave from the address the query was sent to.)
func (m *member) udpAddrs() []netip.Addr {
	addrs := []netip.Addr{m.info.Addr4, m.info.Addr6}
	if m.lab.spec.DSR {
		addrs = append(addrs, m.lab.spec.VIPs...)
	}
	return addrs
}

func (m *member) startUDP() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.udp != nil {
		return nil
	}
	var conns []*net.UDPConn
	err := m.h.run(func() error {
		for _, p := range m.lab.spec.UDPPorts {
			for _, a := range m.udpAddrs() {
				nw := "udp4"
				if a.Is6() {
					nw = "udp6"
				}
				c, err := net.ListenUDP(nw, net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, p)))
				if err != nil {
					return fmt.Errorf("lab: member %s: listen udp %s: %w", m.info.Name, netip.AddrPortFrom(a, p), err)
				}
				conns = append(conns, c)
			}
		}
		return nil
	})
	if err != nil {
		for _, c := range conns {
			c.Close()
		}
		return err
	}
	for _, c := range conns {
		m.udpDone.Add(1)
		go m.serveUDP(c)
	}
	m.udp = conns
	return nil
}

func (m *member) serveUDP(c *net.UDPConn) {
	defer m.udpDone.Done()
	buf := make([]byte, 65536)
	local := c.LocalAddr().String()
	for {
		_, peer, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		_, _ = c.WriteToUDPAddrPort([]byte(formatReply(m.info.Name, peer.String(), local)), peer)
	}
}

func (m *member) stopUDP() {
	m.mu.Lock()
	conns := m.udp
	m.udp = nil
	m.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	m.udpDone.Wait()
}

func (m *member) stopAll() {
	m.stopHTTP()
	m.stopUDP()
}

func (l *Lab) memberOrErr(name string) (*member, error) {
	if m := l.member(name); m != nil {
		return m, nil
	}
	return nil, fmt.Errorf("lab: no member %q", name)
}

// StopHTTP closes a member's HTTP listeners and open HTTP connections, so
// that new connections to it are refused (RST).
func (l *Lab) StopHTTP(name string) error { return l.stopService(name, (*member).stopHTTP) }

// StartHTTP (re)starts a member's HTTP server; a no-op if it runs.
func (l *Lab) StartHTTP(name string) error { return l.startService(name, (*member).startHTTP) }

// StopUDP closes a member's UDP echo sockets (queries then get ICMP port unreachable).
func (l *Lab) StopUDP(name string) error { return l.stopService(name, (*member).stopUDP) }

// StartUDP (re)starts a member's UDP echo; a no-op if it runs.
func (l *Lab) StartUDP(name string) error { return l.startService(name, (*member).startUDP) }

// stopService stops one of the named member's services.
func (l *Lab) stopService(name string, stop func(*member)) error {
	m, err := l.memberOrErr(name)
	if err != nil {
		return err
	}
	stop(m)
	return nil
}

// startService (re)starts one of the named member's services, unless the
// lab is closed.
func (l *Lab) startService(name string, start func(*member) error) error {
	m, err := l.memberOrErr(name)
	if err != nil {
		return err
	}
	if l.isClosed() {
		return errors.New("lab: closed")
	}
	return start(m)
}
