package ingress

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"redrain/adminauth"
	"redrain/booking"
	"redrain/ledger"
	"redrain/metrics"
	"redrain/storage"
)

// Index keeps Redis's binding index (each bound identity's mark, and
// rr:epoch, which says the index is whole) a copy of the store's
// bindings: rebuilt at a node's start when missing or of another store,
// and while nodes serve when Redis lost it (Watch).
type Index struct {
	Log   *slog.Logger
	TiKV  *storage.TiKV
	Redis *redis.Client
	Pipe  *storage.Pipeliner
	// Drained returns once booking has booked every grant answered before
	// the call (the records still in flight landed first): the store then
	// holds every binding a grant used.
	Drained func(ctx context.Context) error

	gen string // the generation Watch saw last
	// Binder is the node's binder: Watch keeps its cache in step with the
	// index (Binder.ConfirmIndex, Binder.DropCache); nil: none.
	Binder *Binder
}

// RedisGenKey names the index's generation: a random value each rebuild
// writes, so that a node that did not see the index lost (paused
// meanwhile) sees that it was rebuilt.
const RedisGenKey = "rr:gen"

// IndexCheckEvery is how often a ready node checks that Redis still holds
// its binding index (the epoch key).
const IndexCheckEvery = time.Second

// Watch rebuilds the Redis binding index when Redis loses it while
// the node runs (flushed, or restarted without its data). Until the
// rebuild sets the epoch key again, every binder refuses to bind a user
// it does not know (the bind script's NOINDEX): a known user never gets a
// second account, and new users are answered unavailable meanwhile. The
// rebuild waits until booking has drained (Drained), so that the store
// holds every binding an answered grant used; it deletes nothing (nothing
// binds meanwhile), so several nodes may rebuild at once. ready says
// whether the node's recovery is done (it rebuilds the index itself
// before); lost is 1 while the index is rebuilt.
func (x *Index) Watch(ctx context.Context, ready func() bool, lost *metrics.Gauge) {
	t := time.NewTicker(IndexCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !ready() {
			continue // recovery rebuilds it
		}
		vals, err := x.Redis.MGet(ctx, storage.RedisEpochKey, RedisGenKey).Result()
		if err != nil {
			continue // Redis down: binders fail on their own, the cache expires
		}
		if vals[0] != nil {
			gen, _ := vals[1].(string)
			if x.Binder != nil {
				if gen != x.gen && x.gen != "" {
					// Rebuilt since this node last looked (it was paused):
					// a cached binding may be one the rebuild lacks.
					x.Binder.DropCache()
					x.Log.Warn("redis binding index was rebuilt since this node last checked it: the binding cache is dropped")
				}
				x.Binder.ConfirmIndex(2 * IndexCheckEvery)
			}
			x.gen = gen
			continue
		}
		lost.Set(1)
		if x.Binder != nil {
			x.Binder.DropCache()
		}
		x.Log.Error("redis lost its binding index (no epoch key): new users are refused until it is rebuilt from the store")
		start := time.Now()
		for attempt := 1; ctx.Err() == nil; attempt++ {
			err := x.restore(ctx)
			if err == nil {
				break
			}
			x.Log.Warn("redis index rebuild failed; retrying", "attempt", attempt, "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
		lost.Set(0)
		x.Log.Info("redis binding index rebuilt while serving", "took", time.Since(start).Round(time.Millisecond))
	}
}

// errLostAgain: Redis lost its data again while a rebuild waited.
var errLostAgain = errors.New("redis lost its data again while the rebuild waited for the records in flight; waiting again")

// restore is Watch's rebuild (see there). The wait for the drain is
// counted from the last loss: bindings made between another node's
// rebuild and a later loss have records in flight for up to the write
// deadline after that loss. So the wait leaves a token in Redis, and a
// loss while it runs takes the token and starts the wait over; the epoch
// is written only while the token is there (lostTokenEpoch), so a loss
// during the rebuild's own writes fails it too.
func (x *Index) restore(ctx context.Context) error {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return err
	}
	token := lostTokenPrefix + hex.EncodeToString(b[:])
	if err := x.Redis.Set(ctx, token, "1", lostTokenTTL).Err(); err != nil {
		return err
	}
	defer x.Redis.Del(context.WithoutCancel(ctx), token)
	if err := x.Drained(ctx); err != nil {
		return err
	}
	epoch, err := StoreEpoch(ctx, x.TiKV)
	if err != nil {
		return err
	}
	if err := x.Redis.Get(ctx, storage.RedisEpochKey).Err(); err == nil {
		return nil // another node rebuilt it meanwhile
	}
	return x.rebuild(ctx, epoch, false, token)
}

// A rebuild's token (see restore): it outlives any wait for the drain.
const (
	lostTokenPrefix = "rr:lost:"
	lostTokenTTL    = 10 * time.Minute
)

// lostTokenEpoch sets the epoch (ARGV[1]) only while the rebuild's token
// (KEYS[1]) is there.
var lostTokenEpoch = redis.NewScript(`if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SET', KEYS[2], ARGV[1])
return 1`)

// ScanBindIndex calls fn with every explicit binding in the store's index.
func ScanBindIndex(ctx context.Context, kv *storage.TiKV, fn func(app uint32, user string, act uint64) error) error {
	return kv.Scan(ctx, storage.BindPrefix, storage.PrefixEnd(storage.BindPrefix), func(k, v []byte) (bool, error) {
		app, user, ok := storage.ParseBindKey(k)
		act, okAct := storage.ParseActIDValue(v)
		if !ok || !okAct || act == 0 {
			return false, fmt.Errorf("%w: binding index %q = %x", ledger.ErrCorrupt, k, v)
		}
		return true, fn(app, user, act)
	})
}

// StoreEpoch returns the store's epoch id, creating it on first use.
func StoreEpoch(ctx context.Context, kv *storage.TiKV) (string, error) {
	var epoch string
	err := kv.Update(ctx, func(txn storage.Txn) error {
		raw, err := storage.Get(ctx, txn, storage.StoreEpochKey)
		if err != nil {
			return err
		}
		if raw != nil {
			epoch = string(raw)
			return nil
		}
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return err
		}
		epoch = hex.EncodeToString(b[:])
		return txn.Set(storage.StoreEpochKey, []byte(epoch))
	})
	return epoch, err
}

// Rebuild writes every binding (accounts' Apps, then the explicit
// binding index) from TiKV, then the epoch key that says Redis is whole.
// With clear (Redis indexes another store) it first deletes every redrain
// key but admin nonces; without (Redis lost its data), it deletes nothing:
// while the epoch key is missing no binder writes a binding, so nothing a
// live node wrote is lost, and nodes rebuilding at once write the same.
func (x *Index) Rebuild(ctx context.Context, epoch string, clear bool) error {
	return x.rebuild(ctx, epoch, clear, "")
}

// rebuild is Rebuild; with a token (restore's) it sets the epoch only
// while the token is there.
func (x *Index) rebuild(ctx context.Context, epoch string, clear bool, token string) error {
	start := time.Now()
	cleared := 0
	if clear {
		var err error
		if cleared, err = x.clear(ctx); err != nil {
			return err
		}
	}
	bindings, explicit, err := x.write(ctx, epoch, token)
	if err != nil {
		return err
	}
	x.Log.Info("recovery: redis index rebuilt from tikv", "cleared", cleared, "bindings", bindings, "explicit_bindings", explicit, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// clear deletes every redrain key but admin nonces and returns how
// many it deleted.
func (x *Index) clear(ctx context.Context) (cleared int, err error) {
	iter := x.Redis.Scan(ctx, 0, "rr:*", 1000).Iterator()
	var stale []string
	for iter.Next(ctx) {
		if strings.HasPrefix(iter.Val(), adminauth.NonceKeyPrefix) {
			// Seen admin nonces are not an index of TiKV: dropping them
			// would let a captured admin request be replayed once.
			continue
		}
		stale = append(stale, iter.Val())
		if len(stale) == 1000 {
			if err := x.Redis.Unlink(ctx, stale...).Err(); err != nil {
				return cleared, err
			}
			cleared += len(stale)
			stale = stale[:0]
		}
	}
	if err := iter.Err(); err != nil {
		return cleared, err
	}
	if len(stale) > 0 {
		if err := x.Redis.Unlink(ctx, stale...).Err(); err != nil {
			return cleared, err
		}
		cleared += len(stale)
	}
	return cleared, nil
}

// write writes every binding from TiKV, then the epoch key (see
// Rebuild; with a token, only while the token is there), and returns how many bindings of accounts and of the
// explicit index it wrote.
func (x *Index) write(ctx context.Context, epoch, token string) (bindings, explicit int, err error) {
	var cmds []redis.Cmder
	flush := func() error {
		if len(cmds) == 0 {
			return nil
		}
		if err := x.Pipe.Do(ctx, cmds...); err != nil {
			return err
		}
		for _, c := range cmds {
			if c.Err() != nil {
				return c.Err()
			}
		}
		cmds = cmds[:0]
		return nil
	}
	add := func(c redis.Cmder) error {
		cmds = append(cmds, c)
		if len(cmds) >= 512 {
			return flush()
		}
		return nil
	}
	err = booking.ScanAccounts(ctx, x.TiKV, func(a *ledger.Account) (bool, error) {
		// The account also records the app identities bound to it.
		for _, u := range a.Apps {
			bindings++
			if err := add(redis.NewStatusCmd(ctx, "set", storage.BindMarkKey(u.AppID, u.UserID), strconv.FormatUint(a.ActID, 10))); err != nil {
				return false, err
			}
		}
		return true, nil
	})
	if err != nil {
		return 0, 0, err
	}
	// Explicit bindings (POST /v1/accounts/bind) are in their account's
	// Apps too, written in the same transaction, so the scan above restored
	// them already. Their index is written again after it: should an
	// account's Apps ever name a user whose index binds it elsewhere, the
	// index (the conditional, unique record) is what grants follow.
	err = ScanBindIndex(ctx, x.TiKV, func(app uint32, user string, act uint64) error {
		explicit++
		return add(redis.NewStatusCmd(ctx, "set", storage.BindMarkKey(app, user), strconv.FormatUint(act, 10)))
	})
	if err != nil {
		return 0, 0, err
	}
	// The epoch says the index is whole, so it goes alone after every
	// other write succeeded: in the same pipeline it could land while a
	// mark before it failed, and the next start would trust a partial index.
	if err := flush(); err != nil {
		return 0, 0, err
	}
	var g [8]byte
	if _, err := rand.Read(g[:]); err != nil {
		return 0, 0, err
	}
	if err := add(redis.NewStatusCmd(ctx, "set", RedisGenKey, hex.EncodeToString(g[:]))); err != nil {
		return 0, 0, err
	}
	if err := flush(); err != nil {
		return 0, 0, err
	}
	if token != "" {
		set, err := lostTokenEpoch.Run(ctx, x.Redis, []string{token, storage.RedisEpochKey}, epoch).Int()
		if err != nil {
			return 0, 0, err
		}
		if set == 0 {
			return 0, 0, errLostAgain
		}
		return bindings, explicit, nil
	}
	if err := add(redis.NewStatusCmd(ctx, "set", storage.RedisEpochKey, epoch)); err != nil {
		return 0, 0, err
	}
	if err := flush(); err != nil {
		return 0, 0, err
	}
	return bindings, explicit, nil
}
