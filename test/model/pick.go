package model

import (
	"encoding/binary"
	"net/netip"
)

// pick chooses a member for a new client with the pool's algorithm (README
// "Pool algorithms"). Every algorithm but IP hash takes the pool's next
// turn, whether or not it finds a member.
func (m *Model) pick(poolID uint32, p *packet) (uint32, bool) {
	pool := m.pools[poolID]
	if pool == nil {
		return 0, false
	}
	n := uint32(len(pool.Eligible))
	if n == 0 || n > maxMembersPerPool {
		return 0, false
	}
	// README: "A member that is down or full is skipped: its turn, slot or
	// share goes to the next member that can take the client": the table's
	// next few slots, then the pool's members in order from there.
	var start uint32
	switch pool.Algorithm {
	case WeightedRoundRobin:
		// README: "in turn over an interleaved schedule".
		start = m.turn(pool.ID)
		if id, ok := m.tablePick(pool, start); ok {
			return id, true
		}
	case IPHash:
		// README: "a Maglev lookup table ... indexed by a hash of the
		// client address" (the whole address: the prefix only groups
		// clients for persistence).
		start = ClientHash(p.src)
		if id, ok := m.tablePick(pool, start); ok {
			return id, true
		}
	case LeastConnection:
		return m.leastConn(pool, false)
	case WeightedLeastConnection:
		return m.leastConn(pool, true)
	default:
		// README: "round_robin (default) | in turn over the members that
		// take new clients".
		start = m.turn(pool.ID)
	}
	return m.firstUsable(pool.Eligible, start, n)
}

// turn takes a pool's next turn.
func (m *Model) turn(pool uint32) uint32 {
	t, _ := m.cursors.get(pool)
	m.cursors.set(pool, t+1)
	return t
}

// tablePick reads the pool's table at slot and the few slots after it,
// past members that cannot take the client.
func (m *Model) tablePick(pool *Pool, slot uint32) (uint32, bool) {
	return m.firstUsable(pool.Table, slot, pickProbes)
}

// firstUsable reads ids from start on, wrapping around, for at most probes
// ids, and returns the first usable member.
func (m *Model) firstUsable(ids []uint32, start, probes uint32) (uint32, bool) {
	size := uint32(len(ids))
	if size == 0 {
		return 0, false
	}
	for i := uint32(0); i < probes; i++ {
		if id := ids[(start+i)%size]; m.usable(id) {
			return id, true
		}
	}
	return 0, false
}

// usable: up and not full (README "A member takes new clients when it is
// enabled, healthy and not full").
func (m *Model) usable(id uint32) bool {
	mem := m.members[id]
	return mem != nil && mem.Up && !(mem.MaxConns > 0 && m.memberConnsGet(id) >= mem.MaxConns)
}

// leastConn: README "least_connection | the member with the fewest active
// connections; ties in turn"; "weighted_least_connection | the fewest active
// connections per unit of weight".
func (m *Model) leastConn(pool *Pool, weighted bool) (uint32, bool) {
	n := uint32(len(pool.Eligible))
	start := m.turn(pool.ID)
	var best uint32
	var bestConns, bestWeight uint64 = 0, 1
	found := false
	for i := uint32(0); i < n; i++ {
		k := (start + i) % n
		id := pool.Eligible[k]
		if !m.usable(id) {
			continue
		}
		conns := uint64(m.memberConnsGet(id))
		w := uint64(1)
		if weighted {
			w = 0
			if int(k) < len(pool.Weights) {
				w = uint64(pool.Weights[k])
			}
			if w == 0 {
				w = 1
			}
		}
		// conns/w < bestConns/bestWeight, strictly: the first in turn
		// order wins a tie.
		if !found || conns*bestWeight < bestConns*w {
			best, bestConns, bestWeight, found = id, conns, w, true
		}
	}
	return best, found
}

// ClientHash is the hash that indexes an IP-hash pool's Maglev table: the
// same on every node, so every node picks the same member. It is
// murmur3's finaliser over the exclusive or of the address's four 32-bit
// words, read in the machine's (little-endian) order from the address in
// network order; an IPv4 address fills the first word.
func ClientHash(a netip.Addr) uint32 { return fmix32(addrWords(a)) }

// addrWords is the exclusive or of a's four 32-bit words, read in the
// machine's (little-endian) order from the address in network order; an
// IPv4 address fills the first word.
func addrWords(a netip.Addr) uint32 {
	var b [16]byte
	if a.Is4() {
		v4 := a.As4()
		copy(b[:], v4[:])
	} else {
		b = a.As16()
	}
	le := binary.LittleEndian
	return le.Uint32(b[0:]) ^ le.Uint32(b[4:]) ^ le.Uint32(b[8:]) ^ le.Uint32(b[12:])
}

// fmix32 is murmur3's 32-bit finaliser.
func fmix32(h uint32) uint32 {
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}
