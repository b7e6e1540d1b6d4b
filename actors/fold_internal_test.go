package actors

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"redrain/ledger"
	"redrain/storage"
)

// TestConcurrentFoldTxns: two copies of a budget's grain folding at once
// (a stale one on a paused member and the live one) while booking writes
// details: each detail is folded exactly once, and the loser of a race
// fails with a conflict and changes nothing.
func TestConcurrentFoldTxns(t *testing.T) {
	ctx := context.Background()
	const id = "race/cash"
	kv := storedBudget(t, id, 1_000_000)
	err := kv.Update(ctx, func(txn storage.Txn) error {
		b, err := loadBudget(txn, id)
		if err != nil {
			return err
		}
		l := b.TakeLease(100_000, "n", 1)
		b.Version++
		if err := txn.Set(storage.BudgetKey(id), ledger.MarshalBudget(nil, b)); err != nil {
			return err
		}
		return txn.Set(storage.LeaseKey(id, l.ID), ledger.MarshalLease(nil, l))
	})
	if err != nil {
		t.Fatal(err)
	}

	const details = 200
	var written atomic.Int64
	var folded atomic.Int64
	var conflicts atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(done)
		for i := range details {
			amount := int64(1 + i%7)
			h := &ledger.HotDetail{BudgetID: id, Amount: amount, Count: 1, Leases: []ledger.LeaseUse{{LeaseID: 1, Amount: amount, Count: 1}}}
			err := kv.Update(ctx, func(txn storage.Txn) error {
				return txn.Set(storage.HotKey(id, txn.StartTS(), 0), ledger.MarshalHotDetail(nil, h))
			})
			if err != nil {
				t.Errorf("write detail: %v", err)
				return
			}
			written.Add(amount)
		}
	})
	errs := make(chan error, 2)
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				f, err := foldTxn(ctx, kv, id)
				switch {
				case errors.Is(err, storage.ErrConflict):
					conflicts.Add(1)
				case err != nil:
					errs <- err
					return
				default:
					folded.Add(f.Amount)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("fold: %v", err)
	}
	for {
		f, err := foldTxn(ctx, kv, id)
		if err != nil {
			t.Fatal(err)
		}
		folded.Add(f.Amount)
		if f.Details == 0 {
			break
		}
	}
	var b *ledger.Budget
	var l *ledger.Lease
	err = kv.Update(ctx, func(txn storage.Txn) error {
		var err error
		if b, err = loadBudget(txn, id); err != nil {
			return err
		}
		raw, err := storage.Get(ctx, txn, storage.LeaseKey(id, 1))
		if err != nil {
			return err
		}
		l, err = ledger.UnmarshalLease(raw)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if b.Folded != written.Load() || folded.Load() != written.Load() || l.Booked != written.Load() || b.FoldedCount != details {
		t.Fatalf("written %d; folds report %d; budget folded %d (%d grants); lease booked %d",
			written.Load(), folded.Load(), b.Folded, b.FoldedCount, l.Booked)
	}
	t.Logf("%d conflicts between the two folders", conflicts.Load())
}
