// Package bookingtest holds what tests of booking and of the budget
// accounts share: a fixture (its own asset, budgets and users in a store),
// grants of that fixture, and an audit of the fixture's money against the
// grants a test expects to be booked. It is for tests only.
package bookingtest

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"redrain/actors"
	"redrain/booking"
	"redrain/ledger"
	"redrain/storage"
	"redrain/tokens"
)

// fixtureSeq numbers fixtures; actSeq hands out act_ids no two fixtures of
// a test binary share.
var fixtureSeq, actSeq atomic.Uint64

// Fixture is one test's slice of a store: its own asset, budgets and users,
// so that the money of one test never mixes with another's.
type Fixture struct {
	T      testing.TB
	KV     *storage.TiKV
	Parts  int32 // the grant topic's partition count accounts are read with
	Asset  ledger.Asset
	Budget string // the first budget; grants use it unless told otherwise
	Users  []uint64
	// TakeLease takes a lease of a budget. When nil, Lease only numbers
	// leases: booking never reads a lease record, it books the lease id a
	// grant carries.
	TakeLease func(budgetID string, want int64) (*ledger.Lease, error)

	totals map[string]int64
	leases map[string]uint64 // numbered leases per budget
}

// New creates a fixture in kv with one budget of total.
func New(t testing.TB, kv *storage.TiKV, parts int32, total int64) *Fixture {
	t.Helper()
	n := fixtureSeq.Add(1)
	f := &Fixture{T: t, KV: kv, Parts: parts, Asset: ledger.CoinAsset(fmt.Sprintf("asset%d", n)),
		totals: map[string]int64{}, leases: map[string]uint64{}}
	f.Budget = f.AddBudget(total)
	return f
}

// AddBudget creates one more budget of the fixture's asset.
func (f *Fixture) AddBudget(total int64) string {
	f.T.Helper()
	id := fmt.Sprintf("budget%d-%d", fixtureSeq.Load(), len(f.totals))
	created, err := actors.EnsureBudget(context.Background(), f.KV, &ledger.Budget{ID: id, Asset: f.Asset, Total: total})
	if err != nil || !created {
		f.T.Fatalf("EnsureBudget(%s) = %v, %v, want created", id, created, err)
	}
	f.totals[id] = total
	return id
}

// Lease takes (or numbers, see TakeLease) a lease of want from a budget.
func (f *Fixture) Lease(budgetID string, want int64) *ledger.Lease {
	f.T.Helper()
	if f.TakeLease == nil {
		f.leases[budgetID]++
		return &ledger.Lease{BudgetID: budgetID, ID: f.leases[budgetID], Amount: want}
	}
	l, err := f.TakeLease(budgetID, want)
	if err != nil || l == nil {
		f.T.Fatalf("TakeLease(%s, %d) = %v, %v", budgetID, want, l, err)
	}
	return l
}

// User allocates a fresh act_id.
func (f *Fixture) User() uint64 {
	id := 1<<20 + actSeq.Add(1)
	f.Users = append(f.Users, id)
	return id
}

// Grant is a grant of the fixture's asset from its first budget (or the
// lease's budget), under lease (nil: lease 0, as redeem books).
func (f *Fixture) Grant(actID, rain uint64, lease *ledger.Lease, amount int64) ledger.Grant {
	g := ledger.Grant{
		AppID: 7, ActID: actID, UserID: fmt.Sprintf("user-%d", actID),
		ActivityID: "activity", SceneID: "scene", RainID: rain, Stage: tokens.StageFormal,
		AwardType: "cash", Asset: f.Asset, Amount: amount,
		BudgetID: f.Budget, OpenTime: 1_700_000_000_000, IssuedAt: 1_700_000_000_123,
	}
	if lease != nil {
		g.BudgetID, g.LeaseID = lease.BudgetID, lease.ID
	}
	return g
}

// AmountOf spreads amounts over 1..500 fen, reproducibly.
func AmountOf(actID, rain uint64) int64 { return int64(1 + (actID*31+rain*17)%500) }

// Accounts reads the accounts of ids as the store holds them, in one
// snapshot.
func (f *Fixture) Accounts(ids []uint64) map[uint64]*ledger.Account {
	f.T.Helper()
	var out map[uint64]*ledger.Account
	err := f.KV.View(func(txn storage.Txn) error {
		var err error
		out, err = booking.ReadAccounts(context.Background(), txn, f.Parts, ids)
		return err
	})
	if err != nil {
		f.T.Fatalf("ReadAccounts(%d ids): %v", len(ids), err)
	}
	return out
}

// Account reads one user's account; nil when it has none.
func (f *Fixture) Account(actID uint64) *ledger.Account {
	f.T.Helper()
	return f.Accounts([]uint64{actID})[actID]
}

// Audit checks the fixture's money against the grants the test expects to
// be booked (one per limit key, the first one offered): every account
// reads back and holds exactly its expected entries, balances equal the
// sum of entries, booked-per-lease equals the grants per lease, and
// funding, the budgets' unbooked part and the users sum to zero in the
// fixture's asset.
func (f *Fixture) Audit(expected []ledger.Grant) {
	t := f.T
	t.Helper()
	byUser := map[uint64]map[string]ledger.Grant{}
	type leaseKey struct {
		budget string
		lease  uint64
	}
	perLease := map[leaseKey]ledger.LeaseUse{}
	for _, g := range expected {
		if byUser[g.ActID] == nil {
			byUser[g.ActID] = map[string]ledger.Grant{}
		}
		if _, dup := byUser[g.ActID][g.LimitKey()]; dup {
			t.Fatalf("audit: expected grants repeat limit key %s", g.LimitKey())
		}
		byUser[g.ActID][g.LimitKey()] = g
		u := perLease[leaseKey{g.BudgetID, g.LeaseID}]
		u.Amount += g.Amount
		u.Count++
		perLease[leaseKey{g.BudgetID, g.LeaseID}] = u
	}
	accounts := f.Accounts(f.Users)
	var users int64
	for _, actID := range f.Users {
		a := accounts[actID]
		want := byUser[actID]
		if a == nil {
			if len(want) > 0 {
				t.Fatalf("audit: user %d has no account, want %d entries", actID, len(want))
			}
			continue
		}
		if err := a.Check(); err != nil {
			t.Fatalf("audit: user %d: %v", actID, err)
		}
		if a.ActID != actID {
			t.Fatalf("audit: account of %d says act %d", actID, a.ActID)
		}
		if len(a.Entries) != len(want) {
			t.Fatalf("audit: user %d has %d entries, want %d", actID, len(a.Entries), len(want))
		}
		var sum int64
		for _, e := range a.Entries {
			g, ok := want[e.LimitKey]
			if !ok {
				t.Fatalf("audit: user %d has unexpected entry %+v", actID, e)
			}
			if e.Amount != g.Amount || e.AwardType != g.AwardType || e.Asset != g.Asset ||
				e.LeaseID != g.LeaseID || e.TradeNo() != g.OutTradeNo() {
				t.Fatalf("audit: user %d entry %+v, want grant %+v", actID, e, g)
			}
			if e.Asset == f.Asset {
				sum += e.Amount
			}
		}
		if got := a.Balance(f.Asset); got != sum {
			t.Fatalf("audit: user %d balance %d, entries sum to %d", actID, got, sum)
		}
		users += sum
	}
	var booked int64
	for id, total := range f.totals {
		byLease := BookedByLease(t, f.KV, id)
		for lease, use := range byLease {
			want := perLease[leaseKey{id, lease}]
			if use.Amount != want.Amount || use.Count != want.Count {
				t.Fatalf("audit: budget %s lease %d booked %d in %d grants, want %d in %d",
					id, lease, use.Amount, use.Count, want.Amount, want.Count)
			}
			booked += use.Amount
		}
		for k, want := range perLease {
			if k.budget == id && byLease[k.lease] != (ledger.LeaseUse{LeaseID: k.lease, Amount: want.Amount, Count: want.Count}) {
				t.Fatalf("audit: budget %s lease %d booked %+v, want %+v", id, k.lease, byLease[k.lease], want)
			}
		}
		bud := Budget(t, f.KV, id)
		if bud.Total != total || bud.Asset != f.Asset {
			t.Fatalf("audit: budget %s = %+v, want total %d of %s", id, bud, total, f.Asset)
		}
		booked -= total // the budget account holds total - booked; summed below
	}
	fundRaw := Get(t, f.KV, storage.FundKey(string(f.Asset)))
	if len(fundRaw) != 8 {
		t.Fatalf("audit: funding of %s = %x", f.Asset, fundRaw)
	}
	funding := int64(binary.BigEndian.Uint64(fundRaw))
	// booked now holds -(Σ budget accounts) = Σ booked - Σ total.
	if sum := funding - booked + users; sum != 0 {
		t.Fatalf("audit: funding %d + budgets %d + users %d = %d, want 0", funding, -booked, users, sum)
	}
}

// Get reads one key in a fresh snapshot; nil when missing.
func Get(t testing.TB, kv *storage.TiKV, key []byte) []byte {
	t.Helper()
	var v []byte
	err := kv.View(func(txn storage.Txn) error {
		var err error
		v, err = storage.Get(context.Background(), txn, key)
		return err
	})
	if err != nil {
		t.Fatalf("get %q: %v", key, err)
	}
	return v
}

// Put writes one key unconditionally (a writer behind booking's back).
func Put(t testing.TB, kv *storage.TiKV, key, value []byte) {
	t.Helper()
	if err := kv.Update(context.Background(), func(txn storage.Txn) error { return txn.Set(key, value) }); err != nil {
		t.Fatalf("put %q: %v", key, err)
	}
}

// Snapshot returns every key of the store under prefix with its value.
func Snapshot(t testing.TB, kv *storage.TiKV, prefix string) map[string]string {
	t.Helper()
	out := map[string]string{}
	p := []byte(prefix)
	err := kv.Scan(context.Background(), p, storage.PrefixEnd(p), func(k, v []byte) (bool, error) {
		out[string(k)] = string(v)
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// HotDetails counts a budget's unfolded hot details.
func HotDetails(t testing.TB, kv *storage.TiKV, budgetID string) int {
	t.Helper()
	return len(Snapshot(t, kv, string(storage.HotPrefix(budgetID))))
}

// BookedByLease is actors.BookedByLease, failing the test on an error.
func BookedByLease(t testing.TB, kv *storage.TiKV, budgetID string) map[uint64]ledger.LeaseUse {
	t.Helper()
	m, err := actors.BookedByLease(context.Background(), kv, budgetID)
	if err != nil {
		t.Fatalf("BookedByLease(%s): %v", budgetID, err)
	}
	return m
}

// Budget reads and decodes a budget.
func Budget(t testing.TB, kv *storage.TiKV, id string) *ledger.Budget {
	t.Helper()
	raw := Get(t, kv, storage.BudgetKey(id))
	if raw == nil {
		t.Fatalf("budget %s missing", id)
	}
	b, err := ledger.UnmarshalBudget(raw)
	if err != nil {
		t.Fatalf("budget %s: %v", id, err)
	}
	return b
}

// Book books grants and fails the test on an error.
func Book(t testing.TB, b *booking.Booker, grants []ledger.Grant) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := b.Book(ctx, grants)
	if err != nil {
		t.Fatalf("Book(%d grants): %v", len(grants), err)
	}
	if len(out) != len(grants) {
		t.Fatalf("Book(%d grants) gave %d outcomes", len(grants), len(out))
	}
	return out
}

// WantOutcomes checks every outcome is want.
func WantOutcomes(t testing.TB, out []byte, want byte) {
	t.Helper()
	for i, o := range out {
		if o != want {
			t.Fatalf("outcome[%d] = %d, want %d (outcomes %v)", i, o, want, out)
		}
	}
}

// Eventually polls cond until it returns nil, failing the test with its
// last error after within.
func Eventually(t testing.TB, within time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, within, err)
		}
		<-tick.C
	}
}
