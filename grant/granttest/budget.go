// Package granttest holds test doubles of the grant path's collaborators
// that keep the real money rules: a budget in memory behind the lease
// interface, without a grain or TiKV.
package granttest

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"redrain/ledger"
)

// Budget is a grant.LeaseSource over one in-memory ledger.Budget: the real
// lease rules, without a grain or TiKV. Every budget id maps to it.
type Budget struct {
	mu     sync.Mutex
	b      ledger.Budget
	leases map[uint64]*ledger.Lease
	fail   bool
	// Now is the grain's clock of lease expiries; nil means time.Now.
	Now func() time.Time
	// Renewals counts RenewLease calls.
	Renewals int
}

func (m *Budget) now() int64 {
	if m.Now != nil {
		return m.Now().UnixMilli()
	}
	return time.Now().UnixMilli()
}

// NewBudget returns a cash budget of total.
func NewBudget(total int64) *Budget {
	return &Budget{b: ledger.Budget{ID: "b", Asset: ledger.AssetCash, Total: total}, leases: map[uint64]*ledger.Lease{}}
}

// SetFailing makes TakeLease fail (an unreachable budget grain) or work again.
func (m *Budget) SetFailing(fail bool) {
	m.mu.Lock()
	m.fail = fail
	m.mu.Unlock()
}

// TakeLease takes a lease of up to want.
func (m *Budget) TakeLease(id string, want int64, owner string, inc uint64) (*ledger.Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail {
		return nil, errors.New("budget grain unreachable")
	}
	l := m.b.TakeLease(want, owner, inc)
	if l != nil {
		l.Expires = m.now() + ledger.LeaseTTL.Milliseconds()
		m.leases[l.ID] = l
		c := *l
		return &c, nil
	}
	return nil, nil
}

// RenewLease extends an open lease as the budget grain does.
func (m *Budget) RenewLease(id string, leaseID uint64, owner string, inc uint64) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.Renewals++
	if m.fail {
		return 0, errors.New("budget grain unreachable")
	}
	l := m.leases[leaseID]
	if l == nil {
		return 0, fmt.Errorf("%w: no lease %d", ledger.ErrInvariant, leaseID)
	}
	if err := l.Renew(owner, inc, m.now(), ledger.LeaseTTL.Milliseconds()); err != nil {
		return 0, err
	}
	return l.Expires, nil
}

// Expire makes lease id expired now, as if its holder had stopped renewing
// it a while ago.
func (m *Budget) Expire(leaseID uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l := m.leases[leaseID]; l != nil {
		l.Expires = m.now() - 1
	}
}

// CloseLease closes a lease with what was issued under it.
func (m *Budget) CloseLease(id string, leaseID uint64, issued, count int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.b.CloseLease(m.leases[leaseID], issued, count)
}

// OpenLeasesOf lists the open leases of owner's incarnation.
func (m *Budget) OpenLeasesOf(id, owner string, inc uint64) ([]*ledger.Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*ledger.Lease
	for _, l := range m.leases {
		if !l.Closed && l.Owner == owner && l.Incarnation == inc {
			out = append(out, l)
		}
	}
	return out, nil
}

// Check verifies the budget's invariants.
func (m *Budget) Check() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.b.Check()
}

// Remaining is what the budget can still lease out.
func (m *Budget) Remaining() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.b.Remaining()
}

// Leases returns copies of every lease taken.
func (m *Budget) Leases() map[uint64]ledger.Lease {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[uint64]ledger.Lease, len(m.leases))
	for id, l := range m.leases {
		out[id] = *l
	}
	return out
}
