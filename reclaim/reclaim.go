// Package reclaim closes the budget leases of holders that renew them no
// more (gone, paused, cut off) at what was booked under them, so that a
// node that never returns strands no budget. Every node runs it, and a
// stopping node settles its own leases with it.
//
// A lease is reclaimed ledger.LeaseReclaimGrace after it expired:
//
//  1. the topic's end offsets are read: every grant the holder answered
//     was acknowledged before the expiry, so it is below them;
//  2. each partition's booking owner fences the lease from the larger of
//     that offset and its own next one (booking.Fence, wherever the
//     partition is booked): its grants in later records (the holder's,
//     after it stopped renewing; never answered) are refused and reported;
//  3. once every partition has booked up to its fence, what was booked
//     under the lease is all it will ever have booked, and the lease
//     closes at that through its budget grain.
//
// Every step is idempotent (a fence drawn holds; a closed lease stays
// closed), so every node runs the loop and a round cut short is done again.
package reclaim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"redrain/actors"
	"redrain/booking"
	"redrain/ledger"
	"redrain/metrics"
	"redrain/storage"
)

const (
	// Every is how often a node looks for leases to reclaim (with up to
	// as much again of jitter, so nodes do not all go at once).
	Every = 2 * ledger.LeaseRenewEvery
	// BookedWithin bounds the wait for the partitions to book up to their
	// fences in one round.
	BookedWithin = 30 * time.Second
	// FenceTimeout bounds one partition's fence.
	FenceTimeout = 10 * time.Second
	// SettleWithin bounds how long a stopping node tries to settle its open
	// leases.
	SettleWithin = 20 * time.Second
)

// Reclaimer reclaims leases on one node.
type Reclaimer struct {
	Log     *slog.Logger
	TiKV    *storage.TiKV
	Budgets *actors.Budgets
	// Parts is the grant topic's partition count.
	Parts int32
	// Ends reads the grant topic's end offset of every partition.
	Ends func(ctx context.Context) (map[int32]int64, error)
	// Fence fences a lease on partition p where p is booked (this node's
	// booking or the owner's, asked over the network) and returns the
	// fence that holds.
	Fence func(ctx context.Context, p int32, f ledger.Fence) (ledger.Fence, error)
	// Reclaimed counts the leases this node reclaimed (nil: not counted).
	Reclaimed *metrics.Counter
	// Clock and Jitter default to time.Now and a uniform draw in [0, d).
	Clock  func() time.Time
	Jitter func(d time.Duration) time.Duration
}

func (r *Reclaimer) now() time.Time {
	if r.Clock != nil {
		return r.Clock()
	}
	return time.Now()
}

// Run reclaims expired leases every Every (plus jitter) until ctx ends.
func (r *Reclaimer) Run(ctx context.Context) {
	jitter := r.Jitter
	if jitter == nil {
		jitter = func(d time.Duration) time.Duration { return rand.N(d) }
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(Every + jitter(Every)):
		}
		if err := r.Expired(ctx); err != nil && ctx.Err() == nil {
			r.Log.Warn("lease reclaim: round cut short; retrying", "err", err)
		}
	}
}

// Expired reclaims every open lease of every stored budget that expired
// more than ledger.LeaseReclaimGrace ago.
func (r *Reclaimer) Expired(ctx context.Context) error {
	now := r.now().UnixMilli()
	expired, err := actors.OpenLeasesWhere(ctx, r.TiKV, func(l *ledger.Lease) bool {
		return l.Expires != 0 && now >= l.Expires+ledger.LeaseReclaimGrace.Milliseconds()
	})
	if err != nil {
		return err
	}
	var errs []error
	for _, l := range expired {
		if err := r.Reclaim(ctx, l); err != nil {
			errs = append(errs, fmt.Errorf("lease %s/%d: %w", l.BudgetID, l.ID, err))
		}
	}
	return errors.Join(errs...)
}

// Reclaim fences l on every partition, waits until they booked up to
// their fences, and closes l at what was booked under it.
func (r *Reclaimer) Reclaim(ctx context.Context, l *ledger.Lease) error {
	ends, err := r.Ends(ctx)
	if err != nil {
		return err
	}
	at := r.now().UnixMilli()
	fences := make(map[int32]int64, len(ends))
	for p, end := range ends {
		fctx, cancel := context.WithTimeout(ctx, FenceTimeout)
		f, err := r.Fence(fctx, p, ledger.Fence{BudgetID: l.BudgetID, LeaseID: l.ID, From: end, At: at})
		cancel()
		if err != nil {
			return fmt.Errorf("fence on partition %d: %w", p, err)
		}
		fences[p] = f.From
	}
	if err := r.awaitBookedTo(ctx, fences); err != nil {
		return err
	}
	booked, err := actors.BookedByLease(ctx, r.TiKV, l.BudgetID)
	if err != nil {
		return err
	}
	u := booked[l.ID]
	if err := r.Budgets.CloseLease(l.BudgetID, l.ID, u.Amount, u.Count); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	if r.Reclaimed != nil {
		r.Reclaimed.Inc()
	}
	r.Log.Warn("lease reclaimed: its holder stopped renewing it; closed at what was booked under it",
		"budget", l.BudgetID, "lease", l.ID, "holder", l.Owner, "incarnation", l.Incarnation,
		"expired", time.UnixMilli(l.Expires).UTC().Format(time.RFC3339Nano), "amount", l.Amount, "booked", u.Amount, "returned", l.Amount-u.Amount)
	return nil
}

// Settle closes, at what was booked under them, the leases that owner's
// incarnation still holds open once its grant path and stream are closed:
// those its holders left because a grant under them may or may not have
// landed (grant: activeLease.uncertain). Nothing more can land now, so
// booking up to the topic's end settles them; a failure leaves them to
// the reclaim of the other nodes (or of this node's next start).
func (r *Reclaimer) Settle(ctx context.Context, owner string, incarnation uint64) {
	mine, err := actors.OpenLeasesWhere(ctx, r.TiKV, func(l *ledger.Lease) bool { return l.Owner == owner && l.Incarnation == incarnation })
	if err != nil {
		r.Log.Warn("settling open leases: listing them; the reclaim will", "err", err)
		return
	}
	// Other nodes may be stopping too (a partition between owners): try
	// again for a while, within the stop's deadline.
	deadline := r.now().Add(SettleWithin)
	for _, l := range mine {
		for {
			err := r.Reclaim(ctx, l)
			if err == nil {
				break
			}
			if r.now().After(deadline) || ctx.Err() != nil {
				r.Log.Warn("settling an open lease failed; the reclaim will", "budget", l.BudgetID, "lease", l.ID, "err", err)
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
}

// awaitBookedTo returns once the store holds every partition booked up to
// its offset in to, or fails after BookedWithin.
func (r *Reclaimer) awaitBookedTo(ctx context.Context, to map[int32]int64) error {
	deadline := r.now().Add(BookedWithin)
	for {
		booked, err := booking.Booked(ctx, r.TiKV, r.Parts)
		if err == nil {
			behind := -1
			for p, off := range to {
				if booked[p] < off {
					behind = int(p)
					break
				}
			}
			if behind < 0 {
				return nil
			}
			err = fmt.Errorf("partition %d booked to %d, its fence is at %d", behind, booked[int32(behind)], to[int32(behind)])
		}
		if r.now().After(deadline) {
			return fmt.Errorf("not booked up to the fences within %v: %w", BookedWithin, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
