package booking_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"redrain/booking"
	"redrain/booking/bookingtest"
	"redrain/ledger"
	"redrain/storage"
)

// move runs Booker.Move and fails the test on an error.
func move(t testing.TB, b *booking.Booker, moves ...ledger.Move) []ledger.MoveResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	out, err := b.Move(ctx, moves)
	if err != nil {
		t.Fatalf("Move: %v", err)
	}
	if len(out) != len(moves) {
		t.Fatalf("Move answered %d results for %d moves", len(out), len(moves))
	}
	return out
}

func consume(act uint64, key string, asset ledger.Asset, n int64) ledger.Move {
	return ledger.Move{ActID: act, Kind: ledger.MoveConsume, Key: key, AppID: 1,
		Legs: []ledger.Leg{{Asset: asset, Amount: -n}}, Counter: "merchant/m1"}
}

func refund(act uint64, key, ref string, asset ledger.Asset, n int64) ledger.Move {
	return ledger.Move{ActID: act, Kind: ledger.MoveRefund, Key: key, AppID: 1,
		Legs: []ledger.Leg{{Asset: asset, Amount: n}}, Counter: "merchant/m1", Ref: ref}
}

// wantBalances checks an account read from the store.
func wantBalances(t testing.TB, f *bookingtest.Fixture, act uint64, want map[ledger.Asset]int64) {
	t.Helper()
	a := f.Account(act)
	if err := a.Check(); err != nil {
		t.Fatalf("act %d: %v", act, err)
	}
	for asset, n := range want {
		if got := a.Balance(asset); got != n {
			t.Fatalf("act %d: %s balance %d, want %d", act, asset, got, n)
		}
	}
}

// TestMoveRules: moves book exactly once through either path; a repeat,
// a reused key, insufficient funds and a refund beyond its consumption
// change nothing; a transfer's halves and a withdrawal's steps land.
func TestMoveRules(t *testing.T) {
	eachPath(t, func(t *testing.T, own func(*bookingtest.Fixture, *booking.Booker)) {
		f, l, b := onPath(t, own, 4, 1_000_000)
		coin := f.Asset
		u1, u2 := f.User(), f.User()
		grants := []ledger.Grant{f.Grant(u1, 1, l, 1000), f.Grant(u2, 1, l, 10)}
		wantOutcomes(t, book(t, b, grants), booking.BookedNow)

		c := consume(u1, "c1", coin, 300)
		other := c
		other.Legs = []ledger.Leg{{Asset: coin, Amount: -301}}
		got := move(t, b, c, c, other, consume(u1, "c2", coin, 701))
		want := []ledger.MoveResult{ledger.MoveApplied, ledger.MoveRepeated, ledger.MoveKeyReused, ledger.MoveInsufficient}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("results %v, want %v", got, want)
		}
		wantBalances(t, f, u1, map[ledger.Asset]int64{coin: 700})
		counted(t, "moves booked", b.Moved.Load, 1)
		before := ledgerState(t, f)
		// Again, one call at a time: nothing changes, no journal written.
		for _, m := range []ledger.Move{c, other, consume(u1, "c2", coin, 701)} {
			if r := move(t, b, m)[0]; r == ledger.MoveApplied {
				t.Fatalf("move %q booked again", m.Key)
			}
		}
		if after := ledgerState(t, f); len(after) != len(before) {
			t.Fatalf("moves that changed nothing wrote %d keys", len(after)-len(before))
		}

		rev := ledger.Move{ActID: u1, Kind: ledger.MoveReverse, Key: "rv1", AppID: 1,
			Legs: []ledger.Leg{{Asset: coin, Amount: 300}}, Counter: "merchant/m1", Ref: "c1"}
		got = move(t, b, refund(u1, "r1", "c1", coin, 100), refund(u1, "r2", "c1", coin, 201), rev,
			refund(u1, "r3", "c1", coin, 200), refund(u1, "r4", "nothing", coin, 1))
		want = []ledger.MoveResult{ledger.MoveApplied, ledger.MoveRefused, ledger.MoveRefused, ledger.MoveApplied, ledger.MoveRefused}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("refunds: results %v, want %v", got, want)
		}
		wantBalances(t, f, u1, map[ledger.Asset]int64{coin: 1000})

		// A transfer: out of u1, into u2 (maybe another partition).
		out := ledger.Move{ActID: u1, Kind: ledger.MoveTransferOut, Key: "t1", Legs: []ledger.Leg{{Asset: coin, Amount: -400}}, Counter: "transfer/t1", Ref: fmt.Sprint(u2)}
		in := ledger.Move{ActID: u2, Kind: ledger.MoveTransferIn, Key: "t1", Legs: []ledger.Leg{{Asset: coin, Amount: 400}}, Counter: "transfer/t1", Ref: fmt.Sprint(u1)}
		if got := move(t, b, out, in); got[0] != ledger.MoveApplied || got[1] != ledger.MoveApplied {
			t.Fatalf("transfer: %v", got)
		}
		wantBalances(t, f, u1, map[ledger.Asset]int64{coin: 600})
		wantBalances(t, f, u2, map[ledger.Asset]int64{coin: 410})

		// Withdrawal steps on money: recharge-free, so credit cash by a
		// gift in first (the counter is the sender's transfer).
		gift := ledger.Move{ActID: u2, Kind: ledger.MoveGiftIn, Key: "g1", Legs: []ledger.Leg{{Asset: ledger.AssetCash, Amount: 500}}, Counter: "transfer/g1"}
		hold := ledger.Move{ActID: u2, Kind: ledger.MoveWithdrawHold, Key: "w1/hold", Legs: []ledger.Leg{{Asset: ledger.AssetCash, Amount: -300}, {Asset: ledger.AssetTransit, Amount: 300}}, Ref: "w1"}
		back := ledger.Move{ActID: u2, Kind: ledger.MoveWithdrawReverse, Key: "w1/reverse", Legs: []ledger.Leg{{Asset: ledger.AssetTransit, Amount: -300}, {Asset: ledger.AssetCash, Amount: 300}}, Ref: "w1"}
		debt := ledger.Move{ActID: u2, Kind: ledger.MoveWithdrawDebt, Key: "w1/debt", Legs: []ledger.Leg{{Asset: ledger.AssetCash, Amount: -700}}, Counter: "payout/bank", Ref: "w1"}
		got = move(t, b, gift, hold, back, debt)
		for i, r := range got {
			if r != ledger.MoveApplied {
				t.Fatalf("withdrawal step %d: %v", i, r)
			}
		}
		wantBalances(t, f, u2, map[ledger.Asset]int64{coin: 410, ledger.AssetCash: 0, ledger.AssetTransit: 0, ledger.AssetDebt: 200})
		// The journal holds the debt as booked (the split), which the
		// store's read above replayed.
		var split []ledger.Leg
		for _, j := range journals(t, f, storage.PartitionOf(u2, f.Parts), 1) {
			for _, op := range j.Ops {
				if op.Kind == ledger.OpMove && op.Move.Key == "w1/debt" {
					split = op.Move.Legs
				}
			}
		}
		if fmt.Sprint(split) != fmt.Sprint([]ledger.Leg{{Asset: ledger.AssetCash, Amount: -500}, {Asset: ledger.AssetDebt, Amount: 200}}) {
			t.Fatalf("journaled debt legs %v", split)
		}
		if r := move(t, b, debt)[0]; r != ledger.MoveRepeated {
			t.Fatalf("debt again: %v", r)
		}

		// Invalid input is an error and books nothing.
		bad := consume(u1, "bad", coin, 5)
		bad.Legs[0].Amount = 5
		if _, err := b.Move(context.Background(), []ledger.Move{consume(u1, "ok", coin, 1), bad}); !errors.Is(err, ledger.ErrMoveInvalid) {
			t.Fatalf("invalid move: %v, want ErrMoveInvalid", err)
		}
		wantBalances(t, f, u1, map[ledger.Asset]int64{coin: 600})
	})
}

// TestMoveRacesGrants: consumptions and grants of one account booked at
// once through the owner: every grant lands, each consumption either
// lands or finds too little, and the balance is exactly their difference.
func TestMoveRacesGrants(t *testing.T) {
	f, l, b := onPath(t, func(f *bookingtest.Fixture, b *booking.Booker) {
		startOwner(t, f, b, false, 0, 1)
	}, 2, 1_000_000)
	u := f.User()
	const n = 60
	var wg sync.WaitGroup
	results := make([]ledger.MoveResult, n)
	wg.Go(func() {
		for rain := uint64(1); rain <= n; rain++ {
			book(t, b, []ledger.Grant{f.Grant(u, rain, l, 10)})
		}
	})
	wg.Go(func() {
		for i := range n {
			results[i] = move(t, b, consume(u, fmt.Sprint("c", i), f.Asset, 7))[0]
		}
	})
	wg.Wait()
	spent := int64(0)
	for _, r := range results {
		switch r {
		case ledger.MoveApplied:
			spent += 7
		case ledger.MoveInsufficient:
		default:
			t.Fatalf("consumption answered %v", r)
		}
	}
	wantBalances(t, f, u, map[ledger.Asset]int64{f.Asset: 10*n - spent})
	// What failed for want of funds books now.
	for i, r := range results {
		if r == ledger.MoveInsufficient {
			if got := move(t, b, consume(u, fmt.Sprint("c", i), f.Asset, 7))[0]; got != ledger.MoveApplied {
				t.Fatalf("retried consumption %d: %v", i, got)
			}
			spent += 7
		}
	}
	wantBalances(t, f, u, map[ledger.Asset]int64{f.Asset: 10*n - spent})
}

// TestMoveTakeoverRestores: an owner books grants and moves (enough to
// archive move entries into chunks), and another node takes the
// partitions over while it still runs, as after a kill -9 (it never
// releases them, and is fenced); the new owner loads the pages and
// replays the journals, holds exactly the same accounts, and still tells
// repeats from reused keys of archived moves.
func TestMoveTakeoverRestores(t *testing.T) {
	f, l, a := onPath(t, func(*bookingtest.Fixture, *booking.Booker) {}, 2, 1_000_000)
	startOwner(t, f, a, false, 0, 1)
	u := f.User()
	var grants []ledger.Grant
	for rain := uint64(1); rain <= 100; rain++ {
		grants = append(grants, f.Grant(u, rain, l, 10))
	}
	wantOutcomes(t, book(t, a, grants), booking.BookedNow)
	var moves []ledger.Move
	for i := range 100 {
		moves = append(moves, consume(u, fmt.Sprint("c", i), f.Asset, 3))
	}
	for _, r := range move(t, a, moves...) {
		if r != ledger.MoveApplied {
			t.Fatalf("consumption: %v", r)
		}
	}
	before := f.Account(u)
	if before.Archived == 0 {
		t.Fatalf("no entry archived: %d recent", len(before.Entries))
	}
	b := newBooker(t, f, "b", nil)
	startOwner(t, f, b, false, 0, 1)
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	got, err := b.Accounts(ctx, []uint64{u})
	if err != nil {
		t.Fatal(err)
	}
	if string(ledger.MarshalAccount(nil, got[u])) != string(ledger.MarshalAccount(nil, before)) {
		t.Fatalf("after takeover: %+v\nbefore: %+v", got[u].Balances, before.Balances)
	}
	wantBalances(t, f, u, map[ledger.Asset]int64{f.Asset: 1000 - 300})
	// The first moves are archived now: a repeat is still a repeat, other
	// content under their key still refused.
	other := moves[0]
	other.Legs = []ledger.Leg{{Asset: f.Asset, Amount: -4}}
	if got := move(t, b, moves[0], other); got[0] != ledger.MoveRepeated || got[1] != ledger.MoveKeyReused {
		t.Fatalf("archived move again: %v", got)
	}
	wantBalances(t, f, u, map[ledger.Asset]int64{f.Asset: 700})
}

// TestMoveElsewhereReachesOwner: moves booked into the store by a node
// that does not own the partition reach the owner's memory (it catches up
// with the journal), and the owner then refuses their keys for other
// content and books on top of the moved balances.
func TestMoveElsewhereReachesOwner(t *testing.T) {
	f := newFixture(t, 1, 1_000_000)
	l := f.Lease(f.Budget, 100_000)
	owner := newBooker(t, f, "owner", nil)
	startOwner(t, f, owner, false, 0)
	other := newBooker(t, f, "other", nil) // owns nothing: books into the store
	u := f.User()
	wantOutcomes(t, book(t, owner, []ledger.Grant{f.Grant(u, 1, l, 100)}), booking.BookedNow)
	c := consume(u, "c1", f.Asset, 60)
	if r := move(t, other, c)[0]; r != ledger.MoveApplied {
		t.Fatalf("move elsewhere: %v", r)
	}
	eventually(t, within, "owner caught up", func() error {
		got, err := owner.Accounts(context.Background(), []uint64{u})
		if err != nil {
			return err
		}
		if b := got[u].Balance(f.Asset); b != 40 {
			return fmt.Errorf("owner holds %d", b)
		}
		return nil
	})
	reused := consume(u, "c1", f.Asset, 1)
	got := move(t, owner, c, reused, consume(u, "c2", f.Asset, 41), consume(u, "c3", f.Asset, 40))
	want := []ledger.MoveResult{ledger.MoveRepeated, ledger.MoveKeyReused, ledger.MoveInsufficient, ledger.MoveApplied}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("results %v, want %v", got, want)
	}
	wantBalances(t, f, u, map[ledger.Asset]int64{f.Asset: 0})
}
