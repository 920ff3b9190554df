// Package accesslog writes the L7 proxy's access log: one JSON object per
// line through log/slog, one line per request (and per request the server
// refused before a handler saw it).
package accesslog

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"
)

// Entry is one request.
type Entry struct {
	Time          time.Time
	Client        string // address:port of the TCP peer
	VirtualServer string
	Proto         string
	Method        string
	Host          string
	URI           string
	Status        int
	Bytes         int64 // response body bytes written to the client
	Duration      time.Duration
	// Persistence is the profile type in use: http_cookie, app_cookie,
	// generic, source_ip, or empty.
	Persistence string
	// Cookie is the state of the persistence cookie (http_cookie and
	// app_cookie): none, valid, expired, tampered, unknown_member,
	// wrong_virtual_server; for app_cookie, unknown_value means a value
	// not in the table.
	Cookie string
	// Key is, for generic and source_ip, whether the table had the key: none, hit, miss.
	Key string
	// Decision says how the member was chosen: persisted, balanced,
	// rebalanced, server_down, no_member, table_full, rejected.
	Decision   string
	Reason     string
	Member     string
	MemberAddr string
	// CookieSet is true when the response carried a new or re-sent persistence cookie.
	CookieSet bool
	Retries   int
	Upgrade   string
	Error     string
}

// Logger writes entries as JSON lines.
type Logger struct {
	l *slog.Logger
}

// New returns a logger that writes JSON lines to w.
func New(w io.Writer) *Logger {
	h := slog.NewJSONHandler(w, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				// RFC 3339 with milliseconds, UTC: sortable and compact.
				return slog.String(slog.TimeKey, a.Value.Time().UTC().Format("2006-01-02T15:04:05.000Z07:00"))
			}
			return a
		},
	})
	return &Logger{l: slog.New(h)}
}

// Discard is a logger that writes nothing.
func Discard() *Logger { return &Logger{} }

// Log writes one entry. A nil or discarding logger does nothing.
func (lg *Logger) Log(e *Entry) {
	if lg == nil || lg.l == nil {
		return
	}
	attrs := make([]slog.Attr, 0, 22)
	attrs = append(attrs,
		slog.String("client", e.Client),
		slog.String("virtual_server", e.VirtualServer),
		slog.String("proto", e.Proto),
		slog.String("method", e.Method),
		slog.String("host", e.Host),
		slog.String("uri", e.URI),
		slog.Int("status", e.Status),
		slog.Int64("bytes", e.Bytes),
		slog.Float64("duration_ms", float64(e.Duration.Microseconds())/1000),
	)
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
	_ = lg.l.Handler().Handle(context.Background(), r)
}

// Sinks opens access log destinations once each, so virtual servers that
// name the same file share one writer and their lines never interleave.
type Sinks struct {
	mu     sync.Mutex
	byDest map[string]*Logger
	files  []*os.File
	stdout io.Writer
	stderr io.Writer
}

// NewSinks returns an empty set of sinks writing "stdout" and "stderr" to
// the given writers (os.Stdout and os.Stderr when nil).
func NewSinks(stdout, stderr io.Writer) *Sinks {
	if stdout == nil {
		stdout = os.Stdout
	}
	if stderr == nil {
		stderr = os.Stderr
	}
	return &Sinks{byDest: map[string]*Logger{}, stdout: stdout, stderr: stderr}
}

// Open returns the logger for a destination: stdout, stderr, off, or a file
// path (opened for appending, created with mode 0640).
func (s *Sinks) Open(dest string) (*Logger, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if lg, ok := s.byDest[dest]; ok {
		return lg, nil
	}
	var lg *Logger
	switch dest {
	case "off":
		lg = Discard()
	case "stdout", "":
		lg = New(&lockedWriter{w: s.stdout})
	case "stderr":
		lg = New(&lockedWriter{w: s.stderr})
	default:
		f, err := os.OpenFile(dest, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			return nil, fmt.Errorf("access log: %w", err)
		}
		s.files = append(s.files, f)
		lg = New(f)
	}
	s.byDest[dest] = lg
	return lg, nil
}

// Close closes the files opened.
func (s *Sinks) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var first error
	for _, f := range s.files {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	s.files = nil
	s.byDest = map[string]*Logger{}
	return first
}

// lockedWriter serialises writes to a writer that others (the daemon log)
// may share; each slog record is one Write.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
