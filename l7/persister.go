package l7

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/limpet-lb/limpet/l7/balance"
	"github.com/limpet-lb/limpet/l7/cookie"
	"github.com/limpet-lb/limpet/l7/persist"
	"github.com/limpet-lb/limpet/userspace/config"
)

// persister is one persistence method on one virtual server.
type persister interface {
	kind() string
	// route reads the request's persistence (cookie, key, address) and
	// sets rs.persisted when it names a member of the pool, with the
	// cookie or key state for the log.
	route(rs *reqState, r *http.Request, now time.Time)
	// admit runs once rs.member is chosen, before proxying; an error
	// (persist.ErrFull) refuses the request.
	admit(rs *reqState, now time.Time) error
	// appendCookies writes the request's Cookie field for the member
	// (from the client's lines) to b.
	appendCookies(b []byte, rs *reqState, lines []string) []byte
	// respond edits the member's response header and learns from it.
	respond(rs *reqState, h http.Header, now time.Time)
}

func newPersister(s *Server, cfg *config.Config, vc *config.VirtualServer, prof *config.Profile, pool *balance.Pool) (persister, error) {
	switch prof.Type {
	case config.ProfileHTTPCookie:
		return newCookiePersister(s, cfg, vc, prof, pool)
	case config.ProfileAppCookie, config.ProfileGeneric, config.ProfileSourceIP:
		return newTablePersister(s, vc, prof, pool)
	}
	return nil, fmt.Errorf("profile type %q is not served at L7", prof.Type)
}

// maxCookieCandidates bounds the persistence cookies one request may make
// the proxy open; more (a crafted header) are counted and ignored.
const maxCookieCandidates = 8

// cookiePersister is HTTP cookie persistence: the member is sealed in a
// cookie the client keeps.
type cookiePersister struct {
	codec      *cookie.Codec
	name       string
	oldNames   []string // names derived from the other keys, accepted and replaced
	vs         string
	accept     map[string]bool // virtual servers whose cookies this one honours
	anyPort    bool
	timeout    time.Duration
	persistent bool
	alwaysSend bool
	scope      string // "; Path=/; Domain=..."
	flags      string // "; Secure; HttpOnly; SameSite=..."
	prefix     string // "NAME="
	delAttrs   string // attributes of a Set-Cookie that deletes an old-named cookie
	pool       *balance.Pool
}

func newCookiePersister(s *Server, cfg *config.Config, vc *config.VirtualServer, prof *config.Profile, pool *balance.Pool) (*cookiePersister, error) {
	keys, err := prof.CookieKeys()
	if err != nil {
		return nil, err
	}
	codec, err := cookie.NewCodec(keys)
	if err != nil {
		return nil, err
	}
	p := &cookiePersister{
		codec:      codec,
		vs:         vc.Name,
		accept:     map[string]bool{vc.Name: true},
		anyPort:    prof.SharePersistence,
		persistent: prof.IsPersistentCookie,
		alwaysSend: prof.AlwaysSend,
		pool:       pool,
	}
	if prof.Timeout != nil {
		p.timeout = time.Duration(*prof.Timeout) * time.Minute
	}
	scope := "vs:" + vc.Name
	if prof.SharePersistence {
		// One persistence across every virtual server of the profile: a
		// cookie from one is honoured by the others.
		scope = "profile:" + prof.Name
		for _, o := range cfg.VirtualServers {
			if o.Type == config.VSTypeHTTP && o.Persistence == prof.Name {
				p.accept[o.Name] = true
			}
		}
	}
	p.name = prof.CookieName
	if p.name == "" {
		p.name = cookie.DeriveName(keys[0], scope)
		for _, k := range keys[1:] {
			if n := cookie.DeriveName(k, scope); n != p.name && !contains(p.oldNames, n) {
				p.oldNames = append(p.oldNames, n)
			}
		}
	}
	var b strings.Builder
	path := prof.Path
	if path == "" {
		path = config.DefaultCookiePath
	}
	b.WriteString("; Path=" + path)
	if prof.Domain != "" {
		b.WriteString("; Domain=" + prof.Domain)
	}
	p.scope = b.String()
	var flags strings.Builder
	if prof.CookieSecure(vc) {
		flags.WriteString("; Secure")
	}
	if prof.HTTPOnly {
		flags.WriteString("; HttpOnly")
	}
	switch prof.SameSite {
	case config.SameSiteLax:
		flags.WriteString("; SameSite=Lax")
	case config.SameSiteStrict:
		flags.WriteString("; SameSite=Strict")
	case config.SameSiteNone:
		flags.WriteString("; SameSite=None")
	}
	p.flags = flags.String()
	p.delAttrs = p.scope + "; Max-Age=0" + p.flags
	p.prefix = p.name + "="
	s.log.Info("http cookie persistence", "virtual_server", vc.Name, "profile", prof.Name, "cookie", p.name,
		"persistent", p.persistent, "timeout", p.timeout, "keys", len(keys))
	return p, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (p *cookiePersister) kind() string { return config.ProfileHTTPCookie }

// ours reports whether name is the persistence cookie, and whether it is
// an old (rotated-out) name.
func (p *cookiePersister) ours(name string) (ok, old bool) {
	if name == p.name {
		return true, false
	}
	for _, n := range p.oldNames {
		if name == n {
			return true, true
		}
	}
	return false, false
}

type candidate struct {
	value string
	old   string // the old name it came under
}

// cookies walks every Cookie header (HTTP/1 clients may send several;
// HTTP/2 sends one per cookie) and calls fn for each name=value pair,
// without allocating.
func eachCookie(h http.Header, fn func(name, value string) bool) {
	for _, line := range h["Cookie"] {
		for line != "" {
			var part string
			part, line, _ = strings.Cut(line, ";")
			part = strings.TrimSpace(part)
			name, value, ok := strings.Cut(part, "=")
			if !ok {
				continue
			}
			name = strings.TrimSpace(name)
			value = strings.TrimSpace(value)
			if len(value) >= 2 && value[0] == '"' && value[len(value)-1] == '"' {
				value = value[1 : len(value)-1]
			}
			if !fn(name, value) {
				return
			}
		}
	}
}

var cookieRank = map[string]int{
	cookieTampered:      0,
	cookieWrongVS:       1,
	cookieExpired:       2,
	cookieUnknownMember: 3,
	cookieValid:         4,
}

func (p *cookiePersister) route(rs *reqState, r *http.Request, now time.Time) {
	var cands [maxCookieCandidates]candidate
	n, total := 0, 0
	eachCookie(r.Header, func(name, value string) bool {
		ours, old := p.ours(name)
		if !ours {
			return true
		}
		total++
		if n < len(cands) {
			c := candidate{value: value}
			if old {
				c.old = name
			}
			cands[n] = c
			n++
		}
		return true
	})
	rs.cookieCount = total
	if total == 0 {
		rs.cookieState = cookieNone
		return
	}
	best, bestRank := "", -1
	var bestMember *balance.Member
	var bestIssued time.Time
	var bestCand candidate
	var bestReason string
	for _, c := range cands[:n] {
		state, reason, issued, m := p.judge(rs, c.value, now)
		if r := cookieRank[state]; r > bestRank {
			best, bestRank, bestMember, bestIssued, bestCand, bestReason = state, r, m, issued, c, reason
			if state == cookieValid {
				break
			}
		}
	}
	rs.cookieState = best
	if total > 1 {
		rs.reason = "duplicate_cookie"
	}
	if bestReason != "" {
		rs.reason = bestReason
	}
	if best == cookieValid {
		rs.persisted = bestMember
		rs.cookieValue = bestCand.value
		rs.cookieIssued = bestIssued
		rs.cookieOldName = bestCand.old
		if p.timeout > 0 {
			rs.expires = bestIssued.Add(p.timeout)
		}
	}
}

// judge classifies one cookie value (opened in rs's scratch space).
func (p *cookiePersister) judge(rs *reqState, value string, now time.Time) (state, reason string, issued time.Time, m *balance.Member) {
	pl, _, err := p.codec.OpenTo(&rs.scratch, value)
	if err != nil {
		return cookieTampered, tamperReason(err), issued, nil
	}
	issued = pl.Issued()
	if !p.accept[string(pl.VirtualServer)] {
		return cookieWrongVS, "", issued, nil
	}
	if p.timeout > 0 && !now.Before(issued.Add(p.timeout)) {
		return cookieExpired, "", issued, nil
	}
	m = p.pool.Lookup(pl.Member, p.anyPort)
	if m == nil {
		return cookieUnknownMember, "", issued, nil
	}
	return cookieValid, "", issued, m
}

func tamperReason(err error) string {
	switch {
	case errors.Is(err, cookie.ErrEncoding):
		return "cookie_bad_encoding"
	case errors.Is(err, cookie.ErrTruncated):
		return "cookie_truncated"
	case errors.Is(err, cookie.ErrTooLong):
		return "cookie_too_long"
	case errors.Is(err, cookie.ErrVersion):
		return "cookie_bad_version"
	case errors.Is(err, cookie.ErrAuthentication):
		return "cookie_bad_seal"
	default:
		return "cookie_bad_payload"
	}
}

func (p *cookiePersister) admit(*reqState, time.Time) error { return nil }

// appendCookies writes the client's cookies but the persistence cookie,
// as the client sent them, in one field: the member never sees limpet's
// cookie.
func (p *cookiePersister) appendCookies(b []byte, rs *reqState, lines []string) []byte {
	if rs.cookieCount == 0 {
		return appendCookieLines(b, lines)
	}
	start := len(b)
	b = append(b, "Cookie: "...)
	body := len(b)
	for _, line := range lines {
		for line != "" {
			var part string
			part, line, _ = strings.Cut(line, ";")
			t := strings.TrimSpace(part)
			if t == "" {
				continue
			}
			name, _, _ := strings.Cut(t, "=")
			if ours, _ := p.ours(strings.TrimSpace(name)); ours {
				continue
			}
			if len(b) > body {
				b = append(b, "; "...)
			}
			b = appendValue(b, t)
		}
	}
	if len(b) == body {
		return b[:start] // nothing left: no Cookie field
	}
	return append(b, "\r\n"...)
}

// respond inserts the cookie when the client has none that is valid for
// the member it got, or on every response with always_send. The member's
// own Set-Cookie headers are left as they are.
func (p *cookiePersister) respond(rs *reqState, h http.Header, now time.Time) {
	m := rs.member
	if m == nil {
		return
	}
	var maxAge int64
	b := append(rs.line[:0], p.prefix...)
	if rs.cookieState == cookieValid && rs.persisted == m && rs.cookieOldName == "" {
		if !p.alwaysSend {
			return
		}
		// Re-send the client's cookie as it is: a new one would move the
		// issue time and so stretch the timeout.
		b = append(b, rs.cookieValue...)
		if p.timeout > 0 {
			maxAge = int64((p.timeout - now.Sub(rs.cookieIssued)) / time.Second)
			if maxAge < 1 {
				maxAge = 1
			}
		}
	} else {
		var err error
		b, err = p.codec.AppendSeal(b, &rs.scratch, cookie.Payload{Member: m.Addr, Issued: now, VirtualServer: p.vs})
		if err != nil {
			rs.setErr("sealing cookie: " + err.Error())
			return
		}
		maxAge = int64(p.timeout / time.Second)
	}
	// The attributes: a session cookie carries no Max-Age or Expires; a
	// persistent one carries Max-Age (0 when the timeout is 0, so the
	// browser drops it at once, as the seed says).
	b = append(b, p.scope...)
	if p.persistent {
		b = append(b, "; Max-Age="...)
		b = strconv.AppendInt(b, maxAge, 10)
	}
	b = append(b, p.flags...)
	rs.line = b
	h["Set-Cookie"] = append(h["Set-Cookie"], string(b))
	if rs.cookieOldName != "" {
		h["Set-Cookie"] = append(h["Set-Cookie"], rs.cookieOldName+"="+p.delAttrs)
	}
	rs.cookieSet = true
}

// tablePersister is app cookie, generic and source-IP persistence: a table
// maps a key (a server cookie's value, a header, cookie or query value, or
// the client's masked address) to the member.
type tablePersister struct {
	typ     string
	store   persist.Store
	pool    *balance.Pool
	anyPort bool

	cookieName string // app_cookie: the server cookie; generic: the request cookie
	header     string
	query      string
	v4, v6     int
}

func newTablePersister(s *Server, vc *config.VirtualServer, prof *config.Profile, pool *balance.Pool) (*tablePersister, error) {
	spec := persist.Spec{
		Name:          prof.Name + "/" + vc.Name,
		Profile:       prof.Name,
		VirtualServer: vc.Name,
		Type:          prof.Type,
		MaxEntries:    config.DefaultPersistEntries,
		PurgeWhenFull: true,
		Shared:        prof.SharePersistence,
		Mirrored:      prof.HAMirroring,
	}
	if prof.SharePersistence {
		spec.Name, spec.VirtualServer = prof.Name, ""
	}
	if prof.Timeout != nil {
		spec.Timeout = time.Duration(*prof.Timeout) * time.Second
	}
	if prof.MaxEntries != nil {
		spec.MaxEntries = *prof.MaxEntries
	}
	if prof.PurgeWhenFull != nil {
		spec.PurgeWhenFull = *prof.PurgeWhenFull
	}
	store, err := s.opts.Tables.Table(spec)
	if err != nil {
		return nil, err
	}
	p := &tablePersister{
		typ:        prof.Type,
		store:      store,
		pool:       pool,
		anyPort:    prof.SharePersistence,
		cookieName: prof.CookieName,
		header:     prof.HeaderName,
		query:      prof.QueryParam,
		v4:         32,
		v6:         128,
	}
	if prof.IPv4Prefix != nil {
		p.v4 = *prof.IPv4Prefix
	}
	if prof.IPv6Prefix != nil {
		p.v6 = *prof.IPv6Prefix
	}
	return p, nil
}

func (p *tablePersister) kind() string { return p.typ }

// maxKeyLen bounds the memory a key takes: longer keys are hashed.
const maxKeyLen = 128

func textKey(s string) persist.Key {
	if len(s) > maxKeyLen {
		sum := sha256.Sum256([]byte(s))
		return persist.Key{Text: "\x00sha256:" + string(sum[:])}
	}
	return persist.Key{Text: s}
}

// key extracts the request's persistence key.
func (p *tablePersister) key(rs *reqState, r *http.Request) (persist.Key, bool) {
	switch p.typ {
	case config.ProfileSourceIP:
		if !rs.client.IsValid() {
			return persist.Key{}, false
		}
		return persist.Key{Addr: maskedClient(rs.client.Addr(), p.v4, p.v6)}, true
	case config.ProfileAppCookie:
		return cookieKey(r, p.cookieName)
	}
	switch {
	case p.header != "":
		if v := r.Header.Get(p.header); v != "" {
			return textKey(v), true
		}
	case p.cookieName != "":
		return cookieKey(r, p.cookieName)
	case p.query != "":
		if v, ok := queryValue(r.URL.RawQuery, p.query); ok && v != "" {
			return textKey(v), true
		}
	}
	return persist.Key{}, false
}

func cookieKey(r *http.Request, name string) (persist.Key, bool) {
	var val string
	found := false
	eachCookie(r.Header, func(n, v string) bool {
		if n == name && v != "" {
			val, found = v, true
			return false
		}
		return true
	})
	if !found {
		return persist.Key{}, false
	}
	return textKey(val), true
}

// queryValue finds the first value of a query parameter without parsing
// the whole query.
func queryValue(raw, name string) (string, bool) {
	for raw != "" {
		var part string
		part, raw, _ = strings.Cut(raw, "&")
		k, v, _ := strings.Cut(part, "=")
		if k != name {
			if !strings.ContainsAny(k, "%+") {
				continue
			}
			if uk, err := url.QueryUnescape(k); err != nil || uk != name {
				continue
			}
		}
		if uv, err := url.QueryUnescape(v); err == nil {
			return uv, true
		}
		return v, true
	}
	return "", false
}

func (p *tablePersister) setState(rs *reqState, state string) {
	if p.typ == config.ProfileAppCookie {
		switch state {
		case keyNone:
			rs.cookieState = cookieNone
		case keyHit:
			rs.cookieState = cookieValid
		case keyMiss:
			rs.cookieState = cookieUnknownValue
		case keyUnknownMember:
			rs.cookieState = cookieUnknownMember
		}
		return
	}
	rs.keyState = state
}

func (p *tablePersister) route(rs *reqState, r *http.Request, now time.Time) {
	key, ok := p.key(rs, r)
	if !ok {
		p.setState(rs, keyNone)
		return
	}
	rs.key, rs.hasKey = key, true
	e, found := p.store.Get(key, now)
	if !found {
		p.setState(rs, keyMiss)
		return
	}
	m := p.pool.Lookup(e.Server, p.anyPort)
	if m == nil {
		p.setState(rs, keyUnknownMember)
		return
	}
	rs.persisted = m
	p.setState(rs, keyHit)
}

func (p *tablePersister) admit(rs *reqState, now time.Time) error {
	if !rs.hasKey {
		return nil
	}
	if p.typ == config.ProfileAppCookie && rs.persisted == nil && rs.cookieState == cookieUnknownValue {
		// A value the server never set through us: learn it from the
		// response instead of trusting the client's word.
		return nil
	}
	if rs.persisted != rs.member {
		if err := p.store.Set(rs.key, rs.member.Addr, now); err != nil {
			return err
		}
	}
	rs.admitted = rs.member
	if rs.conn != nil {
		rs.conn.hold(p.store, rs.key, now)
	}
	return nil
}

func (p *tablePersister) appendCookies(b []byte, _ *reqState, lines []string) []byte {
	return appendCookieLines(b, lines)
}

func (p *tablePersister) respond(rs *reqState, h http.Header, now time.Time) {
	m := rs.member
	if m == nil {
		return
	}
	if rs.hasKey && rs.admitted != nil && rs.admitted != m {
		// A retry moved the request to another member after admit.
		_ = p.store.Set(rs.key, m.Addr, now)
	}
	if p.typ != config.ProfileAppCookie {
		return
	}
	for _, line := range h["Set-Cookie"] {
		c, err := http.ParseSetCookie(line)
		if err != nil || c.Name != p.cookieName {
			continue
		}
		deleted := c.Value == "" || c.MaxAge < 0 || (!c.Expires.IsZero() && c.Expires.Before(now))
		if deleted {
			if rs.hasKey {
				p.store.Delete(rs.key)
			}
			continue
		}
		key := textKey(c.Value)
		if err := p.store.Set(key, m.Addr, now); err != nil {
			rs.setErr("app cookie table: " + err.Error())
			continue
		}
		if rs.conn != nil {
			rs.conn.hold(p.store, key, now)
		}
	}
}

// maskedClient masks a client address with the profile's prefix lengths.
func maskedClient(a netip.Addr, v4, v6 int) netip.Addr {
	a = a.Unmap()
	bits := v6
	if a.Is4() {
		bits = v4
	}
	pfx, err := a.Prefix(bits)
	if err != nil {
		return a
	}
	return pfx.Addr()
}
