// Package persist holds the persistence tables of the L7 proxy: app cookie
// values, generic keys and source addresses, each mapped to a server.
//
// Store is the interface the proxy uses. Memory is the in-process
// implementation; the loader can provide a Store over the pinned BPF
// persistence table of a source_ip profile, so that an l4 and an http
// virtual server sharing the profile share one table.
//
// Entry lifetime follows the NSX seed: while connections hold an entry it is
// kept, however long they stay idle; when the last one ends the countdown of
// the profile's timeout starts; a connection that comes before it runs out
// keeps the server, after it the entry is gone.
package persist

import (
	"errors"
	"net/netip"
	"time"
)

// ErrFull is returned by Set when the table is full and does not purge.
var ErrFull = errors.New("persistence table is full")

// Key identifies an entry within a table.
type Key struct {
	// Addr is the client address, already masked, for source_ip tables.
	Addr netip.Addr
	// Text is the cookie value or generic key, for app_cookie and generic tables.
	Text string
}

// Entry is one persisted client.
type Entry struct {
	// Server is the persisted server. A table shared between virtual
	// servers may record port 0, meaning the server's address on whatever
	// port the virtual server's pool lists it.
	Server netip.AddrPort
	// Conns counts the connections holding the entry.
	Conns int
	// Created is when the entry was made; Updated when its server last changed.
	Created, Updated time.Time
	// Expires is when the entry goes if nothing holds it; zero while Conns > 0.
	Expires time.Time
}

// Store is one persistence table. Implementations are safe for concurrent use.
type Store interface {
	// Get returns the live entry for key.
	Get(key Key, now time.Time) (Entry, bool)
	// Set maps key to server, creating the entry or moving it to another
	// server; the connection count of an existing entry is kept. A table
	// that is full and does not purge returns ErrFull for a new key.
	Set(key Key, server netip.AddrPort, now time.Time) error
	// Hold counts one more connection on key's entry, reporting whether it exists.
	Hold(key Key, now time.Time) bool
	// Release ends a Hold; when no connection holds the entry any more, its
	// countdown starts at now.
	Release(key Key, now time.Time)
	// Delete removes key's entry, reporting whether there was one.
	Delete(key Key) bool
	// Len is the number of entries, expired ones not yet swept included.
	Len() int
}

// Spec describes the table a virtual server needs.
type Spec struct {
	// Name identifies the table: the profile's name when it is shared,
	// profile/virtual-server otherwise. Provider.Table with the same name
	// returns the same table.
	Name string
	// Profile and VirtualServer say who asked (VirtualServer is empty for a shared table).
	Profile, VirtualServer string
	// Type is source_ip, app_cookie or generic.
	Type string
	// Timeout is the persistence entry timeout.
	Timeout time.Duration
	// MaxEntries bounds the table; PurgeWhenFull evicts the least recently
	// used entry to make room, otherwise new keys are refused.
	MaxEntries    int
	PurgeWhenFull bool
	// Shared and Mirrored are the profile's share_persistence and
	// ha_mirroring flags, for providers that share or mirror tables.
	Shared, Mirrored bool
}

// Provider hands out tables.
type Provider interface {
	Table(spec Spec) (Store, error)
}
