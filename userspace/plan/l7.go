package plan

import (
	"crypto/tls"
	"fmt"
	"net/netip"
	"time"

	"github.com/limpet-lb/limpet/l7/spec"
	"github.com/limpet-lb/limpet/userspace/config"
)

// L7 compiles the http virtual servers of a validated config for the
// proxy. config.Parse applied the defaults; this reads the key files and
// turns seconds into durations and text into addresses.
func L7(cfg *config.Config) (spec.Spec, error) {
	s := spec.Spec{GCInterval: secs(cfg.Settings.GCInterval)}
	if s.GCInterval <= 0 {
		s.GCInterval = time.Second
	}
	for i := range cfg.VirtualServers {
		vc := &cfg.VirtualServers[i]
		if vc.Type != config.VSTypeHTTP {
			continue
		}
		vs, err := compileHTTPVirtualServer(cfg, vc)
		if err != nil {
			return spec.Spec{}, err
		}
		s.VirtualServers = append(s.VirtualServers, vs)
	}
	return s, nil
}

func compileHTTPVirtualServer(cfg *config.Config, vc *config.VirtualServer) (spec.VirtualServer, error) {
	addr, err := netip.ParseAddr(vc.Address)
	if err != nil {
		return spec.VirtualServer{}, fmt.Errorf("virtual server %q: %w", vc.Name, err)
	}
	vs := spec.VirtualServer{Name: vc.Name, Listen: netip.AddrPortFrom(addr, uint16(vc.Port)), HTTP: compileHTTPOptions(&vc.HTTPOptions)}
	pc := cfg.Pool(vc.Pool)
	if pc == nil {
		return vs, fmt.Errorf("virtual server %q: pool %q is not defined", vc.Name, vc.Pool)
	}
	vs.Pool = spec.Pool{Name: pc.Name, Algorithm: pc.Algorithm}
	for _, mc := range pc.Members {
		a, err := netip.ParseAddr(mc.Address)
		if err != nil {
			return vs, fmt.Errorf("pool %q member %q: %w", pc.Name, mc.Name, err)
		}
		vs.Pool.Members = append(vs.Pool.Members, spec.Member{Name: mc.Name, Addr: a.Unmap(), Port: uint16(mc.Port), Weight: mc.Weight,
			Disabled: mc.State == config.MemberDisabled, Draining: mc.State == config.MemberGracefulDisabled})
	}
	if vc.Persistence != "" {
		prof := cfg.Profile(vc.Persistence)
		if prof == nil {
			return vs, fmt.Errorf("virtual server %q: persistence profile %q is not defined", vc.Name, vc.Persistence)
		}
		p, err := compileL7Profile(cfg, vc, prof)
		if err != nil {
			return vs, fmt.Errorf("virtual server %q: persistence profile %q: %w", vc.Name, prof.Name, err)
		}
		vs.Persistence = p
	}
	return vs, nil
}

func compileHTTPOptions(o *config.HTTPOptions) spec.HTTPOptions {
	dur := func(p *float64) time.Duration {
		if p == nil {
			return 0
		}
		return secs(*p)
	}
	num := func(p *int) int {
		if p == nil {
			return 0
		}
		return *p
	}
	h := spec.HTTPOptions{
		TLSCertFile: o.TLSCertFile, TLSKeyFile: o.TLSKeyFile, TLSMinVersion: tls.VersionTLS12,
		HTTP2:             o.HTTP2 == nil || *o.HTTP2,
		ReadHeaderTimeout: dur(o.ReadHeaderTimeout), RequestTimeout: dur(o.RequestTimeout),
		IdleTimeout: dur(o.IdleTimeout), WriteTimeout: dur(o.WriteTimeout),
		ConnectTimeout: dur(o.ConnectTimeout), ServerTimeout: dur(o.ServerTimeout),
		TunnelTimeout: dur(o.TunnelTimeout), ShutdownTimeout: dur(o.ShutdownTimeout),
		MaxHeaderBytes: o.MaxHeaderBytes, MaxIdleConnsPerMember: o.MaxIdleConnsPerMember,
		Retries: num(o.Retries), MaxFails: num(o.MaxFails), FailTimeout: dur(o.FailTimeout),
		XFFAppend: o.ForwardedFor != config.ForwardedForReplace,
		AccessLog: o.AccessLog,
	}
	if o.TLSMinVersion == "1.3" {
		h.TLSMinVersion = tls.VersionTLS13
	}
	return h
}

var sameSite = map[string]string{config.SameSiteLax: "Lax", config.SameSiteStrict: "Strict", config.SameSiteNone: "None"}

func compileL7Profile(cfg *config.Config, vc *config.VirtualServer, prof *config.Profile) (*spec.Profile, error) {
	p := &spec.Profile{
		Name: prof.Name, Type: prof.Type, ServerDown: prof.ServerDown,
		Shared: prof.SharePersistence, Mirrored: prof.HAMirroring,
		MaxEntries: config.DefaultPersistEntries, PurgeWhenFull: true, IPv4Prefix: 32, IPv6Prefix: 128,
		CookieName: prof.CookieName, HeaderName: prof.HeaderName, QueryParam: prof.QueryParam,
	}
	if p.ServerDown == "" {
		p.ServerDown = spec.ServerDownImmediate
	}
	if prof.MaxEntries != nil {
		p.MaxEntries = *prof.MaxEntries
	}
	if prof.PurgeWhenFull != nil {
		p.PurgeWhenFull = *prof.PurgeWhenFull
	}
	if prof.IPv4Prefix != nil {
		p.IPv4Prefix = *prof.IPv4Prefix
	}
	if prof.IPv6Prefix != nil {
		p.IPv6Prefix = *prof.IPv6Prefix
	}
	switch prof.Type {
	case config.ProfileHTTPCookie:
		if prof.Timeout != nil {
			p.Timeout = time.Duration(*prof.Timeout) * time.Minute
		}
		keys, err := prof.CookieKeys()
		if err != nil {
			return nil, err
		}
		p.Keys = keys
		p.IsPersistentCookie, p.AlwaysSend, p.HTTPOnly = prof.IsPersistentCookie, prof.AlwaysSend, prof.HTTPOnly
		p.Secure = prof.CookieSecure(vc)
		p.SameSite = sameSite[prof.SameSite]
		p.Path, p.Domain = prof.Path, prof.Domain
		if p.Path == "" {
			p.Path = config.DefaultCookiePath
		}
		p.Accept = []string{vc.Name}
		if prof.SharePersistence {
			for _, o := range cfg.VirtualServers {
				if o.Type == config.VSTypeHTTP && o.Persistence == prof.Name && o.Name != vc.Name {
					p.Accept = append(p.Accept, o.Name)
				}
			}
		}
	case config.ProfileAppCookie, config.ProfileGeneric, config.ProfileSourceIP:
		if prof.Timeout != nil {
			p.Timeout = time.Duration(*prof.Timeout) * time.Second
		}
	default:
		return nil, fmt.Errorf("profile type %q is not served at L7", prof.Type)
	}
	return p, nil
}
