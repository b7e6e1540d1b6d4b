package actors

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"redrain/ledger"
	"redrain/storage"
)

// msgFold asks a budget grain to fold the oldest of its hot details.
const msgFold byte = 4

// foldBatchMax bounds the hot details one fold transaction reads, folds and
// deletes: a bounded transaction, and a grain that answers lease requests
// between folds. At ~200 booking transactions a second (6k grants/s in
// batches of ~30) a budget gains at most ~200 details a second, so a
// one-second fold period keeps up with one or two folds.
const foldBatchMax = 256

// FoldEveryDefault is how often a Folder folds each budget.
const FoldEveryDefault = time.Second

// Fold is what one fold step did to a budget.
type Fold struct {
	Details       int   // hot details folded and deleted
	Amount, Count int64 // their sums
	// More is set when more details than foldBatchMax were there: fold again.
	More bool
	// Total and Folded are the budget's after the fold. When More is not
	// set the fold saw every detail of its snapshot, so Total - Folded was
	// the hot account's actual balance at that moment.
	Total, Folded int64
}

// HotCacheKey is the Redis key of a budget's cached hot-account balance,
// "<actual>:<unix ms>", written by Folder after a fold that left nothing
// unfolded. It is a cache with its age, never the truth.
func HotCacheKey(budgetID string) string { return "rr:hot:" + budgetID }

// fold: budget id → the Fold.
func (g *budgetGrain) fold(b []byte) (*wrapperspb.BytesValue, error) {
	d := wireDecoder{b: b}
	id := d.str()
	if d.err != nil {
		return nil, d.err
	}
	// A conflict (a lease close written directly because the grain was
	// unreachable for its caller, or a stale second copy of this grain) is
	// tried again by handle, as for every request of the grain.
	f, err := foldTxn(context.Background(), g.tikv, id)
	if err != nil {
		return nil, err
	}
	return message(appendFold([]byte{msgReply}, &f)), nil
}

// foldTxn folds up to foldBatchMax of a budget's oldest hot details into the
// budget and the leases they name, and deletes them, in one transaction
// conditional on everything it writes: a second copy of the grain folding
// the same details, or a lease close in between, makes one of them fail
// with ErrConflict and change nothing. Booking never conflicts with it: it
// writes new detail keys only.
func foldTxn(ctx context.Context, kv *storage.TiKV, id string) (Fold, error) {
	var f Fold
	err := kv.Update(ctx, func(txn storage.Txn) error {
		f = Fold{}
		bud, err := loadBudget(txn, id)
		if err != nil {
			return err
		}
		var keys [][]byte
		var details []*ledger.HotDetail
		p := storage.HotPrefix(id)
		err = storage.ScanTxn(txn, p, storage.PrefixEnd(p), func(k, v []byte) (bool, error) {
			if len(details) == foldBatchMax {
				f.More = true
				return false, nil
			}
			h, err := ledger.UnmarshalHotDetail(v)
			if err != nil {
				return false, fmt.Errorf("hot detail %x: %w", k, err)
			}
			keys = append(keys, append([]byte(nil), k...))
			details = append(details, h)
			return true, nil
		})
		if err != nil {
			return err
		}
		f.Total, f.Folded = bud.Total, bud.Folded
		if len(details) == 0 {
			return nil
		}
		leases, err := namedLeases(ctx, txn, id, details)
		if err != nil {
			return err
		}
		res, err := bud.Fold(details, leases)
		if err != nil {
			return err
		}
		bud.Version++
		if err := txn.Set(storage.BudgetKey(id), ledger.MarshalBudget(nil, bud)); err != nil {
			return err
		}
		for _, l := range res.Leases {
			if err := txn.Set(storage.LeaseKey(id, l.ID), ledger.MarshalLease(nil, l)); err != nil {
				return err
			}
		}
		for _, k := range keys {
			if err := txn.Delete(k); err != nil {
				return err
			}
		}
		f.Details, f.Amount, f.Count = res.Details, res.Amount, res.Count
		f.Total, f.Folded = bud.Total, bud.Folded
		return nil
	})
	return f, err
}

// namedLeases reads, in txn, the leases that details book under (lease 0,
// unattributed, is no record). A missing one is left out: Fold refuses it.
func namedLeases(ctx context.Context, txn storage.Txn, id string, details []*ledger.HotDetail) (map[uint64]*ledger.Lease, error) {
	seen := map[uint64]bool{}
	var keys [][]byte
	for _, h := range details {
		for _, u := range h.Leases {
			if u.LeaseID != 0 && !seen[u.LeaseID] {
				seen[u.LeaseID] = true
				keys = append(keys, storage.LeaseKey(id, u.LeaseID))
			}
		}
	}
	out := make(map[uint64]*ledger.Lease, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	raw, err := storage.BatchGet(ctx, txn, keys)
	if err != nil {
		return nil, err
	}
	for _, v := range raw {
		l, err := ledger.UnmarshalLease(v)
		if err != nil {
			return nil, err
		}
		if l.BudgetID != id {
			return nil, fmt.Errorf("%w: lease %s/%d stored under budget %s", ledger.ErrInvariant, l.BudgetID, l.ID, id)
		}
		out[l.ID] = l
	}
	return out, nil
}

func appendFold(b []byte, f *Fold) []byte {
	b = binary.AppendUvarint(b, uint64(f.Details))
	b = binary.AppendVarint(b, f.Amount)
	b = binary.AppendVarint(b, f.Count)
	more := byte(0)
	if f.More {
		more = 1
	}
	b = append(b, more)
	b = binary.AppendVarint(b, f.Total)
	return binary.AppendVarint(b, f.Folded)
}

func decodeFold(b []byte) (Fold, error) {
	d := wireDecoder{b: b}
	f := Fold{Details: int(d.uvarint()), Amount: d.varint(), Count: d.varint()}
	if d.err == nil && len(d.b) > 0 {
		f.More = d.b[0] == 1
		d.b = d.b[1:]
	} else if d.err == nil {
		d.err = fmt.Errorf("%w: fold reply", ledger.ErrCorrupt)
	}
	f.Total, f.Folded = d.varint(), d.varint()
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%w: fold reply", ledger.ErrCorrupt)
	}
	return f, d.err
}

// Fold asks the budget's grain, the one writer of the budget record, to fold
// up to foldBatchMax of its oldest hot details.
func (bs *Budgets) Fold(budgetID string) (Fold, error) {
	req := appendStr([]byte{msgFold}, budgetID)
	payload, err := bs.call(budgetID, req)
	if err != nil {
		return Fold{}, err
	}
	return decodeFold(payload)
}

// Folder folds every budget's hot details periodically on one node, and
// after a fold that left nothing unfolded caches the hot account's balance
// in Redis (HotCacheKey). Folders on several nodes at once are safe: the
// budget's grain serializes folds, and a stale second copy of it fails its
// conditional commit.
type Folder struct {
	Budgets *Budgets
	Redis   *storage.Pipeliner // nil: no cached view
	Log     *slog.Logger
	Every   time.Duration // default FoldEveryDefault
	Clock   func() time.Time
}

// Run folds until ctx ends. budgetIDs is asked for the budgets before every
// round, so budgets added by a configuration change are folded too.
func (f *Folder) Run(ctx context.Context, budgetIDs func() []string) {
	every := f.Every
	if every <= 0 {
		every = FoldEveryDefault
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		for _, id := range budgetIDs() {
			f.FoldAll(ctx, id)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// FoldAll folds one budget until nothing more remains (or a fold fails, or
// ctx ends) and caches its balance; it returns the folds' sum.
func (f *Folder) FoldAll(ctx context.Context, id string) (Fold, error) {
	var sum Fold
	for ctx.Err() == nil {
		r, err := f.Budgets.Fold(id)
		if err != nil {
			// An unreachable grain, or conflicts the grain did not get past,
			// are tried again next round. A broken invariant stays broken
			// and is logged every round.
			f.log().Warn("fold", "budget", id, "err", err)
			return sum, err
		}
		sum.Details += r.Details
		sum.Amount += r.Amount
		sum.Count += r.Count
		sum.Total, sum.Folded = r.Total, r.Folded
		if r.More {
			continue
		}
		if f.Redis != nil {
			f.cache(ctx, id, r.Total-r.Folded)
		}
		return sum, nil
	}
	return sum, ctx.Err()
}

func (f *Folder) cache(ctx context.Context, id string, actual int64) {
	clock := f.Clock
	if clock == nil {
		clock = time.Now
	}
	cmd := redis.NewStatusCmd(ctx, "set", HotCacheKey(id), strconv.FormatInt(actual, 10)+":"+strconv.FormatInt(clock().UnixMilli(), 10))
	if err := f.Redis.Do(ctx, cmd); err != nil || cmd.Err() != nil {
		f.log().Warn("fold: cache hot balance", "budget", id, "err", cmd.Err(), "queue_err", err)
	}
}

func (f *Folder) log() *slog.Logger {
	if f.Log == nil {
		return slog.Default()
	}
	return f.Log
}

// StoredBudgetIDs returns a budgetIDs function for Folder.Run that lists
// every budget in the store, not only the campaign's: a budget a changed
// configuration no longer names may still receive late bookings. A failed
// scan is logged and folds nothing that round.
func StoredBudgetIDs(ctx context.Context, kv *storage.TiKV, log *slog.Logger) func() []string {
	return func() []string {
		var ids []string
		err := kv.Scan(ctx, storage.BudgetPrefix, storage.PrefixEnd(storage.BudgetPrefix), func(k, _ []byte) (bool, error) {
			ids = append(ids, string(k[len(storage.BudgetPrefix):]))
			return true, nil
		})
		if err != nil && ctx.Err() == nil {
			log.Warn("fold: list budgets", "err", err)
			return nil
		}
		return ids
	}
}

// parseHotCache reads a HotCacheKey value.
func parseHotCache(v string) (actual, unixMs int64, ok bool) {
	a, m, found := strings.Cut(v, ":")
	if !found {
		return 0, 0, false
	}
	actual, err1 := strconv.ParseInt(a, 10, 64)
	unixMs, err2 := strconv.ParseInt(m, 10, 64)
	return actual, unixMs, err1 == nil && err2 == nil
}
