package actors

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"redrain/ledger"
	"redrain/storage"
)

// ErrNoBudget is returned by ReadBudgetView for a budget id the store does
// not hold.
var ErrNoBudget = errors.New("actors: no such budget")

// LeaseIssued is what a lease holder reports it acknowledged under one of
// its open leases (the store learns it only when the lease closes).
type LeaseIssued struct {
	Amount, Count int64
}

// BudgetView is a budget as operators see it, read from one snapshot. Its
// figures are in the budget's minor units.
type BudgetView struct {
	ID    string `json:"id"`
	Asset string `json:"asset"`
	Total int64  `json:"total"`
	// Available can still be leased: Total - Leased + Returned.
	Available int64 `json:"available"`
	Leased    int64 `json:"leased"`   // every lease ever taken
	Returned  int64 `json:"returned"` // unspent parts of closed leases
	// Outstanding is what leases hold: Leased - Returned.
	Outstanding int64 `json:"outstanding"`
	OpenLeases  int   `json:"open_leases"`
	OpenAmount  int64 `json:"open_amount"` // Σ open leases' amounts
	// Issued is what was acknowledged to users: closed leases' Issued, and
	// for an open lease the larger of what its holder reported and what was
	// booked under it. It is never below what was booked (a redeemed grant
	// booked before its lease is known was issued too).
	Issued int64 `json:"issued"`
	// Booked is what was posted to users: Folded + every unfolded detail.
	Booked int64 `json:"booked"`
	// InFlight is issued but not booked yet (in Kafka, or being booked).
	InFlight int64 `json:"in_flight"`
	// Unspent is what open leases still hold: OpenAmount - their issued.
	Unspent int64 `json:"unspent"`
	// Unattributed is booked by redeem before the grant's stream event
	// named its lease (lease 0), folded or not; zero once booking drained.
	Unattributed int64 `json:"unattributed"`
	// Expired is what expiries returned to the budget (pieces past their
	// validity moved into its account budget/{id}), folded or not: the
	// budget account's, not leasable again.
	Expired int64 `json:"expired"`

	// The hot account's three views. Ledger is the folded balance (Total -
	// Folded: funded minus folded debits); Actual also takes the unfolded
	// details off; Cached is the actual balance a Folder stored in Redis
	// after a fold, with its age (nil when none is cached).
	Ledger          int64      `json:"ledger"`
	Actual          int64      `json:"actual"`
	Cached          *HotCached `json:"cached"`
	UnfoldedDetails int        `json:"unfolded_details"`

	// OK is set when every identity holds; Problems says which do not.
	OK       bool     `json:"ok"`
	Problems []string `json:"problems"`
}

// HotCached is a cached hot-account balance and how old it is.
type HotCached struct {
	Actual int64 `json:"actual"`
	AgeMs  int64 `json:"age_ms"`
}

// ReadBudgetView reads one budget's view. openIssued holds, by lease id,
// what the holders of its open leases reported (missing leases count what
// was booked under them); rdb (may be nil) is read for the cached balance.
// A budget the store does not hold is ErrNoBudget.
func ReadBudgetView(ctx context.Context, kv *storage.TiKV, rdb *storage.Pipeliner, id string, openIssued map[uint64]LeaseIssued) (*BudgetView, error) {
	views, err := readViews(ctx, kv, rdb, func(txn storage.Txn) ([]*ledger.Budget, error) {
		raw, err := storage.Get(ctx, txn, storage.BudgetKey(id))
		if err != nil {
			return nil, err
		}
		if raw == nil {
			return nil, fmt.Errorf("%w: %s", ErrNoBudget, id)
		}
		b, err := ledger.UnmarshalBudget(raw)
		if err != nil {
			return nil, err
		}
		return []*ledger.Budget{b}, nil
	}, func(string) map[uint64]LeaseIssued { return openIssued })
	if err != nil {
		return nil, err
	}
	return views[0], nil
}

// ReadBudgetViews reads the views of every budget whose id starts with
// prefix ("" for all), in id order, from one snapshot. openIssued holds the
// holders' reports by budget id, then lease id (may be nil).
func ReadBudgetViews(ctx context.Context, kv *storage.TiKV, rdb *storage.Pipeliner, prefix string, openIssued map[string]map[uint64]LeaseIssued) ([]*BudgetView, error) {
	return readViews(ctx, kv, rdb, func(txn storage.Txn) ([]*ledger.Budget, error) {
		var out []*ledger.Budget
		p := append(storage.BudgetPrefix[:len(storage.BudgetPrefix):len(storage.BudgetPrefix)], prefix...)
		err := storage.ScanTxn(txn, p, storage.PrefixEnd(p), func(k, v []byte) (bool, error) {
			b, err := ledger.UnmarshalBudget(v)
			if err != nil {
				return false, fmt.Errorf("budget %q: %w", k, err)
			}
			out = append(out, b)
			return true, nil
		})
		return out, err
	}, func(id string) map[uint64]LeaseIssued { return openIssued[id] })
}

// readViews reads the budgets that list returns and their leases and
// details in one snapshot (a transaction that only reads and is rolled
// back), then their cached balances in one Redis round trip.
func readViews(ctx context.Context, kv *storage.TiKV, rdb *storage.Pipeliner,
	list func(storage.Txn) ([]*ledger.Budget, error), reported func(string) map[uint64]LeaseIssued) ([]*BudgetView, error) {
	txn, release, err := kv.Snapshot()
	if err != nil {
		return nil, err
	}
	defer release()
	budgets, err := list(txn)
	if err != nil {
		return nil, err
	}
	views := make([]*BudgetView, len(budgets))
	for i, b := range budgets {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if views[i], err = readView(txn, b, reported(b.ID)); err != nil {
			return nil, err
		}
	}
	if rdb != nil && len(views) > 0 {
		if err := readCached(ctx, rdb, views); err != nil {
			return nil, err
		}
	}
	for _, v := range views {
		v.OK = len(v.Problems) == 0
	}
	return views, nil
}

// readView computes one budget's view in txn and checks its identities.
func readView(txn storage.Txn, b *ledger.Budget, reported map[uint64]LeaseIssued) (*BudgetView, error) {
	hot, err := scanHot(txn, b.ID)
	if err != nil {
		return nil, err
	}
	v := &BudgetView{ID: b.ID, Asset: string(b.Asset), Total: b.Total, Available: b.Remaining(),
		Leased: b.Leased, Returned: b.Returned, Outstanding: b.Leased - b.Returned,
		Booked: b.Folded + hot.amount, Ledger: b.Total - b.Folded, UnfoldedDetails: hot.details,
		Unattributed: b.FoldedUnattributed + hot.perLease[0].Amount, Expired: b.Expired + hot.expired, Problems: []string{}}
	v.Actual = v.Ledger - hot.amount
	problem := func(format string, args ...any) { v.Problems = append(v.Problems, fmt.Sprintf(format, args...)) }

	// bookedByLeases sums booked lease by lease (closed, open, and lease 0):
	// it equals Booked when folds attributed every amount they moved.
	var closedIssued, openIssued, openBooked, closedBooked int64
	bookedByLeases := v.Unattributed
	p := storage.LeasePrefix(b.ID)
	err = storage.ScanTxn(txn, p, storage.PrefixEnd(p), func(k, raw []byte) (bool, error) {
		l, err := ledger.UnmarshalLease(raw)
		if err != nil {
			return false, fmt.Errorf("lease %q: %w", k, err)
		}
		booked := l.Booked + hot.perLease[l.ID].Amount
		bookedByLeases += booked
		if l.Closed {
			closedIssued += l.Issued
			closedBooked += booked
			return true, nil
		}
		v.OpenLeases++
		v.OpenAmount += l.Amount
		issued := max(reported[l.ID].Amount, booked)
		openIssued += issued
		openBooked += booked
		if issued > l.Amount {
			problem("open lease %d: issued %d (reported %d, booked %d) > its amount %d", l.ID, issued, reported[l.ID].Amount, booked, l.Amount)
		}
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	// Every booked grant was issued: closed leases' Issued covers what was
	// booked under them, and booked under open leases or lease 0 was issued
	// whether or not a holder reported it.
	v.Issued = max(closedIssued+openIssued, closedIssued+openBooked+v.Unattributed)
	v.InFlight = v.Issued - v.Booked
	v.Unspent = v.OpenAmount - openIssued

	if v.Total != v.Available+v.Outstanding {
		problem("total %d != available %d + outstanding %d", v.Total, v.Available, v.Outstanding)
	}
	if v.Outstanding != closedIssued+v.OpenAmount {
		problem("outstanding %d != closed leases' issued %d + open leases' amounts %d", v.Outstanding, closedIssued, v.OpenAmount)
	}
	if v.Issued != v.Booked+v.InFlight || v.InFlight < 0 {
		problem("issued %d = booked %d + in flight %d with in flight < 0 (closed leases issued %d, booked %d under them)",
			v.Issued, v.Booked, v.InFlight, closedIssued, closedBooked)
	}
	if v.Unspent < 0 {
		problem("unspent %d < 0: open leases of %d issued %d", v.Unspent, v.OpenAmount, openIssued)
	}
	if v.Actual != v.Total-bookedByLeases {
		problem("actual %d != total %d - booked %d lease by lease (folded %d, of it %d under lease 0)",
			v.Actual, v.Total, bookedByLeases, b.Folded, b.FoldedUnattributed)
	}
	return v, nil
}

// readCached fills the views' cached balances in one pipelined round trip.
func readCached(ctx context.Context, rdb *storage.Pipeliner, views []*BudgetView) error {
	cmds := make([]*redis.StringCmd, len(views))
	all := make([]redis.Cmder, len(views))
	for i, v := range views {
		cmds[i] = redis.NewStringCmd(ctx, "get", HotCacheKey(v.ID))
		all[i] = cmds[i]
	}
	if err := rdb.Do(ctx, all...); err != nil {
		return err
	}
	nowMs := time.Now().UnixMilli()
	for i, v := range views {
		s, err := cmds[i].Result()
		switch {
		case errors.Is(err, redis.Nil):
		case err != nil:
			return fmt.Errorf("%w: redis: %v", storage.ErrUnavailable, err)
		default:
			actual, ms, ok := parseHotCache(s)
			if !ok {
				v.Problems = append(v.Problems, fmt.Sprintf("cached balance %q is malformed", s))
				continue
			}
			v.Cached = &HotCached{Actual: actual, AgeMs: nowMs - ms}
		}
	}
	return nil
}
