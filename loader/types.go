package loader

import (
	"encoding/binary"
	"net/netip"
	"time"
)

// Limits compiled into the datapath.
const (
	MaxVirtualServers   = 1024
	MaxPools            = 1024
	MaxMembers          = 4096
	MaxMembersPerPool   = 64
	MaxPersistTables    = 1024
	tablePlainHash      = 1 << 31
	tableIndexMask      = MaxPersistTables - 1
	familyV4            = 4
	familyV6            = 6
	flowCounted         = 1 << 0
	flowFinClient       = 1 << 1
	flowFinServer       = 1 << 2
	flowRST             = 1 << 3
	flowReverse         = 1 << 4
	flowNAT             = 1 << 5
	flowDSR             = 1 << 6
	flowUDP             = 1 << 7
	csConnsMask         = 0x7fffffff
	csDead              = 1 << 31
	memberUp            = 1 << 0
	vsDSR               = 1 << 0
	vsPersist           = 1 << 1
	vsServerDownNever   = 1 << 2
	vsEncapIPIP         = 1 << 3
	vsEncapGUE          = 1 << 4
	encapSourceV4       = 1 << 0
	encapSourceV6       = 1 << 1
	metaChunkSize       = 4096
	metaChunks          = 256
	gcBatchMax          = 48
	gcOpFlowExpire      = 1
	gcOpPersistExpire   = 2
	gcOpReconcile       = 3
	gcOpTouch           = 4
	gcOpMemberReconcile = 5
	flowMemberCounted   = 1 << 8
	flowTargetOtherFam  = 1 << 9
	tableMirror         = 1 << 0
	vipOverflow         = 1 << 0
	memberVSShared      = 1 << 0
	gcResultDone        = 1
	gcResultSkipped     = 2
	gcResultNotFound    = 3
	gcResultBadArgument = 4
)

// VirtualServer is one (VIP, port, protocol) the datapath balances.
type VirtualServer struct {
	ID              uint32
	VIP             netip.AddrPort
	Proto           Protocol
	PoolID          uint32
	TableID         TableID // TableNone: no persistence
	DSR             bool    // also set for Encap: the flow and its replies are DSR's
	Encap           Encap
	ServerDownNever bool
	IPv4Prefix      uint8
	IPv6Prefix      uint8
	Timeout         time.Duration
}

// Encap is how an encapsulating (DSR) virtual server reaches its members.
type Encap uint8

// Encapsulations: none (nat, or dsr by MAC rewrite), IPIP (protocol 4 or
// 41 in the member's family), or GUE variant 1 over UDP (EncapSettings.GUEPort).
const (
	EncapNone Encap = iota
	EncapIPIP
	EncapGUE
)

// EncapSettings are the node's: the outer source address of each family
// (invalid: not configured, and a member of that family cannot be reached
// by encapsulation) and GUE's destination port.
type EncapSettings struct {
	SourceV4 netip.Addr
	SourceV6 netip.Addr
	GUEPort  uint16
}

// MaxPoolTable bounds a pool's lookup table.
const MaxPoolTable = 1 << 20

// Pool is the set of members that can take new clients, and how to choose.
type Pool struct {
	ID        uint32
	Algorithm Algorithm
	Eligible  []uint32 // member ids, in config order
	Weights   []uint16 // of Eligible, same order (weighted least connection)
	// Table is the weighted round-robin schedule or the Maglev table, as
	// member ids; nil for the other algorithms.
	Table []uint32
}

// Member is one server of one pool.
type Member struct {
	ID     uint32
	PoolID uint32
	Addr   netip.AddrPort // port 0: the virtual server's port
	// Up members keep persisted clients and take flows; only Eligible
	// members of the pool take new clients.
	Up bool
	// NAT is set when a NAT virtual server uses the member, so its replies
	// are rewritten back to the VIP: they find their connection through the
	// virtual servers of the member's pool (memberVirtualServers).
	NAT bool
	// MaxConns caps the member's active connections; 0: no limit.
	MaxConns uint32
}

// Table is a persistence table.
type Table struct {
	ID         TableID
	MaxEntries uint32
	// Mirror publishes the table's changes as events (Events) for HA mirroring.
	Mirror bool
}

// State is everything the control plane wants in the datapath.
type State struct {
	VirtualServers []VirtualServer
	Pools          []Pool
	Members        []Member
	Tables         []Table
	Encap          EncapSettings
}

func addrBytes(a netip.Addr) (b [16]uint8, family uint8) {
	a = a.Unmap()
	if a.Is4() {
		v4 := a.As4()
		copy(b[:], v4[:])
		return b, familyV4
	}
	return a.As16(), familyV6
}

// The datapath keeps ports in network byte order; the bindings read them as
// little-endian integers.
func htons(p uint16) uint16 { return binary.BigEndian.Uint16(binary.LittleEndian.AppendUint16(nil, p)) }

var (
	sizeOfPersistKey   = binarySize(limpetPersistKey{})
	sizeOfPersistEntry = binarySize(limpetPersistEntry{})
)

func binarySize(v any) int { return binary.Size(v) }
