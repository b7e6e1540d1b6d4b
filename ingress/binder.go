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
// that a new user costs no TiKV write on the grant path: at 200k new users
// a second, blocks of 4096 cost 50 transactions a second under the
// allocation lock; 65536 cost 3. A restart leaves the rest of its block
// unused (ids are unique, not gapless).
const actBlockSize = 1 << 16

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
//
// A binder that owns every shard (NewBinder with owner: a node on the
// embedded broker) decides bindings in process instead: its map is
// complete (restored from the store at start, never dropped), a new user
// costs a map insert, and no Redis command is sent.
type Binder struct {
	tikv  *storage.TiKV
	redis *storage.Pipeliner
	seed  maphash.Seed
	owner bool
	parts int32 // the grant topic's partitions, which hold the accounts

	shards [bindShards]bindShard

	allocMu   sync.Mutex
	next, end uint64 // the node's current block [next, end)
	// first is the first act_id this process allocated (0: none yet): an
	// owner handed out every id in [first, next) (or burned it).
	first uint64
}

type bindKey struct {
	app  uint32
	user string
}

type bindShard struct {
	mu sync.Mutex
	m  map[bindKey]uint64
}

// NewBinder builds a binder; owner says it decides every binding in
// process (see Binder); parts is the grant topic's partition count.
func NewBinder(tikv *storage.TiKV, redis *storage.Pipeliner, owner bool, parts int32) *Binder {
	b := &Binder{tikv: tikv, redis: redis, seed: maphash.MakeSeed(), owner: owner, parts: parts}
	for i := range b.shards {
		b.shards[i].m = make(map[bindKey]uint64)
	}
	return b
}

func (b *Binder) shard(k bindKey) *bindShard {
	// maphash.String: what a Hash with this seed sums for k.user, without
	// zeroing a Hash's buffer per identity (2% of a batch's CPU).
	return &b.shards[(maphash.String(b.seed, k.user)^uint64(k.app))%bindShards]
}

// Resolve returns the user's act_id, binding a new one if needed.
func (b *Binder) Resolve(ctx context.Context, app uint32, user string) (uint64, error) {
	var id [1]uint64
	err := b.ResolveMany(ctx, []uint32{app}, []string{user}, id[:])
	if id[0] == 0 && err == nil {
		err = fmt.Errorf("%w: app %d user %q not bound", storage.ErrUnavailable, app, user)
	}
	return id[0], err
}

// ResolveMany sets ids[i] to the act_id of (apps[i], users[i]), binding
// new ones: known identities cost a map lookup. An owner binds a new user
// with a map insert. Otherwise every miss of the call shares one pipelined
// Redis round trip (SET NX GET of a fresh id from the node's block; and a
// second one for the ids that new users won), so a batch of new users
// costs two round trips, not one per user; a user bound before but
// missing from this process's cache burns one id: ids stay unique, with
// gaps. An identity that could not be resolved keeps ids[i] == 0 and
// the returned error says why.
func (b *Binder) ResolveMany(ctx context.Context, apps []uint32, users []string, ids []uint64) error {
	var miss []int
	var missShards []*bindShard
	for i := range apps {
		k := bindKey{apps[i], users[i]}
		s := b.shard(k)
		s.mu.Lock()
		id, ok := s.m[k]
		s.mu.Unlock()
		switch {
		case ok:
			ids[i] = id
		case miss == nil: // sized once: a request of new users misses on every one
			miss, missShards = make([]int, 1, len(apps)-i), make([]*bindShard, 1, len(apps)-i)
			miss[0], missShards[0] = i, s
		default:
			miss, missShards = append(miss, i), append(missShards, s)
		}
	}
	if len(miss) == 0 {
		return nil
	}
	cands, err := b.allocateMany(ctx, len(miss))
	if err != nil {
		return err
	}
	if b.owner {
		// The map is the binding: insert unless a concurrent request for
		// the same user inserted first (then its id wins and ours burns).
		for j, i := range miss {
			k := bindKey{apps[i], users[i]}
			sh := missShards[j]
			sh.mu.Lock()
			id, ok := sh.m[k]
			if !ok {
				id = cands[j]
				sh.m[k] = id
			}
			sh.mu.Unlock()
			ids[i] = id
		}
		return nil
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
			// Ours: marked handed out below, so that POST /v1/accounts/bind
			// can target it before its first booking (see actMarkTTL).
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
	if b.first == 0 && n > 0 {
		defer func() { b.first = out[0] }()
	}
	for i := range out {
		id, err := b.allocateLocked(ctx)
		if err != nil {
			return nil, err
		}
		out[i] = id
	}
	return out, nil
}

// handedOutHere reports whether this process handed actID out: an owner
// hands out every id it allocates, in order, from its blocks.
func (b *Binder) handedOutHere(actID uint64) bool {
	b.allocMu.Lock()
	defer b.allocMu.Unlock()
	return b.first != 0 && actID >= b.first && actID < b.next
}

// Restore loads bindings that the store holds (accounts' app identities,
// then the explicit binding index, which wins) into an owner's map. It runs
// at start, before the node serves.
func (b *Binder) Restore(app uint32, user string, actID uint64) {
	k := bindKey{app, user}
	sh := b.shard(k)
	sh.mu.Lock()
	sh.m[k] = actID
	sh.mu.Unlock()
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
