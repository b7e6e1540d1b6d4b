package reconcile_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"redrain/ledger"
	"redrain/reconcile"
	"redrain/storage"
	"redrain/storage/storagetest"
	"redrain/tokens"
)

const (
	noOverspend   = "no_overspend"
	exactlyOnce   = "exactly_once"
	doubleEntry   = "double_entry"
	conservation  = "budget_conservation"
	postings      = "balances_match_postings"
	matchesTokens = "bookings_match_tokens"
	movesBalance  = "moves_balance"
)

var allChecks = []string{noOverspend, exactlyOnce, doubleEntry, conservation, postings, matchesTokens, movesBalance}

func run(t *testing.T, kv *storage.TiKV) *reconcile.Report {
	t.Helper()
	r, err := reconcile.Run(context.Background(), kv)
	if err != nil {
		t.Fatalf("reconcile.Run: %v", err)
	}
	return r
}

func text(r *reconcile.Report) string {
	var b strings.Builder
	r.WriteText(&b)
	return b.String()
}

func check(t *testing.T, r *reconcile.Report, name string) *reconcile.Check {
	t.Helper()
	for _, c := range r.Checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("report has no check %s:\n%s", name, text(r))
	return nil
}

func TestHealthyStore(t *testing.T) {
	t.Parallel()
	kv := storagetest.TiKV(t, "")
	writeHealthy(t, kv)
	r := run(t, kv)
	if !r.OK {
		t.Fatalf("healthy store: report not OK:\n%s", text(r))
	}
	var names []string
	for _, c := range r.Checks {
		names = append(names, c.Name)
	}
	if !slices.Equal(names, allChecks) {
		t.Errorf("checks = %v, want %v", names, allChecks)
	}
	var bookedAmount int64
	for act := uint64(1); act <= usersCount; act++ {
		bookedAmount += amountOf(act)
	}
	var closedIssued int64
	for act := uint64(1); act <= 5; act++ {
		closedIssued += amountOf(act)
	}
	want := reconcile.Budget{ID: budgetID, Asset: string(asset), Total: budgetTotal,
		Remaining: budgetTotal - 15_000 + (10_000 - closedIssued), LeasedOpen: 5_000, Issued: closedIssued,
		Booked: bookedAmount, BookedCount: usersCount, OpenLeases: 1, Leases: 2}
	if len(r.Budgets) != 1 || r.Budgets[0] != want {
		t.Errorf("budgets = %+v, want [%+v]", r.Budgets, want)
	}
	if r.Accounts != usersCount || r.Entries != usersCount || r.PendingAttribution != 0 {
		t.Errorf("accounts %d, entries %d, pending %d; want %d, %d, 0", r.Accounts, r.Entries, r.PendingAttribution, usersCount, usersCount)
	}
	out := text(r)
	if !strings.HasPrefix(out, "redrain reconcile: OK\n") || strings.Contains(out, "FAIL") {
		t.Errorf("WriteText of a healthy store:\n%s", out)
	}
	var decoded reconcile.Report
	if err := json.Unmarshal(r.JSON(), &decoded); err != nil || !decoded.OK || len(decoded.Checks) != len(allChecks) {
		t.Errorf("JSON() = %s: decoded ok=%v (%v)", r.JSON(), decoded.OK, err)
	}
}

// TestFoldedStore: folding the hot details into the budget and its leases
// changes no figure of the audit, with redeemed grants booked under lease 0
// and attributed on either side of a fold.
func TestFoldedStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	kv := storagetest.TiKV(t, "")
	writeHealthy(t, kv)
	before := run(t, kv)
	if !before.OK {
		t.Fatalf("healthy store:\n%s", text(before))
	}
	fold := func(step string) {
		t.Helper()
		update(t, kv, func(txn storage.Txn) error { return foldAll(ctx, t, txn) })
		r := run(t, kv)
		if !r.OK {
			t.Fatalf("after %s:\n%s", step, text(r))
		}
	}
	fold("folding the healthy store")
	if r := run(t, kv); !slices.Equal(r.Budgets, before.Budgets) {
		t.Errorf("budgets after the fold = %+v, want %+v", r.Budgets, before.Budgets)
	}
	// User 20 redeems (lease 0); folded before its stream event arrives.
	book(t, kv, 0, 20)
	if r := run(t, kv); !r.OK || r.PendingAttribution != 1 {
		t.Fatalf("after a redeem: pending %d\n%s", r.PendingAttribution, text(r))
	}
	fold("folding a redeem")
	attribute(t, kv, 20, openLease)
	if r := run(t, kv); !r.OK || r.PendingAttribution != 0 {
		t.Fatalf("after the attribution: pending %d\n%s", r.PendingAttribution, text(r))
	}
	fold("folding the attribution")
	// User 21 redeems and is attributed before any fold.
	book(t, kv, 0, 21)
	attribute(t, kv, 21, openLease)
	fold("folding a redeem with its attribution")
	update(t, kv, func(txn storage.Txn) error {
		b, l := getBudget(ctx, t, txn), getLease(ctx, t, txn, openLease)
		want := amountOf(6) + amountOf(7) + amountOf(8) + amountOf(20) + amountOf(21)
		if l.Booked != want || l.BookedCount != 5 || b.FoldedUnattributed != 0 {
			t.Errorf("after folds: lease %+v (want booked %d in 5), budget %+v", l, want, b)
		}
		return nil
	})
}

// attribute books act's stream event under lease after redeem booked it
// under lease 0: the entry names the lease, the detail moves the amount.
func attribute(t *testing.T, kv *storage.TiKV, act, lease uint64) {
	t.Helper()
	update(t, kv, func(txn storage.Txn) error {
		a := getAccount(context.Background(), t, txn, act)
		g := grantOf(act, lease)
		if !a.Attribute(&g) {
			return fmt.Errorf("attribute %+v: nothing to attribute", g)
		}
		a.Version++
		h := &ledger.HotDetail{BudgetID: budgetID}
		if err := h.Attribute(&g); err != nil {
			return err
		}
		if err := putAll(txn, a); err != nil {
			return err
		}
		return txn.Set(storage.HotKey(budgetID, txn.StartTS(), 0), ledger.MarshalHotDetail(nil, h))
	})
}

func TestEmptyStore(t *testing.T) {
	t.Parallel()
	r := run(t, storagetest.TiKV(t, ""))
	if !r.OK || r.Accounts != 0 || len(r.Budgets) != 0 {
		t.Fatalf("empty store:\n%s", text(r))
	}
}

// TestViolations corrupts one thing per case in a fresh healthy store and
// checks that the named check fails with a violation that says what is
// wrong, in the report, its text and its JSON.
func TestViolations(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cases := []struct {
		name    string
		corrupt func(t *testing.T, txn storage.Txn) error
		// fail are the checks that must fail, each with a violation that
		// contains all the texts given; ok are checks that must still pass.
		// Checks in neither may fail as a consequence.
		fail map[string][]string
		ok   []string
	}{{
		// An account that fails its own check cannot be read at all, so its
		// balances and entries are missing from the sums as well: double
		// entry and the booking count fail with it.
		name: "tampered balance",
		corrupt: func(t *testing.T, txn storage.Txn) error {
			a := getAccount(ctx, t, txn, 3)
			a.Balances[0].Amount++
			return putAll(txn, a)
		},
		// The reason is the ledger's; the record's key is reconcile's.
		fail: map[string][]string{postings: {"partition 3 page 0", "act 3", "31", "30"}},
		ok:   []string{noOverspend, conservation, matchesTokens},
	}, {
		name: "extra hot detail",
		corrupt: func(t *testing.T, txn storage.Txn) error {
			h := &ledger.HotDetail{BudgetID: budgetID, Amount: 50, Count: 1,
				Leases: []ledger.LeaseUse{{LeaseID: openLease, Amount: 50, Count: 1}}}
			return txn.Set(storage.HotKey(budgetID, txn.StartTS(), 7), ledger.MarshalHotDetail(nil, h))
		},
		fail: map[string][]string{
			doubleEntry: {"cash: all accounts sum to -50, want 0"},
			exactlyOnce: {fmt.Sprintf("accounts hold %d bookings but budgets were debited for %d", usersCount, usersCount+1)},
		},
		ok: []string{noOverspend, conservation, postings, matchesTokens},
	}, {
		// A budget record that breaks its own invariant does not decode;
		// the budget's hot account is then missing from the other checks.
		name: "leased beyond total",
		corrupt: func(t *testing.T, txn storage.Txn) error {
			b := getBudget(ctx, t, txn)
			b.Total = b.Leased - b.Returned - 1
			return putAll(txn, b)
		},
		fail: map[string][]string{noOverspend: {`budget "rr/budget/demo/formal/cash"`, "5149", "15000", "9850"}},
		ok:   []string{postings, matchesTokens},
	}, {
		name: "open lease overspent",
		corrupt: func(t *testing.T, txn storage.Txn) error {
			// Booked under lease 2 beyond its amount, with the matching
			// accounts: only the lease's bound is broken.
			h := &ledger.HotDetail{BudgetID: budgetID}
			for act := uint64(100); act < 103; act++ {
				g := grantOf(act, openLease)
				g.Amount = 2_000
				a := &ledger.Account{ActID: act}
				if _, err := a.Book(&g, 3); err != nil {
					return err
				}
				if err := h.Add(&g); err != nil {
					return err
				}
				if err := putAll(txn, a); err != nil {
					return err
				}
			}
			return txn.Set(storage.HotKey(budgetID, txn.StartTS(), 7), ledger.MarshalHotDetail(nil, h))
		},
		fail: map[string][]string{noOverspend: {"budget demo/formal/cash open lease 2: booked 6210 > leased 5000"}},
		ok:   []string{exactlyOnce, doubleEntry, conservation, postings, matchesTokens},
	}, {
		name: "closed lease issued differs from booked",
		corrupt: func(t *testing.T, txn storage.Txn) error {
			// The budget stays consistent with the lease: only issued =
			// booked is broken.
			b, l := getBudget(ctx, t, txn), getLease(ctx, t, txn, closedLease)
			l.Issued -= 10
			b.Returned += 10
			return putAll(txn, b, l)
		},
		fail: map[string][]string{conservation: {"budget demo/formal/cash lease 1: issued 140 (5 grants) but booked 150 (5 grants)"}},
		ok:   []string{noOverspend, exactlyOnce, doubleEntry, postings, matchesTokens},
	}, {
		name: "budget total not conserved",
		corrupt: func(t *testing.T, txn storage.Txn) error {
			b := getBudget(ctx, t, txn)
			b.Returned -= 100 // the closed lease's unspent part half lost
			return putAll(txn, b)
		},
		fail: map[string][]string{conservation: {"budget demo/formal/cash: total 1000000 != remaining 994750 + open leases 5000 + issued 150"}},
		ok:   []string{noOverspend, exactlyOnce, doubleEntry, postings, matchesTokens},
	}, {
		name: "out_trade_no not derived from its key",
		corrupt: func(t *testing.T, txn storage.Txn) error {
			a := getAccount(ctx, t, txn, 4)
			a.Entries[0].OutTradeNo = tokens.OutTradeNo("forged")
			return putAll(txn, a)
		},
		fail: map[string][]string{matchesTokens: {"act 4: entry 4_demo_rain_1_formal out_trade_no " + tokens.OutTradeNo("forged") + " does not derive from its key"}},
		ok:   []string{noOverspend, exactlyOnce, doubleEntry, conservation, postings},
	}, {
		name: "legacy entry's out_trade_no not derived from its key",
		corrupt: func(t *testing.T, txn storage.Txn) error {
			a := getAccount(ctx, t, txn, 2)
			a.Entries[0].OutTradeNo = tokens.OutTradeNo("forged")
			return putAll(txn, a)
		},
		fail: map[string][]string{matchesTokens: {"act 2: entry 2_rain_1_formal out_trade_no " + tokens.OutTradeNo("forged") + " does not derive from its key"}},
		ok:   []string{noOverspend, exactlyOnce, doubleEntry, conservation, postings},
	}, {
		// The key format of the entry decides: a legacy entry carrying the
		// trade number of the same packet under the new keys is refused.
		name: "legacy entry with the trade number of the new keys",
		corrupt: func(t *testing.T, txn storage.Txn) error {
			a := getAccount(ctx, t, txn, 2)
			a.Entries[0].OutTradeNo = tokens.OutTradeNo(tokens.IdempotencyKey(2, "demo", "rain", 1, "cash", tokens.StageFormal))
			return putAll(txn, a)
		},
		fail: map[string][]string{matchesTokens: {"act 2: entry 2_rain_1_formal out_trade_no " +
			tokens.OutTradeNo("2_demo_rain_1_cash_formal") + " does not derive from its key"}},
		ok: []string{noOverspend, exactlyOnce, doubleEntry, conservation, postings},
	}, {
		name: "malformed out_trade_no",
		corrupt: func(t *testing.T, txn storage.Txn) error {
			a := getAccount(ctx, t, txn, 4)
			a.Entries[0].OutTradeNo = "not-hex"
			return putAll(txn, a)
		},
		fail: map[string][]string{matchesTokens: {`act 4: entry 4_demo_rain_1_formal has a malformed out_trade_no "not-hex"`}},
		ok:   []string{noOverspend, exactlyOnce, doubleEntry, conservation, postings},
	}, {
		name: "same out_trade_no in two accounts",
		corrupt: func(t *testing.T, txn storage.Txn) error {
			a, b := getAccount(ctx, t, txn, 6), getAccount(ctx, t, txn, 7)
			b.Entries[0].OutTradeNo = a.Entries[0].TradeNo()
			return putAll(txn, b)
		},
		fail: map[string][]string{
			exactlyOnce:   {"out_trade_no " + grantOfOTN(6) + " booked twice"},
			matchesTokens: {"act 7: entry 7_demo_rain_1_formal out_trade_no " + grantOfOTN(6) + " does not derive from its key"},
		},
		ok: []string{noOverspend, doubleEntry, conservation, postings},
	}, {
		name: "booked under a lease that does not exist",
		corrupt: func(t *testing.T, txn storage.Txn) error {
			// Move user 8's booking from lease 2 to lease 9 in its detail's
			// place: a detail of its own, and lease 2's share taken back.
			h := &ledger.HotDetail{BudgetID: budgetID, Amount: 0, Count: 0, Leases: []ledger.LeaseUse{
				{LeaseID: openLease, Amount: -amountOf(8), Count: -1}, {LeaseID: 9, Amount: amountOf(8), Count: 1}}}
			return txn.Set(storage.HotKey(budgetID, txn.StartTS(), 7), ledger.MarshalHotDetail(nil, h))
		},
		fail: map[string][]string{conservation: {"budget demo/formal/cash: 80 booked under lease 9 which does not exist"}},
		ok:   []string{noOverspend, exactlyOnce, doubleEntry, postings, matchesTokens},
	}, {
		name: "folded into the budget but not its leases",
		corrupt: func(t *testing.T, txn storage.Txn) error {
			if err := foldAll(ctx, t, txn); err != nil {
				return err
			}
			l := getLease(ctx, t, txn, openLease)
			l.Booked, l.BookedCount = 0, 0
			return putAll(txn, l)
		},
		fail: map[string][]string{conservation: {"budget demo/formal/cash: folded 360 (8 grants) but its leases hold 150 (5) and lease 0 0 (0)"}},
		ok:   []string{noOverspend, exactlyOnce, doubleEntry, postings, matchesTokens},
	}, {
		name: "closed lease issued differs from folded booked",
		corrupt: func(t *testing.T, txn storage.Txn) error {
			if err := foldAll(ctx, t, txn); err != nil {
				return err
			}
			// Both consistent with the budget and each lease's own check:
			// only issued = booked is broken.
			b, l := getBudget(ctx, t, txn), getLease(ctx, t, txn, closedLease)
			l.Issued += 10
			b.Returned -= 10
			return putAll(txn, b, l)
		},
		fail: map[string][]string{conservation: {"budget demo/formal/cash lease 1: issued 160 (5 grants) but booked 150 (5 grants)"}},
		ok:   []string{noOverspend, exactlyOnce, doubleEntry, postings, matchesTokens},
	}, {
		name: "attribution without a redeemed entry",
		corrupt: func(t *testing.T, txn storage.Txn) error {
			g := grantOf(7, openLease)
			h := &ledger.HotDetail{BudgetID: budgetID}
			if err := h.Attribute(&g); err != nil {
				return err
			}
			return txn.Set(storage.HotKey(budgetID, txn.StartTS(), 7), ledger.MarshalHotDetail(nil, h))
		},
		fail: map[string][]string{conservation: {"0 bookings await attribution but budgets hold -1 grants under lease 0"}},
		ok:   []string{noOverspend, exactlyOnce, doubleEntry, postings, matchesTokens},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			kv := storagetest.TiKV(t, "")
			writeHealthy(t, kv)
			update(t, kv, func(txn storage.Txn) error { return tc.corrupt(t, txn) })
			r := run(t, kv)
			out := text(r)
			if r.OK {
				t.Fatalf("report OK after corruption:\n%s", out)
			}
			for name, want := range tc.fail {
				c := check(t, r, name)
				says := func(v string) bool {
					return !slices.ContainsFunc(want, func(w string) bool { return !strings.Contains(v, w) })
				}
				if c.OK || !slices.ContainsFunc(c.Violations, says) {
					t.Errorf("check %s: ok=%v violations %q, want one containing %q", name, c.OK, c.Violations, want)
				}
				if !strings.Contains(c.Detail, "violations; ") {
					t.Errorf("check %s: detail %q does not count its violations", name, c.Detail)
				}
				if !strings.Contains(out, "[FAIL] "+name) || !strings.Contains(out, want[0]) {
					t.Errorf("WriteText does not show FAIL for %s with %q:\n%s", name, want[0], out)
				}
			}
			for _, name := range tc.ok {
				if c := check(t, r, name); !c.OK {
					t.Errorf("check %s failed, want it unaffected: %q", name, c.Violations)
				}
			}
			if !strings.HasPrefix(out, "redrain reconcile: VIOLATIONS FOUND\n") {
				t.Errorf("WriteText verdict:\n%s", out)
			}
			var decoded struct {
				OK     bool `json:"ok"`
				Checks []struct {
					Name       string   `json:"name"`
					OK         bool     `json:"ok"`
					Violations []string `json:"violations"`
				} `json:"checks"`
			}
			if err := json.Unmarshal(r.JSON(), &decoded); err != nil {
				t.Fatalf("JSON() does not decode: %v: %s", err, r.JSON())
			}
			if decoded.OK {
				t.Errorf("JSON() ok = true: %s", r.JSON())
			}
			for _, c := range decoded.Checks {
				if _, failing := tc.fail[c.Name]; failing && (c.OK || len(c.Violations) == 0) {
					t.Errorf("JSON() check %s = %+v, want not ok with violations", c.Name, c)
				}
			}
			if t.Failed() {
				t.Logf("report:\n%s", out)
			}
		})
	}
}

func grantOfOTN(act uint64) string {
	g := grantOf(act, openLease)
	return g.OutTradeNo()
}

// TestViolationsShownBounded: a store with many violations lists a bounded
// number of examples but counts them all.
func TestViolationsShownBounded(t *testing.T) {
	t.Parallel()
	kv := storagetest.TiKV(t, "")
	writeHealthy(t, kv)
	const forged = 30
	update(t, kv, func(txn storage.Txn) error {
		for act := uint64(1000); act < 1000+forged; act++ {
			g := grantOf(act, openLease)
			a := &ledger.Account{ActID: act}
			if _, err := a.Book(&g, 3); err != nil {
				return err
			}
			a.Entries[0].OutTradeNo = tokens.OutTradeNo(fmt.Sprint("forged-", act))
			if err := putAll(txn, a); err != nil {
				return err
			}
		}
		return nil
	})
	r := run(t, kv)
	c := check(t, r, matchesTokens)
	if c.OK || len(c.Violations) != 20 || !strings.HasPrefix(c.Detail, fmt.Sprintf("%d violations; ", forged)) {
		t.Errorf("check %s: %d violations listed, detail %q; want 20 listed of %d", c.Name, len(c.Violations), c.Detail, forged)
	}
}

// TestConsistentSnapshot audits a store while writers change it the way a
// live node does (a lease taken, grants booked under it, the lease closed,
// each in one transaction): every audit must pass, because the store is
// consistent after every commit.
func TestConsistentSnapshot(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const liveAmount = 7
	kv := storagetest.TiKV(t, "")
	writeHealthy(t, kv)
	var stop atomic.Bool
	var wg sync.WaitGroup
	var writes atomic.Int64
	errs := make(chan error, 1)
	wg.Go(func() {
		for act := uint64(10_000); !stop.Load(); act++ {
			// Take a lease.
			var lease uint64
			err := kv.Update(ctx, func(txn storage.Txn) error {
				b, err := readBudget(ctx, txn)
				if err != nil {
					return err
				}
				l := b.TakeLease(1_000, "n-live", 2)
				lease = l.ID
				b.Version++
				return putAll(txn, b, l)
			})
			if err == nil {
				// Book one grant under it.
				err = kv.Update(ctx, func(txn storage.Txn) error {
					g := grantOf(act, lease)
					g.Amount = liveAmount
					a := &ledger.Account{ActID: act}
					if _, err := a.Book(&g, 3); err != nil {
						return err
					}
					h := &ledger.HotDetail{}
					if err := h.Add(&g); err != nil {
						return err
					}
					if err := txn.Set(storage.HotKey(budgetID, txn.StartTS(), 0), ledger.MarshalHotDetail(nil, h)); err != nil {
						return err
					}
					return putAll(txn, a)
				})
			}
			if err == nil {
				// Close it with what was booked.
				err = kv.Update(ctx, func(txn storage.Txn) error {
					b, err := readBudget(ctx, txn)
					if err != nil {
						return err
					}
					raw, err := storage.Get(ctx, txn, storage.LeaseKey(budgetID, lease))
					if err != nil {
						return err
					}
					l, err := ledger.UnmarshalLease(raw)
					if err != nil {
						return err
					}
					if err := b.CloseLease(l, liveAmount, 1); err != nil {
						return err
					}
					b.Version++
					return putAll(txn, b, l)
				})
			}
			if err != nil {
				errs <- err
				return
			}
			writes.Add(1)
		}
	})
	defer func() { stop.Store(true); wg.Wait() }()
	audits := 0
	for deadline := time.Now().Add(1500 * time.Millisecond); time.Now().Before(deadline) || writes.Load() < 20; audits++ {
		select {
		case err := <-errs:
			t.Fatalf("writer: %v", err)
		default:
		}
		if r := run(t, kv); !r.OK {
			t.Fatalf("audit %d during %d writes: violations in a consistent store:\n%s", audits, writes.Load(), text(r))
		}
	}
	t.Logf("%d audits during %d lease cycles", audits, writes.Load())
}

// readBudget is getBudget for goroutines other than the test's.
func readBudget(ctx context.Context, txn storage.Txn) (*ledger.Budget, error) {
	raw, err := storage.Get(ctx, txn, storage.BudgetKey(budgetID))
	if err != nil {
		return nil, err
	}
	return ledger.UnmarshalBudget(raw)
}

// TestLiveAuditBookingBehind: while booking lags, a closed lease has booked
// less than it issued. The live audit counts that as behind; the audit of
// a drained store fails it; booking more than issued fails both.
func TestLiveAuditBookingBehind(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	kv := storagetest.TiKV(t, "")
	writeHealthy(t, kv)
	// The closed lease issued one more grant of 10 than booking has booked
	// so far (the budget consistent with it).
	update(t, kv, func(txn storage.Txn) error {
		b, l := getBudget(ctx, t, txn), getLease(ctx, t, txn, closedLease)
		l.Issued += 10
		l.IssuedCount++
		b.Returned -= 10
		return putAll(txn, b, l)
	})
	if r := run(t, kv); r.OK || check(t, r, conservation).OK {
		t.Fatalf("the audit of a drained store passed a lease issued beyond what was booked:\n%s", text(r))
	}
	live, err := reconcile.RunLive(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	if !live.OK || live.Behind != 10 || live.BehindCount != 1 {
		t.Fatalf("live audit: ok %v, behind %d (%d grants), want ok, 10 (1):\n%s", live.OK, live.Behind, live.BehindCount, text(live))
	}
	// Booked beyond what was issued is never booking lagging.
	update(t, kv, func(txn storage.Txn) error {
		b, l := getBudget(ctx, t, txn), getLease(ctx, t, txn, closedLease)
		l.Issued -= 30
		l.IssuedCount--
		b.Returned += 30
		return putAll(txn, b, l)
	})
	if live, err = reconcile.RunLive(ctx, kv); err != nil || live.OK {
		t.Fatalf("live audit passed a lease that booked more than it issued (%v):\n%s", err, text(live))
	}
}
