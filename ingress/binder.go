package ingress

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

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

// bindShards are the binder's maps, picked by an identity's hash's top
// bindShardBits bits; bindLocks their locks, each shared by consecutive
// shards. A batch takes each lock once for all its identities in those
// shards, and reads the slots they start at together before it looks at
// any (ResolveMany): in a burst of new users the maps are far larger than
// the caches, and a lock per shard, taken for one or two identities of a
// batch each, made every one of those reads wait alone (a lock's atomic
// instruction orders the loads after it).
const (
	bindShardBits = 6
	bindShards    = 1 << bindShardBits
	bindLockBits  = 3
	bindLocks     = 1 << bindLockBits
)

// Binder resolves an app's user to its act_id: the process cache, then a
// Redis SET NX GET of a new id from the node's block (bindScript: one
// command per batch), so that two nodes seeing a new user at once agree. The binding becomes
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
	locks  [bindLocks]sync.Mutex
	binds  bindLimiter      // explicit binds (bind.go)
	now    func() time.Time // the bind limiter's clock; nil: time.Now

	// confirmed is when the process cache stops being trusted (ns on
	// monoBase's clock; 0: always trusted): see ConfirmIndex.
	confirmed atomic.Int64

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
	mu *sync.Mutex // the binder's lock of its run of shards
	m  bindMap
}

// NewBinder builds a binder; owner says it decides every binding in
// process (see Binder); parts is the grant topic's partition count.
func NewBinder(tikv *storage.TiKV, redis *storage.Pipeliner, owner bool, parts int32) *Binder {
	b := &Binder{tikv: tikv, redis: redis, seed: maphash.MakeSeed(), owner: owner, parts: parts}
	for i := range b.shards {
		// The binder's hash is its shards' (ResolveMany hashes an identity
		// once for its shard and its slot).
		b.shards[i].m.seed, b.shards[i].m.seeded = b.seed, true
		b.shards[i].mu = &b.locks[i>>(bindShardBits-bindLockBits)]
	}
	return b
}

// ConfirmIndex says that Redis held the binding index (of the same
// generation as when the cache was filled) just now: the process cache may
// answer until d from now. Until the first call the cache always may;
// after it, a process paused past its confirmation (Redis may have lost
// its index and another node bound a cached user anew meanwhile) asks
// Redis until the index watcher confirms again, and drops its cache if
// the index was rebuilt meanwhile (Index.Watch).
func (b *Binder) ConfirmIndex(d time.Duration) {
	b.confirmed.Store(int64(time.Since(monoBase) + d))
}

// cacheValid tells whether the process cache may answer (see ConfirmIndex;
// an owner's map is the binding: always).
func (b *Binder) cacheValid() bool {
	c := b.confirmed.Load()
	return b.owner || c == 0 || int64(time.Since(monoBase)) < c
}

// monoBase is the origin of the binder's monotonic clock.
var monoBase = time.Now()

// DropCache forgets every binding the process cache holds (a binder that
// owns every shard keeps its map: it is the binding). A node calls it when
// Redis lost its index: a cached binding whose user was never answered a
// packet is in no store, so the rebuilt index lacks it, and another node
// would bind the user anew; after the drop this node asks the rebuilt
// index too. (The simulation found a user answered packets of two
// accounts, one from a node's cache after the rebuild.)
func (b *Binder) DropCache() {
	if b.owner {
		return
	}
	for i := range b.shards {
		s := &b.shards[i]
		s.mu.Lock()
		s.m.clear()
		s.mu.Unlock()
	}
}

func (b *Binder) shard(k bindKey) *bindShard {
	return &b.shards[bindShardOf(bindHash(b.seed, k.app, k.user))]
}

// bindShardOf is the shard of an identity's hash: its high bits (the
// shard's table indexes its slots by the low ones).
func bindShardOf(h uint64) int { return int(h >> (64 - bindShardBits)) }

// Resolve returns the user's act_id, binding a new one if needed.
func (b *Binder) Resolve(ctx context.Context, app uint32, user string) (uint64, error) {
	var id [1]uint64
	err := b.ResolveMany(ctx, []uint32{app}, []string{user}, id[:])
	if id[0] == 0 && err == nil {
		err = fmt.Errorf("%w: app %d user %q not bound", storage.ErrUnavailable, app, user)
	}
	return id[0], err
}

// bindTimeout bounds the round trips of a ResolveMany whose context has no
// deadline.
const bindTimeout = 5 * time.Second

// bounded is ctx, bounded by bindTimeout if it has no deadline: a context
// and its timer only when a round trip is made.
func bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, bindTimeout)
}

// ResolveMany sets ids[i] to the act_id of (apps[i], users[i]), binding
// new ones: known identities cost a map lookup. The identities are taken
// shard by shard of the binder's map, so that each shard's lock is taken
// once per call, not once per identity. An owner binds a new user with a
// map insert. Otherwise every miss of the call shares one Redis command
// (bindScript: SET NX GET of a fresh id from the node's block, and the
// handed-out mark of each id won), so a batch of new users costs one
// round trip, not one per user; a user bound before but missing from this
// process's cache burns one id: ids stay unique, with gaps. An identity
// that could not be resolved keeps ids[i] == 0 and the returned error
// says why.
func (b *Binder) ResolveMany(ctx context.Context, apps []uint32, users []string, ids []uint64) error {
	var orderBuf [256]int32
	var shardBuf [256]uint8
	var hashBuf [256]uint64
	order, shardOf, hashes := b.byShard(apps, users, orderBuf[:0], shardBuf[:0], hashBuf[:0])
	cached := b.cacheValid()
	var miss []int32 // in shard order, as order is
	var vacantBuf [256]bool
	vacant := vacantBuf[:0]
	if len(apps) > len(vacantBuf) {
		vacant = make([]bool, len(apps))
	}
	vacant = vacant[:len(apps)]
	eachLock(order, shardOf, func(mu *sync.Mutex, group []int32) {
		mu.Lock()
		// Every identity's first slot read before any is looked up: the
		// reads are independent, so they overlap. A vacant one means the
		// identity is not in the map (a lookup stops at the first empty
		// slot).
		for _, i := range group {
			vacant[i] = b.shards[shardOf[i]].m.heads.vacant(hashes[i])
		}
		for _, i := range group {
			id, ok := uint64(0), false
			if !vacant[i] {
				id, ok = b.shards[shardOf[i]].m.getH(hashes[i], bindKey{apps[i], users[i]})
			}
			switch {
			case ok && cached:
				ids[i] = id
			case miss == nil: // sized once: a request of new users misses on every one
				miss = make([]int32, 1, len(order))
				miss[0] = i
			default:
				miss = append(miss, i)
			}
		}
		mu.Unlock()
	}, b)
	if len(miss) == 0 {
		return nil
	}
	cands, err := b.allocateMany(ctx, len(miss))
	if err != nil {
		return err
	}
	// New ids go out in request order (the n-th new identity of a call
	// gets the n-th id), whatever the shards' order.
	inOrder := slices.Clone(miss)
	slices.Sort(inOrder)
	if b.owner {
		rank := make([]int32, len(order))
		for r, i := range inOrder {
			rank[i] = int32(r)
		}
		// The map is the binding: insert unless a concurrent request for
		// the same user inserted first (then its id wins and ours burns).
		eachLock(miss, shardOf, func(mu *sync.Mutex, group []int32) {
			mu.Lock()
			for _, i := range group {
				ids[i] = b.shards[shardOf[i]].m.add(hashes[i], bindKey{apps[i], users[i]}, cands[rank[i]])
			}
			mu.Unlock()
		}, b)
		return nil
	}
	// Ours or not, each gets the id the user holds (the script marked ours
	// handed out).
	got, _, err := b.bindInRedis(ctx, apps, users, inOrder, cands)
	if err != nil {
		return err
	}
	var firstErr error
	for j, i := range inOrder {
		if ids[i] = got[j]; ids[i] == 0 {
			firstErr = cmp.Or(firstErr, fmt.Errorf("%w: binding of app %d user %q unreadable", storage.ErrUnavailable, apps[i], users[i]))
		}
	}
	eachLock(miss, shardOf, func(mu *sync.Mutex, group []int32) {
		mu.Lock()
		for _, i := range group {
			if ids[i] != 0 {
				b.rememberLocked(&b.shards[shardOf[i]], bindKey{apps[i], users[i]}, ids[i])
			}
		}
		mu.Unlock()
	}, b)
	return firstErr
}

// byShard returns the indexes of the identities ordered by binder shard
// (a counting sort: stable within a shard), each identity's shard and
// its hash, in the buffers given when they are large enough.
func (b *Binder) byShard(apps []uint32, users []string, order []int32, shardOf []uint8, hashes []uint64) ([]int32, []uint8, []uint64) {
	n := len(apps)
	if cap(order) < n {
		order, shardOf, hashes = make([]int32, 0, n), make([]uint8, 0, n), make([]uint64, 0, n)
	}
	order, shardOf, hashes = order[:n], shardOf[:n], hashes[:n]
	var starts [bindShards + 1]int32
	for i := range apps {
		hashes[i] = bindHash(b.seed, apps[i], users[i])
		sh := uint8(bindShardOf(hashes[i]))
		shardOf[i] = sh
		starts[sh+1]++
	}
	for k := 1; k <= bindShards; k++ {
		starts[k] += starts[k-1]
	}
	for i := range apps {
		sh := shardOf[i]
		order[starts[sh]] = int32(i)
		starts[sh]++
	}
	return order, shardOf, hashes
}

// eachLock calls fn with each run of idx (grouped by shard, as byShard
// orders them) whose shards share a lock, and that lock.
func eachLock(idx []int32, shardOf []uint8, fn func(mu *sync.Mutex, group []int32), b *Binder) {
	const shift = bindShardBits - bindLockBits
	for start := 0; start < len(idx); {
		l := shardOf[idx[start]] >> shift
		end := start + 1
		for end < len(idx) && shardOf[idx[end]]>>shift == l {
			end++
		}
		fn(&b.locks[l], idx[start:end])
		start = end
	}
}

// bindScript binds identities while Redis holds the whole index: KEYS[1]
// is the epoch key (storage.RedisEpochKey), which a rebuild writes last;
// without it the script binds nothing and errors NOINDEX, so a Redis that
// lost its data (flushed, restarted empty) never hands a known user a
// second act_id before the rebuild restored it. Then, for n = (#KEYS-1)/2,
// it binds each identity key KEYS[1+i] to the fresh id ARGV[i] unless it
// holds one already, marks each id it bound handed out (KEYS[1+n+i] =
// ARGV[n+1], expiring after ARGV[n+2] ms), and answers per identity
// "+ARGV[i]" for a new binding or the id bound before. A batch of new
// users is one command and one atomic step (a binding never lacks its
// mark).
const bindScript = `
if redis.call('EXISTS', KEYS[1]) == 0 then
  return redis.error_reply('NOINDEX redis lost its index (no ' .. KEYS[1] .. '): bindings wait for the rebuild')
end
local n = (#KEYS - 1) / 2
local out = {}
for i = 1, n do
  local v = redis.call('SET', KEYS[1 + i], ARGV[i], 'NX', 'GET')
  if v then
    out[i] = v
  else
    redis.call('SET', KEYS[1 + n + i], ARGV[n + 1], 'PX', ARGV[n + 2])
    out[i] = '+' .. ARGV[i]
  end
end
return out
`

// bindScriptHash is bindScript's SHA-1, by which EVALSHA runs it.
var bindScriptHash = redis.NewScript(bindScript).Hash()

// ErrIndexLost is the error of a bind while Redis lacks its epoch key (it
// lost its data and is not rebuilt yet): nothing was bound.
var ErrIndexLost = errors.New("ingress: redis lost its binding index")

// bindInRedis runs bindScript for the identities miss with candidate ids
// cands, and returns the id each holds (0: an answer that is no id) and
// whether the script bound it now.
func (b *Binder) bindInRedis(ctx context.Context, apps []uint32, users []string, miss []int32, cands []uint64) ([]uint64, []bool, error) {
	ctx, cancel := bounded(ctx)
	defer cancel()
	n := len(miss)
	args := make([]any, 4, 4+3*n+2)
	args[0], args[1], args[2], args[3] = "evalsha", bindScriptHash, 1+2*n, storage.RedisEpochKey
	for _, i := range miss {
		args = append(args, storage.BindMarkKey(apps[i], users[i]))
	}
	for _, id := range cands {
		args = append(args, storage.ActMarkKey(id))
	}
	for _, id := range cands {
		args = append(args, strconv.FormatUint(id, 10))
	}
	args = append(args, storage.ActMarkHandedOut, actMarkTTL.Milliseconds())
	cmd := redis.NewStringSliceCmd(ctx, args...)
	if err := b.redis.Do(ctx, cmd); err != nil {
		return nil, nil, fmt.Errorf("%w: redis: %v", storage.ErrUnavailable, err)
	}
	if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
		// The server does not know the script yet (new, restarted or
		// flushed): send it whole once; later batches find it by hash.
		args[0], args[1] = "eval", bindScript
		cmd = redis.NewStringSliceCmd(ctx, args...)
		if err := b.redis.Do(ctx, cmd); err != nil {
			return nil, nil, fmt.Errorf("%w: redis: %v", storage.ErrUnavailable, err)
		}
	}
	vals, err := cmd.Result()
	if redis.HasErrorPrefix(err, "NOINDEX") {
		return nil, nil, fmt.Errorf("%w: %w: %v", storage.ErrUnavailable, ErrIndexLost, err)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%w: redis: %v", storage.ErrUnavailable, err)
	}
	if len(vals) != n {
		return nil, nil, fmt.Errorf("%w: redis bound %d identities of %d", storage.ErrUnavailable, len(vals), n)
	}
	ids, fresh := make([]uint64, n), make([]bool, n)
	for j, v := range vals {
		v, fresh[j] = strings.CutPrefix(v, "+")
		ids[j], _ = strconv.ParseUint(v, 10, 64)
	}
	return ids, fresh, nil
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
		ctx, cancel := bounded(ctx)
		defer cancel()
		// Two nodes taking a block at once conflict; the loser reads again.
		for attempt := 0; attempt < 10; attempt++ {
			if err = b.tikv.Update(ctx, func(txn storage.Txn) error {
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
	sh.m.put(k, actID)
	sh.mu.Unlock()
}

// ActIDsAllocated returns the first act_id never handed out by any node.
func ActIDsAllocated(ctx context.Context, tikv *storage.TiKV) (uint64, error) {
	var next uint64 = 1
	err := tikv.Update(ctx, func(txn storage.Txn) error {
		raw, err := storage.Get(ctx, txn, storage.ActAllocKey)
		if err != nil || raw == nil {
			return err
		}
		next, _ = storage.ParseActIDValue(raw)
		return nil
	})
	return next, err
}
