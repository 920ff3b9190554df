// Package accesslog writes the L7 proxy's access log: one JSON object per
// line through log/slog, one line per request (and per request the server
// refused before a handler saw it).
package accesslog

import (
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
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

// Logger writes entries as JSON lines, in the format of a log/slog JSON
// handler (time, level, msg, then the fields), but encoded by hand: the
// proxy writes one per request, and slog's generic path costs several
// times more than the request's own work here.
type Logger struct {
	w io.Writer // nil: discard
}

// New returns a logger that writes JSON lines to w, one Write per line.
func New(w io.Writer) *Logger { return &Logger{w: w} }

// Discard is a logger that writes nothing.
func Discard() *Logger { return &Logger{} }

// Enabled reports whether the logger writes anything, so that callers can
// skip building entries for a discarding one.
func (lg *Logger) Enabled() bool { return lg != nil && lg.w != nil }

var lines = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// Log writes one entry. A nil or discarding logger does nothing.
func (lg *Logger) Log(e *Entry) {
	if !lg.Enabled() {
		return
	}
	bp := lines.Get().(*[]byte)
	b := AppendJSON((*bp)[:0], e)
	_, _ = lg.w.Write(b)
	*bp = b
	lines.Put(bp)
}

// AppendJSON appends e as one JSON line (with its newline) to b. Empty
// optional fields are left out.
func AppendJSON(b []byte, e *Entry) []byte {
	b = append(b, '{')
	if !e.Time.IsZero() {
		// RFC 3339 with milliseconds, UTC: sortable and compact.
		b = append(b, `"time":"`...)
		b = appendTime(b, e.Time)
		b = append(b, `",`...)
	}
	b = append(b, `"level":"INFO","msg":"access"`...)
	b = appendString(b, "client", e.Client)
	b = appendString(b, "virtual_server", e.VirtualServer)
	b = appendString(b, "proto", e.Proto)
	b = appendString(b, "method", e.Method)
	b = appendString(b, "host", e.Host)
	b = appendString(b, "uri", e.URI)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(e.Status), 10)
	b = append(b, `,"bytes":`...)
	b = strconv.AppendInt(b, e.Bytes, 10)
	b = append(b, `,"duration_ms":`...)
	b = appendFloat(b, float64(e.Duration.Microseconds())/1000)
	if e.Persistence != "" {
		b = appendString(b, "persistence", e.Persistence)
	}
	if e.Cookie != "" {
		b = appendString(b, "cookie", e.Cookie)
	}
	if e.Key != "" {
		b = appendString(b, "key", e.Key)
	}
	b = appendString(b, "decision", e.Decision)
	if e.Reason != "" {
		b = appendString(b, "reason", e.Reason)
	}
	if e.Member != "" {
		b = appendString(b, "member", e.Member)
		b = appendString(b, "member_addr", e.MemberAddr)
	}
	if e.CookieSet {
		b = append(b, `,"cookie_set":true`...)
	}
	if e.Retries > 0 {
		b = append(b, `,"retries":`...)
		b = strconv.AppendInt(b, int64(e.Retries), 10)
	}
	if e.Upgrade != "" {
		b = appendString(b, "upgrade", e.Upgrade)
	}
	if e.Error != "" {
		b = appendString(b, "error", e.Error)
	}
	return append(b, "}\n"...)
}

// lastSecond caches the formatted date and time of the latest second
// logged: lines of the same second only append their milliseconds.
var lastSecond atomic.Pointer[secondText]

type secondText struct {
	unix int64
	text string // 2006-01-02T15:04:05
}

// appendTime appends t as 2006-01-02T15:04:05.000Z (UTC).
func appendTime(b []byte, t time.Time) []byte {
	t = t.UTC()
	sec := t.Unix()
	st := lastSecond.Load()
	if st == nil || st.unix != sec {
		st = &secondText{unix: sec, text: t.Format("2006-01-02T15:04:05")}
		lastSecond.Store(st)
	}
	b = append(b, st.text...)
	ms := t.Nanosecond() / 1e6
	return append(b, '.', byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10), 'Z')
}

// appendString appends ,"key":"value" (the key needs no escaping).
func appendString(b []byte, key, v string) []byte {
	b = append(b, ',', '"')
	b = append(b, key...)
	b = append(b, '"', ':', '"')
	b = appendEscaped(b, v)
	return append(b, '"')
}

const hexDigits = "0123456789abcdef"

// appendEscaped escapes a JSON string as log/slog does: quotes,
// backslashes and control characters; invalid UTF-8 becomes U+FFFD; U+2028
// and U+2029 are escaped.
func appendEscaped(b []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(b, s[start:]...)
}

// appendFloat formats a float as encoding/json (and so log/slog) does.
func appendFloat(b []byte, f float64) []byte {
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// e-07 becomes e-7
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

// Sinks opens access log destinations once each, so virtual servers that
// name the same file share one writer and their lines never interleave.
type Sinks struct {
	mu      sync.Mutex
	byDest  map[string]*Logger
	files   []*os.File
	batches []*batchWriter
	stdout  io.Writer
	stderr  io.Writer
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
		bw := newBatchWriter(f)
		s.batches = append(s.batches, bw)
		lg = New(bw)
	}
	s.byDest[dest] = lg
	return lg, nil
}

// Close closes the files opened.
func (s *Sinks) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var first error
	for _, b := range s.batches {
		if err := b.Close(); err != nil && first == nil {
			first = err
		}
	}
	s.batches = nil
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

// batchWriter gathers the lines for a file and writes them together: at
// most flushDelay after the first one, or when batchSize is reached, and
// on Close. One write per request would cost more than the logging itself;
// a crash can lose at most flushDelay of lines.
type batchWriter struct {
	mu    sync.Mutex
	w     io.Writer
	buf   []byte
	timer *time.Timer
	armed bool
	err   error
}

const (
	batchSize  = 64 << 10
	flushDelay = 50 * time.Millisecond
)

func newBatchWriter(w io.Writer) *batchWriter {
	b := &batchWriter{w: w, buf: make([]byte, 0, batchSize)}
	b.timer = time.AfterFunc(time.Hour, b.flushTimer)
	b.timer.Stop()
	return b
}

// Write takes whole lines (each Write is one).
func (b *batchWriter) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.buf)+len(p) > batchSize {
		b.flushLocked()
	}
	if len(p) >= batchSize {
		_, err := b.w.Write(p)
		b.keep(err)
		return len(p), nil
	}
	b.buf = append(b.buf, p...)
	if !b.armed {
		b.armed = true
		b.timer.Reset(flushDelay)
	}
	return len(p), nil
}

func (b *batchWriter) flushTimer() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.armed = false
	b.flushLocked()
}

func (b *batchWriter) flushLocked() {
	if len(b.buf) == 0 {
		return
	}
	_, err := b.w.Write(b.buf)
	b.keep(err)
	b.buf = b.buf[:0]
}

// keep remembers the first write error, for Close to report: the request
// path does not wait for, or fail on, the log.
func (b *batchWriter) keep(err error) {
	if err != nil && b.err == nil {
		b.err = err
	}
}

// Close writes what is left and reports the first write error.
func (b *batchWriter) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.timer.Stop()
	b.armed = false
	b.flushLocked()
	return b.err
}
