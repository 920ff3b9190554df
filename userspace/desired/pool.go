package desired

import (
	"fmt"

	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/userspace/pooltable"
)

// DefaultMaglevTableSize is the Maglev table of an ip_hash pool whose Meta
// names no size (the config's default; a test holds them equal).
const DefaultMaglevTableSize = 65537

// Member states, as the config and the stored Meta spell them.
const (
	MemberEnabled          = "enabled"
	MemberDisabled         = "disabled"
	MemberGracefulDisabled = "graceful_disabled"
)

// buildPool describes a pool to the datapath: the members that may take new
// clients (enabled, in config order), their weights, and the schedule or
// Maglev table its algorithm balances with. The stored Meta spells the
// algorithm as the config does, and loader.Algorithm parses that spelling.
func buildPool(pm PoolMeta, members []MemberMeta) (loader.Pool, error) {
	pool := loader.Pool{ID: pm.ID}
	if err := pool.Algorithm.UnmarshalText([]byte(pm.Algorithm)); err != nil {
		return pool, fmt.Errorf("pool %s: %w", pm.Name, err)
	}
	var keys []string
	var weights []int
	for _, m := range members {
		if m.Effective() != MemberEnabled {
			continue
		}
		w := max(m.Weight, 1)
		pool.Eligible = append(pool.Eligible, m.ID)
		pool.Weights = append(pool.Weights, uint16(w))
		keys = append(keys, m.Key)
		weights = append(weights, w)
	}
	switch pool.Algorithm {
	case loader.AlgoWeightedRoundRobin:
		for _, i := range pooltable.Schedule(weights) {
			pool.Table = append(pool.Table, pool.Eligible[i])
		}
	case loader.AlgoIPHash:
		if len(keys) == 0 {
			break
		}
		size := pm.MaglevTableSize
		if size == 0 {
			size = DefaultMaglevTableSize
		}
		idx, err := pooltable.Maglev(keys, weights, size)
		if err != nil {
			return pool, fmt.Errorf("pool %s: %w", pm.Name, err)
		}
		pool.Table = make([]loader.MemberID, len(idx))
		for i, k := range idx {
			pool.Table[i] = pool.Eligible[k]
		}
	}
	return pool, nil
}
