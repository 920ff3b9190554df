// Package chromium drives a headless Chromium through the DevTools protocol
// over --remote-debugging-pipe, for tests that load pages as a user would:
// navigate, evaluate JavaScript in the page, read cookies, take screenshots.
package chromium

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/test/testutil"
)

// Find returns Chromium's path. Without it the test is skipped, except in
// CI (CI=true) or with LIMPET_REQUIRE_ROOT=1, where it fails.
func Find(t testing.TB) string {
	t.Helper()
	return testutil.NeedTool(t, "chromium", "chromium", "chromium-browser")
}

// Browser is one Chromium process. Commands go to fd 3, replies come from
// fd 4: JSON messages separated by NUL bytes.
type Browser struct {
	cmd     *exec.Cmd
	w       *os.File
	mu      sync.Mutex
	nextID  int
	pending map[int]chan message
	events  chan message
	done    chan struct{}
	stderr  *testutil.Buffer
}

type message struct {
	ID        int             `json:"id,omitempty"`
	Method    string          `json:"method,omitempty"`
	Params    json.RawMessage `json:"params,omitempty"`
	Result    json.RawMessage `json:"result,omitempty"`
	SessionID string          `json:"sessionId,omitempty"`
	Error     *struct {
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

// Options adjust the browser.
type Options struct {
	// Start starts the prepared command, e.g. in a lab host's network
	// namespace; nil means cmd.Start. The command must be waited for by
	// whoever starts it: Done reports its exit.
	Start func(cmd *exec.Cmd) (done <-chan struct{}, err error)
	// Width and Height are the window size (default 1280x900).
	Width, Height int
}

// Start launches a headless Chromium with a fresh profile and closes it
// when t ends.
func Start(t testing.TB, bin string, opts Options) *Browser {
	t.Helper()
	if opts.Width == 0 {
		opts.Width, opts.Height = 1280, 900
	}
	toChrome, fromUs, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	fromChrome, toUs, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	b := &Browser{w: fromUs, pending: map[int]chan message{}, events: make(chan message, 1024), done: make(chan struct{}), stderr: &testutil.Buffer{}}
	b.cmd = exec.Command(bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
		"--disable-default-apps", "--no-proxy-server", "--mute-audio", "--hide-scrollbars",
		fmt.Sprintf("--window-size=%d,%d", opts.Width, opts.Height),
		"--user-data-dir="+t.TempDir(), "--remote-debugging-pipe", "about:blank")
	b.cmd.ExtraFiles = []*os.File{toChrome, toUs}
	b.cmd.Stderr = b.stderr
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	exited := make(chan struct{})
	if opts.Start != nil {
		done, err := opts.Start(b.cmd)
		if err != nil {
			t.Fatalf("start chromium: %v", err)
		}
		go func() { <-done; close(exited) }()
	} else {
		if err := b.cmd.Start(); err != nil {
			t.Fatalf("start chromium: %v", err)
		}
		go func() { b.cmd.Wait(); close(exited) }()
	}
	toChrome.Close()
	toUs.Close()
	go b.read(bufio.NewReader(fromChrome))
	t.Cleanup(func() {
		_, _ = b.Call("", "Browser.close", nil)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			if b.cmd.Process != nil {
				_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
			}
			<-exited
		}
		fromUs.Close()
		fromChrome.Close()
	})
	return b
}

func (b *Browser) read(r *bufio.Reader) {
	defer close(b.done)
	for {
		line, err := r.ReadBytes(0)
		if err != nil {
			return
		}
		var m message
		if json.Unmarshal(line[:len(line)-1], &m) != nil {
			continue
		}
		if m.ID != 0 {
			b.mu.Lock()
			ch := b.pending[m.ID]
			delete(b.pending, m.ID)
			b.mu.Unlock()
			if ch != nil {
				ch <- m
			}
			continue
		}
		select {
		case b.events <- m:
		default:
		}
	}
}

// Call sends one command (to a page session, or to the browser when
// session is empty) and returns its result.
func (b *Browser) Call(session, method string, params any) (json.RawMessage, error) {
	b.mu.Lock()
	b.nextID++
	id := b.nextID
	ch := make(chan message, 1)
	b.pending[id] = ch
	b.mu.Unlock()
	msg := map[string]any{"id": id, "method": method}
	if params != nil {
		msg["params"] = params
	}
	if session != "" {
		msg["sessionId"] = session
	}
	raw, _ := json.Marshal(msg)
	if _, err := b.w.Write(append(raw, 0)); err != nil {
		return nil, err
	}
	select {
	case m := <-ch:
		if m.Error != nil {
			return nil, fmt.Errorf("%s: %s", method, m.Error.Message)
		}
		return m.Result, nil
	case <-b.done:
		return nil, errors.New(method + ": chromium exited: " + b.StderrTail())
	case <-time.After(20 * time.Second):
		return nil, errors.New(method + ": no reply")
	}
}

// StderrTail is the end of what Chromium wrote to stderr.
func (b *Browser) StderrTail() string {
	s := b.stderr.String()
	if len(s) > 2000 {
		s = s[len(s)-2000:]
	}
	return s
}

// WaitEvent waits for an event of a session.
func (b *Browser) WaitEvent(session, method string) error {
	deadline := time.After(20 * time.Second)
	for {
		select {
		case m := <-b.events:
			if m.Method == method && m.SessionID == session {
				return nil
			}
		case <-b.done:
			return errors.New("chromium exited")
		case <-deadline:
			return errors.New("no " + method)
		}
	}
}

// Drain drops the events received so far.
func (b *Browser) Drain() {
	for {
		select {
		case <-b.events:
		default:
			return
		}
	}
}

// Page is one tab, attached with a flat session.
type Page struct {
	b       *Browser
	t       testing.TB
	Session string
}

// NewPage opens a blank tab and enables its page events.
func (b *Browser) NewPage(t testing.TB) *Page {
	t.Helper()
	res, err := b.Call("", "Target.createTarget", map[string]any{"url": "about:blank"})
	if err != nil {
		t.Fatalf("%v\n%s", err, b.StderrTail())
	}
	var target struct {
		TargetID string `json:"targetId"`
	}
	_ = json.Unmarshal(res, &target)
	res, err = b.Call("", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true})
	if err != nil {
		t.Fatal(err)
	}
	var att struct {
		SessionID string `json:"sessionId"`
	}
	_ = json.Unmarshal(res, &att)
	p := &Page{b: b, t: t, Session: att.SessionID}
	if _, err := b.Call(p.Session, "Page.enable", nil); err != nil {
		t.Fatal(err)
	}
	return p
}

// Do runs a page command (Page.navigate, Page.reload...) and waits for the
// load event it causes.
func (p *Page) Do(method string, params any) {
	p.t.Helper()
	p.b.Drain()
	if _, err := p.b.Call(p.Session, method, params); err != nil {
		p.t.Fatal(err)
	}
	if err := p.b.WaitEvent(p.Session, "Page.loadEventFired"); err != nil {
		p.t.Fatalf("%s: %v", method, err)
	}
}

// Navigate loads url and waits for its load event.
func (p *Page) Navigate(url string) { p.t.Helper(); p.Do("Page.navigate", map[string]any{"url": url}) }

// Eval evaluates a JavaScript expression in the page and decodes its
// value (returned by value, so it must be JSON-serialisable) into out.
func (p *Page) Eval(expr string, out any) {
	p.t.Helper()
	res, err := p.b.Call(p.Session, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true})
	if err != nil {
		p.t.Fatal(err)
	}
	var ev struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	if err := json.Unmarshal(res, &ev); err != nil {
		p.t.Fatal(err)
	}
	if ev.ExceptionDetails != nil {
		p.t.Fatalf("evaluate %q: %s %s", expr, ev.ExceptionDetails.Text, ev.ExceptionDetails.Exception.Description)
	}
	if out != nil {
		if err := json.Unmarshal(ev.Result.Value, out); err != nil {
			p.t.Fatalf("evaluate %q: value %s: %v", expr, ev.Result.Value, err)
		}
	}
}

// Screenshot captures the viewport as PNG.
func (p *Page) Screenshot() []byte {
	p.t.Helper()
	res, err := p.b.Call(p.Session, "Page.captureScreenshot", map[string]any{"format": "png"})
	if err != nil {
		p.t.Fatal(err)
	}
	var shot struct {
		Data string `json:"data"`
	}
	_ = json.Unmarshal(res, &shot)
	png, err := base64.StdEncoding.DecodeString(shot.Data)
	if err != nil {
		p.t.Fatal(err)
	}
	return png
}
