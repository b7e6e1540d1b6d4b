package wallet_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"redrain/ledger"
	"redrain/wallet"
)

// TestFeedLooksOnlyAtListedSummaries: with the Feed running against a
// real redis-server, bookings of users nobody read cost no Redis lookup;
// the users whose wallets were read (their summaries listed) are looked
// up, their summaries superseded, and every read stays exact.
func TestFeedLooksOnlyAtListedSummaries(t *testing.T) {
	r := newRig(t, redisClient(t), wallet.Config{})
	users := r.users(120)
	r.run()
	want := map[uint64]int64{}
	for _, u := range users {
		r.book(u, 10)
		want[u] += 10
	}
	r.caughtUp()
	r.tombstonesTaken()
	if looked, skipped := r.w.Looked(); looked != 0 || skipped < int64(len(users)) {
		t.Fatalf("bookings of %d users nobody read: %d looked up in Redis, %d skipped; want 0 and all", len(users), looked, skipped)
	}
	read := users[:3]
	for _, u := range read {
		if s := r.read(u); s.Source != wallet.SourceStore {
			t.Fatalf("first read of %d from %s, want the store (it fills Redis)", u, s.Source)
		}
		if s := r.read(u); s.Source != wallet.SourceCache {
			t.Fatalf("second read of %d from %s, want Redis", u, s.Source)
		}
	}
	for _, u := range users {
		r.book(u, 7)
		want[u] += 7
	}
	r.caughtUp()
	r.tombstonesTaken()
	if looked, _ := r.w.Looked(); looked < int64(len(read)) || looked > 2*int64(len(read)) {
		t.Fatalf("%d users booked again, %d of them read: %d looked up in Redis", len(users), len(read), looked)
	}
	for _, u := range users {
		if got := balanceOf(r.read(u), r.f.Asset); got != want[u] {
			t.Fatalf("act %d: balance %d, want %d", u, got, want[u])
		}
	}
}

// TestListCompleteOnlyFromItsStart: summaries written before the list
// began (by writers that did not list them: the fences were up) are looked
// for until the list is older than the TTL; a list that began before any
// fence names every summary at once; entries older than the TTL are
// trimmed and forgotten.
func TestListCompleteOnlyFromItsStart(t *testing.T) {
	mini := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mini.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := context.Background()
	t0 := time.Unix(1_800_000_000, 0)
	mini.SetTime(t0)
	const ttl = time.Minute
	sum := func(act uint64) wallet.Summary {
		return wallet.Summary{ActID: act, Balances: []ledger.Balance{{Asset: ledger.AssetCash, Amount: 5}}}
	}
	key := func(act uint64) string {
		v, err := rdb.Get(ctx, wallet.CacheKey(act)).Result()
		if errors.Is(err, redis.Nil) {
			return ""
		}
		if err != nil {
			t.Fatal(err)
		}
		return v
	}

	// An older writer's summary of act 9, fences up, no list.
	if err := wallet.Fence(ctx, rdb, 5); err != nil {
		t.Fatal(err)
	}
	body, _ := wallet.EncodeSummary(sum(9))
	if err := rdb.Set(ctx, wallet.CacheKey(9), "5:"+string(body), 0).Err(); err != nil {
		t.Fatal(err)
	}
	c := wallet.NewListCache(rdb, ttl)
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if c.Full() {
		t.Fatal("a list begun after the fences is complete at once")
	}
	if err := c.Drop(ctx, map[uint64]uint64{9: 6, 10: 6}); err != nil {
		t.Fatal(err)
	}
	if got := key(9); got != "6:" {
		t.Fatalf("unlisted summary of an older writer: key holds %q, want the tombstone 6:", got)
	}
	if looked, skipped := c.Looked(); looked != 2 || skipped != 0 {
		t.Fatalf("before the list is complete: %d looked up, %d skipped; want 2, 0", looked, skipped)
	}

	// A summary listed now, then the list older than the TTL: complete.
	if err := wallet.Fence(ctx, rdb, 7); err != nil {
		t.Fatal(err)
	}
	if err := c.Fill(ctx, sum(11), 7); err != nil {
		t.Fatal(err)
	}
	mini.SetTime(t0.Add(ttl + time.Second))
	if err := c.Fill(ctx, sum(12), 7); err != nil {
		t.Fatal(err)
	}
	if err := wallet.Fence(ctx, rdb, 8); err != nil {
		t.Fatal(err)
	}
	if err := c.Drop(ctx, map[uint64]uint64{11: 8, 12: 8, 13: 8}); err != nil {
		t.Fatal(err)
	}
	if !c.Full() {
		t.Fatal("the list is not complete a TTL after it began")
	}
	// 11's entry is past the TTL: trimmed from the stream and forgotten
	// (its summary has expired in a real Redis: written with that TTL).
	if n, err := rdb.XLen(ctx, "rr:wlist").Result(); err != nil || n != 1 {
		t.Fatalf("the list holds %d entries (%v), want 1 (12's)", n, err)
	}
	if c.Listed(11) || !c.Listed(12) {
		t.Fatalf("listed 11: %v, 12: %v; want false, true", c.Listed(11), c.Listed(12))
	}
	if got := key(12); got != "8:" {
		t.Fatalf("listed summary of 12: key holds %q, want the tombstone 8:", got)
	}
	if looked, skipped := c.Looked(); looked != 3 || skipped != 2 {
		t.Fatalf("after: %d looked up, %d skipped; want 3 (9, 10, then 12), 2 (11, 13)", looked, skipped)
	}

	// A fresh Redis: the list begins before any fence and is complete.
	mini.FlushAll()
	fresh := wallet.NewListCache(rdb, ttl)
	if err := fresh.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if !fresh.Full() {
		t.Fatal("a list begun before any fence is not complete")
	}
	// The first cache sees the list begin again and reads it anew.
	if err := wallet.Fence(ctx, rdb, 9); err != nil {
		t.Fatal(err)
	}
	if err := c.Drop(ctx, map[uint64]uint64{12: 9}); err != nil {
		t.Fatal(err)
	}
	if c.Listed(12) || !c.Full() {
		t.Fatalf("after Redis was emptied: 12 listed %v, complete %v; want false, true", c.Listed(12), c.Full())
	}
	if got := key(12); got != "" || strings.Contains(got, "{") {
		t.Fatalf("key of 12 holds %q after the flush, want nothing", got)
	}
}
