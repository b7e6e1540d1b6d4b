package ledger_test

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"slices"
	"testing"

	"redrain/ledger"
	"redrain/tokens"
)

func book(t *testing.T, a *ledger.Account, g ledger.Grant, now int64) bool {
	t.Helper()
	ok, err := a.Book(&g, now)
	if err != nil {
		t.Fatalf("Book(%+v): %v", g, err)
	}
	if err := a.Check(); err != nil {
		t.Fatalf("after Book(%+v): Check() = %v", g, err)
	}
	return ok
}

func TestAccountBookOncePerLimitKey(t *testing.T) {
	a := &ledger.Account{ActID: 1}
	first := grant(1, "lobby", 7, tokens.StageFormal, "cash", 88)
	if !book(t, a, first, 100) {
		t.Fatalf("Book(%+v) on an empty account = false, want true", first)
	}
	e, ok := a.Entry(first.LimitKey())
	// The entry holds no trade number: it derives from the limit key and
	// award type, as the token's does from its idempotency key.
	want := ledger.Entry{LimitKey: first.LimitKey(), AwardType: "cash",
		Asset: ledger.AssetCash, Amount: 88, BookedAt: 100, LeaseID: first.LeaseID}
	if !ok || e != want || e.TradeNo() != first.OutTradeNo() {
		t.Errorf("Entry(%q) = %+v, %v, want %+v", first.LimitKey(), e, ok, want)
	}

	// The limit is per act, scene, rain and stage whatever award was drawn:
	// none of these may book again.
	same := []ledger.Grant{first}
	g := first
	g.IssuedAt, g.LeaseID = 999, 42 // a redelivery from another node and lease
	same = append(same, g)
	g = first
	g.AwardType, g.Amount = "coupon", 5
	same = append(same, g)
	g = first
	g.AwardType, g.Asset, g.Amount, g.BudgetID = "coupon", "item:coupon", 1, "spring-coupon"
	same = append(same, g)
	for _, g := range same {
		if book(t, a, g, 200) {
			t.Errorf("Book(%+v) after its limit key was booked = true, want false", g)
		}
	}
	if len(a.Entries) != 1 || a.Balance(ledger.AssetCash) != 88 || a.Balance("item:coupon") != 0 || len(a.Balances) != 1 {
		t.Errorf("after duplicate bookings: balances %+v entries %+v, want one cash entry of 88", a.Balances, a.Entries)
	}

	// Any other part of the key is another packet.
	other := []ledger.Grant{
		grant(1, "lobby", 7, tokens.StageGray, "cash", 1),
		grant(1, "lobby", 8, tokens.StageFormal, "cash", 2),
		grant(1, "hall", 7, tokens.StageFormal, "cash", 3),
	}
	for _, g := range other {
		if !book(t, a, g, 300) {
			t.Errorf("Book(%+v) = false, want true (a different limit key)", g)
		}
	}
	if got := a.Balance(ledger.AssetCash); got != 88+1+2+3 {
		t.Errorf("Balance(cash) = %d, want %d", got, 88+1+2+3)
	}
	if a.Version != 0 {
		t.Errorf("Book changed Version to %d; the commit bumps it, not Book", a.Version)
	}
}

func TestAccountBookRefuses(t *testing.T) {
	const big = math.MaxInt64 - 1
	for _, tc := range []struct {
		name string
		g    ledger.Grant
		want error
	}{
		{"wrong act", grant(2, "lobby", 9, tokens.StageFormal, "cash", 1), ledger.ErrInvariant},
		{"zero amount", grant(1, "lobby", 9, tokens.StageFormal, "cash", 0), ledger.ErrInvariant},
		{"negative amount", grant(1, "lobby", 9, tokens.StageFormal, "cash", -5), ledger.ErrInvariant},
		{"overflow", grant(1, "lobby", 9, tokens.StageFormal, "cash", 2), ledger.ErrOverflow},
		{"overflow max", grant(1, "lobby", 9, tokens.StageFormal, "cash", math.MaxInt64), ledger.ErrOverflow},
	} {
		a := &ledger.Account{ActID: 1, Version: 3}
		book(t, a, grant(1, "lobby", 1, tokens.StageFormal, "cash", big), 1)
		book(t, a, grant(1, "lobby", 2, tokens.StageFormal, "coupon", 1), 1)
		before := ledger.MarshalAccount(nil, a)

		ok, err := a.Book(&tc.g, 2)
		if ok || !errors.Is(err, tc.want) {
			t.Errorf("%s: Book(%+v) = %v, %v, want false, %v", tc.name, tc.g, ok, err, tc.want)
		}
		if after := ledger.MarshalAccount(nil, a); !bytes.Equal(after, before) {
			t.Errorf("%s: a refused Book changed the account:\n%x\nwant\n%x", tc.name, after, before)
		}
		if _, booked := a.Entry(tc.g.LimitKey()); booked {
			t.Errorf("%s: a refused Book left limit key %q booked", tc.name, tc.g.LimitKey())
		}
		if err := a.Check(); err != nil {
			t.Errorf("%s: Check() after a refused Book = %v", tc.name, err)
		}
	}

	// After a refused overflow the limit key is still free: a grant that
	// fits books under it.
	a := &ledger.Account{ActID: 1}
	book(t, a, grant(1, "lobby", 1, tokens.StageFormal, "cash", big), 1)
	g := grant(1, "lobby", 9, tokens.StageFormal, "cash", 2)
	if _, err := a.Book(&g, 2); !errors.Is(err, ledger.ErrOverflow) {
		t.Fatalf("Book(%+v) = %v, want ErrOverflow", g, err)
	}
	g.Amount = 1
	if !book(t, a, g, 3) || a.Balance(ledger.AssetCash) != math.MaxInt64 {
		t.Errorf("Book(%+v) after a refused overflow: balance %d, want %d", g, a.Balance(ledger.AssetCash), int64(math.MaxInt64))
	}
}

func TestAccountBalancesSorted(t *testing.T) {
	a := &ledger.Account{ActID: 5}
	for i, asset := range []ledger.Asset{"coin:zeta", "cash", "coin:alpha", "item:mid", "cash", "coin:alpha"} {
		g := grant(5, "lobby", uint64(i), tokens.StageFormal, "x", int64(i+1))
		g.Asset = asset
		book(t, a, g, 0)
	}
	if !slices.IsSortedFunc(a.Balances, func(x, y ledger.Balance) int { return cmpAsset(x.Asset, y.Asset) }) {
		t.Errorf("Balances = %+v, not sorted by asset", a.Balances)
	}
	for _, tc := range []struct {
		asset ledger.Asset
		want  int64
	}{{"coin:alpha", 3 + 6}, {"cash", 2 + 5}, {"item:mid", 4}, {"coin:zeta", 1}, {"none", 0}, {"", 0}} {
		if got := a.Balance(tc.asset); got != tc.want {
			t.Errorf("Balance(%q) = %d, want %d", tc.asset, got, tc.want)
		}
	}
}

func cmpAsset(x, y ledger.Asset) int {
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

func TestAccountCheck(t *testing.T) {
	base := sampleAccount(t) // balances alpha 1, cash 100, zeta MaxInt64; 5 entries
	for _, tc := range []struct {
		name   string
		tamper func(a *ledger.Account)
		want   error
	}{
		{"valid", func(*ledger.Account) {}, nil},
		{"empty", func(a *ledger.Account) { a.Balances, a.Entries, a.Months = nil, nil, nil }, nil},
		{"month raised", func(a *ledger.Account) { a.Months[0].Income++ }, ledger.ErrInvariant},
		{"month moved", func(a *ledger.Account) { a.Months[0].Month++ }, nil}, // still sums to the balance: the audit compares months with the entries
		{"month missing", func(a *ledger.Account) { a.Months = a.Months[1:] }, ledger.ErrInvariant},
		{"expense without a debit", func(a *ledger.Account) { a.Months[1].Expense = 1 }, ledger.ErrInvariant},
		{"negative income", func(a *ledger.Account) {
			a.Months[1].Income, a.Months[1].Expense = -1, -1-a.Months[1].Income
		}, ledger.ErrInvariant},
		{"unsorted months", func(a *ledger.Account) { a.Months[0], a.Months[1] = a.Months[1], a.Months[0] }, ledger.ErrInvariant},
		{"zero balance without entries", func(a *ledger.Account) {
			a.Balances = append(a.Balances, ledger.Balance{Asset: "zz"})
		}, nil},
		{"balance raised", func(a *ledger.Account) { a.Balances[1].Amount++ }, ledger.ErrInvariant},
		{"balance lowered", func(a *ledger.Account) { a.Balances[0].Amount-- }, ledger.ErrInvariant},
		{"entry raised", func(a *ledger.Account) { a.Entries[2].Amount++ }, ledger.ErrInvariant},
		{"balance missing", func(a *ledger.Account) { a.Balances = a.Balances[1:] }, ledger.ErrInvariant},
		{"duplicate limit key", func(a *ledger.Account) {
			a.Entries = append(a.Entries, a.Entries[1])
			a.Balances[1].Amount += a.Entries[1].Amount // cash
		}, ledger.ErrInvariant},
		{"duplicate limit key, other asset", func(a *ledger.Account) {
			e := a.Entries[0] // zeta
			e.Asset, e.Amount = "coin:alpha", 1
			a.Entries = append(a.Entries, e)
			a.Balances[0].Amount++ // alpha
		}, ledger.ErrInvariant},
		{"unsorted balances", func(a *ledger.Account) { a.Balances[0], a.Balances[2] = a.Balances[2], a.Balances[0] }, ledger.ErrInvariant},
		{"duplicate asset", func(a *ledger.Account) {
			a.Balances = slices.Insert(a.Balances, 1, ledger.Balance{Asset: "coin:alpha"})
		}, ledger.ErrInvariant},
		{"negative entry balanced", func(a *ledger.Account) {
			a.Entries = append(a.Entries, ledger.Entry{LimitKey: "neg", Asset: ledger.AssetCash, Amount: -100})
			a.Balances[1].Amount -= 100
		}, ledger.ErrInvariant},
		{"no trade number, and no key it derives from", func(a *ledger.Account) {
			// Balanced, its month counted: only the key is wrong ("42_more"
			// passes).
			a.Entries = append(a.Entries, ledger.Entry{LimitKey: "more", Asset: ledger.AssetCash, Amount: 1})
			a.Balances[slices.IndexFunc(a.Balances, func(b ledger.Balance) bool { return b.Asset == ledger.AssetCash })].Amount++
			a.Months, _ = ledger.MonthsOf(a.Entries)
		}, ledger.ErrInvariant},
		{"entries overflow", func(a *ledger.Account) {
			a.Entries = append(a.Entries, ledger.Entry{LimitKey: "42_more", Asset: "coin:zeta", Amount: 1})
		}, ledger.ErrOverflow},
	} {
		a := base.Clone()
		tc.tamper(a)
		if err := a.Check(); !errors.Is(err, tc.want) || (err == nil) != (tc.want == nil) {
			t.Errorf("%s: Check() = %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestAccountCloneIsDeep(t *testing.T) {
	a := sampleAccount(t)
	a.Entry("warm the index") // the original's limit index exists before the clone
	want := ledger.MarshalAccount(nil, a)

	c := a.Clone()
	if !bytes.Equal(ledger.MarshalAccount(nil, c), want) {
		t.Fatalf("Clone() encodes differently from the original")
	}
	g := grant(42, "clone", 1, tokens.StageFormal, "cash", 10)
	book(t, c, g, 5)
	c.Balances[0].Amount += 1000
	c.Entries[0].Amount += 1000
	c.Entries[1].LimitKey = "changed"
	c.Version++

	if got := ledger.MarshalAccount(nil, a); !bytes.Equal(got, want) {
		t.Errorf("changing the clone changed the original:\n%x\nwant\n%x", got, want)
	}
	if _, ok := a.Entry(g.LimitKey()); ok {
		t.Errorf("a grant booked on the clone is visible through the original's index")
	}
	if err := a.Check(); err != nil {
		t.Errorf("original after changing the clone: Check() = %v", err)
	}
	// And the other way: the original books a grant the clone then books too.
	if !book(t, a, g, 6) {
		t.Errorf("the original could not book %+v after the clone did", g)
	}
	if _, ok := a.Clone().Entry(g.LimitKey()); !ok {
		t.Errorf("a clone does not see an entry booked before the clone")
	}
}

func TestAccountAttribute(t *testing.T) {
	a := &ledger.Account{ActID: 1}
	redeemed := grant(1, "lobby", 7, tokens.StageFormal, "cash", 88)
	redeemed.LeaseID = 0 // redeem booked it before its stream event arrived
	book(t, a, redeemed, 1)
	before := a.Balance(ledger.AssetCash)

	event := redeemed
	event.LeaseID = 5
	other := grant(1, "lobby", 8, tokens.StageFormal, "cash", 88)
	unpaid := event
	unpaid.LeaseID = 0
	if a.Attribute(&other) || a.Attribute(&unpaid) {
		t.Errorf("Attribute of an unbooked key or from lease 0 = true, want false")
	}
	c := a.Clone()
	if !a.Attribute(&event) {
		t.Fatalf("Attribute(%+v) = false, want true", event)
	}
	if e, _ := a.Entry(event.LimitKey()); e.LeaseID != 5 || e.Amount != 88 {
		t.Errorf("after Attribute: entry %+v, want lease 5 and amount 88", e)
	}
	again := event
	again.LeaseID = 6
	if a.Attribute(&again) {
		t.Errorf("Attribute of an attributed entry = true, want false")
	}
	if e, _ := a.Entry(event.LimitKey()); e.LeaseID != 5 {
		t.Errorf("a second Attribute moved the entry to lease %d", e.LeaseID)
	}
	if a.Balance(ledger.AssetCash) != before || len(a.Entries) != 1 {
		t.Errorf("Attribute changed the money: balance %d, %d entries", a.Balance(ledger.AssetCash), len(a.Entries))
	}
	if e, _ := c.Entry(event.LimitKey()); e.LeaseID != 0 {
		t.Errorf("Attribute on the original changed a clone taken before it: lease %d", e.LeaseID)
	}
	if err := a.Check(); err != nil {
		t.Errorf("after Attribute: Check() = %v", err)
	}
}

func TestAccountBindAndRoundTrip(t *testing.T) {
	a := &ledger.Account{ActID: 9}
	for _, u := range []ledger.AppUser{{2, "b"}, {1, "z"}, {2, "a"}, {1, "z"}} {
		a.Bind(u)
	}
	want := []ledger.AppUser{{1, "z"}, {2, "a"}, {2, "b"}}
	if !reflect.DeepEqual(a.Apps, want) {
		t.Fatalf("Apps = %v, want %v (sorted, unique)", a.Apps, want)
	}
	if a.Bind(ledger.AppUser{AppID: 2, UserID: "a"}) {
		t.Error("Bind of a bound identity reported new")
	}
	b, err := ledger.UnmarshalAccount(ledger.MarshalAccount(nil, a))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(b.Apps, want) {
		t.Errorf("round trip Apps = %v, want %v", b.Apps, want)
	}
	a.Apps = []ledger.AppUser{{2, "a"}, {1, "z"}}
	if _, err := ledger.UnmarshalAccount(ledger.MarshalAccount(nil, a)); !errors.Is(err, ledger.ErrInvariant) {
		t.Errorf("unsorted apps: err = %v, want ErrInvariant", err)
	}
}
