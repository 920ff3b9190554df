package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
)

// Pinned is a read-only view of a pinned datapath: its maps, opened from
// their pins without loading programs or taking the manager's lock, so that
// dumps and stats work whether or not a daemon runs.
type Pinned struct {
	pinPath string
	m       *limpetMaps
	slots   tableSlots
}

// OpenPinned opens a read-only view of the datapath pinned at pinPath.
func OpenPinned(pinPath string) (*Pinned, error) {
	p := &Pinned{}
	if err := p.open(pinPath); err != nil {
		return nil, err
	}
	return p, nil
}

// PinPath is the bpffs directory of this datapath.
func (p *Pinned) PinPath() string { return p.pinPath }

// Close releases the view's handles.
func (p *Pinned) Close() error { return p.m.Close() }

func (p *Pinned) open(pinPath string) error {
	if pinPath == "" {
		pinPath = DefaultPinPath
	}
	if pinned, err := pinnedDatapath(pinPath); err != nil {
		return err
	} else if !pinned {
		return fmt.Errorf("%w at %s (is 'limpet run' started?)", ErrNotLoaded, pinPath)
	}
	spec, err := loadLimpet()
	if err != nil {
		return fmt.Errorf("load datapath spec: %w", err)
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
			return fmt.Errorf("open pinned map %s: %w", name, err)
		}
		ms.MaxEntries = m.MaxEntries() // the flow table's size is the manager's choice
		pins[name] = m
	}
	var maps limpetMaps
	if err := spec.LoadAndAssign(&maps, &ebpf.CollectionOptions{MapReplacements: pins}); err != nil {
		return fmt.Errorf("open pinned maps at %s: %w (run 'limpet detach' to start afresh)", pinPath, err)
	}
	p.pinPath, p.m = pinPath, &maps
	return nil
}
