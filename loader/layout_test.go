package loader

import (
	"reflect"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// limpetSpec is the committed object's collection spec.
func limpetSpec(t *testing.T) *ebpf.CollectionSpec {
	t.Helper()
	spec, err := loadLimpet()
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

// The raw codecs take their offsets from the generated types; this holds
// the generated types to the BTF of the committed object, so an object
// rebuilt without regenerating the bindings (or the reverse) fails here,
// without root.
func TestGeneratedTypesMatchObjectBTF(t *testing.T) {
	spec := limpetSpec(t)
	for name, v := range map[string]any{
		"flow_key": limpetFlowKey{}, "flow_info": limpetFlowInfo{}, "flow4_key": limpetFlow4Key{}, "flow4_info": limpetFlow4Info{},
		"persist_key":   limpetPersistKey{},
		"persist_entry": limpetPersistEntry{}, "persist_event": limpetPersistEvent{}, "gc_item": limpetGcItem{},
		"gc_batch": limpetGcBatch{}, "vs_info": limpetVsInfo{}, "member_info": limpetMemberInfo{},
	} {
		var s *btf.Struct
		if err := spec.Types.TypeByName(name, &s); err != nil {
			t.Errorf("struct %s: %v", name, err)
			continue
		}
		gt := reflect.TypeOf(v)
		if uintptr(s.Size) != gt.Size() {
			t.Errorf("struct %s: %d bytes in the object, %d in the bindings", name, s.Size, gt.Size())
			continue
		}
		var goOffsets []uintptr
		for i := range gt.NumField() {
			if f := gt.Field(i); f.Name != "_" {
				goOffsets = append(goOffsets, f.Offset)
			}
		}
		if len(goOffsets) != len(s.Members) {
			t.Errorf("struct %s: %d members in the object, %d in the bindings", name, len(s.Members), len(goOffsets))
			continue
		}
		for i, m := range s.Members {
			if uintptr(m.Offset.Bytes()) != goOffsets[i] {
				t.Errorf("struct %s: member %s at %d in the object, %d in the bindings", name, m.Name, m.Offset.Bytes(), goOffsets[i])
			}
		}
	}
}

func TestReasonTableCoversEnum(t *testing.T) {
	for r := firstReason; r < limpetReasonREASON_MAX; r++ {
		if reasons[r].name == "" {
			t.Errorf("reason %d has no name in the reasons table", r)
		}
	}
	if reasons[limpetReasonREASON_NONE].name != "" {
		t.Errorf("REASON_NONE is named %q: it counts nothing", reasons[limpetReasonREASON_NONE].name)
	}
	if len(ReasonNames) != int(limpetReasonREASON_MAX)-1 || len(ReasonDrops) != len(ReasonNames) || len(ReasonPasses) != len(ReasonNames) {
		t.Errorf("%d names, %d drops, %d passes for %d reasons", len(ReasonNames), len(ReasonDrops), len(ReasonPasses), limpetReasonREASON_MAX-1)
	}
	seen := map[string]bool{}
	for _, n := range ReasonNames {
		if seen[n] {
			t.Errorf("reason name %s used twice", n)
		}
		seen[n] = true
	}
}

// The loader's flag bits, operations, results, algorithms and event types
// come from the bindings of the datapath's enums; this holds the bindings
// to the committed object's BTF, and makes an enumerator added on the C
// side fail here until the loader says what it makes of it, without root.
func TestEnumsMatchObjectBTF(t *testing.T) {
	spec := limpetSpec(t)
	for name, want := range map[string]map[string]uint64{
		"flow_flag": {
			"FLOW_F_COUNTED": uint64(flowCounted), "FLOW_F_FIN_CLIENT": uint64(flowFinClient),
			"FLOW_F_FIN_SERVER": uint64(flowFinServer), "FLOW_F_RST": uint64(flowRST),
			"FLOW_F_REVERSE": uint64(flowReverse), "FLOW_F_NAT": uint64(flowNAT), "FLOW_F_DSR": uint64(flowDSR),
			"FLOW_F_UDP": uint64(flowUDP), "FLOW_F_MEMBER_COUNTED": uint64(flowMemberCounted),
			"FLOW_F_TARGET_OTHER_FAMILY": uint64(flowTargetOtherFam),
		},
		"vs_flag": {
			"VS_F_DSR": uint64(vsDSR), "VS_F_PERSIST": uint64(vsPersist), "VS_F_SERVER_DOWN_NEVER": uint64(vsServerDownNever),
			"VS_F_ENCAP_IPIP": uint64(vsEncapIPIP), "VS_F_ENCAP_GUE": uint64(vsEncapGUE),
		},
		"member_flag":    {"MEMBER_F_UP": uint64(memberUp)},
		"member_vs_flag": {"MEMBER_VS_F_SHARED": uint64(memberVSShared)},
		"vip_flag":       {"VIP_F_OVERFLOW": uint64(vipOverflow)},
		"encap_flag":     {"ENCAP_F_SOURCE_V4": uint64(encapSourceV4), "ENCAP_F_SOURCE_V6": uint64(encapSourceV6)},
		"table_flag":     {"TABLE_F_MIRROR": uint64(tableMirror)},
		"algorithm": {
			"ALGO_ROUND_ROBIN": uint64(AlgoRoundRobin), "ALGO_WEIGHTED_ROUND_ROBIN": uint64(AlgoWeightedRoundRobin),
			"ALGO_LEAST_CONNECTION": uint64(AlgoLeastConnection), "ALGO_WEIGHTED_LEAST_CONNECTION": uint64(AlgoWeightedLeastConnection),
			"ALGO_IP_HASH": uint64(AlgoIPHash),
		},
		"event_type": {"EVENT_CREATED": uint64(EventCreated), "EVENT_MOVED": uint64(EventMoved), "EVENT_EXPIRED": uint64(EventExpired)},
		"gc_op": {
			"GC_OP_FLOW_EXPIRE": gcOpFlowExpire, "GC_OP_PERSIST_EXPIRE": gcOpPersistExpire, "GC_OP_RECONCILE": gcOpReconcile,
			"GC_OP_TOUCH": gcOpTouch, "GC_OP_MEMBER_RECONCILE": gcOpMemberReconcile,
		},
		"gc_result": {
			"GC_RES_DONE": uint64(GCDone), "GC_RES_SKIPPED": uint64(GCSkipped), "GC_RES_NOT_FOUND": uint64(GCNotFound), "GC_RES_BAD": uint64(GCBad),
		},
	} {
		var e *btf.Enum
		if err := spec.Types.TypeByName(name, &e); err != nil {
			t.Errorf("enum %s: %v", name, err)
			continue
		}
		got := map[string]uint64{}
		for _, v := range e.Values {
			got[v.Name] = v.Value
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("enum %s: the object has %v, the loader %v", name, got, want)
		}
	}
	if algorithmNames[AlgoIPHash] == "" || len(algorithmNames) != int(AlgoIPHash)+1 {
		t.Errorf("algorithmNames has %d names for %d algorithms", len(algorithmNames), AlgoIPHash+1)
	}
}

// The loader's limits are the sizes of the maps (and arrays) the object
// declares.
func TestLimitsMatchObject(t *testing.T) {
	spec := limpetSpec(t)
	for name, want := range map[string]uint32{
		"virtual_servers": MaxVirtualServers, "pools": MaxPools, "members": MaxMembers,
		"persist_lru_tables": MaxPersistTables, "persist_hash_tables": MaxPersistTables, "meta": metaChunks,
	} {
		m, ok := spec.Maps[name]
		if !ok {
			t.Errorf("map %s: not in the object", name)
			continue
		}
		if m.MaxEntries != want {
			t.Errorf("map %s: %d entries in the object, the loader's limit is %d", name, m.MaxEntries, want)
		}
	}
	if m := spec.Maps["meta"]; m != nil && m.ValueSize != metaChunkSize {
		t.Errorf("meta chunks: %d bytes in the object, %d in the loader", m.ValueSize, metaChunkSize)
	}
	if n := len(limpetGcBatch{}.Items); n != gcBatchMax {
		t.Errorf("gc_batch holds %d items, the loader sends %d", n, gcBatchMax)
	}
	if n := len(limpetPoolInfo{}.Eligible); n != MaxMembersPerPool {
		t.Errorf("pool_info holds %d members, the loader's limit is %d", n, MaxMembersPerPool)
	}
}
