package loader

import (
	"reflect"
	"slices"
	"strings"
	"testing"
)

// The read-only view offers no way to change the datapath: writes belong to
// the Editor (an operator's edits) and the Datapath (the manager).
func TestPinnedViewHasNoWrites(t *testing.T) {
	writes := []string{"Set", "Write", "Delete", "Flush", "Put", "Insert", "Apply", "Run", "Attach", "Detach", "Watch", "Events"}
	typ := reflect.TypeOf(&Pinned{})
	for i := 0; i < typ.NumMethod(); i++ {
		name := typ.Method(i).Name
		for _, w := range writes {
			if name == w || strings.HasPrefix(name, w) && !strings.HasPrefix(name, w+"ed") {
				t.Errorf("%s has the write method %s", typ, name)
			}
		}
	}
	// The editor's edits are the operator's: no load, attach or Apply.
	ed := reflect.TypeOf(&Editor{})
	for _, m := range []string{"Apply", "Attach", "RunGC", "Events", "PutEntry", "InsertEntry"} {
		if _, ok := ed.MethodByName(m); ok {
			t.Errorf("Editor has the manager's method %s", m)
		}
	}
}

// A view and an editor open beside the manager, which holds the lock: they
// read what it wrote, and it reads what the editor wrote.
func TestViewAndEditorBesideTheManager(t *testing.T) {
	f := newStandardFixture(t)
	if err := f.d.WriteMeta([]byte(`{"by":"manager"}`)); err != nil {
		t.Fatal(err)
	}
	v, err := OpenPinned(f.d.PinPath())
	if err != nil {
		t.Fatalf("view beside the manager: %v", err)
	}
	defer v.Close()
	if doc, err := v.ReadMeta(); err != nil || string(doc) != `{"by":"manager"}` {
		t.Fatalf("view reads meta %q, %v", doc, err)
	}
	want, err := f.d.Tables()
	if err != nil {
		t.Fatal(err)
	}
	got, err := v.Tables()
	if err != nil || !slices.Equal(got, want) || len(got) == 0 {
		t.Fatalf("view tables %v, %v; the manager's %v", got, err, want)
	}
	if v.FlowTableSize() != f.d.FlowTableSize() {
		t.Fatalf("view flow table size %d, manager's %d", v.FlowTableSize(), f.d.FlowTableSize())
	}

	ed, err := OpenEditor(f.d.PinPath())
	if err != nil {
		t.Fatalf("editor beside the manager: %v", err)
	}
	defer ed.Close()
	if err := ed.WriteMeta([]byte(`{"by":"operator"}`)); err != nil {
		t.Fatal(err)
	}
	if doc, err := f.d.ReadMeta(); err != nil || string(doc) != `{"by":"operator"}` {
		t.Fatalf("manager reads meta %q, %v after the editor wrote", doc, err)
	}
	// Closing them leaves the manager's handles alone.
	v.Close()
	ed.Close()
	if _, err := f.d.ReadMeta(); err != nil {
		t.Fatalf("manager after the view closed: %v", err)
	}
}
