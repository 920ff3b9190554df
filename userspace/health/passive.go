package health

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/limpet-lb/limpet/userspace/ids"
)

// Passive counts the outcomes of the connections the L7 proxy opens to
// members. max_fails consecutive failures take a member down; it comes back
// when fail_timeout has passed since it went down, when a connection to it
// succeeds, or when an active probe of its monitor succeeds. Failures that
// arrive while it is down (connections already in flight) neither count nor
// extend the hold; the count restarts from zero when it comes back.
//
// Only members whose monitor sets max_fails (type passive, or an active
// monitor with max_fails > 0) are counted; reports about other members are
// ignored. ConnectResult has the signature of l7.FailureReporter (see the
// l7health package for the adapter) and never blocks.
type Passive struct{ c *Checker }

// ConnectResult records one connection attempt to a member; err is nil on success.
func (p *Passive) ConnectResult(id ids.MemberRef, addr netip.AddrPort, err error) {
	c := p.c
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.members[id]
	if c.closed || m == nil || m.t.Monitor.MaxFails == 0 {
		return
	}
	if err == nil {
		m.pFails = 0
		if m.pDown {
			c.clearPassive(m)
			c.publish(m, fmt.Sprintf("passive: a connection to %s succeeded", addr))
		}
		return
	}
	m.pLastErr = err.Error()
	if m.pDown {
		return
	}
	m.pFails++
	if m.pFails < m.t.Monitor.MaxFails {
		return
	}
	hold := m.t.Monitor.FailTimeout
	m.pDown = true
	m.pUntil = c.now().Add(hold)
	m.pGen++
	gen := m.pGen
	m.pTimer = time.AfterFunc(hold, func() { c.passiveExpired(m, gen) })
	c.publish(m, fmt.Sprintf("passive: %d consecutive connection failures, last to %s: %v", m.pFails, addr, err))
}

func (c *Checker) passiveExpired(m *member, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || m.pGen != gen || !m.pDown || c.members[m.t.ID] != m {
		return
	}
	c.clearPassive(m)
	c.publish(m, fmt.Sprintf("passive: held down for fail_timeout (%v)", m.t.Monitor.FailTimeout))
}

// clearPassive ends a passive hold and restarts the count. c.mu is held.
func (c *Checker) clearPassive(m *member) {
	m.pDown = false
	m.pFails = 0
	m.pUntil = time.Time{}
	m.pGen++
	if m.pTimer != nil {
		m.pTimer.Stop()
		m.pTimer = nil
	}
}
