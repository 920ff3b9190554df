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
	key      limpetFlowKey
	rawFlags uint32
}

// Flows reads the whole flow table with batch lookups.
func (d *Datapath) Flows() ([]Flow, error) {
	keys, vals, err := batchRead[limpetFlowKey, limpetFlowInfo](d.objs.Flows)
	if err != nil {
		return nil, fmt.Errorf("read flow table: %w", err)
	}
	out := make([]Flow, len(keys))
	for i := range keys {
		k, v := &keys[i], &vals[i]
		f := Flow{
			Src:      netip.AddrPortFrom(bytesAddr(k.Src.B, k.Family), ntohs(k.Sport)),
			Dst:      netip.AddrPortFrom(bytesAddr(k.Dst.B, k.Family), ntohs(k.Dport)),
			Proto:    k.Proto,
			Target:   netip.AddrPortFrom(bytesAddr(v.Addr.B, k.Family), ntohs(v.Port)),
			VSID:     v.VsId,
			MemberID: v.MemberId,
			TableID:  v.Pkey.TableId,
			Counted:  v.Flags&flowCounted != 0,
			Reverse:  v.Flags&flowReverse != 0,
			UDP:      v.Flags&flowUDP != 0,
			FinSeen:  v.Flags&(flowFinClient|flowFinServer) != 0,
			Created:  time.Duration(v.CreatedNs),
			LastSeen: time.Duration(v.LastSeenNs),
			key:      *k,
			rawFlags: v.Flags,
		}
		fin := v.Flags & (flowFinClient | flowFinServer)
		f.Closed = v.Flags&flowRST != 0 || fin == flowFinClient|flowFinServer ||
			(v.Flags&flowDSR != 0 && v.Flags&flowFinClient != 0)
		if v.Pkey.TableId != TableNone {
			f.Client = bytesAddr(v.Pkey.Client.B, v.Pkey.Family)
		}
		out[i] = f
	}
	return out, nil
}

// FlowTableSize is the capacity of the flow table.
func (d *Datapath) FlowTableSize() uint32 { return d.objs.Flows.MaxEntries() }
