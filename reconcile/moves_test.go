package reconcile_test

import (
	"context"
	"testing"

	"redrain/ledger"
	"redrain/storage"
	"redrain/storage/storagetest"
)

// moveAll applies moves to the stored accounts (one page write each, as
// putAccount writes them) and fails on any result but want.
func moveAll(t *testing.T, kv *storage.TiKV, want ledger.MoveResult, moves ...ledger.Move) {
	t.Helper()
	update(t, kv, func(txn storage.Txn) error {
		for i := range moves {
			a := getAccount(context.Background(), t, txn, moves[i].ActID)
			if r, _, err := a.ApplyMove(&moves[i], 10); err != nil || r != want {
				t.Fatalf("move %q: %v, %v, want %v", moves[i].Key, r, err, want)
			}
			a.Version++
			if err := putAccount(txn, a); err != nil {
				return err
			}
		}
		return nil
	})
}

// TestStoreWithMoves: accounts that spent, refunded, transferred and
// withdrew pass every check, the moves are counted, and a move whose legs
// do not balance (written past the ledger's rules) is found.
func TestStoreWithMoves(t *testing.T) {
	t.Parallel()
	kv := storagetest.TiKV(t, "")
	writeHealthy(t, kv)
	leg := func(a ledger.Asset, n int64) []ledger.Leg { return []ledger.Leg{{Asset: a, Amount: n}} }
	moveAll(t, kv, ledger.MoveApplied,
		ledger.Move{ActID: 1, Kind: ledger.MoveConsume, Key: "c1", Legs: leg(asset, -2), Counter: "merchant/m"},
		ledger.Move{ActID: 1, Kind: ledger.MoveRefund, Key: "f1", Legs: leg(asset, 1), Counter: "merchant/m", Ref: "c1"},
		ledger.Move{ActID: 2, Kind: ledger.MoveTransferOut, Key: "t1", Legs: leg(asset, -3), Counter: "transfer/t1"},
		ledger.Move{ActID: 3, Kind: ledger.MoveTransferIn, Key: "t1", Legs: leg(asset, 3), Counter: "transfer/t1"},
		ledger.Move{ActID: 4, Kind: ledger.MoveWithdrawHold, Key: "w/hold", Legs: []ledger.Leg{{Asset: ledger.AssetCash, Amount: -4}, {Asset: ledger.AssetTransit, Amount: 4}}},
		ledger.Move{ActID: 4, Kind: ledger.MoveWithdrawSettle, Key: "w/settle", Legs: leg(ledger.AssetTransit, -3), Counter: "payout/bank"},
		ledger.Move{ActID: 5, Kind: ledger.MoveWithdrawDebt, Key: "d/debt", Legs: leg(ledger.AssetCash, -1_000_000), Counter: "payout/bank"},
	)
	r := run(t, kv)
	if !r.OK || r.Moves != 7 || r.Entries != usersCount {
		t.Fatalf("store with moves: ok %v, %d moves, %d bookings:\n%s", r.OK, r.Moves, r.Entries, text(r))
	}

	// A hold whose legs do not balance: the account itself is consistent
	// (its balances are its entries), the move is not.
	update(t, kv, func(txn storage.Txn) error {
		a := getAccount(context.Background(), t, txn, 6)
		m := ledger.Move{ActID: 6, Kind: ledger.MoveWithdrawHold, Key: "bad", Legs: []ledger.Leg{{Asset: ledger.AssetCash, Amount: -4}, {Asset: ledger.AssetTransit, Amount: 4}}}
		if r, _, err := a.ApplyMove(&m, 10); err != nil || r != ledger.MoveApplied {
			t.Fatalf("hold: %v %v", r, err)
		}
		n := len(a.Entries)
		a.Entries[n-1].Amount = 5
		a.Balances = nil
		for _, e := range a.Entries {
			a.Balances = addTo(a.Balances, e.Asset, e.Amount)
		}
		a.Months, _ = ledger.MonthsOf(a.Entries)
		return putAccount(txn, a)
	})
	r = run(t, kv)
	if c := check(t, r, movesBalance); c.OK || r.OK {
		t.Fatalf("an unbalanced move passed:\n%s", text(r))
	}
}

// addTo adds n to asset's balance in a list sorted by asset.
func addTo(bs []ledger.Balance, asset ledger.Asset, n int64) []ledger.Balance {
	for i := range bs {
		if bs[i].Asset == asset {
			bs[i].Amount += n
			return bs
		}
		if bs[i].Asset > asset {
			return append(bs[:i], append([]ledger.Balance{{Asset: asset, Amount: n}}, bs[i:]...)...)
		}
	}
	return append(bs, ledger.Balance{Asset: asset, Amount: n})
}
