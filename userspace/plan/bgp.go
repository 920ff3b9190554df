package plan

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/limpet-lb/limpet/userspace/bgp"
	"github.com/limpet-lb/limpet/userspace/config"
)

// BGP compiles a validated config's bgp section into the speaker's typed
// config and the VIPs to announce: one /32 or /128 per address of the l4
// virtual servers (those with bgp.announce: false left out), with the
// union of the global and the virtual servers' communities. It returns nil
// when the config has no bgp section. Password files are read here.
func BGP(cfg *config.Config) (*bgp.Spec, error) {
	b := cfg.BGP
	if b == nil {
		return nil, nil
	}
	secs := func(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
	rid, err := netip.ParseAddr(b.RouterID)
	if err != nil {
		return nil, fmt.Errorf("bgp.router_id: %w", err)
	}
	spec := &bgp.Spec{
		Config:        bgp.Config{ASN: b.ASN, RouterID: rid, ListenPort: *b.ListenPort},
		Damping:       secs(b.DampingInterval),
		ShutdownGrace: secs(*b.ShutdownGrace),
		SyncTimeout:   secs(b.SyncTimeout),
	}
	if b.NextHopIPv4 != "" {
		spec.Config.NextHop4, _ = netip.ParseAddr(b.NextHopIPv4)
	}
	if b.NextHopIPv6 != "" {
		spec.Config.NextHop6, _ = netip.ParseAddr(b.NextHopIPv6)
	}
	for i, n := range b.Neighbors {
		a, err := netip.ParseAddr(n.Address)
		if err != nil {
			return nil, fmt.Errorf("bgp.neighbors[%d].address: %w", i, err)
		}
		nb := bgp.Neighbor{Address: a.Unmap(), PeerASN: n.PeerASN, Description: n.Description, Port: n.Port, Password: n.Password,
			HoldTime: time.Duration(*n.HoldTime) * time.Second, Keepalive: time.Duration(n.KeepaliveInterval) * time.Second,
			ConnectRetry: time.Duration(n.ConnectRetry) * time.Second, MultihopTTL: uint8(n.Multihop), Passive: n.Passive}
		if n.PasswordFile != "" {
			if nb.Password, err = config.LoadBGPPassword(n.PasswordFile); err != nil {
				return nil, fmt.Errorf("bgp.neighbors[%d].password_file: %w", i, err)
			}
		}
		for _, f := range n.Families {
			if f == config.BGPFamilyIPv6Unicast {
				nb.Families = append(nb.Families, bgp.IPv6Unicast)
			} else {
				nb.Families = append(nb.Families, bgp.IPv4Unicast)
			}
		}
		spec.Config.Neighbors = append(spec.Config.Neighbors, nb)
	}
	global, err := communities(b.Communities)
	if err != nil {
		return nil, fmt.Errorf("bgp.communities: %w", err)
	}
	byAddr := map[netip.Addr]int{}
	for i, vs := range cfg.VirtualServers {
		if vs.Type != config.VSTypeL4 || (vs.BGP != nil && vs.BGP.Announce != nil && !*vs.BGP.Announce) {
			continue
		}
		a, err := netip.ParseAddr(vs.Address)
		if err != nil {
			return nil, fmt.Errorf("virtual_servers[%d].address: %w", i, err)
		}
		a = a.Unmap()
		k, ok := byAddr[a]
		if !ok {
			k = len(spec.VIPs)
			byAddr[a] = k
			v := bgp.VIP{Route: bgp.Route{Prefix: netip.PrefixFrom(a, a.BitLen())}}
			v.Communities = slices.Clone(global.std)
			v.LargeCommunities = slices.Clone(global.large)
			if b.LocalPreference != nil {
				v.LocalPref = *b.LocalPreference
			}
			spec.VIPs = append(spec.VIPs, v)
		}
		v := &spec.VIPs[k]
		v.VirtualServers = append(v.VirtualServers, vs.Name)
		if vs.BGP == nil {
			continue
		}
		own, err := communities(vs.BGP.Communities)
		if err != nil {
			return nil, fmt.Errorf("virtual_servers[%d].bgp.communities: %w", i, err)
		}
		v.Communities = union(v.Communities, own.std)
		v.LargeCommunities = union(v.LargeCommunities, own.large)
		if vs.BGP.LocalPreference != nil {
			v.LocalPref = *vs.BGP.LocalPreference
		}
	}
	return spec, nil
}

type communitySet struct {
	std   []bgp.Community
	large []bgp.LargeCommunity
}

func communities(cs []string) (communitySet, error) {
	var out communitySet
	for _, c := range cs {
		parts, large, err := config.ParseCommunity(c)
		if err != nil {
			return out, fmt.Errorf("%q %w", c, err)
		}
		if large {
			out.large = union(out.large, []bgp.LargeCommunity{{Global: parts[0], Local1: parts[1], Local2: parts[2]}})
		} else {
			out.std = union(out.std, []bgp.Community{bgp.Community(parts[0]<<16 | parts[1])})
		}
	}
	return out, nil
}

func union[T comparable](a, b []T) []T {
	for _, x := range b {
		if !slices.Contains(a, x) {
			a = append(a, x)
		}
	}
	return a
}
