package closing_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"redrain/booking"
	"redrain/closing"
	"redrain/ledger"
	"redrain/metrics"
	"redrain/statement"
	"redrain/storage"
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

// TestUserStatementFromEntries: a user's statement is read from the
// user's entries, the archived history chunks included (a user with more
// entries than an account keeps), and the folder stores no user
// aggregate.
func TestUserStatementFromEntries(t *testing.T) {
	s := newStore(t)
	now := day1 + 1_000
	b := booking.New(booking.Config{TiKV: s.db, Partitions: 2, Metrics: &metrics.Registry{}, Clock: func() time.Time { return time.UnixMilli(now) }, Owner: "test"})
	ctx := context.Background()
	book := func(rain uint64, amount int64) {
		t.Helper()
		g := ledger.Grant{AppID: 1, ActID: 2, ActivityID: "newyear", SceneID: "lobby", RainID: rain, AwardType: "cash",
			Asset: ledger.AssetCash, Amount: amount, BudgetID: "newyear/formal/cash", LeaseID: 1, IssuedAt: now}
		if out, err := b.Book(ctx, []ledger.Grant{g}); err != nil || out[0] != booking.BookedNow {
			t.Fatalf("grant %d: %v %v", rain, out, err)
		}
	}
	for i := range 150 { // day 1: 150 grants of 1..150 fen
		book(uint64(i+1), int64(i+1))
		now += 10
	}
	now = day1 + 86_400_000 + 1_000
	for i := range 20 { // day 2: 20 grants of 1,000 fen
		book(uint64(1_000+i), 1_000)
		now += 10
	}
	err := s.db.View(func(txn storage.Txn) error {
		got, err := booking.ReadAccounts(ctx, txn, 2, []uint64{2})
		if err == nil && got[2].Archived == 0 {
			err = fmt.Errorf("no entry archived among %d", len(got[2].Entries))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	f := &closing.Folder{DB: s.db, Parts: 2, Config: &statement.Config{}, MaxOps: 1_000, Now: func() int64 { return now }}
	if _, err := f.FoldAll(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		kind, date    string
		amount, count int64
	}{
		{"day", "2025-12-06", 150 * 151 / 2, 150},
		{"day", "2025-12-07", 20_000, 20},
		{"month", "2025-12", 150*151/2 + 20_000, 170},
		{"day", "2025-12-05", 0, 0},
	} {
		if a, n := net(s.read(s.db, "user:2", c.kind, c.date), "cash"); a != c.amount || n != c.count {
			t.Errorf("user:2 %s %s: %d in %d entries, want %d in %d", c.kind, c.date, a, n, c.amount, c.count)
		}
	}
	if a, n := net(s.read(s.db, "activity:newyear", "month", "2025-12"), "cash"); a != -(150*151/2+20_000) || n != 170 {
		t.Errorf("activity: %d in %d postings", a, n)
	}
	prefix := []byte("rr/stmt/day/")
	err = s.db.Scan(ctx, prefix, storage.PrefixEnd(prefix), func(k, _ []byte) (bool, error) {
		if bytes.Contains(k, []byte("user:")) {
			return false, fmt.Errorf("the folder stored %s", k)
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
