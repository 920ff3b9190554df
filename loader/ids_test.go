package loader

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestTableIDCarriesItsKind(t *testing.T) {
	for _, tc := range []struct {
		index  uint32
		purges bool
		packed uint32
		text   string
	}{
		{0, true, 0, "lru/0"},
		{3, true, 3, "lru/3"},
		{3, false, 1<<31 | 3, "hash/3"},
		{MaxPersistTables - 1, false, 1<<31 | (MaxPersistTables - 1), "hash/1023"},
	} {
		id := NewTableID(tc.index, tc.purges)
		if uint32(id) != tc.packed || id.Index() != tc.index || id.Purges() != tc.purges || id.String() != tc.text {
			t.Errorf("NewTableID(%d, %v) = %#x (index %d, purges %v, %q); want %#x, %q",
				tc.index, tc.purges, uint32(id), id.Index(), id.Purges(), id.String(), tc.packed, tc.text)
		}
		var back TableID
		if err := back.UnmarshalText([]byte(tc.text)); err != nil || back != id {
			t.Errorf("UnmarshalText(%q) = %v, %v; want %v", tc.text, back, err, id)
		}
	}
	var none TableID
	if err := none.UnmarshalText([]byte("none")); err != nil || none != TableNone || TableNone.String() != "none" {
		t.Errorf("none: %v %v", none, err)
	}
	for _, bad := range []string{"", "lru", "lru/", "lru/1024", "fifo/1", "hash/-1", "3"} {
		var id TableID
		if err := id.UnmarshalText([]byte(bad)); err == nil || !strings.Contains(err.Error(), "lru/N or hash/N") {
			t.Errorf("UnmarshalText(%q) = %v, %v; want an error naming the form", bad, id, err)
		}
	}
}

// The pinned metadata stores table ids as their packed number: a typed id
// must write and read that same number.
func TestTableIDKeepsItsStoredForm(t *testing.T) {
	type doc struct {
		ID TableID `json:"table_id"`
	}
	for _, id := range []TableID{NewTableID(7, true), NewTableID(7, false), TableNone} {
		b, err := json.Marshal(doc{id})
		if err != nil {
			t.Fatal(err)
		}
		if want := `{"table_id":` + jsonNumber(uint32(id)) + `}`; string(b) != want {
			t.Errorf("marshal %v = %s; want %s", id, b, want)
		}
		var back doc
		if err := json.Unmarshal(b, &back); err != nil || back.ID != id {
			t.Errorf("unmarshal %s = %v, %v; want %v", b, back.ID, err, id)
		}
	}
	var d doc
	if err := json.Unmarshal([]byte(`{"table_id":"hash/2"}`), &d); err != nil || d.ID != NewTableID(2, false) {
		t.Errorf("text form: %v %v", d.ID, err)
	}
	if err := json.Unmarshal([]byte(`{"table_id":4096}`), &d); err == nil {
		t.Error("table id 4096 (index beyond the outer maps) was accepted")
	}
}

func jsonNumber(n uint32) string { b, _ := json.Marshal(n); return string(b) }

func TestEnumsReadTheirNames(t *testing.T) {
	for _, a := range []Algorithm{AlgoRoundRobin, AlgoWeightedRoundRobin, AlgoLeastConnection, AlgoWeightedLeastConnection, AlgoIPHash} {
		var back Algorithm
		if err := back.UnmarshalText([]byte(a.String())); err != nil || back != a {
			t.Errorf("algorithm %d: %q reads back as %d, %v", a, a, back, err)
		}
	}
	if AlgoIPHash.String() != "ip_hash" || AlgoWeightedLeastConnection.String() != "weighted_least_connection" {
		t.Errorf("algorithm names differ from the config's: %s, %s", AlgoIPHash, AlgoWeightedLeastConnection)
	}
	var a Algorithm
	if err := a.UnmarshalText([]byte("random")); err == nil || !strings.Contains(err.Error(), `"random"`) {
		t.Errorf("unknown algorithm: %v", err)
	}
	for _, p := range []Protocol{ProtoTCP, ProtoUDP} {
		var back Protocol
		if err := back.UnmarshalText([]byte(p.String())); err != nil || back != p {
			t.Errorf("protocol %d: %q reads back as %d, %v", p, p, back, err)
		}
	}
	var p Protocol
	if err := p.UnmarshalText([]byte("sctp")); err == nil || Protocol(132).String() != "proto_132" {
		t.Errorf("sctp: %v, %s", err, Protocol(132))
	}
	for _, m := range []XDPMode{XDPAuto, XDPNative, XDPGeneric} {
		if back, err := ParseXDPMode(m.String()); err != nil || back != m {
			t.Errorf("xdp mode %s: %v %v", m, back, err)
		}
	}
	if _, err := ParseXDPMode("offload"); err == nil || !strings.Contains(err.Error(), "auto, native or generic") {
		t.Errorf("offload: %v", err)
	}
}
