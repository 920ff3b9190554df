package l7

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/l7/cookie"
	"github.com/limpet-lb/limpet/test/chromium"
	"github.com/limpet-lb/limpet/test/testutil"
)

// curlResult is one curl exchange.
type curlResult struct {
	status int
	header http.Header
	body   string
}

// curl runs curl with a cookie jar (read and written) against url.
func curl(t *testing.T, bin, jar, url string) curlResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-sS", "--max-time", "10", "--noproxy", "*",
		"-c", jar, "-b", jar, "-D", "-", url).Output()
	if err != nil {
		t.Fatalf("curl %s: %v", url, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(string(out))), nil)
	if err != nil {
		t.Fatalf("curl output %q: %v", out, err)
	}
	b, _ := io.ReadAll(resp.Body)
	return curlResult{resp.StatusCode, resp.Header, string(b)}
}

func (r curlResult) cookie(name string) string {
	for _, l := range r.header.Values("Set-Cookie") {
		if strings.HasPrefix(l, name+"=") {
			return l
		}
	}
	return ""
}

func TestCurlCookieJarSticks(t *testing.T) {
	bin := testutil.NeedTool(t, "curl", "curl")
	for _, tc := range []struct {
		name, profile, maxAge string
	}{
		{"session", "http_only: true", ""},
		{"persistent", "http_only: true\nis_persistent_cookie: true\ntimeout: 45", "Max-Age=2700"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ms := map[string]*member{"a": startMember(t, "a", nil), "b": startMember(t, "b", nil), "c": startMember(t, "c", nil)}
			yaml := strings.Replace(cookieYAML(tc.profile, ""), "      - {name: b, address: 127.0.0.1, port: {{M:b}}}\n",
				"      - {name: b, address: 127.0.0.1, port: {{M:b}}}\n      - {name: c, address: 127.0.0.1, port: {{M:c}}}\n", 1)
			h := startProxy(t, yaml, ms, nil)
			name := cookie.DeriveName(testKey, "vs:web")
			jar := filepath.Join(t.TempDir(), "jar")
			first := curl(t, bin, jar, h.urls["web"])
			sc := first.cookie(name)
			if first.status != 200 || sc == "" {
				t.Fatalf("first response %d, Set-Cookie %q", first.status, first.header.Values("Set-Cookie"))
			}
			if tc.maxAge == "" && (strings.Contains(sc, "Max-Age") || strings.Contains(sc, "Expires")) {
				t.Fatalf("session cookie with a lifetime: %s", sc)
			}
			if tc.maxAge != "" && !strings.Contains(sc, "; "+tc.maxAge) {
				t.Fatalf("persistent cookie %s lacks %s", sc, tc.maxAge)
			}
			jarText, _ := os.ReadFile(jar)
			line := jarLine(string(jarText), name)
			if line == nil {
				t.Fatalf("curl did not store the cookie: %q", jarText)
			}
			// Netscape jar: HttpOnly cookies get the #HttpOnly_ prefix, the
			// fifth field is the expiry (0 for a session cookie).
			if !strings.HasPrefix(line[0], "#HttpOnly_") {
				t.Errorf("jar line %q: not HttpOnly", line)
			}
			if (tc.maxAge == "") != (line[4] == "0") {
				t.Errorf("jar expiry %q for a %s cookie", line[4], tc.name)
			}
			for i := 0; i < 8; i++ {
				r := curl(t, bin, jar, h.urls["web"])
				if r.body != first.body {
					t.Fatalf("request %d went to %q, first to %q", i, r.body, first.body)
				}
				if r.cookie(name) != "" {
					t.Fatalf("cookie re-sent: %q", r.cookie(name))
				}
			}
			// A different client (empty jar) is balanced elsewhere.
			if r := curl(t, bin, filepath.Join(t.TempDir(), "jar2"), h.urls["web"]); r.body == first.body {
				t.Errorf("second client landed on the same member under round robin")
			}
		})
	}
}

func jarLine(jar, name string) []string {
	for _, l := range strings.Split(jar, "\n") {
		f := strings.Split(l, "\t")
		if len(f) == 7 && f[5] == name {
			return f
		}
	}
	return nil
}

func TestCurlFailover(t *testing.T) {
	bin := testutil.NeedTool(t, "curl", "curl")
	for _, policy := range []string{"immediate", "never"} {
		t.Run(policy, func(t *testing.T) {
			ms := twoMembers(t)
			h := startProxy(t, cookieYAML("server_down: "+policy+"\ntimeout: 10", ""), ms, nil)
			name := cookie.DeriveName(testKey, "vs:web")
			jar := filepath.Join(t.TempDir(), "jar")
			first := curl(t, bin, jar, h.urls["web"])
			oldCookie := cookieValue(first.cookie(name))
			mine := ms[strings.TrimSpace(strings.TrimPrefix(first.body, "member="))]
			mine.stop()
			r := curl(t, bin, jar, h.urls["web"])
			if policy == "never" {
				if r.status != 503 || r.header.Get("Retry-After") == "" {
					t.Fatalf("never: status %d Retry-After %q", r.status, r.header.Get("Retry-After"))
				}
				return
			}
			if r.status != 200 || r.body == first.body {
				t.Fatalf("immediate: status %d body %q (was %q)", r.status, r.body, first.body)
			}
			nc := cookieValue(r.cookie(name))
			if nc == "" || nc == oldCookie {
				t.Fatalf("immediate: want a new cookie, got %q", r.header.Values("Set-Cookie"))
			}
			// The jar now holds the new cookie: the client sticks to its new member.
			for i := 0; i < 3; i++ {
				if again := curl(t, bin, jar, h.urls["web"]); again.body != r.body {
					t.Fatalf("after failover the client moved again: %q", again.body)
				}
			}
		})
	}
}

// browserPage is what the test page reports about itself.
type browserPage struct {
	Member  string `json:"member"`
	Cookies string `json:"cookies"`
}

func TestChromiumSticksAndHidesHttpOnlyCookie(t *testing.T) {
	bin := chromium.Find(t)
	page := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/favicon.ico" {
				http.NotFound(w, r)
				return
			}
			// A cookie of the application's own, readable by scripts, so
			// that document.cookie is shown to work at all.
			http.SetCookie(w, &http.Cookie{Name: "app", Value: "visible", Path: "/"})
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprintf(w, `<!doctype html><html><body><div id="member">%s</div>
<pre id="cookies"></pre>
<script>document.getElementById("cookies").textContent = document.cookie;</script>
</body></html>`, name)
		}
	}
	ms := map[string]*member{"a": startMember(t, "a", page("a")), "b": startMember(t, "b", page("b"))}
	h := startProxy(t, cookieYAML("http_only: true", ""), ms, nil)
	name := cookie.DeriveName(testKey, "vs:web")
	url := h.urls["web"] + "/index.html"

	c := chromium.Start(t, bin, chromium.Options{})
	pg := c.NewPage(t)
	read := func() browserPage {
		t.Helper()
		var v string
		pg.Eval(`JSON.stringify({member: document.getElementById("member").textContent, cookies: document.getElementById("cookies").textContent})`, &v)
		var p browserPage
		if err := json.Unmarshal([]byte(v), &p); err != nil {
			t.Fatalf("page state %q: %v", v, err)
		}
		return p
	}
	load := func(method string, params any) browserPage {
		t.Helper()
		pg.Do(method, params)
		return read()
	}
	first := load("Page.navigate", map[string]any{"url": url})
	if first.Member != "a" && first.Member != "b" {
		t.Fatalf("page did not load through the proxy: %+v", first)
	}
	for i := 0; i < 5; i++ {
		p := load("Page.reload", map[string]any{"ignoreCache": true})
		if p.Member != first.Member {
			t.Fatalf("reload %d reached %s, first load reached %s", i, p.Member, first.Member)
		}
		if !strings.Contains(p.Cookies, "app=visible") {
			t.Fatalf("document.cookie %q lacks the page's own cookie", p.Cookies)
		}
		if strings.Contains(p.Cookies, name) {
			t.Fatalf("document.cookie %q shows the HttpOnly persistence cookie", p.Cookies)
		}
	}
	// The browser does hold it, as HttpOnly.
	res, err := c.Call("", "Storage.getCookies", nil)
	if err != nil {
		t.Fatal(err)
	}
	var jar struct {
		Cookies []struct {
			Name     string  `json:"name"`
			HTTPOnly bool    `json:"httpOnly"`
			Session  bool    `json:"session"`
			Expires  float64 `json:"expires"`
		} `json:"cookies"`
	}
	json.Unmarshal(res, &jar)
	found := false
	for _, ck := range jar.Cookies {
		if ck.Name == name {
			found = true
			if !ck.HTTPOnly || !ck.Session {
				t.Errorf("browser cookie %+v: want HttpOnly session cookie", ck)
			}
		}
	}
	if !found {
		t.Fatalf("the browser has no %s cookie: %+v", name, jar.Cookies)
	}
	other := ms["a"]
	if first.Member == "a" {
		other = ms["b"]
	}
	if other.hits.Load() != 0 {
		t.Errorf("the other member saw %d requests from a pinned browser", other.hits.Load())
	}
	l := h.log.lines(t)
	if len(l) < 6 || str(l[len(l)-1], "cookie") != "valid" || str(l[len(l)-1], "decision") != "persisted" {
		t.Errorf("access log tail: %v", l[len(l)-1])
	}
}
