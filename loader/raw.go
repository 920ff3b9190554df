package loader

import (
	"encoding/binary"
	"net"
	"net/netip"
	"time"
	"unsafe"
)

// Bulk paths (sweeps, dumps of a million entries) move keys and values as
// byte arrays: cilium/ebpf copies those without reflection, and decoding
// them by hand is an order of magnitude faster than decoding the generated
// structs field by field. Every size and offset below is taken from the
// generated types, so a field that moves in the C structs moves here too,
// at compile time.
type (
	rawPersistKey   [unsafe.Sizeof(limpetPersistKey{})]byte
	rawPersistEntry [unsafe.Sizeof(limpetPersistEntry{})]byte
	rawFlowKey      [unsafe.Sizeof(limpetFlowKey{})]byte // flows6's key, and a flow of either family
	rawFlowInfo     [unsafe.Sizeof(limpetFlowInfo{})]byte
	rawFlow4Key     [unsafe.Sizeof(limpetFlow4Key{})]byte
	rawFlow4Info    [unsafe.Sizeof(limpetFlow4Info{})]byte
)

const addrLen = 16 // union addr

// struct persist_key
const (
	pkTableID = unsafe.Offsetof(limpetPersistKey{}.TableId)
	pkFamily  = unsafe.Offsetof(limpetPersistKey{}.Family)
	pkClient  = unsafe.Offsetof(limpetPersistKey{}.Client)
)

// struct persist_entry
const (
	peServer     = unsafe.Offsetof(limpetPersistEntry{}.Server)
	peServerPort = unsafe.Offsetof(limpetPersistEntry{}.ServerPort)
	peFamily     = unsafe.Offsetof(limpetPersistEntry{}.Family)
	peVSID       = unsafe.Offsetof(limpetPersistEntry{}.VsId)
	peMemberID   = unsafe.Offsetof(limpetPersistEntry{}.MemberId)
	peConnState  = unsafe.Offsetof(limpetPersistEntry{}.ConnState)
	peCreated    = unsafe.Offsetof(limpetPersistEntry{}.CreatedNs)
	peLastSeen   = unsafe.Offsetof(limpetPersistEntry{}.LastSeenNs)
)

// struct flow_key
const (
	fkSrc    = unsafe.Offsetof(limpetFlowKey{}.Src)
	fkDst    = unsafe.Offsetof(limpetFlowKey{}.Dst)
	fkSport  = unsafe.Offsetof(limpetFlowKey{}.Sport)
	fkDport  = unsafe.Offsetof(limpetFlowKey{}.Dport)
	fkProto  = unsafe.Offsetof(limpetFlowKey{}.Proto)
	fkFamily = unsafe.Offsetof(limpetFlowKey{}.Family)
)

// struct flow4_key
const (
	f4Src   = unsafe.Offsetof(limpetFlow4Key{}.Src)
	f4Dst   = unsafe.Offsetof(limpetFlow4Key{}.Dst)
	f4Sport = unsafe.Offsetof(limpetFlow4Key{}.Sport)
	f4Dport = unsafe.Offsetof(limpetFlow4Key{}.Dport)
	f4Proto = unsafe.Offsetof(limpetFlow4Key{}.Proto)
)

// struct flow_info; struct flow4_info is its prefix, every field but Addr
// at the same offset (the test of the layout holds them to it).
const (
	fiAddr     = unsafe.Offsetof(limpetFlowInfo{}.Addr)
	fiPort     = unsafe.Offsetof(limpetFlowInfo{}.Port)
	fiFlags    = unsafe.Offsetof(limpetFlowInfo{}.Flags)
	fiVSID     = unsafe.Offsetof(limpetFlowInfo{}.VsId)
	fiMemberID = unsafe.Offsetof(limpetFlowInfo{}.MemberId)
	fiTable    = unsafe.Offsetof(limpetFlowInfo{}.Table)
	fiLastSeen = unsafe.Offsetof(limpetFlowInfo{}.LastSeenNs)
	fiCreated  = unsafe.Offsetof(limpetFlowInfo{}.CreatedNs)
	fiReplyNH  = unsafe.Offsetof(limpetFlowInfo{}.ReplyNh)
)

// struct flow_nexthop, from the start of struct flow_info
const (
	fnDmac    = fiReplyNH + unsafe.Offsetof(limpetFlowNexthop{}.Dmac)
	fnIfindex = fiReplyNH + unsafe.Offsetof(limpetFlowNexthop{}.Ifindex)
	fnGen     = fiReplyNH + unsafe.Offsetof(limpetFlowNexthop{}.Gen)
	fnFitLen  = fiReplyNH + unsafe.Offsetof(limpetFlowNexthop{}.FitLen)
	macLen    = 6
)

// The top byte of flow_info.flags holds the persistence key's prefix.
const (
	flowPrefixShift = 24
	flowFlagsMask   = 1<<flowPrefixShift - 1
)

// flow_info.table packs a TableID (FLOW_TABLE_* in bpf/consts.h).
const (
	flowTableNone  = 0xffff
	flowTablePlain = 0x8000
)

// struct persist_event
const (
	evType       = unsafe.Offsetof(limpetPersistEvent{}.Type)
	evFamily     = unsafe.Offsetof(limpetPersistEvent{}.Family)
	evServerPort = unsafe.Offsetof(limpetPersistEvent{}.ServerPort)
	evTableID    = unsafe.Offsetof(limpetPersistEvent{}.TableId)
	evClient     = unsafe.Offsetof(limpetPersistEvent{}.Client)
	evServer     = unsafe.Offsetof(limpetPersistEvent{}.Server)
	evTime       = unsafe.Offsetof(limpetPersistEvent{}.TimeNs)
	eventSize    = unsafe.Sizeof(limpetPersistEvent{})
)

// struct gc_batch and struct gc_item
const (
	gcHeaderSize = unsafe.Offsetof(limpetGcBatch{}.Items)
	gcItemSize   = unsafe.Sizeof(limpetGcItem{})
	giOp         = unsafe.Offsetof(limpetGcItem{}.Op)
	giResult     = unsafe.Offsetof(limpetGcItem{}.Result)
	giArg        = unsafe.Offsetof(limpetGcItem{}.Arg)
	giArg2       = unsafe.Offsetof(limpetGcItem{}.Arg2)
	giKey        = unsafe.Offsetof(limpetGcItem{}.Flow) // a union of the flow and persistence keys
	gcKeySize    = gcItemSize - giKey
)

var le = binary.LittleEndian

func addrFrom(b []byte, family uint8) netip.Addr {
	if family == familyV4 {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16([16]byte(b[:16]))
}

// port reads a network-order port.
func port(b []byte) uint16 { return binary.BigEndian.Uint16(b) }

func putPort(b []byte, p uint16) { binary.BigEndian.PutUint16(b, p) }

func (k *rawPersistKey) decode() (tableID TableID, client netip.Addr) {
	return TableID(le.Uint32(k[pkTableID:])), addrFrom(k[pkClient:pkClient+addrLen], k[pkFamily])
}

func encodePersistKey(tableID TableID, client netip.Addr) (k rawPersistKey) {
	b, fam := addrBytes(client)
	le.PutUint32(k[pkTableID:], uint32(tableID))
	k[pkFamily] = fam
	copy(k[pkClient:], b[:])
	return k
}

func decodeEntry(k *rawPersistKey, v *rawPersistEntry) PersistEntry {
	tid, client := k.decode()
	cs := le.Uint64(v[peConnState:])
	return PersistEntry{
		TableID:   tid,
		Client:    client,
		Server:    netip.AddrPortFrom(addrFrom(v[peServer:peServer+addrLen], v[peFamily]), port(v[peServerPort:])),
		VSID:      VirtualServerID(le.Uint32(v[peVSID:])),
		MemberID:  MemberID(le.Uint32(v[peMemberID:])),
		Conns:     uint32(cs & csConnsMask),
		Gen:       uint32(cs >> 32),
		Dying:     cs&csDead != 0,
		Created:   time.Duration(le.Uint64(v[peCreated:])),
		LastSeen:  time.Duration(le.Uint64(v[peLastSeen:])),
		connState: cs,
	}
}

func encodeEntry(e PersistEntry) (k rawPersistKey, v rawPersistEntry) {
	k = encodePersistKey(e.TableID, e.Client)
	b, fam := addrBytes(e.Server.Addr())
	copy(v[peServer:peServer+addrLen], b[:])
	putPort(v[peServerPort:], e.Server.Port())
	v[peFamily] = fam
	le.PutUint32(v[peVSID:], uint32(e.VSID))
	le.PutUint32(v[peMemberID:], uint32(e.MemberID))
	le.PutUint64(v[peConnState:], uint64(e.Gen)<<32|uint64(e.Conns))
	le.PutUint64(v[peCreated:], uint64(ClockTime(e.Created)))
	le.PutUint64(v[peLastSeen:], uint64(ClockTime(e.LastSeen)))
	return k, v
}

func encodeFlowKey(src, dst netip.AddrPort, proto Protocol) (k rawFlowKey) {
	sb, fam := addrBytes(src.Addr())
	db, _ := addrBytes(dst.Addr())
	copy(k[fkSrc:fkSrc+addrLen], sb[:])
	copy(k[fkDst:fkDst+addrLen], db[:])
	putPort(k[fkSport:], src.Port())
	putPort(k[fkDport:], dst.Port())
	k[fkProto], k[fkFamily] = uint8(proto), fam
	return k
}

// flow4 is the flows4 key of an IPv4 flow's key.
func (k *rawFlowKey) flow4() (k4 rawFlow4Key) {
	copy(k4[f4Src:f4Src+4], k[fkSrc:fkSrc+4])
	copy(k4[f4Dst:f4Dst+4], k[fkDst:fkDst+4])
	copy(k4[f4Sport:f4Sport+2], k[fkSport:fkSport+2])
	copy(k4[f4Dport:f4Dport+2], k[fkDport:fkDport+2])
	k4[f4Proto] = k[fkProto]
	return k4
}

// wide is the flow key of a flows4 key.
func (k4 *rawFlow4Key) wide() (k rawFlowKey) {
	copy(k[fkSrc:fkSrc+4], k4[f4Src:f4Src+4])
	copy(k[fkDst:fkDst+4], k4[f4Dst:f4Dst+4])
	copy(k[fkSport:fkSport+2], k4[f4Sport:f4Sport+2])
	copy(k[fkDport:fkDport+2], k4[f4Dport:f4Dport+2])
	k[fkProto], k[fkFamily] = k4[f4Proto], familyV4
	return k
}

// targetFamily is the family of a flow's target: the key's, unless the
// flow tunnels across families.
func targetFamily(keyFamily uint8, flags uint32) uint8 {
	if flags&flowTargetOtherFam == 0 {
		return keyFamily
	}
	if keyFamily == familyV4 {
		return familyV6
	}
	return familyV4
}

// flowTableID unpacks flow_info.table.
func flowTableID(t uint16) TableID {
	if t == flowTableNone {
		return TableNone
	}
	id := TableID(t &^ flowTablePlain)
	if t&flowTablePlain != 0 {
		id |= tablePlainHash
	}
	return id
}

// maskAddr masks a to its first bits, as the datapath's mask_addr does.
func maskAddr(a netip.Addr, bits int) netip.Addr {
	if bits >= a.BitLen() {
		return a
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return a
	}
	return p.Addr()
}

// decodeFlow decodes a flow of either table: v is a flows6 value, or a
// flows4 value (its first FLOW4_INFO_SIZE bytes). A flows4 flow that
// tunnels to an IPv6 member keeps no address (the datapath tunnels by the
// member's entry): its Target's address is left invalid for the caller.
func decodeFlow(k *rawFlowKey, v []byte) Flow {
	fam := k[fkFamily]
	word := le.Uint32(v[fiFlags:])
	flags := word & flowFlagsMask
	tfam := targetFamily(fam, flags)
	var target netip.Addr
	if fam == familyV6 || tfam == familyV4 {
		target = addrFrom(v[fiAddr:], tfam)
	}
	src := addrFrom(k[fkSrc:fkSrc+addrLen], fam)
	f := Flow{
		Src:           netip.AddrPortFrom(src, port(k[fkSport:])),
		Dst:           netip.AddrPortFrom(addrFrom(k[fkDst:fkDst+addrLen], fam), port(k[fkDport:])),
		Proto:         Protocol(k[fkProto]),
		Target:        netip.AddrPortFrom(target, port(v[fiPort:])),
		VSID:          VirtualServerID(le.Uint16(v[fiVSID:])),
		MemberID:      MemberID(le.Uint16(v[fiMemberID:])),
		TableID:       flowTableID(le.Uint16(v[fiTable:])),
		Counted:       flags&flowCounted != 0,
		MemberCounted: flags&flowMemberCounted != 0,
		Reverse:       flags&flowReverse != 0,
		UDP:           flags&flowUDP != 0,
		FinSeen:       flags&(flowFinClient|flowFinServer) != 0,
		FinClient:     flags&flowFinClient != 0,
		FinServer:     flags&flowFinServer != 0,
		RST:           flags&flowRST != 0,
		DSR:           flags&flowDSR != 0,
		LastSeen:      time.Duration(le.Uint64(v[fiLastSeen:])),
		Created:       time.Duration(le.Uint64(v[fiCreated:])),
		key:           *k,
	}
	fin := flags & (flowFinClient | flowFinServer)
	f.Closed = flags&flowRST != 0 || fin == flowFinClient|flowFinServer || (flags&flowDSR != 0 && flags&flowFinClient != 0)
	if f.TableID != TableNone {
		f.Client = maskAddr(src, int(word>>flowPrefixShift))
	}
	if gen := le.Uint32(v[fnGen:]); gen != nexthopGenNone {
		f.ReplyHop = &FlowHop{
			Gen: gen, Ifindex: int(le.Uint16(v[fnIfindex:])), FitLen: int(le.Uint16(v[fnFitLen:])),
			DstMAC: net.HardwareAddr(append([]byte(nil), v[fnDmac:fnDmac+macLen]...)),
		}
	}
	return f
}
