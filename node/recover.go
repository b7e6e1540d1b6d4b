package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/redis/go-redis/v9"

	"redrain/actors"
	"redrain/adminauth"
	"redrain/booking"
	"redrain/ledger"
	"redrain/metrics"
	"redrain/storage"
)

// recover runs until the node may serve:
//  1. booking drains the grant topic up to where it ended when the node
//     started, so every grant ever acknowledged is in TiKV;
//  2. if Redis lost its data (no epoch key) the index is rebuilt from TiKV;
//  3. leases that an earlier incarnation of this node left open (it died)
//     are closed with issued = what booking posted under them (folded or
//     not), returning the rest of each to its budget: on shared backends
//     only those without expiry, since expiring ones are reclaimed once
//     expired, with a fence, by any node (reclaim.go).
func (n *Node) recover(ctx context.Context) {
	for attempt := 1; ctx.Err() == nil; attempt++ {
		start := time.Now()
		err := n.recoverOnce(ctx)
		if err == nil {
			n.ready.Store(true)
			n.log.Info("node ready", "recovery", time.Since(start).Round(time.Millisecond))
			return
		}
		if ctx.Err() != nil {
			return
		}
		n.log.Warn("recovery failed; retrying", "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (n *Node) recoverOnce(ctx context.Context) error {
	if err := n.awaitBooked(ctx); err != nil {
		return err
	}
	if n.kafka.Embedded() {
		if err := n.restoreBindings(ctx); err != nil {
			return fmt.Errorf("restore bindings: %w", err)
		}
	}
	storeEpoch, err := n.storeEpoch(ctx)
	if err != nil {
		return err
	}
	redisEpoch, err := n.redis.Client.Get(ctx, storage.RedisEpochKey).Result()
	switch {
	case errors.Is(err, redis.Nil):
		if err := n.rebuildRedis(ctx, storeEpoch, false); err != nil {
			return fmt.Errorf("rebuild redis: %w", err)
		}
	case err == nil && redisEpoch != storeEpoch:
		n.log.Warn("recovery: redis indexes another store; clearing its redrain keys", "redis_epoch", redisEpoch, "store_epoch", storeEpoch)
		if err := n.rebuildRedis(ctx, storeEpoch, true); err != nil {
			return fmt.Errorf("rebuild redis: %w", err)
		}
	case err != nil:
		return fmt.Errorf("redis: %w", err)
	default:
		n.log.Info("recovery: redis index present", "epoch", redisEpoch)
	}
	return n.closeOrphanLeases(ctx)
}

// awaitBooked returns once booking (of every node) has booked the grant
// topic up to where it ended when awaitBooked began: every grant answered
// before then is in the store, with the binding it used.
func (n *Node) awaitBooked(ctx context.Context) error {
	client, err := sarama.NewClient(n.kafka.Brokers, storage.SaramaConfig("redrain-recovery"))
	if err != nil {
		return fmt.Errorf("kafka: %w", err)
	}
	defer client.Close()
	target, err := booking.HighWaterMarks(client)
	if err != nil {
		return err
	}
	// The store holds each partition's booked offset, written with its
	// journal: booking has drained when it reached what the topic held.
	oldest := make(map[int32]int64, len(target))
	for p := range target {
		if oldest[p], err = client.GetOffset(storage.GrantTopic, p, sarama.OffsetOldest); err != nil {
			return fmt.Errorf("%w: offset: %v", storage.ErrUnavailable, err)
		}
	}
	for {
		booked, err := booking.Booked(ctx, n.tikv, int32(len(target)))
		if err != nil {
			return err
		}
		behind := int64(0)
		for p, t := range target {
			behind += max(t-max(booked[p], oldest[p]), 0)
		}
		if behind == 0 {
			break
		}
		n.log.Info("recovery: waiting for booking to drain", "records", behind)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil
}

// indexCheckEvery is how often a ready node checks that Redis still holds
// its binding index (the epoch key).
const indexCheckEvery = time.Second

// watchIndex rebuilds the Redis binding index when Redis loses it while
// the node runs (flushed, or restarted without its data). Until the
// rebuild sets the epoch key again, every binder refuses to bind a user
// it does not know (the bind script's NOINDEX): a known user never gets a
// second account, and new users are answered unavailable meanwhile. The
// rebuild waits for the records in flight to land (storage.WriteDeadline)
// and for booking to book the topic to its end, so that the store holds
// every binding an answered grant used; it deletes nothing (nothing binds
// meanwhile), so several nodes may rebuild at once.
func (n *Node) watchIndex(ctx context.Context, lost *metrics.Gauge) {
	t := time.NewTicker(indexCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !n.ready.Load() {
			continue // recovery rebuilds it
		}
		err := n.redis.Client.Get(ctx, storage.RedisEpochKey).Err()
		if !errors.Is(err, redis.Nil) {
			continue // present, or Redis down (binders fail on their own)
		}
		lost.Set(1)
		n.log.Error("redis lost its binding index (no epoch key): new users are refused until it is rebuilt from the store")
		start := time.Now()
		for attempt := 1; ctx.Err() == nil; attempt++ {
			err := n.restoreIndex(ctx)
			if err == nil {
				break
			}
			n.log.Warn("redis index rebuild failed; retrying", "attempt", attempt, "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
		lost.Set(0)
		n.log.Info("redis binding index rebuilt while serving", "took", time.Since(start).Round(time.Millisecond))
	}
}

// restoreIndex is watchIndex's rebuild (see there).
func (n *Node) restoreIndex(ctx context.Context) error {
	// Records of grants resolved before the loss may still land; a node
	// alone on the embedded broker binds in process and wrote them all.
	wait := storage.WriteDeadline
	if n.kafka.Embedded() {
		wait = 0
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(wait):
	}
	if err := n.awaitBooked(ctx); err != nil {
		return err
	}
	epoch, err := n.storeEpoch(ctx)
	if err != nil {
		return err
	}
	if err := n.redis.Client.Get(ctx, storage.RedisEpochKey).Err(); err == nil {
		return nil // another node rebuilt it meanwhile
	}
	return n.rebuildRedis(ctx, epoch, false)
}

// restoreBindings loads every binding into the binder of a node alone on
// its broker, which binds new users in process: booking has drained, so
// the store holds every binding a grant or a bind made durable. The
// explicit binding index goes last, so that it wins over an account's app
// list (as in rebuildRedis). (Each shard's claims are restored when
// booking hands it its partition: sessions.)
func (n *Node) restoreBindings(ctx context.Context) error {
	start := time.Now()
	bindings := 0
	err := booking.ScanAccounts(ctx, n.tikv, func(a *ledger.Account) (bool, error) {
		for _, u := range a.Apps {
			n.binder.Restore(u.AppID, u.UserID, a.ActID)
			bindings++
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	err = n.scanBindIndex(ctx, func(app uint32, user string, act uint64) error {
		n.binder.Restore(app, user, act)
		bindings++
		return nil
	})
	if err != nil {
		return err
	}
	n.log.Info("recovery: bindings restored from the store", "bindings", bindings, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// scanBindIndex calls fn with every explicit binding in the store's index.
func (n *Node) scanBindIndex(ctx context.Context, fn func(app uint32, user string, act uint64) error) error {
	return n.tikv.Scan(ctx, storage.BindPrefix, storage.PrefixEnd(storage.BindPrefix), func(k, v []byte) (bool, error) {
		app, user, ok := storage.ParseBindKey(k)
		act, okAct := storage.ParseActIDValue(v)
		if !ok || !okAct || act == 0 {
			return false, fmt.Errorf("%w: binding index %q = %x", ledger.ErrCorrupt, k, v)
		}
		return true, fn(app, user, act)
	})
}

// storeEpoch returns the store's epoch id, creating it on first use.
func (n *Node) storeEpoch(ctx context.Context) (string, error) {
	var epoch string
	err := n.tikv.Update(ctx, func(txn storage.Txn) error {
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

// rebuildRedis writes every binding (accounts' Apps, then the explicit
// binding index) from TiKV, then the epoch key that says Redis is whole.
// With clear (Redis indexes another store) it first deletes every redrain
// key but admin nonces; without (Redis lost its data), it deletes nothing:
// while the epoch key is missing no binder writes a binding, so nothing a
// live node wrote is lost, and nodes rebuilding at once write the same.
func (n *Node) rebuildRedis(ctx context.Context, epoch string, clear bool) error {
	start := time.Now()
	cleared := 0
	if clear {
		var err error
		if cleared, err = n.clearRedis(ctx); err != nil {
			return err
		}
	}
	bindings, explicit, err := n.writeIndex(ctx, epoch)
	if err != nil {
		return err
	}
	n.log.Info("recovery: redis index rebuilt from tikv", "cleared", cleared, "bindings", bindings, "explicit_bindings", explicit, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// clearRedis deletes every redrain key but admin nonces and returns how
// many it deleted.
func (n *Node) clearRedis(ctx context.Context) (cleared int, err error) {
	iter := n.redis.Client.Scan(ctx, 0, "rr:*", 1000).Iterator()
	var stale []string
	for iter.Next(ctx) {
		if strings.HasPrefix(iter.Val(), adminauth.NonceKeyPrefix) {
			// Seen admin nonces are not an index of TiKV: dropping them
			// would let a captured admin request be replayed once.
			continue
		}
		stale = append(stale, iter.Val())
		if len(stale) == 1000 {
			if err := n.redis.Client.Unlink(ctx, stale...).Err(); err != nil {
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
		if err := n.redis.Client.Unlink(ctx, stale...).Err(); err != nil {
			return cleared, err
		}
		cleared += len(stale)
	}
	return cleared, nil
}

// writeIndex writes every binding from TiKV, then the epoch key (see
// rebuildRedis), and returns how many bindings of accounts and of the
// explicit index it wrote.
func (n *Node) writeIndex(ctx context.Context, epoch string) (bindings, explicit int, err error) {
	var cmds []redis.Cmder
	flush := func() error {
		if len(cmds) == 0 {
			return nil
		}
		if err := n.pipe.Do(ctx, cmds...); err != nil {
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
	err = booking.ScanAccounts(ctx, n.tikv, func(a *ledger.Account) (bool, error) {
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
	err = n.scanBindIndex(ctx, func(app uint32, user string, act uint64) error {
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
	if err := add(redis.NewStatusCmd(ctx, "set", storage.RedisEpochKey, epoch)); err != nil {
		return 0, 0, err
	}
	if err := flush(); err != nil {
		return 0, 0, err
	}
	return bindings, explicit, nil
}

// closeOrphanLeases closes the leases that an earlier incarnation of this
// node left open: on shared backends only those without expiry (taken
// before leases expired; expiring ones are reclaimed once expired,
// reclaim.go), on the embedded broker all of them. Booking has drained, so what it posted under a lease is all
// that lease issued: what folds moved into the lease record plus its uses
// in the details not folded yet, read from one snapshot (BookedByLease). A
// fold between that read and the close moves amounts from the details to
// the lease without changing their sum.
func (n *Node) closeOrphanLeases(ctx context.Context) error {
	// On shared backends a lease that expires is reclaimed once it has,
	// with a fence (reclaim.go): the earlier incarnation may still be alive
	// somewhere (a pause, a copy of this data dir) and answering under it
	// until then. On the embedded broker nobody but this process writes
	// the topic.
	orphans, err := actors.OpenLeasesWhere(ctx, n.tikv, func(l *ledger.Lease) bool {
		return l.Owner == n.ID && l.Incarnation != n.Incarnation && (l.Expires == 0 || n.kafka.Embedded())
	})
	if err != nil {
		return err
	}
	budgets := actors.NewBudgets(n.member.Cluster, n.tikv)
	booked := map[string]map[uint64]ledger.LeaseUse{} // by budget, read once each
	for _, l := range orphans {
		if booked[l.BudgetID] == nil {
			if booked[l.BudgetID], err = actors.BookedByLease(ctx, n.tikv, l.BudgetID); err != nil {
				return err
			}
		}
		u := booked[l.BudgetID][l.ID]
		if err := budgets.CloseLease(l.BudgetID, l.ID, u.Amount, u.Count); err != nil {
			return fmt.Errorf("close orphan lease %s/%d: %w", l.BudgetID, l.ID, err)
		}
		n.log.Info("recovery: closed lease of an earlier incarnation", "budget", l.BudgetID, "lease", l.ID,
			"amount", l.Amount, "issued", u.Amount, "returned", l.Amount-u.Amount)
	}
	return nil
}
