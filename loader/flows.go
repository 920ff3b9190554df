package loader

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
)

// Flow is one entry of the flow table.
type Flow struct {
	Src, Dst netip.AddrPort
	Proto    Protocol
	Target   netip.AddrPort // forward: the member; reverse: the VIP
	VSID     VirtualServerID
	MemberID MemberID
	TableID  TableID    // TableNone when the flow holds no persistence entry
	Client   netip.Addr // the persistence key's (masked) client
	Counted  bool       // holds one live connection of its entry
	// MemberCounted: holds one of its member's active connections.
	MemberCounted bool
	Reverse       bool
	Closed        bool // FIN from both sides, RST, or the client's FIN under DSR
	FinSeen       bool // a FIN from either side
	FinClient     bool // the client sent a FIN
	FinServer     bool // the member sent a FIN (NAT only: DSR replies bypass us)
	RST           bool // either side sent an RST
	DSR           bool // forwarded by rewriting MACs only
	UDP           bool
	Created       time.Duration
	LastSeen      time.Duration
	// ReplyHop is the next hop a NAT flow keeps for its replies, from its
	// first reply's FIB lookup; nil until then.
	ReplyHop *FlowHop
	key      rawFlowKey
}

// FlowHop is the next hop stored in a flow for its replies.
type FlowHop struct {
	Gen            uint32 // the cache generation it was found in
	Ifindex        int
	SrcMAC, DstMAC net.HardwareAddr
	FitLen         int // the longest IP packet sent through it
}

// Flows reads the whole flow table, both families' maps, with batch lookups.
func (p *Pinned) Flows() ([]Flow, error) {
	k4, v4, err := batchRead[rawFlow4Key, rawFlow4Info](p.m.Flows4)
	if err != nil {
		return nil, fmt.Errorf("read flow table flows4: %w", err)
	}
	k6, v6, err := batchRead[rawFlowKey, rawFlowInfo](p.m.Flows6)
	if err != nil {
		return nil, fmt.Errorf("read flow table flows6: %w", err)
	}
	out := make([]Flow, 0, len(k4)+len(k6))
	for i := range k4 {
		k := k4[i].wide()
		out = append(out, decodeFlow(&k, v4[i][:]))
	}
	for i := range k6 {
		out = append(out, decodeFlow(&k6[i], v6[i][:]))
	}
	if err := p.completeFlows(out); err != nil {
		return nil, err
	}
	return out, nil
}

// completeFlows fills in what a flow does not hold itself: the source MAC
// of its reply hop (egress_macs keeps it per interface) and the address of
// an IPv6 member an IPv4 flow tunnels to (its member's entry).
func (p *Pinned) completeFlows(fs []Flow) error {
	macs := map[int]net.HardwareAddr{}
	for i := range fs {
		f := &fs[i]
		if !f.Target.Addr().IsValid() {
			var m limpetMemberInfo
			id := uint32(f.MemberID)
			if err := p.m.Members.Lookup(&id, &m); err != nil {
				return fmt.Errorf("member %d of flow %s -> %s: %w", id, f.Src, f.Dst, err)
			}
			f.Target = netip.AddrPortFrom(addrFrom(m.Addr.B[:], familyV6), f.Target.Port())
		}
		if h := f.ReplyHop; h != nil {
			mac, ok := macs[h.Ifindex]
			if !ok {
				var w uint64
				slot := uint32(h.Ifindex % egressMACSlots)
				if err := p.m.EgressMacs.Lookup(&slot, &w); err != nil {
					return fmt.Errorf("egress MAC of interface %d: %w", h.Ifindex, err)
				}
				var b [8]byte
				le.PutUint64(b[:], w)
				if int(le.Uint16(b[macLen:])) == h.Ifindex {
					mac = net.HardwareAddr(b[:macLen:macLen])
				}
				macs[h.Ifindex] = mac
			}
			h.SrcMAC = mac
		}
	}
	return nil
}

// egressMACSlots is EGRESS_MAC_SLOTS (bpf/consts.h).
const egressMACSlots = 256

// LookupFlow returns the flow of one 5-tuple, as the client sent it.
func (p *Pinned) LookupFlow(src, dst netip.AddrPort, proto Protocol) (Flow, bool, error) {
	k := encodeFlowKey(src, dst, proto)
	var (
		f   Flow
		err error
	)
	if k[fkFamily] == familyV4 {
		var v rawFlow4Info
		k4 := k.flow4()
		if err = p.m.Flows4.Lookup(&k4, &v); err == nil {
			f = decodeFlow(&k, v[:])
		}
	} else {
		var v rawFlowInfo
		if err = p.m.Flows6.Lookup(&k, &v); err == nil {
			f = decodeFlow(&k, v[:])
		}
	}
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return Flow{}, false, nil
	}
	if err != nil {
		return Flow{}, false, err
	}
	fs := []Flow{f}
	if err := p.completeFlows(fs); err != nil {
		return Flow{}, false, err
	}
	return fs[0], true, nil
}

// FlowTableSize is the capacity of the flow table for one family: each
// family has its own map, flows4 and flows6, of this size (settings.flow_table_size).
func (p *Pinned) FlowTableSize() uint32 { return p.m.Flows4.MaxEntries() }

// FlowTableSizes are the capacities of the IPv4 and the IPv6 flow tables.
func (p *Pinned) FlowTableSizes() (v4, v6 uint32) {
	return p.m.Flows4.MaxEntries(), p.m.Flows6.MaxEntries()
}
