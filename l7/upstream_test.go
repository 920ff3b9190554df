package l7

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/userspace/ids"
)

// A member that closes a keep-alive connection without saying so (an idle
// timeout shorter than the proxy's) must cost the client nothing: an idle
// connection found closed is replaced, and a request that met a close
// before any answer is sent again when it may be.
func TestMemberClosingIdleConnectionsIsInvisible(t *testing.T) {
	m := startRawMember(t)
	m.respond = func(n int, r *http.Request) string {
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + closeMarker
	}
	h := smugglingProxy(t, m, "")
	c := &http.Client{Timeout: 5 * time.Second}
	for i, req := range []func() (*http.Response, error){
		func() (*http.Response, error) { return c.Get(h.urls["web"] + "/get1") },
		func() (*http.Response, error) { return c.Get(h.urls["web"] + "/get2") },
		func() (*http.Response, error) {
			return c.Post(h.urls["web"]+"/post-body", "text/plain", strings.NewReader("payload"))
		},
		func() (*http.Response, error) { return c.Post(h.urls["web"]+"/post-empty", "text/plain", nil) },
		func() (*http.Response, error) { return c.Get(h.urls["web"] + "/get3") },
	} {
		time.Sleep(20 * time.Millisecond) // let the member's close arrive
		resp, err := req()
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "ok" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, b)
		}
	}
	seen, _, conns := m.seen()
	if len(seen) != 5 || conns != 5 {
		t.Errorf("the member saw %d requests on %d connections, want 5 on 5", len(seen), conns)
	}
	if seen[2].body != "payload" {
		t.Errorf("the POST body arrived as %q", seen[2].body)
	}
	for _, l := range h.log.waitLines(t, 5) {
		if num(l, "status") != 200 || l["retries"] != nil || l["error"] != nil {
			t.Errorf("access log: %v", l)
		}
	}
	if ms := h.srv.Member(ids.MemberRef{Pool: "p", Member: "raw"}); len(ms) != 1 || !ms[0].Healthy(time.Now()) {
		t.Errorf("closed idle connections counted against the member's health")
	}
}

// A client that goes away while its request waits on a slow member ends
// the exchange at once (logged 499), and the member connection is not
// put back in the pool with an answer still owed on it.
func TestClientGoneWhileMemberWorks(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	a := startMember(t, "a", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-release:
			case <-time.After(5 * time.Second):
			}
		}
		io.WriteString(w, "member=a\n")
	})
	defer once.Do(func() { close(release) })
	ms := map[string]*member{"a": a}
	yaml := oneMember(cookieYAML("", ""))
	h := startProxy(t, yaml, ms, nil)
	c := rawConn(t, h.urls["web"])
	io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	c.Close()
	l := h.log.waitLinesFor(t, 1, 3*time.Second)[0]
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the proxy noticed the client's close after %v", d)
	}
	if num(l, "status") != 499 || str(l, "reason") != "client_closed" {
		t.Errorf("access log: %v", l)
	}
	once.Do(func() { close(release) })
	// The next request gets its own answer, not the one owed to /slow.
	resp, body := get(t, &http.Client{}, h.urls["web"]+"/next")
	if resp.StatusCode != 200 || body != "member=a\n" {
		t.Fatalf("next: %d %q", resp.StatusCode, body)
	}
}

func TestIdlePool(t *testing.T) {
	conn := func() *upstreamConn {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		return &upstreamConn{conn: a}
	}
	now := time.Now()
	p := newIdlePool(2, time.Minute)
	if p.get(now) != nil {
		t.Fatal("an empty pool gave a connection")
	}
	c1, c2, c3 := conn(), conn(), conn()
	if !p.put(c1, now) || !p.put(c2, now) {
		t.Fatal("put into a pool with room")
	}
	if p.put(c3, now) {
		t.Fatal("a full pool took a third connection")
	}
	if !c1.reused || c1.br != nil {
		t.Fatal("a pooled connection is marked reused and holds no read buffer")
	}
	got := map[*upstreamConn]bool{p.get(now): true, p.get(now): true}
	if !got[c1] || !got[c2] || p.get(now) != nil {
		t.Fatalf("got %v", got)
	}
	// Expired connections are closed, not handed out.
	p.put(c1, now)
	if c := p.get(now.Add(2 * time.Minute)); c != nil {
		t.Fatal("an expired connection was handed out")
	}
	if _, err := c1.conn.Write([]byte("x")); err == nil {
		t.Fatal("the expired connection was not closed")
	}
	// Many goroutines, one pool: every connection is handed to one taker.
	p = newIdlePool(8, time.Minute)
	var wg sync.WaitGroup
	var mu sync.Mutex
	held := map[*upstreamConn]int{}
	for g := 0; g < 8; g++ {
		c := conn()
		wg.Go(func() {
			for i := 0; i < 2000; i++ {
				if !p.put(c, now) {
					t.Error("put failed with room")
					return
				}
				got := p.get(now)
				if got == nil {
					t.Error("get failed with a connection in")
					return
				}
				mu.Lock()
				held[got]++
				if held[got] > 1 {
					t.Error("a connection handed out twice")
				}
				mu.Unlock()
				c = got
				mu.Lock()
				held[got]--
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if n := p.count.Load(); n != 0 {
		t.Errorf("count %d after every get matched a put", n)
	}
}

func TestAliveSeesAClosedConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			br := bufio.NewReader(c)
			line, _ := br.ReadString('\n')
			if line == "close\n" {
				c.Close()
			} else if line == "talk\n" {
				io.WriteString(c, "unasked\n")
			}
		}
	}()
	for _, tc := range []struct {
		say  string
		want bool
	}{{"", true}, {"close\n", false}, {"talk\n", false}} {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, tc.say)
		time.Sleep(50 * time.Millisecond)
		if got := alive(c); got != tc.want {
			t.Errorf("after %q: alive %v, want %v", tc.say, got, tc.want)
		}
		c.Close()
	}
}
