// Package pooltable builds the lookup tables the datapath balances with: a
// weighted round-robin schedule and a Maglev table for ip_hash. Both are
// pure functions of the config, so every node with the same config builds
// the same table.
package pooltable

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// Schedule returns the weighted round-robin order, as indices into weights:
// IPVS's interleaved sequence, in which a member of weight w appears w/g
// times per cycle (g the weights' gcd), spread out rather than in runs.
func Schedule(weights []int) []int {
	g, maxW := 0, 0
	for _, w := range weights {
		if w <= 0 {
			continue
		}
		g = gcd(g, w)
		maxW = max(maxW, w)
	}
	if g == 0 {
		return nil
	}
	var out []int
	for cw := maxW; cw > 0; cw -= g {
		for i, w := range weights {
			if w >= cw {
				out = append(out, i)
			}
		}
	}
	return out
}

// Maglev builds a Maglev lookup table of the given prime size for members
// identified by keys, with weights (a member of weight 2 gets twice the
// slots of one of weight 1). Each slot holds an index into keys. Removing a
// member moves only about its share of slots, as Maglev promises.
func Maglev(keys []string, weights []int, size int) ([]int, error) {
	if size < 1 {
		return nil, fmt.Errorf("maglev table size %d", size)
	}
	n := len(keys)
	if n == 0 {
		return nil, nil
	}
	if len(weights) != n {
		return nil, fmt.Errorf("%d keys but %d weights", n, len(weights))
	}
	offset := make([]uint64, n)
	skip := make([]uint64, n)
	next := make([]uint64, n)
	turns := make([]int, n)
	g := 0
	for i, w := range weights {
		if w < 1 {
			return nil, fmt.Errorf("member %q has weight %d", keys[i], w)
		}
		g = gcd(g, w)
	}
	for i, k := range keys {
		sum := sha256.Sum256([]byte(k))
		offset[i] = binary.BigEndian.Uint64(sum[0:8]) % uint64(size)
		skip[i] = binary.BigEndian.Uint64(sum[8:16])%uint64(size-1) + 1
		turns[i] = weights[i] / g
	}
	table := make([]int, size)
	for i := range table {
		table[i] = -1
	}
	filled := 0
	for filled < size {
		for i := 0; i < n && filled < size; i++ {
			for t := 0; t < turns[i] && filled < size; t++ {
				// The member's next preferred slot that is still free.
				for {
					slot := (offset[i] + next[i]*skip[i]) % uint64(size)
					next[i]++
					if table[slot] < 0 {
						table[slot] = i
						filled++
						break
					}
				}
			}
		}
	}
	return table, nil
}
