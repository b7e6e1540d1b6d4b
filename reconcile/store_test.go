package reconcile_test

import (
	"context"
	"fmt"
	"testing"

	"redrain/actors"
	"redrain/campaign"
	"redrain/ledger"
	"redrain/storage"
	"redrain/tokens"
)

// The healthy store every test starts from, written with the ledger's own
// rules in the layout booking uses: a funded budget, a closed lease whose
// grants are booked, an open lease with some grants booked, one hot detail
// per booking batch, and each user's account (with its app identity). The
// first legacyUsers users were booked under the legacy keys.
var (
	budgetID = campaign.BudgetID("demo", tokens.StageFormal, "cash")
	asset    = ledger.Asset("cash")
)

const (
	budgetTotal = 1_000_000
	closedLease = uint64(1) // amount 10_000, users 1-5 booked under it, then closed
	openLease   = uint64(2) // amount 5_000, users 6-8 booked under it
	usersCount  = 8
)

// legacyUsers were granted before keys named the activity: their entries
// are under the legacy limit keys ("{act}_rain_1_formal"), the others'
// under the keys naming the activity ("{act}_demo_rain_1_formal").
const legacyUsers = 3

// amountOf is user act's packet.
func amountOf(act uint64) int64 { return int64(act) * 10 }

func grantOf(act, lease uint64) ledger.Grant {
	return ledger.Grant{AppID: 1, ActID: act, UserID: fmt.Sprintf("u-%d", act), ActivityID: "demo",
		SceneID: "rain", RainID: 1, Stage: tokens.StageFormal, AwardType: "cash", Asset: asset,
		Amount: amountOf(act), BudgetID: budgetID, LeaseID: lease, OpenTime: 1, IssuedAt: 2,
		Legacy: act <= legacyUsers}
}

// writeHealthy fills an empty store.
func writeHealthy(t testing.TB, kv *storage.TiKV) {
	t.Helper()
	ctx := context.Background()
	if _, err := actors.EnsureBudget(ctx, kv, &ledger.Budget{ID: budgetID, Asset: asset, Total: budgetTotal}); err != nil {
		t.Fatalf("EnsureBudget: %v", err)
	}
	// One transaction per step, as the budget grain and the booker write.
	update(t, kv, func(txn storage.Txn) error {
		b := getBudget(ctx, t, txn)
		l1 := b.TakeLease(10_000, "n-test", 1)
		l2 := b.TakeLease(5_000, "n-test", 1)
		if l1.ID != closedLease || l2.ID != openLease {
			return fmt.Errorf("leases %d and %d, want %d and %d", l1.ID, l2.ID, closedLease, openLease)
		}
		b.Version++
		return putAll(txn, b, l1, l2)
	})
	book(t, kv, closedLease, 1, 2, 3, 4, 5)
	book(t, kv, openLease, 6, 7, 8)
	update(t, kv, func(txn storage.Txn) error {
		b := getBudget(ctx, t, txn)
		l := getLease(ctx, t, txn, closedLease)
		var issued int64
		for act := uint64(1); act <= 5; act++ {
			issued += amountOf(act)
		}
		if err := b.CloseLease(l, issued, 5); err != nil {
			return err
		}
		b.Version++
		return putAll(txn, b, l)
	})
}

// book books one batch: the users' accounts and bindings and one hot
// detail, in one transaction.
func book(t testing.TB, kv *storage.TiKV, lease uint64, acts ...uint64) {
	t.Helper()
	update(t, kv, func(txn storage.Txn) error {
		h := &ledger.HotDetail{BudgetID: budgetID}
		for _, act := range acts {
			g := grantOf(act, lease)
			a := &ledger.Account{ActID: act}
			if ok, err := a.Book(&g, 3); err != nil || !ok {
				return fmt.Errorf("book %+v: %v, %v", g, ok, err)
			}
			a.Bind(ledger.AppUser{AppID: g.AppID, UserID: g.UserID})
			a.Version++
			if err := h.Add(&g); err != nil {
				return err
			}
			if err := putAccount(txn, a); err != nil {
				return err
			}
		}
		return txn.Set(storage.HotKey(budgetID, txn.StartTS(), 0), ledger.MarshalHotDetail(nil, h))
	})
}

func update(t testing.TB, kv *storage.TiKV, fn func(txn storage.Txn) error) {
	t.Helper()
	if err := kv.Update(context.Background(), fn); err != nil {
		t.Fatalf("write the store: %v", err)
	}
}

// putAll writes budgets, leases, hot details and accounts.
func putAll(txn storage.Txn, recs ...any) error {
	for _, r := range recs {
		var err error
		switch r := r.(type) {
		case *ledger.Budget:
			err = txn.Set(storage.BudgetKey(r.ID), ledger.MarshalBudget(nil, r))
		case *ledger.Lease:
			err = txn.Set(storage.LeaseKey(r.BudgetID, r.ID), ledger.MarshalLease(nil, r))
		case *ledger.Account:
			err = putAccount(txn, r)
		default:
			err = fmt.Errorf("putAll: %T", r)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func getRaw(ctx context.Context, t testing.TB, txn storage.Txn, key []byte) []byte {
	t.Helper()
	raw, err := storage.Get(ctx, txn, key)
	if err != nil || raw == nil {
		t.Fatalf("read %s: %v (found %v)", key, err, raw != nil)
	}
	return raw
}

func getBudget(ctx context.Context, t testing.TB, txn storage.Txn) *ledger.Budget {
	t.Helper()
	b, err := ledger.UnmarshalBudget(getRaw(ctx, t, txn, storage.BudgetKey(budgetID)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func getLease(ctx context.Context, t testing.TB, txn storage.Txn, id uint64) *ledger.Lease {
	t.Helper()
	l, err := ledger.UnmarshalLease(getRaw(ctx, t, txn, storage.LeaseKey(budgetID, id)))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// partOf is the partition a test stores an account in: each its own, so
// that a corrupt account (whose page does not decode) hides no other.
func partOf(act uint64) int32 { return int32(act % (1 << 15)) }

// putAccount stores a as booking's checkpoint would: alone in a page of
// its own partition, whose state says the journal is empty.
func putAccount(txn storage.Txn, a *ledger.Account) error {
	p := partOf(a.ActID)
	page := ledger.AppendPage(nil, &ledger.Page{Accounts: []*ledger.Account{a}})
	if err := txn.Set(storage.PageKey(p, storage.PageOf(a.ActID)), page); err != nil {
		return err
	}
	return txn.Set(storage.PartKey(p), ledger.AppendPartState(nil, &ledger.PartState{NextSeq: 1}))
}

func getAccount(ctx context.Context, t testing.TB, txn storage.Txn, act uint64) *ledger.Account {
	t.Helper()
	page, err := ledger.DecodePage(getRaw(ctx, t, txn, storage.PageKey(partOf(act), storage.PageOf(act))))
	if err != nil {
		t.Fatal(err)
	}
	a := page.Find(act)
	if a == nil {
		t.Fatalf("no account %d", act)
	}
	return a
}

// foldAll folds every hot detail of the budget into it and its leases and
// deletes them, in txn, with the ledger's rules (as a budget grain's fold
// step does).
func foldAll(ctx context.Context, t testing.TB, txn storage.Txn) error {
	t.Helper()
	b := getBudget(ctx, t, txn)
	var details []*ledger.HotDetail
	var keys [][]byte
	p := storage.HotPrefix(budgetID)
	err := storage.ScanTxn(txn, p, storage.PrefixEnd(p), func(k, v []byte) (bool, error) {
		h, err := ledger.UnmarshalHotDetail(v)
		keys, details = append(keys, append([]byte(nil), k...)), append(details, h)
		return true, err
	})
	if err != nil {
		return err
	}
	leases := map[uint64]*ledger.Lease{}
	for id := uint64(1); id < b.NextLease; id++ {
		leases[id] = getLease(ctx, t, txn, id)
	}
	res, err := b.Fold(details, leases)
	if err != nil {
		return err
	}
	b.Version++
	if err := putAll(txn, b); err != nil {
		return err
	}
	for _, l := range res.Leases {
		if err := putAll(txn, l); err != nil {
			return err
		}
	}
	for _, k := range keys {
		if err := txn.Delete(k); err != nil {
			return err
		}
	}
	return nil
}
