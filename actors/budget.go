package actors

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pcluster "github.com/asynkron/protoactor-go/cluster"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"redrain/ledger"
	"redrain/storage"
)

// budgetGrain is the one writer of a budget's record: it hands out and
// closes leases. Every operation reads the budget inside its transaction
// and the commit is conditional on it, so a stale second copy of the grain
// (a member that was paused and dropped) fails instead of overspending.
type budgetGrain struct {
	log  *slog.Logger
	tikv *storage.TiKV
}

func newBudgetKind(log *slog.Logger, tikv *storage.TiKV, live *atomic.Int64) *pcluster.Kind {
	props := actor.PropsFromProducer(func() actor.Actor { return &budgetGrain{log: log, tikv: tikv} }, countGrains(live))
	return pcluster.NewKind(KindBudget, props)
}

func (g *budgetGrain) Receive(ctx actor.Context) {
	m, ok := ctx.Message().(*wrapperspb.BytesValue)
	if !ok {
		return
	}
	ctx.Respond(g.handle(m.Value))
}

// handle answers one request: a reply, or a failure that says why.
func (g *budgetGrain) handle(m []byte) (reply *wrapperspb.BytesValue) {
	if len(m) == 0 {
		return failure(fmt.Errorf("budget grain: empty message"))
	}
	var err error
	// A panic is logged with its stack and fails the request; the grain
	// keeps no memory (every operation reads the budget in its transaction),
	// so nothing is reset behind anyone's back.
	defer func() {
		if r := recover(); r != nil {
			g.log.Error("budget grain panic", "panic", r, "stack", string(debug.Stack()))
			reply = failure(fmt.Errorf("budget grain panic: %v", r))
		}
	}()
	for attempt := 1; ; attempt++ {
		reply, err = g.dispatch(m)
		if !errors.Is(err, storage.ErrConflict) || attempt == conflictAttempts {
			break
		}
		// Another writer of the budget or its leases committed first (a
		// second copy of the grain while the members agree on its place, an
		// operator's SetBudgetTotal, a lease close written directly):
		// nothing of this attempt was written, and the next one reads them
		// again in its transaction.
		time.Sleep(time.Duration(attempt) * conflictBackoff)
	}
	if err != nil {
		g.log.Warn("budget grain", "err", err)
		reply = failure(err)
	}
	return reply
}

// conflictAttempts bounds the attempts of one request that lose write
// conflicts; conflictBackoff is the wait after the first (then twice it,
// and so on). Three nodes starting at once each placed the grain of a
// budget while their views of the members still differed, and lost
// conflicts answered lease fetches with failures, so the first grants
// of a shard were refused unavailable (BENCHMARKS.md, *Fetches that
// wait*).
const (
	conflictAttempts = 8
	conflictBackoff  = 2 * time.Millisecond
)

// dispatch runs one request once.
func (g *budgetGrain) dispatch(m []byte) (*wrapperspb.BytesValue, error) {
	switch m[0] {
	case msgTakeLease:
		return g.takeLease(m[1:])
	case msgCloseLease:
		return g.closeLease(m[1:])
	case msgRenewLease:
		return g.renewLease(m[1:])
	case msgFold:
		return g.fold(m[1:])
	}
	return nil, fmt.Errorf("budget grain: unknown message %d", m[0])
}

// takeLease: budget id, amount wanted, owner, incarnation → empty when
// exhausted, else the lease's length and encoding, the budget's outstanding
// amount and its total right after the take.
func (g *budgetGrain) takeLease(b []byte) (*wrapperspb.BytesValue, error) {
	d := wireDecoder{b: b}
	id, want, owner, inc := d.str(), d.varint(), d.str(), d.uvarint()
	if d.err != nil {
		return nil, d.err
	}
	var lease *ledger.Lease
	err := g.tikv.Update(context.Background(), func(txn storage.Txn) error {
		bud, err := loadBudget(txn, id)
		if err != nil {
			return err
		}
		lease = bud.TakeLease(want, owner, inc)
		if lease == nil {
			return nil
		}
		lease.Expires = time.Now().Add(ledger.LeaseTTL).UnixMilli()
		bud.Version++
		if err := bud.Check(); err != nil {
			return err
		}
		if err := txn.Set(storage.BudgetKey(id), ledger.MarshalBudget(nil, bud)); err != nil {
			return err
		}
		return txn.Set(storage.LeaseKey(id, lease.ID), ledger.MarshalLease(nil, lease))
	})
	if err != nil {
		return nil, err
	}
	if lease == nil {
		return message([]byte{msgReply}), nil
	}
	reply := appendStr([]byte{msgReply}, string(ledger.MarshalLease(nil, lease)))
	reply = binary.AppendVarint(reply, lease.BudgetOut)
	return message(binary.AppendVarint(reply, lease.BudgetTotal)), nil
}

// renewLease: budget id, lease id, owner, incarnation → the lease's new
// expiry (unix ms), or a failure wrapping ledger.ErrLeaseExpired when it
// can no longer be spent.
func (g *budgetGrain) renewLease(b []byte) (*wrapperspb.BytesValue, error) {
	d := wireDecoder{b: b}
	id, leaseID, owner, inc := d.str(), d.uvarint(), d.str(), d.uvarint()
	if d.err != nil {
		return nil, d.err
	}
	var expires int64
	err := g.tikv.Update(context.Background(), func(txn storage.Txn) error {
		l, err := loadLease(txn, id, leaseID)
		if err != nil {
			return err
		}
		if err := l.Renew(owner, inc, time.Now().UnixMilli(), ledger.LeaseTTL.Milliseconds()); err != nil {
			return err
		}
		expires = l.Expires
		return txn.Set(storage.LeaseKey(id, leaseID), ledger.MarshalLease(nil, l))
	})
	if err != nil {
		return nil, err
	}
	return message(binary.AppendVarint([]byte{msgReply}, expires)), nil
}

// loadLease reads a lease in txn; a missing one is an invariant error.
func loadLease(txn storage.Txn, id string, leaseID uint64) (*ledger.Lease, error) {
	raw, err := storage.Get(context.Background(), txn, storage.LeaseKey(id, leaseID))
	if err != nil {
		return nil, err
	}
	if raw == nil {
		return nil, fmt.Errorf("%w: lease %s/%d not found", ledger.ErrInvariant, id, leaseID)
	}
	return ledger.UnmarshalLease(raw)
}

// closeLease: budget id, lease id, issued, count → nothing.
func (g *budgetGrain) closeLease(b []byte) (*wrapperspb.BytesValue, error) {
	d := wireDecoder{b: b}
	id, leaseID, issued, count := d.str(), d.uvarint(), d.varint(), d.varint()
	if d.err != nil {
		return nil, d.err
	}
	if err := closeLeaseTxn(context.Background(), g.tikv, id, leaseID, issued, count); err != nil {
		return nil, err
	}
	return message([]byte{msgReply}), nil
}

// closeLeaseTxn closes a lease and returns its unspent part to the budget in
// one transaction conditional on both records. A closed lease is left
// alone (a retried close).
func closeLeaseTxn(ctx context.Context, kv *storage.TiKV, id string, leaseID uint64, issued, count int64) error {
	return kv.Update(ctx, func(txn storage.Txn) error {
		bud, err := loadBudget(txn, id)
		if err != nil {
			return err
		}
		l, err := loadLease(txn, id, leaseID)
		if err != nil {
			return err
		}
		if l.Closed {
			return nil
		}
		if err := bud.CloseLease(l, issued, count); err != nil {
			return err
		}
		bud.Version++
		if err := txn.Set(storage.BudgetKey(id), ledger.MarshalBudget(nil, bud)); err != nil {
			return err
		}
		return txn.Set(storage.LeaseKey(id, leaseID), ledger.MarshalLease(nil, l))
	})
}

func loadBudget(txn storage.Txn, id string) (*ledger.Budget, error) {
	raw, err := storage.Get(context.Background(), txn, storage.BudgetKey(id))
	if err != nil {
		return nil, err
	}
	if raw == nil {
		return nil, fmt.Errorf("%w: budget %s not found", ledger.ErrInvariant, id)
	}
	return ledger.UnmarshalBudget(raw)
}

// EnsureBudget creates a budget with its funding postings if it does not
// exist yet. An existing budget is left as it is.
func EnsureBudget(ctx context.Context, tikv *storage.TiKV, b *ledger.Budget) (created bool, err error) {
	err = tikv.Update(ctx, func(txn storage.Txn) error {
		raw, err := storage.Get(ctx, txn, storage.BudgetKey(b.ID))
		if err != nil || raw != nil {
			return err
		}
		if err := fundBudget(ctx, txn, b.Asset, b.ID, b.Total); err != nil {
			return err
		}
		created = true
		return txn.Set(storage.BudgetKey(b.ID), ledger.MarshalBudget(nil, b))
	})
	return created, err
}

// fundBudget posts delta from the asset's funding account to the budget's
// account (a negative delta takes it back) in txn: the funding account's
// balance is the only stored side, the budget account's is Total - booked.
func fundBudget(ctx context.Context, txn storage.Txn, asset ledger.Asset, budgetID string, delta int64) error {
	if err := ledger.FundingPostings(&ledger.Budget{ID: budgetID, Asset: asset, Total: delta}).Check(); err != nil {
		return err
	}
	fundKey := storage.FundKey(string(asset))
	fund, err := storage.Get(ctx, txn, fundKey)
	if err != nil {
		return err
	}
	var bal int64
	if fund != nil {
		if len(fund) != 8 {
			return fmt.Errorf("%w: funding account of %s: %d bytes", ledger.ErrCorrupt, asset, len(fund))
		}
		bal = int64(binary.BigEndian.Uint64(fund))
	}
	if bal, err = ledger.Add(bal, -delta); err != nil {
		return err
	}
	return txn.Set(fundKey, binary.BigEndian.AppendUint64(nil, uint64(bal)))
}

// setTotalRetryMax bounds SetBudgetTotal's retries of a write conflict: the
// budget grain writes the same record on every lease it hands out.
const setTotalRetryMax = 20

// SetBudgetTotal sets a budget's total from configuration. A missing budget
// is created with its funding postings (as EnsureBudget does); an existing
// one moves to total with the funding posting of the difference, in one
// transaction conditional on the budget it read. A total below what the
// budget has committed to leases (Leased - Returned) is clamped there, so
// no lease is ever uncovered: applied is the total actually set. An asset
// other than the budget's, a negative total or an empty id is refused
// (ErrInvariant) and changes nothing.
func SetBudgetTotal(ctx context.Context, tikv *storage.TiKV, id string, asset ledger.Asset, total int64) (applied int64, err error) {
	if id == "" || asset == "" || total < 0 {
		return 0, fmt.Errorf("%w: budget %q of %q: total %d", ledger.ErrInvariant, id, asset, total)
	}
	for attempt := 0; ; attempt++ {
		applied, err = setBudgetTotalOnce(ctx, tikv, id, asset, total)
		if !errors.Is(err, storage.ErrConflict) || attempt == setTotalRetryMax || ctx.Err() != nil {
			return applied, err
		}
	}
}

func setBudgetTotalOnce(ctx context.Context, tikv *storage.TiKV, id string, asset ledger.Asset, total int64) (applied int64, err error) {
	err = tikv.Update(ctx, func(txn storage.Txn) error {
		raw, err := storage.Get(ctx, txn, storage.BudgetKey(id))
		if err != nil {
			return err
		}
		b := &ledger.Budget{ID: id, Asset: asset}
		if raw != nil {
			if b, err = ledger.UnmarshalBudget(raw); err != nil {
				return err
			}
			if b.Asset != asset {
				return fmt.Errorf("%w: budget %s holds %s, configured as %s", ledger.ErrInvariant, id, b.Asset, asset)
			}
		}
		// What leases hold out (issued or still spendable) cannot be taken
		// back by configuration.
		next := max(total, b.Leased-b.Returned)
		applied = next
		delta := next - b.Total
		if raw != nil && delta == 0 {
			return nil
		}
		b.Total = next
		b.Version++
		if err := b.Check(); err != nil {
			return err
		}
		if err := fundBudget(ctx, txn, asset, id, delta); err != nil {
			return err
		}
		return txn.Set(storage.BudgetKey(id), ledger.MarshalBudget(nil, b))
	})
	if err != nil {
		return 0, err
	}
	return applied, nil
}

// wireDecoder reads the small grain requests.
type wireDecoder struct {
	b   []byte
	err error
}

func (d *wireDecoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = fmt.Errorf("%w: grain request", ledger.ErrCorrupt)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *wireDecoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = fmt.Errorf("%w: grain request", ledger.ErrCorrupt)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *wireDecoder) str() string {
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)) {
		d.err = fmt.Errorf("%w: grain request", ledger.ErrCorrupt)
	}
	if d.err != nil {
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// Budgets is the client side of budget grains.
type Budgets struct {
	// request sends one request to a budget's grain and returns its answer.
	request func(budgetID string, req []byte) (any, error)
	tikv    *storage.TiKV // for closes when the grain cannot be reached
}

// call sends req to the budget's grain and returns its reply's payload.
func (bs *Budgets) call(budgetID string, req []byte) ([]byte, error) {
	return replyPayload(bs.request(budgetID, req))
}

// TakeLease asks the budget's grain for a lease of up to want; nil when the
// budget is exhausted.
func (bs *Budgets) TakeLease(budgetID string, want int64, owner string, incarnation uint64) (*ledger.Lease, error) {
	req := []byte{msgTakeLease}
	req = appendStr(req, budgetID)
	req = binary.AppendVarint(req, want)
	req = appendStr(req, owner)
	req = binary.AppendUvarint(req, incarnation)
	payload, err := bs.call(budgetID, req)
	if err != nil {
		return nil, err
	}
	if len(payload) == 0 {
		return nil, nil
	}
	d := wireDecoder{b: payload}
	enc := d.str()
	out, total := d.varint(), d.varint()
	if d.err != nil || len(d.b) != 0 {
		return nil, fmt.Errorf("%w: take lease reply", ledger.ErrCorrupt)
	}
	l, err := ledger.UnmarshalLease([]byte(enc))
	if err != nil {
		return nil, err
	}
	l.BudgetOut, l.BudgetTotal = out, total
	return l, nil
}

// RenewLease extends an open lease of owner's incarnation by
// ledger.LeaseTTL and returns its new expiry (unix ms, the grain's clock).
// An error wrapping ledger.ErrLeaseExpired says the lease must not be
// spent any more (expired, closed or another holder's).
func (bs *Budgets) RenewLease(budgetID string, leaseID uint64, owner string, incarnation uint64) (int64, error) {
	req := []byte{msgRenewLease}
	req = appendStr(req, budgetID)
	req = binary.AppendUvarint(req, leaseID)
	req = appendStr(req, owner)
	req = binary.AppendUvarint(req, incarnation)
	payload, err := bs.call(budgetID, req)
	if err != nil {
		return 0, err
	}
	d := wireDecoder{b: payload}
	expires := d.varint()
	if d.err != nil || len(d.b) != 0 {
		return 0, fmt.Errorf("%w: renew lease reply", ledger.ErrCorrupt)
	}
	return expires, nil
}

// CloseLease closes a lease with what was issued under it. The budget
// grain serializes it with the budget's other operations; when the grain
// cannot be reached (this member was dropped from the cluster after a
// pause, or is leaving it) the close is the same conditional transaction,
// written directly, so that a stopping node still returns its leases.
func (bs *Budgets) CloseLease(budgetID string, leaseID uint64, issued, count int64) error {
	req := []byte{msgCloseLease}
	req = appendStr(req, budgetID)
	req = binary.AppendUvarint(req, leaseID)
	req = binary.AppendVarint(req, issued)
	req = binary.AppendVarint(req, count)
	_, err := bs.call(budgetID, req)
	if err == nil || isMoneyErr(err) || bs.tikv == nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		direct := closeLeaseTxn(context.Background(), bs.tikv, budgetID, leaseID, issued, count)
		if !errors.Is(direct, storage.ErrConflict) || attempt == 10 {
			if direct != nil {
				return errors.Join(err, direct)
			}
			return nil
		}
	}
}

// BookedByLease is what booking has posted under each lease of a budget:
// what folds moved into the lease (Lease.Booked) plus its uses in the
// unfolded hot details, read from one snapshot (a fold moves amounts from
// the details to the leases, so two reads could count them twice or not at
// all). Lease 0 holds redeemed grants not yet attributed, folded or not.
// Leases with nothing booked are absent.
func BookedByLease(ctx context.Context, tikv *storage.TiKV, budgetID string) (map[uint64]ledger.LeaseUse, error) {
	txn, release, err := tikv.Snapshot()
	if err != nil {
		return nil, err
	}
	defer release()
	bud, err := loadBudget(txn, budgetID)
	if err != nil {
		return nil, err
	}
	hot, err := scanHot(txn, budgetID)
	if err != nil {
		return nil, err
	}
	out := hot.perLease
	out[0] = addUse(out[0], ledger.LeaseUse{LeaseID: 0, Amount: bud.FoldedUnattributed, Count: bud.FoldedUnattributedCount})
	p := storage.LeasePrefix(budgetID)
	err = storage.ScanTxn(txn, p, storage.PrefixEnd(p), func(_, v []byte) (bool, error) {
		l, err := ledger.UnmarshalLease(v)
		if err != nil {
			return false, err
		}
		out[l.ID] = addUse(out[l.ID], ledger.LeaseUse{LeaseID: l.ID, Amount: l.Booked, Count: l.BookedCount})
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	for id, u := range out {
		if u.Amount == 0 && u.Count == 0 {
			delete(out, id)
		}
	}
	return out, nil
}

// hotSums are a budget's unfolded hot details, summed.
type hotSums struct {
	perLease      map[uint64]ledger.LeaseUse
	amount, count int64
	expired       int64 // returned by expiry
	details       int
}

// scanHot sums a budget's unfolded hot details in txn.
func scanHot(txn storage.Txn, budgetID string) (*hotSums, error) {
	s := &hotSums{perLease: map[uint64]ledger.LeaseUse{}}
	p := storage.HotPrefix(budgetID)
	err := storage.ScanTxn(txn, p, storage.PrefixEnd(p), func(_, v []byte) (bool, error) {
		h, err := ledger.UnmarshalHotDetail(v)
		if err != nil {
			return false, err
		}
		if s.amount, err = ledger.Add(s.amount, h.Amount); err != nil {
			return false, err
		}
		s.count += h.Count // bounded by the amount: every grant is at least 1
		if s.expired, err = ledger.Add(s.expired, h.Expired); err != nil {
			return false, err
		}
		s.details++
		for _, u := range h.Leases {
			s.perLease[u.LeaseID] = addUse(s.perLease[u.LeaseID], u)
		}
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// addUse adds u to t, keeping u's lease id.
func addUse(t, u ledger.LeaseUse) ledger.LeaseUse {
	return ledger.LeaseUse{LeaseID: u.LeaseID, Amount: t.Amount + u.Amount, Count: t.Count + u.Count}
}

// OpenLeases lists a budget's leases that are not closed.
func OpenLeases(ctx context.Context, tikv *storage.TiKV, budgetID string) ([]*ledger.Lease, error) {
	var out []*ledger.Lease
	p := storage.LeasePrefix(budgetID)
	err := tikv.Scan(ctx, p, storage.PrefixEnd(p), func(_, v []byte) (bool, error) {
		l, err := ledger.UnmarshalLease(v)
		if err != nil {
			return false, err
		}
		if !l.Closed {
			out = append(out, l)
		}
		return true, nil
	})
	return out, err
}

// OpenLeasesWhere lists the open leases that keep accepts, of every budget
// in the store (not only the campaign's: a budget that a changed config no
// longer names may still hold leases).
func OpenLeasesWhere(ctx context.Context, tikv *storage.TiKV, keep func(*ledger.Lease) bool) ([]*ledger.Lease, error) {
	var ids []string
	err := tikv.Scan(ctx, storage.BudgetPrefix, storage.PrefixEnd(storage.BudgetPrefix), func(k, _ []byte) (bool, error) {
		ids = append(ids, string(k[len(storage.BudgetPrefix):]))
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	var out []*ledger.Lease
	for _, id := range ids {
		open, err := OpenLeases(ctx, tikv, id)
		if err != nil {
			return nil, err
		}
		for _, l := range open {
			if keep(l) {
				out = append(out, l)
			}
		}
	}
	return out, nil
}

// OpenLeasesOf lists the budget's open leases of owner's incarnation.
func (bs *Budgets) OpenLeasesOf(budgetID, owner string, incarnation uint64) ([]*ledger.Lease, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	open, err := OpenLeases(ctx, bs.tikv, budgetID)
	if err != nil {
		return nil, err
	}
	mine := open[:0]
	for _, l := range open {
		if l.Owner == owner && l.Incarnation == incarnation {
			mine = append(mine, l)
		}
	}
	return mine, nil
}

// NewBudgets returns the client of the budget grains.
func NewBudgets(c *pcluster.Cluster, kv *storage.TiKV) *Budgets {
	return &Budgets{tikv: kv, request: func(budgetID string, req []byte) (any, error) {
		return c.Request(budgetID, KindBudget, &wrapperspb.BytesValue{Value: req})
	}}
}

// NewLocalBudgets is Budgets without the actor cluster (the simulation):
// each budget's requests run one at a time, like a grain's mailbox, on the
// grain's own handlers in the caller's goroutine.
func NewLocalBudgets(log *slog.Logger, kv *storage.TiKV) *Budgets {
	g := &budgetGrain{log: log, tikv: kv}
	var mu sync.Mutex
	mailboxes := map[string]chan struct{}{} // a token each: the grain's turn
	return &Budgets{tikv: kv, request: func(budgetID string, req []byte) (any, error) {
		mu.Lock()
		box := mailboxes[budgetID]
		if box == nil {
			box = make(chan struct{}, 1)
			mailboxes[budgetID] = box
		}
		mu.Unlock()
		box <- struct{}{}
		defer func() { <-box }()
		return g.handle(req), nil
	}}
}
