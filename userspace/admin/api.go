// Package admin is limpet's admin API: JSON over HTTP on a unix socket that
// only root may use. The daemon serves it (Serve, with a Handler); the CLI
// talks to it (Dial) for what needs the running daemon: status, reload and
// member enable/disable. Reading the pinned maps (dumps, stats) needs no
// daemon and does not go through here.
//
// Endpoints:
//
//	GET  /v1/status                                  Status
//	POST /v1/reload                                  Summary; 400 with the error if the config is refused
//	POST /v1/members/{pool}/{member}/enable|disable  MemberChange; 404 for an unknown pool or member
//	POST /v1/drain/start|cancel                      DrainChange; withdraw the VIPs from BGP, or not
//
// Errors are JSON too: {"error": "text", "kind": "config|invalid|not_found|forbidden|internal"}.
package admin

import (
	"errors"
	"path/filepath"
	"time"

	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/userspace/bgp"
	"github.com/limpet-lb/limpet/userspace/desired"
)

// DefaultSocket is where the daemon listens unless settings.admin_socket
// says otherwise.
const DefaultSocket = "/run/limpet/admin.sock"

// SocketPath returns the socket of a config's settings.admin_socket: the
// setting, or DefaultSocket when it is empty.
func SocketPath(setting string) string { return SocketFor(setting, "") }

// SocketFor is the admin socket of the daemon of a pin path: the configured
// one, or one derived from the pin path, so that daemons of different pin
// paths (labs running side by side) do not collide. The default pin path
// (or none) keeps DefaultSocket.
func SocketFor(setting, pinPath string) string {
	if setting != "" {
		return setting
	}
	if pinPath == "" || pinPath == loader.DefaultPinPath {
		return DefaultSocket
	}
	return filepath.Join(filepath.Dir(DefaultSocket), loader.PinName(pinPath)+".sock")
}

// Handler is what the daemon implements. Status may run concurrently with
// anything; the server runs Reload and SetMember one at a time (but the
// daemon must still order them against its own SIGHUP reloads).
type Handler interface {
	// Status describes the running daemon.
	Status() Status
	// Reload reads the config file again and applies it. A config that
	// does not parse or validate must leave the running one in place and
	// return an error that is, or wraps, a *ConfigError or a
	// config error (one with a ConfigField method, as *config.FieldError
	// has); any other error is reported as a failure of the
	// daemon (HTTP 500).
	Reload() (Summary, error)
	// SetMember enables or disables a member ('limpet member enable' and
	// 'disable'); member is a name, an address or an address:port, as the
	// CLI takes it. Return an error wrapping ErrNotFound for an unknown pool
	// or member, and one wrapping ErrInvalid for an ambiguous member.
	SetMember(pool, member string, enabled bool) error
}

// Drainer is a Handler that can drain ('limpet drain'): withdraw every VIP
// from BGP while open flows keep being served. Drain(false) cancels it.
type Drainer interface {
	Drain(on bool) error
}

// DrainChange is what POST /v1/drain/... returns.
type DrainChange struct {
	Draining bool `json:"draining"`
}

// Status is GET /v1/status.
type Status struct {
	Version   string    `json:"version"`
	PID       int       `json:"pid"`
	StartedAt time.Time `json:"started_at"`
	// UptimeSeconds is filled in by the server from StartedAt.
	UptimeSeconds float64 `json:"uptime_seconds"`
	ConfigPath    string  `json:"config_path"`
	// AppliedAt is when the running config was applied (start or reload).
	AppliedAt time.Time `json:"applied_at"`
	// LastReloadError is the error of the last reload if it was refused
	// (the config at AppliedAt keeps running); empty after a good one.
	LastReloadError string          `json:"last_reload_error,omitempty"`
	PinPath         string          `json:"pin_path,omitempty"`
	MetricsListen   string          `json:"metrics_listen,omitempty"`
	Interfaces      []Interface     `json:"interfaces"`
	VirtualServers  []VirtualServer `json:"virtual_servers"`
	Pools           []Pool          `json:"pools"`
	Tables          []Table         `json:"tables"`
	// Mirroring lists the HA peers, when ha_mirroring is configured.
	Mirroring []MirrorPeer `json:"mirroring,omitempty"`
	// Warnings are settings around the interfaces (of their veth peers)
	// that break forwarding, checked at the request.
	Warnings []Warning `json:"warnings,omitempty"`
	// RedirectErrors are the redirects the kernel refused: packets the
	// datapath counted as forwarded that never left.
	RedirectErrors []RedirectErrors `json:"xdp_redirect_errors,omitempty"`
	// Cluster is the node's view of its cluster, when it mirrors or
	// announces by BGP.
	Cluster *Cluster `json:"cluster,omitempty"`
	// BGP lists the sessions and the VIPs' announcements (bgp section).
	BGP *bgp.Status `json:"bgp,omitempty"`
	// NextHopCache is the datapath's next-hop cache as a whole; each
	// member's hop is in its Member.NextHop.
	NextHopCache *NextHopCache `json:"next_hop_cache,omitempty"`
}

// NextHopCache is the datapath's next-hop cache: the members' next hops
// (MAC pair, interface, MTU) that the daemon resolves from the kernel's
// routes and neighbours, so that packets skip the FIB lookup. While it is
// not live every packet asks the FIB.
type NextHopCache struct {
	// Generation is the live generation; a publish flips it, and every
	// older hop (flows' reply hops included) is invalid at once.
	Generation uint32 `json:"generation"`
	// Live: the datapath uses the cache (the daemon's lease runs).
	Live                  bool    `json:"live"`
	LeaseExpiresInSeconds float64 `json:"lease_expires_in_seconds"`
	// LastPublished is when the hops last changed (a new generation);
	// LastResolved when the daemon last checked them against the kernel.
	LastPublished     time.Time `json:"last_published,omitzero"`
	LastResolved      time.Time `json:"last_resolved,omitzero"`
	Publishes         uint64    `json:"publishes_total"`
	NetlinkEvents     uint64    `json:"netlink_events_total"`
	MembersCached     int       `json:"members_cached"`
	MembersUnresolved int       `json:"members_unresolved"`
	// Hits, Misses and MTUFallbacks sum the members' counters.
	Hits         uint64 `json:"hits_total"`
	Misses       uint64 `json:"misses_total"`
	MTUFallbacks uint64 `json:"mtu_fallbacks_total"`
}

// A member's next-hop states.
const (
	// NextHopCached: the live generation holds the member's hop.
	NextHopCached = "cached"
	// NextHopUnresolved: the daemon could not resolve it (see Reason):
	// the member's packets ask the FIB, or go to the stack.
	NextHopUnresolved = "unresolved"
	// NextHopNotCached: no live cache, or no hop published for the
	// member yet: the FIB decides.
	NextHopNotCached = "not_cached"
)

// MemberNextHop is one member's next hop in the cache, and its counters:
// lookups while the cache was live that hit, missed (no hop in the
// generation) or fell back to the FIB because the packet was longer than
// the hop's MTU.
type MemberNextHop struct {
	State        string    `json:"state"`
	Reason       string    `json:"reason,omitempty"`
	Generation   uint32    `json:"generation,omitempty"`
	Interface    string    `json:"interface,omitempty"`
	Ifindex      int       `json:"ifindex,omitempty"`
	SrcMAC       string    `json:"src_mac,omitempty"`
	DstMAC       string    `json:"dst_mac,omitempty"`
	MTU          int       `json:"mtu,omitempty"`
	LastRefresh  time.Time `json:"last_refresh,omitzero"`
	Hits         uint64    `json:"hits_total"`
	Misses       uint64    `json:"misses_total"`
	MTUFallbacks uint64    `json:"mtu_fallbacks_total"`
}

// Warning is a setting that breaks forwarding through an interface.
type Warning struct {
	Interface string `json:"interface"`
	Peer      string `json:"peer,omitempty"`
	// PeerNetns is where the peer is: a name under /run/netns or a
	// /proc/PID/ns/net path; empty for the daemon's own namespace.
	PeerNetns string `json:"peer_netns,omitempty"`
	// Problem is a stable identifier, e.g. peer_cannot_receive_redirects.
	Problem string `json:"problem"`
	Message string `json:"message"`
	// Fix is the command that corrects it.
	Fix string `json:"fix,omitempty"`
}

// RedirectErrors counts the refused redirects into one interface, for one
// error (limpet_xdp_redirect_errors_total).
type RedirectErrors struct {
	Interface string `json:"interface"`
	Ifindex   int    `json:"ifindex"`
	Error     string `json:"error"` // the errno's name, e.g. EOPNOTSUPP
	Hint      string `json:"hint,omitempty"`
	Count     uint64 `json:"xdp_redirect_errors_total"`
}

// Cluster is the node's view of its cluster: mirroring mode, whether its
// initial HA bulk sync has finished, and its peers (see Mirroring).
type Cluster struct {
	Mode string `json:"mode,omitempty"`
	// Synced: the initial bulk sync has finished, so the node may announce.
	Synced     bool      `json:"synced"`
	SyncedAt   time.Time `json:"synced_at,omitzero"`
	SyncDetail string    `json:"sync_detail,omitempty"`
	PeersUp    int       `json:"peers_up"`
	Peers      int       `json:"peers"`
	// MaxLagSeconds is the largest age of an entry queued for a peer.
	MaxLagSeconds float64 `json:"max_lag_seconds"`
}

// MirrorPeer is one HA mirroring peer.
type MirrorPeer struct {
	Address    string    `json:"address"`
	State      string    `json:"state"`
	Since      time.Time `json:"since"`
	Sent       uint64    `json:"sent"`
	Received   uint64    `json:"received"`
	Dropped    uint64    `json:"dropped"`
	QueueLen   int       `json:"queue_len"`
	LagSeconds float64   `json:"lag_seconds"`
	LastError  string    `json:"last_error,omitempty"`
	// Configured is false for a peer that connected without being listed.
	Configured bool `json:"configured"`
	// LastSync is when the peer's last bulk sync to this node finished.
	LastSync           time.Time `json:"last_sync,omitzero"`
	Syncs              uint64    `json:"syncs"`
	ClockOffsetSeconds float64   `json:"clock_offset_seconds"`
}

// Interface is one interface the XDP program is attached to.
type Interface struct {
	Name string `json:"name"`
	// XDPMode is how it is attached: native or generic.
	XDPMode string `json:"xdp_mode"`
}

// VirtualServer is one configured virtual server.
type VirtualServer struct {
	Name       string `json:"name"`
	Type       string `json:"type"` // l4 or http
	Address    string `json:"address"`
	Port       int    `json:"port"`
	Protocol   string `json:"protocol"`
	Forwarding string `json:"forwarding,omitempty"` // nat or dsr (l4)
	Pool       string `json:"pool"`
	Profile    string `json:"profile,omitempty"`
}

// Pool is one pool and the state of its members.
type Pool struct {
	Name      string   `json:"name"`
	Algorithm string   `json:"algorithm"`
	Members   []Member `json:"members"`
}

// Member health verdicts.
const (
	HealthUp   = "up"
	HealthDown = "down"
	// HealthUnchecked: the pool has no monitor, or it has no verdict yet.
	HealthUnchecked = "unchecked"
)

// Member is one member's configuration, state and health.
type Member struct {
	Name           string `json:"name"`
	Address        string `json:"address"`
	Port           int    `json:"port"` // 0: the virtual server's port
	Weight         int    `json:"weight"`
	MaxConnections int    `json:"max_connections,omitempty"`
	// State is the configured state: enabled, disabled or graceful_disabled.
	State string `json:"state"`
	// AdminDown is set by 'limpet member disable' and wins over State.
	AdminDown bool `json:"admin_down,omitempty"`
	// Monitor names the pool's health monitor; empty when it has none.
	Monitor string `json:"monitor,omitempty"`
	// Health is HealthUp, HealthDown or HealthUnchecked.
	Health string `json:"health"`
	// HealthDetail says why the last check failed, or what it saw.
	HealthDetail string `json:"health_detail,omitempty"`
	// HealthSince is when Health last changed.
	HealthSince       time.Time `json:"health_since,omitzero"`
	ActiveConnections uint64    `json:"active_connections"`
	// NextHop is the member's hop in the next-hop cache.
	NextHop *MemberNextHop `json:"next_hop,omitempty"`
}

// InService says whether the member takes new clients: enabled, not
// disabled by an operator, and not found down by its monitor. (A member at
// its connection limit also takes none, which Status does not show.)
func (m *Member) InService() bool {
	return !m.AdminDown && m.State == desired.MemberEnabled && m.Health != HealthDown
}

// Table is one persistence table.
type Table struct {
	// ID is the table index shown by 'limpet persistence dump'.
	ID      uint32 `json:"table"`
	Profile string `json:"profile"`
	Shared  bool   `json:"shared"`
	// VirtualServer owns a private table; empty for a shared one.
	VirtualServer string `json:"virtual_server,omitempty"`
	// Entries is the occupancy at the daemon's last sweep.
	Entries       int  `json:"entries"`
	MaxEntries    int  `json:"max_entries"`
	PurgeWhenFull bool `json:"purge_when_full"`
	// Timeout is the profile's entry timeout, in seconds.
	Timeout int `json:"timeout"`
}

// Summary is what POST /v1/reload returns: the config now running.
type Summary struct {
	ConfigPath         string    `json:"config_path"`
	AppliedAt          time.Time `json:"applied_at"`
	L4VirtualServers   int       `json:"l4_virtual_servers"`
	HTTPVirtualServers int       `json:"http_virtual_servers"`
	Pools              int       `json:"pools"`
	Members            int       `json:"members"`
	Profiles           int       `json:"persistence_profiles"`
	Warnings           []string  `json:"warnings,omitempty"`
}

// Summarize is what Handler.Reload returns for a config of counts c.
func Summarize(c desired.Counts, warnings []string, path string, appliedAt time.Time) Summary {
	return Summary{ConfigPath: path, AppliedAt: appliedAt, Pools: c.Pools, Profiles: c.Profiles, Members: c.Members,
		L4VirtualServers: c.L4VirtualServers, HTTPVirtualServers: c.HTTPVirtualServers, Warnings: warnings}
}

// MemberChange is what POST /v1/members/... returns.
type MemberChange struct {
	Pool    string `json:"pool"`
	Member  string `json:"member"`
	Enabled bool   `json:"enabled"`
}

// ConfigError is a config the daemon refused; the old config keeps running.
// The server answers it with HTTP 400, and the client returns it.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// Errors a Handler wraps to choose the HTTP status; the client's errors
// match them with errors.Is.
var (
	ErrNotFound  = errors.New("not found")           // 404
	ErrInvalid   = errors.New("invalid request")     // 400
	ErrForbidden = errors.New("admin API root only") // 403
)

// Error kinds in error responses.
const (
	kindConfig    = "config"
	kindInvalid   = "invalid"
	kindNotFound  = "not_found"
	kindForbidden = "forbidden"
	kindInternal  = "internal"
)

// errorBody is every error response.
type errorBody struct {
	Error string `json:"error"`
	Kind  string `json:"kind"`
}
