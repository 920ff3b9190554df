package desired

import "github.com/limpet-lb/limpet/loader"

// View is a read-only view of a pinned datapath with the names behind its
// ids (its Meta), indexed by id: a dump labels a million entries. A CLI
// reads the datapath through it, whether or not a daemon runs, and edits it
// through the loader.Editor that OpenEditor pairs with a View.
type View struct {
	DP      *loader.Pinned
	Meta    *Meta
	vsName  map[loader.VirtualServerID]string
	members map[loader.MemberID]*MemberMeta
}

// OpenView opens the datapath pinned at pinPath and the metadata stored
// with it (empty when none was written yet). Close releases it.
func OpenView(pinPath string) (*View, error) {
	dp, err := loader.OpenPinned(pinPath)
	if err != nil {
		return nil, err
	}
	return newView(dp)
}

// OpenEditor opens the datapath pinned at pinPath for an operator's edits,
// with the View of the same handles. Closing the editor closes the view.
func OpenEditor(pinPath string) (*loader.Editor, *View, error) {
	ed, err := loader.OpenEditor(pinPath)
	if err != nil {
		return nil, nil, err
	}
	v, err := newView(&ed.Pinned)
	if err != nil {
		return nil, nil, err
	}
	return ed, v, nil
}

// newView reads dp's metadata and indexes it; it closes dp on failure.
func newView(dp *loader.Pinned) (*View, error) {
	raw, err := dp.ReadMeta()
	if err != nil {
		dp.Close()
		return nil, err
	}
	meta, err := ParseMeta(raw)
	if err != nil {
		dp.Close()
		return nil, err
	}
	if meta == nil {
		meta = &Meta{}
	}
	v := &View{DP: dp, Meta: meta, vsName: map[loader.VirtualServerID]string{}, members: map[loader.MemberID]*MemberMeta{}}
	for _, vs := range meta.VirtualServers {
		v.vsName[vs.ID] = vs.Name
	}
	for i := range meta.Members {
		v.members[meta.Members[i].ID] = &meta.Members[i]
	}
	return v, nil
}

// Close releases the datapath.
func (v *View) Close() error { return v.DP.Close() }

// VirtualServerName names a virtual server id; "" when unknown.
func (v *View) VirtualServerName(id loader.VirtualServerID) string { return v.vsName[id] }

// EntryMember is the member an entry points at, or nil.
func (v *View) EntryMember(e loader.PersistEntry) *MemberMeta {
	return entryMember(v.members[e.MemberID], e)
}

// EntryMember is the member an entry points at, or nil: the member of its
// id, while that member still has the entry's address (an id a removed
// member freed may have been given to another).
func (m *Meta) EntryMember(e loader.PersistEntry) *MemberMeta {
	return entryMember(m.Member(e.MemberID), e)
}

func entryMember(mm *MemberMeta, e loader.PersistEntry) *MemberMeta {
	if mm == nil || mm.Address != e.Server.Addr().String() {
		return nil
	}
	return mm
}

// EntryServer is where an entry sends its client, as the dumps show it:
// the address, with the port when the entry has one.
func EntryServer(e loader.PersistEntry) string {
	if e.Server.Port() != 0 {
		return e.Server.String()
	}
	return e.Server.Addr().String()
}
