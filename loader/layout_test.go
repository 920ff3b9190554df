package loader

import (
	"reflect"
	"testing"

	"github.com/cilium/ebpf/btf"
)

// The raw codecs take their offsets from the generated types; this holds
// the generated types to the BTF of the committed object, so an object
// rebuilt without regenerating the bindings (or the reverse) fails here,
// without root.
func TestGeneratedTypesMatchObjectBTF(t *testing.T) {
	spec, err := loadLimpet()
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]any{
		"flow_key": limpetFlowKey{}, "flow_info": limpetFlowInfo{}, "persist_key": limpetPersistKey{},
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
