package loader

import (
	"os"
	"path/filepath"
	"testing"
)

// The redirect error counter follows limpet_xdp's id across a restart (a
// new program, a new id), its tracepoint link is replaced rather than
// doubled, and a datapath pinned before the counter existed is adopted
// with the counter's maps created.
func TestRedirectWatchAcrossRestarts(t *testing.T) {
	d := loadTemp(t, Options{})
	pin := d.PinPath()
	watched := func(d *Datapath) uint32 {
		t.Helper()
		var id uint32
		if err := d.objs.RedirectWatch.Lookup(uint32(0), &id); err != nil {
			t.Fatal(err)
		}
		info, err := d.objs.LimpetXdp.Info()
		if err != nil {
			t.Fatal(err)
		}
		want, _ := info.ID()
		if id == 0 || id != uint32(want) {
			t.Fatalf("redirect_watch holds %d, limpet_xdp is %d", id, want)
		}
		return id
	}
	first := watched(d)
	if err := d.WatchRedirectErrors(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(pin, pinRedirectLink)); err != nil {
		t.Fatalf("the tracepoint link is not pinned: %v", err)
	}
	d.Close()

	// As if an older version had pinned it: no counter maps, no link.
	for _, name := range []string{"redirect_watch", "redirect_errors", pinRedirectLink} {
		if err := os.Remove(filepath.Join(pin, name)); err != nil {
			t.Fatal(err)
		}
	}
	if old, err := OpenPinned(pin); err != nil {
		t.Fatalf("the CLI cannot open a datapath pinned without the counter: %v", err)
	} else if res, err := old.RedirectErrors(); err != nil || len(res) != 0 {
		t.Fatalf("redirect errors of a datapath without the counter: %v %v", res, err)
	} else {
		old.Close()
	}
	d2, err := Load(Options{PinPath: pin, FlowTableSize: 4096})
	if err != nil {
		t.Fatalf("adopting a datapath pinned without the counter: %v", err)
	}
	t.Cleanup(func() { d2.Close() })
	if second := watched(d2); second == first {
		t.Fatalf("the new program kept the old id %d", first)
	}
	for _, name := range []string{"redirect_watch", "redirect_errors"} {
		if _, err := os.Stat(filepath.Join(pin, name)); err != nil {
			t.Errorf("map %s was not pinned on adoption: %v", name, err)
		}
	}
	if err := d2.WatchRedirectErrors(); err != nil {
		t.Fatal(err)
	}
	if res, err := d2.RedirectErrors(); err != nil || len(res) != 0 {
		t.Fatalf("redirect errors: %v %v", res, err)
	}
}
