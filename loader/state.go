package loader

import (
	"errors"
	"fmt"
	"slices"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Apply makes the datapath's configuration maps match s. Writes are ordered
// so a packet never finds a reference to something not yet written: tables,
// members and pools first, then virtual servers and VIPs; removals go the
// other way round. Flows, persistence entries and counters are untouched.
func (d *Datapath) Apply(s State) error {
	if err := validateState(s); err != nil {
		return err
	}
	m := &d.objs.limpetMaps

	// Before the virtual servers that use them.
	if err := d.writeEncap(s.Encap); err != nil {
		return err
	}
	for _, t := range s.Tables {
		if err := d.ensureTable(t); err != nil {
			return err
		}
	}

	wantMemberAddrs := map[limpetMemberAddrKey]MemberID{}
	for _, mem := range s.Members {
		if err := d.SetMember(mem); err != nil {
			return fmt.Errorf("write member %d: %w", mem.ID, err)
		}
		b, fam := addrBytes(mem.Addr.Addr())
		k := limpetMemberAddrKey{PoolId: uint32(mem.PoolID), Family: fam, Port: htons(mem.Addr.Port())}
		k.Addr.B = b
		wantMemberAddrs[k] = mem.ID
		k.Port = 0
		if _, dup := wantMemberAddrs[k]; !dup {
			wantMemberAddrs[k] = mem.ID
		}
	}
	for k, id := range wantMemberAddrs {
		if err := m.MemberAddrs.Put(&k, id); err != nil {
			return fmt.Errorf("write member address index: %w", err)
		}
	}
	wantMemberVS := memberVirtualServers(s)
	if len(wantMemberVS) > int(m.MemberVs.MaxEntries()) {
		return fmt.Errorf("%d NAT member addresses and ports per virtual server, more than the datapath's %d", len(wantMemberVS), m.MemberVs.MaxEntries())
	}
	for k, v := range wantMemberVS {
		if err := m.MemberVs.Put(&k, &v); err != nil {
			return fmt.Errorf("write NAT member: %w", err)
		}
	}

	wantPools := map[PoolID]bool{}
	for _, p := range s.Pools {
		if err := d.writePool(p); err != nil {
			return err
		}
		wantPools[p.ID] = true
	}

	wantVS := map[limpetVipKey]bool{}
	wantVIPs := map[limpetAddrKey]*limpetVipInfo{}
	for _, vs := range s.VirtualServers {
		b, fam := addrBytes(vs.VIP.Addr())
		k := limpetVipKey{Port: htons(vs.VIP.Port()), Proto: uint8(vs.Proto), Family: fam}
		k.Addr.B = b
		info := limpetVsInfo{
			VsId: uint32(vs.ID), PoolId: uint32(vs.PoolID), TableId: uint32(vs.TableID),
			V4Prefix: vs.IPv4Prefix, V6Prefix: vs.IPv6Prefix, TimeoutNs: uint64(vs.Timeout),
		}
		if vs.DSR {
			info.Flags |= vsDSR
		}
		switch vs.Encap {
		case EncapIPIP:
			info.Flags |= vsEncapIPIP
		case EncapGUE:
			info.Flags |= vsEncapGUE
		}
		if vs.TableID != TableNone {
			info.Flags |= vsPersist
		}
		if vs.ServerDownNever {
			info.Flags |= vsServerDownNever
		}
		if err := m.VirtualServers.Put(&k, &info); err != nil {
			return fmt.Errorf("write virtual server %d: %w", vs.ID, err)
		}
		wantVS[k] = true
		ak := limpetAddrKey{Family: fam}
		ak.Addr.B = b
		vip := wantVIPs[ak]
		if vip == nil {
			vip = &limpetVipInfo{}
			wantVIPs[ak] = vip
		}
		if int(vip.Used) < len(vip.Servers) {
			vip.Servers[vip.Used] = limpetVipServer{Port: k.Port, Proto: k.Proto, Vs: info}
			vip.Used++
		} else {
			vip.Flags |= vipOverflow
		}
	}
	for ak, vip := range wantVIPs {
		if err := m.Vips.Put(&ak, vip); err != nil {
			return fmt.Errorf("write VIP: %w", err)
		}
	}

	// Removals, outermost first.
	var errs []error
	errs = append(errs, deleteStale(m.Vips, func(k *limpetAddrKey) bool { return wantVIPs[*k] != nil }))
	errs = append(errs, deleteStale(m.VirtualServers, func(k *limpetVipKey) bool { return wantVS[*k] }))
	errs = append(errs, deleteStale(m.MemberVs, func(k *limpetMemberVsKey) bool {
		_, ok := wantMemberVS[*k]
		return ok
	}))
	errs = append(errs, deleteStale(m.Pools, func(k *PoolID) bool { return wantPools[*k] }))
	errs = append(errs, deleteStale(m.MemberAddrs, func(k *limpetMemberAddrKey) bool {
		_, ok := wantMemberAddrs[*k]
		return ok
	}))
	wantTables := map[TableID]bool{}
	for _, t := range s.Tables {
		wantTables[t.ID] = true
	}
	errs = append(errs, d.removeStaleTables(wantTables))
	return errors.Join(errs...)
}

// memberVirtualServers maps each NAT member's address, port (port 0 made the
// virtual server's) and protocol to the NAT virtual server it serves there,
// so that its replies find their connection's forward flow. Where one serves
// several virtual servers the entry says so (shared), and their connections
// keep reverse flow entries instead.
func memberVirtualServers(s State) map[limpetMemberVsKey]limpetMemberVsInfo {
	out := map[limpetMemberVsKey]limpetMemberVsInfo{}
	for _, vs := range s.VirtualServers {
		if vs.DSR {
			continue
		}
		vip, _ := addrBytes(vs.VIP.Addr())
		for _, mem := range s.Members {
			if !mem.NAT || mem.PoolID != vs.PoolID {
				continue
			}
			port := mem.Addr.Port()
			if port == 0 {
				port = vs.VIP.Port()
			}
			b, mfam := addrBytes(mem.Addr.Addr())
			k := limpetMemberVsKey{Port: htons(port), Proto: uint8(vs.Proto), Family: mfam}
			k.Addr.B = b
			if prev, ok := out[k]; ok && (prev.Flags&memberVSShared != 0 || prev.VsId != uint32(vs.ID)) {
				out[k] = limpetMemberVsInfo{Flags: memberVSShared}
				continue
			}
			v := limpetMemberVsInfo{VipPort: htons(vs.VIP.Port()), VsId: uint32(vs.ID)}
			v.Vip.B = vip
			out[k] = v
		}
	}
	return out
}

// SetMember rewrites one member, e.g. to take it down.
func (e *Editor) SetMember(mem Member) error {
	if mem.ID >= MaxMembers {
		return fmt.Errorf("member id %d exceeds %d", mem.ID, MaxMembers-1)
	}
	b, fam := addrBytes(mem.Addr.Addr())
	info := limpetMemberInfo{Port: htons(mem.Addr.Port()), Family: fam, PoolId: uint32(mem.PoolID), MaxConns: mem.MaxConns}
	info.Addr.B = b
	if mem.Up {
		info.Flags = memberUp
	}
	return e.m.Members.Put(mem.ID, &info)
}

// SetPool replaces a pool: its table first (one atomic swap of the inner
// map), then its description (one atomic hash update). A packet between the
// two sees an old and a new half, both of which name only members that the
// datapath checks are usable, so it is still balanced correctly.
func (e *Editor) SetPool(p Pool) error {
	if len(p.Eligible) > MaxMembersPerPool {
		return fmt.Errorf("pool %d has %d eligible members, more than %d", p.ID, len(p.Eligible), MaxMembersPerPool)
	}
	return e.writePool(p)
}

func (e *Editor) writePool(p Pool) error {
	if len(p.Table) > MaxPoolTable {
		return fmt.Errorf("pool %d: table of %d entries exceeds %d", p.ID, len(p.Table), MaxPoolTable)
	}
	// Swapping an inner map waits for an RCU grace period (milliseconds),
	// so a table that did not change is left as it is: a reload that keeps
	// a pool's members costs one lookup instead.
	if len(p.Table) > 0 && !e.poolTableIs(p.ID, p.Table) {
		if err := e.installPoolTable(p.ID, p.Table); err != nil {
			return err
		}
	}
	var info, old limpetPoolInfo
	info.N_eligible = uint32(len(p.Eligible))
	info.Algorithm = uint32(p.Algorithm)
	info.TableSize = uint32(len(p.Table))
	for i, id := range p.Eligible {
		info.Eligible[i] = uint32(id)
	}
	copy(info.Weight[:], p.Weights)
	// Keep the round-robin position across updates so a reload does not
	// send the next clients to the first member again.
	if err := e.m.Pools.Lookup(p.ID, &old); err == nil {
		info.RrNext = old.RrNext
	}
	if err := e.m.Pools.Put(p.ID, &info); err != nil {
		return fmt.Errorf("write pool %d: %w", p.ID, err)
	}
	if len(p.Table) == 0 {
		if err := e.m.PoolTables.Delete(p.ID); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("remove pool %d table: %w", p.ID, err)
		}
	}
	return nil
}

// poolTableIs reports whether a pool's installed table holds exactly table.
func (e *Editor) poolTableIs(poolID PoolID, table []MemberID) bool {
	var inner *ebpf.Map
	if err := e.m.PoolTables.Lookup(poolID, &inner); err != nil {
		return false
	}
	defer inner.Close()
	if inner.MaxEntries() != uint32(len(table)) {
		return false
	}
	keys := make([]uint32, len(table))
	vals := make([]MemberID, len(table))
	var cursor ebpf.MapBatchCursor
	n, err := inner.BatchLookup(&cursor, keys, vals, nil)
	if (err != nil && !errors.Is(err, ebpf.ErrKeyNotExist)) || n != len(table) {
		return false
	}
	return slices.Equal(vals, table)
}

func (e *Editor) installPoolTable(poolID PoolID, table []MemberID) error {
	inner, err := ebpf.NewMap(&ebpf.MapSpec{
		Name: fmt.Sprintf("pool_%d", poolID), Type: ebpf.Array,
		KeySize: 4, ValueSize: 4, MaxEntries: uint32(len(table)), Flags: unix.BPF_F_INNER_MAP,
	})
	if err != nil {
		return fmt.Errorf("create pool %d table: %w", poolID, err)
	}
	defer inner.Close()
	keys := make([]uint32, len(table))
	for i := range keys {
		keys[i] = uint32(i)
	}
	if _, err := inner.BatchUpdate(keys, table, nil); err != nil {
		return fmt.Errorf("fill pool %d table: %w", poolID, err)
	}
	if err := e.m.PoolTables.Put(poolID, inner); err != nil {
		return fmt.Errorf("install pool %d table: %w", poolID, err)
	}
	return nil
}

// writeEncap writes the node's encapsulation settings.
func (d *Datapath) writeEncap(e EncapSettings) error {
	var c limpetEncapConfig
	if e.SourceV4.IsValid() {
		if !e.SourceV4.Unmap().Is4() {
			return fmt.Errorf("encapsulation source %s is not an IPv4 address", e.SourceV4)
		}
		c.SourceV4.B, _ = addrBytes(e.SourceV4)
		c.Flags |= encapSourceV4
	}
	if e.SourceV6.IsValid() {
		if !e.SourceV6.Is6() || e.SourceV6.Is4In6() {
			return fmt.Errorf("encapsulation source %s is not an IPv6 address", e.SourceV6)
		}
		c.SourceV6.B, _ = addrBytes(e.SourceV6)
		c.Flags |= encapSourceV6
	}
	port := e.GUEPort
	if port == 0 {
		port = DefaultGUEPort
	}
	c.GuePort = htons(port)
	if err := d.objs.EncapSettings.Put(uint32(0), &c); err != nil {
		return fmt.Errorf("write encapsulation settings: %w", err)
	}
	return nil
}

func validateState(s State) error {
	for _, vs := range s.VirtualServers {
		if vs.Encap != EncapNone && !vs.DSR {
			return fmt.Errorf("virtual server %d encapsulates but is not DSR", vs.ID)
		}
		if vs.ID >= MaxVirtualServers {
			return fmt.Errorf("virtual server id %d exceeds %d", vs.ID, MaxVirtualServers-1)
		}
		if vs.PoolID >= MaxPools {
			return fmt.Errorf("pool id %d exceeds %d", vs.PoolID, MaxPools-1)
		}
	}
	for _, p := range s.Pools {
		if len(p.Eligible) > MaxMembersPerPool {
			return fmt.Errorf("pool %d has %d eligible members, more than %d", p.ID, len(p.Eligible), MaxMembersPerPool)
		}
	}
	for _, m := range s.Members {
		if m.ID >= MaxMembers {
			return fmt.Errorf("member id %d exceeds %d", m.ID, MaxMembers-1)
		}
	}
	for _, t := range s.Tables {
		if t.MaxEntries == 0 {
			return fmt.Errorf("table %d has no capacity", t.ID)
		}
	}
	return nil
}

// deleteStale deletes every key of m for which keep returns false.
func deleteStale[K comparable](m *ebpf.Map, keep func(*K) bool) error {
	var stale []K
	var k K
	var v []byte
	it := m.Iterate()
	for it.Next(&k, &v) {
		if !keep(&k) {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate %s: %w", m, err)
	}
	for i := range stale {
		if err := m.Delete(&stale[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete from %s: %w", m, err)
		}
	}
	return nil
}
