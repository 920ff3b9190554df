package loader

import (
	"encoding/binary"
	"net/netip"
	"time"
)

// Limits compiled into the datapath.
const (
	MaxVirtualServers = 1024
	MaxPools          = 1024
	MaxMembers        = 4096
	MaxMembersPerPool = 64
	MaxPersistTables  = 1024
	tablePlainHash    = 1 << 31
	tableIndexMask    = MaxPersistTables - 1
	familyV4          = 4
	familyV6          = 6
	csConnsMask       = 0x7fffffff
	csDead            = 1 << 31
	metaChunkSize     = 4096
	metaChunks        = 256
	gcBatchMax        = 48
)

// Flag bits, operations and results, as the datapath's enums in
// bpf/consts.h define them (bpf2go binds them), each at the width of the
// field that holds it: a value that no longer fits fails to compile.
const (
	flowCounted         = uint32(limpetFlowFlagFLOW_F_COUNTED)
	flowFinClient       = uint32(limpetFlowFlagFLOW_F_FIN_CLIENT)
	flowFinServer       = uint32(limpetFlowFlagFLOW_F_FIN_SERVER)
	flowRST             = uint32(limpetFlowFlagFLOW_F_RST)
	flowReverse         = uint32(limpetFlowFlagFLOW_F_REVERSE)
	flowNAT             = uint32(limpetFlowFlagFLOW_F_NAT)
	flowDSR             = uint32(limpetFlowFlagFLOW_F_DSR)
	flowUDP             = uint32(limpetFlowFlagFLOW_F_UDP)
	flowMemberCounted   = uint32(limpetFlowFlagFLOW_F_MEMBER_COUNTED)
	flowTargetOtherFam  = uint32(limpetFlowFlagFLOW_F_TARGET_OTHER_FAMILY)
	memberUp            = uint8(limpetMemberFlagMEMBER_F_UP)
	vsDSR               = uint8(limpetVsFlagVS_F_DSR)
	vsPersist           = uint8(limpetVsFlagVS_F_PERSIST)
	vsServerDownNever   = uint8(limpetVsFlagVS_F_SERVER_DOWN_NEVER)
	vsEncapIPIP         = uint8(limpetVsFlagVS_F_ENCAP_IPIP)
	vsEncapGUE          = uint8(limpetVsFlagVS_F_ENCAP_GUE)
	encapSourceV4       = uint8(limpetEncapFlagENCAP_F_SOURCE_V4)
	encapSourceV6       = uint8(limpetEncapFlagENCAP_F_SOURCE_V6)
	tableMirror         = uint32(limpetTableFlagTABLE_F_MIRROR) // table_config holds a __u32
	vipOverflow         = uint8(limpetVipFlagVIP_F_OVERFLOW)
	memberVSShared      = uint8(limpetMemberVsFlagMEMBER_VS_F_SHARED)
	gcOpFlowExpire      = uint64(limpetGcOpGC_OP_FLOW_EXPIRE)
	gcOpPersistExpire   = uint64(limpetGcOpGC_OP_PERSIST_EXPIRE)
	gcOpReconcile       = uint64(limpetGcOpGC_OP_RECONCILE)
	gcOpTouch           = uint64(limpetGcOpGC_OP_TOUCH)
	gcOpMemberReconcile = uint64(limpetGcOpGC_OP_MEMBER_RECONCILE)
)

// VirtualServer is one (VIP, port, protocol) the datapath balances.
type VirtualServer struct {
	ID              VirtualServerID
	VIP             netip.AddrPort
	Proto           Protocol
	PoolID          PoolID
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
	ID        PoolID
	Algorithm Algorithm
	Eligible  []MemberID // in config order
	Weights   []uint16   // of Eligible, same order (weighted least connection)
	// Table is the weighted round-robin schedule or the Maglev table, as
	// member ids; nil for the other algorithms.
	Table []MemberID
}

// Member is one server of one pool.
type Member struct {
	ID     MemberID
	PoolID PoolID
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
