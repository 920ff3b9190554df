package plan

import (
	"testing"

	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/userspace/config"
	"github.com/limpet-lb/limpet/userspace/desired"
)

// parseConfig parses a test's config, failing the test if it is refused.
func parseConfig(t *testing.T, yaml string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// The stored Meta spells states and algorithms as the config does, and
// falls back to the config's Maglev table size.
func TestDesiredSpellsAsTheConfig(t *testing.T) {
	for _, p := range [][2]string{
		{desired.MemberEnabled, config.MemberEnabled},
		{desired.MemberDisabled, config.MemberDisabled},
		{desired.MemberGracefulDisabled, config.MemberGracefulDisabled},
	} {
		if p[0] != p[1] {
			t.Errorf("desired spells %q, the config %q", p[0], p[1])
		}
	}
	// The Meta's algorithm is the config's spelling, which loader.Algorithm
	// parses.
	for name, want := range map[string]loader.Algorithm{
		config.AlgoRoundRobin:              loader.AlgoRoundRobin,
		config.AlgoWeightedRoundRobin:      loader.AlgoWeightedRoundRobin,
		config.AlgoLeastConnection:         loader.AlgoLeastConnection,
		config.AlgoWeightedLeastConnection: loader.AlgoWeightedLeastConnection,
		config.AlgoIPHash:                  loader.AlgoIPHash,
	} {
		var got loader.Algorithm
		if err := got.UnmarshalText([]byte(name)); err != nil || got != want {
			t.Errorf("loader reads the config's %q as %v (%v), want %v", name, got, err, want)
		}
	}
	if desired.DefaultMaglevTableSize != config.DefaultMaglevTableSize {
		t.Errorf("Maglev table size %d, the config's %d", desired.DefaultMaglevTableSize, config.DefaultMaglevTableSize)
	}
}
