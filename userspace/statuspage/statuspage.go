// Package statuspage is the read-only status page on the metrics listener,
// HAProxy-stats style: each virtual server with its members (state, health
// and last error, active connections, new connections per second), each
// persistence table's fill and churn, the HA peers, the BGP sessions and
// each VIP's announcement (or why it is withdrawn), and a form that finds
// which server a client is persisted to.
//
// It is rendered with html/template, so everything it shows is escaped,
// and sent with a Content-Security-Policy that allows no inline script or
// style. One small script (static/status.js) re-fetches the page every few
// seconds and swaps in its live part without reloading. Nothing on it
// changes state: only GET and HEAD are served.
package statuspage

import (
	"embed"
	"errors"
	"html/template"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/limpet-lb/limpet/userspace/admin"
	"github.com/limpet-lb/limpet/userspace/metrics"
)

// Source is what the page reads; the daemon implements it. Status is the
// daemon's own status (what 'limpet status' prints), the metrics.Source
// methods give the counters that rates come from.
type Source interface {
	Status() admin.Status
	VirtualServers() ([]metrics.VirtualServer, error)
	Members() ([]metrics.Member, error)
	Tables() ([]metrics.Table, error)
	// LookupClient finds the persistence entries of one client address.
	LookupClient(client netip.Addr) ([]Match, error)
}

// Match is one table's answer to a client lookup.
type Match struct {
	Table         uint32
	Profile       string
	VirtualServer string // empty for a shared table
	// Key is the client address as masked by the profile.
	Key     string
	Found   bool
	Server  string
	Member  string
	Conns   uint32
	State   string         // held, counting down, expired
	Expires *time.Duration // nil while held
}

// RefreshSeconds is how often the page's script refreshes it.
const RefreshSeconds = 5

//go:embed page.html.tmpl static
var files embed.FS

var page = template.Must(template.New("page.html.tmpl").Funcs(template.FuncMap{
	"rate":     formatRate,
	"duration": formatDuration,
	"left":     func(d *time.Duration) string { return formatDuration(*d) },
	"since":    func(t time.Time) string { return formatDuration(time.Since(t)) },
	"pct":      func(f float64) string { return strings.TrimSuffix(strings.TrimSuffix(formatFloat(f, 1), "0"), ".") },
}).ParseFS(files, "page.html.tmpl"))

// Handler serves the page at / and its script and style under /static/.
type Handler struct {
	src   Source
	log   *slog.Logger
	rates *sampler
	mux   *http.ServeMux
}

// New returns the page over src. It takes a first sample of the counters
// now, so the first visit already shows rates.
func New(src Source, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.Default()
	}
	h := &Handler{src: src, log: log, rates: &sampler{}, mux: http.NewServeMux()}
	if s, err := h.sample(); err == nil {
		h.rates.add(s)
	}
	h.mux.HandleFunc("GET /{$}", h.serveIndex)
	h.mux.Handle("GET /static/", http.FileServerFS(files))
	return h
}

// securityHeaders: no inline script or style, no framing, nothing cached.
func securityHeaders(w http.ResponseWriter) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Cache-Control", "no-store")
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w)
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "405 method not allowed: the status page is read-only", http.StatusMethodNotAllowed)
		return
	}
	h.mux.ServeHTTP(w, r)
}

func (h *Handler) serveIndex(w http.ResponseWriter, r *http.Request) {
	st := h.src.Status()
	var errs []string
	s, err := h.sample()
	if err != nil {
		errs = append(errs, "counters: "+err.Error())
	}
	rates := h.rates.add(s)
	p := pageOf(st, rates, time.Now())
	p.Errors = errs
	if raw, ok := r.URL.Query()["client"]; ok {
		p.Lookup = h.lookup(raw)
	}
	var b strings.Builder
	if err := page.Execute(&b, p); err != nil {
		h.log.Error("status page", "error", err)
		http.Error(w, "500 internal error rendering the status page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write([]byte(b.String()))
}

// maxClientInput bounds what the lookup echoes back.
const maxClientInput = 64

// ParseClient validates the lookup form's input: one IPv4 or IPv6 address,
// no zone, no prefix. An IPv4-mapped IPv6 address is its IPv4 address.
func ParseClient(values []string) (netip.Addr, error) {
	if len(values) != 1 {
		return netip.Addr{}, errors.New("give one client address")
	}
	s := strings.TrimSpace(values[0])
	switch {
	case s == "":
		return netip.Addr{}, errors.New("enter a client address, e.g. 198.51.100.7 or 2001:db8::7")
	case len(s) > maxClientInput:
		return netip.Addr{}, errors.New("that is too long for an IP address")
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, errors.New("not an IPv4 or IPv6 address, e.g. 198.51.100.7 or 2001:db8::7")
	}
	if a.Zone() != "" {
		return netip.Addr{}, errors.New("a client address has no zone (%...)")
	}
	return a.Unmap(), nil
}

func (h *Handler) lookup(raw []string) *lookupView {
	lv := &lookupView{}
	if len(raw) > 0 {
		lv.Query = raw[0]
		if len(lv.Query) > maxClientInput {
			lv.Query = lv.Query[:maxClientInput] + "…"
		}
	}
	a, err := ParseClient(raw)
	if err != nil {
		lv.Error = err.Error()
		return lv
	}
	lv.Client = a.String()
	ms, err := h.src.LookupClient(a)
	if err != nil {
		lv.Error = "lookup failed: " + err.Error()
		return lv
	}
	for _, m := range ms {
		if m.Found {
			lv.Found++
		}
	}
	lv.Matches = ms
	return lv
}

// sample reads the counters that rates are made of.
func (h *Handler) sample() (sample, error) {
	s := sample{at: time.Now(), vs: map[string]uint64{}, members: map[string]uint64{}, tables: map[uint32][4]uint64{}}
	var errs []error
	if vss, err := h.src.VirtualServers(); err == nil {
		for _, v := range vss {
			s.vs[v.Name] = v.Counters.NewFlows
		}
	} else {
		errs = append(errs, err)
	}
	if ms, err := h.src.Members(); err == nil {
		for _, m := range ms {
			s.members[m.Pool+"/"+m.Name] = m.Counters.NewFlows
		}
	} else {
		errs = append(errs, err)
	}
	if ts, err := h.src.Tables(); err == nil {
		for _, t := range ts {
			s.tables[t.ID] = [4]uint64{t.Inserts, t.Expiries, t.Evictions, t.Rejects}
		}
	} else {
		errs = append(errs, err)
	}
	return s, errors.Join(errs...)
}

// sample is the counters at one moment.
type sample struct {
	at      time.Time
	vs      map[string]uint64    // new connections by virtual server
	members map[string]uint64    // new connections by pool/member
	tables  map[uint32][4]uint64 // inserts, expiries, evictions, rejects
}

// Rates are per second, over the time since an earlier sample; a key that
// is missing has no rate yet.
type Rates struct {
	Window  time.Duration
	VS      map[string]float64
	Members map[string]float64
	Tables  map[uint32][4]float64
}

// sampler keeps the sample rates are measured against: the last one that
// is at least minWindow old, so that visits in quick succession (several
// viewers) still get a meaningful window.
type sampler struct {
	mu   sync.Mutex
	base sample
	last Rates
}

const minWindow = time.Second

func (r *sampler) add(s sample) Rates {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.base.at.IsZero() {
		r.base = s
		return Rates{}
	}
	dt := s.at.Sub(r.base.at)
	if dt < minWindow {
		return r.last
	}
	per := func(now, then uint64) float64 {
		if now < then { // counters reset (a detach and a fresh datapath)
			return 0
		}
		return float64(now-then) / dt.Seconds()
	}
	out := Rates{Window: dt, VS: map[string]float64{}, Members: map[string]float64{}, Tables: map[uint32][4]float64{}}
	for k, v := range s.vs {
		if b, ok := r.base.vs[k]; ok {
			out.VS[k] = per(v, b)
		}
	}
	for k, v := range s.members {
		if b, ok := r.base.members[k]; ok {
			out.Members[k] = per(v, b)
		}
	}
	for k, v := range s.tables {
		if b, ok := r.base.tables[k]; ok {
			out.Tables[k] = [4]float64{per(v[0], b[0]), per(v[1], b[1]), per(v[2], b[2]), per(v[3], b[3])}
		}
	}
	r.base, r.last = s, out
	return out
}
