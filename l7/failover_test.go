package l7

import (
	"context"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/l7/balance"
	"github.com/limpet-lb/limpet/l7/cookie"
	"github.com/limpet-lb/limpet/userspace/ids"
)

// pinned gets a cookie and returns its value and the member it names.
func pinned(t *testing.T, h *harness, ms map[string]*member, name string) (string, *member, *member) {
	t.Helper()
	resp, body := get(t, &http.Client{}, h.urls["web"])
	sc := setCookies(resp, name)
	if len(sc) != 1 {
		t.Fatalf("no cookie: %q", resp.Header.Values("Set-Cookie"))
	}
	if body == "member=a\n" {
		return cookieValue(sc[0]), ms["a"], ms["b"]
	}
	return cookieValue(sc[0]), ms["b"], ms["a"]
}

func TestServerDownImmediateMovesClientWithNewCookie(t *testing.T) {
	ms := twoMembers(t)
	h := startProxy(t, cookieYAML("cookie_name: LB\nserver_down: immediate", ""), ms, nil)
	v, mine, other := pinned(t, h, ms, "LB")
	mine.stop()
	for i := 0; i < 3; i++ {
		resp, body := get(t, &http.Client{}, h.urls["web"], "Cookie", "LB="+v)
		if resp.StatusCode != 200 || body != "member="+other.name+"\n" {
			t.Fatalf("request %d after the member stopped: %d %q", i, resp.StatusCode, body)
		}
		sc := setCookies(resp, "LB")
		if len(sc) != 1 {
			t.Fatalf("no new cookie after failover: %q", resp.Header.Values("Set-Cookie"))
		}
		p, _, err := cookie.Decode(cookieValue(sc[0]), [][]byte{testKey})
		if err != nil || p.Member != other.addr {
			t.Fatalf("new cookie names %v (%v), want %v", p.Member, err, other.addr)
		}
		l := h.log.last(t, 2+i)
		if str(l, "decision") != "rebalanced" || str(l, "member") != other.name {
			t.Errorf("access log: %v", l)
		}
	}
}

func TestServerDownNeverAnswers503UntilTheCookieExpires(t *testing.T) {
	ms := twoMembers(t)
	h := startProxy(t, cookieYAML("cookie_name: LB\nserver_down: never\ntimeout: 5", "fail_timeout: 30"), ms, nil)
	v, mine, other := pinned(t, h, ms, "LB")
	mine.stop()
	for i := 0; i < 3; i++ {
		resp, _ := get(t, &http.Client{}, h.urls["web"], "Cookie", "LB="+v)
		if resp.StatusCode != 503 {
			t.Fatalf("request %d: status %d, want 503", i, resp.StatusCode)
		}
		ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
		if err != nil || ra < 1 || ra > 300 {
			t.Fatalf("Retry-After %q: want seconds up to the cookie's remaining 5 minutes", resp.Header.Get("Retry-After"))
		}
		if len(resp.Header.Values("Set-Cookie")) != 0 {
			t.Fatalf("never must keep the client's cookie: %q", resp.Header.Values("Set-Cookie"))
		}
		if l := h.log.last(t, 2+i); str(l, "decision") != "server_down" || str(l, "member") != mine.name {
			t.Errorf("access log: %v", l)
		}
	}
	if other.hits.Load() != 0 {
		t.Errorf("never sent a persisted client to another member")
	}
	// New clients still get the healthy member.
	if _, body := get(t, &http.Client{}, h.urls["web"]); body != "member="+other.name+"\n" {
		t.Fatalf("new client: %q", body)
	}
	// Once the cookie's timeout is over, the client is balanced afresh.
	h.clock.advance(5 * time.Minute)
	resp, body := get(t, &http.Client{}, h.urls["web"], "Cookie", "LB="+v)
	if resp.StatusCode != 200 || body != "member="+other.name+"\n" || len(setCookies(resp, "LB")) != 1 {
		t.Fatalf("after expiry: %d %q %q", resp.StatusCode, body, resp.Header.Values("Set-Cookie"))
	}
}

func TestDisabledMemberLosesItsClientsEvenWithNever(t *testing.T) {
	ms := twoMembers(t)
	h := startProxy(t, cookieYAML("cookie_name: LB\nserver_down: never", ""), ms, nil)
	v, mine, other := pinned(t, h, ms, "LB")
	h.srv.SetMemberAdmin(ids.MemberRef{Pool: "p", Member: mine.name}, balance.Disabled)
	resp, body := get(t, &http.Client{}, h.urls["web"], "Cookie", "LB="+v)
	if resp.StatusCode != 200 || body != "member="+other.name+"\n" || len(setCookies(resp, "LB")) != 1 {
		t.Fatalf("disabled member: %d %q", resp.StatusCode, body)
	}
	if l := h.log.last(t, 2); str(l, "reason") != "member_disabled" || str(l, "decision") != "rebalanced" {
		t.Errorf("access log: %v", l)
	}
}

func TestGracefulDisabledKeepsPersistedClientsOnly(t *testing.T) {
	ms := twoMembers(t)
	h := startProxy(t, cookieYAML("cookie_name: LB", ""), ms, nil)
	v, mine, other := pinned(t, h, ms, "LB")
	h.srv.SetMemberAdmin(ids.MemberRef{Pool: "p", Member: mine.name}, balance.Draining)
	for i := 0; i < 4; i++ {
		if _, body := get(t, &http.Client{}, h.urls["web"], "Cookie", "LB="+v); body != "member="+mine.name+"\n" {
			t.Fatalf("persisted client left a draining member: %q", body)
		}
		if _, body := get(t, &http.Client{}, h.urls["web"]); body != "member="+other.name+"\n" {
			t.Fatalf("new client sent to a draining member: %q", body)
		}
	}
}

func TestMemberRemovedFromPoolIsUnknownMember(t *testing.T) {
	ms := twoMembers(t)
	h := startProxy(t, cookieYAML("cookie_name: LB", ""), ms, nil)
	v, mine, _ := pinned(t, h, ms, "LB")
	h.stop()
	// The member is taken out of the pool in the config.
	yaml := strings.Replace(cookieYAML("cookie_name: LB", ""), "      - {name: "+mine.name+", address: 127.0.0.1, port: {{M:"+mine.name+"}}}\n", "", 1)
	h = startProxy(t, yaml, ms, nil)
	resp, _ := get(t, &http.Client{}, h.urls["web"], "Cookie", "LB="+v)
	if resp.StatusCode != 200 || len(setCookies(resp, "LB")) != 1 {
		t.Fatalf("%d %q", resp.StatusCode, resp.Header.Values("Set-Cookie"))
	}
	h.log.wantLast(t, map[string]any{"cookie": "unknown_member", "decision": "balanced"})
}

// fakeHealth is a HealthSource the test drives.
type fakeHealth struct {
	mu      sync.Mutex
	update  func(ids.MemberRef, bool)
	started chan struct{}
}

func (f *fakeHealth) Watch(ctx context.Context, update func(ids.MemberRef, bool)) error {
	f.mu.Lock()
	f.update = update
	f.mu.Unlock()
	close(f.started)
	<-ctx.Done()
	return nil
}

func (f *fakeHealth) set(id ids.MemberRef, up bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.update(id, up)
}

func TestHealthSourceDrivesServerDown(t *testing.T) {
	ms := twoMembers(t)
	hs := &fakeHealth{started: make(chan struct{})}
	h := startProxy(t, cookieYAML("cookie_name: LB", ""), ms, &harnessOpts{health: hs})
	<-hs.started
	v, mine, other := pinned(t, h, ms, "LB")
	hs.set(ids.MemberRef{Pool: "p", Member: mine.name}, false)
	resp, body := get(t, &http.Client{}, h.urls["web"], "Cookie", "LB="+v)
	if body != "member="+other.name+"\n" || len(setCookies(resp, "LB")) != 1 {
		t.Fatalf("monitor said down, client stayed: %q", body)
	}
	if l := h.log.last(t, 2); str(l, "reason") != "member_down" {
		t.Errorf("access log: %v", l)
	}
	hs.set(ids.MemberRef{Pool: "p", Member: mine.name}, true)
	if _, body := get(t, &http.Client{}, h.urls["web"], "Cookie", "LB="+v); body != "member="+mine.name+"\n" {
		t.Fatalf("member back up, old cookie should reach it again: %q", body)
	}
}

// recorder is a FailureReporter.
type recorder struct {
	mu  sync.Mutex
	got []string
}

func (r *recorder) ConnectResult(id ids.MemberRef, addr netip.AddrPort, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := id.Member + ":ok"
	if err != nil {
		s = id.Member + ":fail"
	}
	r.got = append(r.got, s)
}

func TestPassiveFailuresReportedAndRetriedWithBody(t *testing.T) {
	ms := twoMembers(t)
	rec := &recorder{}
	ms["a"].stop()
	h := startProxy(t, cookieYAML("cookie_name: LB", "max_fails: 2\nfail_timeout: 60"), ms, &harnessOpts{failures: rec})
	// Round robin starts at a, which refuses: the POST and its body go to b.
	body := strings.Repeat("payload-", 1000)
	resp, err := http.Post(h.urls["web"], "text/plain", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Member") != "b" || resp.Header.Get("X-Seen-Body-Len") != strconv.Itoa(len(body)) {
		t.Fatalf("retry: %d member %q body %q", resp.StatusCode, resp.Header.Get("X-Member"), resp.Header.Get("X-Seen-Body-Len"))
	}
	h.log.wantLast(t, map[string]any{"retries": 1, "reason": "connect_failed", "member": "b"})
	a := h.srv.Member(ids.MemberRef{Pool: "p", Member: "a"})[0]
	if a.ConsecutiveFailures() != 1 || !a.Healthy(h.clock.now()) {
		t.Fatalf("one failure of max_fails 2 must not mark down: failures %d", a.ConsecutiveFailures())
	}
	get(t, &http.Client{}, h.urls["web"]) // b (round robin)
	get(t, &http.Client{}, h.urls["web"]) // a fails again, retried on b
	if a.Healthy(h.clock.now()) {
		t.Fatalf("two consecutive failures should mark a down")
	}
	rec.mu.Lock()
	got := strings.Join(rec.got, ",")
	rec.mu.Unlock()
	if !strings.Contains(got, "a:fail,b:ok") || strings.Count(got, "a:fail") != 2 {
		t.Errorf("reported %s", got)
	}
	// After fail_timeout a trial request goes to a again.
	h.clock.advance(61 * time.Second)
	if !a.Healthy(h.clock.now()) {
		t.Fatalf("fail_timeout over, a should be tried again")
	}
}

func TestRetriesZeroGives502(t *testing.T) {
	ms := twoMembers(t)
	ms["a"].stop()
	h := startProxy(t, cookieYAML("cookie_name: LB", "retries: 0"), ms, nil)
	resp, _ := get(t, &http.Client{}, h.urls["web"])
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %d, want 502", resp.StatusCode)
	}
	h.log.wantLast(t, map[string]any{"reason": "connect_failed"})
}
