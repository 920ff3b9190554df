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
	d := loadTemp(t, Options{})
	pin := d.PinPath()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"vips", "member_vs"} {
		if err := os.Remove(filepath.Join(pin, name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"vips", "nat_members"} {
		m, err := ebpf.NewMap(&ebpf.MapSpec{Name: name, Type: ebpf.Hash, KeySize: 20, ValueSize: 4, MaxEntries: 1024})
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Pin(filepath.Join(pin, name)); err != nil {
			t.Fatal(err)
		}
		m.Close()
	}
	before, err := os.ReadDir(pin)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Load(Options{PinPath: pin, FlowTableSize: 4096})
	if err == nil {
		t.Fatal("Load adopted a pinned datapath of another layout")
	}
	if msg := err.Error(); !strings.Contains(msg, "limpet detach") || !(strings.Contains(msg, "vips") || strings.Contains(msg, "member_vs")) {
		t.Fatalf("refusal %q does not name the map and 'limpet detach'", msg)
	}
	t.Logf("refused: %v", err)
	after, err := os.ReadDir(pin)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Fatalf("pins changed by the refused adoption: %d before, %d after", len(before), len(after))
	}
}
