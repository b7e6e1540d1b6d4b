// Package protect keeps a node serviceable under load and lets operators
// switch parts of a campaign off: token-bucket rate limits per user and per
// client app, a deterministic shed of a percentage of grant requests, and
// switches that close rains or whole activities. It is pure apart from the
// metrics it counts: it never reads a clock (callers pass now), holds no
// I/O, and knows nothing of HTTP; the ingress maps its verdicts to error
// codes. It must never block a request on a lock held across I/O.
package protect

import (
	"hash/maphash"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"redrain/metrics"
)

// Key names one rate-limited party: a user is (App, User), a client app is
// (App, "").
type Key struct {
	App  uint32
	User string
}

// limiterShards spreads keys over independently locked maps, so concurrent
// requests of different users rarely meet on one mutex.
const limiterShards = 64

// sampleSize is how many entries an insert into a full shard looks at to
// choose the one to evict (Redis's approximated LRU samples 5 by default;
// 8 keeps the choice close to the true oldest at the same O(1) cost).
const sampleSize = 8

// Limiter is a set of token buckets, one per key, each refilling at Rate
// tokens a second up to Burst. A key absent from the map has a full bucket,
// so a bucket that has been idle long enough to refill (Burst/Rate) is
// dropped without changing any answer: memory follows the keys active in
// the last refill time, not every key ever seen.
//
// Memory is also capped: at most KeysMax keys. An insert into a full shard
// first drops the shard's idle buckets; if none is idle it evicts the least
// recently used of a sample of sampleSize entries and counts it in
// Evictions. Evicting was chosen over refusing new keys: a flood of
// distinct keys (random user ids) would otherwise lock every new user out,
// while eviction only lets an evicted, still active key start again from a
// full bucket, at most Burst extra requests, which the per-client limit and
// the per-user grant limit in Redis still bound.
type Limiter struct {
	rate, burst float64
	fill        int64 // ns for an empty bucket to refill; idle this long = full
	shardMax    int   // Invariant: >= 1; keys per shard
	seed        maphash.Seed
	shards      [limiterShards]limiterShard
	evictions   atomic.Int64
	evicted     *metrics.Counter // also counts evictions, when set (a Guard's)
}

type limiterShard struct {
	mu    sync.Mutex
	m     map[Key]bucket
	swept int64 // unix ns of the last sweep of idle buckets
}

type bucket struct {
	tokens float64 // Invariant: 0 <= tokens <= burst after each update
	last   int64   // unix ns of the last update
}

// NewLimiter returns a limiter of rate tokens a second with room for burst,
// holding at most keysMax keys. rate must be positive and finite, burst at
// least 1, keysMax at least 1 (it is rounded up to a multiple of the shard
// count); NewLimiter panics otherwise, since switches are validated before
// they reach it.
func NewLimiter(rate, burst float64, keysMax int) *Limiter {
	if !(rate > 0) || math.IsInf(rate, 0) || !(burst >= 1) || math.IsInf(burst, 0) || keysMax < 1 {
		panic("protect: NewLimiter: rate > 0, burst >= 1 and keysMax >= 1 required")
	}
	l := &Limiter{rate: rate, burst: burst, seed: maphash.MakeSeed(),
		shardMax: (keysMax + limiterShards - 1) / limiterShards}
	l.fill = int64(math.Ceil(burst / rate * 1e9))
	for i := range l.shards {
		l.shards[i].m = make(map[Key]bucket)
	}
	return l
}

// Allow takes one token from key's bucket at time now. If the bucket is
// empty it takes nothing and returns false with how long until a token is
// there. A now earlier than the bucket's last update (a clock stepped back)
// counts as no time passed.
func (l *Limiter) Allow(key Key, now time.Time) (ok bool, retryAfter time.Duration) {
	t := now.UnixNano()
	s := &l.shards[(maphash.String(l.seed, key.User)^uint64(key.App)*0x9e3779b97f4a7c15)%limiterShards]
	s.mu.Lock()
	b, found := s.m[key]
	if found {
		if dt := t - b.last; dt > 0 {
			b.tokens = math.Min(l.burst, b.tokens+float64(dt)*l.rate/1e9)
		}
	} else {
		if len(s.m) >= l.shardMax {
			l.makeRoom(s, t)
		}
		b.tokens = l.burst
	}
	b.last = max(b.last, t)
	if b.tokens >= 1 {
		b.tokens--
		ok = true
	} else {
		retryAfter = time.Duration(math.Ceil((1 - b.tokens) / l.rate * 1e9))
	}
	s.m[key] = b
	s.mu.Unlock()
	return ok, retryAfter
}

// makeRoom frees one slot in a full shard: a sweep of idle buckets at most
// once per refill time, else the least recently used of a sample.
func (l *Limiter) makeRoom(s *limiterShard, now int64) {
	if now-s.swept >= l.fill {
		s.swept = now
		for k, b := range s.m {
			if now-b.last >= l.fill {
				delete(s.m, k)
			}
		}
		if len(s.m) < l.shardMax {
			return
		}
	}
	// Map iteration starts at a random entry: the first few are a sample.
	var victim Key
	oldest, n := int64(math.MaxInt64), 0
	for k, b := range s.m {
		if b.last < oldest {
			victim, oldest = k, b.last
		}
		if n++; n == sampleSize {
			break
		}
	}
	delete(s.m, victim)
	if now-oldest < l.fill {
		l.evictions.Add(1) // an active bucket: its key starts again full
		if l.evicted != nil {
			l.evicted.Inc()
		}
	}
}

// Len returns how many keys the limiter holds.
func (l *Limiter) Len() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

// Evictions returns how many active buckets were evicted because the
// limiter was full (idle buckets dropped are not counted: dropping them
// changes no answer).
func (l *Limiter) Evictions() int64 { return l.evictions.Load() }
