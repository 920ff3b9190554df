package persist

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"
)

var (
	t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	s1 = netip.MustParseAddrPort("10.0.0.1:80")
	s2 = netip.MustParseAddrPort("10.0.0.2:80")
)

func k(s string) Key { return Key{Text: s} }

func TestEntryTimeoutCountsFromLastConnection(t *testing.T) {
	m := NewMemory(time.Minute, 0, true)
	if err := m.Set(k("a"), s1, t0); err != nil {
		t.Fatal(err)
	}
	// Not held: expires a timeout after Set.
	if _, ok := m.Get(k("a"), t0.Add(59*time.Second)); !ok {
		t.Fatal("gone early")
	}
	if _, ok := m.Get(k("a"), t0.Add(61*time.Second)); ok {
		t.Fatal("not expired")
	}
	// Held by two connections: kept however long.
	m.Set(k("b"), s1, t0)
	m.Hold(k("b"), t0)
	m.Hold(k("b"), t0)
	if e, ok := m.Get(k("b"), t0.Add(24*time.Hour)); !ok || e.Conns != 2 || !e.Expires.IsZero() {
		t.Fatalf("held entry: %+v %v", e, ok)
	}
	later := t0.Add(24 * time.Hour)
	m.Release(k("b"), later)
	if _, ok := m.Get(k("b"), later.Add(2*time.Minute)); !ok {
		t.Fatal("one connection still holds it")
	}
	m.Release(k("b"), later.Add(time.Hour))
	if _, ok := m.Get(k("b"), later.Add(time.Hour+59*time.Second)); !ok {
		t.Fatal("countdown should start at the last release")
	}
	// A new connection before the countdown ends keeps the server.
	if !m.Hold(k("b"), later.Add(time.Hour+59*time.Second)) {
		t.Fatal("hold before expiry failed")
	}
	m.Release(k("b"), later.Add(2*time.Hour))
	if _, ok := m.Get(k("b"), later.Add(2*time.Hour+61*time.Second)); ok {
		t.Fatal("not expired after the last countdown")
	}
	if m.Hold(k("b"), later.Add(3*time.Hour)) {
		t.Fatal("hold on an expired entry")
	}
}

func TestSetMovesServerKeepsConns(t *testing.T) {
	m := NewMemory(time.Minute, 0, true)
	m.Set(k("a"), s1, t0)
	m.Hold(k("a"), t0)
	m.Set(k("a"), s2, t0.Add(time.Second))
	e, _ := m.Get(k("a"), t0.Add(time.Second))
	if e.Server != s2 || e.Conns != 1 || !e.Created.Equal(t0) || !e.Updated.Equal(t0.Add(time.Second)) {
		t.Fatalf("%+v", e)
	}
}

func TestFullTable(t *testing.T) {
	purge := NewMemory(time.Minute, 2, true)
	purge.Set(k("a"), s1, t0)
	purge.Set(k("b"), s1, t0.Add(time.Second))
	purge.Get(k("a"), t0.Add(2*time.Second)) // a is now the most recent
	if err := purge.Set(k("c"), s1, t0.Add(3*time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, ok := purge.Get(k("b"), t0.Add(3*time.Second)); ok {
		t.Fatal("the least recently used entry (b) should have gone")
	}
	if purge.Len() != 2 {
		t.Fatalf("len %d", purge.Len())
	}

	strict := NewMemory(time.Minute, 2, false)
	strict.Set(k("a"), s1, t0)
	strict.Set(k("b"), s1, t0)
	if err := strict.Set(k("c"), s1, t0); !errors.Is(err, ErrFull) {
		t.Fatalf("want ErrFull, got %v", err)
	}
	if err := strict.Set(k("a"), s2, t0); err != nil {
		t.Fatalf("updating a known key in a full table: %v", err)
	}
	// Expired entries make room even without purge.
	if err := strict.Set(k("c"), s1, t0.Add(2*time.Minute)); err != nil {
		t.Fatalf("an expired entry should make room: %v", err)
	}
}

func TestSweep(t *testing.T) {
	m := NewMemory(time.Minute, 0, true)
	for i := 0; i < 100; i++ {
		m.Set(k(fmt.Sprint(i)), s1, t0.Add(time.Duration(i)*time.Second))
	}
	m.Set(k("held"), s1, t0)
	m.Hold(k("held"), t0)
	// At t0+90s entries set at or before t0+30s have expired (31 of them).
	if n := m.Sweep(t0.Add(90 * time.Second)); n != 31 {
		t.Fatalf("swept %d, want 31", n)
	}
	if _, ok := m.Get(k("held"), t0.Add(90*time.Second)); !ok {
		t.Fatal("a held entry was swept")
	}
	if n := m.Sweep(t0.Add(time.Hour)); n != 69 {
		t.Fatalf("swept %d, want 69", n)
	}
	if m.Len() != 1 {
		t.Fatalf("len %d", m.Len())
	}
}

func TestDeleteAndReleaseUnknown(t *testing.T) {
	m := NewMemory(time.Minute, 0, true)
	m.Release(k("nope"), t0) // no panic, no entry
	if m.Delete(k("nope")) || m.Len() != 0 {
		t.Fatal()
	}
	m.Set(Key{Addr: netip.MustParseAddr("192.0.2.0")}, s1, t0)
	if !m.Delete(Key{Addr: netip.MustParseAddr("192.0.2.0")}) {
		t.Fatal("delete by address key")
	}
}

func TestProviderSharesByName(t *testing.T) {
	p := NewMemoryProvider()
	a, _ := p.Table(Spec{Name: "prof", Type: "generic", Timeout: time.Minute})
	b, _ := p.Table(Spec{Name: "prof", Type: "generic", Timeout: time.Minute})
	c, _ := p.Table(Spec{Name: "prof/vs2", Type: "generic", Timeout: time.Minute})
	if a != b || a == c {
		t.Fatal("same name, same table; other name, other table")
	}
	if _, err := p.Table(Spec{Name: "prof", Type: "source_ip"}); err == nil {
		t.Fatal("type clash accepted")
	}
	a.Set(k("x"), s1, t0)
	if n := p.Sweep(t0.Add(2 * time.Minute)); n != 1 {
		t.Fatalf("provider sweep %d", n)
	}
}

func TestConcurrentUse(t *testing.T) {
	m := NewMemory(time.Second, 64, true)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				key := k(fmt.Sprint(i % 100))
				now := t0.Add(time.Duration(i) * time.Millisecond)
				m.Set(key, s1, now)
				m.Hold(key, now)
				m.Get(key, now)
				m.Release(key, now)
				if i%50 == 0 {
					m.Sweep(now)
				}
			}
		}()
	}
	wg.Wait()
	if m.Len() > 64 {
		t.Fatalf("table grew past its limit: %d", m.Len())
	}
}
