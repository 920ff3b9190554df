package config

import (
	"bytes"
	"cmp"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// BGP defaults and limits. Times are in seconds.
const (
	DefaultBGPListenPort      = 179
	DefaultBGPHoldTime        = 9
	DefaultBGPConnectRetry    = 5
	DefaultBGPDampingInterval = 5.0
	DefaultBGPShutdownGrace   = 5.0
	DefaultBGPSyncTimeout     = 30.0
	MaxBGPNeighbors           = 32
	MaxBGPCommunities         = 32
	MaxBGPPasswordBytes       = 80 // TCP_MD5SIG_MAXKEYLEN
	BGPFamilyIPv4Unicast      = "ipv4_unicast"
	BGPFamilyIPv6Unicast      = "ipv6_unicast"
)

// BGP is the top-level bgp section: the node announces a /32 or /128 for
// the address of every l4 virtual server while it can serve it (see the
// README's "Scaling out"). Without the section nothing is announced.
type BGP struct {
	// ASN is this node's autonomous system number (1-4294967294).
	ASN uint32 `yaml:"asn" json:"asn"`
	// RouterID is this node's BGP identifier, an IPv4 address unique
	// among the router's peers.
	RouterID string `yaml:"router_id" json:"router_id"`
	// ListenPort is the TCP port to accept sessions on; 0 turns listening
	// off (the node only dials). Nil means 179.
	ListenPort *int `yaml:"listen_port" json:"listen_port,omitempty"`
	// Neighbors are the routers this node peers with.
	Neighbors []BGPNeighbor `yaml:"neighbors" json:"neighbors"`
	// Communities ("ASN:VALUE", or "ASN:X:Y" for large communities) are
	// added to every announced route, with the virtual servers' own.
	Communities []string `yaml:"communities" json:"communities,omitempty"`
	// LocalPreference is sent to iBGP neighbours (eBGP does not carry it);
	// a virtual server's own value wins.
	LocalPreference *uint32 `yaml:"local_preference" json:"local_preference,omitempty"`
	// NextHopIPv4 and NextHopIPv6 set the next hop of announced routes;
	// empty means the node's address on each session, which is what a
	// directly connected router needs. A session of one family carrying
	// the other family's routes needs the matching one.
	NextHopIPv4 string `yaml:"next_hop_ipv4" json:"next_hop_ipv4,omitempty"`
	NextHopIPv6 string `yaml:"next_hop_ipv6" json:"next_hop_ipv6,omitempty"`
	// DampingInterval: once withdrawn, a route is announced again only
	// after its virtual servers have been able to serve for this long
	// without interruption, so a flapping member moves the route at most
	// once per interval. Withdrawals are never delayed.
	DampingInterval float64 `yaml:"damping_interval" json:"damping_interval"`
	// ShutdownGrace: on SIGTERM (or SIGINT) the node withdraws every
	// route and keeps serving for this long before it exits, so routers
	// move new connections away while open ones finish. 0 exits at once.
	ShutdownGrace *float64 `yaml:"shutdown_grace" json:"shutdown_grace,omitempty"`
	// SyncTimeout bounds how long a starting node waits for the HA bulk
	// sync of a peer it cannot reach before it announces anyway (a cold
	// start of the whole cluster). A peer that is connected and syncing
	// is always waited for.
	SyncTimeout float64 `yaml:"sync_timeout" json:"sync_timeout"`
}

// BGPNeighbor is one BGP peer (a router).
type BGPNeighbor struct {
	Address     string `yaml:"address" json:"address"`
	PeerASN     uint32 `yaml:"peer_asn" json:"peer_asn"`
	Description string `yaml:"description" json:"description,omitempty"`
	// Port is the neighbour's BGP port; 0 means 179.
	Port int `yaml:"port" json:"port,omitempty"`
	// Password turns on TCP MD5 signatures (RFC 2385); PasswordFile reads
	// it from a file (one trailing newline ignored). At most one of them.
	Password     string `yaml:"password" json:"-"`
	PasswordFile string `yaml:"password_file" json:"password_file,omitempty"`
	// HoldTime is the BGP hold time in whole seconds (0, or 3-65535); a session
	// that hears nothing for this long is torn down. Default 9.
	HoldTime *int `yaml:"hold_time" json:"hold_time,omitempty"`
	// KeepaliveInterval defaults to a third of the hold time.
	KeepaliveInterval int `yaml:"keepalive_interval" json:"keepalive_interval,omitempty"`
	// ConnectRetry is the time between connection attempts; default 5.
	ConnectRetry int `yaml:"connect_retry" json:"connect_retry,omitempty"`
	// Multihop is the TTL of an eBGP session with a router that is not
	// directly connected (1-255); 0 means directly connected.
	Multihop int `yaml:"multihop" json:"multihop,omitempty"`
	// Passive waits for the neighbour to connect.
	Passive bool `yaml:"passive" json:"passive,omitempty"`
	// Families are the address families of the session: ipv4_unicast,
	// ipv6_unicast. Empty means the family of Address.
	Families []string `yaml:"families" json:"families,omitempty"`
}

// VirtualServerBGP is a virtual server's own part of its announcement.
// Virtual servers that share an address share one route: its communities
// are the union of theirs, and their local preferences must agree.
type VirtualServerBGP struct {
	// Announce: false keeps the address out of BGP (nil means true).
	Announce        *bool    `yaml:"announce" json:"announce,omitempty"`
	Communities     []string `yaml:"communities" json:"communities,omitempty"`
	LocalPreference *uint32  `yaml:"local_preference" json:"local_preference,omitempty"`
}

// InCluster reports whether cfg describes a node of a cluster: one that
// announces its VIPs by BGP or mirrors active_active. New clients are then
// balanced with ip_hash by default, which every node computes alike.
func (c *Config) InCluster() bool {
	return c.BGP != nil || (c.HAMirroring != nil && c.HAMirroring.Mode == MirrorActiveActive)
}

func (c *Config) applyBGPDefaults() {
	b := c.BGP
	if b == nil {
		return
	}
	setDefault(&b.ListenPort, DefaultBGPListenPort)
	b.DampingInterval = cmp.Or(b.DampingInterval, DefaultBGPDampingInterval)
	if b.ShutdownGrace == nil {
		g := DefaultBGPShutdownGrace
		b.ShutdownGrace = &g
	}
	b.SyncTimeout = cmp.Or(b.SyncTimeout, DefaultBGPSyncTimeout)
	for i := range b.Neighbors {
		n := &b.Neighbors[i]
		setDefault(&n.HoldTime, DefaultBGPHoldTime)
		n.KeepaliveInterval = cmp.Or(n.KeepaliveInterval, max(1, *n.HoldTime/3))
		n.ConnectRetry = cmp.Or(n.ConnectRetry, DefaultBGPConnectRetry)
		n.Port = cmp.Or(n.Port, DefaultBGPListenPort)
		if len(n.Families) == 0 {
			if a, err := netip.ParseAddr(n.Address); err == nil && a.Unmap().Is6() {
				n.Families = []string{BGPFamilyIPv6Unicast}
			} else {
				n.Families = []string{BGPFamilyIPv4Unicast}
			}
		}
	}
}

func validASN(a uint32) bool { return a >= 1 && a <= 4294967294 }

func (c *Config) validateBGP(v *validator) {
	for i := range c.VirtualServers {
		vs := &c.VirtualServers[i]
		if vs.BGP == nil {
			continue
		}
		f := fmt.Sprintf("virtual_servers[%d] (%s).bgp", i, vs.Name)
		if c.BGP == nil {
			v.add(f, "needs the top-level bgp section")
		}
		if vs.Type != VSTypeL4 {
			v.add(f, "only l4 virtual servers are announced by BGP")
		}
		validCommunities(v, f+".communities", vs.BGP.Communities)
	}
	b := c.BGP
	if b == nil {
		return
	}
	const f = "bgp"
	if !validASN(b.ASN) {
		v.add(f+".asn", "%d must be between 1 and 4294967294", b.ASN)
	}
	if rid, err := netip.ParseAddr(b.RouterID); err != nil || !rid.Is4() || rid.IsUnspecified() {
		v.add(f+".router_id", "%q must be an IPv4 address (the node's BGP identifier, unique among the router's peers)", b.RouterID)
	}
	if p := *b.ListenPort; p < 0 || p > 65535 {
		v.add(f+".listen_port", "%d must be between 0 (do not listen) and 65535", p)
	}
	if len(b.Neighbors) == 0 {
		v.add(f+".neighbors", "at least one neighbor is required")
	}
	if len(b.Neighbors) > MaxBGPNeighbors {
		v.add(f+".neighbors", "%d neighbors exceed the limit of %d", len(b.Neighbors), MaxBGPNeighbors)
	}
	validCommunities(v, f+".communities", b.Communities)
	for _, nh := range []struct {
		field, val string
		want6      bool
	}{{"next_hop_ipv4", b.NextHopIPv4, false}, {"next_hop_ipv6", b.NextHopIPv6, true}} {
		if nh.val == "" {
			continue
		}
		a, err := netip.ParseAddr(nh.val)
		if err != nil || a.Is6() != nh.want6 || a.IsUnspecified() || a.Is4In6() {
			v.add(f+"."+nh.field, "%q must be a plain %s address", nh.val, map[bool]string{false: "IPv4", true: "IPv6"}[nh.want6])
		}
	}
	if b.DampingInterval < 0.1 || b.DampingInterval > 3600 {
		v.add(f+".damping_interval", "%g must be between 0.1 and 3600 seconds", b.DampingInterval)
	}
	if g := *b.ShutdownGrace; g < 0 || g > 3600 {
		v.add(f+".shutdown_grace", "%g must be between 0 and 3600 seconds", g)
	}
	if b.SyncTimeout < 0.1 || b.SyncTimeout > 3600 {
		v.add(f+".sync_timeout", "%g must be between 0.1 and 3600 seconds", b.SyncTimeout)
	}
	seen := map[string]int{}
	for i := range b.Neighbors {
		n := &b.Neighbors[i]
		nf := fmt.Sprintf("%s.neighbors[%d]", f, i)
		a, err := netip.ParseAddr(n.Address)
		switch {
		case err != nil:
			v.add(nf+".address", "%q is not an IP address", n.Address)
		case a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() || a.Is4In6():
			v.add(nf+".address", "%q cannot be a BGP neighbor", n.Address)
		default:
			if j, dup := seen[a.String()]; dup {
				v.add(nf+".address", "%s is listed twice (also neighbors[%d])", a, j)
			}
			seen[a.String()] = i
		}
		if !validASN(n.PeerASN) {
			v.add(nf+".peer_asn", "%d must be between 1 and 4294967294", n.PeerASN)
		}
		if n.Port < 1 || n.Port > 65535 {
			v.add(nf+".port", "%d is out of range 1-65535", n.Port)
		}
		switch {
		case n.Password != "" && n.PasswordFile != "":
			v.add(nf, "set password or password_file, not both")
		case n.PasswordFile != "":
			if !filepath.IsAbs(n.PasswordFile) {
				v.add(nf+".password_file", "%q must be an absolute path", n.PasswordFile)
			} else if _, err := LoadBGPPassword(n.PasswordFile); err != nil {
				v.add(nf+".password_file", "%v", err)
			}
		case len(n.Password) > MaxBGPPasswordBytes:
			v.add(nf+".password", "is %d bytes; TCP MD5 keys are at most %d", len(n.Password), MaxBGPPasswordBytes)
		}
		if h := *n.HoldTime; h != 0 && (h < 3 || h > 65535) {
			v.add(nf+".hold_time", "%d must be 0 (no keepalives) or between 3 and 65535 seconds", h)
		}
		if *n.HoldTime != 0 && (n.KeepaliveInterval < 1 || n.KeepaliveInterval > *n.HoldTime/2) {
			v.add(nf+".keepalive_interval", "%d must be at least 1 second and at most half the hold time (%d)", n.KeepaliveInterval, *n.HoldTime)
		}
		if n.ConnectRetry < 1 || n.ConnectRetry > 3600 {
			v.add(nf+".connect_retry", "%d must be between 1 and 3600 seconds", n.ConnectRetry)
		}
		if n.Multihop < 0 || n.Multihop > 255 {
			v.add(nf+".multihop", "%d must be between 0 (directly connected) and 255", n.Multihop)
		}
		fams := map[string]bool{}
		for j, fam := range n.Families {
			ff := fmt.Sprintf("%s.families[%d]", nf, j)
			if !oneOf(fam, BGPFamilyIPv4Unicast, BGPFamilyIPv6Unicast) {
				v.add(ff, "%q must be ipv4_unicast or ipv6_unicast", fam)
				continue
			}
			if fams[fam] {
				v.add(ff, "%q is listed twice", fam)
			}
			fams[fam] = true
			if err == nil {
				if fam == BGPFamilyIPv6Unicast && a.Is4() && b.NextHopIPv6 == "" {
					v.add(ff, "an IPv4 session carrying ipv6_unicast needs bgp.next_hop_ipv6")
				}
				if fam == BGPFamilyIPv4Unicast && a.Is6() && b.NextHopIPv4 == "" {
					v.add(ff, "an IPv6 session carrying ipv4_unicast needs bgp.next_hop_ipv4")
				}
			}
		}
	}
	// Virtual servers sharing an address share one route.
	prefs := map[string]struct {
		pref uint32
		i    int
	}{}
	for i, vs := range c.VirtualServers {
		if vs.BGP == nil || vs.BGP.LocalPreference == nil {
			continue
		}
		a, err := netip.ParseAddr(vs.Address)
		if err != nil {
			continue
		}
		k := a.Unmap().String()
		if p, ok := prefs[k]; ok && p.pref != *vs.BGP.LocalPreference {
			v.add(fmt.Sprintf("virtual_servers[%d] (%s).bgp.local_preference", i, vs.Name),
				"%d differs from virtual_servers[%d]'s %d, which shares address %s (one route per address)", *vs.BGP.LocalPreference, p.i, p.pref, k)
			continue
		}
		prefs[k] = struct {
			pref uint32
			i    int
		}{*vs.BGP.LocalPreference, i}
	}
}

func validCommunities(v *validator, field string, cs []string) {
	if len(cs) > MaxBGPCommunities {
		v.add(field, "%d communities exceed the limit of %d", len(cs), MaxBGPCommunities)
	}
	for i, c := range cs {
		if _, _, err := ParseCommunity(c); err != nil {
			v.add(fmt.Sprintf("%s[%d]", field, i), "%q %v", c, err)
		}
	}
}

// ParseCommunity parses a standard community "ASN:VALUE" (16 bits each) or
// a large community "ASN:X:Y" (32 bits each). It returns the parts and
// whether the community is large (three parts).
func ParseCommunity(s string) ([3]uint32, bool, error) {
	var out [3]uint32
	parts := strings.Split(s, ":")
	if len(parts) != 2 && len(parts) != 3 {
		return out, false, fmt.Errorf("must be ASN:VALUE (e.g. 65000:100) or ASN:X:Y for a large community")
	}
	large := len(parts) == 3
	bits := 16
	if large {
		bits = 32
	}
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, bits)
		if err != nil {
			return out, false, fmt.Errorf("part %q is not a number of %d bits", p, bits)
		}
		out[i] = uint32(n)
	}
	return out, large, nil
}

// LoadBGPPassword reads a TCP MD5 password file: its content less one
// trailing newline, 1 to 80 bytes. Errors never hold the password.
func LoadBGPPassword(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("cannot read: %v", err)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	switch {
	case len(b) == 0:
		return "", fmt.Errorf("%s is empty", path)
	case len(b) > MaxBGPPasswordBytes:
		return "", fmt.Errorf("%s holds %d bytes; a TCP MD5 key is at most %d", path, len(b), MaxBGPPasswordBytes)
	}
	return string(b), nil
}

// clusterWarnings: balancing that nodes cannot agree on without waiting
// for the mirror.
func (c *Config) clusterWarnings() []string {
	if !c.InCluster() {
		return nil
	}
	var w []string
	for i, p := range c.Pools {
		if p.Algorithm == AlgoIPHash {
			continue
		}
		for _, vs := range c.VirtualServers {
			if vs.Type == VSTypeL4 && vs.Pool == p.Name {
				w = append(w, fmt.Sprintf("pools[%d] (%s).algorithm: %s in a cluster: each node picks new clients on its own, so a client whose first connections reach two nodes at once may be split until the mirror converges (newer wins); ip_hash gives every node the same answer", i, p.Name, p.Algorithm))
				break
			}
		}
	}
	return w
}
