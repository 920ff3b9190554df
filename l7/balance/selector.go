package balance

import (
	"fmt"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Pick is what a Selector knows about the request it chooses for.
type Pick struct {
	// Client is the address of the TCP peer (not X-Forwarded-For).
	Client netip.Addr
	// Now is the time health is judged at.
	Now time.Time
	// Exclude lists members already tried for this request.
	Exclude []*Member
}

func (p *Pick) excluded(m *Member) bool {
	for _, e := range p.Exclude {
		if e == m {
			return true
		}
	}
	return false
}

// ok reports whether m may take a new client for this pick.
func (p *Pick) ok(m *Member) bool { return m.Selectable(p.Now) && !p.excluded(m) }

// Selector is one pool algorithm. Select returns a selectable member that is
// not excluded, or nil when there is none. The members slice is the pool's
// and never changes for the life of the selector.
type Selector interface {
	Select(members []*Member, p *Pick) *Member
}

// Algorithm names, as in the config.
const (
	RoundRobin              = "round_robin"
	WeightedRoundRobin      = "weighted_round_robin"
	LeastConnection         = "least_connection"
	WeightedLeastConnection = "weighted_least_connection"
	IPHash                  = "ip_hash"
)

// New returns the selector for an algorithm name, for n members.
func New(algorithm string, n int) (Selector, error) {
	switch algorithm {
	case RoundRobin, "":
		return &roundRobin{}, nil
	case WeightedRoundRobin:
		return &weightedRoundRobin{current: make([]int, n)}, nil
	case LeastConnection:
		return &leastConn{}, nil
	case WeightedLeastConnection:
		return &leastConn{weighted: true}, nil
	case IPHash:
		return ipHash{}, nil
	}
	return nil, fmt.Errorf("unknown pool algorithm %q", algorithm)
}

// roundRobin takes members in turn, skipping those that cannot take a client.
type roundRobin struct{ next atomic.Uint64 }

func (s *roundRobin) Select(members []*Member, p *Pick) *Member {
	n := uint64(len(members))
	if n == 0 {
		return nil
	}
	start := s.next.Add(1) - 1
	for i := uint64(0); i < n; i++ {
		if m := members[(start+i)%n]; p.ok(m) {
			return m
		}
	}
	return nil
}

// weightedRoundRobin is nginx's smooth weighted round robin: each member
// gains its weight every round, the richest is chosen and pays the total.
// Members that cannot take a client sit the round out.
type weightedRoundRobin struct {
	mu      sync.Mutex
	current []int
}

func (s *weightedRoundRobin) Select(members []*Member, p *Pick) *Member {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.current) != len(members) {
		s.current = make([]int, len(members))
	}
	best, total := -1, 0
	for i, m := range members {
		if !p.ok(m) {
			continue
		}
		s.current[i] += m.Weight
		total += m.Weight
		if best < 0 || s.current[i] > s.current[best] {
			best = i
		}
	}
	if best < 0 {
		return nil
	}
	s.current[best] -= total
	return members[best]
}

// leastConn picks the member with the fewest requests in flight (divided by
// its weight when weighted). Ties go round robin so that an idle pool still
// spreads its clients.
type leastConn struct {
	weighted bool
	next     atomic.Uint64
}

func (s *leastConn) Select(members []*Member, p *Pick) *Member {
	n := uint64(len(members))
	if n == 0 {
		return nil
	}
	start := s.next.Add(1) - 1
	var best *Member
	var bestConns int64
	for i := uint64(0); i < n; i++ {
		m := members[(start+i)%n]
		if !p.ok(m) {
			continue
		}
		c := m.Conns()
		if best == nil {
			best, bestConns = m, c
			continue
		}
		var less bool
		if s.weighted {
			// c/w < bc/bw without division.
			less = c*int64(best.Weight) < bestConns*int64(m.Weight)
		} else {
			less = c < bestConns
		}
		if less {
			best, bestConns = m, c
		}
	}
	return best
}

// ipHash maps a client address to a member with weighted rendezvous
// (highest random weight) hashing: every member scores the client, the best
// score wins. The result depends only on the client and the member
// addresses and weights, so every node with the same config agrees; when a
// member goes away only its own clients move, each to its next best member.
type ipHash struct{}

func (ipHash) Select(members []*Member, p *Pick) *Member {
	a := p.Client.Unmap().As16()
	ch := hashBytes(a[:])
	var best *Member
	bestScore := math.Inf(-1)
	for _, m := range members {
		if !p.ok(m) {
			continue
		}
		if s := score(ch, m); s > bestScore {
			best, bestScore = m, s
		}
	}
	return best
}

// score is the weighted rendezvous score w / -ln(u), u uniform in (0,1).
func score(client uint64, m *Member) float64 {
	h := mix(client ^ m.hash)
	u := (float64(h>>11) + 0.5) / (1 << 53)
	return float64(m.Weight) / -math.Log(u)
}
