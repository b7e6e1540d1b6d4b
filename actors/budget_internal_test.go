package actors

import (
	"context"
	"encoding/binary"
	"log/slog"
	"sync"
	"testing"

	"redrain/ledger"
	"redrain/storage"
	"redrain/storage/storagetest"
)

// TestTwoCopiesOfAGrainTakeLeases: two copies of a budget's grain (as
// while members still disagree on where it lives) take leases of one
// budget at once. Each lost write conflict is retried, so every take is
// answered with a lease, none fails, and the budget's outstanding amount
// is the sum of the leases handed out: nothing twice, nothing lost.
func TestTwoCopiesOfAGrainTakeLeases(t *testing.T) {
	const id = "copies/cash"
	kv := storedBudget(t, id, 1_000_000)
	const takes, want = 40, 100
	req := []byte{msgTakeLease}
	req = appendStr(req, id)
	req = binary.AppendVarint(req, want)
	req = appendStr(req, "n")
	req = binary.AppendUvarint(req, 1)
	var mu sync.Mutex
	ids := map[uint64]bool{}
	var wg sync.WaitGroup
	for range 2 {
		g := &budgetGrain{log: slog.New(slog.DiscardHandler), tikv: kv}
		wg.Go(func() {
			for range takes {
				payload, err := replyPayload(g.handle(req), nil)
				if err != nil {
					t.Errorf("take lease: %v", err)
					return
				}
				d := wireDecoder{b: payload}
				l, err := ledger.UnmarshalLease([]byte(d.str()))
				if err != nil || l.Amount != want {
					t.Errorf("lease %+v: %v", l, err)
					return
				}
				mu.Lock()
				if ids[l.ID] {
					t.Errorf("lease %d handed out twice", l.ID)
				}
				ids[l.ID] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	var b *ledger.Budget
	err := kv.View(func(txn storage.Txn) error {
		var err error
		b, err = loadBudget(txn, id)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 2*takes || b.Leased-b.Returned != 2*takes*want {
		t.Fatalf("%d leases handed out; budget leased %d returned %d, want %d out", len(ids), b.Leased, b.Returned, 2*takes*want)
	}
}

// storedBudget is a test cluster holding budget id of cash with total.
func storedBudget(t *testing.T, id string, total int64) *storage.TiKV {
	t.Helper()
	kv := storagetest.TiKV(t, "")
	if _, err := EnsureBudget(context.Background(), kv, &ledger.Budget{ID: id, Asset: ledger.AssetCash, Total: total}); err != nil {
		t.Fatal(err)
	}
	return kv
}
