package accesslog

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLogWritesOneJSONLine(t *testing.T) {
	var b bytes.Buffer
	lg := New(&b)
	lg.Log(&Entry{
		Time: time.Date(2025, 5, 6, 7, 8, 9, 123e6, time.UTC), Client: "192.0.2.1:5000", VirtualServer: "web",
		Proto: "HTTP/1.1", Method: "GET", Host: "shop", URI: "/x?y=1", Status: 200, Bytes: 42,
		Duration: 1500 * time.Microsecond, Persistence: "http_cookie", Cookie: "tampered",
		Decision: "balanced", Reason: "cookie_bad_seal", Member: "a", MemberAddr: "10.0.0.1:80", CookieSet: true,
	})
	if strings.Count(b.String(), "\n") != 1 {
		t.Fatalf("want one line: %q", b.String())
	}
	var m map[string]any
	if err := json.Unmarshal(b.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"time": "2025-05-06T07:08:09.123Z", "msg": "access", "client": "192.0.2.1:5000", "virtual_server": "web",
		"status": 200.0, "bytes": 42.0, "duration_ms": 1.5, "persistence": "http_cookie", "cookie": "tampered",
		"decision": "balanced", "reason": "cookie_bad_seal", "member": "a", "member_addr": "10.0.0.1:80", "cookie_set": true,
		"uri": "/x?y=1", "method": "GET", "host": "shop", "proto": "HTTP/1.1",
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v", k, m[k], v)
		}
	}
	for _, absent := range []string{"key", "retries", "upgrade", "error"} {
		if _, ok := m[absent]; ok {
			t.Errorf("empty field %s should be left out", absent)
		}
	}
}

func TestSinks(t *testing.T) {
	var out, errw bytes.Buffer
	s := NewSinks(&out, &errw)
	a, _ := s.Open("stdout")
	b, _ := s.Open("stdout")
	if a != b {
		t.Fatal("one logger per destination")
	}
	a.Log(&Entry{Decision: "x"})
	e, _ := s.Open("stderr")
	e.Log(&Entry{Decision: "y"})
	off, _ := s.Open("off")
	off.Log(&Entry{Decision: "z"})
	if !strings.Contains(out.String(), `"decision":"x"`) || !strings.Contains(errw.String(), `"decision":"y"`) || strings.Contains(out.String()+errw.String(), `"z"`) {
		t.Fatalf("out %q err %q", out.String(), errw.String())
	}
	path := filepath.Join(t.TempDir(), "access.log")
	f, err := s.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Log(&Entry{Decision: "file"})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if !strings.Contains(string(data), `"decision":"file"`) {
		t.Fatalf("file: %q", data)
	}
	if _, err := s.Open(filepath.Join(t.TempDir(), "no", "such", "dir", "x.log")); err == nil {
		t.Fatal("unwritable path accepted")
	}
	var nilLogger *Logger
	nilLogger.Log(&Entry{}) // no panic
}

// slogLine is how the access log was written before it was encoded by
// hand (a log/slog JSON handler): the reference for AppendJSON.
func slogLine(e *Entry) string {
	var b bytes.Buffer
	h := slog.NewJSONHandler(&b, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.String(slog.TimeKey, a.Value.Time().UTC().Format("2006-01-02T15:04:05.000Z07:00"))
			}
			return a
		},
	})
	attrs := []slog.Attr{
		slog.String("client", e.Client), slog.String("virtual_server", e.VirtualServer), slog.String("proto", e.Proto),
		slog.String("method", e.Method), slog.String("host", e.Host), slog.String("uri", e.URI), slog.Int("status", e.Status),
		slog.Int64("bytes", e.Bytes), slog.Float64("duration_ms", float64(e.Duration.Microseconds())/1000),
	}
	if e.Persistence != "" {
		attrs = append(attrs, slog.String("persistence", e.Persistence))
	}
	if e.Cookie != "" {
		attrs = append(attrs, slog.String("cookie", e.Cookie))
	}
	if e.Key != "" {
		attrs = append(attrs, slog.String("key", e.Key))
	}
	attrs = append(attrs, slog.String("decision", e.Decision))
	if e.Reason != "" {
		attrs = append(attrs, slog.String("reason", e.Reason))
	}
	if e.Member != "" {
		attrs = append(attrs, slog.String("member", e.Member), slog.String("member_addr", e.MemberAddr))
	}
	if e.CookieSet {
		attrs = append(attrs, slog.Bool("cookie_set", true))
	}
	if e.Retries > 0 {
		attrs = append(attrs, slog.Int("retries", e.Retries))
	}
	if e.Upgrade != "" {
		attrs = append(attrs, slog.String("upgrade", e.Upgrade))
	}
	if e.Error != "" {
		attrs = append(attrs, slog.String("error", e.Error))
	}
	r := slog.NewRecord(e.Time, slog.LevelInfo, "access", 0)
	r.AddAttrs(attrs...)
	_ = h.Handle(context.Background(), r)
	return b.String()
}

// TestAppendJSONMatchesSlog: the hand-made encoder writes, byte for byte,
// the lines the slog handler wrote, escapes included.
func TestAppendJSONMatchesSlog(t *testing.T) {
	odd := []string{"", "plain", `quo"te`, `back\slash`, "new\nline", "tab\there", "cr\rx", "nul\x00", "\x1f\x7f",
		"é ü 日本", "\u2028\u2029", "bad\xffutf8", "\xc3", "<script>&amp;</script>", strings.Repeat("x", 300)}
	durations := []time.Duration{0, time.Microsecond, 1500 * time.Microsecond, 3200 * time.Microsecond, 123456789 * time.Microsecond, time.Hour * 1000}
	at := time.Date(2025, 5, 6, 7, 8, 9, 123456789, time.FixedZone("x", 3600))
	n := 0
	for i, s := range odd {
		for j, d := range durations {
			e := &Entry{
				Time: at.Add(time.Duration(i*j) * time.Millisecond), Client: s, VirtualServer: "web", Proto: "HTTP/1.1",
				Method: s, Host: s, URI: "/" + s, Status: 200 + i, Bytes: int64(j * 1000), Duration: d,
				Persistence: s, Cookie: s, Key: s, Decision: "balanced", Reason: s, Member: s, MemberAddr: s,
				CookieSet: i%2 == 0, Retries: j % 3, Upgrade: s, Error: s,
			}
			want := slogLine(e)
			if got := string(AppendJSON(nil, e)); got != want {
				t.Errorf("entry %d/%d:\n got  %s\n want %s", i, j, got, want)
			}
			n++
		}
	}
	if got, want := string(AppendJSON(nil, &Entry{Decision: "rejected"})), slogLine(&Entry{Decision: "rejected"}); got != want {
		t.Errorf("empty entry:\n got  %s\n want %s", got, want)
	}
}

func TestFileLogIsBatchedAndFlushed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	s := NewSinks(nil, nil)
	lg, err := s.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		lg.Log(&Entry{Decision: "batched", Status: i})
	}
	// Written within flushDelay, without a Close.
	deadline := time.Now().Add(2 * time.Second)
	for {
		data, _ := os.ReadFile(path)
		if strings.Count(string(data), "\n") == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lines not flushed: %q", data)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// More than a batch: written as it fills; the rest on Close.
	for i := 0; i < 1000; i++ {
		lg.Log(&Entry{Decision: "many", Status: i})
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != 1003 {
		t.Fatalf("%d lines, want 1003", len(lines))
	}
	for i, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %d is not JSON: %q", i, l)
		}
		if i >= 3 && int(m["status"].(float64)) != i-3 {
			t.Fatalf("line %d out of order: %q", i, l)
		}
	}
}

func BenchmarkLog(b *testing.B) {
	lg := New(io.Discard)
	e := &Entry{Time: time.Now(), Client: "192.0.2.1:5000", VirtualServer: "web", Proto: "HTTP/1.1", Method: "GET", Host: "shop",
		URI: "/x?y=1", Status: 200, Bytes: 42, Duration: 1500 * time.Microsecond, Persistence: "http_cookie", Cookie: "valid",
		Decision: "persisted", Member: "a", MemberAddr: "10.0.0.1:80"}
	b.ReportAllocs()
	for b.Loop() {
		lg.Log(e)
	}
}
