package wallet

import (
	"context"
	"maps"
	"time"

	"github.com/redis/go-redis/v9"
)

// Fill, Drop and Fence are the cache's writes, for tests (one partition).
func Fill(ctx context.Context, rdb *redis.Client, s Summary, seq uint64, ttl time.Duration) error {
	return newCache(rdb, ttl, 1).fill(ctx, s, seq)
}

func Drop(ctx context.Context, rdb *redis.Client, changed map[uint64]uint64, ttl time.Duration) error {
	return newCache(rdb, ttl, 1).drop(ctx, changed)
}

func Fence(ctx context.Context, rdb *redis.Client, seq uint64) error {
	return newCache(rdb, 0, 1).fence(ctx, map[int]uint64{0: seq})
}

// CheckCounts are the continuous check's counters: accounts checked,
// drifted and repaired.
func (w *Wallets) CheckCounts() (checked, drifted, repaired int64) {
	return w.CheckCountsOf("recent")
}

// CheckCountsOf are the counters of a check: recent or daily.
func (w *Wallets) CheckCountsOf(check string) (checked, drifted, repaired int64) {
	k := w.checks
	return k.checked[check].Load(), k.drift[check].Load(), k.repaired[check].Load()
}

// NextDaily is when the daily check runs next, and the day it checks.
var NextDaily = nextDaily

// EncodeSummary is a summary's JSON as Redis holds it.
var EncodeSummary = encodeSummary

// DailyNext is when the daily check runs next (unix seconds; 0: none).
func (w *Wallets) DailyNext() int64 { return w.checks.dailyNext.Load() }

// Repair is a check's repair: s at seq in place of read.
func Repair(ctx context.Context, rdb *redis.Client, s Summary, seq uint64, read string) (bool, error) {
	return newCache(rdb, time.Minute, 1).repair(ctx, s, seq, read)
}

// Pendings is how many users' reads skip Redis (tombstones not taken yet,
// or holds), or -1 while every read does (distrust).
func (w *Wallets) Pendings() int64 {
	if w.distrust.Load() {
		return -1
	}
	return w.pendings.Load()
}

// CacheReady says whether reads use Redis yet.
func (w *Wallets) CacheReady() bool { return w.cacheReady.Load() }

// RedisDown says whether the last word from Redis was a failure.
func (w *Wallets) RedisDown() bool { return w.redisDown.Load() }

// ListCache is one partition's cache kept across calls, for tests of the
// list of summaries.
type ListCache struct{ c *cache }

func NewListCache(rdb *redis.Client, ttl time.Duration) ListCache {
	return ListCache{newCache(rdb, ttl, 1)}
}

// Start is the Feed's first look at the list (before its fences).
func (l ListCache) Start(ctx context.Context) error { _, _, err := l.c.listStart(ctx); return err }

func (l ListCache) Fill(ctx context.Context, s Summary, seq uint64) error {
	return l.c.fill(ctx, s, seq)
}

func (l ListCache) Drop(ctx context.Context, changed map[uint64]uint64) error {
	return l.c.drop(ctx, changed)
}

// Looked is how many changed accounts drop looked up in Redis and how many
// it skipped (no summary listed); Full whether the list names every
// summary; Listed whether it names act's.
func (l ListCache) Looked() (looked, skipped int64) { return l.c.looked.Load(), l.c.skipped.Load() }
func (l ListCache) Full() bool                      { return l.c.full }
func (l ListCache) Listed(act uint64) bool          { _, ok := l.c.listed[act]; return ok }

// Looked is ListCache.Looked of the Feed's cache.
func (w *Wallets) Looked() (looked, skipped int64) {
	return w.cache.looked.Load(), w.cache.skipped.Load()
}

// Poll is one poll of the Feed from have (updated in place), without Run.
func (w *Wallets) Poll(ctx context.Context, have []uint64) (bool, error) { return w.poll(ctx, have) }

// PendingTombstones is a copy of the tombstones the Feed's polls left to
// write: act -> seq.
func (w *Wallets) PendingTombstones() map[uint64]uint64 {
	w.pendMu.Lock()
	defer w.pendMu.Unlock()
	return maps.Clone(w.pending)
}

// JournalsRead is how many journals the Feed read from the store.
func (w *Wallets) JournalsRead() int64 { return w.journalsRead.Load() }

// BuildHolders builds the holders set from the store, as Run does first.
func (w *Wallets) BuildHolders(ctx context.Context) error { return w.build(ctx) }
