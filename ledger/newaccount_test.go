package ledger_test

import (
	"testing"

	"redrain/ledger"
	"redrain/tokens"
)

var sink *ledger.Account

// A new account books its first grant and binds its app identity without
// an allocation of its own for the balance, entry, monthly summary or
// identity (NewAccount's slab), and the entry's text is one string.
func TestNewAccountBooksInPlace(t *testing.T) {
	g := ledger.Grant{AppID: 1, UserID: "u1", ActID: 7, ActivityID: "newyear", SceneID: "lobby", RainID: 1, Stage: tokens.StageFormal,
		AwardType: "cash", Asset: ledger.AssetCash, Amount: 88, BudgetID: "newyear/formal/cash", LeaseID: 1}
	const now = 1_764_979_200_000
	book := func(a *ledger.Account) {
		if ok, err := a.Book(&g, now); !ok || err != nil {
			t.Fatalf("book: %v %v", ok, err)
		}
		a.Bind(ledger.AppUser{AppID: g.AppID, UserID: g.UserID})
	}
	slab := testing.AllocsPerRun(100, func() { sink = ledger.NewAccount(g.ActID); book(sink) })
	plain := testing.AllocsPerRun(100, func() { sink = &ledger.Account{ActID: g.ActID}; book(sink) })
	// The slab is one object where the account and its four slices were
	// five; the entry's text (limit key, award type) is the other.
	if slab != 2 || plain != 6 {
		t.Errorf("%v allocations booking into NewAccount, %v into a bare account: want 2 and 6", slab, plain)
	}
	a := ledger.NewAccount(g.ActID)
	book(a)
	e := a.Entries[0]
	if e.LimitKey != g.LimitKey() || e.OutTradeNo != "" || e.TradeNo() != g.OutTradeNo() || e.AwardType != g.AwardType {
		t.Fatalf("entry %+v", e)
	}
	if err := a.Check(); err != nil {
		t.Fatal(err)
	}
	// A packet of a token sealed before keys named the activity: its
	// legacy keys.
	legacy := g
	legacy.Legacy = true
	b := ledger.NewAccount(g.ActID)
	if ok, err := b.Book(&legacy, now); !ok || err != nil {
		t.Fatalf("legacy book: %v %v", ok, err)
	}
	if e := b.Entries[0]; e.LimitKey != legacy.LimitKey() || e.TradeNo() != legacy.OutTradeNo() || e.LimitKey == g.LimitKey() {
		t.Fatalf("legacy entry %+v", e)
	}
	// A second packet grows the slices past the slab, as any account's.
	g.RainID = 2
	book(a)
	if len(a.Entries) != 2 || a.Balances[0].Amount != 176 {
		t.Fatalf("after a second packet: %+v", a)
	}
	if err := a.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestAccountChunk: a chunk's accounts are NewAccount's, each its own (a
// grant booked into one changes no other), one allocation per
// AccountChunkSize of them.
func TestAccountChunk(t *testing.T) {
	g := ledger.Grant{AppID: 1, UserID: "u1", ActivityID: "newyear", SceneID: "lobby", RainID: 1, Stage: tokens.StageFormal,
		AwardType: "cash", Asset: ledger.AssetCash, Amount: 88, BudgetID: "newyear/formal/cash", LeaseID: 1}
	const now = 1_764_979_200_000
	var c ledger.AccountChunk
	n := 2*ledger.AccountChunkSize + 3
	accts := make([]*ledger.Account, n)
	for i := range accts {
		accts[i] = c.New(uint64(100 + i))
		if want := ledger.NewAccount(uint64(100 + i)); accts[i].ActID != want.ActID || len(accts[i].Entries) != 0 || cap(accts[i].Entries) != cap(want.Entries) || cap(accts[i].Balances) != cap(want.Balances) {
			t.Fatalf("account %d from the chunk: %+v, NewAccount gives %+v", i, accts[i], want)
		}
	}
	for i, a := range accts {
		g.ActID, g.Amount = a.ActID, int64(i+1)
		if ok, err := a.Book(&g, now); !ok || err != nil {
			t.Fatalf("book into account %d: %v %v", i, ok, err)
		}
		a.Bind(ledger.AppUser{AppID: 1, UserID: "u1"})
	}
	for i, a := range accts {
		if len(a.Entries) != 1 || a.Entries[0].Amount != int64(i+1) || len(a.Balances) != 1 || a.Balances[0].Amount != int64(i+1) {
			t.Fatalf("account %d after every account booked: %+v", i, a)
		}
		if err := a.Check(); err != nil {
			t.Fatalf("account %d: %v", i, err)
		}
	}
	var c2 ledger.AccountChunk
	if allocs := testing.AllocsPerRun(10, func() {
		for range ledger.AccountChunkSize {
			sink = c2.New(1)
		}
	}); allocs != 1 {
		t.Errorf("%v allocations for %d accounts of a chunk, want 1", allocs, ledger.AccountChunkSize)
	}
}
