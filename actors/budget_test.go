package actors_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"redrain/actors"
	"redrain/ledger"
	"redrain/reconcile"
	"redrain/storage"
	"redrain/storage/storagetest"
)

// TestBudgetLeases: concurrent TakeLease calls never lease more than the
// budget's total, and closing leases returns exactly their unspent part.
func TestBudgetLeases(t *testing.T) {
	const total, want, workers = 1000, 37, 16
	f := newFixture(t, total)

	var mu sync.Mutex
	var leases []*ledger.Lease
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for {
				l, err := env.budgets.TakeLease(f.Budget, want, "node-a", uint64(w))
				if err != nil {
					errs <- err
					return
				}
				if l == nil {
					return // exhausted
				}
				mu.Lock()
				leases = append(leases, l)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("TakeLease: %v", err)
	}

	ids := map[uint64]bool{}
	var sum int64
	for _, l := range leases {
		if l.ID < 1 || ids[l.ID] {
			t.Fatalf("lease id %d: zero or repeated", l.ID)
		}
		ids[l.ID] = true
		if l.Amount <= 0 || l.Amount > want || l.BudgetID != f.Budget || l.Closed {
			t.Fatalf("lease %+v", l)
		}
		sum += l.Amount
	}
	if sum != total {
		t.Fatalf("leases sum to %d, want the whole total %d", sum, total)
	}
	bud := budget(t, f.Budget)
	if bud.Leased != total || bud.Remaining() != 0 || bud.NextLease != uint64(len(leases))+1 {
		t.Fatalf("budget after leasing = %+v, want leased %d, next lease %d", bud, total, len(leases)+1)
	}
	open, err := actors.OpenLeases(context.Background(), env.tikv, f.Budget)
	if err != nil || len(open) != len(leases) {
		t.Fatalf("OpenLeases = %d leases, %v, want %d", len(open), err, len(leases))
	}
	if l, err := env.budgets.TakeLease(f.Budget, 1, "node-a", 1); l != nil || err != nil {
		t.Fatalf("TakeLease on an exhausted budget = %+v, %v, want nil, nil", l, err)
	}

	// Close one lease with part of it issued: the rest returns.
	l := leases[0]
	issued := l.Amount / 3
	if err := env.budgets.CloseLease(f.Budget, l.ID, issued, 2); err != nil {
		t.Fatalf("CloseLease: %v", err)
	}
	after := budget(t, f.Budget)
	if got := after.Remaining() - bud.Remaining(); got != l.Amount-issued {
		t.Fatalf("Remaining grew by %d, want %d", got, l.Amount-issued)
	}
	closed, err := ledger.UnmarshalLease(get(t, storage.LeaseKey(f.Budget, l.ID)))
	if err != nil || !closed.Closed || closed.Issued != issued || closed.IssuedCount != 2 {
		t.Fatalf("closed lease = %+v, %v", closed, err)
	}

	// A retried close (even one with other figures) is a no-op.
	budgetRaw, leaseRaw := get(t, storage.BudgetKey(f.Budget)), get(t, storage.LeaseKey(f.Budget, l.ID))
	if err := env.budgets.CloseLease(f.Budget, l.ID, 0, 0); err != nil {
		t.Fatalf("second CloseLease: %v", err)
	}
	if string(get(t, storage.BudgetKey(f.Budget))) != string(budgetRaw) ||
		string(get(t, storage.LeaseKey(f.Budget, l.ID))) != string(leaseRaw) {
		t.Fatal("second CloseLease changed the budget or the lease")
	}

	// Closing with more issued than leased is refused and changes nothing.
	l2 := leases[1]
	lease2Raw := get(t, storage.LeaseKey(f.Budget, l2.ID))
	err = env.budgets.CloseLease(f.Budget, l2.ID, l2.Amount+1, 1)
	if err == nil {
		t.Fatal("CloseLease with issued > amount succeeded")
	}
	if !errors.Is(err, ledger.ErrInvariant) {
		t.Fatalf("CloseLease with issued > amount: %v, want ErrInvariant", err)
	}
	if string(get(t, storage.BudgetKey(f.Budget))) != string(budgetRaw) ||
		string(get(t, storage.LeaseKey(f.Budget, l2.ID))) != string(lease2Raw) {
		t.Fatal("refused CloseLease changed the budget or the lease")
	}
	if err := env.budgets.CloseLease(f.Budget, 1<<40, 0, 0); err == nil {
		t.Fatal("CloseLease of a lease never taken succeeded")
	}

	// What was returned can be leased again, under a new id.
	again, err := env.budgets.TakeLease(f.Budget, total, "node-b", 1)
	if err != nil || again == nil || again.Amount != l.Amount-issued || ids[again.ID] {
		t.Fatalf("TakeLease after a return = %+v, %v, want %d under a new id", again, err, l.Amount-issued)
	}
	// Ensuring an existing budget (a restarted node) leaves it and its
	// funding as they are.
	beforeEnsure, fundRaw := get(t, storage.BudgetKey(f.Budget)), get(t, storage.FundKey(string(f.Asset)))
	created, err := actors.EnsureBudget(context.Background(), env.tikv,
		&ledger.Budget{ID: f.Budget, Asset: f.Asset, Total: 5 * total})
	if err != nil || created {
		t.Fatalf("EnsureBudget of an existing budget = %v, %v, want false, nil", created, err)
	}
	if string(get(t, storage.BudgetKey(f.Budget))) != string(beforeEnsure) ||
		string(get(t, storage.FundKey(string(f.Asset)))) != string(fundRaw) {
		t.Fatal("EnsureBudget changed an existing budget or its funding")
	}
	final := budget(t, f.Budget)
	// Budget conservation: total = remaining + open lease amounts + closed issued.
	var out int64
	open, err = actors.OpenLeases(context.Background(), env.tikv, f.Budget)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range open {
		out += o.Amount
	}
	if got := final.Remaining() + out + issued; got != total {
		t.Fatalf("remaining %d + open %d + issued %d = %d, want %d", final.Remaining(), out, issued, got, total)
	}
}

// TestTakeLeaseBudgetFraction: a lease taken through the grain carries the
// budget's outstanding amount and total right after the take, for draw
// thresholds; the stored lease does not.
func TestTakeLeaseBudgetFraction(t *testing.T) {
	f := newFixture(t, 1000)
	for i, want := range []struct{ amount, out int64 }{{300, 300}, {300, 600}, {300, 900}, {100, 1000}} {
		l := f.Lease(f.Budget, 300)
		if l.Amount != want.amount || l.BudgetOut != want.out || l.BudgetTotal != 1000 {
			t.Fatalf("lease %d: %+v, want amount %d, budget out %d of 1000", i, l, want.amount, want.out)
		}
		stored, err := ledger.UnmarshalLease(get(t, storage.LeaseKey(f.Budget, l.ID)))
		if err != nil || stored.BudgetOut != 0 || stored.BudgetTotal != 0 || stored.Amount != l.Amount {
			t.Fatalf("stored lease %+v, %v: want the lease without budget figures", stored, err)
		}
	}
	// Returning part of a lease lowers what is out.
	if err := env.budgets.CloseLease(f.Budget, 1, 100, 1); err != nil {
		t.Fatal(err)
	}
	if l := f.Lease(f.Budget, 50); l.BudgetOut != 850 || l.BudgetTotal != 1000 {
		t.Fatalf("lease after a return: %+v, want budget out 850 of 1000", l)
	}
}

// TestSetBudgetTotal: configuration creates, raises and lowers a budget's
// total with balancing funding postings; lowering clamps at what leases
// hold; a wrong asset or a bad total is refused and changes nothing. The
// audit passes after every call.
func TestSetBudgetTotal(t *testing.T) {
	ctx := context.Background()
	kv := storagetest.TiKV(t, "")
	audit := func(step string) {
		t.Helper()
		r, err := reconcile.Run(ctx, kv)
		if err != nil || !r.OK {
			var b strings.Builder
			if r != nil {
				r.WriteText(&b)
			}
			t.Fatalf("%s: audit %v:\n%s", step, err, b.String())
		}
	}
	read := func() *ledger.Budget {
		t.Helper()
		var b *ledger.Budget
		err := kv.Update(ctx, func(txn storage.Txn) error {
			raw, err := storage.Get(ctx, txn, storage.BudgetKey("spring/cash"))
			if err != nil || raw == nil {
				return fmt.Errorf("budget: %v (found %v)", err, raw != nil)
			}
			b, err = ledger.UnmarshalBudget(raw)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	fund := func() int64 {
		t.Helper()
		var bal int64
		err := kv.Update(ctx, func(txn storage.Txn) error {
			raw, err := storage.Get(ctx, txn, storage.FundKey("cash"))
			if len(raw) == 8 {
				bal = int64(binary.BigEndian.Uint64(raw))
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return bal
	}
	for _, step := range []struct {
		name    string
		total   int64
		applied int64
		prepare func(b *ledger.Budget) // changes the stored budget first (leases)
	}{
		{name: "create", total: 10_000, applied: 10_000},
		{name: "same again", total: 10_000, applied: 10_000},
		{name: "raise", total: 25_000, applied: 25_000},
		{name: "lower", total: 8_000, applied: 8_000},
		{name: "lower below what leases hold", total: 1_000, applied: 6_000, prepare: func(b *ledger.Budget) {
			b.TakeLease(4_000, "n", 1)
			b.TakeLease(2_000, "n", 1)
		}},
		{name: "zero", total: 0, applied: 6_000},
		{name: "raise after clamping", total: 7_000, applied: 7_000},
	} {
		if step.prepare != nil {
			err := kv.Update(ctx, func(txn storage.Txn) error {
				b := read()
				next := b.NextLease
				step.prepare(b)
				b.Version++
				for id := max(next, 1); id < b.NextLease; id++ {
					l := &ledger.Lease{BudgetID: b.ID, ID: id, Amount: map[uint64]int64{1: 4_000, 2: 2_000}[id], Owner: "n", Incarnation: 1}
					if err := txn.Set(storage.LeaseKey(b.ID, id), ledger.MarshalLease(nil, l)); err != nil {
						return err
					}
				}
				return txn.Set(storage.BudgetKey(b.ID), ledger.MarshalBudget(nil, b))
			})
			if err != nil {
				t.Fatalf("%s: %v", step.name, err)
			}
		}
		applied, err := actors.SetBudgetTotal(ctx, kv, "spring/cash", ledger.AssetCash, step.total)
		if err != nil || applied != step.applied {
			t.Fatalf("%s: SetBudgetTotal(%d) = %d, %v, want %d", step.name, step.total, applied, err, step.applied)
		}
		if b := read(); b.Total != step.applied || b.Asset != ledger.AssetCash {
			t.Fatalf("%s: budget %+v, want total %d", step.name, b, step.applied)
		}
		if got := fund(); got != -step.applied {
			t.Fatalf("%s: funding account %d, want %d", step.name, got, -step.applied)
		}
		audit(step.name)
	}

	before, fundBefore := ledger.MarshalBudget(nil, read()), fund()
	for _, bad := range []struct {
		name  string
		id    string
		asset ledger.Asset
		total int64
	}{
		{"other asset", "spring/cash", "coin", 9_000},
		{"negative total", "spring/cash", ledger.AssetCash, -1},
		{"empty id", "", ledger.AssetCash, 1},
		{"empty asset", "spring/cash", "", 1},
	} {
		if applied, err := actors.SetBudgetTotal(ctx, kv, bad.id, bad.asset, bad.total); !errors.Is(err, ledger.ErrInvariant) || applied != 0 {
			t.Errorf("%s: SetBudgetTotal = %d, %v, want 0, ErrInvariant", bad.name, applied, err)
		}
	}
	if !bytes.Equal(ledger.MarshalBudget(nil, read()), before) || fund() != fundBefore {
		t.Fatal("a refused SetBudgetTotal changed the budget or its funding")
	}

	// Writers racing on the budget (configuration pushed by several nodes)
	// retry their conflicts; the last one wins and the money adds up.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			if _, err := actors.SetBudgetTotal(ctx, kv, "spring/cash", ledger.AssetCash, int64(10_000+i)); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent SetBudgetTotal: %v", err)
	}
	if b := read(); b.Total < 10_000 || b.Total > 10_007 || fund() != -b.Total {
		t.Fatalf("after concurrent sets: budget %+v, funding %d", b, fund())
	}
	audit("concurrent sets")
}

// TestLeaseRenewal: a lease taken through the grain expires a TTL after
// the take; its holder's renewal moves the expiry on; the grain refuses to
// renew it for another holder, once it expired, or once it is closed.
func TestLeaseRenewal(t *testing.T) {
	f := newFixture(t, 1000)
	before := time.Now().UnixMilli()
	l, err := env.budgets.TakeLease(f.Budget, 100, "node-r", 7)
	if err != nil || l == nil {
		t.Fatal(l, err)
	}
	ttl := ledger.LeaseTTL.Milliseconds()
	if l.Expires < before+ttl || l.Expires > time.Now().UnixMilli()+ttl {
		t.Fatalf("lease expires at %d, want a TTL (%d ms) after the take at %d", l.Expires, ttl, before)
	}
	time.Sleep(5 * time.Millisecond)
	exp, err := env.budgets.RenewLease(f.Budget, l.ID, "node-r", 7)
	if err != nil || exp <= l.Expires {
		t.Fatalf("renewal = %d, %v; want an expiry after %d", exp, err, l.Expires)
	}
	stored, err := ledger.UnmarshalLease(get(t, storage.LeaseKey(f.Budget, l.ID)))
	if err != nil || stored.Expires != exp {
		t.Fatalf("stored lease %+v, %v: want expiry %d", stored, err, exp)
	}
	for _, c := range []struct {
		name  string
		owner string
		inc   uint64
	}{{"another node", "node-s", 7}, {"another incarnation", "node-r", 8}} {
		if _, err := env.budgets.RenewLease(f.Budget, l.ID, c.owner, c.inc); !errors.Is(err, ledger.ErrLeaseExpired) {
			t.Fatalf("renewal by %s = %v, want ErrLeaseExpired", c.name, err)
		}
	}
	// Expired in the store (its holder stopped renewing long ago).
	stored.Expires = time.Now().UnixMilli() - 1
	put(t, storage.LeaseKey(f.Budget, l.ID), ledger.MarshalLease(nil, stored))
	if _, err := env.budgets.RenewLease(f.Budget, l.ID, "node-r", 7); !errors.Is(err, ledger.ErrLeaseExpired) {
		t.Fatalf("renewal of an expired lease = %v, want ErrLeaseExpired", err)
	}
	if err := env.budgets.CloseLease(f.Budget, l.ID, 0, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := env.budgets.RenewLease(f.Budget, l.ID, "node-r", 7); !errors.Is(err, ledger.ErrLeaseExpired) {
		t.Fatalf("renewal of a closed lease = %v, want ErrLeaseExpired", err)
	}
}
