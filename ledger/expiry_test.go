package ledger_test

import (
	"errors"
	"flag"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"redrain/ledger"
)

var expirySeed = flag.Uint64("expiry-seed", 0, "TestExpirableModel's seed (0: a few fixed seeds)")

// lot is a credit of the model: what is left of it and its month.
type lot struct {
	month ledger.Month
	left  int64
}

// TestExpirableModel checks Expirable against a model that keeps every
// credit as a lot and spends the oldest lots first: after every step, for
// every cutoff, the unspent part of the lots credited before the cutoff
// is what Expirable answers, and an expiry past validity of that amount
// applies while one more is refused.
func TestExpirableModel(t *testing.T) {
	seeds := []uint64{1, 2, 3, 4, 5}
	if *expirySeed != 0 {
		seeds = []uint64{*expirySeed}
	}
	for _, seed := range seeds {
		rng := rand.New(rand.NewPCG(seed, 13))
		a := &ledger.Account{ActID: 9}
		var lots []lot
		month := ledger.Month(600) // 2020-01
		at := func() int64 { return monthStart(month) + rng.Int64N(20*24*3600*1000) }
		unspentBefore := func(cutoff ledger.Month) int64 {
			var n int64
			for _, l := range lots {
				if l.month < cutoff {
					n += l.left
				}
			}
			return n
		}
		for step := range 400 {
			key := "k" + strconv.Itoa(step)
			switch op := rng.IntN(10); {
			case op < 2:
				month += ledger.Month(1 + rng.IntN(3))
			case op < 6: // a credit
				n := 1 + rng.Int64N(100)
				m := ledger.Move{ActID: 9, Kind: ledger.MoveRecharge, Key: key, Legs: leg(coin, n), Counter: "recharge/1"}
				if r, _, err := a.ApplyMove(&m, at()); err != nil || r != ledger.MoveApplied {
					t.Fatalf("seed %d step %d: recharge %v %v", seed, step, r, err)
				}
				lots = append(lots, lot{month, n})
			case op < 9: // a debit, first-in first-out in the model
				bal := a.Balance(coin)
				if bal == 0 {
					continue
				}
				n := 1 + rng.Int64N(bal)
				m := ledger.Move{ActID: 9, Kind: ledger.MoveConsume, Key: key, Legs: leg(coin, -n), Counter: "merchant/m"}
				if r, _, err := a.ApplyMove(&m, at()); err != nil || r != ledger.MoveApplied {
					t.Fatalf("seed %d step %d: consume %v %v", seed, step, r, err)
				}
				for i := 0; n > 0; i++ {
					take := min(n, lots[i].left)
					lots[i].left -= take
					n -= take
				}
			default: // a sweep: expire what is past a validity of 0..3 months
				cutoff := ledger.ExpiryCutoff(month, rng.IntN(4))
				want := unspentBefore(cutoff)
				if want == 0 {
					continue
				}
				m := ledger.Move{ActID: 9, Kind: ledger.MoveExpire, Key: ledger.ExpireKey(coin, cutoff),
					Legs: leg(coin, -want-1), Counter: "expired/coin:gold", Ref: ledger.ExpireRef(cutoff)}
				if r, _, err := a.ApplyMove(&m, at()); err != nil || r != ledger.MoveRefused {
					t.Fatalf("seed %d step %d: expiry of one more than expirable: %v %v", seed, step, r, err)
				}
				m.Legs = leg(coin, -want)
				if r, _, err := a.ApplyMove(&m, at()); err != nil || r != ledger.MoveApplied {
					t.Fatalf("seed %d step %d: expiry of %d: %v %v", seed, step, want, r, err)
				}
				if r, _, err := a.ApplyMove(&m, at()); err != nil || r != ledger.MoveRepeated {
					t.Fatalf("seed %d step %d: expiry again: %v %v", seed, step, r, err)
				}
				n := want
				for i := 0; n > 0; i++ {
					take := min(n, lots[i].left)
					lots[i].left -= take
					n -= take
				}
			}
			for c := month - 6; c <= month+1; c++ {
				if got, want := a.Expirable(coin, c), unspentBefore(c); got != want {
					t.Fatalf("seed %d step %d: Expirable(%s) = %d, the model's lots before it hold %d", seed, step, c, got, want)
				}
			}
		}
	}
}

// TestExpiryRefusals: a cutoff after the booking month, a malformed
// cutoff, and an expiry without "before:" (an app's, not checked).
func TestExpiryRefusals(t *testing.T) {
	a := &ledger.Account{ActID: 9}
	now := monthStart(620)
	r := ledger.Move{ActID: 9, Kind: ledger.MoveRecharge, Key: "r", Legs: leg(coin, 10), Counter: "recharge/1"}
	if res, _, err := a.ApplyMove(&r, now); err != nil || res != ledger.MoveApplied {
		t.Fatal(res, err)
	}
	for _, ref := range []string{ledger.ExpireRef(621), "before:2021-13", "before:21-01", "before:+970-01"} {
		m := ledger.Move{ActID: 9, Kind: ledger.MoveExpire, Key: "e" + ref, Legs: leg(coin, -1), Counter: "expired/coin:gold", Ref: ref}
		if res, _, err := a.ApplyMove(&m, now); err != nil || res != ledger.MoveRefused {
			t.Errorf("ref %q: %v %v, want refused", ref, res, err)
		}
	}
	// Everything was credited in month 620: nothing before it expires,
	// everything before 621 would (but 621 is after the booking month).
	if got := a.Expirable(coin, 620); got != 0 {
		t.Errorf("Expirable(620) = %d", got)
	}
	if got := a.Expirable(coin, 621); got != 10 {
		t.Errorf("Expirable(621) = %d", got)
	}
	app := ledger.Move{ActID: 9, Kind: ledger.MoveExpire, Key: "app", Legs: leg(coin, -4), Counter: "expired/coin:gold"}
	if res, _, err := a.ApplyMove(&app, now); err != nil || res != ledger.MoveApplied {
		t.Errorf("an app's expiry: %v %v", res, err)
	}
	for _, s := range []string{"2026-12", "1970-01", "9999-12"} {
		m, err := ledger.ParseMonth(s)
		if err != nil || m.String() != s {
			t.Errorf("ParseMonth(%q) = %v, %v", s, m, err)
		}
	}
}

// monthStart is the first millisecond of month m.
func monthStart(m ledger.Month) int64 {
	return time.Date(1970+int(m)/12, time.Month(int(m)%12+1), 1, 0, 0, 0, 0, time.UTC).UnixMilli()
}

// TestBudgetExpired: what expiries return to a budget rides its hot
// details (version 2) into the budget (version 3) by Fold; records of the
// previous versions decode with zero; a negative figure is refused.
func TestBudgetExpired(t *testing.T) {
	b := &ledger.Budget{ID: "b", Asset: ledger.ItemAsset("rose"), Total: 100, Leased: 40, Folded: 5, FoldedCount: 1, FoldedUnattributed: 5, FoldedUnattributedCount: 1, NextLease: 2}
	h1 := &ledger.HotDetail{BudgetID: "b", Expired: 7}
	h2 := &ledger.HotDetail{BudgetID: "b", Amount: 3, Count: 1, Leases: []ledger.LeaseUse{{LeaseID: 0, Amount: 3, Count: 1}}, Expired: 2}
	for _, h := range []*ledger.HotDetail{h1, h2} {
		enc := ledger.MarshalHotDetail(nil, h)
		got, err := ledger.UnmarshalHotDetail(enc)
		if err != nil || got.Expired != h.Expired || enc[0] != 2 {
			t.Fatalf("hot detail %+v round trip: %+v, %v (version %d)", h, got, err, enc[0])
		}
		// The same detail as version 1 wrote it: no expired.
		v1 := append([]byte{1}, enc[1:len(enc)-1]...)
		if got, err := ledger.UnmarshalHotDetail(v1); err != nil || got.Expired != 0 || got.Amount != h.Amount {
			t.Fatalf("version 1 hot detail: %+v, %v", got, err)
		}
	}
	neg := ledger.MarshalHotDetail(nil, &ledger.HotDetail{BudgetID: "b", Expired: -1})
	if _, err := ledger.UnmarshalHotDetail(neg); !errors.Is(err, ledger.ErrInvariant) {
		t.Errorf("a negative expired decoded: %v", err)
	}
	res, err := b.Fold([]*ledger.HotDetail{h1, h2}, nil)
	if err != nil || res.Expired != 9 || res.Amount != 3 {
		t.Fatalf("Fold = %+v, %v", res, err)
	}
	b.Folded, b.FoldedCount, b.FoldedUnattributed, b.FoldedUnattributedCount, b.Expired = 8, 2, 8, 2, 9
	enc := ledger.MarshalBudget(nil, b)
	got, err := ledger.UnmarshalBudget(enc)
	if err != nil || *got != *b || enc[0] != 3 {
		t.Fatalf("budget round trip: %+v, %v", got, err)
	}
	v2 := append([]byte{2}, enc[1:len(enc)-1]...)
	if got, err := ledger.UnmarshalBudget(v2); err != nil || got.Expired != 0 || got.Folded != 8 {
		t.Fatalf("version 2 budget: %+v, %v", got, err)
	}
	b.Expired = -1
	if err := b.Check(); !errors.Is(err, ledger.ErrInvariant) {
		t.Errorf("a negative expired checks: %v", err)
	}
}
