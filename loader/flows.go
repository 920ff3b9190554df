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

// Flows reads the whole flow table with batch lookups.
func (p *Pinned) Flows() ([]Flow, error) {
	keys, vals, err := batchRead[rawFlowKey, rawFlowInfo](p.m.Flows)
	if err != nil {
		return nil, fmt.Errorf("read flow table: %w", err)
	}
	out := make([]Flow, len(keys))
	for i := range keys {
		out[i] = decodeFlow(&keys[i], &vals[i])
	}
	return out, nil
}

// LookupFlow returns the flow of one 5-tuple, as the client sent it.
func (p *Pinned) LookupFlow(src, dst netip.AddrPort, proto Protocol) (Flow, bool, error) {
	k := encodeFlowKey(src, dst, proto)
	var v rawFlowInfo
	if err := p.m.Flows.Lookup(&k, &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return Flow{}, false, nil
		}
		return Flow{}, false, err
	}
	return decodeFlow(&k, &v), true, nil
}

// FlowTableSize is the capacity of the flow table.
func (p *Pinned) FlowTableSize() uint32 { return p.m.Flows.MaxEntries() }
