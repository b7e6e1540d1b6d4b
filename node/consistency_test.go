package node_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"redrain/booking"
	"redrain/consistency"
	"redrain/ledger"
	"redrain/metrics"
	"redrain/spend"
	"redrain/storage"
	"redrain/storage/storagetest"
)

// TestConsistencyRepairsThroughOwner: a transfer whose receiver's move is
// missing (written into the store as a node that does not own the
// partition would, two minutes ago) is found by the node's consistency
// check and completed through the node's own booker, which owns the
// partition; the audit then passes.
func TestConsistencyRepairsThroughOwner(t *testing.T) {
	past := time.Now().Add(-2 * time.Minute)
	n := startNode(t, t.TempDir(), storagetest.Redis(t))
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	other := booking.New(booking.Config{Log: slog.New(slog.DiscardHandler), TiKV: n.Store(), Partitions: n.Partitions(),
		Metrics: &metrics.Registry{}, Clock: func() time.Time { return past }, Owner: "elsewhere"})
	const from, to = uint64(1<<30 + 11), uint64(1<<30 + 12)
	gold := ledger.CoinAsset("gold")
	moves := spend.Moves(&spend.Request{Op: spend.OpRecharge, AppID: 1, ActID: from, Asset: gold, Amount: 100, RequestID: "r-1"})
	transfer := spend.Moves(&spend.Request{Op: spend.OpTransfer, AppID: 1, ActID: from, ToActID: to, Asset: gold, Amount: 30, RequestID: "t-1"})
	if res, err := other.Move(ctx, append(moves, transfer[0])); err != nil || res[0] != ledger.MoveApplied || res[1] != ledger.MoveApplied {
		t.Fatalf("moves: %v %v", res, err)
	}
	r, err := n.ConsistencyRepairToday(ctx)
	if err != nil || r.Count(consistency.KindTransfer) != 1 || !r.OK() || r.Repaired != 1 {
		t.Fatalf("consistency: %v %+v", err, r)
	}
	var got int64
	err = n.Store().View(func(txn storage.Txn) error {
		accounts, err := booking.ReadAccounts(ctx, txn, n.Partitions(), []uint64{to})
		if a := accounts[to]; a != nil {
			got = a.Balance(gold)
		}
		return err
	})
	if err != nil || got != 30 {
		t.Fatalf("receiver's balance %d (%v), want 30", got, err)
	}
	if r, err := n.ConsistencyRepairToday(ctx); err != nil || len(r.Mismatches) != 0 {
		t.Fatalf("consistency after the repair: %v %+v", err, r)
	}
	audit(t, n)
}
