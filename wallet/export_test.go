package wallet

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// Fill, Drop and Fence are the cache's writes, for tests (one partition).
func Fill(ctx context.Context, rdb *redis.Client, s Summary, seq uint64, ttl time.Duration) error {
	return (&cache{rdb: rdb, ttl: ttl, parts: 1}).fill(ctx, s, seq)
}

func Drop(ctx context.Context, rdb *redis.Client, changed map[uint64]uint64, ttl time.Duration) error {
	return (&cache{rdb: rdb, ttl: ttl, parts: 1}).drop(ctx, changed)
}

func Fence(ctx context.Context, rdb *redis.Client, seq uint64) error {
	return (&cache{rdb: rdb, parts: 1}).fence(ctx, map[int]uint64{0: seq})
}
