// Package balance chooses a pool member for a new client at L7. A Selector
// implements one pool algorithm; a Member carries the state every algorithm
// looks at: administrative state, health (from the monitors and from passive
// connection failures), and the requests in flight.
package balance

import (
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"
)

// Admin is a member's administrative state.
type Admin int32

// Administrative states, as the config's member states.
const (
	// Enabled members take new and persisted clients.
	Enabled Admin = iota
	// Draining (graceful_disabled) members keep their persisted clients and
	// take no new ones.
	Draining
	// Disabled members take no traffic at all.
	Disabled
)

func (a Admin) String() string {
	switch a {
	case Enabled:
		return "enabled"
	case Draining:
		return "graceful_disabled"
	case Disabled:
		return "disabled"
	}
	return fmt.Sprintf("admin(%d)", int32(a))
}

// Member is one server of a pool, shared by every virtual server that uses
// the pool. Its methods are safe for concurrent use.
type Member struct {
	Pool   string
	Name   string
	Addr   netip.AddrPort
	Weight int
	// MaxConns is the most requests in flight the member takes; 0 is no
	// limit. A full member counts as down.
	MaxConns int64

	admin        atomic.Int32
	monitorDown  atomic.Bool
	passiveUntil atomic.Int64 // Unix nanoseconds; down while now is before it
	fails        atomic.Int32
	conns        atomic.Int64
	hash         uint64
	addr         string // Addr as text, for logs
}

// NewMember returns an enabled, healthy member.
func NewMember(pool, name string, addr netip.AddrPort, weight int) *Member {
	if weight < 1 {
		weight = 1
	}
	m := &Member{Pool: pool, Name: name, Addr: addr, Weight: weight, addr: addr.String()}
	m.hash = hashString(m.addr)
	return m
}

// AddrString is Addr as text, made once.
func (m *Member) AddrString() string { return m.addr }

// String is pool/name (address).
func (m *Member) String() string { return fmt.Sprintf("%s/%s (%s)", m.Pool, m.Name, m.Addr) }

// SetAdmin sets the administrative state.
func (m *Member) SetAdmin(a Admin) { m.admin.Store(int32(a)) }

// Admin returns the administrative state.
func (m *Member) Admin() Admin { return Admin(m.admin.Load()) }

// SetMonitorUp records the verdict of the health monitors.
func (m *Member) SetMonitorUp(up bool) { m.monitorDown.Store(!up) }

// Healthy reports whether the monitors say up and passive health has not
// marked the member down at now.
func (m *Member) Healthy(now time.Time) bool {
	return !m.monitorDown.Load() && now.UnixNano() >= m.passiveUntil.Load()
}

// PassiveDownUntil is when a passive mark-down ends (zero if none is in force at now).
func (m *Member) PassiveDownUntil(now time.Time) time.Time {
	u := m.passiveUntil.Load()
	if now.UnixNano() >= u {
		return time.Time{}
	}
	return time.Unix(0, u)
}

// Full reports whether the member is at its connection limit.
func (m *Member) Full() bool {
	return m.MaxConns > 0 && m.conns.Load() >= m.MaxConns
}

// Available reports whether a persisted client may be sent to the member:
// not disabled, healthy and not full.
func (m *Member) Available(now time.Time) bool {
	return m.Admin() != Disabled && m.Healthy(now) && !m.Full()
}

// Selectable reports whether a new client may be sent to the member:
// enabled, healthy and not full.
func (m *Member) Selectable(now time.Time) bool {
	return m.Admin() == Enabled && m.Healthy(now) && !m.Full()
}

// Conns is the number of requests in flight.
func (m *Member) Conns() int64 { return m.conns.Load() }

// Acquire counts one more request in flight, unless the member is full.
func (m *Member) Acquire() bool {
	if m.MaxConns <= 0 {
		m.conns.Add(1)
		return true
	}
	for {
		c := m.conns.Load()
		if c >= m.MaxConns {
			return false
		}
		if m.conns.CompareAndSwap(c, c+1) {
			return true
		}
	}
}

// Release ends a request counted by Acquire.
func (m *Member) Release() { m.conns.Add(-1) }

// ConnectFailed records a failed connection attempt. After maxFails
// consecutive failures the member is down until now+failTimeout; the first
// attempt after that is a trial: one more failure marks it down again at
// once. maxFails 0 turns passive marking off. It reports whether the member
// is now marked down.
func (m *Member) ConnectFailed(now time.Time, maxFails int, failTimeout time.Duration) bool {
	n := m.fails.Add(1)
	if maxFails <= 0 || int(n) < maxFails {
		return false
	}
	m.passiveUntil.Store(now.Add(failTimeout).UnixNano())
	return true
}

// ConnectSucceeded clears the consecutive failure count and any passive mark-down.
func (m *Member) ConnectSucceeded() {
	if m.fails.Load() != 0 {
		m.fails.Store(0)
	}
	if m.passiveUntil.Load() != 0 {
		m.passiveUntil.Store(0)
	}
}

// ConsecutiveFailures is the count of connection failures since the last success.
func (m *Member) ConsecutiveFailures() int { return int(m.fails.Load()) }

// FNV-1a, finished with splitmix64 so that close inputs spread.
func hashBytes(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return mix(h)
}

func hashString(s string) uint64 { return hashBytes([]byte(s)) }

func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
