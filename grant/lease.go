package grant

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"redrain/ledger"
)

// LeaseSource hands out and takes back budget leases (the budget grains).
type LeaseSource interface {
	TakeLease(budgetID string, want int64, owner string, incarnation uint64) (*ledger.Lease, error)
	// RenewLease extends an open lease by ledger.LeaseTTL; an error
	// wrapping ledger.ErrLeaseExpired says it must not be spent any more.
	RenewLease(budgetID string, leaseID uint64, owner string, incarnation uint64) (expires int64, err error)
	CloseLease(budgetID string, leaseID uint64, issued, count int64) error
	// OpenLeasesOf lists the budget's open leases taken by owner's incarnation.
	OpenLeasesOf(budgetID, owner string, incarnation uint64) ([]*ledger.Lease, error)
}

var errExhausted = errors.New("grant: budget exhausted")

// exhaustedRetry is how long a node believes a budget exhausted before it
// asks again (leases returned by other nodes may refill it).
const exhaustedRetry = time.Second

// A lease is fenced by time: its holder answers a grant under it only if
// the grant's record was acknowledged before the lease's expiry as the
// holder estimates it, the local time it sent the take or last renewal
// plus ledger.LeaseTTL (the grain set the expiry after it received that
// request), less leaseSafety. It takes no new grant from a lease within
// leaseSpendMargin of that, so a batch has time for its acknowledgement.
// A node that renews no more (paused, cut off, gone) stops answering under
// its leases on its own; ledger.LeaseReclaimGrace after the expiry other
// nodes may reclaim them, knowing that every grant answered under them is
// in the stream by then.
const (
	leaseSafety      = time.Second
	leaseSpendMargin = 2 * time.Second
)

// leaseHolder spends one budget on this node from leases: taking an amount
// is a mutex and a subtraction. The next lease is fetched in the background
// when the current one is half spent, so grants wait on the budget grain only
// when a lease runs dry faster than a fetch.
type leaseHolder struct {
	log         *slog.Logger
	budgetID    string
	src         LeaseSource
	owner       string
	incarnation uint64
	sizeMax     int64
	clock       func() time.Time

	mu             sync.Mutex
	cur, next      *activeLease
	size           int64 // what the next fetch asks for; doubles while leases run out fast
	fetching       chan struct{}
	fetchErr       error
	exhaustedUntil time.Time
	// closing counts lease closes not yet done; closeAll waits for zero.
	closing int
	closed  *sync.Cond // on mu
	// known are the leases this holder received. A fetch whose reply was
	// lost (a timeout while the grain committed it) leaves a lease of this
	// incarnation that is not known: closeAll closes it with nothing issued.
	known map[uint64]bool
	// using are the leases not closed yet (current, next, retired with
	// grants in flight): those renewLoop renews.
	using []*activeLease
	// spent is the budget's share leased out, in basis points, as the
	// budget grain reported it with the newest lease: what draw
	// thresholds read.
	spent atomic.Int64
	// stop ends the renewal loop (closeAll).
	stop     chan struct{}
	stopOnce sync.Once
}

// OpenLease is what a node has issued so far under one of its open leases
// (the budget record learns it only when the lease closes).
type OpenLease struct {
	Lease  uint64 `json:"lease"`
	Issued int64  `json:"issued"`
	Count  int64  `json:"count"`
}

// open reports the holder's leases in use.
func (h *leaseHolder) open() []OpenLease {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []OpenLease
	for _, l := range []*activeLease{h.cur, h.next} {
		if l != nil && !l.closed {
			out = append(out, OpenLease{Lease: l.id, Issued: l.acked, Count: l.ackedCount})
		}
	}
	return out
}

// spentBP is the budget's spent share in basis points, as of the newest
// lease this node took.
func (h *leaseHolder) spentBP() int64 { return h.spent.Load() }

// leaseSpentBP is the share of its budget leased out once l was taken.
func leaseSpentBP(l *ledger.Lease) int64 {
	if l.BudgetTotal <= 0 {
		return 10000
	}
	// Float: BudgetOut * 10000 could overflow int64; basis points need no
	// more precision than a float64 keeps.
	return int64(float64(l.BudgetOut) / float64(l.BudgetTotal) * 10000)
}

// activeLease is a lease this node spends.
type activeLease struct {
	id     uint64
	amount int64
	// reserved is taken by grants in flight or acknowledged.
	// Invariant: acked <= reserved <= amount.
	reserved, acked, ackedCount int64
	inflight                    int
	retired, closed             bool
	// uncertain: a grant under it may or may not be in the stream (its
	// write failed without proof it did not land, or was acknowledged
	// after the lease's bound). Its holder then never closes it: what it
	// issued is known only once booking has passed every place such a
	// record can land, so the lease expires and is reclaimed at what was
	// booked under it (node/reclaim.go).
	uncertain bool
	takenAt   time.Time
	// liveUntil (unix ns, the holder's clock) is the last instant a grant
	// under the lease may be answered: see leaseSafety. Renewals move it;
	// the shard reads it after the acknowledgement, without the lock.
	liveUntil atomic.Int64
}

// setLive sets l's live bound from the time the take or renewal that set
// its expiry was sent.
func (l *activeLease) setLive(sent time.Time) {
	l.liveUntil.Store(sent.Add(ledger.LeaseTTL - leaseSafety).UnixNano())
}

// liveAt reports whether a grant under l acknowledged at t may be answered.
func (l *activeLease) liveAt(t time.Time) bool { return t.UnixNano() < l.liveUntil.Load() }

// spendableAt reports whether l may take a new grant at t.
func (l *activeLease) spendableAt(t time.Time) bool { return l.liveAt(t.Add(leaseSpendMargin)) }

func newLeaseHolder(log *slog.Logger, budgetID string, src LeaseSource, owner string, inc uint64, sizeMin, sizeMax int64, clock func() time.Time) *leaseHolder {
	h := &leaseHolder{log: log, budgetID: budgetID, src: src, owner: owner, incarnation: inc,
		size: sizeMin, sizeMax: max(sizeMax, sizeMin), clock: clock, known: map[uint64]bool{}, stop: make(chan struct{})}
	h.closed = sync.NewCond(&h.mu)
	return h
}

// renewLoop renews the holder's open leases every ledger.LeaseRenewEvery
// until closeAll (started once the holder is stored, Admission.holder): one request per lease per pass, whatever the grants.
func (h *leaseHolder) renewLoop() {
	t := time.NewTicker(ledger.LeaseRenewEvery)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		h.renewOnce()
	}
}

// renewOnce renews every lease the holder still uses (current, next, or
// retired with grants in flight). One the grain refuses (expired, closed)
// is retired at once; one it cannot reach keeps its bound and runs out.
func (h *leaseHolder) renewOnce() {
	h.mu.Lock()
	var live []*activeLease
	live = append(live, h.using...)
	h.mu.Unlock()
	for _, l := range live {
		sent := h.clock()
		_, err := h.src.RenewLease(h.budgetID, l.id, h.owner, h.incarnation)
		switch {
		case err == nil:
			l.setLive(sent)
		case errors.Is(err, ledger.ErrLeaseExpired):
			h.log.Warn("lease can no longer be renewed: no more grants under it", "budget", h.budgetID, "lease", l.id, "err", err)
			l.liveUntil.Store(0)
			h.mu.Lock()
			h.dropLocked(l)
			h.mu.Unlock()
		default:
			h.log.Warn("lease renewal failed; retrying", "budget", h.budgetID, "lease", l.id, "err", err)
		}
	}
}

// dropLocked stops taking grants from l (it is retired like a spent one).
func (h *leaseHolder) dropLocked(l *activeLease) {
	switch l {
	case h.cur:
		h.cur = nil
	case h.next:
		h.next = nil
	default:
		return
	}
	h.retireLocked(l)
}

// take reserves amount from the current lease, fetching leases as needed.
func (h *leaseHolder) take(ctx context.Context, amount int64) (*activeLease, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.clock()
	return h.takeLocked(ctx, amount, &now)
}

// takeBatch reserves each of amounts in turn under one hold of the lock
// and one read of the clock: a shard's batch takes from a budget once, not
// once per grant (its takes span microseconds; a lease stops taking
// leaseSpendMargin before its end). leases[i] and errs[i] are take's
// results for amounts[i].
func (h *leaseHolder) takeBatch(ctx context.Context, amounts []int64, leases []*activeLease, errs []error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.clock()
	for i, a := range amounts {
		leases[i], errs[i] = h.takeLocked(ctx, a, &now)
	}
}

// takeLocked is take with h.mu held, at *now; it releases the lock only
// while it waits for a lease fetch, and then reads the clock into *now
// again.
func (h *leaseHolder) takeLocked(ctx context.Context, amount int64, now *time.Time) (*activeLease, error) {
	for {
		if l := h.cur; l != nil && l.amount-l.reserved >= amount && l.spendableAt(*now) {
			l.reserved += amount
			l.inflight++
			if l.amount-l.reserved < l.amount/2 && h.next == nil && h.fetching == nil {
				h.fetchLocked()
			}
			return l, nil
		}
		if h.cur != nil {
			h.retireLocked(h.cur)
			h.cur = nil
		}
		if h.next != nil {
			h.cur, h.next = h.next, nil
			if !h.cur.spendableAt(*now) {
				h.retireLocked(h.cur)
				h.cur = nil
			}
			continue
		}
		if now.Before(h.exhaustedUntil) {
			return nil, errExhausted
		}
		if h.fetchErr != nil {
			err := h.fetchErr
			h.fetchErr = nil
			return nil, err
		}
		if h.fetching == nil {
			h.fetchLocked()
		}
		wait := h.fetching
		h.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			h.mu.Lock()
			return nil, ctx.Err()
		}
		h.mu.Lock()
		*now = h.clock()
	}
}

// settle ends a reservation: acknowledged grants count as issued, failed
// ones give their amount back.
func (h *leaseHolder) settle(l *activeLease, amount int64, acked bool) {
	h.settleBatch(l, amount, 1, acked)
}

// settleBatch ends count reservations of l that add up to amount, as
// settle does for one.
func (h *leaseHolder) settleBatch(l *activeLease, amount int64, count int, acked bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	l.inflight -= count
	if acked {
		l.acked += amount
		l.ackedCount += int64(count)
	} else {
		l.reserved -= amount
	}
	if l.retired && l.inflight == 0 {
		h.closeLocked(l)
	}
}

func (h *leaseHolder) retireLocked(l *activeLease) {
	l.retired = true
	if d := h.clock().Sub(l.takenAt); d < 2*time.Second && h.size < h.sizeMax {
		h.size = min(h.size*2, h.sizeMax)
	}
	if l.inflight == 0 {
		h.closeLocked(l)
	}
}

// markUncertain marks leases under which a grant may or may not have
// landed (see activeLease.uncertain).
func (h *leaseHolder) markUncertain(l *activeLease) {
	h.mu.Lock()
	defer h.mu.Unlock()
	l.uncertain = true
	// No more grants under it: the sooner it is left, the sooner it
	// expires and is reclaimed.
	h.dropLocked(l)
}

// closeLocked returns the lease's unspent part to the budget; a lease
// with an uncertain grant is left to expire and be reclaimed instead.
func (h *leaseHolder) closeLocked(l *activeLease) {
	if l.closed {
		return
	}
	l.closed = true
	if i := slices.Index(h.using, l); i >= 0 {
		h.using = slices.Delete(h.using, i, i+1)
	}
	if l.uncertain {
		h.log.Info("lease left to expire and be reclaimed at what was booked under it: a grant under it may or may not have landed",
			"budget", h.budgetID, "lease", l.id, "acknowledged", l.acked)
		return
	}
	issued, count := l.acked, l.ackedCount
	h.closing++
	go func() {
		defer func() {
			h.mu.Lock()
			h.closing--
			h.closed.Broadcast()
			h.mu.Unlock()
		}()
		for attempt := 0; attempt < 20; attempt++ {
			err := h.src.CloseLease(h.budgetID, l.id, issued, count)
			if err == nil {
				return
			}
			h.log.Warn("lease close failed; retrying", "budget", h.budgetID, "lease", l.id, "err", err)
			time.Sleep(time.Duration(attempt+1) * 100 * time.Millisecond)
		}
		// Left open: recovery closes it with issued = booked under it.
		h.log.Error("lease close abandoned; recovery will close it", "budget", h.budgetID, "lease", l.id)
	}()
}

func (h *leaseHolder) fetchLocked() {
	done := make(chan struct{})
	h.fetching = done
	want := h.size
	go func() {
		sent := h.clock()
		lease, err := h.src.TakeLease(h.budgetID, want, h.owner, h.incarnation)
		h.mu.Lock()
		defer h.mu.Unlock()
		h.fetching = nil
		close(done)
		switch {
		case err != nil:
			h.log.Warn("lease fetch failed", "budget", h.budgetID, "err", err)
			h.fetchErr = err
		case lease == nil:
			h.exhaustedUntil = h.clock().Add(exhaustedRetry)
		default:
			h.known[lease.ID] = true
			h.spent.Store(leaseSpentBP(lease))
			l := &activeLease{id: lease.ID, amount: lease.Amount, takenAt: h.clock()}
			l.setLive(sent)
			h.using = append(h.using, l)
			if lease.Amount < want {
				// The budget's tail: after it, the budget is exhausted.
				h.exhaustedUntil = h.clock().Add(exhaustedRetry)
			}
			if h.cur == nil {
				h.cur = l
			} else {
				h.next = l
			}
		}
	}()
}

// closeAll retires every lease and waits until their unspent parts are
// returned (grants still in flight settle first).
func (h *leaseHolder) closeAll(ctx context.Context) {
	h.stopOnce.Do(func() { close(h.stop) })
	h.mu.Lock()
	for h.fetching != nil {
		wait := h.fetching
		h.mu.Unlock()
		<-wait
		h.mu.Lock()
	}
	for _, l := range []*activeLease{h.cur, h.next} {
		if l != nil {
			h.retireLocked(l)
		}
	}
	h.cur, h.next = nil, nil
	h.exhaustedUntil = h.clock().Add(time.Hour)
	// Grants still in flight settle (and close their lease) first; a close
	// that outlives ctx is left to recovery.
	stop := context.AfterFunc(ctx, func() {
		h.mu.Lock()
		h.closed.Broadcast()
		h.mu.Unlock()
	})
	defer stop()
	for h.closing > 0 && ctx.Err() == nil {
		h.closed.Wait()
	}
	known := maps.Clone(h.known)
	h.mu.Unlock()
	h.closeUnknown(known)
}

// closeUnknown closes the leases of this incarnation that the holder never
// received: nothing was issued under them.
func (h *leaseHolder) closeUnknown(known map[uint64]bool) {
	open, err := h.src.OpenLeasesOf(h.budgetID, h.owner, h.incarnation)
	if err != nil {
		h.log.Warn("lease sweep failed; recovery will close strays", "budget", h.budgetID, "err", err)
		return
	}
	for _, l := range open {
		if known[l.ID] {
			continue
		}
		if err := h.src.CloseLease(h.budgetID, l.ID, 0, 0); err != nil {
			h.log.Warn("stray lease not closed", "budget", h.budgetID, "lease", l.ID, "err", err)
			continue
		}
		h.log.Info("closed a lease whose grant reply was lost", "budget", h.budgetID, "lease", l.ID, "amount", l.Amount)
	}
}
