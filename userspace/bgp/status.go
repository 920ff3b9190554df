package bgp

import "time"

// Status is the node's BGP view, for 'limpet status', metrics and the
// status page: every session and every VIP's announcement. It is a plain
// value with snake_case JSON keys.
type Status struct {
	ASN            uint32         `json:"asn"`
	RouterID       string         `json:"router_id"`
	ListenPort     int            `json:"listen_port"`
	DampingSeconds float64        `json:"damping_interval_seconds"`
	Draining       bool           `json:"draining"`
	Sessions       []Session      `json:"sessions"`
	Announcements  []Announcement `json:"announcements"`
}

// Session is one neighbour's BGP session.
type Session struct {
	Neighbor    string `json:"neighbor"`
	Description string `json:"description,omitempty"`
	PeerASN     uint32 `json:"peer_asn"`
	LocalASN    uint32 `json:"local_asn"`
	// PeerRouterID is the router id the peer sent, while established.
	PeerRouterID string `json:"peer_router_id,omitempty"`
	// State is idle, connect, active, opensent, openconfirm or established.
	State string    `json:"state"`
	Since time.Time `json:"since"`
	// UptimeSeconds is how long the session has been established (0 if not).
	UptimeSeconds    float64  `json:"uptime_seconds"`
	HoldTimeSeconds  int      `json:"hold_time_seconds"`
	PrefixesSent     uint64   `json:"prefixes_sent"`
	PrefixesReceived uint64   `json:"prefixes_received"`
	Families         []string `json:"families"`
	// Password is true when the session is signed with TCP MD5.
	Password bool `json:"md5_password"`
	// Flaps counts the times the session went down after being established.
	Flaps uint64 `json:"flaps"`
	// LastError is the last problem with the session: a refused OPEN, a
	// notification, an expired hold timer, a TCP MD5 failure.
	LastError string `json:"last_error,omitempty"`
}

// Established reports whether the session is up.
func (s *Session) Established() bool { return s.State == "established" }

// Announcement is one VIP's route and why it is or is not announced.
type Announcement struct {
	Prefix         string   `json:"prefix"`
	VirtualServers []string `json:"virtual_servers"`
	Announced      bool     `json:"announced"`
	Reason         Reason   `json:"reason"`
	Detail         string   `json:"detail,omitempty"`
	// Since is when Announced last changed.
	Since time.Time `json:"since"`
	// Changes counts announcements and withdrawals since the start.
	Changes         uint64   `json:"changes"`
	Communities     []string `json:"communities,omitempty"`
	LocalPreference uint32   `json:"local_preference,omitempty"`
	// AnnounceAt is when a damped VIP will be announced if it stays servable.
	AnnounceAt *time.Time `json:"announce_at,omitempty"`
}
