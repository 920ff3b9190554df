package l7

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/l7/persist"
)

// tableYAML is profileYAML with the profile "prof" (profile holds its
// lines) and the virtual servers extraVS after web.
func tableYAML(profile string, extraVS string) string {
	return profileYAML("prof", profile, "") + extraVS
}

func TestAppCookieLearnsServerCookie(t *testing.T) {
	var sessions atomic.Int64
	handler := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/login" {
				http.SetCookie(w, &http.Cookie{Name: "JSESSIONID", Value: fmt.Sprintf("%s-%d", name, sessions.Add(1)), Path: "/"})
			}
			if r.URL.Path == "/logout" {
				w.Header().Add("Set-Cookie", "JSESSIONID=; Path=/; Max-Age=0")
			}
			w.Header().Set("X-Seen-Cookie", r.Header.Get("Cookie"))
			fmt.Fprintf(w, "member=%s\n", name)
		}
	}
	ms := map[string]*member{}
	ms["a"] = startMember(t, "a", handler("a"))
	ms["b"] = startMember(t, "b", handler("b"))
	h := startProxy(t, tableYAML("type: app_cookie\ncookie_name: JSESSIONID", ""), ms, nil)
	c := &http.Client{}
	resp, body := get(t, c, h.urls["web"]+"/login")
	sid := cookieValue(resp.Header.Get("Set-Cookie"))
	if sid == "" {
		t.Fatalf("no server cookie")
	}
	if got := resp.Header.Values("Set-Cookie"); len(got) != 1 {
		t.Fatalf("app cookie persistence must insert nothing: %q", got)
	}
	for i := 0; i < 6; i++ {
		resp, b := get(t, c, h.urls["web"], "Cookie", "JSESSIONID="+sid)
		if b != body {
			t.Fatalf("request %d with the session went to %q, login went to %q", i, b, body)
		}
		if resp.Header.Get("X-Seen-Cookie") != "JSESSIONID="+sid {
			t.Fatalf("the server cookie must reach the member: %q", resp.Header.Get("X-Seen-Cookie"))
		}
	}
	if l := h.log.last(t, 7); str(l, "cookie") != "valid" || str(l, "decision") != "persisted" || str(l, "persistence") != "app_cookie" {
		t.Errorf("access log: %v", l)
	}
	// A value limpet never saw is balanced, not trusted.
	get(t, c, h.urls["web"], "Cookie", "JSESSIONID=forged")
	if l := h.log.last(t, 8); str(l, "cookie") != "unknown_value" || str(l, "decision") != "balanced" {
		t.Errorf("access log: %v", l)
	}
	// The server deletes the session: the mapping goes with it.
	get(t, c, h.urls["web"]+"/logout", "Cookie", "JSESSIONID="+sid)
	get(t, c, h.urls["web"], "Cookie", "JSESSIONID="+sid)
	if l := h.log.last(t, 10); str(l, "cookie") != "unknown_value" {
		t.Errorf("after logout: %v", l)
	}
}

func TestAppCookieEntryExpires(t *testing.T) {
	ms := map[string]*member{}
	for _, n := range []string{"a", "b"} {
		ms[n] = startMember(t, n, func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/login" {
				http.SetCookie(w, &http.Cookie{Name: "SID", Value: "s1"})
			}
		})
	}
	h := startProxy(t, tableYAML("type: app_cookie\ncookie_name: SID\ntimeout: 60", ""), ms, nil)
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	get(t, c, h.urls["web"]+"/login")
	get(t, c, h.urls["web"], "Cookie", "SID=s1")
	if l := h.log.last(t, 2); str(l, "cookie") != "valid" {
		t.Fatalf("access log: %v", l)
	}
	// Connections closed; the countdown runs from the last one.
	waitConnsReleased(t, h, "prof/web", persist.Key{Text: "s1"})
	h.clock.advance(61 * time.Second)
	get(t, c, h.urls["web"], "Cookie", "SID=s1")
	if l := h.log.last(t, 3); str(l, "cookie") != "unknown_value" {
		t.Errorf("after the timeout: %v", l)
	}
}

func waitConnsReleased(t *testing.T, h *harness, table string, key persist.Key) {
	t.Helper()
	tbl := h.srv.memory.Tables()[table]
	if tbl == nil {
		t.Fatalf("no table %q in %v", table, h.srv.memory.Tables())
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		e, ok := tbl.Snapshot(h.clock.now())[key]
		if ok && e.Conns == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("entry %v still held: %+v (present %v)", key, e, ok)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestGenericKeySources(t *testing.T) {
	for _, tc := range []struct {
		name, opt string
		set       func(*http.Request, string)
	}{
		{"header", "header_name: X-Tenant", func(r *http.Request, v string) { r.Header.Set("X-Tenant", v) }},
		{"cookie", "cookie_name: tenant", func(r *http.Request, v string) { r.Header.Set("Cookie", "x=y; tenant="+v) }},
		{"query", "query_param: tenant", func(r *http.Request, v string) { r.URL.RawQuery = "a=1&tenant=" + v + "&b=2" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ms := twoMembers(t)
			h := startProxy(t, tableYAML("type: generic\n"+tc.opt, ""), ms, nil)
			do := func(key string) string {
				req, _ := http.NewRequest(http.MethodGet, h.urls["web"], nil)
				if key != "" {
					tc.set(req, key)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				return resp.Header.Get("X-Member")
			}
			first := map[string]string{}
			for _, k := range []string{"t1", "t2", "t3", "t4"} {
				first[k] = do(k)
			}
			if first["t1"] == first["t2"] {
				t.Fatalf("new keys should be balanced: %v", first)
			}
			for i := 0; i < 3; i++ {
				for k, m := range first {
					if got := do(k); got != m {
						t.Fatalf("key %s went to %s, first to %s", k, got, m)
					}
				}
			}
			if l := h.log.last(t, 16); str(l, "key") != "hit" || str(l, "decision") != "persisted" {
				t.Errorf("access log: %v", l)
			}
			do("")
			if l := h.log.last(t, 17); str(l, "key") != "none" || str(l, "decision") != "balanced" {
				t.Errorf("no key: %v", l)
			}
		})
	}
}

func TestGenericSharedAcrossVirtualServers(t *testing.T) {
	ms := twoMembers(t)
	h := startProxy(t, tableYAML("type: generic\nheader_name: X-User\nshare_persistence: true", httpVS("api", "prof")), ms, nil)
	first, _ := get(t, &http.Client{}, h.urls["web"], "X-User", "alice")
	for i := 0; i < 4; i++ {
		resp, _ := get(t, &http.Client{}, h.urls["api"], "X-User", "alice")
		if resp.Header.Get("X-Member") != first.Header.Get("X-Member") {
			t.Fatalf("shared table: api sent alice to %s, web to %s", resp.Header.Get("X-Member"), first.Header.Get("X-Member"))
		}
	}
	if _, ok := h.srv.memory.Tables()["prof"]; !ok || len(h.srv.memory.Tables()) != 1 {
		t.Errorf("a shared profile should have one table named after it: %v", h.srv.memory.Tables())
	}
}

func TestGenericNotSharedHasTablePerVirtualServer(t *testing.T) {
	ms := twoMembers(t)
	h := startProxy(t, tableYAML("type: generic\nheader_name: X-User", httpVS("api", "prof")), ms, nil)
	get(t, &http.Client{}, h.urls["web"], "X-User", "alice")
	get(t, &http.Client{}, h.urls["api"], "X-User", "alice")
	if l := h.log.last(t, 2); str(l, "key") != "miss" {
		t.Errorf("a private table should not know alice: %v", l)
	}
	if n := len(h.srv.memory.Tables()); n != 2 {
		t.Errorf("%d tables, want one per virtual server", n)
	}
}

// clientFrom returns a client whose connections come from a loopback address.
func clientFrom(src string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}

func TestSourceIPPersistence(t *testing.T) {
	ms := twoMembers(t)
	h := startProxy(t, tableYAML("type: source_ip\nipv4_prefix: 24", ""), ms, nil)
	resp, _ := get(t, clientFrom("127.0.0.1"), h.urls["web"])
	first := resp.Header.Get("X-Member")
	for _, src := range []string{"127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.1"} {
		resp, _ := get(t, clientFrom(src), h.urls["web"])
		if got := resp.Header.Get("X-Member"); got != first {
			t.Fatalf("%s (same /24) went to %s, first to %s", src, got, first)
		}
	}
	get(t, clientFrom("127.0.1.1"), h.urls["web"])
	if l := h.log.last(t, 6); str(l, "key") != "miss" {
		t.Errorf("another /24 should be new: %v", l)
	}
	e, ok := h.srv.memory.Tables()["prof/web"].Get(persist.Key{Addr: netip.MustParseAddr("127.0.0.0")}, h.clock.now())
	if !ok || e.Server.String() != ms[first].addr.String() {
		t.Errorf("table entry for 127.0.0.0/24: %+v %v", e, ok)
	}
}

func TestSourceIPTableFullWithoutPurgeRefuses(t *testing.T) {
	ms := twoMembers(t)
	h := startProxy(t, tableYAML("type: source_ip\nmax_entries: 1\npurge_when_full: false", ""), ms, nil)
	if resp, _ := get(t, clientFrom("127.0.0.1"), h.urls["web"]); resp.StatusCode != 200 {
		t.Fatalf("first client: %d", resp.StatusCode)
	}
	resp, _ := get(t, clientFrom("127.0.0.2"), h.urls["web"])
	if resp.StatusCode != 503 {
		t.Fatalf("second client with a full table: %d", resp.StatusCode)
	}
	if l := h.log.last(t, 2); str(l, "decision") != "table_full" {
		t.Errorf("access log: %v", l)
	}
	// The known client is still served.
	if resp, _ := get(t, clientFrom("127.0.0.1"), h.urls["web"]); resp.StatusCode != 200 {
		t.Fatalf("known client: %d", resp.StatusCode)
	}
}

func TestSourceIPTableFullWithPurgeEvictsOldest(t *testing.T) {
	ms := twoMembers(t)
	h := startProxy(t, tableYAML("type: source_ip\nmax_entries: 1", ""), ms, nil)
	get(t, clientFrom("127.0.0.1"), h.urls["web"])
	if resp, _ := get(t, clientFrom("127.0.0.2"), h.urls["web"]); resp.StatusCode != 200 {
		t.Fatalf("purge_when_full should make room: %d", resp.StatusCode)
	}
	get(t, clientFrom("127.0.0.1"), h.urls["web"])
	if l := h.log.last(t, 3); str(l, "key") != "miss" {
		t.Errorf("the evicted client should be new again: %v", l)
	}
}

func TestSourceIPEntryKeptWhileConnectionLives(t *testing.T) {
	ms := twoMembers(t)
	h := startProxy(t, tableYAML("type: source_ip\ntimeout: 30", ""), ms, nil)
	tr := &http.Transport{}
	c := &http.Client{Transport: tr}
	get(t, c, h.urls["web"])
	tbl := h.srv.memory.Tables()["prof/web"]
	key := persist.Key{Addr: netip.MustParseAddr("127.0.0.1")}
	if e, ok := tbl.Get(key, h.clock.now()); !ok || e.Conns != 1 {
		t.Fatalf("the open connection should hold the entry: %+v %v", e, ok)
	}
	// Idle far past the timeout: the entry stays while the connection is open.
	h.clock.advance(10 * time.Minute)
	if _, ok := tbl.Get(key, h.clock.now()); !ok {
		t.Fatal("entry expired while a connection held it")
	}
	tr.CloseIdleConnections()
	waitConnsReleased(t, h, "prof/web", key)
	h.clock.advance(29 * time.Second)
	if _, ok := tbl.Get(key, h.clock.now()); !ok {
		t.Fatal("entry gone before its countdown ran out")
	}
	h.clock.advance(2 * time.Second)
	if _, ok := tbl.Get(key, h.clock.now()); ok {
		t.Fatal("entry still there after the countdown")
	}
}

// memberOf is what a request with hdr reaches.
func memberOf(t *testing.T, url string, hdr ...string) string {
	resp, _ := get(t, &http.Client{}, url, hdr...)
	return resp.Header.Get("X-Member")
}

func TestGenericServerDownNeverAndImmediate(t *testing.T) {
	for _, policy := range []string{"immediate", "never"} {
		t.Run(policy, func(t *testing.T) {
			ms := twoMembers(t)
			h := startProxy(t, tableYAML("type: generic\nheader_name: X-User\nserver_down: "+policy, ""), ms, nil)
			first := memberOf(t, h.urls["web"], "X-User", "bob")
			ms[first].stop()
			resp, _ := get(t, &http.Client{}, h.urls["web"], "X-User", "bob")
			if policy == "never" {
				if resp.StatusCode != 503 {
					t.Fatalf("never: %d", resp.StatusCode)
				}
				return
			}
			if resp.StatusCode != 200 || resp.Header.Get("X-Member") == first {
				t.Fatalf("immediate: %d %s", resp.StatusCode, resp.Header.Get("X-Member"))
			}
			// The entry moved: bob stays on the new member.
			moved := resp.Header.Get("X-Member")
			if got := memberOf(t, h.urls["web"], "X-User", "bob"); got != moved {
				t.Fatalf("bob went to %s after moving to %s", got, moved)
			}
		})
	}
}
