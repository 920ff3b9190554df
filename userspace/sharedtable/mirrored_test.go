package sharedtable_test

import (
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/l7/persist"
	"github.com/limpet-lb/limpet/userspace/mirror"
	"github.com/limpet-lb/limpet/userspace/sharedtable"
)

// An app-cookie table of a mirrored profile publishes what it learns,
// takes a peer's newer entries, and lists itself for a bulk sync; a table of
// an unmirrored profile does none of it.
func TestL7TablesMirror(t *testing.T) {
	var mu sync.Mutex
	var published []mirror.Entry
	p := sharedtable.New(nil, nil)
	p.SetPublisher(func(e mirror.Entry) {
		mu.Lock()
		published = append(published, e)
		mu.Unlock()
	})
	spec := persist.Spec{Name: "jsession", Profile: "jsession", Type: "app_cookie", Timeout: time.Hour, MaxEntries: 100, PurgeWhenFull: true, Shared: true, Mirrored: true}
	st, err := p.Table(spec)
	if err != nil {
		t.Fatal(err)
	}
	m1 := netip.MustParseAddrPort("10.1.0.11:8080")
	m2 := netip.MustParseAddrPort("10.1.0.12:8080")
	now := time.Now()
	if err := st.Set(persist.Key{Text: "abc123"}, m1, now); err != nil {
		t.Fatal(err)
	}
	if len(published) != 1 || published[0].Table != "profile:jsession" || published[0].Key != "abc123" || published[0].Server != m1 || published[0].Op != mirror.Upsert {
		t.Fatalf("published %+v", published)
	}

	// A peer's older entry loses; a newer one wins; neither is published again.
	older := mirror.Entry{Table: "profile:jsession", Key: "abc123", Server: m2, Op: mirror.Upsert, Updated: now.Add(-time.Minute), Created: now.Add(-time.Minute)}
	if handled, err := p.MirrorApply(older); !handled || err != nil {
		t.Fatalf("apply: %v %v", handled, err)
	}
	if e, _ := st.Get(persist.Key{Text: "abc123"}, time.Now()); e.Server != m1 {
		t.Fatalf("an older peer entry replaced the local one: %s", e.Server)
	}
	newer := older
	newer.Updated, newer.Created = now.Add(time.Second), now.Add(time.Second)
	if _, err := p.MirrorApply(newer); err != nil {
		t.Fatal(err)
	}
	if e, _ := st.Get(persist.Key{Text: "abc123"}, time.Now()); e.Server != m2 {
		t.Fatalf("a newer peer entry did not win: %s", e.Server)
	}
	learned := mirror.Entry{Table: "profile:jsession", Key: "xyz", Server: m1, Op: mirror.Upsert, Updated: now, Created: now}
	if _, err := p.MirrorApply(learned); err != nil {
		t.Fatal(err)
	}
	if e, ok := st.Get(persist.Key{Text: "xyz"}, time.Now()); !ok || e.Server != m1 {
		t.Fatal("a peer's entry for a new key was not installed")
	}
	if len(published) != 1 {
		t.Fatalf("applying peers' entries published %d more", len(published)-1)
	}
	snap := p.MirrorSnapshot()
	if len(snap) != 2 {
		t.Fatalf("bulk sync lists %d entries, want 2: %+v", len(snap), snap)
	}
	// A newer deletion from the peer removes the key.
	del := mirror.Entry{Table: "profile:jsession", Key: "xyz", Op: mirror.Delete, Updated: time.Now().Add(time.Second)}
	if _, err := p.MirrorApply(del); err != nil {
		t.Fatal(err)
	}
	if _, ok := st.Get(persist.Key{Text: "xyz"}, time.Now()); ok {
		t.Fatal("a peer's deletion was ignored")
	}

	// Not mirrored: nothing published, and peers' entries are not for it.
	plain, _ := p.Table(persist.Spec{Name: "gen", Profile: "gen", Type: "generic", Timeout: time.Hour, MaxEntries: 100, PurgeWhenFull: true, Shared: true})
	plain.Set(persist.Key{Text: "k"}, m1, now)
	if len(published) != 1 {
		t.Fatal("an unmirrored table published")
	}
	if handled, _ := p.MirrorApply(mirror.Entry{Table: "profile:gen", Key: "k", Server: m2, Op: mirror.Upsert, Updated: now}); handled {
		t.Fatal("an unmirrored table took a peer's entry")
	}
}
