package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/IBM/sarama"
	"github.com/redis/go-redis/v9"

	"redrain/actors"
	"redrain/booking"
	"redrain/ingress"
	"redrain/ledger"
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
	storeEpoch, err := ingress.StoreEpoch(ctx, n.tikv)
	if err != nil {
		return err
	}
	redisEpoch, err := n.redis.Client.Get(ctx, storage.RedisEpochKey).Result()
	switch {
	case errors.Is(err, redis.Nil):
		if err := n.index.Rebuild(ctx, storeEpoch, false); err != nil {
			return fmt.Errorf("rebuild redis: %w", err)
		}
	case err == nil && redisEpoch != storeEpoch:
		n.log.Warn("recovery: redis indexes another store; clearing its redrain keys", "redis_epoch", redisEpoch, "store_epoch", storeEpoch)
		if err := n.index.Rebuild(ctx, storeEpoch, true); err != nil {
			return fmt.Errorf("rebuild redis: %w", err)
		}
	case err != nil:
		return fmt.Errorf("redis: %w", err)
	default:
		n.log.Info("recovery: redis index present", "epoch", redisEpoch)
	}
	return n.closeOrphanLeases(ctx)
}

// indexDrained is the index's Drained: records of grants resolved before
// now may still land (storage.WriteDeadline; none on the embedded broker,
// where this node binds in process and wrote them all), then booking
// books the topic to its end.
func (n *Node) indexDrained(ctx context.Context) error {
	wait := storage.WriteDeadline
	if n.kafka.Embedded() {
		wait = 0
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(wait):
	}
	return n.awaitBooked(ctx)
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
	target, err := booking.HighWaterMarks(client, n.cfg.GrantTopic)
	if err != nil {
		return err
	}
	// The store holds each partition's booked offset, written with its
	// journal: booking has drained when it reached what the topic held.
	oldest := make(map[int32]int64, len(target))
	for p := range target {
		if oldest[p], err = client.GetOffset(n.cfg.GrantTopic, p, sarama.OffsetOldest); err != nil {
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

// restoreBindings loads every binding into the binder of a node alone on
// its broker, which binds new users in process: booking has drained, so
// the store holds every binding a grant or a bind made durable. The
// explicit binding index goes last, so that it wins over an account's app
// list (as in ingress.Index.Rebuild). (Each shard's claims are restored when
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
	err = ingress.ScanBindIndex(ctx, n.tikv, func(app uint32, user string, act uint64) error {
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
