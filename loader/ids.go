package loader

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/limpet-lb/limpet/userspace/enum"
)

// TableID names a persistence table: its slot in the outer map of its kind,
// and the kind. The datapath carries both in one 32-bit word (the top bit
// set for a plain hash), the form stored in keys, flows, events and the
// pinned metadata; NewTableID, Index and Purges are the only code that knows
// the packing.
type TableID uint32

// TableNone is the table of a virtual server without persistence, and of a
// flow that holds no persistence entry.
const TableNone TableID = 0xffffffff

// VirtualServerID, PoolID and MemberID number the datapath's virtual
// servers, pools and members: each is its key in its map, and plan assigns
// them, keeping an object's id across reloads.
type (
	VirtualServerID uint32
	PoolID          uint32
	MemberID        uint32
)

// NoVirtualServer and NoMember name none, as the datapath spells it in an
// entry written by userspace (mirroring, shared tables).
const (
	NoVirtualServer VirtualServerID = 0xffffffff
	NoMember        MemberID        = 0xffffffff
)

// NewTableID builds the id of a persistence table from its index and kind. A
// table that does not purge when full is a plain hash, so inserts into a
// full table fail and the new client is rejected.
func NewTableID(index uint32, purgeWhenFull bool) TableID {
	id := TableID(index & tableIndexMask)
	if !purgeWhenFull {
		id |= tablePlainHash
	}
	return id
}

// Index is the table's slot in its outer map.
func (t TableID) Index() uint32 { return uint32(t) & tableIndexMask }

// Purges reports whether the table evicts its least recently used entry when full.
func (t TableID) Purges() bool { return t&tablePlainHash == 0 }

// valid reports whether t is TableNone or made by NewTableID.
func (t TableID) valid() bool { return t == TableNone || t&^tablePlainHash <= tableIndexMask }

// Kind names the table's map type: lru (purges when full) or hash (rejects).
func (t TableID) Kind() string {
	if t.Purges() {
		return "lru"
	}
	return "hash"
}

// String is "none", or the kind and index, as in "lru/3".
func (t TableID) String() string {
	if t == TableNone {
		return "none"
	}
	if !t.valid() {
		return fmt.Sprintf("%#x", uint32(t))
	}
	return fmt.Sprintf("%s/%d", t.Kind(), t.Index())
}

// UnmarshalText parses String's form.
func (t *TableID) UnmarshalText(b []byte) error {
	s := string(b)
	if s == "none" {
		*t = TableNone
		return nil
	}
	kind, idx, ok := strings.Cut(s, "/")
	n, err := strconv.ParseUint(idx, 10, 32)
	if !ok || err != nil || n > tableIndexMask || (kind != "lru" && kind != "hash") {
		return fmt.Errorf("table id %q must be none, lru/N or hash/N with N below %d", s, MaxPersistTables)
	}
	*t = NewTableID(uint32(n), kind == "lru")
	return nil
}

// UnmarshalJSON reads the packed number the pinned metadata stores (a
// TableID marshals as that number), and String's form as a JSON string.
func (t *TableID) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		return t.UnmarshalText([]byte(s))
	}
	n, err := strconv.ParseUint(string(bytes.TrimSpace(b)), 10, 32)
	if err != nil || !TableID(n).valid() {
		return fmt.Errorf("table id %s is not a table", b)
	}
	*t = TableID(n)
	return nil
}

// Algorithm is how a pool picks a member for a new client, as the datapath
// numbers them.
type Algorithm uint32

// Pool algorithms, as the datapath's enum algorithm numbers them.
const (
	AlgoRoundRobin              = Algorithm(limpetAlgorithmALGO_ROUND_ROBIN)
	AlgoWeightedRoundRobin      = Algorithm(limpetAlgorithmALGO_WEIGHTED_ROUND_ROBIN)
	AlgoLeastConnection         = Algorithm(limpetAlgorithmALGO_LEAST_CONNECTION)
	AlgoWeightedLeastConnection = Algorithm(limpetAlgorithmALGO_WEIGHTED_LEAST_CONNECTION)
	AlgoIPHash                  = Algorithm(limpetAlgorithmALGO_IP_HASH)
)

// The config's names of the algorithms, by number.
var algorithmNames = [...]string{
	AlgoRoundRobin:              "round_robin",
	AlgoWeightedRoundRobin:      "weighted_round_robin",
	AlgoLeastConnection:         "least_connection",
	AlgoWeightedLeastConnection: "weighted_least_connection",
	AlgoIPHash:                  "ip_hash",
}

func (a Algorithm) String() string {
	if int(a) < len(algorithmNames) {
		return algorithmNames[a]
	}
	return fmt.Sprintf("algorithm_%d", uint32(a))
}

// UnmarshalText parses the config's name of an algorithm.
func (a *Algorithm) UnmarshalText(b []byte) error {
	for i, name := range algorithmNames {
		if string(b) == name {
			*a = Algorithm(i)
			return nil
		}
	}
	return fmt.Errorf("algorithm %q must be one of %s", b, strings.Join(algorithmNames[:], ", "))
}

// Protocol is a virtual server's or flow's transport protocol, by its IP
// protocol number.
type Protocol uint8

// Transport protocols the datapath balances.
const (
	ProtoTCP Protocol = 6
	ProtoUDP Protocol = 17
)

var protocolNames = enum.Names[Protocol]{
	ProtoTCP: "tcp",
	ProtoUDP: "udp",
}

func (p Protocol) String() string { return protocolNames.Name(p, "proto_%d") }

// UnmarshalText parses "tcp" or "udp".
func (p *Protocol) UnmarshalText(b []byte) error {
	v, ok := protocolNames.Parse(string(b))
	if !ok {
		return fmt.Errorf("protocol %q must be tcp or udp", b)
	}
	*p = v
	return nil
}

// XDPMode chooses how the program attaches to an interface.
type XDPMode string

// XDP attach modes.
const (
	XDPAuto    XDPMode = "auto"
	XDPNative  XDPMode = "native"
	XDPGeneric XDPMode = "generic"
)

// ParseXDPMode validates a mode name.
func ParseXDPMode(s string) (XDPMode, error) {
	var m XDPMode
	if err := m.UnmarshalText([]byte(s)); err != nil {
		return "", err
	}
	return m, nil
}

func (m XDPMode) String() string { return string(m) }

// UnmarshalText accepts auto, native or generic.
func (m *XDPMode) UnmarshalText(b []byte) error {
	switch XDPMode(b) {
	case XDPAuto, XDPNative, XDPGeneric:
		*m = XDPMode(b)
		return nil
	}
	return fmt.Errorf("xdp mode %q must be auto, native or generic", b)
}
