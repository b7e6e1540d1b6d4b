package wallet

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// Fill and Drop are the cache's two scripts, for tests.
func Fill(ctx context.Context, rdb *redis.Client, s Summary, seq uint64, ttl time.Duration) error {
	return (&cache{rdb: rdb, ttl: ttl}).fill(ctx, s, seq)
}

func Drop(ctx context.Context, rdb *redis.Client, changed map[uint64]uint64, ttl time.Duration) error {
	return (&cache{rdb: rdb, ttl: ttl}).drop(ctx, changed)
}
