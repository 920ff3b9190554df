package dpfuzz

import (
	"fmt"
	"strings"

	"github.com/limpet-lb/limpet/test/model"
)

var (
	algoNames = map[model.Algorithm]string{
		model.RoundRobin: "round_robin", model.WeightedRoundRobin: "weighted_round_robin",
		model.LeastConnection: "least_connection", model.WeightedLeastConnection: "weighted_least_connection",
		model.IPHash: "ip_hash",
	}
	mangleNames = []string{"", "bad IP checksum", "bad L4 checksum", "UDP checksum zero", "truncated",
		"IP length longer", "IP length shorter", "UDP length wrong", "TCP data offset wrong", "padding",
		"IP version wrong", "IPv4 IHL wrong"}
)

// describeConfig writes a scenario the way a reproducer needs it.
func describeConfig(sc *scenario) string {
	var b strings.Builder
	for _, v := range sc.cfg.VirtualServers {
		mode := map[model.Mode]string{model.NAT: "nat", model.DSR: "dsr", model.IPIP: "ipip", model.GUE: "gue"}[v.Mode]
		pers := "no persistence"
		if v.Persist {
			pol := "immediate"
			if v.ServerDown == model.Never {
				pol = "never"
			}
			pers = fmt.Sprintf("table %d, prefixes /%d /%d, timeout %v, server_down %s", v.Table, v.V4Prefix, v.V6Prefix, v.Timeout, pol)
		}
		fmt.Fprintf(&b, "  vs %d: %s/%d %s pool %d, %s\n", v.ID, v.VIP, v.Proto, mode, v.Pool, pers)
	}
	for _, p := range sc.cfg.Pools {
		fmt.Fprintf(&b, "  pool %d: %s, eligible %v, weights %v, table %d slots\n", p.ID, algoNames[p.Algorithm], p.Eligible, p.Weights, len(p.Table))
	}
	for _, m := range sc.cfg.Members {
		fmt.Fprintf(&b, "  member %d (pool %d): %s %s, up %v, max_connections %d, nat %v\n", m.ID, m.Pool, m.Addr, sc.state[m.ID], m.Up, m.MaxConns, m.NAT)
	}
	for _, t := range sc.cfg.Tables {
		fmt.Fprintf(&b, "  table %d: capacity %d, purge_when_full %v\n", t.ID, t.Capacity, t.Purge)
	}
	fmt.Fprintf(&b, "  idle timeouts: udp %v, fin %v, established %v\n", sc.idle.udp, sc.idle.fin, sc.idle.estab)
	return b.String()
}

func describeSpec(g genPacket) string {
	s := g.spec
	proto := "tcp"
	if s.UDP {
		proto = "udp"
	}
	if s.Proto != 0 {
		proto = fmt.Sprintf("proto %d", s.Proto)
	}
	var extra []string
	if proto == "tcp" {
		extra = append(extra, fmt.Sprintf("flags %q", s.Flags))
	}
	extra = append(extra, fmt.Sprintf("%d bytes of payload", len(s.Payload)))
	if s.ZeroTTL || s.TTL != 64 {
		extra = append(extra, fmt.Sprintf("ttl %d", s.TTL))
	}
	if len(s.VLANs) > 0 {
		extra = append(extra, fmt.Sprintf("%d VLAN tags", len(s.VLANs)))
	}
	if len(s.IPv4Options) > 0 {
		extra = append(extra, fmt.Sprintf("%d bytes of IPv4 options", len(s.IPv4Options)))
	}
	if len(s.IPv6Ext) > 0 {
		var ts []string
		for _, e := range s.IPv6Ext {
			ts = append(ts, fmt.Sprint(e.Type))
		}
		extra = append(extra, "IPv6 extension headers "+strings.Join(ts, ","))
	}
	if s.MoreFrags || s.FragOffset != 0 {
		extra = append(extra, fmt.Sprintf("fragment (MF %v, offset %d)", s.MoreFrags, s.FragOffset))
	}
	if g.mg.kind != mgNone {
		extra = append(extra, fmt.Sprintf("%s (%d)", mangleNames[g.mg.kind], g.mg.param))
	}
	return fmt.Sprintf("%s %s -> %s, %s", proto, s.Src, s.Dst, strings.Join(extra, ", "))
}
