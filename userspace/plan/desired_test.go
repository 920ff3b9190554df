package plan

import (
	"testing"

	"github.com/limpet-lb/limpet/userspace/config"
	"github.com/limpet-lb/limpet/userspace/desired"
)

// The stored Meta spells states and algorithms as the config does, and
// falls back to the config's Maglev table size.
func TestDesiredSpellsAsTheConfig(t *testing.T) {
	for _, p := range [][2]string{
		{desired.MemberEnabled, config.MemberEnabled},
		{desired.MemberDisabled, config.MemberDisabled},
		{desired.MemberGracefulDisabled, config.MemberGracefulDisabled},
		{desired.AlgoRoundRobin, config.AlgoRoundRobin},
		{desired.AlgoWeightedRoundRobin, config.AlgoWeightedRoundRobin},
		{desired.AlgoLeastConnection, config.AlgoLeastConnection},
		{desired.AlgoWeightedLeastConnection, config.AlgoWeightedLeastConnection},
		{desired.AlgoIPHash, config.AlgoIPHash},
	} {
		if p[0] != p[1] {
			t.Errorf("desired spells %q, the config %q", p[0], p[1])
		}
	}
	if desired.DefaultMaglevTableSize != config.DefaultMaglevTableSize {
		t.Errorf("Maglev table size %d, the config's %d", desired.DefaultMaglevTableSize, config.DefaultMaglevTableSize)
	}
}
