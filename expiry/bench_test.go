package expiry_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"redrain/booking"
	"redrain/booking/bookingtest"
	"redrain/expiry"
	"redrain/ledger"
	"redrain/metrics"
	"redrain/storage/storagetest"
)

// BenchmarkSweep: accounts swept per second through a Booker that owns
// all 16 partitions (the embedded broker's group, the embedded store):
// reads from the owners' memory, moves applied in their units, each account holding gold recharged in
// January 2025 and half of it spent in June, swept in March 2026 with
// gold valid 12 months: one read per 1,024 accounts, one booking call per
// 4,096 moves. Every account expires (the moves are booked); b.N accounts.
func BenchmarkSweep(b *testing.B) {
	const parts = 16
	f := bookingtest.New(b, storagetest.TiKV(b, ""), parts, 1_000_000)
	k := storagetest.Kafka(b, "", parts)
	c := &clock{}
	bk := booking.New(booking.Config{Log: testLog, TiKV: f.KV, Brokers: k.Brokers, Partitions: parts, Metrics: &metrics.Registry{},
		Clock: c.now, Owner: "a"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- bk.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-done })
	for deadline := time.Now().Add(time.Minute); len(bk.Claims()) < parts; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("the booker owns %d of %d partitions after a minute", len(bk.Claims()), parts)
		}
	}
	ids := make([]uint64, b.N)
	for i := range ids {
		ids[i] = uint64(1 + i)
	}
	for _, step := range []struct {
		month time.Month
		kind  ledger.MoveKind
		n     int64
	}{{time.January, ledger.MoveRecharge, 100}, {time.June, ledger.MoveConsume, -50}} {
		c.set(2025, step.month, 5)
		for chunk := range slices.Chunk(ids, expiry.MoveBatch) {
			moves := make([]ledger.Move, len(chunk))
			for i, id := range chunk {
				moves[i] = ledger.Move{ActID: id, Kind: step.kind, Key: fmt.Sprint("s", step.month), AppID: 1,
					Legs: []ledger.Leg{{Asset: gold, Amount: step.n}}, Counter: "recharge/1"}
				if step.kind == ledger.MoveConsume {
					moves[i].Counter = "merchant/m1"
				}
			}
			if _, err := bk.Move(ctx, moves); err != nil {
				b.Fatal(err)
			}
		}
	}
	c.set(2026, time.March, 3)
	s := &expiry.Sweeper{Booker: bk, Rules: map[ledger.Asset]int{gold: 12}}
	b.ResetTimer()
	r, err := s.Sweep(ctx, slices.Values(ids), c.ms.Load())
	b.StopTimer()
	if err != nil || r.Applied != b.N || r.Expired["expired/coin:gold"][gold] != 50*int64(b.N) {
		b.Fatalf("sweep %+v, %v", r, err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "accounts/s")
}

// BenchmarkPlan: the sweep's arithmetic alone, per account of 24 months
// of summaries in two assets with a validity.
func BenchmarkPlan(b *testing.B) {
	c := &clock{}
	a := &ledger.Account{ActID: 1}
	for mo := range 24 {
		c.set(2024+mo/12, time.Month(mo%12+1), 3)
		for _, asset := range []ledger.Asset{gold, rose} {
			m := ledger.Move{ActID: 1, Kind: ledger.MoveGiftIn, Key: fmt.Sprint(asset, mo), Legs: []ledger.Leg{{Asset: asset, Amount: 10}}, Counter: "transfer/x"}
			if _, _, err := a.ApplyMove(&m, c.ms.Load()); err != nil {
				b.Fatal(err)
			}
		}
	}
	s := &expiry.Sweeper{Rules: map[ledger.Asset]int{gold: 12, rose: 6}}
	now := ledger.MonthOf(c.ms.Load()) + 1
	var moves []ledger.Move
	for b.Loop() {
		moves = s.Plan(moves[:0], a, now)
	}
	if len(moves) != 2 {
		b.Fatalf("%d moves", len(moves))
	}
}
