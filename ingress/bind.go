package ingress

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/valyala/fasthttp"

	"redrain/booking"
	"redrain/errcode"
	"redrain/ledger"
	"redrain/storage"
)

// bindAttemptsMax bounds the retries of the durable bind transaction when
// booking (or another bind) writes the same account at once.
const bindAttemptsMax = 10

// Bind binds the app user (app, user) to the existing unified account
// actID, so that grants by any identity bound to it reach that account and
// its per-user limits count them as one user. It answers BindStatusBound
// when this call made the binding, BindStatusSame when Redis already held
// the same one; errcode.CodeNotFound when actID was never handed out; and
// errcode.CodeAlreadyBound, changing nothing, when the user is bound to another
// account.
//
// The order is the grant path's: Redis is the arbiter that the binder's
// SET NX GET consults, so the binding is claimed there first (a concurrent
// first grant of the same user either sees it or wins and makes this call
// refuse). Then one conditional TiKV transaction writes the durable index
// rr/bind/{app}/{user} together with the account's Apps, creating the
// account record if the user has no booked grant yet. If that transaction
// fails, the Redis binding stays, on purpose: it is exactly the mapping
// asked for, the caller got a retryable error and a retry finds it
// (BindStatusSame) and completes the durable write; deleting it instead
// could strand a grant issued meanwhile under actID while the user's next
// grant bound a new id. Until then the binding is as durable as a grant
// path binding: booking a grant of this user records it in the account.
//
// reach, unless nil, is asked whether the caller may join the account as
// it is on record (nil: no record yet) before anything is written; its
// error is the answer.
func (b *Binder) Bind(ctx context.Context, app uint32, user string, actID uint64, reach func(*ledger.Account) error) (string, error) {
	if app == 0 || user == "" || actID == 0 {
		return "", errcode.Errorf(errcode.CodeMalformed, "bind: app_id, user_id and act_id are required")
	}
	now := time.Now
	if b.now != nil {
		now = b.now
	}
	if !b.binds.allow(actID, now()) {
		return "", errcode.Errorf(errcode.CodeRateLimited, "binds to act_id %d: at most %d a second to one account (%d at once) and %d a second on this node", actID, bindsPerAccountPerSecondMax, bindsPerAccountBurst, bindsPerSecondMax)
	}
	known, account, err := b.handedOut(ctx, actID)
	if err != nil {
		return "", unavailable(err)
	}
	if !known {
		return "", errcode.Errorf(errcode.CodeNotFound, "no account %d", actID)
	}
	if reach != nil {
		if err := reach(account); err != nil {
			return "", err
		}
	}
	if account != nil && len(account.Apps) >= AccountIdentitiesMax &&
		!slices.Contains(account.Apps, ledger.AppUser{AppID: app, UserID: user}) {
		return "", errcode.Errorf(errcode.CodeTooManyIdentities, "act_id %d holds %d app identities, the most an account may", actID, len(account.Apps))
	}
	key := storage.BindMarkKey(app, user)
	status, bound, err := b.claimBinding(ctx, app, user, actID)
	if err != nil {
		return "", err
	}
	if bound != actID {
		return "", errcode.Errorf(errcode.CodeAlreadyBound, "app %d user %q is bound to act_id %d", app, user, bound)
	}
	durable, err := b.bindDurable(ctx, app, user, actID)
	if errors.Is(err, ledger.ErrCorrupt) || errors.Is(err, ledger.ErrInvariant) {
		return "", errcode.Errorf(errcode.CodeInternal, "bind to act_id %d: %v", actID, err)
	}
	if err != nil {
		return "", unavailable(err)
	}
	if durable != actID {
		// TiKV's index binds the user elsewhere while Redis (or the
		// owner's map) did not know it: the store of record wins.
		if b.owner {
			b.Restore(app, user, durable)
			return "", errcode.Errorf(errcode.CodeAlreadyBound, "app %d user %q is bound to act_id %d", app, user, durable)
		}
		fix := redis.NewStatusCmd(ctx, "set", key, strconv.FormatUint(durable, 10))
		if err := b.redis.Do(ctx, fix); err != nil || fix.Err() != nil {
			return "", unavailable(errors.Join(err, fix.Err()))
		}
		b.forget(app, user)
		return "", errcode.Errorf(errcode.CodeAlreadyBound, "app %d user %q is bound to act_id %d", app, user, durable)
	}
	b.remember(app, user, actID)
	return status, nil
}

// claimBinding sets (app, user) → actID unless the user is bound already,
// and returns the status and the binding that holds: in the owner's map,
// or with Redis's SET NX GET (the arbiter that every binder consults).
func (b *Binder) claimBinding(ctx context.Context, app uint32, user string, actID uint64) (string, uint64, error) {
	if b.owner {
		k := bindKey{app, user}
		sh := b.shard(k)
		sh.mu.Lock()
		defer sh.mu.Unlock()
		if bound, ok := sh.m.get(k); ok {
			return BindStatusSame, bound, nil
		}
		sh.m.put(k, actID)
		return BindStatusBound, actID, nil
	}
	// The grant path's script: it binds nothing while Redis lacks its index.
	ids, fresh, err := b.bindInRedis(ctx, []uint32{app}, []string{user}, []int32{0}, []uint64{actID})
	switch {
	case err != nil:
		return "", 0, unavailable(err)
	case ids[0] == 0:
		return "", 0, errcode.Errorf(errcode.CodeInternal, "binding %s unreadable", storage.BindMarkKey(app, user))
	case fresh[0]:
		return BindStatusBound, actID, nil
	}
	return BindStatusSame, ids[0], nil
}

// handedOut reports whether actID belongs to an account: it has a record
// (a booked grant or an earlier explicit bind), or a binder handed it out
// (its mark in Redis; see actMarkTTL). An id merely allocated to some
// node's block is not enough: that node may still hand it to a new user,
// who would then share the account with the identity bound here.
func (b *Binder) handedOut(ctx context.Context, actID uint64) (bool, *ledger.Account, error) {
	var account *ledger.Account
	var next uint64
	err := b.tikv.Update(ctx, func(txn storage.Txn) error {
		accounts, err := booking.ReadAccounts(ctx, txn, b.parts, []uint64{actID})
		if err != nil {
			return err
		}
		account = accounts[actID]
		m, err := storage.BatchGet(ctx, txn, [][]byte{storage.ActAllocKey})
		if err != nil {
			return err
		}
		if raw := m[string(storage.ActAllocKey)]; raw != nil {
			var ok bool
			if next, ok = storage.ParseActIDValue(raw); !ok {
				return fmt.Errorf("%w: corrupt %s", storage.ErrUnavailable, storage.ActAllocKey)
			}
		}
		return nil
	})
	if err != nil || account != nil {
		return account != nil, account, err
	}
	if actID >= next {
		return false, nil, nil
	}
	if b.owner {
		return b.handedOutHere(actID), nil, nil
	}
	get := redis.NewStringCmd(ctx, "get", storage.ActMarkKey(actID))
	if err := b.redis.Do(ctx, get); err != nil {
		return false, nil, err
	}
	v, err := get.Result()
	switch {
	case errors.Is(err, redis.Nil):
		return false, nil, nil
	case err != nil:
		return false, nil, fmt.Errorf("%w: redis: %v", storage.ErrUnavailable, err)
	}
	return v == storage.ActMarkHandedOut, nil, nil
}

// AccountIdentitiesMax bounds the app identities an explicit bind adds to
// one account: each makes its record longer, and a flood of binds to one
// account could otherwise push it past the store's value limit and stall
// booking of its whole partition. Grants of identities bound on the grant
// path (one each) do not count against it.
const AccountIdentitiesMax = 16

// Binds are rate-limited per node by token buckets: bindsPerSecondMax in
// all (as much burst), and bindsPerAccountPerSecondMax to one account with
// a burst of bindsPerAccountBurst, so an account gains at most a few
// identities a second from one node whatever is sent.
const (
	bindsPerSecondMax           = 1000
	bindsPerAccountPerSecondMax = 2
	bindsPerAccountBurst        = 8
	// bindBucketsMax bounds the accounts the limiter tracks; past it, the
	// buckets that refilled are dropped (a full bucket is no bucket).
	bindBucketsMax = 1 << 16
)

// bucket is a token bucket: tokens at last.
type bucket struct {
	tokens float64
	last   time.Time
}

// take refills b at rate per second up to burst and takes a token if one
// is there.
func (b *bucket) take(now time.Time, rate, burst float64) bool {
	if b.last.IsZero() {
		b.tokens = burst
	} else {
		b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// bindLimiter holds the node's bind buckets.
type bindLimiter struct {
	mu        sync.Mutex
	all       bucket
	byAccount map[uint64]*bucket
	swept     time.Time // the last sweep of refilled buckets
}

// allow takes a token for a bind to actID at now, from the node's bucket
// and the account's, unless either is empty.
func (l *bindLimiter) allow(actID uint64, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byAccount == nil {
		l.byAccount = map[uint64]*bucket{}
	}
	// A full map is swept at most once per refill time (a bucket untouched
	// that long is full again), so binds to ever new accounts do not scan
	// it on every call.
	full := time.Duration(float64(time.Second) * bindsPerAccountBurst / bindsPerAccountPerSecondMax)
	if len(l.byAccount) >= bindBucketsMax && now.Sub(l.swept) >= full {
		l.swept = now
		for id, b := range l.byAccount {
			if now.Sub(b.last) >= full {
				delete(l.byAccount, id)
			}
		}
	}
	a := l.byAccount[actID]
	if a == nil {
		a = &bucket{}
		l.byAccount[actID] = a
	}
	if !a.take(now, bindsPerAccountPerSecondMax, bindsPerAccountBurst) {
		return false
	}
	if !l.all.take(now, bindsPerSecondMax, bindsPerSecondMax) {
		a.tokens++ // not spent: the node refused it
		return false
	}
	return true
}

// bindDurable writes the binding to TiKV: the index key and the identity
// on the account (a journal of its partition, see booking.BindInTxn) in one
// transaction, conditional on what it read (a concurrent booking of the
// partition, or a bind of the same user, makes one of them conflict and
// this one retry). It returns the act_id the index holds afterwards:
// actID, or the one an earlier bind recorded, in which case nothing was
// written.
func (b *Binder) bindDurable(ctx context.Context, app uint32, user string, actID uint64) (uint64, error) {
	indexKey := storage.BindKey(app, user)
	var bound uint64
	var err error
	for attempt := 0; attempt < bindAttemptsMax; attempt++ {
		err = b.tikv.Update(ctx, func(txn storage.Txn) error {
			raw, err := storage.Get(ctx, txn, indexKey)
			if err != nil {
				return err
			}
			if raw != nil {
				var ok bool
				if bound, ok = storage.ParseActIDValue(raw); !ok || bound == 0 {
					return fmt.Errorf("%w: corrupt %s", storage.ErrUnavailable, indexKey)
				}
				if bound != actID {
					return nil
				}
			} else if err := txn.Set(indexKey, storage.ActIDValue(actID)); err != nil {
				return err
			}
			bound = actID
			_, err = booking.BindInTxn(ctx, txn, b.parts, app, user, actID)
			return err
		})
		if !errors.Is(err, storage.ErrConflict) {
			break
		}
	}
	return bound, err
}

func (b *Binder) remember(app uint32, user string, actID uint64) {
	k := bindKey{app, user}
	s := b.shard(k)
	s.mu.Lock()
	b.rememberLocked(s, k, actID)
	s.mu.Unlock()
}

// rememberLocked caches a binding in s, whose lock the caller holds.
func (b *Binder) rememberLocked(s *bindShard, k bindKey, actID uint64) {
	if !b.owner && s.m.len() >= bindCacheMax/bindShards {
		s.m.clear() // a cache: the next lookups go to Redis
	}
	s.m.put(k, actID)
}

func (b *Binder) forget(app uint32, user string) {
	k := bindKey{app, user}
	s := b.shard(k)
	s.mu.Lock()
	s.m.del(k)
	s.mu.Unlock()
}

// bind answers POST /v1/accounts/bind.
func (s *Server) bind(ctx *fasthttp.RequestCtx) {
	req, app, ok := signedRequest(s, ctx, ParseBindRequest, func(r *BindRequest) uint32 { return r.AppID })
	if !ok {
		return
	}
	c, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	status, err := s.Binder.Bind(c, req.AppID, req.UserID, req.ActID, s.bindReach(app, &req))
	if err != nil {
		if errors.Is(err, errcode.CodeRateLimited) {
			setRetryAfter(ctx, time.Second)
		}
		writeError(ctx, err)
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, AppendBindResponse(nil, &BindResponse{
		AppID: req.AppID, UserID: req.UserID, ActID: req.ActID, Status: status}))
}
