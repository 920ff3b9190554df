package l7

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/l7/cookie"
)

// needTool returns the path of an external tool. Without it the test is
// skipped, except in CI (CI=true) or when LIMPET_REQUIRE_ROOT=1, where a
// missing tool must fail rather than hide.
func needTool(t *testing.T, names ...string) string {
	t.Helper()
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	msg := fmt.Sprintf("%s not installed (apt-get install -y %s)", names[0], names[0])
	if os.Getenv("CI") == "true" || os.Getenv("LIMPET_REQUIRE_ROOT") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

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
	bin := needTool(t, "curl")
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
	bin := needTool(t, "curl")
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

// cdp speaks the Chrome DevTools Protocol over --remote-debugging-pipe:
// JSON messages separated by NUL bytes, commands on fd 3, replies on fd 4.
type cdp struct {
	cmd     *exec.Cmd
	w       io.WriteCloser
	mu      sync.Mutex
	nextID  int
	pending map[int]chan cdpMsg
	events  chan cdpMsg
	done    chan struct{}
	stderr  *syncBuffer
}

type cdpMsg struct {
	ID        int             `json:"id,omitempty"`
	Method    string          `json:"method,omitempty"`
	Params    json.RawMessage `json:"params,omitempty"`
	Result    json.RawMessage `json:"result,omitempty"`
	SessionID string          `json:"sessionId,omitempty"`
	Error     *struct {
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

func startChromium(t *testing.T, bin string) *cdp {
	t.Helper()
	toChrome, fromUs, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	fromChrome, toUs, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	c := &cdp{w: fromUs, pending: map[int]chan cdpMsg{}, events: make(chan cdpMsg, 1024), done: make(chan struct{}), stderr: &syncBuffer{}}
	c.cmd = exec.Command(bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
		"--disable-default-apps", "--no-proxy-server", "--mute-audio",
		"--user-data-dir="+t.TempDir(), "--remote-debugging-pipe", "about:blank")
	c.cmd.ExtraFiles = []*os.File{toChrome, toUs}
	c.cmd.Stderr = c.stderr
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	toChrome.Close()
	toUs.Close()
	go c.read(bufio.NewReader(fromChrome))
	t.Cleanup(func() {
		c.call("", "Browser.close", nil)
		exited := make(chan struct{})
		go func() { c.cmd.Wait(); close(exited) }()
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			c.cmd.Process.Kill()
			<-exited
		}
		fromUs.Close()
		fromChrome.Close()
	})
	return c
}

func (c *cdp) read(r *bufio.Reader) {
	defer close(c.done)
	for {
		b, err := r.ReadBytes(0)
		if err != nil {
			return
		}
		var m cdpMsg
		if json.Unmarshal(b[:len(b)-1], &m) != nil {
			continue
		}
		if m.ID != 0 {
			c.mu.Lock()
			ch := c.pending[m.ID]
			delete(c.pending, m.ID)
			c.mu.Unlock()
			if ch != nil {
				ch <- m
			}
			continue
		}
		select {
		case c.events <- m:
		default:
		}
	}
}

func (c *cdp) call(session, method string, params any) (json.RawMessage, error) {
	c.mu.Lock()
	c.nextID++
	id := c.nextID
	ch := make(chan cdpMsg, 1)
	c.pending[id] = ch
	c.mu.Unlock()
	msg := map[string]any{"id": id, "method": method}
	if params != nil {
		msg["params"] = params
	}
	if session != "" {
		msg["sessionId"] = session
	}
	b, _ := json.Marshal(msg)
	if _, err := c.w.Write(append(b, 0)); err != nil {
		return nil, err
	}
	select {
	case m := <-ch:
		if m.Error != nil {
			return nil, fmt.Errorf("%s: %s", method, m.Error.Message)
		}
		return m.Result, nil
	case <-c.done:
		return nil, errors.New(method + ": chromium exited: " + c.stderrTail())
	case <-time.After(20 * time.Second):
		return nil, errors.New(method + ": no reply")
	}
}

func (c *cdp) stderrTail() string {
	c.stderr.mu.Lock()
	defer c.stderr.mu.Unlock()
	s := c.stderr.b.String()
	if len(s) > 2000 {
		s = s[len(s)-2000:]
	}
	return s
}

// waitEvent waits for an event of session.
func (c *cdp) waitEvent(session, method string) error {
	deadline := time.After(20 * time.Second)
	for {
		select {
		case m := <-c.events:
			if m.Method == method && m.SessionID == session {
				return nil
			}
		case <-c.done:
			return errors.New("chromium exited")
		case <-deadline:
			return errors.New("no " + method)
		}
	}
}

func (c *cdp) drain() {
	for {
		select {
		case <-c.events:
		default:
			return
		}
	}
}

// browserPage is what the test page reports about itself.
type browserPage struct {
	Member  string `json:"member"`
	Cookies string `json:"cookies"`
}

func TestChromiumSticksAndHidesHttpOnlyCookie(t *testing.T) {
	bin := needTool(t, "chromium", "chromium-browser")
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

	c := startChromium(t, bin)
	res, err := c.call("", "Target.createTarget", map[string]any{"url": "about:blank"})
	if err != nil {
		t.Fatalf("%v\n%s", err, c.stderrTail())
	}
	var target struct {
		TargetID string `json:"targetId"`
	}
	json.Unmarshal(res, &target)
	res, err = c.call("", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true})
	if err != nil {
		t.Fatal(err)
	}
	var att struct {
		SessionID string `json:"sessionId"`
	}
	json.Unmarshal(res, &att)
	s := att.SessionID
	if _, err := c.call(s, "Page.enable", nil); err != nil {
		t.Fatal(err)
	}
	read := func() browserPage {
		t.Helper()
		res, err := c.call(s, "Runtime.evaluate", map[string]any{
			"expression":    `JSON.stringify({member: document.getElementById("member").textContent, cookies: document.getElementById("cookies").textContent})`,
			"returnByValue": true,
		})
		if err != nil {
			t.Fatal(err)
		}
		var ev struct {
			Result struct {
				Value string `json:"value"`
			} `json:"result"`
		}
		json.Unmarshal(res, &ev)
		var p browserPage
		if err := json.Unmarshal([]byte(ev.Result.Value), &p); err != nil {
			t.Fatalf("page state %q: %v", ev.Result.Value, err)
		}
		return p
	}
	load := func(method string, params any) browserPage {
		t.Helper()
		c.drain()
		if _, err := c.call(s, method, params); err != nil {
			t.Fatal(err)
		}
		if err := c.waitEvent(s, "Page.loadEventFired"); err != nil {
			t.Fatalf("%s: %v", method, err)
		}
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
	res, err = c.call("", "Storage.getCookies", nil)
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
