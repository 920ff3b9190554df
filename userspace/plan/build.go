package plan

import (
	"net/netip"
	"sort"
	"time"

	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/userspace/config"
	"github.com/limpet-lb/limpet/userspace/desired"
	"github.com/limpet-lb/limpet/userspace/ids"
)

// Build computes the datapath state for the l4 virtual servers of cfg,
// reusing the ids in prev (which may be nil).
func Build(cfg *config.Config, prev *desired.Meta) (loader.State, *desired.Meta, error) {
	var st loader.State
	meta := &desired.Meta{Version: desired.MetaVersion, AppliedAt: time.Now().UTC(), IdleTimeouts: desired.IdleTimeouts(cfg.Settings.IdleTimeouts)}
	if prev == nil {
		prev = &desired.Meta{}
	}
	adminDown := map[string]bool{}
	for _, k := range prev.AdminDown {
		adminDown[k] = true
	}

	var l4 []config.VirtualServer
	for _, vs := range cfg.VirtualServers {
		if vs.Type == config.VSTypeL4 {
			l4 = append(l4, vs)
		}
	}

	// Which pools serve l4 traffic, and in which modes.
	poolNAT := map[string]bool{}
	poolUsed := map[string]bool{}
	for _, vs := range l4 {
		poolUsed[vs.Pool] = true
		if vs.Forwarding == config.ForwardNAT {
			poolNAT[vs.Pool] = true
		}
	}

	prevPools, prevMembers, prevVS, prevTables := map[string]loader.PoolID{}, map[string]loader.MemberID{}, map[string]loader.VirtualServerID{}, map[string]uint32{}
	for _, p := range prev.Pools {
		prevPools[p.Name] = p.ID
	}
	for _, m := range prev.Members {
		prevMembers[m.Key] = m.ID
	}
	for _, v := range prev.VirtualServers {
		prevVS[v.Name] = v.ID
	}
	for _, t := range prev.Tables {
		prevTables[t.Key] = t.ID.Index()
	}

	var poolNames, memberKeys, vsNames, tableKeys []string
	for _, p := range cfg.Pools {
		if !poolUsed[p.Name] {
			continue
		}
		poolNames = append(poolNames, p.Name)
		for _, m := range p.Members {
			memberKeys = append(memberKeys, MemberKey(p.Name, netip.MustParseAddr(m.Address), m.Port))
		}
	}
	for _, vs := range l4 {
		vsNames = append(vsNames, vs.Name)
		if p := cfg.Profile(vs.Persistence); p != nil {
			tableKeys = append(tableKeys, ids.TableOf(p.Name, p.SharePersistence, vs.Name).String())
		}
	}
	poolIDs := newAllocator("pools", loader.MaxPools, prevPools, poolNames)
	memberIDs := newAllocator("members", loader.MaxMembers, prevMembers, memberKeys)
	vsIDs := newAllocator("l4 virtual servers", loader.MaxVirtualServers, prevVS, vsNames)
	tableIDs := newAllocator("persistence tables", loader.MaxPersistTables, prevTables, tableKeys)

	poolID := map[string]loader.PoolID{}
	for _, p := range cfg.Pools {
		if !poolUsed[p.Name] {
			continue
		}
		pid, err := poolIDs.get(p.Name)
		if err != nil {
			return st, nil, err
		}
		poolID[p.Name] = pid
		pm := desired.PoolMeta{ID: pid, Name: p.Name, Algorithm: p.Algorithm, MaglevTableSize: p.MaglevTableSize}
		meta.Pools = append(meta.Pools, pm)
		for _, m := range p.Members {
			addr := netip.MustParseAddr(m.Address).Unmap()
			key := MemberKey(p.Name, addr, m.Port)
			mid, err := memberIDs.get(key)
			if err != nil {
				return st, nil, err
			}
			if adminDown[key] {
				meta.AdminDown = append(meta.AdminDown, key)
			}
			meta.Members = append(meta.Members, desired.MemberMeta{ID: mid, Key: key, Pool: p.Name, Name: m.Name, Address: addr.String(),
				Port: m.Port, State: m.State, AdminDown: adminDown[key], Weight: m.Weight, MaxConnections: m.MaxConnections, NAT: poolNAT[p.Name]})
		}
	}

	tableByKey := map[string]loader.TableID{}
	for _, vs := range l4 {
		vid, err := vsIDs.get(vs.Name)
		if err != nil {
			return st, nil, err
		}
		vip := netip.MustParseAddr(vs.Address).Unmap()
		lv := loader.VirtualServer{
			ID: vid, VIP: netip.AddrPortFrom(vip, uint16(vs.Port)), PoolID: poolID[vs.Pool],
			TableID: loader.TableNone, DSR: vs.Forwarding == config.ForwardDSR || config.Encapsulates(vs.Forwarding), Proto: loader.ProtoTCP,
		}
		switch vs.Forwarding {
		case config.ForwardIPIP:
			lv.Encap = loader.EncapIPIP
		case config.ForwardGUE:
			lv.Encap = loader.EncapGUE
		}
		if vs.Protocol == config.ProtoUDP {
			lv.Proto = loader.ProtoUDP
		}
		vm := desired.VirtualServerMeta{ID: vid, Name: vs.Name, Address: vip.String(), Port: vs.Port, Protocol: vs.Protocol,
			Forwarding: vs.Forwarding, Pool: vs.Pool, Profile: vs.Persistence, TableID: loader.TableNone}
		if p := cfg.Profile(vs.Persistence); p != nil {
			key := ids.TableOf(p.Name, p.SharePersistence, vs.Name).String()
			tid, ok := tableByKey[key]
			if !ok {
				idx, err := tableIDs.get(key)
				if err != nil {
					return st, nil, err
				}
				tid = loader.NewTableID(idx, *p.PurgeWhenFull)
				tableByKey[key] = tid
				st.Tables = append(st.Tables, loader.Table{ID: tid, MaxEntries: uint32(*p.MaxEntries), Mirror: p.HAMirroring})
				tm := desired.TableMeta{ID: tid, Key: key, Profile: p.Name, Shared: p.SharePersistence,
					Timeout: *p.Timeout, MaxEntries: *p.MaxEntries, PurgeWhenFull: *p.PurgeWhenFull,
					IPv4Prefix: *p.IPv4Prefix, IPv6Prefix: *p.IPv6Prefix, ServerDown: p.ServerDown,
					HAMirroring: p.HAMirroring, Tags: tags(p.Tags)}
				if !p.SharePersistence {
					tm.VirtualServer = vs.Name
				}
				meta.Tables = append(meta.Tables, tm)
			}
			lv.TableID = tid
			lv.Timeout = time.Duration(*p.Timeout) * time.Second
			lv.IPv4Prefix = uint8(*p.IPv4Prefix)
			lv.IPv6Prefix = uint8(*p.IPv6Prefix)
			lv.ServerDownNever = p.ServerDown == config.ServerDownNever
			vm.TableID = tid
		}
		st.VirtualServers = append(st.VirtualServers, lv)
		meta.VirtualServers = append(meta.VirtualServers, vm)
	}
	sort.Strings(meta.AdminDown)
	// Validated by config: either empty or an address of its family.
	if a, err := netip.ParseAddr(cfg.Settings.EncapSourceV4); err == nil {
		st.Encap.SourceV4 = a
	}
	if a, err := netip.ParseAddr(cfg.Settings.EncapSourceV6); err == nil {
		st.Encap.SourceV6 = a
	}
	st.Encap.GUEPort = uint16(cfg.Settings.GUEPort)
	var err error
	if st.Members, st.Pools, err = meta.MembersAndPools(nil); err != nil {
		return st, nil, err
	}
	return st, meta, nil
}

func tags(ts []config.Tag) []desired.Tag {
	var out []desired.Tag
	for _, t := range ts {
		out = append(out, desired.Tag{Scope: t.Scope, Tag: t.Tag})
	}
	return out
}
