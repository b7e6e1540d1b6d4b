package ledger_test

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"redrain/ledger"
	"redrain/tokens"
)

func TestTakeLease(t *testing.T) {
	for _, tc := range []struct {
		name       string
		b          ledger.Budget
		want       int64
		wantAmount int64 // 0: no lease
	}{
		{"fits", ledger.Budget{ID: "b", Total: 100}, 30, 30},
		{"exactly all", ledger.Budget{ID: "b", Total: 100}, 100, 100},
		{"more than remains", ledger.Budget{ID: "b", Total: 100, Leased: 80}, 30, 20},
		{"returned is leasable again", ledger.Budget{ID: "b", Total: 100, Leased: 100, Returned: 15}, 30, 15},
		{"exhausted", ledger.Budget{ID: "b", Total: 100, Leased: 100}, 30, 0},
		{"empty budget", ledger.Budget{ID: "b"}, 30, 0},
		{"zero want", ledger.Budget{ID: "b", Total: 100}, 0, 0},
		{"negative want", ledger.Budget{ID: "b", Total: 100}, -5, 0},
		{"max", ledger.Budget{ID: "b", Total: math.MaxInt64}, math.MaxInt64, math.MaxInt64},
	} {
		b := tc.b
		b.NextLease = 7
		remaining := b.Remaining()
		l := b.TakeLease(tc.want, "node-1", 99)
		if tc.wantAmount == 0 {
			if l != nil || b != (ledger.Budget{ID: "b", Total: tc.b.Total, Leased: tc.b.Leased, Returned: tc.b.Returned, NextLease: 7}) {
				t.Errorf("%s: TakeLease(%d) = %+v, budget %+v, want nil and no change", tc.name, tc.want, l, b)
			}
			continue
		}
		want := ledger.Lease{BudgetID: "b", ID: 7, Amount: tc.wantAmount, Owner: "node-1", Incarnation: 99,
			BudgetOut: tc.b.Leased + tc.wantAmount - tc.b.Returned, BudgetTotal: tc.b.Total}
		if l == nil || *l != want {
			t.Errorf("%s: TakeLease(%d) = %+v, want %+v", tc.name, tc.want, l, want)
			continue
		}
		if b.Leased != tc.b.Leased+tc.wantAmount || b.NextLease != 8 || b.Remaining() != remaining-tc.wantAmount {
			t.Errorf("%s: after TakeLease(%d): %+v", tc.name, tc.want, b)
		}
		if err := b.Check(); err != nil {
			t.Errorf("%s: after TakeLease(%d): Check() = %v", tc.name, tc.want, err)
		}
	}
}

func TestLeaseIDsStartAtOne(t *testing.T) {
	// A fresh budget, as campaign setup creates it: NextLease is zero. Lease
	// id 0 would read as "unattributed" on an entry, so it is never handed out.
	b := &ledger.Budget{ID: "b", Total: 100}
	for want := uint64(1); want <= 3; want++ {
		if l := b.TakeLease(10, "n", 1); l == nil || l.ID != want {
			t.Fatalf("TakeLease on a fresh budget: lease %+v, want id %d", l, want)
		}
	}
	if b.NextLease != 4 {
		t.Errorf("NextLease = %d after three leases, want 4", b.NextLease)
	}
	if err := b.CloseLease(&ledger.Lease{BudgetID: "b", ID: 0, Amount: 10}, 0, 0); !errors.Is(err, ledger.ErrInvariant) {
		t.Errorf("CloseLease(lease 0) = %v, want ErrInvariant", err)
	}
}

// TestTakeLeaseNeverExceedsRemaining takes and closes leases at random.
func TestTakeLeaseNeverExceedsRemaining(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	b := &ledger.Budget{ID: "b", Asset: ledger.AssetCash, Total: 10_000}
	var open []*ledger.Lease
	var issuedSum int64
	for step := range 5000 {
		if rng.IntN(3) > 0 {
			remaining := b.Remaining()
			want := rng.Int64N(3000) - 100
			l := b.TakeLease(want, "n", 1)
			switch {
			case l == nil && min(want, remaining) > 0:
				t.Fatalf("step %d: TakeLease(%d) with %d remaining = nil", step, want, remaining)
			case l != nil && (l.Amount <= 0 || l.Amount > remaining || l.Amount > want):
				t.Fatalf("step %d: TakeLease(%d) with %d remaining = %d", step, want, remaining, l.Amount)
			case l != nil:
				open = append(open, l)
			}
		} else if len(open) > 0 {
			i := rng.IntN(len(open))
			l := open[i]
			issued := rng.Int64N(l.Amount + 1)
			if err := b.CloseLease(l, issued, issued/10); err != nil {
				t.Fatalf("step %d: CloseLease(%+v, %d): %v", step, l, issued, err)
			}
			issuedSum += issued
			open = slices.Delete(open, i, i+1)
		}
		if err := b.Check(); err != nil {
			t.Fatalf("step %d: Check() = %v", step, err)
		}
		// Conservation: total = remaining + Σ open amounts + Σ closed issued.
		sum := b.Remaining() + issuedSum
		for _, l := range open {
			sum += l.Amount
		}
		if sum != b.Total {
			t.Fatalf("step %d: remaining + open + issued = %d, want total %d", step, sum, b.Total)
		}
	}
}

func TestCloseLease(t *testing.T) {
	b := &ledger.Budget{ID: "b", Asset: ledger.AssetCash, Total: 100}
	l := b.TakeLease(60, "n", 1)
	if b.Remaining() != 40 {
		t.Fatalf("Remaining() = %d after leasing 60 of 100, want 40", b.Remaining())
	}
	if err := b.CloseLease(l, 25, 3); err != nil {
		t.Fatalf("CloseLease(%+v, 25, 3): %v", l, err)
	}
	if b.Returned != 35 || b.Remaining() != 75 || !l.Closed || l.Issued != 25 || l.IssuedCount != 3 {
		t.Errorf("after CloseLease(60-lease, 25): budget %+v lease %+v, want 35 returned, 75 remaining", b, l)
	}
	// Closing with nothing issued returns it all; with all issued, nothing.
	all := b.TakeLease(50, "n", 1)
	none := b.TakeLease(25, "n", 1)
	if err := b.CloseLease(all, 0, 0); err != nil || b.Remaining() != 50 {
		t.Errorf("CloseLease(%+v, 0, 0) = %v, remaining %d, want 50", all, err, b.Remaining())
	}
	if err := b.CloseLease(none, 25, 1); err != nil || b.Remaining() != 50 {
		t.Errorf("CloseLease(%+v, 25, 1) = %v, remaining %d, want 50", none, err, b.Remaining())
	}
}

func TestCloseLeaseRefuses(t *testing.T) {
	type setup struct {
		b *ledger.Budget
		l *ledger.Lease
	}
	fresh := func() setup {
		b := &ledger.Budget{ID: "b", Asset: ledger.AssetCash, Total: 100}
		b.TakeLease(10, "n", 1)
		return setup{b, b.TakeLease(50, "n", 1)}
	}
	for _, tc := range []struct {
		name          string
		prepare       func(s setup) setup
		issued, count int64
	}{
		{"issued over amount", func(s setup) setup { return s }, 51, 1},
		{"issued negative", func(s setup) setup { return s }, -1, 0},
		{"count negative", func(s setup) setup { return s }, 10, -1},
		{"closed twice", func(s setup) setup {
			if err := s.b.CloseLease(s.l, 10, 1); err != nil {
				t.Fatalf("first close: %v", err)
			}
			return s
		}, 10, 1},
		{"other budget", func(s setup) setup { s.l.BudgetID = "other"; return s }, 10, 1},
		{"never taken", func(s setup) setup {
			return setup{s.b, &ledger.Lease{BudgetID: "b", ID: s.b.NextLease, Amount: 10}}
		}, 0, 0},
		// A lease this budget never handed out, claiming to return more than
		// is outstanding: the budget's check refuses and nothing changes.
		{"returns more than outstanding", func(s setup) setup {
			return setup{s.b, &ledger.Lease{BudgetID: "b", ID: 1, Amount: 90}}
		}, 0, 0},
		{"folded beyond outstanding", func(s setup) setup { s.b.Folded = 55; return s }, 0, 0},
		// Folds already booked 20 in 2 grants under the lease: it issued at
		// least that much.
		{"issued under booked", func(s setup) setup { s.l.Booked, s.l.BookedCount = 20, 2; return s }, 19, 2},
		{"count under booked", func(s setup) setup { s.l.Booked, s.l.BookedCount = 20, 2; return s }, 20, 1},
	} {
		s := tc.prepare(fresh())
		b, l := *s.b, *s.l
		err := s.b.CloseLease(s.l, tc.issued, tc.count)
		if !errors.Is(err, ledger.ErrInvariant) {
			t.Errorf("%s: CloseLease(%+v, %d, %d) = %v, want ErrInvariant", tc.name, l, tc.issued, tc.count, err)
		}
		if *s.b != b || *s.l != l {
			t.Errorf("%s: refused CloseLease changed budget %+v -> %+v, lease %+v -> %+v", tc.name, b, *s.b, l, *s.l)
		}
	}
}

func TestBudgetCheck(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    ledger.Budget
		ok   bool
	}{
		{"zero", ledger.Budget{}, true},
		{"fresh", ledger.Budget{Total: 100}, true},
		{"all leased", ledger.Budget{Total: 100, Leased: 100}, true},
		{"all returned", ledger.Budget{Total: 100, Leased: 300, Returned: 300}, true},
		{"folded all outstanding", ledger.Budget{Total: 100, Leased: 100, Returned: 20, Folded: 80, FoldedCount: 8}, true},
		{"max", ledger.Budget{Total: math.MaxInt64, Leased: math.MaxInt64, Returned: math.MaxInt64}, true},
		{"total negative", ledger.Budget{Total: -1}, false},
		{"leased negative", ledger.Budget{Total: 100, Leased: -1}, false},
		{"returned negative", ledger.Budget{Total: 100, Leased: 10, Returned: -1}, false},
		{"returned over leased", ledger.Budget{Total: 100, Leased: 10, Returned: 11}, false},
		{"overspent", ledger.Budget{Total: 100, Leased: 101}, false},
		{"overspent after returns", ledger.Budget{Total: 100, Leased: 250, Returned: 149}, false},
		{"folded negative", ledger.Budget{Total: 100, Leased: 10, Folded: -1}, false},
		{"folded over outstanding", ledger.Budget{Total: 100, Leased: 100, Returned: 20, Folded: 81}, false},
		{"folded count negative", ledger.Budget{Total: 100, Leased: 10, Folded: 5, FoldedCount: -1}, false},
		{"unattributed within folded", ledger.Budget{Total: 100, Leased: 10, Folded: 5, FoldedCount: 2, FoldedUnattributed: 5, FoldedUnattributedCount: 2}, true},
		{"unattributed negative", ledger.Budget{Total: 100, Leased: 10, Folded: 5, FoldedCount: 2, FoldedUnattributed: -1}, false},
		{"unattributed over folded", ledger.Budget{Total: 100, Leased: 10, Folded: 5, FoldedCount: 2, FoldedUnattributed: 6, FoldedUnattributedCount: 1}, false},
		{"unattributed count over folded", ledger.Budget{Total: 100, Leased: 10, Folded: 5, FoldedCount: 2, FoldedUnattributed: 1, FoldedUnattributedCount: 3}, false},
		{"extremes", ledger.Budget{Total: math.MaxInt64, Leased: math.MinInt64, Returned: math.MaxInt64}, false},
	} {
		err := tc.b.Check()
		if tc.ok != (err == nil) || (err != nil && !errors.Is(err, ledger.ErrInvariant)) {
			t.Errorf("%s: Check(%+v) = %v, want ok %v", tc.name, tc.b, err, tc.ok)
		}
	}
}

func TestHotDetailAdd(t *testing.T) {
	h := ledger.HotDetail{}
	for _, g := range []struct {
		lease  uint64
		amount int64
	}{{5, 10}, {3, 1}, {5, 2}, {9, 4}, {1, 8}, {3, 3}} {
		gr := grant(1, "s", 1, tokens.StageFormal, "cash", g.amount)
		gr.LeaseID = g.lease
		if err := h.Add(&gr); err != nil {
			t.Fatalf("Add(%+v): %v", gr, err)
		}
	}
	want := ledger.HotDetail{BudgetID: "spring-cash", Amount: 28, Count: 6, Leases: []ledger.LeaseUse{
		{LeaseID: 1, Amount: 8, Count: 1}, {LeaseID: 3, Amount: 4, Count: 2},
		{LeaseID: 5, Amount: 12, Count: 2}, {LeaseID: 9, Amount: 4, Count: 1},
	}}
	if h.BudgetID != want.BudgetID || h.Amount != want.Amount || h.Count != want.Count || !slices.Equal(h.Leases, want.Leases) {
		t.Errorf("HotDetail after adds = %+v, want %+v", h, want)
	}

	for _, tc := range []struct {
		name string
		g    ledger.Grant
		want error
	}{
		{"zero", grant(1, "s", 1, tokens.StageFormal, "cash", 0), ledger.ErrInvariant},
		{"negative", grant(1, "s", 1, tokens.StageFormal, "cash", -1), ledger.ErrInvariant},
		{"overflow", grant(1, "s", 1, tokens.StageFormal, "cash", math.MaxInt64), ledger.ErrOverflow},
		{"other budget", func() ledger.Grant {
			g := grant(1, "s", 1, tokens.StageFormal, "cash", 1)
			g.BudgetID = "other"
			return g
		}(), ledger.ErrInvariant},
	} {
		before := ledger.MarshalHotDetail(nil, &h)
		if err := h.Add(&tc.g); !errors.Is(err, tc.want) {
			t.Errorf("%s: Add(%+v) = %v, want %v", tc.name, tc.g, err, tc.want)
		}
		if after := ledger.MarshalHotDetail(nil, &h); string(after) != string(before) {
			t.Errorf("%s: a refused Add changed the detail to %+v", tc.name, h)
		}
	}
}

// TestCloseLeaseAfterFold: a lease closes with at least what folds booked
// under it; closing with exactly that returns the rest.
func TestCloseLeaseAfterFold(t *testing.T) {
	b := &ledger.Budget{ID: "b", Asset: ledger.AssetCash, Total: 100}
	l := b.TakeLease(60, "n", 1)
	if _, err := b.Fold([]*ledger.HotDetail{detail("b", use(l.ID, 25, 3))}, map[uint64]*ledger.Lease{l.ID: l}); err != nil {
		t.Fatalf("Fold: %v", err)
	}
	if err := b.CloseLease(l, 25, 3); err != nil {
		t.Fatalf("CloseLease(%+v, 25, 3): %v", l, err)
	}
	if b.Remaining() != 75 || l.Booked != 25 || l.Issued != 25 {
		t.Errorf("after fold and close: budget %+v lease %+v", b, l)
	}
}

func use(lease uint64, amount, count int64) ledger.LeaseUse {
	return ledger.LeaseUse{LeaseID: lease, Amount: amount, Count: count}
}

// detail builds a hot detail of budget from lease uses (sorted by the caller).
func detail(budget string, uses ...ledger.LeaseUse) *ledger.HotDetail {
	h := &ledger.HotDetail{BudgetID: budget, Leases: uses}
	for _, u := range uses {
		h.Amount += u.Amount
		h.Count += u.Count
	}
	return h
}

// foldSetup is a budget of 1000 with lease 1 (300, open), lease 2 (200,
// closed with 150 issued in 3 grants) and lease 3 (100, open).
func foldSetup() (*ledger.Budget, map[uint64]*ledger.Lease) {
	b := &ledger.Budget{ID: "b", Asset: ledger.AssetCash, Total: 1000}
	l1, l2, l3 := b.TakeLease(300, "n", 1), b.TakeLease(200, "n", 1), b.TakeLease(100, "n", 1)
	if err := b.CloseLease(l2, 150, 3); err != nil {
		panic(err)
	}
	for _, l := range []*ledger.Lease{l1, l2, l3} {
		l.BudgetOut, l.BudgetTotal = 0, 0
	}
	return b, map[uint64]*ledger.Lease{1: l1, 2: l2, 3: l3}
}

func TestFold(t *testing.T) {
	for _, tc := range []struct {
		name    string
		prepare func(b *ledger.Budget, leases map[uint64]*ledger.Lease)
		details []*ledger.HotDetail
		// want: the budget's Folded, FoldedCount, FoldedUnattributed and the
		// Booked of leases 1, 2 and 3 after the fold; nil when it must be
		// refused with err.
		want *[6]int64
		err  error
	}{
		{name: "nothing", want: &[6]int64{}},
		{name: "one detail, two leases",
			details: []*ledger.HotDetail{detail("b", use(1, 40, 2), use(3, 10, 1))},
			want:    &[6]int64{50, 3, 0, 40, 0, 10}},
		{name: "several details sum per lease",
			details: []*ledger.HotDetail{detail("b", use(1, 40, 2)), detail("b", use(1, 5, 1), use(2, 150, 3)), detail("b", use(3, 100, 4))},
			want:    &[6]int64{295, 10, 0, 45, 150, 100}},
		{name: "redeem then its attribution",
			details: []*ledger.HotDetail{detail("b", use(0, 30, 1)), detail("b", use(0, -30, -1), use(3, 30, 1))},
			want:    &[6]int64{30, 1, 0, 0, 0, 30}},
		{name: "redeem not yet attributed",
			details: []*ledger.HotDetail{detail("b", use(0, 30, 1), use(1, 7, 1))},
			want:    &[6]int64{37, 2, 30, 7, 0, 0}},
		{name: "attribution of a redeem folded earlier",
			prepare: func(b *ledger.Budget, _ map[uint64]*ledger.Lease) {
				b.Folded, b.FoldedCount, b.FoldedUnattributed, b.FoldedUnattributedCount = 30, 1, 30, 1
			},
			details: []*ledger.HotDetail{detail("b", use(0, -30, -1), use(1, 30, 1))},
			want:    &[6]int64{30, 1, 0, 30, 0, 0}},
		{name: "on top of an earlier fold",
			prepare: func(_ *ledger.Budget, leases map[uint64]*ledger.Lease) {
				leases[1].Booked, leases[1].BookedCount = 100, 5
			},
			details: []*ledger.HotDetail{detail("b", use(1, 200, 1))},
			want:    &[6]int64{200, 1, 0, 300, 0, 0}},
		{name: "lease over its amount", details: []*ledger.HotDetail{detail("b", use(3, 101, 1))}, err: ledger.ErrInvariant},
		{name: "closed lease over its issued", details: []*ledger.HotDetail{detail("b", use(2, 151, 3))}, err: ledger.ErrInvariant},
		{name: "closed lease over its issued count", details: []*ledger.HotDetail{detail("b", use(2, 150, 4))}, err: ledger.ErrInvariant},
		{name: "attribution before its redeem", details: []*ledger.HotDetail{detail("b", use(0, -30, -1), use(1, 30, 1))}, err: ledger.ErrInvariant},
		{name: "unknown lease", details: []*ledger.HotDetail{detail("b", use(9, 1, 1))}, err: ledger.ErrInvariant},
		{name: "lease given under another id",
			prepare: func(_ *ledger.Budget, leases map[uint64]*ledger.Lease) { leases[1] = leases[3] },
			details: []*ledger.HotDetail{detail("b", use(1, 1, 1))}, err: ledger.ErrInvariant},
		{name: "other budget's detail", details: []*ledger.HotDetail{detail("c", use(1, 1, 1))}, err: ledger.ErrInvariant},
		{name: "folded over outstanding",
			prepare: func(b *ledger.Budget, _ map[uint64]*ledger.Lease) { b.Folded = 540 },
			details: []*ledger.HotDetail{detail("b", use(1, 11, 1))}, err: ledger.ErrInvariant},
		{name: "overflow", details: []*ledger.HotDetail{detail("b", use(1, math.MaxInt64, 1)), detail("b", use(1, 1, 1))}, err: ledger.ErrOverflow},
	} {
		b, leases := foldSetup()
		if tc.prepare != nil {
			tc.prepare(b, leases)
		}
		beforeB := *b
		beforeL := map[uint64]ledger.Lease{}
		for id, l := range leases {
			beforeL[id] = *l
		}
		// The sums the fold must keep: Folded + unfolded, and per lease
		// Booked + unfolded uses.
		total := b.Folded
		perLease := map[uint64]int64{}
		for _, h := range tc.details {
			total += h.Amount
			for _, u := range h.Leases {
				perLease[u.LeaseID] += u.Amount
			}
		}
		got, err := b.Fold(tc.details, leases)
		if tc.want == nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("%s: Fold = %+v, %v, want %v", tc.name, got, err, tc.err)
			}
			if *b != beforeB {
				t.Errorf("%s: refused Fold changed the budget %+v -> %+v", tc.name, beforeB, *b)
			}
			for id, l := range leases {
				if *l != beforeL[id] {
					t.Errorf("%s: refused Fold changed lease %d %+v -> %+v", tc.name, id, beforeL[id], *l)
				}
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: Fold: %v", tc.name, err)
			continue
		}
		have := [6]int64{b.Folded, b.FoldedCount, b.FoldedUnattributed, leases[1].Booked, leases[2].Booked, leases[3].Booked}
		if have != *tc.want {
			t.Errorf("%s: after Fold: folded, count, unattributed, booked per lease = %v, want %v", tc.name, have, *tc.want)
		}
		if got.Details != len(tc.details) || b.Folded != total {
			t.Errorf("%s: Fold = %+v, folded %d, want %d details and folded %d", tc.name, got, b.Folded, len(tc.details), total)
		}
		for id := uint64(1); id <= 3; id++ {
			if l := leases[id]; l.Booked != beforeL[id].Booked+perLease[id] {
				t.Errorf("%s: lease %d booked %d, want %d + %d", tc.name, id, l.Booked, beforeL[id].Booked, perLease[id])
			}
		}
		for i, l := range got.Leases {
			if perLease[l.ID] == 0 || (i > 0 && got.Leases[i-1].ID >= l.ID) {
				t.Errorf("%s: Fold reports leases %+v, want those with uses, in id order", tc.name, got.Leases)
			}
		}
		if err := b.Check(); err != nil {
			t.Errorf("%s: after Fold: %v", tc.name, err)
		}
	}
}
