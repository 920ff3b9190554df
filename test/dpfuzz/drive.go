package dpfuzz

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"
)

// CorpusDir is where the native fuzz target keeps its regression seeds,
// relative to this package.
const CorpusDir = "testdata/fuzz/FuzzDatapath"

// RandomInput draws an input of ops operations.
func RandomInput(rng *rand.Rand, ops int) []byte {
	b := make([]byte, headerSize+ops*opSize)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// Ops is how many operations an input holds.
func Ops(in []byte) int {
	if len(in) <= headerSize {
		return 0
	}
	return min((len(in)-headerSize)/opSize, maxOps)
}

// Minimize shrinks an input that makes the datapath and the model disagree:
// it removes runs of operations, halving the run length, for as long as a
// disagreement remains, within budget. It returns the smallest input found
// and its disagreement.
func (w *World) Minimize(in []byte, mm *Mismatch, budget time.Duration) ([]byte, *Mismatch, error) {
	deadline := time.Now().Add(budget)
	best, bestMM := in, mm
	if mm != nil && mm.Input != nil {
		best = mm.Input // operations after the failing one never ran
	}
	try := func(cand []byte) (bool, error) {
		_, m, err := w.Run(cand)
		if err != nil {
			return false, err
		}
		if m != nil {
			best, bestMM = m.Input, m
			return true, nil
		}
		return false, nil
	}
	for chunk := Ops(best) / 2; chunk >= 1 && time.Now().Before(deadline); chunk /= 2 {
		for start := 0; start < Ops(best) && time.Now().Before(deadline); {
			n := Ops(best)
			end := min(start+chunk, n)
			cand := append(append([]byte{}, best[:headerSize+start*opSize]...), best[headerSize+end*opSize:headerSize+n*opSize]...)
			ok, err := try(cand)
			if err != nil {
				return best, bestMM, err
			}
			if !ok {
				start += chunk
			}
		}
	}
	// Simplify what is left: zero each operation's trailing bytes (its
	// mangle and the finer choices) where that keeps the disagreement.
	for i := 0; i < Ops(best) && time.Now().Before(deadline); i++ {
		for _, from := range []int{8, 4} {
			cand := append([]byte{}, best...)
			op := cand[headerSize+i*opSize : headerSize+(i+1)*opSize]
			changed := false
			for j := from; j < opSize; j++ {
				changed = changed || op[j] != 0
				op[j] = 0
			}
			if !changed {
				continue
			}
			if ok, err := try(cand); err != nil {
				return best, bestMM, err
			} else if ok {
				break
			}
		}
	}
	return best, bestMM, nil
}

// SaveSeed writes an input into the native fuzz target's corpus, in the
// format 'go test' reads, and returns its path.
func SaveSeed(dir string, in []byte) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	sum := sha256.Sum256(in)
	path := filepath.Join(dir, hex.EncodeToString(sum[:8]))
	body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", in)
	return path, os.WriteFile(path, []byte(body), 0o644)
}
