package actors_test

import (
	"context"
	"testing"
	"time"

	"redrain/ledger"
	"redrain/storage"
)

// BenchmarkFold folds backlogs of one fold transaction's size (256 details
// over 8 leases) through the budget's grain.
//
//	go test ./actors -run '^$' -bench Fold -benchtime 40x
func BenchmarkFold(b *testing.B) {
	const perOp, leases = 256, 8
	f := newFixture(b, 1<<50)
	var ls []*ledger.Lease
	for range leases {
		ls = append(ls, f.Lease(f.Budget, 1<<40))
	}
	ts := uint64(1)
	b.ReportAllocs()
	var spent time.Duration
	details := 0
	for b.Loop() {
		b.StopTimer()
		err := env.tikv.Update(context.Background(), func(txn storage.Txn) error {
			for i := range perOp {
				l := ls[i%leases]
				h := &ledger.HotDetail{BudgetID: f.Budget, Amount: 100, Count: 3,
					Leases: []ledger.LeaseUse{{LeaseID: l.ID, Amount: 100, Count: 3}}}
				if err := txn.Set(storage.HotKey(f.Budget, ts, 0), ledger.MarshalHotDetail(nil, h)); err != nil {
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
		r, err := env.budgets.Fold(f.Budget)
		spent += time.Since(start)
		if err != nil || r.Details != perOp || r.More {
			b.Fatalf("Fold = %+v, %v, want %d details", r, err, perOp)
		}
		details += r.Details
	}
	b.ReportMetric(float64(details)/spent.Seconds(), "details/s")
}
