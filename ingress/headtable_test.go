package ingress

import (
	"math/rand/v2"
	"testing"
)

// TestHeadTableMatchesAMap: sets, replacements and deletes of hashes that
// crowd a few home slots (long probe runs that wrap around the end, and
// deletions that must move entries back) answer as a map does, through
// growth and a clear.
func TestHeadTableMatchesAMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	var tbl headTable
	want := map[uint64]bindEntry{}
	hashes := make([]uint64, 600)
	for i := range hashes {
		// Low bits from a handful of values, including the last slots:
		// runs pile up and wrap.
		hashes[i] = rng.Uint64()<<12 | uint64([]int{0, 1, 2, 13, 14, 15, 1023}[rng.IntN(7)])
	}
	check := func(step int) {
		t.Helper()
		if tbl.len() != len(want) {
			t.Fatalf("step %d: len %d, want %d", step, tbl.len(), len(want))
		}
		for _, h := range hashes {
			got, w := tbl.get(h), want[h]
			if _, ok := want[h]; !ok {
				if got != nil {
					t.Fatalf("step %d: hash %x found after its delete", step, h)
				}
				continue
			}
			if got == nil || *got != w || !got.used() {
				t.Fatalf("step %d: hash %x = %+v, want %+v", step, h, got, w)
			}
		}
	}
	for step := range 20000 {
		h := hashes[rng.IntN(len(hashes))]
		if rng.IntN(3) == 0 {
			tbl.del(h)
			delete(want, h)
		} else {
			e := bindEntry{off: uint32(step + 1), next: -1}
			tbl.set(h, e)
			want[h] = e
		}
		if step%997 == 0 {
			check(step)
		}
		if step == 10000 {
			tbl.clear()
			clear(want)
		}
	}
	check(-1)
	seen := 0
	tbl.each(func(e bindEntry) { seen++ })
	if seen != len(want) {
		t.Fatalf("each saw %d entries, want %d", seen, len(want))
	}
}
