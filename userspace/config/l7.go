package config

import (
	"bytes"
	"cmp"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"path/filepath"
	"strings"
)

// L7 profile defaults and limits.
const (
	// MaxCookieTimeout is the longest http_cookie timeout, in minutes (10 days), as NSX ALB.
	MaxCookieTimeout = 14400
	// DefaultAppCookieTimeout is NSX ALB's app cookie default (20 minutes), in seconds.
	DefaultAppCookieTimeout = 1200
	// DefaultGenericTimeout is NSX's generic persistence default, in seconds.
	DefaultGenericTimeout = 300
	// DefaultCookiePath is the Path of an inserted cookie.
	DefaultCookiePath = "/"
)

// Same-site values of an http_cookie profile; empty leaves the attribute out.
const (
	SameSiteLax    = "lax"
	SameSiteStrict = "strict"
	SameSiteNone   = "none"
)

// L7Options are the options of http_cookie, app_cookie and generic profiles.
// The L7 proxy owns their meaning, the config their syntax (key files,
// cookie names), so that one file configures both layers.
type L7Options struct {
	// CookieName is, for http_cookie, the name of the cookie limpet inserts
	// (empty: an eight-letter name derived from the first key); for
	// app_cookie, the server cookie whose value is learned (required); for
	// generic, the request cookie whose value is the key.
	CookieName string `yaml:"cookie_name" json:"cookie_name,omitempty"`
	// Keys seal and open http_cookie cookies: the first seals, all open.
	Keys []CookieKey `yaml:"keys" json:"keys,omitempty"`
	// IsPersistentCookie gives the cookie a Max-Age of timeout*60 seconds;
	// off, it is a session cookie (no Max-Age, no Expires).
	IsPersistentCookie bool `yaml:"is_persistent_cookie" json:"is_persistent_cookie,omitempty"`
	// AlwaysSend puts the cookie on every response, not only when it is
	// missing, invalid or changed.
	AlwaysSend bool `yaml:"always_send" json:"always_send,omitempty"`
	// HTTPOnly sets the HttpOnly attribute.
	HTTPOnly bool `yaml:"http_only" json:"http_only,omitempty"`
	// Secure sets the Secure attribute; nil means on for HTTPS virtual servers.
	Secure *bool `yaml:"secure" json:"secure,omitempty"`
	// SameSite is lax, strict or none; empty leaves the attribute out.
	SameSite string `yaml:"same_site" json:"same_site,omitempty"`
	// Path of the cookie; default "/".
	Path string `yaml:"path" json:"path,omitempty"`
	// Domain of the cookie; empty makes it a host-only cookie.
	Domain string `yaml:"domain" json:"domain,omitempty"`
	// HeaderName is, for generic, the request header whose value is the key.
	HeaderName string `yaml:"header_name" json:"header_name,omitempty"`
	// QueryParam is, for generic, the query parameter whose value is the key.
	QueryParam string `yaml:"query_param" json:"query_param,omitempty"`
}

// CookieKey is one AES-256 key: a file holding 32 raw bytes or 32 bytes in
// base64 or hex text, or the base64 text inline.
type CookieKey struct {
	File   string `yaml:"file" json:"file,omitempty"`
	Base64 string `yaml:"base64" json:"-"`
}

// Bytes loads the key.
func (k CookieKey) Bytes() ([]byte, error) {
	switch {
	case k.File != "" && k.Base64 != "":
		return nil, fmt.Errorf("set file or base64, not both")
	case k.File != "":
		return LoadKeyFile(k.File)
	case k.Base64 != "":
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(k.Base64))
		if err != nil {
			b, err = base64.RawURLEncoding.DecodeString(strings.TrimSpace(k.Base64))
		}
		if err != nil {
			return nil, fmt.Errorf("base64 key is not valid base64")
		}
		if len(b) != CookieKeySize {
			return nil, fmt.Errorf("base64 key decodes to %d bytes; AES-256 needs %d", len(b), CookieKeySize)
		}
		return b, nil
	default:
		return nil, fmt.Errorf("set file or base64")
	}
}

// CookieKeys loads every key of the profile, in order.
func (p *Profile) CookieKeys() ([][]byte, error) {
	keys := make([][]byte, 0, len(p.Keys))
	for i, k := range p.Keys {
		b, err := k.Bytes()
		if err != nil {
			return nil, fmt.Errorf("keys[%d]: %w", i, err)
		}
		keys = append(keys, b)
	}
	return keys, nil
}

// Forwarded-for handling of an http virtual server.
const (
	ForwardedForAppend  = "append"
	ForwardedForReplace = "replace"
)

// Access log destinations other than a file path.
const (
	AccessLogStdout = "stdout"
	AccessLogStderr = "stderr"
	AccessLogOff    = "off"
)

// Listener defaults of an http virtual server. Times are in seconds.
const (
	DefaultReadHeaderTimeout = 10.0
	DefaultRequestTimeout    = 60.0
	DefaultIdleTimeout       = 60.0
	DefaultWriteTimeout      = 60.0
	DefaultConnectTimeout    = 5.0
	DefaultServerTimeout     = 60.0
	DefaultTunnelTimeout     = 3600.0
	DefaultShutdownTimeout   = 30.0
	DefaultMaxHeaderBytes    = 64 << 10
	MinMaxHeaderBytes        = 4 << 10
	MaxMaxHeaderBytes        = 1 << 20
	DefaultMaxIdlePerMember  = 128
	DefaultRetries           = 2
	DefaultMaxFails          = 1
	DefaultFailTimeout       = 10.0
	DefaultTLSMinVersion     = "1.2"
	maxListenerSeconds       = 86400.0
)

// HTTPOptions are the listener options of an http virtual server.
type HTTPOptions struct {
	// TLSCertFile and TLSKeyFile (PEM) make the listener HTTPS.
	TLSCertFile string `yaml:"tls_cert_file" json:"tls_cert_file,omitempty"`
	TLSKeyFile  string `yaml:"tls_key_file" json:"tls_key_file,omitempty"`
	// TLSMinVersion is "1.2" or "1.3".
	TLSMinVersion string `yaml:"tls_min_version" json:"tls_min_version,omitempty"`
	// HTTP2 offers h2 by ALPN on an HTTPS listener. Nil means on.
	HTTP2 *bool `yaml:"http2" json:"http2,omitempty"`
	// ReadHeaderTimeout bounds the time to receive a request's headers.
	ReadHeaderTimeout *float64 `yaml:"read_header_timeout" json:"read_header_timeout,omitempty"`
	// RequestTimeout bounds the time to receive a request's body; 0 means none.
	RequestTimeout *float64 `yaml:"request_timeout" json:"request_timeout,omitempty"`
	// IdleTimeout closes a keep-alive client connection idle this long.
	IdleTimeout *float64 `yaml:"idle_timeout" json:"idle_timeout,omitempty"`
	// WriteTimeout bounds how long one write to a client may block; 0 means none.
	WriteTimeout *float64 `yaml:"write_timeout" json:"write_timeout,omitempty"`
	// ConnectTimeout bounds a connection attempt to a member.
	ConnectTimeout *float64 `yaml:"connect_timeout" json:"connect_timeout,omitempty"`
	// ServerTimeout bounds the wait for a member's response headers and any
	// pause in its body; 0 means none.
	ServerTimeout *float64 `yaml:"server_timeout" json:"server_timeout,omitempty"`
	// TunnelTimeout closes an upgraded (WebSocket) connection idle this long
	// in both directions; 0 means none.
	TunnelTimeout *float64 `yaml:"tunnel_timeout" json:"tunnel_timeout,omitempty"`
	// ShutdownTimeout is how long a graceful shutdown waits for requests in flight.
	ShutdownTimeout *float64 `yaml:"shutdown_timeout" json:"shutdown_timeout,omitempty"`
	// MaxHeaderBytes limits the request line and headers.
	MaxHeaderBytes int `yaml:"max_header_bytes" json:"max_header_bytes,omitempty"`
	// MaxIdleConnsPerMember is the keep-alive pool size towards each member.
	MaxIdleConnsPerMember int `yaml:"max_idle_conns_per_member" json:"max_idle_conns_per_member,omitempty"`
	// Retries is how many other members a request is tried on when a
	// connection to its member fails (nothing was sent yet, so any method is safe).
	Retries *int `yaml:"retries" json:"retries,omitempty"`
	// MaxFails consecutive connection failures mark a member down for
	// FailTimeout seconds (passive health); 0 turns passive health off.
	MaxFails    *int     `yaml:"max_fails" json:"max_fails,omitempty"`
	FailTimeout *float64 `yaml:"fail_timeout" json:"fail_timeout,omitempty"`
	// ForwardedFor is append (keep the client's X-Forwarded-For and add the
	// peer) or replace (send only the peer).
	ForwardedFor string `yaml:"forwarded_for" json:"forwarded_for,omitempty"`
	// AccessLog is stdout, stderr, off, or an absolute file path; JSON lines.
	AccessLog string `yaml:"access_log" json:"access_log,omitempty"`
}

// TLS reports whether the virtual server terminates TLS.
func (v *VirtualServer) TLS() bool { return v.TLSCertFile != "" }

// CookieSecure is the effective Secure attribute of a profile's cookie on vs.
func (p *Profile) CookieSecure(vs *VirtualServer) bool {
	if p.Secure != nil {
		return *p.Secure
	}
	return vs.TLS()
}

func (p *Profile) applyL7Defaults() {
	switch p.Type {
	case ProfileHTTPCookie:
		setDefault(&p.Timeout, 0)
		p.Path = cmp.Or(p.Path, DefaultCookiePath)
	case ProfileAppCookie:
		setDefault(&p.Timeout, DefaultAppCookieTimeout)
		setDefault(&p.MaxEntries, DefaultPersistEntries)
	case ProfileGeneric:
		setDefault(&p.Timeout, DefaultGenericTimeout)
		setDefault(&p.MaxEntries, DefaultPersistEntries)
	}
}

func (v *VirtualServer) applyHTTPDefaults() {
	if v.Type != VSTypeHTTP {
		return
	}
	o := &v.HTTPOptions
	if o.TLSCertFile != "" && o.TLSMinVersion == "" {
		o.TLSMinVersion = DefaultTLSMinVersion
	}
	setDefault(&o.HTTP2, true)
	for _, d := range []struct {
		p   **float64
		def float64
	}{
		{&o.ReadHeaderTimeout, DefaultReadHeaderTimeout},
		{&o.RequestTimeout, DefaultRequestTimeout},
		{&o.IdleTimeout, DefaultIdleTimeout},
		{&o.WriteTimeout, DefaultWriteTimeout},
		{&o.ConnectTimeout, DefaultConnectTimeout},
		{&o.ServerTimeout, DefaultServerTimeout},
		{&o.TunnelTimeout, DefaultTunnelTimeout},
		{&o.ShutdownTimeout, DefaultShutdownTimeout},
		{&o.FailTimeout, DefaultFailTimeout},
	} {
		setDefault(d.p, d.def)
	}
	o.MaxHeaderBytes = cmp.Or(o.MaxHeaderBytes, DefaultMaxHeaderBytes)
	o.MaxIdleConnsPerMember = cmp.Or(o.MaxIdleConnsPerMember, DefaultMaxIdlePerMember)
	setDefault(&o.Retries, DefaultRetries)
	setDefault(&o.MaxFails, DefaultMaxFails)
	o.ForwardedFor = cmp.Or(o.ForwardedFor, ForwardedForAppend)
	o.AccessLog = cmp.Or(o.AccessLog, AccessLogStdout)
}

func (p *Profile) hasL7Options() bool {
	o := &p.L7Options
	return o.CookieName != "" || len(o.Keys) > 0 || o.IsPersistentCookie || o.AlwaysSend || o.HTTPOnly ||
		o.Secure != nil || o.SameSite != "" || o.Path != "" || o.Domain != "" || o.HeaderName != "" || o.QueryParam != ""
}

func (v *VirtualServer) hasHTTPOptions() bool {
	o := &v.HTTPOptions
	return o.TLSCertFile != "" || o.TLSKeyFile != "" || o.TLSMinVersion != "" || o.HTTP2 != nil ||
		o.ReadHeaderTimeout != nil || o.RequestTimeout != nil || o.IdleTimeout != nil || o.WriteTimeout != nil ||
		o.ConnectTimeout != nil || o.ServerTimeout != nil || o.TunnelTimeout != nil || o.ShutdownTimeout != nil ||
		o.MaxHeaderBytes != 0 || o.MaxIdleConnsPerMember != 0 || o.Retries != nil || o.MaxFails != nil ||
		o.FailTimeout != nil || o.ForwardedFor != "" || o.AccessLog != ""
}

// onlyFor reports options set on a profile type they do not apply to.
func (p *Profile) onlyFor(v *validator, field string) {
	o := &p.L7Options
	cookieOnly := []struct {
		name string
		set  bool
	}{
		{"keys", len(o.Keys) > 0},
		{"is_persistent_cookie", o.IsPersistentCookie},
		{"always_send", o.AlwaysSend},
		{"http_only", o.HTTPOnly},
		{"secure", o.Secure != nil},
		{"same_site", o.SameSite != ""},
		{"path", o.Path != "" && p.Type != ProfileHTTPCookie},
		{"domain", o.Domain != ""},
	}
	if p.Type != ProfileHTTPCookie {
		for _, c := range cookieOnly {
			if c.set {
				v.add(field+"."+c.name, "applies only to http_cookie profiles")
			}
		}
	}
	if p.Type != ProfileGeneric {
		if o.HeaderName != "" {
			v.add(field+".header_name", "applies only to generic profiles")
		}
		if o.QueryParam != "" {
			v.add(field+".query_param", "applies only to generic profiles")
		}
	}
}

func (p *Profile) validateL7(v *validator, field string) {
	p.onlyFor(v, field)
	o := &p.L7Options
	switch p.Type {
	case ProfileHTTPCookie:
		if t := *p.Timeout; t < 0 || t > MaxCookieTimeout {
			v.add(field+".timeout", "%d must be between 1 and %d minutes (0 means none)", t, MaxCookieTimeout)
		}
		if p.MaxEntries != nil {
			v.add(field+".max_entries", "does not apply to http_cookie profiles: the client holds the state")
		}
		if o.CookieName != "" && !ValidName(o.CookieName) {
			v.add(field+".cookie_name", "%q must be 1-64 characters of an HTTP token (no spaces, separators or controls)", o.CookieName)
		}
		p.validateKeys(v, field)
		if o.SameSite != "" && !oneOf(o.SameSite, SameSiteLax, SameSiteStrict, SameSiteNone) {
			v.add(field+".same_site", "%q must be lax, strict or none", o.SameSite)
		}
		if o.SameSite == SameSiteNone && o.Secure != nil && !*o.Secure {
			v.add(field+".same_site", "none needs secure: browsers drop SameSite=None cookies without Secure")
		}
		if !strings.HasPrefix(o.Path, "/") || !cookieAttrOK(o.Path) {
			v.add(field+".path", "%q must start with '/' and hold no ';', spaces or control characters", o.Path)
		}
		if o.Domain != "" && !validCookieDomain(o.Domain) {
			v.add(field+".domain", "%q is not a host name", o.Domain)
		}
	case ProfileAppCookie, ProfileGeneric:
		if t := *p.Timeout; t < 1 || t > 86400*365 {
			v.add(field+".timeout", "%d must be between 1 and 31536000 seconds", t)
		}
		if *p.MaxEntries <= 0 || *p.MaxEntries > MaxPersistEntries {
			v.add(field+".max_entries", "%d must be between 1 and %d", *p.MaxEntries, MaxPersistEntries)
		}
		if p.Type == ProfileAppCookie {
			switch {
			case o.CookieName == "":
				v.add(field+".cookie_name", "is required: it names the server cookie whose value is learned")
			case !ValidName(o.CookieName):
				v.add(field+".cookie_name", "%q must be 1-64 characters of an HTTP token", o.CookieName)
			}
			return
		}
		n := 0
		for _, s := range []string{o.HeaderName, o.CookieName, o.QueryParam} {
			if s != "" {
				n++
			}
		}
		if n != 1 {
			v.add(field, "a generic profile takes its key from exactly one of header_name, cookie_name or query_param")
		}
		if o.HeaderName != "" && !ValidName(o.HeaderName) {
			v.add(field+".header_name", "%q is not a valid header name", o.HeaderName)
		}
		if o.CookieName != "" && !ValidName(o.CookieName) {
			v.add(field+".cookie_name", "%q must be 1-64 characters of an HTTP token", o.CookieName)
		}
		if o.QueryParam != "" && (len(o.QueryParam) > 128 || strings.ContainsAny(o.QueryParam, "&=#? ")) {
			v.add(field+".query_param", "%q must be at most 128 characters without '&', '=', '#', '?' or spaces", o.QueryParam)
		}
	}
}

func (p *Profile) validateKeys(v *validator, field string) {
	switch {
	case len(p.Keys) == 0:
		v.add(field+".keys", "at least one 32-byte key is required, so that cookies survive restarts and every node opens them")
		return
	case len(p.Keys) > MaxCookieKeys:
		v.add(field+".keys", "%d keys exceed the limit of %d", len(p.Keys), MaxCookieKeys)
	}
	var seen [][]byte
	for i, k := range p.Keys {
		kf := fmt.Sprintf("%s.keys[%d]", field, i)
		if k.File != "" && !filepath.IsAbs(k.File) {
			v.add(kf+".file", "%q must be an absolute path", k.File)
			continue
		}
		b, err := k.Bytes()
		if err != nil {
			v.add(kf, "%v", err)
			continue
		}
		for j, s := range seen {
			if bytes.Equal(s, b) {
				v.add(kf, "is the same key as keys[%d]", j)
			}
		}
		seen = append(seen, b)
	}
}

func cookieAttrOK(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= 0x20 || c >= 0x7f || c == ';' {
			return false
		}
	}
	return true
}

func validCookieDomain(d string) bool {
	d = strings.TrimPrefix(d, ".")
	if d == "" || len(d) > 253 {
		return false
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

func (c *Config) validateHTTPVirtualServer(v *validator, vs *VirtualServer, f string) {
	o := &vs.HTTPOptions
	switch {
	case (o.TLSCertFile == "") != (o.TLSKeyFile == ""):
		v.add(f, "tls_cert_file and tls_key_file go together")
	case o.TLSCertFile != "":
		switch {
		case !filepath.IsAbs(o.TLSCertFile):
			v.add(f+".tls_cert_file", "%q must be an absolute path", o.TLSCertFile)
		case !filepath.IsAbs(o.TLSKeyFile):
			v.add(f+".tls_key_file", "%q must be an absolute path", o.TLSKeyFile)
		default:
			if _, err := tls.LoadX509KeyPair(o.TLSCertFile, o.TLSKeyFile); err != nil {
				v.add(f+".tls_cert_file", "cannot load the certificate and key: %v", err)
			}
		}
	}
	if o.TLSMinVersion != "" {
		if o.TLSCertFile == "" {
			v.add(f+".tls_min_version", "applies only with tls_cert_file and tls_key_file")
		} else if !oneOf(o.TLSMinVersion, "1.2", "1.3") {
			v.add(f+".tls_min_version", "%q must be 1.2 or 1.3", o.TLSMinVersion)
		}
	}
	for _, t := range []struct {
		name    string
		val     float64
		zeroOK  bool
		meaning string
	}{
		{"read_header_timeout", *o.ReadHeaderTimeout, false, ""},
		{"request_timeout", *o.RequestTimeout, true, "none"},
		{"idle_timeout", *o.IdleTimeout, false, ""},
		{"write_timeout", *o.WriteTimeout, true, "none"},
		{"connect_timeout", *o.ConnectTimeout, false, ""},
		{"server_timeout", *o.ServerTimeout, true, "none"},
		{"tunnel_timeout", *o.TunnelTimeout, true, "none"},
		{"shutdown_timeout", *o.ShutdownTimeout, true, "close at once"},
		{"fail_timeout", *o.FailTimeout, false, ""},
	} {
		switch {
		case t.val == 0 && t.zeroOK:
		case t.val < 0.001 || t.val > maxListenerSeconds:
			if t.zeroOK {
				v.add(f+"."+t.name, "%g must be between 0.001 and 86400 seconds (0 means %s)", t.val, t.meaning)
			} else {
				v.add(f+"."+t.name, "%g must be between 0.001 and 86400 seconds", t.val)
			}
		}
	}
	if o.MaxHeaderBytes < MinMaxHeaderBytes || o.MaxHeaderBytes > MaxMaxHeaderBytes {
		v.add(f+".max_header_bytes", "%d must be between %d and %d", o.MaxHeaderBytes, MinMaxHeaderBytes, MaxMaxHeaderBytes)
	}
	if o.MaxIdleConnsPerMember < 1 || o.MaxIdleConnsPerMember > 65536 {
		v.add(f+".max_idle_conns_per_member", "%d must be between 1 and 65536", o.MaxIdleConnsPerMember)
	}
	if *o.Retries < 0 || *o.Retries > 10 {
		v.add(f+".retries", "%d must be between 0 and 10", *o.Retries)
	}
	if *o.MaxFails < 0 || *o.MaxFails > 1000 {
		v.add(f+".max_fails", "%d must be between 0 and 1000 (0 turns passive health off)", *o.MaxFails)
	}
	if !oneOf(o.ForwardedFor, ForwardedForAppend, ForwardedForReplace) {
		v.add(f+".forwarded_for", "%q must be append or replace", o.ForwardedFor)
	}
	if !oneOf(o.AccessLog, AccessLogStdout, AccessLogStderr, AccessLogOff) && !filepath.IsAbs(o.AccessLog) {
		v.add(f+".access_log", "%q must be stdout, stderr, off or an absolute file path", o.AccessLog)
	}
	if vs.Persistence == "" {
		return
	}
	prof := c.Profile(vs.Persistence)
	if prof == nil || prof.Type != ProfileHTTPCookie {
		return
	}
	if prof.SameSite == SameSiteNone && !prof.CookieSecure(vs) {
		v.add(f+".persistence", "profile %q sets same_site none, which needs a Secure cookie: serve this virtual server over TLS or set secure: true", prof.Name)
	}
}

func (p *Profile) l7Warnings() []string {
	var w []string
	switch p.Type {
	case ProfileHTTPCookie:
		if p.IsPersistentCookie && p.Timeout != nil && *p.Timeout == 0 {
			w = append(w, fmt.Sprintf("persistence profile %q: is_persistent_cookie with timeout 0 sends Max-Age=0, so browsers drop the cookie at once and clients never stick; set timeout (minutes)", p.Name))
		}
		if p.HAMirroring {
			w = append(w, fmt.Sprintf("persistence profile %q: ha_mirroring has no effect on http_cookie: the client holds the cookie, any node with the keys opens it", p.Name))
		}
	}
	return w
}
