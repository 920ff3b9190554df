package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
)

// OpenPinned opens the maps of a pinned datapath for reading and editing,
// without loading programs or taking the manager's lock: dumps, stats and
// table edits work whether or not a daemon runs.
func OpenPinned(pinPath string) (*Datapath, error) {
	if pinPath == "" {
		pinPath = DefaultPinPath
	}
	if _, err := os.Stat(filepath.Join(pinPath, "flows")); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w at %s (is 'limpet run' started?)", ErrNotLoaded, pinPath)
		}
		return nil, err
	}
	spec, err := loadLimpet()
	if err != nil {
		return nil, fmt.Errorf("load datapath spec: %w", err)
	}
	// The view opens each pin itself rather than pointing PinPath at the
	// directory: a load by name would create and pin a missing map, and a
	// view writes nothing.
	pins := map[string]*ebpf.Map{}
	defer func() {
		for _, m := range pins {
			m.Close()
		}
	}()
	for name, ms := range spec.Maps {
		if ms.Pinning != ebpf.PinByName {
			continue
		}
		m, err := ebpf.LoadPinnedMap(filepath.Join(pinPath, name), nil)
		if errors.Is(err, os.ErrNotExist) && addedMaps[name] {
			ms.Pinning = ebpf.PinNone // pinned by an older version: an empty stand-in
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("open pinned map %s: %w", name, err)
		}
		ms.MaxEntries = m.MaxEntries() // the flow table's size is the manager's choice
		pins[name] = m
	}
	d := &Datapath{pinPath: pinPath}
	if err := spec.LoadAndAssign(&d.objs.limpetMaps, &ebpf.CollectionOptions{MapReplacements: pins}); err != nil {
		return nil, fmt.Errorf("open pinned maps at %s: %w (run 'limpet detach' to start afresh)", pinPath, err)
	}
	gc, err := ebpf.LoadPinnedProgram(filepath.Join(pinPath, pinProgGC), nil)
	if err == nil {
		d.objs.LimpetGc = gc
	}
	return d, nil
}
