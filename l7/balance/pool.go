package balance

import (
	"net/netip"
)

// Pool is a named list of members and the selector of its algorithm.
type Pool struct {
	Name     string
	Members  []*Member
	selector Selector
	byAddr   map[netip.AddrPort]*Member
	byIP     map[netip.Addr]*Member
}

// NewPool builds a pool over members with the named algorithm.
func NewPool(name, algorithm string, members []*Member) (*Pool, error) {
	sel, err := New(algorithm, len(members))
	if err != nil {
		return nil, err
	}
	p := &Pool{
		Name:     name,
		Members:  members,
		selector: sel,
		byAddr:   make(map[netip.AddrPort]*Member, len(members)),
		byIP:     make(map[netip.Addr]*Member, len(members)),
	}
	for _, m := range members {
		ap := netip.AddrPortFrom(m.Addr.Addr().Unmap(), m.Addr.Port())
		p.byAddr[ap] = m
		if _, dup := p.byIP[ap.Addr()]; !dup {
			p.byIP[ap.Addr()] = m
		}
	}
	return p, nil
}

// Lookup finds the member with address and port ap. With anyPort, or when
// ap's port is 0, a member with the same address on another port matches
// too (persistence tables shared between virtual servers whose pools list
// the same servers on other ports record only the server).
func (p *Pool) Lookup(ap netip.AddrPort, anyPort bool) *Member {
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if m, ok := p.byAddr[ap]; ok {
		return m
	}
	if anyPort || ap.Port() == 0 {
		return p.byIP[ap.Addr()]
	}
	return nil
}

// Pick selects a member for a new client and counts the request on it
// (Member.Acquire). It returns nil when no member can take the client. A
// member that filled up between selection and acquisition is skipped.
func (p *Pool) Pick(pk *Pick) *Member {
	base := len(pk.Exclude)
	defer func() { pk.Exclude = pk.Exclude[:base] }()
	for range len(p.Members) {
		m := p.selector.Select(p.Members, pk)
		if m == nil {
			return nil
		}
		if m.Acquire() {
			return m
		}
		pk.Exclude = append(pk.Exclude, m)
	}
	return nil
}
