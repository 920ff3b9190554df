package loader

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
)

// A datapath pinned by an earlier limpet whose maps have another layout
// (here main's before the fast path: vips held a u32, replies were found
// through nat_members) is not adopted: Load refuses with a message that
// names the map and 'limpet detach', and leaves the pinned state as it was.
func TestLoadRefusesOlderPinnedLayout(t *testing.T) {
	var old []*ebpf.MapSpec
	for _, name := range []string{"vips", "nat_members"} {
		old = append(old, &ebpf.MapSpec{Name: name, Type: ebpf.Hash, KeySize: 20, ValueSize: 4, MaxEntries: 1024})
	}
	pin := pinOlderLayout(t, []string{"vips", "member_vs"}, old)
	err := refusedAdoption(t, pin)
	if msg := err.Error(); !strings.Contains(msg, "limpet detach") || !(strings.Contains(msg, "vips") || strings.Contains(msg, "member_vs")) {
		t.Fatalf("refusal %q does not name the map and 'limpet detach'", msg)
	}
	t.Logf("refused: %v", err)
}

// pinOlderLayout pins a fresh datapath, closes it and turns it into an
// older limpet's: the pins named in drop go, the maps in old are pinned in
// their place. It returns the pin path.
func pinOlderLayout(t *testing.T, drop []string, old []*ebpf.MapSpec) string {
	t.Helper()
	d := loadTemp(t, Options{})
	pin := d.PinPath()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	for _, name := range drop {
		if err := os.Remove(filepath.Join(pin, name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, spec := range old {
		m, err := ebpf.NewMap(spec)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Pin(filepath.Join(pin, spec.Name)); err != nil {
			t.Fatal(err)
		}
		m.Close()
	}
	return pin
}

// refusedAdoption loads over the older layout pinned at pin, wants a
// refusal that leaves the pins as they were, and returns it.
func refusedAdoption(t *testing.T, pin string) error {
	t.Helper()
	before, err := os.ReadDir(pin)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Load(Options{PinPath: pin, FlowTableSize: 4096})
	if err == nil {
		t.Fatal("Load adopted a pinned datapath of another layout")
	}
	after, rerr := os.ReadDir(pin)
	if rerr != nil {
		t.Fatal(rerr)
	}
	if len(after) != len(before) {
		t.Fatalf("pins changed by the refused adoption: %d before, %d after", len(before), len(after))
	}
	return err
}
