package loader

import (
	"errors"

	"github.com/cilium/ebpf"
)

// Memory the kernel accounts to the datapath's maps (fdinfo "memlock"; since
// Linux 6.4 the map's own estimate of what it allocated). The benchmarks use
// it for the memory per persistence entry. Hash and LRU tables preallocate
// every element, so the figure does not depend on how full they are.

// TableMemory is the memory of one persistence table.
func (p *Pinned) TableMemory(tableID TableID) (uint64, error) {
	inner, err := p.openTable(tableID)
	if err != nil {
		return 0, err
	}
	defer inner.Close()
	return mapMemory(inner)
}

// FlowTableMemory is the memory of the flow table: both families' maps.
func (p *Pinned) FlowTableMemory() (uint64, error) {
	m4, err := mapMemory(p.m.Flows4)
	if err != nil {
		return 0, err
	}
	m6, err := mapMemory(p.m.Flows6)
	if err != nil {
		return 0, err
	}
	return m4 + m6, nil
}

func mapMemory(m *ebpf.Map) (uint64, error) {
	info, err := m.Info()
	if err != nil {
		return 0, err
	}
	v, ok := info.Memlock()
	if !ok {
		return 0, errors.New("the kernel reports no memlock for the map")
	}
	return v, nil
}
