package wallet

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestHeldMatchesAMap: runs of act_ids held until a poll answer has as the
// map of act_id to the last poll that holds it did, through adds (repeats
// within and across runs), releases in and out of order of the polls,
// merges of too many runs (the model merges them the same way: one run,
// each act_id once, until the last of their polls) and clears; len counts
// an act_id once per run that holds it.
func TestHeldMatchesAMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	var h held
	want := map[uint64]uint64{} // act -> the last poll that releases it
	count := 0                  // act_ids over the runs held
	type run struct {
		gen  uint64
		acts []uint64
	}
	var runs []run
	gen := uint64(1)
	merged := 0
	for step := range 5000 {
		r := rng.IntN(100)
		if (step/1000)%2 == 1 && r >= 60 && r < 99 {
			// Every other thousand steps polls are rare (as while Redis
			// fails): runs pile up past heldRunsMax and merge.
			r = rng.IntN(60)
			if r < 2 {
				r = 60
			}
		}
		switch {
		case r < 60:
			acts := make([]uint64, rng.IntN(40))
			for i := range acts {
				acts[i] = uint64(rng.IntN(500))
			}
			g := gen + uint64(rng.IntN(3)) // hand-overs may name a later poll
			if len(acts) > 0 {             // an empty hand-over holds nothing
				runs = append(runs, run{g, append([]uint64(nil), acts...)})
			}
			h.add(g, acts)
			if len(runs) > heldRunsMax {
				var all []uint64
				var last uint64
				for _, rn := range runs {
					all = append(all, rn.acts...)
					last = max(last, rn.gen)
				}
				slices.Sort(all)
				runs = []run{{last, slices.Compact(all)}}
				merged++
			}
		case r < 95:
			gen++
			h.release(gen - 1)
			kept := runs[:0]
			for _, rn := range runs {
				if rn.gen > gen-1 {
					kept = append(kept, rn)
				}
			}
			runs = kept
		default:
			h.clear()
			runs = nil
		}
		clear(want)
		count = 0
		for _, rn := range runs {
			count += len(rn.acts)
			for _, a := range rn.acts {
				want[a] = max(want[a], rn.gen)
			}
		}
		if h.len() != count {
			t.Fatalf("step %d: len %d, want %d", step, h.len(), count)
		}
		if len(h.runs) != len(runs) {
			t.Fatalf("step %d: %d runs, want %d", step, len(h.runs), len(runs))
		}
		for a := range uint64(500) {
			if _, w := want[a]; h.has(a) != w {
				t.Fatalf("step %d: has(%d) = %v, want %v", step, a, h.has(a), w)
			}
		}
	}
	if merged == 0 {
		t.Fatal("no merge of runs happened: the test does not reach heldRunsMax")
	}
}
