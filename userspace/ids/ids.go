// Package ids holds the identities that every consumer of a compiled config
// shares: a pool member (MemberRef) and a persistence table (TableKey). The
// proxy, the health monitors, the mirror and the daemon name the same member
// and the same table with the same value, and nothing cuts a string key apart
// to learn what it names. It imports nothing of limpet's.
package ids

import (
	"fmt"
	"strings"
)

// MemberRef names a pool member as the config does: its pool and its name.
type MemberRef struct {
	Pool, Member string
}

func (r MemberRef) String() string { return r.Pool + "/" + r.Member }

// TableKey identifies a persistence table: one per profile when the
// profile shares persistence across virtual servers, one per profile and
// virtual server otherwise.
type TableKey struct {
	Profile string
	// VirtualServer is empty for a shared table.
	VirtualServer string
}

// SharedTable is the key of a profile's shared table.
func SharedTable(profile string) TableKey { return TableKey{Profile: profile} }

// TableOf is the key of the table a virtual server uses with a profile.
func TableOf(profile string, shared bool, vs string) TableKey {
	if shared {
		return SharedTable(profile)
	}
	return TableKey{Profile: profile, VirtualServer: vs}
}

// Shared reports whether k names a profile's shared table.
func (k TableKey) Shared() bool { return k.VirtualServer == "" }

// String is the key's stored and wire form: "profile:NAME" for a shared
// table, "profile:NAME/vs:VS" for a private one. The pinned metadata and the
// mirroring protocol carry it, so it must not change.
func (k TableKey) String() string {
	if k.Shared() {
		return "profile:" + k.Profile
	}
	return "profile:" + k.Profile + "/vs:" + k.VirtualServer
}

// ParseTableKey reads the form String writes, as a mirroring peer sends it.
func ParseTableKey(s string) (TableKey, error) {
	name, ok := strings.CutPrefix(s, "profile:")
	if !ok || name == "" {
		return TableKey{}, fmt.Errorf("table key %q is not profile:NAME or profile:NAME/vs:VS", s)
	}
	profile, vs, private := strings.Cut(name, "/vs:")
	if profile == "" || (private && vs == "") {
		return TableKey{}, fmt.Errorf("table key %q is not profile:NAME or profile:NAME/vs:VS", s)
	}
	return TableKey{Profile: profile, VirtualServer: vs}, nil
}
