// Package reconcile audits the store of record against redrain's
// invariants: no overspend, exactly-once booking, double entry, budget
// conservation, balances equal to postings, and bookings that match their
// tokens' derivation. It reads TiKV only and never writes.
package reconcile

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"redrain/booking"
	"redrain/ledger"
	"redrain/storage"
	"redrain/tokens"
)

// violationsShownMax bounds the examples a check lists.
const violationsShownMax = 20

// Check is the result of one invariant.
type Check struct {
	Name       string   `json:"name"`
	OK         bool     `json:"ok"`
	Detail     string   `json:"detail"`
	Violations []string `json:"violations,omitempty"`
	count      int
}

func (c *Check) fail(format string, args ...any) {
	c.OK = false
	c.count++
	if len(c.Violations) < violationsShownMax {
		c.Violations = append(c.Violations, fmt.Sprintf(format, args...))
	}
}

// Budget is one budget's figures.
type Budget struct {
	ID          string `json:"id"`
	Asset       string `json:"asset"`
	Total       int64  `json:"total"`
	Remaining   int64  `json:"remaining"`
	LeasedOpen  int64  `json:"leased_open"`  // amounts of leases still open
	Issued      int64  `json:"issued"`       // closed leases' issued
	Booked      int64  `json:"booked"`       // posted to users (hot details)
	BookedCount int64  `json:"booked_count"` // grants posted
	OpenLeases  int    `json:"open_leases"`
	Leases      int    `json:"leases"`
	// Expired is what expiries returned to the budget (folded and in hot
	// details); the expire moves into its account budget/{id} sum to it.
	Expired int64 `json:"expired"`
}

// Report is the audit.
type Report struct {
	OK       bool     `json:"ok"`
	Checks   []*Check `json:"checks"`
	Accounts int      `json:"accounts"`
	Entries  int      `json:"entries"`
	// Moves counts the booked moves (spending, transfers, expiry,
	// withdrawals' steps) found in the accounts' entries.
	Moves   int      `json:"moves"`
	Budgets []Budget `json:"budgets"`
	// PendingAttribution counts redeemed grants whose stream event has not
	// been booked yet (lease unknown); zero once booking has drained.
	PendingAttribution int `json:"pending_attribution"`
	// Parked are the grant records operators set aside because booking
	// could not read them (booking.Park): whatever grants they held are in
	// no account. They fail no check of their own; a parked record that
	// held issued grants shows in budget_conservation.
	Parked []booking.Parked `json:"parked"`
	// Fenced are the grants booking refused because their lease had been
	// reclaimed (ledger.Fence): written by a holder after its lease
	// expired, never answered, in no account and in no lease's issued.
	Fenced []Fenced `json:"fenced"`
	// Behind is what closed leases issued that booking has not booked yet,
	// in a live audit (RunLive) only: booking follows the stream
	// asynchronously, so while it lags a closed lease has booked less than
	// it issued. Zero once booking has drained; Run counts it as a
	// budget_conservation violation instead.
	Behind      int64 `json:"behind,omitempty"`
	BehindCount int64 `json:"behind_count,omitempty"`
	// Consistency is what the consistency service found (the node's
	// continuous and T+1 checks: consistency.Status), set by the node
	// that answers /admin/v1/audit; reconcile itself never fills it.
	Consistency json.RawMessage `json:"consistency,omitempty"`
}

// Fenced is one record's grants that booking refused under fenced leases.
type Fenced struct {
	Partition int32 `json:"partition"`
	Offset    int64 `json:"offset"`
	Grants    int   `json:"grants"`
	Amount    int64 `json:"amount"`
	// Leases are the budget/lease of each refused grant, deduplicated.
	Leases []string `json:"leases"`
}

// Run audits the store as of one snapshot, once booking has drained.
func Run(ctx context.Context, kv *storage.TiKV) (*Report, error) { return run(ctx, kv, false) }

// RunLive audits the store as of one snapshot while booking may lag: a
// closed lease that booked less than it issued is counted in
// Report.Behind rather than failed (booking more than issued still
// fails).
func RunLive(ctx context.Context, kv *storage.TiKV) (*Report, error) { return run(ctx, kv, true) }

func run(ctx context.Context, kv *storage.TiKV, live bool) (*Report, error) {
	// Every scan reads the same snapshot: a live node takes leases and
	// books grants while the audit runs, and scans from different moments
	// would see a budget without its new lease or an account entry
	// without its hot detail, and report violations that never existed.
	// The transaction only reads and is rolled back.
	txn, release, err := kv.Snapshot()
	if err != nil {
		return nil, err
	}
	defer release()
	scan := func(start, end []byte, fn func(key, value []byte) (bool, error)) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		return storage.ScanTxn(txn, start, end, fn)
	}
	r := &Report{OK: true}
	overspend := &Check{Name: "no_overspend", OK: true}
	once := &Check{Name: "exactly_once", OK: true}
	double := &Check{Name: "double_entry", OK: true}
	conserve := &Check{Name: "budget_conservation", OK: true}
	postings := &Check{Name: "balances_match_postings", OK: true}
	authentic := &Check{Name: "bookings_match_tokens", OK: true}
	moves := &Check{Name: "moves_balance", OK: true}
	r.Checks = []*Check{overspend, once, double, conserve, postings, authentic, moves}

	// Per asset, over every account. Money is one asset here: a user's
	// money sub-accounts (cash:general, cash:transit, cash:debt) count fen
	// as cash does, and a withdrawal's hold moves fen between them.
	sums := map[ledger.Asset]int64{}
	add := func(asset ledger.Asset, v int64) {
		if asset.Kind() == ledger.KindMoney {
			asset = ledger.AssetCash
		}
		s, err := ledger.Add(sums[asset], v)
		if err != nil {
			double.fail("%s: %v", asset, err)
			return
		}
		sums[asset] = s
	}

	// Funding accounts.
	err = scan(storage.FundPrefix, storage.PrefixEnd(storage.FundPrefix), func(k, v []byte) (bool, error) {
		if len(v) != 8 {
			double.fail("corrupt funding account %q", k)
			return true, nil
		}
		add(ledger.Asset(strings.TrimPrefix(string(k), string(storage.FundPrefix))), int64(binary.BigEndian.Uint64(v)))
		return true, nil
	})
	if err != nil {
		return nil, err
	}

	// Budgets, their leases and hot details.
	var budgets []*ledger.Budget
	err = scan(storage.BudgetPrefix, storage.PrefixEnd(storage.BudgetPrefix), func(k, v []byte) (bool, error) {
		b, err := ledger.UnmarshalBudget(v)
		if err != nil {
			overspend.fail("budget %q: %v", k, err)
			return true, nil
		}
		budgets = append(budgets, b)
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	var bookedCountTotal, unattributedCount int64
	for _, b := range budgets {
		br := Budget{ID: b.ID, Asset: string(b.Asset), Total: b.Total, Remaining: b.Remaining(), Expired: b.Expired}
		perLease := map[uint64]ledger.LeaseUse{}
		p := storage.HotPrefix(b.ID)
		err := scan(p, storage.PrefixEnd(p), func(k, v []byte) (bool, error) {
			h, err := ledger.UnmarshalHotDetail(v)
			if err != nil {
				double.fail("hot detail %x: %v", k, err)
				return true, nil
			}
			br.Booked += h.Amount
			br.BookedCount += h.Count
			br.Expired += h.Expired
			for _, u := range h.Leases {
				t := perLease[u.LeaseID]
				t.Amount += u.Amount
				t.Count += u.Count
				perLease[u.LeaseID] = t
			}
			return true, nil
		})
		if err != nil {
			return nil, err
		}
		br.Booked += b.Folded
		br.BookedCount += b.FoldedCount
		bookedCountTotal += br.BookedCount
		// Folded amounts live on: per lease in its Booked, under lease 0 in
		// the budget's FoldedUnattributed. Booked under a lease is what was
		// folded into it plus its unfolded uses.
		u0 := perLease[0]
		u0.Amount += b.FoldedUnattributed
		u0.Count += b.FoldedUnattributedCount
		perLease[0] = u0
		unattributedCount += u0.Count
		var leasedSum, leaseFolded, leaseFoldedCount int64
		lp := storage.LeasePrefix(b.ID)
		err = scan(lp, storage.PrefixEnd(lp), func(k, v []byte) (bool, error) {
			l, err := ledger.UnmarshalLease(v)
			if err != nil {
				conserve.fail("lease %q: %v", k, err)
				return true, nil
			}
			br.Leases++
			leasedSum += l.Amount
			leaseFolded += l.Booked
			leaseFoldedCount += l.BookedCount
			used := perLease[l.ID]
			used.Amount += l.Booked
			used.Count += l.BookedCount
			if l.Closed {
				br.Issued += l.Issued
				switch {
				case used.Amount == l.Issued && used.Count == l.IssuedCount:
				case live && used.Amount <= l.Issued && used.Count < l.IssuedCount:
					r.Behind += l.Issued - used.Amount
					r.BehindCount += l.IssuedCount - used.Count
				default:
					conserve.fail("budget %s lease %d: issued %d (%d grants) but booked %d (%d grants)", b.ID, l.ID, l.Issued, l.IssuedCount, used.Amount, used.Count)
				}
			} else {
				br.OpenLeases++
				br.LeasedOpen += l.Amount
				if used.Amount > l.Amount {
					overspend.fail("budget %s open lease %d: booked %d > leased %d", b.ID, l.ID, used.Amount, l.Amount)
				}
			}
			delete(perLease, l.ID)
			return true, nil
		})
		if err != nil {
			return nil, err
		}
		for id, u := range perLease {
			if id == 0 {
				// Redeemed before its stream event: attributed when it is
				// booked (counted from the accounts below).
				continue
			}
			if u.Amount != 0 || u.Count != 0 {
				conserve.fail("budget %s: %d booked under lease %d which does not exist", b.ID, u.Amount, id)
			}
		}
		if leasedSum != b.Leased {
			conserve.fail("budget %s: leases sum to %d, budget says leased %d", b.ID, leasedSum, b.Leased)
		}
		if leaseFolded+b.FoldedUnattributed != b.Folded || leaseFoldedCount+b.FoldedUnattributedCount != b.FoldedCount {
			conserve.fail("budget %s: folded %d (%d grants) but its leases hold %d (%d) and lease 0 %d (%d)", b.ID,
				b.Folded, b.FoldedCount, leaseFolded, leaseFoldedCount, b.FoldedUnattributed, b.FoldedUnattributedCount)
		}
		if b.Leased-b.Returned > b.Total || br.Booked > b.Total {
			overspend.fail("budget %s: total %d, out on leases %d, booked %d", b.ID, b.Total, b.Leased-b.Returned, br.Booked)
		}
		if got := br.Remaining + br.LeasedOpen + br.Issued; got != b.Total {
			conserve.fail("budget %s: total %d != remaining %d + open leases %d + issued %d", b.ID, b.Total, br.Remaining, br.LeasedOpen, br.Issued)
		}
		// The budget's hot account: funded with Total, debited per booking.
		add(b.Asset, b.Total-br.Booked)
		r.Budgets = append(r.Budgets, br)
	}

	// Accounts.
	seen := map[[16]byte]struct{}{}
	expiredTo := map[string]int64{} // expire moves into budget/{id}, by id
	var entries int64
	parts, err := booking.PartitionsIn(txn)
	if err != nil {
		return nil, err
	}
	onAccount := func(a *ledger.Account) (bool, error) {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		r.Accounts++
		for _, b := range a.Balances {
			add(b.Asset, b.Amount)
		}
		all := a.Entries
		if a.Archived > 0 {
			archived, err := booking.Archived(ctx, txn, a)
			if isMoneyErr(err) {
				postings.fail("act %d: %v", a.ActID, err)
				return true, nil
			} else if err != nil {
				return false, err
			}
			checkArchived(postings, a, archived)
			all = append(archived, a.Entries...)
			limits := make(map[string]bool, len(all))
			for _, e := range all {
				if limits[e.LimitKey] {
					once.fail("act %d: limit key %s booked twice", a.ActID, e.LimitKey)
				}
				limits[e.LimitKey] = true
			}
		}
		checkMonths(postings, a, all)
		r.Moves += checkMoves(moves, a, all, add)
		for i := range all {
			if m := all[i].Move; m != nil && m.Kind == ledger.MoveExpire {
				if id, ok := strings.CutPrefix(m.Counter, "budget/"); ok {
					expiredTo[id] -= all[i].Amount
				}
			}
		}
		for _, e := range all {
			if e.Move != nil {
				continue // a move's entry: checkMoves
			}
			entries++
			if e.LeaseID == 0 {
				r.PendingAttribution++
			}
			// An entry holds no out_trade_no where it derives (the store
			// keeps none for a booked grant's): the derived one counts.
			want, ok := outTradeNo(a.ActID, e)
			got := e.OutTradeNo
			if got == "" {
				got = want
			}
			var otn [16]byte
			if n, err := hex.Decode(otn[:], []byte(got)); err != nil || n != 16 {
				authentic.fail("act %d: entry %s has a malformed out_trade_no %q", a.ActID, e.LimitKey, got)
				continue
			}
			if _, dup := seen[otn]; dup {
				once.fail("out_trade_no %s booked twice", got)
			}
			seen[otn] = struct{}{}
			if !ok || want != got {
				authentic.fail("act %d: entry %s out_trade_no %s does not derive from its key", a.ActID, e.LimitKey, got)
			}
			if e.Amount <= 0 {
				authentic.fail("act %d: entry %s amount %d", a.ActID, e.LimitKey, e.Amount)
			}
		}
		return true, nil
	}
	for _, p := range parts {
		_, err := booking.ScanPartition(ctx, txn, p, onAccount)
		if isMoneyErr(err) {
			// A journal or page that does not decode, or whose replay
			// breaks an account's invariants, is a finding, not an outage.
			postings.fail("accounts of partition %d: %v", p, err)
		} else if err != nil {
			return nil, err
		}
	}
	r.Entries = int(entries)
	if entries != bookedCountTotal {
		once.fail("accounts hold %d bookings but budgets were debited for %d", entries, bookedCountTotal)
	}
	// Redeem books under lease 0 and its stream event moves the grant to
	// its lease, in the account entry and the hot detail alike.
	if int64(r.PendingAttribution) != unattributedCount {
		conserve.fail("%d bookings await attribution but budgets hold %d grants under lease 0", r.PendingAttribution, unattributedCount)
	}
	for _, br := range r.Budgets {
		if br.Expired != expiredTo[br.ID] {
			conserve.fail("budget %s: expiries into its account returned %d, its record and hot details hold %d", br.ID, expiredTo[br.ID], br.Expired)
		}
	}
	for asset, s := range sums {
		if s != 0 {
			double.fail("%s: all accounts sum to %d, want 0", asset, s)
		}
	}

	overspend.Detail = fmt.Sprintf("%d budgets: leased minus returned and booked within total", len(budgets))
	once.Detail = fmt.Sprintf("%d bookings, one per limit key and out_trade_no, each debited once", entries)
	double.Detail = fmt.Sprintf("%d assets sum to zero over funding, budget, user and moves' counter accounts", len(sums))
	conserve.Detail = "total = remaining + open leases + issued; closed leases issued = booked (folded and unfolded); folded = Σ leases' folded; returned by expiry (folded and unfolded) = Σ expire moves into the budget's account"
	postings.Detail = fmt.Sprintf("%d accounts: balance = sum of postings", r.Accounts)
	authentic.Detail = "every booking's out_trade_no derives from its idempotency key"
	moves.Detail = fmt.Sprintf("%d moves: each one's entries whole, its user legs and counter legs balanced", r.Moves)
	for _, c := range r.Checks {
		if !c.OK {
			r.OK = false
			c.Detail = fmt.Sprintf("%d violations; %s", c.count, c.Detail)
		}
	}
	err = scan(storage.ParkedPrefix, storage.PrefixEnd(storage.ParkedPrefix), func(k, v []byte) (bool, error) {
		var p booking.Parked
		if err := json.Unmarshal(v, &p); err != nil {
			return false, fmt.Errorf("%w: parked record %s: %v", ledger.ErrCorrupt, k, err)
		}
		r.Parked = append(r.Parked, p)
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	err = scan(storage.FencedPrefix, storage.PrefixEnd(storage.FencedPrefix), func(k, v []byte) (bool, error) {
		f, err := fencedOf(k, v)
		if err != nil {
			return false, err
		}
		r.Fenced = append(r.Fenced, f)
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(r.Budgets, func(i, j int) bool { return r.Budgets[i].ID < r.Budgets[j].ID })
	return r, nil
}

// fencedOf decodes one record of refused grants (storage.FencedKey).
func fencedOf(k, v []byte) (Fenced, error) {
	var f Fenced
	if _, err := fmt.Sscanf(string(k[len(storage.FencedPrefix):]), "%04x/%016x", &f.Partition, &f.Offset); err != nil {
		return f, fmt.Errorf("%w: fenced key %q: %v", ledger.ErrCorrupt, k, err)
	}
	gs, err := ledger.DecodeGrantRecord(nil, v)
	if err != nil {
		return f, fmt.Errorf("fenced record %s: %w", k, err)
	}
	f.Grants = len(gs)
	for _, g := range gs {
		f.Amount += g.Amount
		if l := fmt.Sprintf("%s/%d", g.BudgetID, g.LeaseID); !slices.Contains(f.Leases, l) {
			f.Leases = append(f.Leases, l)
		}
	}
	return f, nil
}

// outTradeNo re-derives an entry's trade number from its limit key and
// award (tokens.OutTradeNoOfLimit), for a key that names actID.
func outTradeNo(actID uint64, e ledger.Entry) (string, bool) {
	if !strings.HasPrefix(e.LimitKey, strconv.FormatUint(actID, 10)+"_") {
		return "", false
	}
	return tokens.OutTradeNoOfLimit(e.LimitKey, e.AwardType)
}

// JSON renders the report.
func (r *Report) JSON() []byte {
	b, _ := json.Marshal(r)
	return b
}

// WriteText renders the report for people.
func (r *Report) WriteText(w io.Writer) {
	verdict := "OK"
	if !r.OK {
		verdict = "VIOLATIONS FOUND"
	}
	fmt.Fprintf(w, "redrain reconcile: %s\n", verdict)
	fmt.Fprintf(w, "  accounts %d, bookings %d, pending attribution %d\n", r.Accounts, r.Entries, r.PendingAttribution)
	if r.BehindCount > 0 {
		fmt.Fprintf(w, "  booking behind: %d grants (amount %d) issued under closed leases not booked yet\n", r.BehindCount, r.Behind)
	}
	for _, c := range r.Checks {
		mark := "ok  "
		if !c.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(w, "  [%s] %-24s %s\n", mark, c.Name, c.Detail)
		for _, v := range c.Violations {
			fmt.Fprintf(w, "         - %s\n", v)
		}
	}
	for _, b := range r.Budgets {
		fmt.Fprintf(w, "  budget %s (%s): total %d = remaining %d + open leases %d + issued %d; booked %d in %d grants; leases %d (%d open)\n",
			b.ID, b.Asset, b.Total, b.Remaining, b.LeasedOpen, b.Issued, b.Booked, b.BookedCount, b.Leases, b.OpenLeases)
	}
	for _, p := range r.Parked {
		held := ""
		if p.Grants > 0 {
			held = fmt.Sprintf(", %d grants, amount %d, in no account", p.Grants, p.Amount)
		}
		fmt.Fprintf(w, "  parked record: partition %d offset %d (%d bytes, %s%s) by %s at %s: %s\n", p.Partition, p.Offset,
			len(p.Value), p.Error, held, p.By, time.UnixMilli(p.At).UTC().Format(time.RFC3339), p.Reason)
	}
	for _, f := range r.Fenced {
		fmt.Fprintf(w, "  refused under a reclaimed lease: partition %d offset %d: %d grants, amount %d (leases %s)\n",
			f.Partition, f.Offset, f.Grants, f.Amount, strings.Join(f.Leases, ", "))
	}
}

// isMoneyErr reports an error of the ledger's money classes.
func isMoneyErr(err error) bool {
	for _, e := range []error{ledger.ErrInvariant, ledger.ErrCorrupt, ledger.ErrOverflow, ledger.ErrUnbalanced} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// checkMonths compares an account's monthly summaries with its entries
// (all, archived ones first): per asset and month of booking time, the
// income is what the entries credited and the expense what they debited.
// Their sum per asset equals the balance, which decoding checked.
func checkMonths(c *Check, a *ledger.Account, all []ledger.Entry) {
	if !a.MonthsKnown() {
		c.fail("act %d: its monthly summaries are not loaded", a.ActID)
		return
	}
	want, err := ledger.MonthsOf(all)
	if err != nil {
		c.fail("act %d: monthly summaries of its entries: %v", a.ActID, err)
		return
	}
	if !slices.Equal(a.Months, want) {
		c.fail("act %d: monthly summaries %v, its entries make %v", a.ActID, a.Months, want)
	}
}

// checkArchived compares an account's history chunks with what the account
// keeps of them: the count and the sums per asset.
func checkArchived(c *Check, a *ledger.Account, archived []ledger.Entry) {
	if uint64(len(archived)) != a.Archived {
		c.fail("act %d: %d archived entries in its history, the account counts %d", a.ActID, len(archived), a.Archived)
		return
	}
	sums := map[ledger.Asset]int64{}
	for _, e := range archived {
		sums[e.Asset] += e.Amount
	}
	for _, b := range a.ArchivedSums {
		if sums[b.Asset] != b.Amount {
			c.fail("act %d: archived %s sum %d, its history holds %d", a.ActID, b.Asset, b.Amount, sums[b.Asset])
		}
		delete(sums, b.Asset)
	}
	for asset, s := range sums {
		if s != 0 {
			c.fail("act %d: history holds %d %s the account does not count", a.ActID, s, asset)
		}
	}
}

// checkMoves rebuilds every move booked into an account from its entries
// (all, in booking order: a move's entries are consecutive, legs 0, 1...)
// and checks that they are whole (each leg once, one digest, kind,
// counter and reference) and that the move's double entry, its user legs
// and its counter legs (ledger.CheckMove), balances. It adds the
// counter accounts' side to the audit's sums (add), so that double entry
// holds over funding, budgets, users and counters. It returns how many
// moves it found.
func checkMoves(c *Check, a *ledger.Account, all []ledger.Entry, add func(ledger.Asset, int64)) int {
	n := 0
	var m *ledger.Move
	var digest uint64
	flush := func() {
		if m == nil {
			return
		}
		n++
		if err := ledger.CheckMove(m); err != nil {
			c.fail("act %d: move %q (%s): %v", a.ActID, m.Key, m.Kind, err)
		}
		if m.Counter != "" {
			for _, l := range m.Legs {
				add(l.Asset, -l.Amount)
			}
		}
		m = nil
	}
	for i := range all {
		e := &all[i]
		if e.Move == nil {
			flush()
			continue
		}
		me := e.Move
		leg, key, ok := moveLegOf(e.LimitKey)
		if !ok {
			flush()
			c.fail("act %d: move entry %q has no move key", a.ActID, e.LimitKey)
			continue
		}
		if leg == 0 {
			flush()
			m = &ledger.Move{ActID: a.ActID, Kind: me.Kind, Key: key, AppID: me.AppID, Counter: me.Counter, Ref: me.Ref}
			digest = me.Digest
		} else if m == nil || key != m.Key || leg != len(m.Legs) || me.Kind != m.Kind || me.Counter != m.Counter || me.Ref != m.Ref || me.AppID != m.AppID || me.Digest != digest {
			flush()
			c.fail("act %d: move entry %q is not the next leg of its move", a.ActID, e.LimitKey)
			continue
		}
		m.Legs = append(m.Legs, ledger.Leg{Asset: e.Asset, Amount: e.Amount})
	}
	flush()
	return n
}

// moveLegOf parses a move entry's limit key, "move:{leg}:{key}".
func moveLegOf(limitKey string) (int, string, bool) {
	rest, ok := strings.CutPrefix(limitKey, "move:")
	if !ok {
		return 0, "", false
	}
	i := strings.IndexByte(rest, ':')
	if i <= 0 {
		return 0, "", false
	}
	leg := 0
	for _, ch := range rest[:i] {
		if ch < '0' || ch > '9' || leg > 1<<20 {
			return 0, "", false
		}
		leg = leg*10 + int(ch-'0')
	}
	if ledger.MoveEntryKey(rest[i+1:], leg) != limitKey {
		return 0, "", false
	}
	return leg, rest[i+1:], true
}
