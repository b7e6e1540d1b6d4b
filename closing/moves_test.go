package closing_test

import (
	"context"
	"testing"
	"time"

	"redrain/booking"
	"redrain/closing"
	"redrain/ledger"
	"redrain/metrics"
	"redrain/statement"
)

// TestFoldBookedMoves: moves booked by booking (into the store, as a node
// that does not own the partition books them) reach the statements as the
// accounts booked them: a withdrawal debt as its split of cash and
// cash:debt, not as the payout it was asked for.
func TestFoldBookedMoves(t *testing.T) {
	s := newStore(t)
	b := booking.New(booking.Config{TiKV: s.db, Partitions: 2, Metrics: &metrics.Registry{}, Clock: time.Now, Owner: "test"})
	ctx := context.Background()
	g := ledger.Grant{AppID: 1, ActID: 2, ActivityID: "newyear", SceneID: "lobby", RainID: 1, AwardType: "cash",
		Asset: ledger.AssetCash, Amount: 1_000, BudgetID: "newyear/formal/cash", LeaseID: 1, IssuedAt: 1}
	if out, err := b.Book(ctx, []ledger.Grant{g}); err != nil || out[0] != booking.BookedNow {
		t.Fatalf("grant: %v %v", out, err)
	}
	cash := func(n int64) []ledger.Leg { return []ledger.Leg{{Asset: ledger.AssetCash, Amount: n}} }
	results, err := b.Move(ctx, []ledger.Move{
		{ActID: 2, Kind: ledger.MoveConsume, Key: "c", Legs: cash(-400), Counter: "merchant/m1"},
		{ActID: 2, Kind: ledger.MoveWithdrawDebt, Key: "w/debt", Legs: cash(-1_000), Counter: "payout/bank", Ref: "w"},
	})
	if err != nil || results[0] != ledger.MoveApplied || results[1] != ledger.MoveApplied {
		t.Fatalf("moves: %v %v", results, err)
	}
	f := &closing.Folder{DB: s.db, Parts: 2, Config: &statement.Config{Rules: map[string]statement.Rule{"m1": seedRule}},
		MaxOps: 100, Now: func() int64 { return time.Now().UnixMilli() }}
	if _, err := f.FoldAll(ctx); err != nil {
		t.Fatal(err)
	}
	st := s.read(s.db, "user:2", "day", time.Now().UTC().Format("2006-01-02"))
	// Cash: +1,000 granted, -400 consumed, -600 taken back by the debt;
	// cash:debt +400.
	sum := func(asset string) int64 {
		var n int64
		for _, l := range st.Agg.Lines {
			if l.Asset == asset {
				n += l.Amount
			}
		}
		return n
	}
	if got := sum("cash"); got != 0 {
		t.Errorf("user's cash lines sum to %d, want 0 (1000 granted, 400 consumed, 600 taken back): %+v", got, st.Agg.Lines)
	}
	if got := sum(string(ledger.AssetDebt)); got != 400 {
		t.Errorf("user's debt lines sum to %d, want 400: %+v", got, st.Agg.Lines)
	}
}
