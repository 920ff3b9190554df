package l7

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/limpet-lb/limpet/l7/balance"
	"github.com/limpet-lb/limpet/l7/cookie"
	"github.com/limpet-lb/limpet/l7/spec"
)

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

func newCookiePersister(s *Server, vc *spec.VirtualServer, prof *spec.Profile, pool *balance.Pool) (*cookiePersister, error) {
	keys := prof.Keys
	codec, err := cookie.NewCodec(keys)
	if err != nil {
		return nil, err
	}
	p := &cookiePersister{
		codec:      codec,
		vs:         vc.Name,
		accept:     map[string]bool{vc.Name: true},
		anyPort:    prof.Shared,
		timeout:    prof.Timeout,
		persistent: prof.IsPersistentCookie,
		alwaysSend: prof.AlwaysSend,
		pool:       pool,
	}
	for _, o := range prof.Accept {
		p.accept[o] = true
	}
	// A shared profile is one persistence across its virtual servers: a
	// cookie from one is honoured by the others, under one name.
	scope := "vs:" + vc.Name
	if prof.Shared {
		scope = "profile:" + prof.Name
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
	b.WriteString("; Path=" + prof.Path)
	if prof.Domain != "" {
		b.WriteString("; Domain=" + prof.Domain)
	}
	p.scope = b.String()
	var flags strings.Builder
	if prof.Secure {
		flags.WriteString("; Secure")
	}
	if prof.HTTPOnly {
		flags.WriteString("; HttpOnly")
	}
	if prof.SameSite != "" {
		flags.WriteString("; SameSite=" + prof.SameSite)
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

func (p *cookiePersister) kind() string { return spec.ProfileHTTPCookie }

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
