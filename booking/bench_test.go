package booking_test

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"redrain/booking"
	"redrain/booking/bookingtest"
	"redrain/grant/granttest"
	"redrain/ledger"
	"redrain/storage"
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
			bk := newBooker(b, f, "bench", nil)
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

// BenchmarkOwnerBooks measures booking alone as a partition's owner does
// it: records of 1,000 grants to new users fed to two partitions' owners,
// committed by the node's committers into the embedded store, until the
// store holds them booked. cpu-ns/grant is the process's CPU (the embedded
// store's included) per booked grant; keys/grant and grants/txn are what
// `redrain bench` prints for a node. jrnl-B/grant is the journal bytes
// written per booked grant and page-B/account what a checkpoint page of
// the booked accounts takes per account (measured after the clock stops:
// a run this short writes few pages).
//
//	go test ./booking -run '^$' -bench OwnerBooks -benchtime 200000x
func BenchmarkOwnerBooks(b *testing.B) {
	const parts, perRecord = 2, 1000
	f := bookingtest.New(b, storagetest.TiKV(b, ""), parts, 1<<50)
	l := f.Lease(f.Budget, 1<<40)
	bk := newBooker(b, f, "bench", nil)
	msgs := make([]chan *sarama.ConsumerMessage, parts)
	for p := range msgs {
		msgs[p] = make(chan *sarama.ConsumerMessage, 64)
	}
	runOwner(b, bk, msgs...)
	bookingtest.Eventually(b, within, "partitions owned", func() error {
		if len(bk.Claims()) != parts {
			return fmt.Errorf("owns %v", bk.Claims())
		}
		return nil
	})
	// The records, encoded before the clock starts.
	var records [parts][][]byte
	var users []uint64
	for p := range int32(parts) {
		for n := 0; n < b.N/parts; n += perRecord {
			gs := make([]ledger.Grant, 0, perRecord)
			for range min(perRecord, b.N/parts-n) {
				u := userIn(f, p)
				users = append(users, u)
				gs = append(gs, f.Grant(u, 1, l, amountOf(u, 1)))
			}
			records[p] = append(records[p], ledger.AppendGrantRecord(nil, gs))
		}
	}
	b.ReportAllocs()
	cpu0 := granttest.ProcessCPU()
	b.ResetTimer()
	for p := range parts {
		go func() {
			for off, v := range records[p] {
				msgs[p] <- &sarama.ConsumerMessage{Topic: storage.GrantTopic, Partition: int32(p), Offset: int64(off), Value: v}
			}
		}()
	}
	want := int64(b.N / parts * parts)
	for bk.Booked.Load() < want {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	booked := float64(bk.Booked.Load())
	if booked == 0 {
		return // b.N below one grant per partition
	}
	b.ReportMetric(float64(granttest.ProcessCPU()-cpu0)/booked, "cpu-ns/grant")
	b.ReportMetric(float64(bk.Keys.Load())/booked, "keys/grant")
	b.ReportMetric(booked/float64(bk.Batches.Load()), "grants/txn")
	b.ReportMetric(float64(journalBytes(b, f, parts))/booked, "jrnl-B/grant")
	pageBytes, accounts := pageBytesOf(b, bk, parts, users)
	b.ReportMetric(float64(pageBytes)/float64(accounts), "page-B/account")
}

// runOwner runs bk's committers and its ownership of partition p fed by
// msgs[p] until the benchmark ends, and waits for them to return before
// the store closes (its cleanup was registered first, so it runs after
// this one): a booker still releasing its partitions when the embedded
// store closed panicked inside goleveldb.
func runOwner(b *testing.B, bk *booking.Booker, msgs ...chan *sarama.ConsumerMessage) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for p, m := range msgs {
		wg.Go(func() { bk.Own(ctx, int32(p), m) })
	}
	wg.Go(func() { bk.CommitLoop(ctx) })
	b.Cleanup(func() {
		cancel()
		wg.Wait()
	})
}

// journalBytes sums the encoded journals of partitions [0, parts).
func journalBytes(b *testing.B, f *bookingtest.Fixture, parts int32) int {
	n := 0
	for p := range parts {
		prefix := storage.JournalPrefix(p)
		err := f.KV.Scan(context.Background(), prefix, storage.PrefixEnd(prefix), func(_, raw []byte) (bool, error) {
			n += len(raw)
			return true, nil
		})
		if err != nil {
			b.Fatalf("partition %d journals: %v", p, err)
		}
	}
	return n
}

// pageBytesOf encodes the owner's accounts of ids as checkpoint pages
// would hold them and returns their bytes and the accounts they hold.
func pageBytesOf(b *testing.B, bk *booking.Booker, parts int32, ids []uint64) (bytes, accounts int) {
	got, err := bk.Accounts(context.Background(), ids)
	if err != nil {
		b.Fatalf("accounts: %v", err)
	}
	pages := map[[2]uint64][]*ledger.Account{}
	for id, a := range got {
		k := [2]uint64{uint64(storage.PartitionOf(id, parts)), storage.PageOf(id)}
		pages[k] = append(pages[k], a)
	}
	for _, as := range pages {
		slices.SortFunc(as, func(x, y *ledger.Account) int { return cmp.Compare(x.ActID, y.ActID) })
		bytes += len(ledger.AppendPage(nil, &ledger.Page{Seq: 1, Accounts: as}))
		accounts += len(as)
	}
	return bytes, accounts
}

// BenchmarkOwnerMoves books consumptions through the owner of one
// partition (Booker.Move: a request into its goroutine, applied in a
// unit, answered once committed into the embedded store), from four
// callers of 256 moves a call, into 8,192 funded users (~25 moves each
// at 200,000). moves/s is the
// partition's rate; cpu-ns/move the process's CPU (the store's included)
// per booked move.
//
//	go test ./booking -run '^$' -bench OwnerMoves -benchtime 200000x
func BenchmarkOwnerMoves(b *testing.B) {
	const callers, perCall, users = 4, 256, 8192
	f := bookingtest.New(b, storagetest.TiKV(b, ""), 1, 1<<50)
	l := f.Lease(f.Budget, 1<<40)
	bk := newBooker(b, f, "bench", nil)
	runOwner(b, bk, make(chan *sarama.ConsumerMessage))
	bookingtest.Eventually(b, within, "partition owned", func() error {
		if len(bk.Claims()) != 1 {
			return fmt.Errorf("owns %v", bk.Claims())
		}
		return nil
	})
	ids := make([]uint64, users)
	grants := make([]ledger.Grant, users)
	for i := range ids {
		ids[i] = f.User()
		grants[i] = f.Grant(ids[i], 1, l, 1<<30)
	}
	book(b, bk, grants)
	// The moves, built before the clock starts.
	calls := make([][]ledger.Move, 0, b.N/perCall+1)
	for n := 0; n < b.N; n += perCall {
		ms := make([]ledger.Move, 0, perCall)
		for k := n; k < min(n+perCall, b.N); k++ {
			ms = append(ms, ledger.Move{ActID: ids[k%users], Kind: ledger.MoveConsume, Key: fmt.Sprint("bench/", k), AppID: 1,
				Legs: []ledger.Leg{{Asset: f.Asset, Amount: -1}}, Counter: "merchant/bench"})
		}
		calls = append(calls, ms)
	}
	b.ReportAllocs()
	cpu0 := granttest.ProcessCPU()
	start := time.Now()
	b.ResetTimer()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(calls) {
					return
				}
				out, err := bk.Move(context.Background(), calls[i])
				if err != nil {
					b.Error(err)
					return
				}
				for _, r := range out {
					if r != ledger.MoveApplied {
						b.Errorf("move: %v", r)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	elapsed := time.Since(start)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "moves/s")
	b.ReportMetric(float64(granttest.ProcessCPU()-cpu0)/float64(b.N), "cpu-ns/move")
}
