package actors_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"redrain/actors"
	"redrain/ledger"
	"redrain/storage"
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
				l, err := env.budgets.TakeLease(f.budget, want, "node-a", uint64(w))
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
		if l.Amount <= 0 || l.Amount > want || l.BudgetID != f.budget || l.Closed {
			t.Fatalf("lease %+v", l)
		}
		sum += l.Amount
	}
	if sum != total {
		t.Fatalf("leases sum to %d, want the whole total %d", sum, total)
	}
	bud := budget(t, f.budget)
	if bud.Leased != total || bud.Remaining() != 0 || bud.NextLease != uint64(len(leases))+1 {
		t.Fatalf("budget after leasing = %+v, want leased %d, next lease %d", bud, total, len(leases)+1)
	}
	open, err := actors.OpenLeases(context.Background(), env.tikv, f.budget)
	if err != nil || len(open) != len(leases) {
		t.Fatalf("OpenLeases = %d leases, %v, want %d", len(open), err, len(leases))
	}
	if l, err := env.budgets.TakeLease(f.budget, 1, "node-a", 1); l != nil || err != nil {
		t.Fatalf("TakeLease on an exhausted budget = %+v, %v, want nil, nil", l, err)
	}

	// Close one lease with part of it issued: the rest returns.
	l := leases[0]
	issued := l.Amount / 3
	if err := env.budgets.CloseLease(f.budget, l.ID, issued, 2); err != nil {
		t.Fatalf("CloseLease: %v", err)
	}
	after := budget(t, f.budget)
	if got := after.Remaining() - bud.Remaining(); got != l.Amount-issued {
		t.Fatalf("Remaining grew by %d, want %d", got, l.Amount-issued)
	}
	closed, err := ledger.UnmarshalLease(get(t, storage.LeaseKey(f.budget, l.ID)))
	if err != nil || !closed.Closed || closed.Issued != issued || closed.IssuedCount != 2 {
		t.Fatalf("closed lease = %+v, %v", closed, err)
	}

	// A retried close (even one with other figures) is a no-op.
	budgetRaw, leaseRaw := get(t, storage.BudgetKey(f.budget)), get(t, storage.LeaseKey(f.budget, l.ID))
	if err := env.budgets.CloseLease(f.budget, l.ID, 0, 0); err != nil {
		t.Fatalf("second CloseLease: %v", err)
	}
	if string(get(t, storage.BudgetKey(f.budget))) != string(budgetRaw) ||
		string(get(t, storage.LeaseKey(f.budget, l.ID))) != string(leaseRaw) {
		t.Fatal("second CloseLease changed the budget or the lease")
	}

	// Closing with more issued than leased is refused and changes nothing.
	l2 := leases[1]
	lease2Raw := get(t, storage.LeaseKey(f.budget, l2.ID))
	err = env.budgets.CloseLease(f.budget, l2.ID, l2.Amount+1, 1)
	if err == nil {
		t.Fatal("CloseLease with issued > amount succeeded")
	}
	if !errors.Is(err, ledger.ErrInvariant) {
		t.Fatalf("CloseLease with issued > amount: %v, want ErrInvariant", err)
	}
	if string(get(t, storage.BudgetKey(f.budget))) != string(budgetRaw) ||
		string(get(t, storage.LeaseKey(f.budget, l2.ID))) != string(lease2Raw) {
		t.Fatal("refused CloseLease changed the budget or the lease")
	}
	if err := env.budgets.CloseLease(f.budget, 1<<40, 0, 0); err == nil {
		t.Fatal("CloseLease of a lease never taken succeeded")
	}

	// What was returned can be leased again, under a new id.
	again, err := env.budgets.TakeLease(f.budget, total, "node-b", 1)
	if err != nil || again == nil || again.Amount != l.Amount-issued || ids[again.ID] {
		t.Fatalf("TakeLease after a return = %+v, %v, want %d under a new id", again, err, l.Amount-issued)
	}
	// Ensuring an existing budget (a restarted node) leaves it and its
	// funding as they are.
	beforeEnsure, fundRaw := get(t, storage.BudgetKey(f.budget)), get(t, storage.FundKey(string(f.asset)))
	created, err := actors.EnsureBudget(context.Background(), env.tikv,
		&ledger.Budget{ID: f.budget, Asset: f.asset, Total: 5 * total})
	if err != nil || created {
		t.Fatalf("EnsureBudget of an existing budget = %v, %v, want false, nil", created, err)
	}
	if string(get(t, storage.BudgetKey(f.budget))) != string(beforeEnsure) ||
		string(get(t, storage.FundKey(string(f.asset)))) != string(fundRaw) {
		t.Fatal("EnsureBudget changed an existing budget or its funding")
	}
	final := budget(t, f.budget)
	// Budget conservation: total = remaining + open lease amounts + closed issued.
	var out int64
	open, err = actors.OpenLeases(context.Background(), env.tikv, f.budget)
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
