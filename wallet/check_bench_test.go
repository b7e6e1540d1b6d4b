package wallet_test

import (
	"context"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"redrain/booking"
	"redrain/booking/bookingtest"
	"redrain/ledger"
	"redrain/metrics"
	"redrain/storage"
	"redrain/storage/storagetest"
	"redrain/wallet"
)

// BenchmarkCheck measures the on-demand check (redrain reconcile --redis)
// of the users changed in a window: 100,000 users booked one grant each
// into the embedded store, redis-server holding for each either a summary
// equal to the store's (every user read after their last change: each one
// costs a store read) or a tombstone (nobody read them since: an MGET
// slot each). It reports users checked a second.
func BenchmarkCheck(b *testing.B) {
	const users, batch = 100_000, 2000
	ctx := context.Background()
	kv := storagetest.TiKV(b, "")
	f := bookingtest.New(b, kv, parts, 1<<50)
	bk := booking.New(booking.Config{Log: slog.New(slog.DiscardHandler), TiKV: kv, Partitions: parts, Metrics: &metrics.Registry{}, Clock: time.Now, Owner: "bench"})
	start := time.Now()
	acts := make([]uint64, users)
	for i := range acts {
		acts[i] = f.User()
	}
	for i := 0; i < users; i += batch {
		gs := make([]ledger.Grant, 0, batch)
		for _, u := range acts[i : i+batch] {
			gs = append(gs, f.Grant(u, 1, f.Lease(f.Budget, 100), 100))
		}
		bookingtest.WantOutcomes(b, bookingtest.Book(b, bk, gs), booking.BookedNow)
	}
	until := time.Now()
	var seqs []uint64
	if err := kv.View(func(txn storage.Txn) error {
		var err error
		seqs, err = booking.JournalSeqs(ctx, txn, parts)
		return err
	}); err != nil {
		b.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: storagetest.Redis(b)})
	b.Cleanup(func() { _ = rdb.Close() })
	for p, seq := range seqs {
		if err := rdb.Set(ctx, "rr:wseq:"+strconv.Itoa(p), seq, 0).Err(); err != nil {
			b.Fatal(err)
		}
	}
	accounts := f.Accounts(acts)
	for _, kind := range []string{"summaries", "tombstones"} {
		pipe := rdb.Pipeline()
		for _, u := range acts {
			seq := strconv.FormatUint(seqs[storage.PartitionOf(u, parts)], 10)
			v := seq + ":"
			if kind == "summaries" {
				a := accounts[u]
				body, err := wallet.EncodeSummary(wallet.Summary{ActID: u, Balances: a.Balances, Apps: a.Apps})
				if err != nil {
					b.Fatal(err)
				}
				v += string(body)
			}
			pipe.Set(ctx, wallet.CacheKey(u), v, time.Hour)
			if pipe.Len() == 1000 {
				if _, err := pipe.Exec(ctx); err != nil {
					b.Fatal(err)
				}
			}
		}
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
		b.Run(kind, func(b *testing.B) {
			b.ReportAllocs()
			cfg := wallet.CheckConfig{TiKV: kv, Redis: rdb, Parts: parts}
			var checked int
			var took time.Duration
			for b.Loop() {
				t0 := time.Now()
				r, err := wallet.Check(ctx, cfg, start, until)
				took += time.Since(t0)
				if err != nil || r.Checked != users || r.Drifted != 0 || r.Unsettled != 0 {
					b.Fatalf("Check: %+v, %v", r, err)
				}
				checked += r.Checked
			}
			b.ReportMetric(float64(checked)/took.Seconds(), "users/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}
