package booking_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"redrain/booking/bookingtest"
	"redrain/ledger"
	"redrain/storage/storagetest"
)

// benchBatch and benchParts: each op books benchParts batches of benchBatch
// grants at once, each batch to its own partition (as that many owners
// would), every grant to a new user.
const benchBatch, benchParts = 128, 4

// BenchmarkBookHotBudget compares booking when every grant debits ONE
// budget with the same grants spread over 64 budgets. Booking writes one
// unaggregated hot detail per budget per transaction and never reads the
// budget, so concurrent batches do not conflict on a hot budget; spreading
// only adds detail keys to each transaction.
//
//	go test ./booking -run '^$' -bench BookHotBudget -benchtime 40x
func BenchmarkBookHotBudget(b *testing.B) {
	for _, budgets := range []int{1, 64} {
		b.Run(fmt.Sprintf("budgets=%d", budgets), func(b *testing.B) {
			f := bookingtest.New(b, storagetest.TiKV(b, ""), benchParts, 1<<50)
			ids := []string{f.Budget}
			for len(ids) < budgets {
				ids = append(ids, f.AddBudget(1<<50))
			}
			leases := make([]*ledger.Lease, len(ids))
			for i, id := range ids {
				leases[i] = f.Lease(id, 1<<40)
			}
			bk := newBooker(b, f, "bench", nil, nil)
			batches := func() [][]ledger.Grant {
				out := make([][]ledger.Grant, benchParts)
				for p := range out {
					for j := range benchBatch {
						u := userIn(f, int32(p))
						out[p] = append(out[p], f.Grant(u, 1, leases[j%len(leases)], amountOf(u, 1)))
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
				for _, gs := range work {
					wg.Go(func() {
						if _, err := bk.Book(context.Background(), gs); err != nil {
							b.Error(err)
						}
					})
				}
				wg.Wait()
				grants += benchParts * benchBatch
			}
			b.ReportMetric(float64(grants)/time.Since(start).Seconds(), "grants/s")
		})
	}
}
