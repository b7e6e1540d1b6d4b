package adminauth

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// NonceStore remembers the nonces of verified requests.
type NonceStore interface {
	// Claim records nonce as used by keyID for ttl. It reports fresh when
	// the nonce was not already recorded for keyID, and an error when the
	// store cannot tell (then nothing may be assumed).
	Claim(ctx context.Context, keyID, nonce string, ttl time.Duration) (fresh bool, err error)
}

// NonceKeyPrefix starts the Redis keys of RedisNonces:
// rr:nonce:{key id}:{nonce}. A key id has no ':', so the key is unambiguous.
const NonceKeyPrefix = "rr:nonce:"

// RedisNonces keeps nonces in Redis, shared by all nodes, so that a request
// replayed to another node is refused too. Each claim is one
// SET rr:nonce:{key}:{nonce} 1 NX PX ttl.
type RedisNonces struct {
	Client redis.Cmdable
}

// Claim implements NonceStore.
func (r RedisNonces) Claim(ctx context.Context, keyID, nonce string, ttl time.Duration) (bool, error) {
	if ttl < time.Millisecond {
		return false, fmt.Errorf("adminauth: nonce ttl %v is under 1ms", ttl)
	}
	fresh, err := r.Client.SetNX(ctx, NonceKeyPrefix+keyID+":"+nonce, "1", ttl).Result()
	if err != nil {
		return false, fmt.Errorf("adminauth: claim nonce: %w", err)
	}
	return fresh, nil
}

// MemoryNoncesMaxDefault is MemoryNonces' default bound.
const MemoryNoncesMaxDefault = 100_000

// ErrNoncesFull reports that a MemoryNonces holds Max unexpired nonces and
// cannot take another until some expire. Forgetting one early instead
// would let its request be replayed.
var ErrNoncesFull = errors.New("adminauth: nonce store full")

// MemoryNonces keeps nonces in the process: for tests and for a single node
// (a request replayed to another node is not seen). It holds at most Max
// nonces; expired ones are dropped as new ones come. The zero value is
// ready to use.
type MemoryNonces struct {
	// Max bounds the nonces held (default MemoryNoncesMaxDefault).
	Max int
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu sync.Mutex
	// expires maps keyID + ":" + nonce to when it may be claimed again.
	expires map[string]time.Time
	// order lists the claims oldest first from order[head]; an entry
	// whose expiry no longer matches expires[key] was claimed again.
	order []claim
	head  int
}

type claim struct {
	key     string
	expires time.Time
}

// Claim implements NonceStore.
func (m *MemoryNonces) Claim(_ context.Context, keyID, nonce string, ttl time.Duration) (bool, error) {
	if ttl < time.Millisecond {
		return false, fmt.Errorf("adminauth: nonce ttl %v is under 1ms", ttl)
	}
	t := now(m.Now)
	key := keyID + ":" + nonce
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.expires == nil {
		m.expires = make(map[string]time.Time)
	}
	m.sweep(t)
	if exp, ok := m.expires[key]; ok && exp.After(t) {
		return false, nil
	}
	limit := m.Max
	if limit <= 0 {
		limit = MemoryNoncesMaxDefault
	}
	if len(m.expires) >= limit {
		return false, fmt.Errorf("%w: %d nonces unexpired", ErrNoncesFull, len(m.expires))
	}
	exp := t.Add(ttl)
	m.expires[key] = exp
	m.order = append(m.order, claim{key, exp})
	return true, nil
}

// Len returns the number of nonces held, expired or not.
func (m *MemoryNonces) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.expires)
}

// sweep drops the claims at the front of the order that expired by t.
// Claims are appended as they come, so with one ttl the front is always
// the oldest; a longer ttl earlier only delays the drop of those behind it.
func (m *MemoryNonces) sweep(t time.Time) {
	for m.head < len(m.order) && !m.order[m.head].expires.After(t) {
		c := m.order[m.head]
		if m.expires[c.key].Equal(c.expires) {
			delete(m.expires, c.key)
		}
		m.order[m.head] = claim{}
		m.head++
	}
	if m.head > len(m.order)/2 {
		m.order = append(m.order[:0], m.order[m.head:]...)
		m.head = 0
	}
}
