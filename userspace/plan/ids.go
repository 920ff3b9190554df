package plan

import (
	"fmt"
	"net/netip"
)

// MemberKey identifies a member across reloads: its pool, address and port.
// Renaming a member keeps its id; moving it to another address does not.
func MemberKey(pool string, addr netip.Addr, port int) string {
	return fmt.Sprintf("%s/%s", pool, netip.AddrPortFrom(addr.Unmap(), uint16(port)))
}

// idAllocator hands out the smallest free id, reusing previous ids by key:
// pool, member and virtual server ids, and table indexes.
type idAllocator[ID ~uint32] struct {
	prev  map[string]ID
	used  map[ID]bool
	limit ID
	what  string
}

func newAllocator[ID ~uint32](what string, limit ID, prev map[string]ID, wanted []string) *idAllocator[ID] {
	a := &idAllocator[ID]{prev: map[string]ID{}, used: map[ID]bool{}, limit: limit, what: what}
	want := map[string]bool{}
	for _, k := range wanted {
		want[k] = true
	}
	// Reserve the previous ids of everything still configured first, so a
	// new object never takes the id an existing one keeps.
	for k, id := range prev {
		if want[k] && id < limit {
			a.prev[k] = id
			a.used[id] = true
		}
	}
	return a
}

func (a *idAllocator[ID]) get(key string) (ID, error) {
	if id, ok := a.prev[key]; ok {
		return id, nil
	}
	for id := ID(0); id < a.limit; id++ {
		if !a.used[id] {
			a.used[id] = true
			a.prev[key] = id
			return id, nil
		}
	}
	return 0, fmt.Errorf("more than %d %s", a.limit, a.what)
}
