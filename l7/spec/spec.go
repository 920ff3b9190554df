// Package spec is the compiled form of a config's http virtual servers, as
// the L7 proxy runs them: addresses parsed, times as durations, key files
// read and every default applied, once (config.Parse applies the
// defaults, plan.L7 compiles). It imports nothing
// of limpet's, so that plan builds it without importing the proxy, and the
// proxy runs it without reading the config.
package spec

import (
	"net/netip"
	"time"
)

// Spec is every http virtual server of a config.
type Spec struct {
	VirtualServers []VirtualServer
	// GCInterval is how often in-memory persistence tables are swept.
	GCInterval time.Duration
}

// VirtualServer is one http virtual server.
type VirtualServer struct {
	Name string
	// Listen is the address and port to listen on.
	Listen netip.AddrPort
	Pool   Pool
	// Persistence is the persistence profile; nil means none.
	Persistence *Profile
	HTTP        HTTPOptions
}

// Pool is the pool a virtual server balances over.
type Pool struct {
	Name      string
	Algorithm string
	Members   []Member
}

// Member is one member of a pool.
type Member struct {
	Name string
	Addr netip.Addr
	// Port 0 means the virtual server's port.
	Port   uint16
	Weight int
	// Disabled members take no traffic; Draining ones keep their
	// persisted clients and take no new ones.
	Disabled, Draining bool
}

// Persistence profile types the proxy serves.
const (
	ProfileHTTPCookie = "http_cookie"
	ProfileAppCookie  = "app_cookie"
	ProfileGeneric    = "generic"
	ProfileSourceIP   = "source_ip"
)

// What persistence does when its member is down.
const (
	ServerDownImmediate = "immediate" // pick another member
	ServerDownNever     = "never"     // answer 503 until it is back
)

// Profile is a persistence profile as one virtual server uses it.
type Profile struct {
	Name string
	// Type is one of the Profile* constants.
	Type string
	// ServerDown is ServerDownImmediate or ServerDownNever.
	ServerDown string
	// Shared (share_persistence): one persistence across the virtual
	// servers of the profile, whatever their ports.
	Shared bool
	// Mirrored (ha_mirroring): the profile's tables are mirrored to peers.
	Mirrored bool

	// Timeout is the lifetime of an http_cookie cookie (0: a session
	// cookie), or the timeout of a table entry.
	Timeout time.Duration

	// Tables (app_cookie, generic, source_ip).
	MaxEntries    int
	PurgeWhenFull bool
	// IPv4Prefix and IPv6Prefix mask a source_ip client.
	IPv4Prefix, IPv6Prefix int

	// CookieName: http_cookie's cookie (empty: derived from the first
	// key), app_cookie's server cookie, or generic's request cookie.
	CookieName string
	// HeaderName and QueryParam: generic's key.
	HeaderName, QueryParam string

	// http_cookie: the keys (the first seals, all open), the cookie's
	// attributes, and the virtual servers whose cookies this one honours
	// (itself, and the others of a shared profile).
	Keys               [][]byte
	IsPersistentCookie bool
	AlwaysSend         bool
	HTTPOnly, Secure   bool
	// SameSite is "Lax", "Strict", "None" or empty (no attribute).
	SameSite     string
	Path, Domain string
	Accept       []string
}

// HTTPOptions are a virtual server's listener and upstream settings.
type HTTPOptions struct {
	// TLSCertFile and TLSKeyFile (PEM) make the listener HTTPS, with
	// TLSMinVersion (tls.VersionTLS12 or tls.VersionTLS13).
	TLSCertFile, TLSKeyFile string
	TLSMinVersion           uint16
	// HTTP2 offers h2 by ALPN on an HTTPS listener.
	HTTP2 bool

	ReadHeaderTimeout, RequestTimeout, IdleTimeout, WriteTimeout  time.Duration
	ConnectTimeout, ServerTimeout, TunnelTimeout, ShutdownTimeout time.Duration

	MaxHeaderBytes        int
	MaxIdleConnsPerMember int
	// Retries is how many other members a failed connection is tried on.
	Retries int
	// MaxFails consecutive connection failures mark a member down for
	// FailTimeout (passive health); 0 turns it off.
	MaxFails    int
	FailTimeout time.Duration
	// XFFAppend keeps the client's X-Forwarded-For and adds the peer;
	// off, only the peer is sent.
	XFFAppend bool
	// AccessLog is stdout, stderr, off, or an absolute file path.
	AccessLog string
}

// TLS reports whether the virtual server terminates TLS.
func (o *HTTPOptions) TLS() bool { return o.TLSCertFile != "" }
