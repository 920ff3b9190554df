package l7

import (
	"net/http"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/l7/cookie"
)

// cookieYAML is one http virtual server "web" over members a and b with an
// http_cookie profile; profile and vs add lines to the profile and the
// virtual server.
func cookieYAML(profile, vs string) string {
	return profileYAML("web", "type: http_cookie\nkeys:\n  - base64: \"{{KEY}}\"\n"+profile, vs)
}

// profileYAML is one http virtual server "web" over members a and b with
// the persistence profile name; profile holds the profile's lines after
// its name, vs adds lines to the virtual server.
func profileYAML(name, profile, vs string) string {
	return `
persistence_profiles:
  - name: ` + name + `
` + indent(profile, 4) + `
pools:
  - name: p
    members:
      - {name: a, address: 127.0.0.1, port: {{M:a}}}
` + memberB + `virtual_servers:
` + httpVS("web", name) + indent(vs, 4)
}

// memberB is member b's line in profileYAML's pool.
const memberB = "      - {name: b, address: 127.0.0.1, port: {{M:b}}}\n"

// oneMember drops member b from a config of profileYAML.
func oneMember(yaml string) string {
	return strings.Replace(yaml, memberB, "", 1)
}

// httpVS is an entry of virtual_servers: the http virtual server name on
// 127.0.0.1 over pool p, with the persistence profile persistence if any.
func httpVS(name, persistence string) string {
	vs := `  - name: ` + name + `
    type: http
    address: 127.0.0.1
    port: {{VS:` + name + `}}
    pool: p
`
	if persistence != "" {
		vs += "    persistence: " + persistence + "\n"
	}
	return vs
}

func indent(s string, n int) string {
	if s == "" {
		return ""
	}
	pad := strings.Repeat(" ", n)
	lines := strings.Split(strings.Trim(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = pad + l
	}
	return strings.Join(lines, "\n") + "\n"
}

func twoMembers(t testing.TB) map[string]*member {
	return map[string]*member{"a": startMember(t, "a", nil), "b": startMember(t, "b", nil)}
}

var derivedName = regexp.MustCompile(`^[A-Z]{8}$`)

func TestSessionCookieInsertedOnceAndSticks(t *testing.T) {
	ms := twoMembers(t)
	h := startProxy(t, cookieYAML("", ""), ms, nil)
	name := cookie.DeriveName(testKey, "vs:web")
	if !derivedName.MatchString(name) {
		t.Fatalf("derived name %q is not eight upper-case letters", name)
	}
	c := newClient(t)
	resp, body := get(t, c, h.urls["web"])
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	sc := setCookies(resp, name)
	if len(sc) != 1 {
		t.Fatalf("want one Set-Cookie %s, got %q", name, resp.Header.Values("Set-Cookie"))
	}
	if strings.Contains(sc[0], "Max-Age") || strings.Contains(sc[0], "Expires") {
		t.Errorf("session cookie carries a lifetime: %s", sc[0])
	}
	if !strings.Contains(sc[0], "; Path=/") {
		t.Errorf("cookie has no Path=/: %s", sc[0])
	}
	if strings.Contains(sc[0], "Secure") || strings.Contains(sc[0], "HttpOnly") || strings.Contains(sc[0], "SameSite") {
		t.Errorf("defaults over plain HTTP add no flags: %s", sc[0])
	}
	first := strings.TrimSpace(body)
	for i := 0; i < 10; i++ {
		resp, body := get(t, c, h.urls["web"])
		if got := strings.TrimSpace(body); got != first {
			t.Fatalf("request %d went to %s, first went to %s", i, got, first)
		}
		if len(setCookies(resp, name)) != 0 {
			t.Fatalf("request %d: cookie re-sent without always_send: %q", i, resp.Header.Values("Set-Cookie"))
		}
		if seen := resp.Header.Get("X-Seen-Cookie"); strings.Contains(seen, name) {
			t.Fatalf("member saw limpet's cookie: %q", seen)
		}
	}
	l := h.log.last(t, 11)
	if str(l, "cookie") != "valid" || str(l, "decision") != "persisted" || str(l, "member") != strings.TrimPrefix(first, "member=") {
		t.Errorf("access log: %v", l)
	}
	l0 := h.log.lines(t)[0]
	if str(l0, "cookie") != "none" || str(l0, "decision") != "balanced" || l0["cookie_set"] != true {
		t.Errorf("first access log line: %v", l0)
	}
}

func TestNewClientsAreBalanced(t *testing.T) {
	ms := twoMembers(t)
	h := startProxy(t, cookieYAML("", ""), ms, nil)
	seen := map[string]int{}
	for i := 0; i < 10; i++ {
		_, body := get(t, newClient(t), h.urls["web"])
		seen[strings.TrimSpace(body)]++
	}
	if seen["member=a"] != 5 || seen["member=b"] != 5 {
		t.Errorf("round robin over 10 new clients: %v", seen)
	}
}

func TestServerCookiesUntouchedAndOtherCookiesForwarded(t *testing.T) {
	a := startMember(t, "a", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Set-Cookie", "JSESSIONID=abc; Path=/app; HttpOnly")
		w.Header().Add("Set-Cookie", "theme=dark")
		w.Header().Set("X-Seen-Cookie", strings.Join(r.Header.Values("Cookie"), " | "))
	})
	ms := map[string]*member{"a": a, "b": a}
	h := startProxy(t, oneMember(cookieYAML("", "")), ms, nil)
	name := cookie.DeriveName(testKey, "vs:web")
	c := &http.Client{}
	resp, _ := get(t, c, h.urls["web"])
	all := resp.Header.Values("Set-Cookie")
	if len(all) != 3 || all[0] != "JSESSIONID=abc; Path=/app; HttpOnly" || all[1] != "theme=dark" || !strings.HasPrefix(all[2], name+"=") {
		t.Fatalf("Set-Cookie headers: %q", all)
	}
	ours := cookieValue(all[2])
	// Our cookie between two others, in one header, and a second header.
	resp, _ = get(t, c, h.urls["web"], "Cookie", "a=1; "+name+"="+ours+"; b=2", "Cookie", "c=3")
	if got := resp.Header.Get("X-Seen-Cookie"); got != "a=1; b=2; c=3" {
		t.Errorf("member saw Cookie %q, want the client's other cookies untouched, in one header", got)
	}
	// Only our cookie: the member gets no Cookie header at all.
	resp, _ = get(t, c, h.urls["web"], "Cookie", name+"="+ours)
	if got := resp.Header.Get("X-Seen-Cookie"); got != "" {
		t.Errorf("member saw Cookie %q, want none", got)
	}
}

func TestPersistentCookieMaxAge(t *testing.T) {
	ms := twoMembers(t)
	h := startProxy(t, cookieYAML("is_persistent_cookie: true\ntimeout: 30", ""), ms, nil)
	name := cookie.DeriveName(testKey, "vs:web")
	resp, _ := get(t, newClient(t), h.urls["web"])
	sc := setCookies(resp, name)
	if len(sc) != 1 || !strings.Contains(sc[0], "; Max-Age=1800") {
		t.Fatalf("want Max-Age=1800 (30 minutes), got %q", sc)
	}
	if strings.Contains(sc[0], "Expires") {
		t.Errorf("persistent cookie uses Max-Age, not Expires: %s", sc[0])
	}
}

func TestPersistentCookieTimeoutZeroExpiresAtOnce(t *testing.T) {
	ms := twoMembers(t)
	h := startProxy(t, cookieYAML("is_persistent_cookie: true", ""), ms, nil)
	if w := h.cfg.Warnings(); len(w) != 1 || !strings.Contains(w[0], "Max-Age=0") {
		t.Errorf("config warnings: %q", w)
	}
	name := cookie.DeriveName(testKey, "vs:web")
	resp, _ := get(t, newClient(t), h.urls["web"])
	sc := setCookies(resp, name)
	if len(sc) != 1 || !strings.Contains(sc[0], "; Max-Age=0") {
		t.Fatalf("want Max-Age=0, got %q", sc)
	}
}

func TestSessionCookieTimeoutEnforcedFromIssueTime(t *testing.T) {
	ms := twoMembers(t)
	h := startProxy(t, cookieYAML("timeout: 10", ""), ms, nil)
	name := cookie.DeriveName(testKey, "vs:web")
	c := &http.Client{}
	resp, _ := get(t, c, h.urls["web"])
	sc := setCookies(resp, name)
	if len(sc) != 1 || strings.Contains(sc[0], "Max-Age") {
		t.Fatalf("session cookie with timeout: %q", sc)
	}
	v := cookieValue(sc[0])
	// Still valid 9 minutes 59 seconds later.
	h.clock.advance(9*time.Minute + 59*time.Second)
	resp, _ = get(t, c, h.urls["web"], "Cookie", name+"="+v)
	if len(setCookies(resp, name)) != 0 {
		t.Fatalf("cookie replaced before its timeout")
	}
	if l := h.log.last(t, 2); str(l, "cookie") != "valid" {
		t.Fatalf("before timeout: %v", l)
	}
	// The client keeps sending it after 10 minutes: the server refuses it.
	h.clock.advance(2 * time.Second)
	resp, _ = get(t, c, h.urls["web"], "Cookie", name+"="+v)
	if resp.StatusCode != 200 {
		t.Fatalf("expired cookie gave status %d", resp.StatusCode)
	}
	sc = setCookies(resp, name)
	if len(sc) != 1 || cookieValue(sc[0]) == v {
		t.Fatalf("expired cookie not replaced: %q", sc)
	}
	l := h.log.last(t, 3)
	if str(l, "cookie") != "expired" || str(l, "decision") != "balanced" {
		t.Errorf("access log: %v", l)
	}
}

func TestAlwaysSendResendsSameCookie(t *testing.T) {
	ms := twoMembers(t)
	h := startProxy(t, cookieYAML("always_send: true\nis_persistent_cookie: true\ntimeout: 60", ""), ms, nil)
	name := cookie.DeriveName(testKey, "vs:web")
	c := &http.Client{}
	resp, _ := get(t, c, h.urls["web"])
	v := cookieValue(setCookies(resp, name)[0])
	h.clock.advance(10 * time.Minute)
	for i := 0; i < 3; i++ {
		resp, _ = get(t, c, h.urls["web"], "Cookie", name+"="+v)
		sc := setCookies(resp, name)
		if len(sc) != 1 {
			t.Fatalf("always_send: response %d has %q", i, resp.Header.Values("Set-Cookie"))
		}
		if cookieValue(sc[0]) != v {
			t.Fatalf("always_send re-sealed the cookie (issue time would move)")
		}
		// 60 minutes from issue, 10 gone: 3000 s left (a second of slack).
		if !strings.Contains(sc[0], "Max-Age=3000") && !strings.Contains(sc[0], "Max-Age=2999") {
			t.Fatalf("re-sent cookie should carry the remaining lifetime: %s", sc[0])
		}
	}
}

func TestCookieAttributes(t *testing.T) {
	ms := twoMembers(t)
	h := startProxy(t, cookieYAML(`cookie_name: LB
http_only: true
secure: true
same_site: strict
path: /shop
domain: example.test`, ""), ms, nil)
	resp, _ := get(t, &http.Client{}, h.urls["web"])
	sc := setCookies(resp, "LB")
	want := regexp.MustCompile(`^LB=[A-Za-z0-9_-]+; Path=/shop; Domain=example.test; Secure; HttpOnly; SameSite=Strict$`)
	if len(sc) != 1 || !want.MatchString(sc[0]) {
		t.Fatalf("Set-Cookie %q does not match %s", sc, want)
	}
}

func TestSecureByDefaultOnHTTPSAndHTTP2(t *testing.T) {
	ms := twoMembers(t)
	h := startProxy(t, cookieYAML("http_only: true", "tls_cert_file: {{CERT}}\ntls_key_file: {{CERTKEY}}"), ms, nil)
	name := cookie.DeriveName(testKey, "vs:web")
	c := newClient(t)
	resp, body := get(t, c, h.urls["web"])
	if resp.ProtoMajor != 2 {
		t.Errorf("HTTPS listener did not negotiate HTTP/2: %s", resp.Proto)
	}
	sc := setCookies(resp, name)
	if len(sc) != 1 || !strings.Contains(sc[0], "; Secure") || !strings.Contains(sc[0], "; HttpOnly") {
		t.Fatalf("HTTPS cookie: %q", sc)
	}
	if xfp := resp.Header.Get("X-Seen-XFP"); xfp != "https" {
		t.Errorf("X-Forwarded-Proto %q", xfp)
	}
	for i := 0; i < 5; i++ {
		_, b := get(t, c, h.urls["web"])
		if b != body {
			t.Fatalf("HTTP/2 client moved from %q to %q", body, b)
		}
	}
}

func TestHTTP2Off(t *testing.T) {
	ms := twoMembers(t)
	h := startProxy(t, cookieYAML("", "tls_cert_file: {{CERT}}\ntls_key_file: {{CERTKEY}}\nhttp2: false"), ms, nil)
	resp, _ := get(t, newClient(t), h.urls["web"])
	if resp.ProtoMajor != 1 {
		t.Errorf("http2: false still negotiated %s", resp.Proto)
	}
}

func TestDerivedNameStableAcrossRestarts(t *testing.T) {
	ms := twoMembers(t)
	h1 := startProxy(t, cookieYAML("", ""), ms, nil)
	resp, body := get(t, &http.Client{}, h1.urls["web"])
	name := cookie.DeriveName(testKey, "vs:web")
	v := cookieValue(setCookies(resp, name)[0])
	h1.stop()
	// A new process (or another node) with the same key and config.
	h2 := startProxy(t, cookieYAML("", ""), ms, nil)
	for i := 0; i < 4; i++ {
		resp, b := get(t, &http.Client{}, h2.urls["web"], "Cookie", name+"="+v)
		if b != body || len(resp.Header.Values("Set-Cookie")) != 0 {
			t.Fatalf("after restart the cookie no longer sticks: %q vs %q, %q", b, body, resp.Header.Values("Set-Cookie"))
		}
	}
	if cookie.DeriveName(testKey2, "vs:web") == name || cookie.DeriveName(testKey, "vs:other") == name {
		t.Errorf("derived names should differ across keys and scopes")
	}
}

func TestKeyRotation(t *testing.T) {
	ms := twoMembers(t)
	old := startProxy(t, cookieYAML("cookie_name: LB", ""), ms, nil)
	resp, body := get(t, &http.Client{}, old.urls["web"])
	v := cookieValue(setCookies(resp, "LB")[0])
	old.stop()

	// Step 1: new key first, old key kept: old cookies still open.
	rotated := strings.Replace(cookieYAML("cookie_name: LB", ""), `      - base64: "{{KEY}}"`, "      - base64: \"{{KEY2}}\"\n      - base64: \"{{KEY}}\"", 1)
	h := startProxy(t, rotated, ms, nil)
	resp, b := get(t, &http.Client{}, h.urls["web"], "Cookie", "LB="+v)
	if b != body || len(setCookies(resp, "LB")) != 0 {
		t.Fatalf("a cookie sealed by the old key should still stick: %q %q", b, resp.Header.Values("Set-Cookie"))
	}
	// New cookies are sealed by the new key.
	resp, _ = get(t, &http.Client{}, h.urls["web"])
	nv := cookieValue(setCookies(resp, "LB")[0])
	if _, idx, err := cookie.Decode(nv, [][]byte{testKey, testKey2}); err != nil || idx != 1 {
		t.Fatalf("new cookie should be sealed with the new key: idx %d err %v", idx, err)
	}
	h.stop()

	// Step 2: old key dropped: its cookies are refused (tampered), and the client is re-balanced.
	dropped := strings.Replace(cookieYAML("cookie_name: LB", ""), "{{KEY}}", "{{KEY2}}", 1)
	h = startProxy(t, dropped, ms, nil)
	resp, _ = get(t, &http.Client{}, h.urls["web"], "Cookie", "LB="+v)
	if resp.StatusCode != 200 || len(setCookies(resp, "LB")) != 1 {
		t.Fatalf("old-key cookie after rotation: %d %q", resp.StatusCode, resp.Header.Values("Set-Cookie"))
	}
	h.log.wantLast(t, map[string]any{"cookie": "tampered", "reason": "cookie_bad_seal"})
}

func TestKeyRotationMigratesDerivedName(t *testing.T) {
	ms := twoMembers(t)
	oldName := cookie.DeriveName(testKey, "vs:web")
	newName := cookie.DeriveName(testKey2, "vs:web")
	old := startProxy(t, cookieYAML("", ""), ms, nil)
	resp, body := get(t, &http.Client{}, old.urls["web"])
	v := cookieValue(setCookies(resp, oldName)[0])
	old.stop()
	rotated := strings.Replace(cookieYAML("", ""), `      - base64: "{{KEY}}"`, "      - base64: \"{{KEY2}}\"\n      - base64: \"{{KEY}}\"", 1)
	h := startProxy(t, rotated, ms, nil)
	resp, b := get(t, &http.Client{}, h.urls["web"], "Cookie", oldName+"="+v)
	if b != body {
		t.Fatalf("rotation moved the client: %q -> %q", body, b)
	}
	if sc := setCookies(resp, newName); len(sc) != 1 {
		t.Fatalf("cookie not re-issued under the new name %s: %q", newName, resp.Header.Values("Set-Cookie"))
	}
	if sc := setCookies(resp, oldName); len(sc) != 1 || !strings.Contains(sc[0], "Max-Age=0") || cookieValue(sc[0]) != "" {
		t.Fatalf("old-named cookie not deleted: %q", resp.Header.Values("Set-Cookie"))
	}
}

func TestBadCookiesAreRebalancedNeverAnError(t *testing.T) {
	ms := twoMembers(t)
	yaml := cookieYAML("cookie_name: LB\ntimeout: 5", "") + httpVS("other", "web")
	h := startProxy(t, yaml, ms, nil)
	codec, _ := cookie.NewCodec([][]byte{testKey})
	good, _ := codec.Seal(cookie.Payload{Member: ms["a"].addr, Issued: h.clock.now(), VirtualServer: "web"})
	flip := []byte(good)
	flip[len(flip)/2] ^= 1
	if flip[len(flip)/2] == '-' || flip[len(flip)/2] == '_' {
		flip[len(flip)/2] = 'A'
	}
	stranger, _ := codec.Seal(cookie.Payload{Member: netip.MustParseAddrPort("127.0.0.9:1"), Issued: h.clock.now(), VirtualServer: "web"})
	expired, _ := codec.Seal(cookie.Payload{Member: ms["a"].addr, Issued: h.clock.now().Add(-6 * time.Minute), VirtualServer: "web"})
	foreignKey, _ := cookie.NewCodec([][]byte{testKey2})
	foreign, _ := foreignKey.Seal(cookie.Payload{Member: ms["a"].addr, Issued: h.clock.now(), VirtualServer: "web"})
	cases := []struct {
		name, value, url, state, reason string
	}{
		{"tampered", string(flip), "web", "tampered", ""},
		{"truncated", good[:20], "web", "tampered", "cookie_truncated"},
		{"cut short", good[:len(good)-4], "web", "tampered", "cookie_bad_seal"},
		{"not base64", "!!not*base64!!", "web", "tampered", "cookie_bad_encoding"},
		{"empty", "", "web", "tampered", "cookie_truncated"},
		{"huge", strings.Repeat("A", 3000), "web", "tampered", "cookie_too_long"},
		{"foreign key", foreign, "web", "tampered", "cookie_bad_seal"},
		{"other virtual server", good, "other", "wrong_virtual_server", ""},
		{"member not in pool", stranger, "web", "unknown_member", ""},
		{"expired", expired, "web", "expired", ""},
	}
	n := 0
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := get(t, &http.Client{}, h.urls[tc.url], "Cookie", "LB="+tc.value)
			n++
			if resp.StatusCode != 200 || !strings.HasPrefix(body, "member=") {
				t.Fatalf("status %d body %q", resp.StatusCode, body)
			}
			sc := setCookies(resp, "LB")
			if len(sc) != 1 || cookieValue(sc[0]) == tc.value {
				t.Fatalf("a fresh cookie should replace it: %q", sc)
			}
			l := h.log.last(t, n)
			if str(l, "cookie") != tc.state || str(l, "decision") != "balanced" {
				t.Errorf("access log: %v", l)
			}
			if tc.reason != "" && str(l, "reason") != tc.reason {
				t.Errorf("reason %q, want %q", str(l, "reason"), tc.reason)
			}
		})
	}
	// The control: the good cookie sticks to a.
	for i := 0; i < 3; i++ {
		if _, body := get(t, &http.Client{}, h.urls["web"], "Cookie", "LB="+good); body != "member=a\n" {
			t.Fatalf("good cookie went to %q", body)
		}
	}
}

func TestSharedProfileHonoursCookiesAcrossVirtualServers(t *testing.T) {
	ms := twoMembers(t)
	yaml := cookieYAML("cookie_name: LB\nshare_persistence: true", "") + httpVS("other", "web")
	h := startProxy(t, yaml, ms, nil)
	resp, body := get(t, &http.Client{}, h.urls["web"])
	v := cookieValue(setCookies(resp, "LB")[0])
	for i := 0; i < 3; i++ {
		resp, b := get(t, &http.Client{}, h.urls["other"], "Cookie", "LB="+v)
		if b != body || len(setCookies(resp, "LB")) != 0 {
			t.Fatalf("shared profile: other virtual server moved the client: %q vs %q", b, body)
		}
	}
}

func TestDuplicateCookies(t *testing.T) {
	ms := twoMembers(t)
	h := startProxy(t, cookieYAML("cookie_name: LB", ""), ms, nil)
	codec, _ := cookie.NewCodec([][]byte{testKey})
	toB, _ := codec.Seal(cookie.Payload{Member: ms["b"].addr, Issued: h.clock.now(), VirtualServer: "web"})
	// A stale tampered copy (say from another path) and the valid one, in two headers.
	resp, body := get(t, &http.Client{}, h.urls["web"], "Cookie", "LB=garbage", "Cookie", "x=1; LB="+toB)
	if body != "member=b\n" || resp.StatusCode != 200 {
		t.Fatalf("valid duplicate should win: %d %q", resp.StatusCode, body)
	}
	l := h.log.last(t, 1)
	if str(l, "cookie") != "valid" || str(l, "reason") != "duplicate_cookie" {
		t.Errorf("access log: %v", l)
	}
	if seen := resp.Header.Get("X-Seen-Cookie"); seen != "x=1" {
		t.Errorf("member saw %q; every copy of the persistence cookie must be removed", seen)
	}
	// Hundreds of copies: bounded work, still a normal answer.
	many := strings.TrimSuffix(strings.Repeat("LB=AAAA; ", 500), "; ")
	resp, _ = get(t, &http.Client{}, h.urls["web"], "Cookie", many)
	if resp.StatusCode != 200 {
		t.Fatalf("500 copies of the cookie: status %d", resp.StatusCode)
	}
	if l := h.log.last(t, 2); str(l, "cookie") != "tampered" {
		t.Errorf("access log: %v", l)
	}
}
