package actors_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tikv/client-go/v2/txnkv/transaction"

	"redrain/ledger"
	"redrain/storage"
)

// benchBatch and benchBookers: each op books benchBookers batches of
// benchBatch grants at once (as that many partitions would), every grant
// to a new user.
const benchBatch, benchBookers = 128, 4

// BenchmarkBookHotBudget compares booking when every grant debits ONE
// budget with the same grants spread over 64 budgets. Booking writes one
// unaggregated hot detail per budget per batch and never reads the budget,
// so concurrent batches do not conflict on a hot budget; spreading only
// adds detail keys to each transaction.
//
//	go test ./actors -run '^$' -bench BookHotBudget -benchtime 40x
func BenchmarkBookHotBudget(b *testing.B) {
	for _, budgets := range []int{1, 64} {
		b.Run(fmt.Sprintf("budgets=%d", budgets), func(b *testing.B) {
			f := newFixture(b, 1<<50)
			ids := []string{f.budget}
			for len(ids) < budgets {
				ids = append(ids, f.addBudget(1<<50))
			}
			leases := make([]*ledger.Lease, len(ids))
			for i, id := range ids {
				leases[i] = f.lease(id, 1<<40)
			}
			bookers := make([]interface {
				Book(context.Context, []ledger.Grant) ([]byte, error)
			}, benchBookers)
			for i := range bookers {
				bk, _ := newBooker(b, nil, 0)
				bookers[i] = bk
			}
			batches := func() [][]ledger.Grant {
				out := make([][]ledger.Grant, benchBookers)
				for i := range out {
					for j := range benchBatch {
						u := f.user()
						out[i] = append(out[i], f.grant(u, 1, leases[j%len(leases)], amountOf(u, 1)))
					}
				}
				return out
			}
			b.ReportAllocs()
			start := time.Now()
			grants := 0
			for b.Loop() {
				work := batches()
				var wg sync.WaitGroup
				for i, bk := range bookers {
					wg.Go(func() {
						if _, err := bk.Book(context.Background(), work[i]); err != nil {
							b.Error(err)
						}
					})
				}
				wg.Wait()
				grants += benchBookers * benchBatch
			}
			b.ReportMetric(float64(grants)/time.Since(start).Seconds(), "grants/s")
		})
	}
}

// BenchmarkFold folds backlogs of one fold transaction's size (256 details
// over 8 leases) through the budget's grain.
//
//	go test ./actors -run '^$' -bench Fold -benchtime 40x
func BenchmarkFold(b *testing.B) {
	const perOp, leases = 256, 8
	f := newFixture(b, 1<<50)
	var ls []*ledger.Lease
	for range leases {
		ls = append(ls, f.lease(f.budget, 1<<40))
	}
	ts := uint64(1)
	b.ReportAllocs()
	var spent time.Duration
	details := 0
	for b.Loop() {
		b.StopTimer()
		err := env.tikv.Update(context.Background(), func(txn *transaction.KVTxn) error {
			for i := range perOp {
				l := ls[i%leases]
				h := &ledger.HotDetail{BudgetID: f.budget, Amount: 100, Count: 3,
					Leases: []ledger.LeaseUse{{LeaseID: l.ID, Amount: 100, Count: 3}}}
				if err := txn.Set(storage.HotKey(f.budget, ts, 0), ledger.MarshalHotDetail(nil, h)); err != nil {
					return err
				}
				ts++
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		r, err := env.budgets.Fold(f.budget)
		spent += time.Since(start)
		if err != nil || r.Details != perOp || r.More {
			b.Fatalf("Fold = %+v, %v, want %d details", r, err, perOp)
		}
		details += r.Details
	}
	b.ReportMetric(float64(details)/spent.Seconds(), "details/s")
}
