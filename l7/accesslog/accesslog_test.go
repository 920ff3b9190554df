package accesslog

import (
	"bytes"
	"encoding/json"
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
