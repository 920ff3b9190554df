package loader

import (
	"encoding/binary"
	"net/netip"
	"time"
	"unsafe"
)

// Bulk paths (sweeps, dumps of a million entries) move keys and values as
// byte arrays: cilium/ebpf copies those without reflection, and decoding
// them by hand is an order of magnitude faster than decoding the generated
// structs field by field. The sizes are checked against the generated types.
type (
	rawPersistKey   [24]byte
	rawPersistEntry [56]byte
	rawFlowKey      [40]byte
	rawFlowInfo     [72]byte
)

func init() {
	for _, c := range []struct{ raw, gen uintptr }{
		{unsafe.Sizeof(rawPersistKey{}), unsafe.Sizeof(limpetPersistKey{})},
		{unsafe.Sizeof(rawPersistEntry{}), unsafe.Sizeof(limpetPersistEntry{})},
		{unsafe.Sizeof(rawFlowKey{}), unsafe.Sizeof(limpetFlowKey{})},
		{unsafe.Sizeof(rawFlowInfo{}), unsafe.Sizeof(limpetFlowInfo{})},
		{64, unsafe.Sizeof(limpetGcItem{})},
		{16 + 64*gcBatchMax, unsafe.Sizeof(limpetGcBatch{})},
	} {
		if c.raw != c.gen {
			panic("loader: raw layout out of step with the generated bindings")
		}
	}
}

var le = binary.LittleEndian

func addrFrom(b []byte, family uint8) netip.Addr {
	if family == familyV4 {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16([16]byte(b[:16]))
}

// port reads a network-order port.
func port(b []byte) uint16 { return binary.BigEndian.Uint16(b) }

func (k *rawPersistKey) decode() (tableID uint32, client netip.Addr) {
	return le.Uint32(k[0:]), addrFrom(k[8:24], k[4])
}

func encodePersistKey(tableID uint32, client netip.Addr) (k rawPersistKey) {
	b, fam := addrBytes(client)
	le.PutUint32(k[0:], tableID)
	k[4] = fam
	copy(k[8:], b[:])
	return k
}

func decodeEntry(k *rawPersistKey, v *rawPersistEntry) PersistEntry {
	tid, client := k.decode()
	cs := le.Uint64(v[32:])
	return PersistEntry{
		TableID:   tid,
		Client:    client,
		Server:    netip.AddrPortFrom(addrFrom(v[0:16], v[18]), port(v[16:])),
		VSID:      le.Uint32(v[20:]),
		MemberID:  le.Uint32(v[24:]),
		Conns:     uint32(cs & csConnsMask),
		Gen:       uint32(cs >> 32),
		Dying:     cs&csDead != 0,
		Created:   time.Duration(le.Uint64(v[40:])),
		LastSeen:  time.Duration(le.Uint64(v[48:])),
		connState: cs,
	}
}

func encodeEntry(e PersistEntry) (k rawPersistKey, v rawPersistEntry) {
	k = encodePersistKey(e.TableID, e.Client)
	b, fam := addrBytes(e.Server.Addr())
	copy(v[0:16], b[:])
	binary.BigEndian.PutUint16(v[16:], e.Server.Port())
	v[18] = fam
	le.PutUint32(v[20:], e.VSID)
	le.PutUint32(v[24:], e.MemberID)
	le.PutUint64(v[32:], uint64(e.Gen)<<32|uint64(e.Conns))
	le.PutUint64(v[40:], uint64(ClockTime(e.Created)))
	le.PutUint64(v[48:], uint64(ClockTime(e.LastSeen)))
	return k, v
}

func decodeFlow(k *rawFlowKey, v *rawFlowInfo) Flow {
	fam := k[37]
	flags := le.Uint32(v[20:])
	f := Flow{
		Src:           netip.AddrPortFrom(addrFrom(k[0:16], fam), port(k[32:])),
		Dst:           netip.AddrPortFrom(addrFrom(k[16:32], fam), port(k[34:])),
		Proto:         k[36],
		Target:        netip.AddrPortFrom(addrFrom(v[0:16], fam), port(v[16:])),
		VSID:          le.Uint32(v[24:]),
		MemberID:      le.Uint32(v[28:]),
		TableID:       le.Uint32(v[32:]),
		Counted:       flags&flowCounted != 0,
		MemberCounted: flags&flowMemberCounted != 0,
		Reverse:       flags&flowReverse != 0,
		UDP:           flags&flowUDP != 0,
		FinSeen:       flags&(flowFinClient|flowFinServer) != 0,
		FinClient:     flags&flowFinClient != 0,
		FinServer:     flags&flowFinServer != 0,
		RST:           flags&flowRST != 0,
		DSR:           flags&flowDSR != 0,
		LastSeen:      time.Duration(le.Uint64(v[56:])),
		Created:       time.Duration(le.Uint64(v[64:])),
		key:           *k,
	}
	fin := flags & (flowFinClient | flowFinServer)
	f.Closed = flags&flowRST != 0 || fin == flowFinClient|flowFinServer || (flags&flowDSR != 0 && flags&flowFinClient != 0)
	if f.TableID != TableNone {
		f.Client = addrFrom(v[40:56], v[36])
	}
	return f
}
