package ingress

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tikv/client-go/v2/txnkv/transaction"

	"redrain/storage"
)

// actBlockSize is how many act_ids a node allocates from TiKV at once, so
// that a new user costs no TiKV write on the grant path.
const actBlockSize = 4096

// bindCacheMax bounds the in-process binding cache; past it a shard is
// dropped whole (the next lookups go to Redis).
const bindCacheMax = 1 << 20

const bindShards = 64

// Binder resolves an app's user to its act_id: the process cache, then one
// Redis SET NX GET of a new id from the node's block, so that two nodes
// seeing a new user at once agree. The binding becomes
// durable in TiKV with the user's first booking (the grant event carries
// it); Redis is rebuilt from TiKV if it loses it. Bind (bind.go) binds
// another app identity to an existing account explicitly, durably at once.
type Binder struct {
	tikv  *storage.TiKV
	redis *storage.Pipeliner
	seed  maphash.Seed

	shards [bindShards]bindShard

	allocMu   sync.Mutex
	next, end uint64 // the node's current block [next, end)
}

type bindKey struct {
	app  uint32
	user string
}

type bindShard struct {
	mu sync.Mutex
	m  map[bindKey]uint64
}

// NewBinder builds a binder.
func NewBinder(tikv *storage.TiKV, redis *storage.Pipeliner) *Binder {
	b := &Binder{tikv: tikv, redis: redis, seed: maphash.MakeSeed()}
	for i := range b.shards {
		b.shards[i].m = make(map[bindKey]uint64)
	}
	return b
}

func (b *Binder) shard(k bindKey) *bindShard {
	var h maphash.Hash
	h.SetSeed(b.seed)
	h.WriteString(k.user)
	return &b.shards[(h.Sum64()^uint64(k.app))%bindShards]
}

// Resolve returns the user's act_id, binding a new one if needed.
func (b *Binder) Resolve(ctx context.Context, app uint32, user string) (uint64, error) {
	k := bindKey{app, user}
	s := b.shard(k)
	s.mu.Lock()
	id, ok := s.m[k]
	s.mu.Unlock()
	if ok {
		return id, nil
	}
	id, err := b.bind(ctx, storage.BindMarkKey(app, user))
	if err != nil {
		return 0, err
	}
	b.remember(app, user, id)
	return id, nil
}

// ResolveMany sets ids[i] to the act_id of (apps[i], users[i]), binding
// new ones: cached identities cost a map lookup, and every miss of the call
// shares one pipelined Redis round trip (and a second one for the ids that
// new users won), so a batch of new users costs two round trips, not one
// per user. An identity that could not be resolved keeps ids[i] == 0 and
// the returned error says why.
func (b *Binder) ResolveMany(ctx context.Context, apps []uint32, users []string, ids []uint64) error {
	var miss []int
	for i := range apps {
		k := bindKey{apps[i], users[i]}
		s := b.shard(k)
		s.mu.Lock()
		id, ok := s.m[k]
		s.mu.Unlock()
		if ok {
			ids[i] = id
		} else {
			miss = append(miss, i)
		}
	}
	if len(miss) == 0 {
		return nil
	}
	cands, err := b.allocateMany(ctx, len(miss))
	if err != nil {
		return err
	}
	sets := make([]redis.Cmder, len(miss))
	for j, i := range miss {
		sets[j] = redis.NewStringCmd(ctx, "set", storage.BindMarkKey(apps[i], users[i]), strconv.FormatUint(cands[j], 10), "nx", "get")
	}
	if err := b.redis.Do(ctx, sets...); err != nil {
		return err
	}
	var marks []redis.Cmder
	var firstErr error
	for j, i := range miss {
		v, err := sets[j].(*redis.StringCmd).Result()
		switch {
		case errors.Is(err, redis.Nil):
			// Ours: marked handed out below (see bind).
			ids[i] = cands[j]
			marks = append(marks, redis.NewStatusCmd(ctx, "set", storage.ActMarkKey(cands[j]), storage.ActMarkHandedOut, "px", actMarkTTL.Milliseconds()))
		case err != nil:
			firstErr = cmp.Or(firstErr, fmt.Errorf("%w: redis: %v", storage.ErrUnavailable, err))
			continue
		default:
			id, perr := strconv.ParseUint(v, 10, 64)
			if perr != nil || id == 0 {
				firstErr = cmp.Or(firstErr, fmt.Errorf("%w: binding of app %d user %q = %q", storage.ErrUnavailable, apps[i], users[i], v))
				continue
			}
			ids[i] = id
		}
		b.remember(apps[i], users[i], ids[i])
	}
	if len(marks) > 0 {
		// A lost mark only delays binds to the id until its first booking.
		_ = b.redis.Do(ctx, marks...)
	}
	return firstErr
}

// actMarkTTL is how long an act_id's handed-out mark (storage.ActMarkKey)
// lasts. It lets POST /v1/accounts/bind find an account that has no booked
// grant yet; once the first grant is booked the account record answers,
// so the mark only has to outlive booking. A user whose grants all failed
// (say, budget exhausted) cannot be a bind target after it expires.
const actMarkTTL = 24 * time.Hour

// bind claims a fresh act_id for the user with SET NX GET: one round trip
// returns either our candidate or the id bound before (by any node). A user
// bound before but missing from this process's cache costs one unused id:
// ids stay unique, with gaps.
func (b *Binder) bind(ctx context.Context, key string) (uint64, error) {
	cand, err := b.allocate(ctx)
	if err != nil {
		return 0, err
	}
	set := redis.NewStringCmd(ctx, "set", key, strconv.FormatUint(cand, 10), "nx", "get")
	if err := b.redis.Do(ctx, set); err != nil {
		return 0, err
	}
	v, err := set.Result()
	switch {
	case errors.Is(err, redis.Nil):
		// Ours: mark the id handed out. A second round trip, but once per
		// new user only: sent with the SET it would also mark the ids that
		// returning users burn. A lost mark only delays binds to this id
		// until its first booking, so its failure does not fail the grant.
		mark := redis.NewStatusCmd(ctx, "set", storage.ActMarkKey(cand), storage.ActMarkHandedOut, "px", actMarkTTL.Milliseconds())
		_ = b.redis.Do(ctx, mark)
		return cand, nil
	case err != nil:
		return 0, fmt.Errorf("%w: redis: %v", storage.ErrUnavailable, err)
	}
	id, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: binding %s = %q", storage.ErrUnavailable, key, v)
	}
	return id, nil
}

// allocate takes the next act_id from the node's block, taking a new block
// from TiKV when it runs out. act_ids start at 1.
func (b *Binder) allocate(ctx context.Context) (uint64, error) {
	b.allocMu.Lock()
	defer b.allocMu.Unlock()
	return b.allocateLocked(ctx)
}

// allocateLocked is allocate with b.allocMu held.
func (b *Binder) allocateLocked(ctx context.Context) (uint64, error) {
	if b.next == b.end {
		var start uint64
		var err error
		// Two nodes taking a block at once conflict; the loser reads again.
		for attempt := 0; attempt < 10; attempt++ {
			if err = b.tikv.Update(ctx, func(txn *transaction.KVTxn) error {
				raw, err := storage.Get(ctx, txn, storage.ActAllocKey)
				if err != nil {
					return err
				}
				start = 1
				if raw != nil {
					var ok bool
					if start, ok = storage.ParseActIDValue(raw); !ok {
						return fmt.Errorf("%w: corrupt %s", storage.ErrUnavailable, storage.ActAllocKey)
					}
				}
				return txn.Set(storage.ActAllocKey, storage.ActIDValue(start+actBlockSize))
			}); !errors.Is(err, storage.ErrConflict) {
				break
			}
		}
		if err != nil {
			return 0, err
		}
		b.next, b.end = start, start+actBlockSize
	}
	id := b.next
	b.next++
	return id, nil
}

// allocateMany takes n act_ids from the node's blocks under one hold of
// the lock.
func (b *Binder) allocateMany(ctx context.Context, n int) ([]uint64, error) {
	b.allocMu.Lock()
	defer b.allocMu.Unlock()
	out := make([]uint64, n)
	for i := range out {
		id, err := b.allocateLocked(ctx)
		if err != nil {
			return nil, err
		}
		out[i] = id
	}
	return out, nil
}

// ActIDsAllocated returns the first act_id never handed out by any node.
func ActIDsAllocated(ctx context.Context, tikv *storage.TiKV) (uint64, error) {
	var next uint64 = 1
	err := tikv.Update(ctx, func(txn *transaction.KVTxn) error {
		raw, err := storage.Get(ctx, txn, storage.ActAllocKey)
		if err != nil || raw == nil {
			return err
		}
		next, _ = storage.ParseActIDValue(raw)
		return nil
	})
	return next, err
}
