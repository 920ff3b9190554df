package loader

import (
	"fmt"
	"net/netip"
	"time"
)

// Flow is one entry of the flow table.
type Flow struct {
	Src, Dst netip.AddrPort
	Proto    uint8
	Target   netip.AddrPort // forward: the member; reverse: the VIP
	VSID     uint32
	MemberID uint32
	TableID  uint32     // TableNone when the flow holds no persistence entry
	Client   netip.Addr // the persistence key's (masked) client
	Counted  bool       // holds one live connection of its entry
	Reverse  bool
	Closed   bool // FIN from both sides, RST, or the client's FIN under DSR
	FinSeen  bool
	UDP      bool
	Created  time.Duration
	LastSeen time.Duration
	key      rawFlowKey
}

// Flows reads the whole flow table with batch lookups.
func (d *Datapath) Flows() ([]Flow, error) {
	keys, vals, err := batchRead[rawFlowKey, rawFlowInfo](d.objs.Flows)
	if err != nil {
		return nil, fmt.Errorf("read flow table: %w", err)
	}
	out := make([]Flow, len(keys))
	for i := range keys {
		out[i] = decodeFlow(&keys[i], &vals[i])
	}
	return out, nil
}

// FlowTableSize is the capacity of the flow table.
func (d *Datapath) FlowTableSize() uint32 { return d.objs.Flows.MaxEntries() }
