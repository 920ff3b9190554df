package mirror

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/limpet-lb/limpet/userspace/enum"
)

// Op says what happened to an entry.
type Op uint8

// Operations. The zero Op is invalid, so a forgotten field is caught.
const (
	// Upsert creates the entry or moves it to another server.
	Upsert Op = 1
	// Delete removes the entry: it expired or was flushed.
	Delete Op = 2
)

var opNames = enum.Names[Op]{
	Upsert: "upsert",
	Delete: "delete",
}

func (o Op) String() string { return opNames.Name(o, "op(%d)") }

// Limits of one entry on the wire.
const (
	MaxTableLen = 255
	MaxKeyLen   = 4096
)

// Entry is one persistence entry, or its deletion, as it travels between
// nodes.
type Entry struct {
	// Table is the stable key of the table, the same on every node with the
	// same config: plan.TableKey, e.g. "profile:sticky" for a shared table
	// or "profile:web/vs:a" for a private one.
	Table string
	// Client is the client address, already masked by the profile's prefix,
	// for source_ip tables. Exactly one of Client and Key is set.
	Client netip.Addr
	// Key is the cookie value or generic key, for the L7 app_cookie and
	// generic tables. Exactly one of Client and Key is set.
	Key string
	// Server is the persisted server (port 0: the server's address on the
	// port its virtual server's pool lists). Required for Upsert.
	Server netip.AddrPort
	// Op is Upsert or Delete.
	Op Op
	// Updated is the wall-clock time of the change this entry records: when
	// the entry was created or moved for an Upsert, when it was deleted for
	// a Delete. Newer compares it.
	Updated time.Time
	// Created is when the entry was created on the node that made it.
	Created time.Time
}

// EntryKey identifies an entry within the mirrored table set.
type EntryKey struct {
	Table  string
	Client netip.Addr
	Key    string
}

// ID returns e's identity.
func (e *Entry) ID() EntryKey { return EntryKey{Table: e.Table, Client: e.Client, Key: e.Key} }

// Validate reports why e cannot be mirrored, or nil.
func (e *Entry) Validate() error {
	switch {
	case e.Table == "":
		return fmt.Errorf("entry has no table")
	case len(e.Table) > MaxTableLen:
		return fmt.Errorf("table name of %d bytes exceeds %d", len(e.Table), MaxTableLen)
	case len(e.Key) > MaxKeyLen:
		return fmt.Errorf("key of %d bytes exceeds %d", len(e.Key), MaxKeyLen)
	case e.Client.IsValid() == (e.Key != ""):
		return fmt.Errorf("entry of table %q needs exactly one of a client address and a key", e.Table)
	case e.Client.Zone() != "":
		return fmt.Errorf("client address %s carries a zone", e.Client)
	case e.Server.Addr().Zone() != "":
		return fmt.Errorf("server address %s carries a zone", e.Server)
	case e.Op != Upsert && e.Op != Delete:
		return fmt.Errorf("unknown operation %d", uint8(e.Op))
	case e.Op == Upsert && !e.Server.IsValid():
		return fmt.Errorf("upsert of table %q has no server", e.Table)
	}
	return nil
}

// Newer reports whether a should replace b, two versions of the same entry
// (same table and client or key): the one with the later Updated wins. A
// Delete is a version too, so a deletion replaces an older upsert and an
// upsert made after a deletion brings the entry back; a node that removed
// the entry keeps that deletion's time to compare it (or, if it has no
// record left, treats any received entry as new).
//
// Equal Updated times are broken the same way on every node, so nodes that
// exchange conflicting entries in active_active converge on one of them: the
// later Created, then Delete over Upsert, then the greater server. Identical
// entries are not newer than each other, so re-applying a version is a no-op.
func Newer(a, b Entry) bool {
	if c := a.Updated.Compare(b.Updated); c != 0 {
		return c > 0
	}
	if c := a.Created.Compare(b.Created); c != 0 {
		return c > 0
	}
	if a.Op != b.Op {
		return a.Op == Delete
	}
	return a.Server.Compare(b.Server) > 0
}
