package l7

import (
	"crypto/sha256"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/limpet-lb/limpet/l7/balance"
	"github.com/limpet-lb/limpet/l7/persist"
	"github.com/limpet-lb/limpet/l7/spec"
)

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

func newTablePersister(s *Server, vc *spec.VirtualServer, prof *spec.Profile, pool *balance.Pool) (*tablePersister, error) {
	ts := persist.Spec{
		Name:          prof.Name + "/" + vc.Name,
		Profile:       prof.Name,
		VirtualServer: vc.Name,
		Type:          prof.Type,
		Timeout:       prof.Timeout,
		MaxEntries:    prof.MaxEntries,
		PurgeWhenFull: prof.PurgeWhenFull,
		Shared:        prof.Shared,
		Mirrored:      prof.Mirrored,
	}
	if prof.Shared {
		ts.Name, ts.VirtualServer = prof.Name, ""
	}
	store, err := s.opts.Tables.Table(ts)
	if err != nil {
		return nil, err
	}
	return &tablePersister{
		typ:        prof.Type,
		store:      store,
		pool:       pool,
		anyPort:    prof.Shared,
		cookieName: prof.CookieName,
		header:     prof.HeaderName,
		query:      prof.QueryParam,
		v4:         prof.IPv4Prefix,
		v6:         prof.IPv6Prefix,
	}, nil
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
	case spec.ProfileSourceIP:
		if !rs.client.IsValid() {
			return persist.Key{}, false
		}
		return persist.Key{Addr: maskedClient(rs.client.Addr(), p.v4, p.v6)}, true
	case spec.ProfileAppCookie:
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
	if p.typ == spec.ProfileAppCookie {
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
	if p.typ == spec.ProfileAppCookie && rs.persisted == nil && rs.cookieState == cookieUnknownValue {
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
	if p.typ != spec.ProfileAppCookie {
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
