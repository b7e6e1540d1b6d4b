package ledger

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Budget is what a child activity may spend on one award. Nodes spend it
// through leases, so that no grant waits on a central counter.
type Budget struct {
	ID    string
	Asset Asset
	Total int64 // Invariant: Total >= 0
	// Leased is the sum of every lease ever taken.
	// Invariant: 0 <= Leased - Returned <= Total (no overspend).
	Leased int64
	// Returned is the sum of the unspent parts of closed leases.
	Returned int64
	// Folded is the booked amount folded from hot details into the budget
	// account's ledger balance; FoldedCount counts those grants.
	// Invariant: 0 <= Folded <= Leased - Returned (nothing is booked that was
	// not issued under a lease), FoldedCount >= 0.
	Folded, FoldedCount int64
	// FoldedUnattributed and its count are the part of Folded that was
	// folded under lease 0: grants redeem booked before their stream event
	// named the lease. An attribution folded later moves it to the lease, so
	// Folded = Σ lease Booked + FoldedUnattributed (reconcile checks it).
	// Invariant: 0 <= FoldedUnattributed <= Folded, and likewise the counts.
	FoldedUnattributed, FoldedUnattributedCount int64
	// Expired is what expiries returned to the budget (moves of kind
	// expire into its account budget/{id}: pieces past their validity
	// that came from it), folded from hot details. It is the budget's
	// account's, not leasable again: Remaining does not count it.
	// Invariant: Expired >= 0.
	Expired int64
	// NextLease is the id the next lease gets. Lease ids start at 1: an
	// entry's LeaseID 0 means "booked by redeem, not yet attributed".
	NextLease uint64
	Version   uint64
}

// Remaining is what can still be leased.
func (b *Budget) Remaining() int64 { return b.Total - b.Leased + b.Returned }

// Check verifies the budget's own invariants.
func (b *Budget) Check() error {
	out := b.Leased - b.Returned // cannot overflow once both are checked >= 0
	if b.Total < 0 || b.Leased < 0 || b.Returned < 0 || out < 0 || out > b.Total ||
		b.Folded < 0 || b.Folded > out || b.FoldedCount < 0 ||
		b.FoldedUnattributed < 0 || b.FoldedUnattributed > b.Folded ||
		b.FoldedUnattributedCount < 0 || b.FoldedUnattributedCount > b.FoldedCount || b.Expired < 0 {
		return fmt.Errorf("%w: budget %s: total %d leased %d returned %d folded %d (%d unattributed)",
			ErrInvariant, b.ID, b.Total, b.Leased, b.Returned, b.Folded, b.FoldedUnattributed)
	}
	return nil
}

// TakeLease leases up to want from the budget and returns the lease, or nil
// when nothing remains. The caller persists both. The lease carries the
// budget's outstanding amount and total right after the take (BudgetOut,
// BudgetTotal), which are not persisted.
func (b *Budget) TakeLease(want int64, owner string, incarnation uint64) *Lease {
	got := min(want, b.Remaining())
	if got <= 0 {
		return nil
	}
	b.Leased += got
	if b.NextLease == 0 {
		b.NextLease = 1
	}
	l := &Lease{BudgetID: b.ID, ID: b.NextLease, Amount: got, Owner: owner, Incarnation: incarnation,
		BudgetOut: b.Leased - b.Returned, BudgetTotal: b.Total}
	b.NextLease++
	return l
}

// CloseLease closes l with issued spent and returns the rest to the budget.
// An error leaves both unchanged.
func (b *Budget) CloseLease(l *Lease, issued, count int64) error {
	if l.BudgetID != b.ID {
		return fmt.Errorf("%w: lease of budget %s closed on budget %s", ErrInvariant, l.BudgetID, b.ID)
	}
	if l.Closed {
		return fmt.Errorf("%w: lease %s/%d closed twice", ErrInvariant, l.BudgetID, l.ID)
	}
	if l.ID == 0 || l.ID >= b.NextLease {
		return fmt.Errorf("%w: lease %s/%d was never taken (next %d)", ErrInvariant, l.BudgetID, l.ID, b.NextLease)
	}
	// What booking already folded under the lease was issued under it.
	if issued < 0 || issued > l.Amount || count < 0 || issued < l.Booked || count < l.BookedCount {
		return fmt.Errorf("%w: lease %s/%d of %d (%d booked in %d grants) closed with %d issued in %d grants",
			ErrInvariant, l.BudgetID, l.ID, l.Amount, l.Booked, l.BookedCount, issued, count)
	}
	// Check the budget as it would be before touching either record: a lease
	// that does not belong to this budget's outstanding amount must not leave
	// a half-applied close behind.
	next := *b
	var err error
	if next.Returned, err = Add(b.Returned, l.Amount-issued); err != nil {
		return err
	}
	if err := next.Check(); err != nil {
		return err
	}
	b.Returned = next.Returned
	l.Closed, l.Issued, l.IssuedCount = true, issued, count
	return nil
}

// FoldResult is what one fold moved into a budget.
type FoldResult struct {
	Details       int   // hot details folded
	Amount, Count int64 // their sums
	Expired       int64 // what they returned by expiry
	// Leases are the leases whose Booked changed, in id order: the caller
	// persists them with the budget.
	Leases []*Lease
}

// Fold moves hot details into the budget's ledger balance (Folded,
// FoldedCount) and into the Booked figures of the leases they name, so that
// the details can be deleted. leases holds, by id, every lease with a
// non-zero net use in details (more are allowed); lease 0 (redeemed, not yet
// attributed) folds into FoldedUnattributed. An error leaves the budget and
// every lease unchanged.
//
// The fold moves money between two views of the same sums, so after it:
// Folded + Σ unfolded amounts is unchanged; per lease, Booked + its unfolded
// uses is unchanged; Booked <= Amount; a closed lease's Booked <= Issued.
// Callers fold details in the order they were written (the hot keys sort by
// the writing transaction's start), so an attribution is never folded
// before the redeem it moves: lease 0's folded net never goes negative.
func (b *Budget) Fold(details []*HotDetail, leases map[uint64]*Lease) (FoldResult, error) {
	type sum struct{ amount, count int64 }
	var out FoldResult
	perLease := map[uint64]*sum{}
	var err error
	for _, h := range details {
		if h.BudgetID != b.ID {
			return FoldResult{}, fmt.Errorf("%w: hot detail of budget %s folded into %s", ErrInvariant, h.BudgetID, b.ID)
		}
		if out.Amount, err = Add(out.Amount, h.Amount); err != nil {
			return FoldResult{}, err
		}
		if out.Count, err = Add(out.Count, h.Count); err != nil {
			return FoldResult{}, err
		}
		if out.Expired, err = Add(out.Expired, h.Expired); err != nil {
			return FoldResult{}, err
		}
		for _, u := range h.Leases {
			s := perLease[u.LeaseID]
			if s == nil {
				s = &sum{}
				perLease[u.LeaseID] = s
			}
			if s.amount, err = Add(s.amount, u.Amount); err != nil {
				return FoldResult{}, err
			}
			if s.count, err = Add(s.count, u.Count); err != nil {
				return FoldResult{}, err
			}
		}
		out.Details++
	}
	next := *b
	if next.Folded, err = Add(b.Folded, out.Amount); err != nil {
		return FoldResult{}, err
	}
	if next.FoldedCount, err = Add(b.FoldedCount, out.Count); err != nil {
		return FoldResult{}, err
	}
	if next.Expired, err = Add(b.Expired, out.Expired); err != nil {
		return FoldResult{}, err
	}
	if s := perLease[0]; s != nil {
		if next.FoldedUnattributed, err = Add(b.FoldedUnattributed, s.amount); err != nil {
			return FoldResult{}, err
		}
		if next.FoldedUnattributedCount, err = Add(b.FoldedUnattributedCount, s.count); err != nil {
			return FoldResult{}, err
		}
	}
	if err := next.Check(); err != nil {
		return FoldResult{}, err
	}
	ids := make([]uint64, 0, len(perLease))
	for id, s := range perLease {
		if id != 0 && *s != (sum{}) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	changed := make([]Lease, len(ids))
	for i, id := range ids {
		l := leases[id]
		if l == nil || l.ID != id || l.BudgetID != b.ID {
			return FoldResult{}, fmt.Errorf("%w: budget %s: hot details book %d under lease %d, which is not given", ErrInvariant, b.ID, perLease[id].amount, id)
		}
		if id >= b.NextLease {
			return FoldResult{}, fmt.Errorf("%w: budget %s: lease %d was never taken (next %d)", ErrInvariant, b.ID, id, b.NextLease)
		}
		c := *l
		if c.Booked, err = Add(l.Booked, perLease[id].amount); err != nil {
			return FoldResult{}, err
		}
		if c.BookedCount, err = Add(l.BookedCount, perLease[id].count); err != nil {
			return FoldResult{}, err
		}
		if err := c.Check(); err != nil {
			return FoldResult{}, fmt.Errorf("fold into lease %d: %w", id, err)
		}
		changed[i] = c
	}
	// Every check passed: apply.
	*b = next
	out.Leases = make([]*Lease, len(ids))
	for i, id := range ids {
		l := leases[id]
		l.Booked, l.BookedCount = changed[i].Booked, changed[i].BookedCount
		out.Leases[i] = l
	}
	return out, nil
}

// Lease is a slice of a budget that one node spends locally.
type Lease struct {
	BudgetID    string
	ID          uint64
	Amount      int64  // Invariant: > 0
	Owner       string // node id
	Incarnation uint64 // the owner process's start; a new incarnation recovers the old one's leases
	Closed      bool
	// Issued and IssuedCount are set at close: the amount and count of grants
	// acknowledged under the lease. Invariant: Issued <= Amount.
	Issued, IssuedCount int64
	// Booked and BookedCount are what folds moved from hot details into the
	// lease: booked under it, so that what was booked per lease survives the
	// fold that deletes the details. Booked under a lease is always Booked +
	// its uses in the unfolded details.
	// Invariant: 0 <= Booked <= Amount; closed: Booked <= Issued and
	// BookedCount <= IssuedCount.
	Booked, BookedCount int64
	// Expires is when the lease stops being spendable, in unix
	// milliseconds of the budget grain's clock: its holder renews it
	// (Renew) while it spends, answers no grant under it past its own
	// estimate of this time, and once it is LeaseReclaimGrace past, any
	// node may fence and close the lease at what was booked under it. 0:
	// a lease taken before leases expired; it never does.
	Expires int64

	// BudgetOut and BudgetTotal are the budget's Leased-Returned and Total
	// right after this lease was taken, for draw thresholds. They are set by
	// TakeLease and carried to the lease holder, never persisted (a decoded
	// lease has zeros).
	BudgetOut, BudgetTotal int64
}

// LeaseTTL is how long a lease stays spendable after it is taken or
// renewed; its holder renews it every LeaseRenewEvery.
const (
	LeaseTTL        = 10 * time.Second
	LeaseRenewEvery = LeaseTTL / 4
	// LeaseReclaimGrace is how long after its expiry a lease may be
	// reclaimed: more than the clock skew between nodes and a grant
	// record's acknowledgement in flight, so that every grant its holder
	// answered is in the stream before the fence is drawn.
	LeaseReclaimGrace = LeaseTTL
)

// ErrLeaseExpired is the error of a renewal that came too late: the lease
// expired (or was closed, or is another holder's) and must not be spent.
var ErrLeaseExpired = errors.New("ledger: lease expired")

// Renew extends an open lease of owner's incarnation to now+ttl (unix
// ms). A closed lease, another holder's, or one already expired at now
// cannot be renewed (ErrLeaseExpired): its holder retires it.
func (l *Lease) Renew(owner string, incarnation uint64, now, ttl int64) error {
	switch {
	case l.Closed:
		return fmt.Errorf("%w: lease %s/%d is closed", ErrLeaseExpired, l.BudgetID, l.ID)
	case l.Owner != owner || l.Incarnation != incarnation:
		return fmt.Errorf("%w: lease %s/%d is held by %s incarnation %d, not %s incarnation %d",
			ErrLeaseExpired, l.BudgetID, l.ID, l.Owner, l.Incarnation, owner, incarnation)
	case l.Expires != 0 && l.Expires <= now:
		return fmt.Errorf("%w: lease %s/%d expired %d ms ago", ErrLeaseExpired, l.BudgetID, l.ID, now-l.Expires)
	}
	l.Expires = now + ttl
	return nil
}

// Check verifies the lease's own invariants.
func (l *Lease) Check() error {
	if l.Amount <= 0 || l.Issued < 0 || l.Issued > l.Amount || l.IssuedCount < 0 ||
		(!l.Closed && (l.Issued != 0 || l.IssuedCount != 0)) ||
		l.Booked < 0 || l.Booked > l.Amount || l.BookedCount < 0 ||
		(l.Closed && (l.Booked > l.Issued || l.BookedCount > l.IssuedCount)) {
		return fmt.Errorf("%w: lease %s/%d amount %d issued %d (%d grants) booked %d (%d grants)",
			ErrInvariant, l.BudgetID, l.ID, l.Amount, l.Issued, l.IssuedCount, l.Booked, l.BookedCount)
	}
	return nil
}

// LeaseUse is the part of a hot detail that one lease paid.
type LeaseUse struct {
	LeaseID       uint64
	Amount, Count int64
}

// HotDetail is one unaggregated debit of a budget's hot account: the sum of
// the grants of one booking batch. Details are written without reading the
// budget, so booking batches never conflict on it, and are folded later.
type HotDetail struct {
	BudgetID      string
	Amount, Count int64
	// Expired is what the commit's expiries into the budget's account
	// returned (Budget.Expired once folded). Invariant: Expired >= 0.
	Expired int64
	// Invariant: sorted by LeaseID, one use per lease, and they sum to
	// Amount and Count.
	Leases []LeaseUse
}

// Add adds one booked grant to the detail. An error leaves it unchanged.
func (h *HotDetail) Add(g *Grant) error {
	if g.Amount <= 0 {
		return fmt.Errorf("%w: grant amount %d", ErrInvariant, g.Amount)
	}
	if h.BudgetID == "" {
		h.BudgetID = g.BudgetID
	}
	if g.BudgetID != h.BudgetID {
		return fmt.Errorf("%w: grant of budget %s added to hot detail of %s", ErrInvariant, g.BudgetID, h.BudgetID)
	}
	sum, err := Add(h.Amount, g.Amount)
	if err != nil {
		return err
	}
	// A lease's use is bounded by the detail's total, so it cannot overflow.
	h.Amount, h.Count = sum, h.Count+1
	h.use(g.LeaseID, g.Amount, 1)
	return nil
}

// Attribute moves a grant that redeem booked under lease 0 to the lease its
// stream event names; the detail's total does not change, and lease 0's use
// may go negative within one detail (its sum over all details does not).
func (h *HotDetail) Attribute(g *Grant) error {
	if g.Amount <= 0 || g.LeaseID == 0 {
		return fmt.Errorf("%w: attribution of %d to lease %d", ErrInvariant, g.Amount, g.LeaseID)
	}
	if h.BudgetID == "" {
		h.BudgetID = g.BudgetID
	}
	if g.BudgetID != h.BudgetID {
		return fmt.Errorf("%w: grant of budget %s attributed in hot detail of %s", ErrInvariant, g.BudgetID, h.BudgetID)
	}
	h.use(0, -g.Amount, -1)
	h.use(g.LeaseID, g.Amount, 1)
	return nil
}

// use adds to one lease's part, keeping Leases sorted by LeaseID.
func (h *HotDetail) use(lease uint64, amount, count int64) {
	i, found := slices.BinarySearchFunc(h.Leases, lease, func(u LeaseUse, id uint64) int {
		return cmp.Compare(u.LeaseID, id)
	})
	if found {
		h.Leases[i].Amount += amount
		h.Leases[i].Count += count
		return
	}
	h.Leases = slices.Insert(h.Leases, i, LeaseUse{LeaseID: lease, Amount: amount, Count: count})
}

// Record versions. Version 2 of budgets and leases appends the fold's
// figures (a budget's FoldedUnattributed, a lease's Booked); version 1
// records, written before folding existed, decode with zeros there.
// Version 3 of leases appends Expires (0 in older ones: no expiry).
// Version 3 of budgets and version 2 of hot details append Expired (0 in
// older ones).
const (
	budgetVersion1, budgetVersion2, budgetVersion = 1, 2, 3
	leaseVersion1, leaseVersion2, leaseVersion    = 1, 2, 3
	hotVersion1, hotVersion                       = 1, 2
)

// MarshalBudget appends the encoding of b.
func MarshalBudget(dst []byte, b *Budget) []byte {
	dst = append(dst, budgetVersion)
	dst = appendString(dst, b.ID)
	dst = appendString(dst, string(b.Asset))
	for _, v := range []int64{b.Total, b.Leased, b.Returned, b.Folded, b.FoldedCount} {
		dst = appendVarint(dst, v)
	}
	dst = appendUvarint(dst, b.NextLease)
	dst = appendUvarint(dst, b.Version)
	dst = appendVarint(dst, b.FoldedUnattributed)
	dst = appendVarint(dst, b.FoldedUnattributedCount)
	return appendVarint(dst, b.Expired)
}

// UnmarshalBudget decodes a budget and checks its invariants.
func UnmarshalBudget(src []byte) (*Budget, error) {
	d := decoder{b: src}
	v := d.byte1("version")
	if d.err == nil && v != budgetVersion && v != budgetVersion2 && v != budgetVersion1 {
		return nil, fmt.Errorf("%w: budget version %d", ErrCorrupt, v)
	}
	b := &Budget{ID: d.string("id"), Asset: Asset(d.string("asset"))}
	b.Total, b.Leased, b.Returned = d.varint("total"), d.varint("leased"), d.varint("returned")
	b.Folded, b.FoldedCount = d.varint("folded"), d.varint("folded_count")
	b.NextLease, b.Version = d.uvarint("next_lease"), d.uvarint("version")
	if v >= budgetVersion2 {
		b.FoldedUnattributed, b.FoldedUnattributedCount = d.varint("folded_unattributed"), d.varint("folded_unattributed_count")
	}
	if v >= budgetVersion {
		b.Expired = d.varint("expired")
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	if err := b.Check(); err != nil {
		return nil, err
	}
	return b, nil
}

// MarshalLease appends the encoding of l.
func MarshalLease(dst []byte, l *Lease) []byte {
	dst = append(dst, leaseVersion)
	dst = appendString(dst, l.BudgetID)
	dst = appendUvarint(dst, l.ID)
	dst = appendVarint(dst, l.Amount)
	dst = appendString(dst, l.Owner)
	dst = appendUvarint(dst, l.Incarnation)
	closed := byte(0)
	if l.Closed {
		closed = 1
	}
	dst = append(dst, closed)
	dst = appendVarint(dst, l.Issued)
	dst = appendVarint(dst, l.IssuedCount)
	dst = appendVarint(dst, l.Booked)
	dst = appendVarint(dst, l.BookedCount)
	return appendVarint(dst, l.Expires)
}

// UnmarshalLease decodes a lease and checks its invariants.
func UnmarshalLease(src []byte) (*Lease, error) {
	d := decoder{b: src}
	v := d.byte1("version")
	if d.err == nil && v != leaseVersion && v != leaseVersion2 && v != leaseVersion1 {
		return nil, fmt.Errorf("%w: lease version %d", ErrCorrupt, v)
	}
	l := &Lease{BudgetID: d.string("budget_id"), ID: d.uvarint("id"), Amount: d.varint("amount"),
		Owner: d.string("owner"), Incarnation: d.uvarint("incarnation")}
	switch d.byte1("closed") {
	case 0:
	case 1:
		l.Closed = true
	default:
		d.fail("closed")
	}
	l.Issued, l.IssuedCount = d.varint("issued"), d.varint("issued_count")
	if v >= leaseVersion2 {
		l.Booked, l.BookedCount = d.varint("booked"), d.varint("booked_count")
	}
	if v >= leaseVersion {
		l.Expires = d.varint("expires")
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	if err := l.Check(); err != nil {
		return nil, err
	}
	return l, nil
}

// MarshalHotDetail appends the encoding of h.
func MarshalHotDetail(dst []byte, h *HotDetail) []byte {
	dst = append(dst, hotVersion)
	dst = appendString(dst, h.BudgetID)
	dst = appendVarint(dst, h.Amount)
	dst = appendVarint(dst, h.Count)
	dst = appendUvarint(dst, uint64(len(h.Leases)))
	for _, u := range h.Leases {
		dst = appendUvarint(dst, u.LeaseID)
		dst = appendVarint(dst, u.Amount)
		dst = appendVarint(dst, u.Count)
	}
	return appendVarint(dst, h.Expired)
}

// UnmarshalHotDetail decodes a hot detail and checks that its parts add up.
func UnmarshalHotDetail(src []byte) (*HotDetail, error) {
	d := decoder{b: src}
	v := d.byte1("version")
	if d.err == nil && v != hotVersion && v != hotVersion1 {
		return nil, fmt.Errorf("%w: hot detail version %d", ErrCorrupt, v)
	}
	h := &HotDetail{BudgetID: d.string("budget_id"), Amount: d.varint("amount"), Count: d.varint("count")}
	n := d.count("leases")
	var sum, cnt int64
	for i := 0; i < n && d.err == nil; i++ {
		u := LeaseUse{LeaseID: d.uvarint("lease_id"), Amount: d.varint("amount"), Count: d.varint("count")}
		if d.err != nil {
			break
		}
		// Uses are not required to be positive: a detail that attributes a
		// redeemed grant moves its amount off lease 0 with a negative use.
		if i > 0 && u.LeaseID <= h.Leases[i-1].LeaseID {
			return nil, fmt.Errorf("%w: hot detail of %s: lease use %d: %+v", ErrInvariant, h.BudgetID, i, u)
		}
		// Checked sums: wrapped parts must not be able to match the total.
		var err1, err2 error
		sum, err1 = Add(sum, u.Amount)
		cnt, err2 = Add(cnt, u.Count)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("%w: hot detail of %s: parts overflow", ErrInvariant, h.BudgetID)
		}
		h.Leases = append(h.Leases, u)
	}
	if v == hotVersion {
		h.Expired = d.varint("expired")
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	if sum != h.Amount || cnt != h.Count {
		return nil, fmt.Errorf("%w: hot detail of %s: parts %d/%d != total %d/%d", ErrInvariant, h.BudgetID, sum, cnt, h.Amount, h.Count)
	}
	if h.Expired < 0 {
		return nil, fmt.Errorf("%w: hot detail of %s: expired %d", ErrInvariant, h.BudgetID, h.Expired)
	}
	return h, nil
}
