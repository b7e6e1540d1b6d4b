package wallet_test

import (
	"testing"

	"github.com/redis/go-redis/v9"

	"redrain/holders"
	"redrain/ledger"
	"redrain/storage/storagetest"
	"redrain/wallet"
)

// TestMovesReachTheWallet: a move's debit and credit reach a read at once
// on the node that booked it (OnMoved) and through the Feed (the cached
// summary is superseded), and a user whose balances
// of a family all became zero is no longer its holder, while one who kept
// some, or received some by a move, is.
func TestMovesReachTheWallet(t *testing.T) {
	addr := storagetest.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = rdb.Close() })
	r := newRig(t, rdb, wallet.Config{})
	spender, keeper, receiver := r.f.User(), r.f.User(), r.f.User()
	r.allocate(receiver + 1)
	r.book(spender, 50)
	r.book(keeper, 50)
	r.run()
	for _, u := range []uint64{spender, keeper} {
		r.read(u) // a summary in Redis that the moves must supersede
	}
	coin := r.f.Asset
	r.b.OnMoved(r.w.Moved) // as a node wires it
	results, err := r.b.Move(r.ctx, []ledger.Move{
		{ActID: spender, Kind: ledger.MoveConsume, Key: "all", Legs: []ledger.Leg{{Asset: coin, Amount: -50}}, Counter: "merchant/m"},
		{ActID: keeper, Kind: ledger.MoveGiftOut, Key: "g", Legs: []ledger.Leg{{Asset: coin, Amount: -20}}, Counter: "transfer/g"},
		{ActID: receiver, Kind: ledger.MoveGiftIn, Key: "g", Legs: []ledger.Leg{{Asset: coin, Amount: 20}}, Counter: "transfer/g"},
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, res := range results {
		if res != ledger.MoveApplied {
			t.Fatalf("move %d: %v", i, res)
		}
	}
	// At once, before the Feed polls: this node booked them, so reads of
	// their users skip the summaries Redis holds.
	for u, want := range map[uint64]int64{spender: 0, keeper: 30, receiver: 20} {
		if got := balanceOf(r.read(u), coin); got != want {
			t.Fatalf("act %d read right after its move: balance %d, want %d", u, got, want)
		}
	}
	r.caughtUp()
	for u, want := range map[uint64]int64{spender: 0, keeper: 30, receiver: 20} {
		if got := balanceOf(r.read(u), coin); got != want {
			t.Fatalf("act %d: balance %d, want %d", u, got, want)
		}
	}
	set := r.w.Holders()
	for u, want := range map[uint64]holders.Answer{spender: holders.No, keeper: holders.Yes, receiver: holders.Yes} {
		if got := set.Contains(u, holders.Coin); got != want {
			t.Fatalf("act %d: holder of coins %v, want %v", u, got, want)
		}
	}
	if s := r.read(spender); s.Source != wallet.SourceHolders {
		t.Fatalf("a user who spent everything was answered by %s, want the holders layer", s.Source)
	}
}
