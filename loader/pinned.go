package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"

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
	d := &Datapath{pinPath: pinPath}
	v := reflect.ValueOf(&d.objs.limpetMaps).Elem()
	for i := 0; i < v.NumField(); i++ {
		name := v.Type().Field(i).Tag.Get("ebpf")
		if name == "" || strings.HasPrefix(name, ".") {
			continue
		}
		m, err := ebpf.LoadPinnedMap(filepath.Join(pinPath, name), nil)
		if errors.Is(err, os.ErrNotExist) && addedMaps[name] {
			continue // pinned by an older version
		}
		if err != nil {
			d.objs.limpetMaps.Close()
			return nil, fmt.Errorf("open pinned map %s: %w", name, err)
		}
		v.Field(i).Set(reflect.ValueOf(m))
	}
	gc, err := ebpf.LoadPinnedProgram(filepath.Join(pinPath, pinProgGC), nil)
	if err == nil {
		d.objs.LimpetGc = gc
	}
	return d, nil
}
