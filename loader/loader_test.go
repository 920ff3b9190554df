package loader

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
)

func xdpAttached(f *fixture, ifname string) (bool, uint32) {
	f.t.Helper()
	var attached bool
	var id uint32
	if err := f.world.Do(func() error {
		l, err := netlink.LinkByName(ifname)
		if err != nil {
			return err
		}
		if x := l.Attrs().Xdp; x != nil {
			attached, id = x.Attached, x.ProgId
		}
		return nil
	}); err != nil {
		f.t.Fatal(err)
	}
	return attached, id
}

func (f *fixture) attach(d *Datapath, ifname string, mode XDPMode) string {
	f.t.Helper()
	var used string
	if err := f.world.Do(func() (err error) { used, err = d.Attach(ifname, mode); return err }); err != nil {
		f.t.Fatal(err)
	}
	return used
}

func TestAttachDetach(t *testing.T) {
	f := newFixture(t, Options{})
	for _, mode := range []XDPMode{XDPAuto, XDPGeneric} {
		t.Run(string(mode), func(t *testing.T) {
			d := loadTemp(t, Options{})
			used := f.attach(d, "fxcli", mode)
			if mode == XDPAuto && used != "native" {
				t.Fatalf("auto mode on veth attached %q, want native", used)
			}
			if mode == XDPGeneric && used != "generic" {
				t.Fatalf("generic mode attached %q", used)
			}
			if ok, _ := xdpAttached(f, "fxcli"); !ok {
				t.Fatal("no XDP program on fxcli after Attach")
			}
			if _, err := os.Stat(filepath.Join(d.PinPath(), "link_fxcli")); err != nil {
				t.Fatalf("link not pinned: %v", err)
			}
			// Attaching the same interface twice is harmless.
			if again := f.attach(d, "fxcli", mode); again != "adopted" {
				t.Fatalf("second attach said %q", again)
			}
			if err := d.Detach(); err != nil {
				t.Fatal(err)
			}
			if ok, _ := xdpAttached(f, "fxcli"); ok {
				t.Fatal("XDP program still attached after Detach")
			}
			if _, err := os.Stat(d.PinPath()); !os.IsNotExist(err) {
				t.Fatalf("pin directory survived Detach: %v", err)
			}
		})
	}
}

func TestAttachUnknownInterface(t *testing.T) {
	d := loadTemp(t, Options{})
	_, err := d.Attach("nosuchif0", XDPAuto)
	if err == nil || !strings.Contains(err.Error(), `"nosuchif0"`) {
		t.Fatalf("error %v does not name the interface", err)
	}
}

func TestRestartAdoptsPinnedState(t *testing.T) {
	f := newFixture(t, Options{})
	pin := f.d.PinPath()
	s := standardState()
	if err := f.d.Apply(s); err != nil {
		t.Fatal(err)
	}
	f.attach(f.d, "fxcli", XDPAuto)
	act, out := f.run(syn(client4a, vip4, 46000, 80).to(f.cliMAC).build(t), f.cli)
	if act != XDPRedirect {
		t.Fatalf("verdict %v", act)
	}
	before, _ := f.entry(NewTableID(0, true), client4a)
	_, progBefore := xdpAttached(f, "fxcli")

	// A process exit: handles close, pins stay.
	if err := f.d.Close(); err != nil {
		t.Fatal(err)
	}
	if ok, _ := xdpAttached(f, "fxcli"); !ok {
		t.Fatal("the program left the interface when its process closed its handles")
	}

	d2, err := Load(Options{PinPath: pin, FlowTableSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	f.d = d2
	if !d2.Adopted() {
		t.Fatal("Load did not adopt the pinned state")
	}
	if got := d2.Interfaces(); len(got) != 1 || got[0] != "fxcli" {
		t.Fatalf("adopted links %v, want [fxcli]", got)
	}
	if ok, progAfter := xdpAttached(f, "fxcli"); !ok || progAfter == progBefore {
		t.Fatalf("link not moved to the new program (attached %v, prog %d -> %d)", ok, progBefore, progAfter)
	}
	after, ok := f.entry(NewTableID(0, true), client4a)
	if !ok || after.Server != before.Server || after.Created != before.Created || after.Conns != before.Conns {
		t.Fatalf("entry changed across restart: %+v -> %+v", before, after)
	}
	// The old flow and the persisted client still reach the same member.
	act, out2 := f.run(syn(client4a, vip4, 46001, 80).to(f.cliMAC).build(t), f.cli)
	if act != XDPRedirect || !bytesEqualAt(out, out2, 30, 34) {
		t.Fatalf("after restart the client moved: %v", act)
	}
	// A different flow table size cannot adopt; the error says what to do.
	d2.Close()
	_, err = Load(Options{PinPath: pin, FlowTableSize: 8192})
	if err == nil || !strings.Contains(err.Error(), "limpet detach") {
		t.Fatalf("resizing the pinned flow table: %v", err)
	}
	d3, err := Load(Options{PinPath: pin, FlowTableSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d3.Close() }) // before loadTemp's cleanup unpins everything
}

func bytesEqualAt(a, b []byte, from, to int) bool {
	return string(a[from:to]) == string(b[from:to])
}

func TestSecondManagerRefused(t *testing.T) {
	d := loadTemp(t, Options{})
	_, err := Load(Options{PinPath: d.PinPath(), FlowTableSize: 4096})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Load: %v, want ErrLocked", err)
	}
	if !strings.Contains(err.Error(), d.PinPath()) || !strings.Contains(err.Error(), "pid") {
		t.Fatalf("message %q should name the pin path and the holder's pid", err)
	}
	if err := Detach(d.PinPath()); !errors.Is(err, ErrLocked) {
		t.Fatalf("detach under a running manager: %v, want ErrLocked", err)
	}
}

func TestOpenPinnedWithoutDatapath(t *testing.T) {
	requirePrivileges(t)
	_, err := OpenPinned("/sys/fs/bpf/limpet-does-not-exist")
	if !errors.Is(err, ErrNotLoaded) {
		t.Fatalf("got %v, want ErrNotLoaded", err)
	}
}
