package loader

import (
	"os"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// withoutSysAdmin runs fn on a thread whose effective capabilities lack
// CAP_SYS_ADMIN, as the systemd unit's daemon does; the thread gets it
// back afterwards (it stays in the permitted set).
func withoutSysAdmin(t *testing.T, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data, saved [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		t.Fatal(err)
	}
	saved = data
	data[unix.CAP_SYS_ADMIN/32].Effective &^= 1 << (unix.CAP_SYS_ADMIN % 32)
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := unix.Capset(&hdr, &saved[0]); err != nil {
			t.Fatal(err)
		}
	}()
	fn()
}

// The persistence tables are map-in-map inner maps. Opening one by the id
// the outer map holds needs CAP_SYS_ADMIN; through its pin it does not.
func TestTablesOpenThroughTheirPinsWithoutSysAdmin(t *testing.T) {
	f := newFixture(t, Options{})
	s := standardState()
	if err := f.d.Apply(s); err != nil {
		t.Fatal(err)
	}
	for _, tb := range s.Tables {
		if _, err := os.Stat(f.d.tablePin(tb.ID)); err != nil {
			t.Fatalf("table %d is not pinned: %v", tb.ID.Index(), err)
		}
	}
	f.attach(f.d, "fxcli", XDPAuto)
	if act, _ := f.run(syn(client4a, vip4, 46000, 80).to(f.cliMAC).build(t), f.cli); act != XDPRedirect {
		t.Fatalf("verdict %v", act)
	}
	tid := NewTableID(0, true)
	withoutSysAdmin(t, func() {
		e, ok, err := f.d.LookupEntry(tid, client4a)
		if err != nil || !ok {
			t.Fatalf("lookup without CAP_SYS_ADMIN: ok %v, %v", ok, err)
		}
		if !e.Server.IsValid() {
			t.Fatalf("entry %+v has no server", e)
		}
	})

	// A table without a pin (as a datapath pinned by an older limpet has):
	// refused without the privilege, with an error that says which one,
	// and repinned when opened with it.
	if err := os.Remove(f.d.tablePin(tid)); err != nil {
		t.Fatal(err)
	}
	withoutSysAdmin(t, func() {
		_, _, err := f.d.LookupEntry(tid, client4a)
		if err == nil || !strings.Contains(err.Error(), "CAP_SYS_ADMIN") {
			t.Fatalf("lookup of an unpinned table without CAP_SYS_ADMIN: %v", err)
		}
	})
	if _, ok, err := f.d.LookupEntry(tid, client4a); err != nil || !ok {
		t.Fatalf("lookup with CAP_SYS_ADMIN: ok %v, %v", ok, err)
	}
	if _, err := os.Stat(f.d.tablePin(tid)); err != nil {
		t.Fatalf("the table was not repinned: %v", err)
	}

	// A resized table replaces its pin; a removed one loses it.
	s.Tables[0].MaxEntries = 2048
	if err := f.d.Apply(s); err != nil {
		t.Fatal(err)
	}
	withoutSysAdmin(t, func() {
		if _, ok, err := f.d.LookupEntry(tid, client4a); err != nil || !ok {
			t.Fatalf("lookup in the resized table: ok %v, %v", ok, err)
		}
	})
	removed := s.Tables[len(s.Tables)-1].ID
	s2 := s
	s2.Tables = s.Tables[:len(s.Tables)-1]
	var vss []VirtualServer
	for _, vs := range s.VirtualServers {
		if vs.TableID != removed {
			vss = append(vss, vs)
		}
	}
	s2.VirtualServers = vss
	if err := f.d.Apply(s2); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(f.d.tablePin(removed)); !os.IsNotExist(err) {
		t.Fatalf("removed table %d keeps its pin (stat: %v)", removed.Index(), err)
	}
}
