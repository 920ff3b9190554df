package loader

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
)

// State the datapath keeps across restarts lives in its maps, and only a
// map pinned by name is pinned, adopted and opened by the loader: one
// defined in C without LIBBPF_PIN_BY_NAME would be lost on every restart.
func TestEveryStateMapPinsByName(t *testing.T) {
	spec := limpetSpec(t)
	for name, ms := range spec.Maps {
		if strings.HasPrefix(name, ".") {
			continue // .rodata/.bss: the program's own data
		}
		if ms.Pinning != ebpf.PinByName {
			t.Errorf("map %s is not pinned by name (add __uint(pinning, LIBBPF_PIN_BY_NAME) to bpf/maps.h)", name)
		}
	}
}

func statePins(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		n := e.Name()
		if !strings.HasPrefix(n, linkPrefix) && !strings.HasPrefix(n, tablePinPrefix+"lru_") && !strings.HasPrefix(n, tablePinPrefix+"hash_") && n != pinProgXDP && n != pinProgGC {
			out = append(out, n)
		}
	}
	return out
}

func specMapNames(t *testing.T) []string {
	t.Helper()
	spec := limpetSpec(t)
	var out []string
	for name, ms := range spec.Maps {
		if ms.Pinning == ebpf.PinByName {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// A fresh datapath pins every map by name into its temporary directory,
// which is then renamed into place: nothing of it is left beside the pin
// path, and the pins are the loaded maps.
func TestLoadPinsMapsByNameThroughTemporaryDirectory(t *testing.T) {
	d := loadTemp(t, Options{})
	if got, want := statePins(t, d.PinPath()), specMapNames(t); !slices.Equal(got, want) {
		t.Fatalf("pinned maps %v, want %v", got, want)
	}
	siblings, err := filepath.Glob(d.PinPath() + "-tmp-*")
	if err != nil || len(siblings) != 0 {
		t.Fatalf("temporary pin directories left behind: %v %v", siblings, err)
	}
	for name, m := range map[string]*ebpf.Map{"flows4": d.objs.Flows4, "flows6": d.objs.Flows6} {
		pinned, err := ebpf.LoadPinnedMap(filepath.Join(d.PinPath(), name), nil)
		if err != nil {
			t.Fatal(err)
		}
		pi, err := pinned.Info()
		pinned.Close()
		if err != nil {
			t.Fatal(err)
		}
		li, err := m.Info()
		if err != nil {
			t.Fatal(err)
		}
		pid, _ := pi.ID()
		lid, _ := li.ID()
		if pid != lid {
			t.Fatalf("the %s pin holds map %d, the datapath uses %d", name, pid, lid)
		}
	}
}

// A datapath pinned before a map was added is adopted: the map is created
// and pinned beside the others. A read-only view of such a datapath opens
// without pinning anything.
func TestAdoptPinsAddedMaps(t *testing.T) {
	d := loadTemp(t, Options{})
	pin := d.PinPath()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	for name := range addedMaps {
		if err := os.Remove(filepath.Join(pin, name)); err != nil {
			t.Fatal(err)
		}
	}
	v, err := OpenPinned(pin)
	if err != nil {
		t.Fatalf("open a datapath pinned before %v: %v", addedMaps, err)
	}
	v.Close()
	for name := range addedMaps {
		if _, err := os.Stat(filepath.Join(pin, name)); !os.IsNotExist(err) {
			t.Fatalf("the read-only view pinned %s (%v)", name, err)
		}
	}
	d2, err := Load(Options{PinPath: pin, FlowTableSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d2.Close() })
	if !d2.Adopted() {
		t.Fatal("Load did not adopt the pinned state")
	}
	if got, want := statePins(t, pin), specMapNames(t); !slices.Equal(got, want) {
		t.Fatalf("pinned maps after adoption %v, want %v", got, want)
	}
}
