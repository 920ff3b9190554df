package pooltable

import (
	"fmt"
	"math"
	"testing"
)

func TestScheduleInterleavesByWeight(t *testing.T) {
	s := Schedule([]int{4, 3, 2})
	// IPVS's sequence for 4:3:2 is a a b a b c a b c.
	want := []int{0, 0, 1, 0, 1, 2, 0, 1, 2}
	if fmt.Sprint(s) != fmt.Sprint(want) {
		t.Fatalf("schedule %v, want %v", s, want)
	}
	if got := Schedule([]int{2, 2, 2}); fmt.Sprint(got) != "[0 1 2]" {
		t.Fatalf("equal weights reduce by their gcd: %v", got)
	}
	if got := Schedule(nil); got != nil {
		t.Fatalf("empty: %v", got)
	}
}

func keys(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("pool/10.0.0.%d:80", i+1)
	}
	return out
}

func ones(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = 1
	}
	return out
}

func TestMaglevBalancedAndDeterministic(t *testing.T) {
	const size = 65537
	a, err := Maglev(keys(7), ones(7), size)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Maglev(keys(7), ones(7), size)
	for i := range a {
		if a[i] != b[i] {
			t.Fatal("the same members gave two different tables")
		}
	}
	count := make([]int, 7)
	for _, m := range a {
		count[m]++
	}
	for i, c := range count {
		if d := math.Abs(float64(c)-size/7.0) / (size / 7.0); d > 0.01 {
			t.Errorf("member %d holds %d slots, %.1f%% off an even share", i, c, d*100)
		}
	}
}

func TestMaglevWeights(t *testing.T) {
	table, err := Maglev(keys(3), []int{1, 2, 3}, 65537)
	if err != nil {
		t.Fatal(err)
	}
	count := make([]int, 3)
	for _, m := range table {
		count[m]++
	}
	for i, w := range []int{1, 2, 3} {
		share := float64(count[i]) / 65537
		if d := math.Abs(share - float64(w)/6); d > 0.01 {
			t.Errorf("member %d of weight %d holds %.3f of the table, want %.3f", i, w, share, float64(w)/6)
		}
	}
}

// Removing one of N members moves about 1/N of the table: that member's own
// slots, and few others.
func TestMaglevMinimalDisruption(t *testing.T) {
	const n, size = 10, 65537
	before, _ := Maglev(keys(n), ones(n), size)
	ks := keys(n)
	removed := 3
	after, _ := Maglev(append(append([]string{}, ks[:removed]...), ks[removed+1:]...), ones(n-1), size)
	// after's indices skip the removed member: map them back.
	moved, others := 0, 0
	for i := range before {
		a := after[i]
		if a >= removed {
			a++
		}
		if a != before[i] {
			moved++
			if before[i] != removed {
				others++
			}
		}
	}
	frac := float64(moved) / size
	if frac < 1.0/n || frac > 1.0/n+0.03 {
		t.Fatalf("removing 1 of %d moved %.3f of the table, want about %.3f", n, frac, 1.0/n)
	}
	t.Logf("moved %.2f%% of slots (%.2f%% not on the removed member)", frac*100, float64(others)/size*100)
}

func TestMaglevErrors(t *testing.T) {
	if _, err := Maglev(keys(2), []int{1}, 7); err == nil {
		t.Fatal("mismatched weights accepted")
	}
	if _, err := Maglev(keys(2), []int{1, 0}, 7); err == nil {
		t.Fatal("zero weight accepted")
	}
}
