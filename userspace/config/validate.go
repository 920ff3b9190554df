package config

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
)

// FieldError names the field that is wrong and says why.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// ConfigField names the field: the admin API answers errors that have it
// as refused configs (HTTP 400) without importing this package.
func (e *FieldError) ConfigField() string { return e.Field }

// validator collects every problem so a user fixes the file in one pass.
type validator struct{ errs []error }

func (v *validator) add(field, format string, args ...any) {
	v.errs = append(v.errs, &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)})
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

func (v *validator) name(field, name string, seen map[string]bool) {
	switch {
	case name == "":
		v.add(field, "is required")
	case !nameRE.MatchString(name):
		v.add(field, "%q must be 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit", name)
	case seen[name]:
		v.add(field, "%q is used twice", name)
	}
	seen[name] = true
}

// hostAddr parses the IP address s of field, reporting one that does not
// parse or carries a zone and, unless role is "", an unspecified or
// multicast one, which cannot be role. err is the parse's: an address
// reported for its zone or kind still takes part in the duplicate checks.
func (v *validator) hostAddr(field, s, role string) (netip.Addr, error) {
	addr, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		v.add(field, "%q is not an IP address", s)
	case addr.Zone() != "":
		v.add(field, "%q must not carry a zone", s)
	case role != "" && (addr.IsUnspecified() || addr.IsMulticast()):
		v.add(field, "%q cannot be %s", s, role)
	}
	return addr, err
}

func oneOf(s string, allowed ...string) bool {
	for _, a := range allowed {
		if s == a {
			return true
		}
	}
	return false
}

// Validate checks the whole config and returns every problem found, joined.
func (c *Config) Validate() error {
	v := &validator{}
	c.validateSettings(v)
	c.validateMetricsAuth(v)

	seen := map[string]bool{}
	for i := range c.Profiles {
		c.Profiles[i].validate(v, fmt.Sprintf("persistence_profiles[%d]", i), seen)
	}
	if len(c.Pools) == 0 {
		v.add("pools", "at least one pool is required")
	}
	seen = map[string]bool{}
	for i := range c.Pools {
		c.Pools[i].validate(v, fmt.Sprintf("pools[%d]", i), seen)
	}
	c.validateHealth(v)
	c.validateMirror(v)
	c.validateBGP(v)
	if len(c.VirtualServers) == 0 {
		v.add("virtual_servers", "at least one virtual server is required")
	}
	if len(c.VirtualServers) > MaxVirtualServers {
		v.add("virtual_servers", "%d virtual servers exceed the limit of %d", len(c.VirtualServers), MaxVirtualServers)
	}
	seen = map[string]bool{}
	listeners := map[string]string{}
	for i := range c.VirtualServers {
		c.validateVirtualServer(v, i, seen, listeners)
	}
	members := 0
	for _, p := range c.Pools {
		members += len(p.Members)
	}
	if members > MaxMembers {
		v.add("pools", "%d members in all exceed the limit of %d", members, MaxMembers)
	}
	return errors.Join(v.errs...)
}

func (c *Config) validateSettings(v *validator) {
	s := c.Settings
	if s.FlowTableSize < MinFlowTableSize || s.FlowTableSize > MaxFlowTableSize {
		v.add("settings.flow_table_size", "%d is out of range %d-%d", s.FlowTableSize, MinFlowTableSize, MaxFlowTableSize)
	}
	if s.FlowTableSizeV6 != 0 && (s.FlowTableSizeV6 < MinFlowTableSize || s.FlowTableSizeV6 > MaxFlowTableSize) {
		v.add("settings.flow_table_size_v6", "%d is out of range %d-%d (or 0: settings.flow_table_size)", s.FlowTableSizeV6, MinFlowTableSize, MaxFlowTableSize)
	}
	if !oneOf(s.XDPMode, "auto", "native", "generic") {
		v.add("settings.xdp_mode", "%q must be auto, native or generic", s.XDPMode)
	}
	if !strings.HasPrefix(s.PinPath, "/") {
		v.add("settings.pin_path", "%q must be an absolute path on a bpffs", s.PinPath)
	}
	for _, t := range []struct {
		field string
		val   int
	}{
		{"settings.idle_timeouts.tcp_established", s.IdleTimeouts.TCPEstablished},
		{"settings.idle_timeouts.tcp_fin", s.IdleTimeouts.TCPFin},
		{"settings.idle_timeouts.udp", s.IdleTimeouts.UDP},
	} {
		if t.val <= 0 || t.val > 86400*7 {
			v.add(t.field, "%d must be between 1 and 604800 seconds", t.val)
		}
	}
	if s.GCInterval < 0.05 || s.GCInterval > 60 {
		v.add("settings.gc_interval", "%g must be between 0.05 and 60 seconds", s.GCInterval)
	}
	for i, ifname := range s.Interfaces {
		if ifname == "" || len(ifname) > 15 || strings.ContainsAny(ifname, "/ \t") {
			v.add(fmt.Sprintf("settings.interfaces[%d]", i), "%q is not a valid interface name", ifname)
		}
	}
	if ap, err := netip.ParseAddrPort(s.MetricsListen); s.MetricsListen != "" && (err != nil || ap.Port() == 0) {
		v.add("settings.metrics_listen", "%q must be an IP address and a port, e.g. 127.0.0.1:9469 or [::]:9469", s.MetricsListen)
	}
	if p := s.AdminSocket; p != "" && (!strings.HasPrefix(p, "/") || len(p) > 107) {
		v.add("settings.admin_socket", "%q must be an absolute path of at most 107 bytes", p)
	}
	if a, err := netip.ParseAddr(s.EncapSourceV4); s.EncapSourceV4 != "" && (err != nil || !a.Is4() || !a.IsGlobalUnicast()) {
		v.add("settings.encap_source_v4", "%q must be a unicast IPv4 address of this node", s.EncapSourceV4)
	}
	if a, err := netip.ParseAddr(s.EncapSourceV6); s.EncapSourceV6 != "" && (err != nil || !a.Is6() || a.Is4In6() || !a.IsGlobalUnicast()) {
		v.add("settings.encap_source_v6", "%q must be a unicast IPv6 address of this node", s.EncapSourceV6)
	}
	if s.GUEPort < 1 || s.GUEPort > 65535 {
		v.add("settings.gue_port", "%d must be a UDP port, 1-65535", s.GUEPort)
	}
}

func (p *Profile) validate(v *validator, field string, seen map[string]bool) {
	v.name(field+".name", p.Name, seen)
	field = fmt.Sprintf("%s (%s)", field, p.Name)
	if !oneOf(p.Type, ProfileSourceIP, ProfileHTTPCookie, ProfileAppCookie, ProfileGeneric) {
		v.add(field+".type", "%q must be source_ip, http_cookie, app_cookie or generic", p.Type)
		return
	}
	if !oneOf(p.ServerDown, ServerDownImmediate, ServerDownNever) {
		v.add(field+".server_down", "%q must be immediate or never", p.ServerDown)
	}
	for i, t := range p.Tags {
		if t.Scope == "" && t.Tag == "" {
			v.add(fmt.Sprintf("%s.tags[%d]", field, i), "a tag needs a scope, a tag or both")
		}
		if len(t.Scope) > 128 || len(t.Tag) > 256 {
			v.add(fmt.Sprintf("%s.tags[%d]", field, i), "scope is limited to 128 and tag to 256 characters")
		}
	}
	if len(p.Description) > 1024 {
		v.add(field+".description", "is longer than 1024 characters")
	}
	if p.Type != ProfileSourceIP {
		if p.PurgeWhenFull != nil || p.IPv4Prefix != nil || p.IPv6Prefix != nil {
			v.add(field, "purge_when_full, ipv4_prefix and ipv6_prefix apply only to source_ip profiles")
		}
		p.validateL7(v, field)
		return
	}
	if p.hasL7Options() {
		v.add(field, "cookie, header and query options do not apply to a source_ip profile")
	}
	if *p.Timeout <= 0 || *p.Timeout > 86400*365 {
		v.add(field+".timeout", "%d must be between 1 and 31536000 seconds", *p.Timeout)
	}
	if *p.MaxEntries <= 0 || *p.MaxEntries > MaxPersistEntries {
		v.add(field+".max_entries", "%d must be between 1 and %d", *p.MaxEntries, MaxPersistEntries)
	}
	if *p.IPv4Prefix < 1 || *p.IPv4Prefix > 32 {
		v.add(field+".ipv4_prefix", "/%d must be between /1 and /32", *p.IPv4Prefix)
	}
	if *p.IPv6Prefix < 1 || *p.IPv6Prefix > 128 {
		v.add(field+".ipv6_prefix", "/%d must be between /1 and /128", *p.IPv6Prefix)
	}
}

func (p *Pool) validate(v *validator, field string, seen map[string]bool) {
	v.name(field+".name", p.Name, seen)
	field = fmt.Sprintf("%s (%s)", field, p.Name)
	if !oneOf(p.Algorithm, AlgoRoundRobin, AlgoWeightedRoundRobin, AlgoLeastConnection, AlgoWeightedLeastConnection, AlgoIPHash) {
		v.add(field+".algorithm", "%q must be round_robin, weighted_round_robin, least_connection, weighted_least_connection or ip_hash", p.Algorithm)
	}
	if len(p.Members) == 0 {
		v.add(field+".members", "a pool needs at least one member")
	}
	if p.MaglevTableSize != 0 {
		switch {
		case p.Algorithm != AlgoIPHash:
			v.add(field+".maglev_table_size", "applies only to algorithm ip_hash")
		case p.MaglevTableSize < 7 || p.MaglevTableSize > MaxMaglevTableSize || !isPrime(p.MaglevTableSize):
			v.add(field+".maglev_table_size", "%d must be a prime between 7 and %d", p.MaglevTableSize, MaxMaglevTableSize)
		case p.MaglevTableSize < 100*len(p.Members):
			v.add(field+".maglev_table_size", "%d is too small for %d members: use a prime of at least 100 times the member count", p.MaglevTableSize, len(p.Members))
		}
	}
	if len(p.Members) > MaxMembersPerPool {
		v.add(field+".members", "%d members exceed the limit of %d per pool", len(p.Members), MaxMembersPerPool)
	}
	names := map[string]bool{}
	endpoints := map[string]bool{}
	for i, m := range p.Members {
		mf := fmt.Sprintf("%s.members[%d]", field, i)
		v.name(mf+".name", m.Name, names)
		addr, err := v.hostAddr(mf+".address", m.Address, "a member address")
		if m.Port < 0 || m.Port > 65535 {
			v.add(mf+".port", "%d is out of range 0-65535 (0 means the virtual server's port)", m.Port)
		}
		if m.MaxConnections < 0 || m.MaxConnections > 1<<30 {
			v.add(mf+".max_connections", "%d must be between 0 (no limit) and %d", m.MaxConnections, 1<<30)
		}
		if m.Weight < 1 || m.Weight > 256 {
			v.add(mf+".weight", "%d must be between 1 and 256", m.Weight)
		}
		if !oneOf(m.State, MemberEnabled, MemberDisabled, MemberGracefulDisabled) {
			v.add(mf+".state", "%q must be enabled, disabled or graceful_disabled", m.State)
		}
		ep := fmt.Sprintf("%s/%d", addr.Unmap(), m.Port)
		if err == nil && endpoints[ep] {
			v.add(mf, "address %s port %d is listed twice", m.Address, m.Port)
		}
		endpoints[ep] = true
	}
}

func (c *Config) validateVirtualServer(v *validator, i int, seen map[string]bool, listeners map[string]string) {
	vs := &c.VirtualServers[i]
	field := fmt.Sprintf("virtual_servers[%d]", i)
	v.name(field+".name", vs.Name, seen)
	field = fmt.Sprintf("%s (%s)", field, vs.Name)
	if !oneOf(vs.Type, VSTypeL4, VSTypeHTTP) {
		v.add(field+".type", "%q must be l4 or http", vs.Type)
		return
	}
	role := "a VIP"
	if vs.Type != VSTypeL4 {
		role = "" // an http virtual server listens there: 0.0.0.0 binds every address
	}
	addr, err := v.hostAddr(field+".address", vs.Address, role)
	if vs.Port < 1 || vs.Port > 65535 {
		v.add(field+".port", "%d is out of range 1-65535", vs.Port)
	}
	if !oneOf(vs.Protocol, ProtoTCP, ProtoUDP) {
		v.add(field+".protocol", "%q must be tcp or udp", vs.Protocol)
	}
	key := fmt.Sprintf("%s/%d/%s", addr.Unmap(), vs.Port, vs.Protocol)
	if other, dup := listeners[key]; dup && err == nil {
		v.add(field, "%s:%d/%s is already served by virtual server %q", vs.Address, vs.Port, vs.Protocol, other)
	}
	listeners[key] = vs.Name
	pool := c.Pool(vs.Pool)
	if vs.Pool == "" {
		v.add(field+".pool", "is required")
	} else if pool == nil {
		v.add(field+".pool", "names pool %q, which is not defined", vs.Pool)
	}
	if vs.Persistence != "" {
		prof := c.Profile(vs.Persistence)
		switch {
		case prof == nil:
			v.add(field+".persistence", "names profile %q, which is not defined", vs.Persistence)
		case vs.Type == VSTypeL4 && prof.Type != ProfileSourceIP:
			v.add(field+".persistence", "profile %q is of type %s; an l4 virtual server takes only source_ip", prof.Name, prof.Type)
		}
	}
	if vs.Type == VSTypeL4 {
		if !oneOf(vs.Forwarding, ForwardNAT, ForwardDSR, ForwardIPIP, ForwardGUE) {
			v.add(field+".forwarding", "%q must be nat, dsr, ipip or gue", vs.Forwarding)
		}
		if vs.hasHTTPOptions() {
			v.add(field, "listener options (tls, timeouts) apply only to http virtual servers")
		}
		if pool != nil && err == nil && (vs.Forwarding == ForwardDSR || Encapsulates(vs.Forwarding)) {
			for j, m := range pool.Members {
				if m.Port != 0 && m.Port != vs.Port {
					v.add(fmt.Sprintf("%s.pool", field), "%s cannot change ports, but member %d (%s) of pool %q listens on %d", vs.Forwarding, j, m.Name, pool.Name, m.Port)
				}
			}
		}
		if pool != nil && Encapsulates(vs.Forwarding) {
			// The tunnel is in the member's family, whatever the VIP's.
			for j, m := range pool.Members {
				ma, e := netip.ParseAddr(m.Address)
				if e != nil {
					continue
				}
				if ma.Unmap().Is4() && c.Settings.EncapSourceV4 == "" {
					v.add(field+".forwarding", "%s to member %d (%s) of pool %q at %s needs settings.encap_source_v4, the tunnels' outer source address", vs.Forwarding, j, m.Name, pool.Name, m.Address)
				}
				if !ma.Unmap().Is4() && c.Settings.EncapSourceV6 == "" {
					v.add(field+".forwarding", "%s to member %d (%s) of pool %q at %s needs settings.encap_source_v6, the tunnels' outer source address", vs.Forwarding, j, m.Name, pool.Name, m.Address)
				}
			}
		} else if pool != nil && err == nil {
			for j, m := range pool.Members {
				if ma, e := netip.ParseAddr(m.Address); e == nil && ma.Unmap().Is4() != addr.Unmap().Is4() {
					v.add(field+".pool", "member %d (%s) of pool %q is %s, but the VIP is %s; a nat or dsr pool must match the VIP's family (ipip and gue tunnel in the member's)", j, m.Name, pool.Name, family(ma), family(addr))
				}
			}
		}
		return
	}
	if vs.Forwarding != "" {
		v.add(field+".forwarding", "applies only to l4 virtual servers")
	}
	if vs.Protocol != ProtoTCP {
		v.add(field+".protocol", "an http virtual server runs over tcp")
	}
	c.validateHTTPVirtualServer(v, vs, field)
}

func isPrime(n int) bool {
	if n < 2 {
		return false
	}
	for d := 2; d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}

func family(a netip.Addr) string {
	if a.Unmap().Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// Warnings lists settings that are valid but probably not what the user meant.
func (c *Config) Warnings() []string {
	w := c.metricsWarnings()
	for _, p := range c.Profiles {
		w = append(w, p.l7Warnings()...)
	}
	return append(w, c.clusterWarnings()...)
}
