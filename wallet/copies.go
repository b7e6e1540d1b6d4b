package wallet

import (
	"sync"
	"time"
)

// copies is the node's own copy of the summaries it last served, the
// fallback when neither Redis nor the store answers: at most n, the
// oldest put dropped first.
type copies struct {
	mu   sync.Mutex
	m    map[uint64]Summary
	ring []uint64 // act_ids in order of first put; ring[next] is the oldest
	next int
}

func newCopies(n int) *copies {
	return &copies{m: make(map[uint64]Summary, n), ring: make([]uint64, 0, n)}
}

func (c *copies) put(s Summary) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[s.ActID]; !ok {
		if len(c.ring) < cap(c.ring) {
			c.ring = append(c.ring, s.ActID)
		} else {
			delete(c.m, c.ring[c.next])
			c.ring[c.next] = s.ActID
			c.next = (c.next + 1) % len(c.ring)
		}
	}
	c.m[s.ActID] = s
}

func (c *copies) get(act uint64) (Summary, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.m[act]
	return s, ok
}

// bucket is a token bucket: rate tokens a second, as many at most.
type bucket struct {
	mu     sync.Mutex
	rate   float64
	tokens float64
	last   time.Time
	now    func() time.Time
}

func newBucket(rate int, now func() time.Time) *bucket {
	return &bucket{rate: float64(rate), tokens: float64(rate), last: now(), now: now}
}

// take takes a token if there is one.
func (b *bucket) take() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.now()
	b.tokens = min(b.rate, b.tokens+t.Sub(b.last).Seconds()*b.rate)
	b.last = t
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
