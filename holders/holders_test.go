package holders

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"redrain/ledger"
)

func TestFamilyOf(t *testing.T) {
	for _, c := range []struct {
		asset ledger.Asset
		fam   Family
		ok    bool
	}{
		{ledger.AssetCash, Money, true},
		{ledger.CoinAsset("gold"), Coin, true},
		{ledger.ItemAsset("card-7"), Item, true},
		{"coin:", 0, false},
		{"item:", 0, false},
		{"cash:x", 0, false},
		{"", 0, false},
		{"points:1", 0, false},
	} {
		fam, ok := FamilyOf(c.asset)
		if fam != c.fam || ok != c.ok {
			t.Errorf("FamilyOf(%q) = %v, %v; want %v, %v", c.asset, fam, ok, c.fam, c.ok)
		}
		if ok && fam.String() != c.asset.Kind() {
			t.Errorf("%v.String() = %q; the asset's kind is %q", fam, fam.String(), c.asset.Kind())
		}
	}
	if Family(Families).Valid() || Family(7).String() != "family(7)" {
		t.Errorf("family 3 is valid or named %q", Family(7).String())
	}
}

// build builds s from a map of held user families.
func build(t *testing.T, s *Set, held map[Change]bool) {
	t.Helper()
	if err := s.Build(scanOf(held)); err != nil {
		t.Fatalf("Build: %v", err)
	}
}

func scanOf(held map[Change]bool) func(func(uint64, Family) bool) error {
	return func(yield func(uint64, Family) bool) error {
		for c, ok := range held {
			if ok && !yield(c.Act, c.Family) {
				return nil
			}
		}
		return nil
	}
}

func TestUnknownUntilBuilt(t *testing.T) {
	var s Set // the zero value
	if a := s.Contains(1, Money); a != Unknown {
		t.Fatalf("zero Set: Contains = %v", a)
	}
	if err := s.Add(1, Money); err != nil {
		t.Fatal(err)
	}
	if a, b := s.Contains(1, Money), s.Any(2); a != Unknown || b != Unknown {
		t.Fatalf("before Build: %v, %v; want unknown", a, b)
	}
	if st := s.Stats(); st.Ready {
		t.Fatal("ready before Build")
	}
	// Build replaces what was applied before it: the store is the truth.
	build(t, &s, map[Change]bool{{2, Coin}: true})
	if a, b, c := s.Contains(1, Money), s.Contains(2, Coin), s.Any(2); a != No || b != Yes || c != Yes {
		t.Fatalf("after Build: %v %v %v", a, b, c)
	}
	s.Invalidate()
	if a := s.Contains(2, Coin); a != Unknown {
		t.Fatalf("after Invalidate: %v", a)
	}
	if err := s.Add(3, Item); err != nil {
		t.Fatal(err)
	}
	if a := s.Contains(3, Item); a != Unknown {
		t.Fatalf("invalidated, then applied: %v", a)
	}
	build(t, &s, map[Change]bool{{3, Item}: true})
	if a := s.Contains(3, Item); a != Yes {
		t.Fatalf("rebuilt: %v", a)
	}
}

func TestActRange(t *testing.T) {
	s := New()
	build(t, s, map[Change]bool{{MaxAct, Money}: true, {MaxAct + 1, Money}: true, {1 << 40, Item}: true})
	if st := s.Stats(); st.Beyond != 2 || st.Holders != [Families]uint64{1, 0, 0} {
		t.Fatalf("Build of two act_ids beyond the index: %+v", st)
	}
	if a := s.Contains(MaxAct, Money); a != Yes {
		t.Fatalf("Contains(MaxAct) = %v", a)
	}
	for _, act := range []uint64{MaxAct + 1, 1 << 40, ^uint64(0)} {
		if a, b := s.Contains(act, Money), s.Any(act); a != Unknown || b != Unknown {
			t.Errorf("Contains/Any(%d) = %v/%v; want unknown", act, a, b)
		}
		if err := s.Add(act, Money); !errors.Is(err, ErrActRange) {
			t.Errorf("Add(%d) = %v; want ErrActRange", act, err)
		}
		if err := s.Remove(act, Money); !errors.Is(err, ErrActRange) {
			t.Errorf("Remove(%d) = %v; want ErrActRange", act, err)
		}
	}
	// One bad change refuses the whole batch.
	err := s.Apply([]Change{{5, Money}, {MaxAct + 1, Coin}}, []Change{{MaxAct, Money}})
	if !errors.Is(err, ErrActRange) {
		t.Fatalf("batch with act_id 2^32: %v", err)
	}
	if a, b := s.Contains(5, Money), s.Contains(MaxAct, Money); a != No || b != Yes {
		t.Fatalf("a refused batch changed the set: %v %v", a, b)
	}
	if a := s.Contains(5, Families); a != Unknown {
		t.Fatalf("unknown family: %v", a)
	}
	if err := s.Add(5, Families); !errors.Is(err, ErrFamily) {
		t.Fatalf("Add of an unknown family: %v", err)
	}
	if err := s.Apply([]Change{{5, Coin}}, []Change{{5, Coin}}); !errors.Is(err, ErrConflict) {
		t.Fatalf("add and remove of one user's family: %v", err)
	}
	if err := s.Apply([]Change{{5, Coin}}, []Change{{5, Item}}); err != nil {
		t.Fatalf("add and remove of two families: %v", err)
	}
	if a, b := s.Contains(5, Coin), s.Contains(5, Item); a != Yes || b != No {
		t.Fatalf("after the batch: %v %v", a, b)
	}
	// A Build that fails, or meets an unknown family, changes nothing.
	scanErr := errors.New("store down")
	if err := s.Build(func(func(uint64, Family) bool) error { return scanErr }); err != scanErr {
		t.Fatalf("failed scan: %v", err)
	}
	err = s.Build(func(yield func(uint64, Family) bool) error {
		if yield(9, Money) && yield(9, Families) {
			t.Error("yield asked for more after an unknown family")
		}
		return nil
	})
	if !errors.Is(err, ErrFamily) {
		t.Fatalf("scan with an unknown family: %v", err)
	}
	if a, b := s.Contains(5, Coin), s.Contains(9, Money); a != Yes || b != No {
		t.Fatalf("a failed Build changed the set: %v %v", a, b)
	}
}

func TestContainsDoesNotAllocate(t *testing.T) {
	s := New()
	build(t, s, map[Change]bool{{1, Money}: true, {70000, Coin}: true})
	var sink Answer
	n := testing.AllocsPerRun(1000, func() {
		sink = s.Contains(1, Money) + s.Contains(70000, Coin) + s.Contains(3, Item) + s.Any(1<<33) + s.Snapshot().Any(70000)
	})
	if n != 0 {
		t.Fatalf("%v allocations per lookup", n)
	}
	_ = sink
}

// model is the store's truth: every user family held.
type model map[Change]bool

// probes are the act_ids a property test draws from: the first blocks,
// the edges of 16-bit containers, a container grown to thousands of
// users (array, bitmap and run containers), the top of the 32-bit index
// and beyond it.
func probes() []uint64 {
	var acts []uint64
	for a := uint64(0); a < 200; a++ {
		acts = append(acts, a)
	}
	for _, edge := range []uint64{1 << 16, 2 << 16, 1 << 20, MaxAct - 300} {
		for a := edge - 8; a < edge+8; a++ {
			acts = append(acts, a)
		}
	}
	for a := uint64(3 << 16); a < 3<<16+6000; a++ {
		acts = append(acts, a) // bulk range
	}
	for a := uint64(MaxAct - 8); a < MaxAct+8; a++ {
		acts = append(acts, a)
	}
	return acts
}

// checkAll compares every probe and family, Any, and the holder counts.
func checkAll(t *testing.T, s *Set, m model, acts []uint64, ready bool, step int) {
	t.Helper()
	v := s.Snapshot()
	var counts [Families]uint64
	var held [Families][]uint64
	for c, ok := range m {
		if ok && c.Act <= MaxAct {
			counts[c.Family]++
			held[c.Family] = append(held[c.Family], c.Act)
		}
	}
	// Holders lists exactly the model's, ascending (nothing when not ready).
	for f := Family(0); f < Families; f++ {
		want := held[f]
		if slices.Sort(want); !ready {
			want = nil
		}
		if got := slices.Collect(v.Holders(f)); !slices.Equal(got, want) || v.Ready() != ready {
			t.Fatalf("step %d: Holders(%v) = %d acts, want %d (ready %v)", step, f, len(got), len(want), ready)
		}
	}
	for _, act := range acts {
		anyHeld := false
		for f := Family(0); f < Families; f++ {
			want := No
			if m[Change{act, f}] {
				want, anyHeld = Yes, true
			}
			if !ready || act > MaxAct {
				want = Unknown
			}
			if got := v.Contains(act, f); got != want {
				t.Fatalf("step %d: Contains(%d, %v) = %v; want %v", step, act, f, got, want)
			}
		}
		want := No
		if anyHeld {
			want = Yes
		}
		if !ready || act > MaxAct {
			want = Unknown
		}
		if got := v.Any(act); got != want {
			t.Fatalf("step %d: Any(%d) = %v; want %v", step, act, got, want)
		}
	}
	if st := s.Stats(); ready && st.Holders != counts {
		t.Fatalf("step %d: holders %v; model %v", step, st.Holders, counts)
	}
}

// TestMatchesModel applies random batches (adds, removes, bulk ranges,
// refused batches, rebuilds, invalidations) and compares the set with a
// map after each step: no false positive, no false negative.
func TestMatchesModel(t *testing.T) {
	acts := probes()
	for seed := uint64(1); seed <= 6; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 12))
			s, m := New(), model{}
			ready := false
			for step := 0; step < 160; step++ {
				var adds, removes []Change
				seen := map[Change]bool{}
				pick := func() Change {
					for {
						c := Change{acts[rng.IntN(len(acts))], Family(rng.IntN(Families))}
						if !seen[c] {
							seen[c] = true
							return c
						}
					}
				}
				switch op := rng.IntN(20); {
				case op == 0:
					build(t, s, m)
					ready = true
				case op == 1:
					s.Invalidate()
					ready = false
				case op <= 3: // a bulk range: array, bitmap, run containers
					lo := uint64(3<<16) + uint64(rng.IntN(3000))
					hi := lo + uint64(rng.IntN(3000))
					fam, held := Family(rng.IntN(Families)), rng.IntN(2) == 0
					for a := lo; a < hi; a++ {
						if held {
							adds = append(adds, Change{a, fam})
						} else {
							removes = append(removes, Change{a, fam})
						}
					}
				default:
					for n := rng.IntN(40); n > 0; n-- {
						c := pick()
						if rng.IntN(2) == 0 {
							adds = append(adds, c)
						} else {
							removes = append(removes, c)
						}
					}
				}
				if adds == nil && removes == nil {
					checkAll(t, s, m, acts, ready, step)
					continue
				}
				// Acts beyond the index never reach the set; the store
				// (model) may hold them.
				var inAdds, inRemoves []Change
				for _, c := range adds {
					if c.Act > MaxAct {
						m[c] = true
					} else {
						inAdds = append(inAdds, c)
					}
				}
				for _, c := range removes {
					if c.Act > MaxAct {
						delete(m, c)
					} else {
						inRemoves = append(inRemoves, c)
					}
				}
				// Some batches are refused whole: out of range, or a conflict.
				var wantErr error
				if rng.IntN(8) == 0 && len(inAdds) > 0 {
					if rng.IntN(2) == 0 {
						inAdds = append(inAdds, Change{MaxAct + 1 + rng.Uint64N(1<<20), Coin})
						wantErr = ErrActRange
					} else {
						inRemoves = append(inRemoves, inAdds[rng.IntN(len(inAdds))])
						wantErr = ErrConflict
					}
				}
				err := s.Apply(inAdds, inRemoves)
				if !errors.Is(err, wantErr) || (wantErr == nil) != (err == nil) {
					t.Fatalf("step %d: Apply = %v; want %v", step, err, wantErr)
				}
				if err == nil {
					for _, c := range inAdds {
						m[c] = true
					}
					for _, c := range inRemoves {
						delete(m, c)
					}
				}
				checkAll(t, s, m, acts, ready, step)
			}
		})
	}
}

// TestConcurrentReaders runs readers without a lock while one writer
// applies batches and rebuilds: every batch moves tokens (a user's family
// held in one place and not the other), and a reader's snapshot must see
// each token in exactly one place, so a batch is never seen half applied.
func TestConcurrentReaders(t *testing.T) {
	const tokens = 64
	// Token i moves between two users and, for odd i, two families; the
	// users are 70,000 apart (different containers).
	places := func(i int) [2]Change {
		a := Change{uint64(i*37 + 1), Money}
		b := Change{a.Act + 70000, Money}
		if i%2 == 1 {
			b.Family = Item
		}
		return [2]Change{a, b}
	}
	s := New()
	store := model{}
	for i := 0; i < tokens; i++ {
		store[places(i)[0]] = true
	}
	build(t, s, store)

	var done atomic.Bool
	var wg sync.WaitGroup
	var reads atomic.Int64
	for r := 0; r < 4; r++ {
		wg.Go(func() {
			for !done.Load() {
				v := s.Snapshot()
				for i := 0; i < tokens; i++ {
					p := places(i)
					x, y := v.Contains(p[0].Act, p[0].Family), v.Contains(p[1].Act, p[1].Family)
					if (x == Yes) == (y == Yes) || x == Unknown || y == Unknown {
						t.Errorf("token %d seen as %v at %v and %v at %v", i, x, p[0], y, p[1])
						return
					}
				}
				if s.Contains(MaxAct+1, Money) != Unknown {
					t.Error("act_id beyond the index answered")
					return
				}
				reads.Add(1)
			}
		})
	}
	rng := rand.New(rand.NewPCG(7, 7))
	for b := 0; b < 3000; b++ {
		var adds, removes []Change
		for _, i := range rng.Perm(tokens)[:1+rng.IntN(tokens)] {
			p := places(i)
			from, to := p[0], p[1]
			if !store[from] {
				from, to = to, from
			}
			delete(store, from)
			store[to] = true
			adds, removes = append(adds, to), append(removes, from)
		}
		if err := s.Apply(adds, removes); err != nil {
			t.Fatal(err)
		}
		if b%500 == 250 {
			build(t, s, store)
		}
		if b%64 == 0 {
			runtime.Gosched()
		}
	}
	done.Store(true)
	wg.Wait()
	checkAll(t, s, store, []uint64{1, 38, 70001, 70038}, true, -1)
	t.Logf("%d snapshots read during 3000 batches", reads.Load())
}

// TestBuildWhileApplying scans a store that the writer changes during the
// scan (store first, then Apply, as booking does): the built set equals
// the store at the end, whatever the interleaving.
func TestBuildWhileApplying(t *testing.T) {
	const users = 3000
	for seed := uint64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 99))
			var mu sync.Mutex
			store := model{}
			for a := uint64(0); a < users; a++ {
				if rng.IntN(3) == 0 {
					store[Change{a, Family(a % Families)}] = true
				}
			}
			s := New()
			writer := func(batches int, rng *rand.Rand) {
				for b := 0; b < batches; b++ {
					var adds, removes []Change
					seen := map[Change]bool{}
					mu.Lock()
					for n := 1 + rng.IntN(30); n > 0; n-- {
						c := Change{rng.Uint64N(users), Family(rng.IntN(Families))}
						if seen[c] {
							continue
						}
						seen[c] = true
						if store[c] {
							delete(store, c)
							removes = append(removes, c)
						} else {
							store[c] = true
							adds = append(adds, c)
						}
					}
					mu.Unlock()
					if err := s.Apply(adds, removes); err != nil {
						t.Error(err)
						return
					}
					if b%8 == 0 {
						runtime.Gosched()
					}
				}
			}
			// The scan reads each key under the store's lock, in act_id
			// order, and lets the writer run between keys.
			scan := func(yield func(uint64, Family) bool) error {
				for a := uint64(0); a < users; a++ {
					for f := Family(0); f < Families; f++ {
						mu.Lock()
						held := store[Change{a, f}]
						mu.Unlock()
						if held && !yield(a, f) {
							return nil
						}
					}
					if a%50 == 0 {
						runtime.Gosched()
					}
				}
				return nil
			}
			for round := 0; round < 3; round++ {
				var wg sync.WaitGroup
				wg.Go(func() { writer(300, rand.New(rand.NewPCG(seed, uint64(round)))) })
				if err := s.Build(scan); err != nil {
					t.Fatal(err)
				}
				wg.Wait()
				var acts []uint64
				for a := uint64(0); a < users; a++ {
					acts = append(acts, a)
				}
				checkAll(t, s, store, acts, true, round)
			}
		})
	}
}

// TestRunOptimizedAfterBuild: a dense range built is a few run
// containers, not bitmaps.
func TestRunOptimizedAfterBuild(t *testing.T) {
	s := New()
	const n = 1 << 20
	err := s.Build(func(yield func(uint64, Family) bool) error {
		for a := uint64(1); a <= n; a++ {
			if !yield(a, Money) {
				return nil
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if st.Holders[Money] != n || st.Containers != 17 || st.SerializedBytes > 1024 {
		t.Fatalf("dense 1..2^20: %+v (want 17 run containers, under 1 KiB)", st)
	}
	for _, a := range []uint64{0, 1, n, n + 1} {
		want := No
		if a >= 1 && a <= n {
			want = Yes
		}
		if got := s.Contains(a, Money); got != want {
			t.Errorf("Contains(%d) = %v; want %v", a, got, want)
		}
	}
}

// TestApplyTakesRepeatedAdds: a batch may add a user and family more than
// once (the wallet's Feed adds a user per grant booked): the set holds it
// once, and a repeat still conflicts with a remove of the same pair.
func TestApplyTakesRepeatedAdds(t *testing.T) {
	s := New()
	build(t, s, map[Change]bool{})
	a, b := Change{70_001, 0}, Change{70_002, 1}
	if err := s.Apply([]Change{a, b, a, a, b}, nil); err != nil {
		t.Fatalf("Apply with repeated adds: %v", err)
	}
	for _, c := range []Change{a, b} {
		if got := s.Contains(c.Act, c.Family); got != Yes {
			t.Errorf("Contains(%v) = %v after adding it", c, got)
		}
	}
	if got := s.Contains(a.Act, b.Family); got != No {
		t.Errorf("Contains(%d, %v) = %v, never added", a.Act, b.Family, got)
	}
	if st := s.Stats(); st.Holders[0] != 1 || st.Holders[1] != 1 {
		t.Errorf("Stats after repeated adds of two users: %+v", st)
	}
	if err := s.Apply([]Change{b, b}, []Change{b}); !errors.Is(err, ErrConflict) {
		t.Errorf("Apply(repeated add, remove of it) = %v, want ErrConflict", err)
	}
	if err := s.Apply(nil, []Change{a}); err != nil {
		t.Fatal(err)
	}
	if got := s.Contains(a.Act, a.Family); got != No {
		t.Errorf("Contains(%v) = %v after one remove of a pair added thrice", a, got)
	}
}
