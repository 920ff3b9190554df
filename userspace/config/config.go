// Package config is limpet's configuration model: one YAML file holding
// persistence profiles, pools and virtual servers. It parses and validates the
// file; it knows nothing about BPF.
package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"

	"go.yaml.in/yaml/v3"
)

// Config is one limpet configuration file.
type Config struct {
	Settings       Settings        `yaml:"settings" json:"settings"`
	Profiles       []Profile       `yaml:"persistence_profiles" json:"persistence_profiles,omitempty"`
	Pools          []Pool          `yaml:"pools" json:"pools"`
	VirtualServers []VirtualServer `yaml:"virtual_servers" json:"virtual_servers"`
	HealthMonitors []HealthMonitor `yaml:"health_monitors" json:"health_monitors,omitempty"`
	HAMirroring    *HAMirroring    `yaml:"ha_mirroring" json:"ha_mirroring,omitempty"`
	BGP            *BGP            `yaml:"bgp" json:"bgp,omitempty"`
}

// Settings are node-wide datapath settings.
type Settings struct {
	// FlowTableSize is the capacity of the LRU flow table (5-tuples) of
	// each family: IPv4 and IPv6 flows have a table each, of this size.
	FlowTableSize int `yaml:"flow_table_size" json:"flow_table_size"`
	// FlowTableSizeV6 sizes the IPv6 flow table instead, when not 0 (a
	// node that serves little IPv6 need not preallocate as much for it).
	FlowTableSizeV6 int `yaml:"flow_table_size_v6" json:"flow_table_size_v6,omitempty"`
	// Interfaces the XDP program attaches to; --iface on the command line adds to them.
	Interfaces []string `yaml:"interfaces" json:"interfaces,omitempty"`
	// XDPMode is auto, native or generic.
	XDPMode string `yaml:"xdp_mode" json:"xdp_mode"`
	// PinPath is the bpffs directory that holds limpet's maps and link.
	PinPath string `yaml:"pin_path" json:"pin_path"`
	// IdleTimeouts are the flow idle timeouts in seconds, per protocol state.
	IdleTimeouts IdleTimeouts `yaml:"idle_timeouts" json:"idle_timeouts"`
	// GCInterval is how often the daemon sweeps flows and persistence entries, in seconds.
	GCInterval float64 `yaml:"gc_interval" json:"gc_interval"`
	// MetricsListen is the IP address and port of the Prometheus endpoint
	// (http://ADDR/metrics), e.g. 127.0.0.1:9469; empty turns it off.
	MetricsListen string `yaml:"metrics_listen" json:"metrics_listen,omitempty"`
	// MetricsAuth, when set, asks for credentials on every path of the
	// metrics listener (/metrics and the status page).
	MetricsAuth *MetricsAuth `yaml:"metrics_auth" json:"metrics_auth,omitempty"`
	// AdminSocket is the admin API's unix socket; empty means /run/limpet/admin.sock.
	AdminSocket string `yaml:"admin_socket" json:"admin_socket,omitempty"`
	// EncapSourceV4 and EncapSourceV6 are the outer source addresses of
	// the ipip and gue virtual servers' tunnels to members of each family:
	// an address of this node that members and the routers between accept.
	// A virtual server that encapsulates to a member of a family needs it.
	EncapSourceV4 string `yaml:"encap_source_v4" json:"encap_source_v4,omitempty"`
	EncapSourceV6 string `yaml:"encap_source_v6" json:"encap_source_v6,omitempty"`
	// GUEPort is the UDP port gue virtual servers send to (the members'
	// decapsulators listen on it); 0 means DefaultGUEPort.
	GUEPort int `yaml:"gue_port" json:"gue_port"`
}

// IdleTimeouts mirror IPVS's defaults: a flow idle for longer than its state's
// timeout has ended, and stops holding its client's persistence entry.
type IdleTimeouts struct {
	TCPEstablished int `yaml:"tcp_established" json:"tcp_established"`
	TCPFin         int `yaml:"tcp_fin" json:"tcp_fin"`
	UDP            int `yaml:"udp" json:"udp"`
}

// Defaults for Settings.
const (
	DefaultFlowTableSize   = 1 << 20
	DefaultPinPath         = "/sys/fs/bpf/limpet"
	DefaultTCPEstablished  = 900
	DefaultTCPFin          = 120
	DefaultUDP             = 300
	DefaultGCInterval      = 1.0
	DefaultPersistTimeout  = 300
	DefaultGUEPort         = 6080 // Katran's, and limpet member-decap's
	DefaultMaglevTableSize = 65537
	MaxMaglevTableSize     = 1048573
	DefaultPersistEntries  = 65536
	MaxPersistEntries      = 1 << 24
	MaxMembersPerPool      = 64
	MaxVirtualServers      = 1024
	MaxMembers             = 4096
	MaxPersistenceTables   = 1024
	MaxFlowTableSize       = 1 << 26
	MinFlowTableSize       = 64
	defaultXDPMode         = "auto"
	defaultForwardingMode  = ForwardNAT
	defaultAlgorithm       = AlgoRoundRobin
	defaultServerDown      = ServerDownImmediate
	defaultMemberWeight    = 1
	defaultMemberState     = MemberEnabled
	defaultProfileType     = ProfileSourceIP
	defaultVirtualServerTy = VSTypeL4
)

// Profile types.
const (
	ProfileSourceIP   = "source_ip"
	ProfileHTTPCookie = "http_cookie"
	ProfileAppCookie  = "app_cookie"
	ProfileGeneric    = "generic"
)

// Server down policies, as NSX's "Select New Server When Persistent Server Down".
const (
	ServerDownImmediate = "immediate"
	ServerDownNever     = "never"
)

// Profile is a persistence profile. Fields common to every type come first; the
// options of one type are embedded inline so the YAML stays flat, as in NSX.
type Profile struct {
	Name        string `yaml:"name" json:"name"`
	Description string `yaml:"description" json:"description,omitempty"`
	Type        string `yaml:"type" json:"type"`
	Tags        []Tag  `yaml:"tags" json:"tags,omitempty"`
	// Timeout is in seconds for source_ip, app_cookie and generic profiles, and
	// in minutes for http_cookie (as NSX ALB has it). Nil means the default.
	Timeout          *int   `yaml:"timeout" json:"timeout,omitempty"`
	SharePersistence bool   `yaml:"share_persistence" json:"share_persistence"`
	HAMirroring      bool   `yaml:"ha_mirroring" json:"ha_mirroring"`
	ServerDown       string `yaml:"server_down" json:"server_down"`

	SourceIPOptions `yaml:",inline" json:",inline"`
	L7Options       `yaml:",inline" json:",inline"`
}

// SourceIPOptions are the options of a source_ip profile.
type SourceIPOptions struct {
	// PurgeWhenFull evicts the least recently used entry when the table is
	// full; off, new clients are rejected. Nil means on.
	PurgeWhenFull *bool `yaml:"purge_when_full" json:"purge_when_full,omitempty"`
	// MaxEntries is the capacity of each table of this profile.
	MaxEntries *int `yaml:"max_entries" json:"max_entries,omitempty"`
	// IPv4Prefix and IPv6Prefix mask the client address before lookup, so a
	// whole CGNAT range can share one entry. Nil means /32 and /128.
	IPv4Prefix *int `yaml:"ipv4_prefix" json:"ipv4_prefix,omitempty"`
	IPv6Prefix *int `yaml:"ipv6_prefix" json:"ipv6_prefix,omitempty"`
}

// Tag is an NSX-style scope and tag pair.
type Tag struct {
	Scope string `yaml:"scope" json:"scope"`
	Tag   string `yaml:"tag" json:"tag"`
}

// Pool algorithms.
const (
	AlgoRoundRobin              = "round_robin"
	AlgoWeightedRoundRobin      = "weighted_round_robin"
	AlgoLeastConnection         = "least_connection"
	AlgoWeightedLeastConnection = "weighted_least_connection"
	AlgoIPHash                  = "ip_hash"
)

// Pool is a set of members one virtual server balances over.
type Pool struct {
	Name      string   `yaml:"name" json:"name"`
	Algorithm string   `yaml:"algorithm" json:"algorithm"`
	Members   []Member `yaml:"members" json:"members"`
	// MaglevTableSize is the size of the ip_hash lookup table: a prime,
	// default 65537. Every node with the same config builds the same table.
	MaglevTableSize int `yaml:"maglev_table_size" json:"maglev_table_size,omitempty"`
	// HealthMonitor names the monitor of the pool's members; empty means none.
	HealthMonitor string `yaml:"health_monitor" json:"health_monitor,omitempty"`
}

// Member states.
const (
	MemberEnabled          = "enabled"
	MemberDisabled         = "disabled"
	MemberGracefulDisabled = "graceful_disabled"
)

// Member is one server of a pool.
type Member struct {
	Name    string `yaml:"name" json:"name"`
	Address string `yaml:"address" json:"address"`
	// Port is the member's port; 0 means the virtual server's port.
	Port   int    `yaml:"port" json:"port"`
	Weight int    `yaml:"weight" json:"weight"`
	State  string `yaml:"state" json:"state"`
	// MaxConnections caps the member's concurrent connections; a full
	// member counts as down for new clients (NSX: "reached a connection
	// limit"). 0 means no limit.
	MaxConnections int `yaml:"max_connections" json:"max_connections,omitempty"`
}

// Virtual server types and forwarding modes.
const (
	VSTypeL4   = "l4"
	VSTypeHTTP = "http"
	ForwardNAT = "nat"
	ForwardDSR = "dsr"
	// ForwardIPIP and ForwardGUE are DSR to members beyond the balancer's
	// L2: the client's packet inside an IP (IPIP) or UDP (GUE) tunnel.
	ForwardIPIP = "ipip"
	ForwardGUE  = "gue"
	ProtoTCP    = "tcp"
	ProtoUDP    = "udp"
)

// VirtualServer is a VIP, port and protocol balanced over a pool.
type VirtualServer struct {
	Name     string `yaml:"name" json:"name"`
	Type     string `yaml:"type" json:"type"`
	Address  string `yaml:"address" json:"address"`
	Port     int    `yaml:"port" json:"port"`
	Protocol string `yaml:"protocol" json:"protocol"`
	Pool     string `yaml:"pool" json:"pool"`
	// Persistence names a profile; empty means none.
	Persistence string `yaml:"persistence" json:"persistence,omitempty"`
	Forwarding  string `yaml:"forwarding" json:"forwarding,omitempty"`
	// BGP tunes the announcement of the address (see the bgp section).
	BGP *VirtualServerBGP `yaml:"bgp" json:"bgp,omitempty"`

	HTTPOptions `yaml:",inline" json:",inline"`
}

// Encapsulates says whether a forwarding mode tunnels to its members.
func Encapsulates(forwarding string) bool {
	return forwarding == ForwardIPIP || forwarding == ForwardGUE
}

// Load reads, defaults and validates a config file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes YAML strictly (unknown fields are errors, so a typo never
// silently falls back to a default), applies defaults and validates. An
// unknown key is reported in the file's terms, with its line, where it is
// and the key it probably meant (UnknownFieldError).
func Parse(data []byte) (*Config, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if err := unknownFields(&doc); err != nil {
		return nil, err
	}
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("config is empty")
		}
		return nil, fmt.Errorf("parse: %w", err)
	}
	cfg.applyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// setDefault gives an optional field (nil: not in the config) its default.
func setDefault[T any](field **T, def T) {
	if *field == nil {
		*field = &def
	}
}

func (c *Config) applyDefaults() {
	s := &c.Settings
	s.FlowTableSize = cmp.Or(s.FlowTableSize, DefaultFlowTableSize)
	s.XDPMode = cmp.Or(s.XDPMode, defaultXDPMode)
	s.PinPath = cmp.Or(s.PinPath, DefaultPinPath)
	s.IdleTimeouts.TCPEstablished = cmp.Or(s.IdleTimeouts.TCPEstablished, DefaultTCPEstablished)
	s.IdleTimeouts.TCPFin = cmp.Or(s.IdleTimeouts.TCPFin, DefaultTCPFin)
	s.IdleTimeouts.UDP = cmp.Or(s.IdleTimeouts.UDP, DefaultUDP)
	s.GCInterval = cmp.Or(s.GCInterval, DefaultGCInterval)
	s.GUEPort = cmp.Or(s.GUEPort, DefaultGUEPort)
	for i := range c.Profiles {
		p := &c.Profiles[i]
		p.Type = cmp.Or(p.Type, defaultProfileType)
		p.ServerDown = cmp.Or(p.ServerDown, defaultServerDown)
		if p.Type == ProfileSourceIP {
			setDefault(&p.Timeout, DefaultPersistTimeout)
			setDefault(&p.PurgeWhenFull, true)
			setDefault(&p.MaxEntries, DefaultPersistEntries)
			setDefault(&p.IPv4Prefix, 32)
			setDefault(&p.IPv6Prefix, 128)
		}
		p.applyL7Defaults()
	}
	// In a cluster every node must give a new client the same member
	// without waiting for the mirror: ip_hash (Maglev) does.
	algorithm := defaultAlgorithm
	if c.InCluster() {
		algorithm = AlgoIPHash
	}
	for i := range c.Pools {
		p := &c.Pools[i]
		p.Algorithm = cmp.Or(p.Algorithm, algorithm)
		if p.Algorithm == AlgoIPHash && p.MaglevTableSize == 0 {
			p.MaglevTableSize = DefaultMaglevTableSize
		}
		for j := range p.Members {
			m := &p.Members[j]
			m.Weight = cmp.Or(m.Weight, defaultMemberWeight)
			m.State = cmp.Or(m.State, defaultMemberState)
		}
	}
	for i := range c.VirtualServers {
		v := &c.VirtualServers[i]
		v.Type = cmp.Or(v.Type, defaultVirtualServerTy)
		if v.Type == VSTypeL4 {
			v.Forwarding = cmp.Or(v.Forwarding, defaultForwardingMode)
		}
		if v.Type == VSTypeHTTP && v.Protocol == "" {
			v.Protocol = ProtoTCP
		}
		v.applyHTTPDefaults()
	}
	c.applyHealthDefaults()
	c.applyMirrorDefaults()
	c.applyBGPDefaults()
}

// Profile returns the profile with the given name, or nil.
func (c *Config) Profile(name string) *Profile {
	return find(c.Profiles, func(p *Profile) bool { return p.Name == name })
}

// Pool returns the pool with the given name, or nil.
func (c *Config) Pool(name string) *Pool {
	return find(c.Pools, func(p *Pool) bool { return p.Name == name })
}

// find returns the first element of s that match accepts, or nil.
func find[T any](s []T, match func(*T) bool) *T {
	for i := range s {
		if match(&s[i]) {
			return &s[i]
		}
	}
	return nil
}
