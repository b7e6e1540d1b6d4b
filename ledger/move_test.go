package ledger_test

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"

	"redrain/ledger"
	"redrain/tokens"
)

const coin = ledger.Asset("coin:gold")

func leg(asset ledger.Asset, n int64) []ledger.Leg { return []ledger.Leg{{Asset: asset, Amount: n}} }

// sampleMoves is one valid move of every kind.
func sampleMoves() []ledger.Move {
	return []ledger.Move{
		{ActID: 5, Kind: ledger.MoveRecharge, Key: "r1", AppID: 7, Legs: leg(coin, 100), Counter: "recharge/7"},
		{ActID: 5, Kind: ledger.MoveConsume, Key: "c1", AppID: 7, Legs: leg(coin, -40), Counter: "merchant/m"},
		{ActID: 5, Kind: ledger.MoveRefund, Key: "f1", AppID: 7, Legs: leg(coin, 10), Counter: "merchant/m", Ref: "c1"},
		{ActID: 5, Kind: ledger.MoveReverse, Key: "v1", AppID: 7, Legs: leg(coin, 40), Counter: "merchant/m", Ref: "c1"},
		{ActID: 5, Kind: ledger.MoveTransferOut, Key: "t1", Legs: leg(coin, -5), Counter: "transfer/t1", Ref: "6"},
		{ActID: 6, Kind: ledger.MoveTransferIn, Key: "t1", Legs: leg(coin, 5), Counter: "transfer/t1", Ref: "5"},
		{ActID: 5, Kind: ledger.MoveGiftOut, Key: "g1", Legs: leg("item:rose", -1), Counter: "transfer/g1"},
		{ActID: 6, Kind: ledger.MoveGiftIn, Key: "g1", Legs: leg("item:rose", 1), Counter: "transfer/g1"},
		{ActID: 5, Kind: ledger.MoveExpire, Key: "e1", Legs: leg(coin, -3), Counter: "budget/b1"},
		{ActID: math.MaxUint64, Kind: ledger.MoveWithdrawHold, Key: "w1/hold", Legs: []ledger.Leg{{Asset: ledger.AssetCash, Amount: -math.MaxInt64}, {Asset: ledger.AssetTransit, Amount: math.MaxInt64}}, Ref: "w1"},
		{ActID: 1, Kind: ledger.MoveWithdrawSettle, Key: "w1/settle", Legs: leg(ledger.AssetTransit, -9), Counter: "payout/bank", Ref: "w1"},
		{ActID: 1, Kind: ledger.MoveWithdrawReverse, Key: "w1/reverse", Legs: []ledger.Leg{{Asset: ledger.AssetTransit, Amount: -9}, {Asset: ledger.AssetCash, Amount: 9}}, Ref: "w1"},
		{ActID: 1, Kind: ledger.MoveWithdrawDebt, Key: "w1/debt", Legs: leg(ledger.AssetCash, -9), Counter: "payout/bank", Ref: "w1"},
		{ActID: 1, Kind: ledger.MoveWithdrawDebt, Key: "w2/debt", Legs: []ledger.Leg{{Asset: ledger.AssetCash, Amount: -4}, {Asset: ledger.AssetDebt, Amount: 5}}, Counter: "payout/bank", Ref: "w2"},
	}
}

// movedPage is a page of one account with grants and a move of every
// kind that applies to it.
func movedPage(t testing.TB) *ledger.Page {
	a := &ledger.Account{ActID: 5}
	g := grant(5, "lobby", 1, tokens.StageFormal, "coin", 1000)
	g.Asset = coin
	if _, err := a.Book(&g, 1000); err != nil {
		t.Fatal(err)
	}
	for _, m := range sampleMoves() {
		if m.ActID == 5 {
			if _, _, err := a.ApplyMove(&m, 2000); err != nil {
				t.Fatal(err)
			}
		}
	}
	return &ledger.Page{Seq: 3, Accounts: []*ledger.Account{a}}
}

func TestMoveValidate(t *testing.T) {
	for _, m := range sampleMoves() {
		if err := m.Validate(); err != nil {
			t.Errorf("Validate(%s) = %v", m.Kind, err)
		}
		if err := ledger.CheckMove(&m); err != nil {
			t.Errorf("postings of %s: %v", m.Kind, err)
		}
	}
	base := sampleMoves()[1] // a consumption
	bad := map[string]func(m *ledger.Move){
		"kind 0":           func(m *ledger.Move) { m.Kind = 0 },
		"kind 14":          func(m *ledger.Move) { m.Kind = 14 },
		"no key":           func(m *ledger.Move) { m.Key = "" },
		"long key":         func(m *ledger.Move) { m.Key = string(make([]byte, ledger.MoveKeyLenMax+1)) },
		"no legs":          func(m *ledger.Move) { m.Legs = nil },
		"zero leg":         func(m *ledger.Move) { m.Legs = leg(coin, 0) },
		"positive consume": func(m *ledger.Move) { m.Legs = leg(coin, 1) },
		"min int64":        func(m *ledger.Move) { m.Legs = leg(coin, math.MinInt64) },
		"unknown asset":    func(m *ledger.Move) { m.Legs = leg("gold", -1) },
		"two legs":         func(m *ledger.Move) { m.Legs = []ledger.Leg{{coin, -1}, {"coin:x", -1}} },
		"asset twice":      func(m *ledger.Move) { m.Legs = []ledger.Leg{{coin, -1}, {coin, -1}} },
		"no counter":       func(m *ledger.Move) { m.Counter = "" },
		"counter kind":     func(m *ledger.Move) { m.Counter = "payout/x" },
		"bare counter":     func(m *ledger.Move) { m.Counter = "merchant/" },
		"refund no ref":    func(m *ledger.Move) { m.Kind, m.Legs = ledger.MoveRefund, leg(coin, 1) },
		"recharge cash": func(m *ledger.Move) {
			m.Kind, m.Legs, m.Counter = ledger.MoveRecharge, leg(ledger.AssetCash, 1), "recharge/7"
		},
		"hold unbalanced":   func(m *ledger.Move) { *m = sampleMoves()[9]; m.Legs[1].Amount-- },
		"hold with counter": func(m *ledger.Move) { *m = sampleMoves()[9]; m.Counter = "payout/x" },
		"hold order":        func(m *ledger.Move) { *m = sampleMoves()[9]; m.Legs[0], m.Legs[1] = m.Legs[1], m.Legs[0] },
		"settle cash":       func(m *ledger.Move) { *m = sampleMoves()[10]; m.Legs = leg(ledger.AssetCash, -9) },
		"debt of transit":   func(m *ledger.Move) { *m = sampleMoves()[12]; m.Legs = leg(ledger.AssetTransit, -9) },
		"negative debt":     func(m *ledger.Move) { *m = sampleMoves()[12]; m.Legs = leg(ledger.AssetDebt, -9) },
		"split reversed":    func(m *ledger.Move) { *m = sampleMoves()[13]; m.Legs[0], m.Legs[1] = m.Legs[1], m.Legs[0] },
	}
	for name, mod := range bad {
		m := base
		m.Legs = append([]ledger.Leg(nil), base.Legs...)
		mod(&m)
		if err := m.Validate(); !errors.Is(err, ledger.ErrMoveInvalid) {
			t.Errorf("%s: Validate(%+v) = %v, want ErrMoveInvalid", name, m, err)
		}
		a := &ledger.Account{ActID: m.ActID}
		if _, _, err := a.ApplyMove(&m, 1); !errors.Is(err, ledger.ErrMoveInvalid) || len(a.Entries) != 0 {
			t.Errorf("%s: ApplyMove = %v, want ErrMoveInvalid and nothing booked", name, err)
		}
	}
}

// funded is an account of act 5 with 1,000 fen of cash and 100 coins.
func funded(t *testing.T) *ledger.Account {
	a := &ledger.Account{ActID: 5}
	g := grant(5, "lobby", 1, tokens.StageFormal, "cash", 1000)
	book(t, a, g, 1000)
	g = grant(5, "lobby", 2, tokens.StageFormal, "coin", 100)
	g.Asset = coin
	book(t, a, g, 1000)
	return a
}

// apply applies m, wants result want, and checks the account: a result
// other than MoveApplied must leave its encoding as it was.
func apply(t *testing.T, a *ledger.Account, m ledger.Move, want ledger.MoveResult) {
	t.Helper()
	before := ledger.MarshalAccount(nil, a)
	got, legs, err := a.ApplyMove(&m, 2000)
	if err != nil || got != want {
		t.Fatalf("ApplyMove(%s %q) = %v, %v, want %v", m.Kind, m.Key, got, err, want)
	}
	if err := a.Check(); err != nil {
		t.Fatalf("after %s %q: %v", m.Kind, m.Key, err)
	}
	if got != ledger.MoveApplied {
		if legs != nil || !bytes.Equal(ledger.MarshalAccount(nil, a), before) {
			t.Fatalf("%s %q answered %v but changed the account", m.Kind, m.Key, got)
		}
		return
	}
	back, err := ledger.UnmarshalAccount(ledger.MarshalAccount(nil, a))
	if err != nil || !bytes.Equal(ledger.MarshalAccount(nil, back), ledger.MarshalAccount(nil, a)) {
		t.Fatalf("after %s %q the account does not round-trip: %v", m.Kind, m.Key, err)
	}
}

func wantBalance(t *testing.T, a *ledger.Account, asset ledger.Asset, n int64) {
	t.Helper()
	if got := a.Balance(asset); got != n {
		t.Fatalf("%s balance %d, want %d", asset, got, n)
	}
}

func TestApplyMoveRules(t *testing.T) {
	a := funded(t)
	c1 := ledger.Move{ActID: 5, Kind: ledger.MoveConsume, Key: "c1", AppID: 7, Legs: leg(coin, -40), Counter: "merchant/m"}
	apply(t, a, c1, ledger.MoveApplied)
	apply(t, a, c1, ledger.MoveRepeated)
	for _, mod := range []func(m *ledger.Move){
		func(m *ledger.Move) { m.Legs = leg(coin, -41) },
		func(m *ledger.Move) { m.AppID = 8 },
		func(m *ledger.Move) { m.Counter = "merchant/n" },
		func(m *ledger.Move) { m.Ref = "x" },
		func(m *ledger.Move) { m.Kind = ledger.MoveExpire; m.Counter = "expired/coin" },
	} {
		m := c1
		m.Legs = leg(coin, -40)
		mod(&m)
		apply(t, a, m, ledger.MoveKeyReused)
	}
	// Insufficient: 60 coins left.
	apply(t, a, ledger.Move{ActID: 5, Kind: ledger.MoveConsume, Key: "c2", Legs: leg(coin, -61), Counter: "merchant/m"}, ledger.MoveInsufficient)
	apply(t, a, ledger.Move{ActID: 5, Kind: ledger.MoveConsume, Key: "c3", Legs: leg("coin:none", -1), Counter: "merchant/m"}, ledger.MoveInsufficient)
	wantBalance(t, a, coin, 60)

	refund := func(key, ref string, n int64) ledger.Move {
		return ledger.Move{ActID: 5, Kind: ledger.MoveRefund, Key: key, AppID: 7, Legs: leg(coin, n), Counter: "merchant/m", Ref: ref}
	}
	reverse := func(key, ref string, n int64) ledger.Move {
		return ledger.Move{ActID: 5, Kind: ledger.MoveReverse, Key: key, Legs: leg(coin, n), Counter: "merchant/m", Ref: ref}
	}
	apply(t, a, refund("f0", "nothing", 1), ledger.MoveRefused)
	other := refund("f0", "c1", 1)
	other.Counter = "merchant/n"
	apply(t, a, other, ledger.MoveRefused)
	other = refund("f0", "c1", 1)
	other.Legs = leg("coin:silver", 1)
	apply(t, a, other, ledger.MoveRefused)
	apply(t, a, refund("f1", "c1", 30), ledger.MoveApplied)
	apply(t, a, refund("f2", "c1", 11), ledger.MoveRefused)  // 10 left
	apply(t, a, reverse("v1", "c1", 40), ledger.MoveRefused) // partly refunded
	apply(t, a, reverse("v1", "c1", 10), ledger.MoveRefused) // a reversal is whole
	apply(t, a, refund("f2", "c1", 10), ledger.MoveApplied)
	apply(t, a, refund("f3", "c1", 1), ledger.MoveRefused)
	wantBalance(t, a, coin, 100)

	c4 := ledger.Move{ActID: 5, Kind: ledger.MoveConsume, Key: "c4", Legs: leg(coin, -25), Counter: "merchant/m"}
	apply(t, a, c4, ledger.MoveApplied)
	apply(t, a, reverse("v4", "c4", 24), ledger.MoveRefused)
	apply(t, a, reverse("v4", "c4", 25), ledger.MoveApplied)
	apply(t, a, reverse("v4b", "c4", 25), ledger.MoveRefused) // once
	apply(t, a, refund("f4", "c4", 1), ledger.MoveRefused)    // reversed
	wantBalance(t, a, coin, 100)
	// A refund is not a consumption: it cannot be refunded.
	apply(t, a, refund("f5", "f1", 1), ledger.MoveRefused)

	// Recharge, transfers, gifts and expiry: credits land, debits never
	// overdraw.
	apply(t, a, ledger.Move{ActID: 5, Kind: ledger.MoveRecharge, Key: "rc", Legs: leg(coin, 50), Counter: "recharge/7"}, ledger.MoveApplied)
	apply(t, a, ledger.Move{ActID: 5, Kind: ledger.MoveTransferOut, Key: "to", Legs: leg(coin, -151), Counter: "transfer/to"}, ledger.MoveInsufficient)
	apply(t, a, ledger.Move{ActID: 5, Kind: ledger.MoveTransferOut, Key: "to", Legs: leg(coin, -150), Counter: "transfer/to"}, ledger.MoveApplied)
	apply(t, a, ledger.Move{ActID: 5, Kind: ledger.MoveGiftIn, Key: "gi", Legs: leg("item:rose", 2), Counter: "transfer/gi"}, ledger.MoveApplied)
	apply(t, a, ledger.Move{ActID: 5, Kind: ledger.MoveGiftOut, Key: "go", Legs: leg("item:rose", -3), Counter: "transfer/go"}, ledger.MoveInsufficient)
	apply(t, a, ledger.Move{ActID: 5, Kind: ledger.MoveExpire, Key: "ex", Legs: leg("item:rose", -2), Counter: "expired/item:rose"}, ledger.MoveApplied)
	apply(t, a, ledger.Move{ActID: 5, Kind: ledger.MoveTransferIn, Key: "ti", Legs: leg(coin, 100), Counter: "transfer/ti"}, ledger.MoveApplied)
	wantBalance(t, a, coin, 100)
	wantBalance(t, a, "item:rose", 0)

	// A withdrawal: hold, then debt beyond what cash gives back.
	hold := ledger.Move{ActID: 5, Kind: ledger.MoveWithdrawHold, Key: "w/hold", Legs: []ledger.Leg{{Asset: ledger.AssetCash, Amount: -1001}, {Asset: ledger.AssetTransit, Amount: 1001}}}
	apply(t, a, hold, ledger.MoveInsufficient)
	hold.Legs = []ledger.Leg{{Asset: ledger.AssetCash, Amount: -600}, {Asset: ledger.AssetTransit, Amount: 600}}
	apply(t, a, hold, ledger.MoveApplied)
	apply(t, a, ledger.Move{ActID: 5, Kind: ledger.MoveWithdrawSettle, Key: "w/settle", Legs: leg(ledger.AssetTransit, -601), Counter: "payout/bank"}, ledger.MoveInsufficient)
	apply(t, a, ledger.Move{ActID: 5, Kind: ledger.MoveWithdrawReverse, Key: "w/reverse", Legs: []ledger.Leg{{Asset: ledger.AssetTransit, Amount: -600}, {Asset: ledger.AssetCash, Amount: 600}}}, ledger.MoveApplied)
	debt := ledger.Move{ActID: 5, Kind: ledger.MoveWithdrawDebt, Key: "w/debt", Legs: leg(ledger.AssetCash, -1600), Counter: "payout/bank"}
	r, legs, err := a.ApplyMove(&debt, 3000)
	if err != nil || r != ledger.MoveApplied || fmt.Sprint(legs) != fmt.Sprint([]ledger.Leg{{ledger.AssetCash, -1000}, {ledger.AssetDebt, 600}}) {
		t.Fatalf("debt: %v %v %v", r, legs, err)
	}
	if err := ledger.MovePostings(nil, &ledger.Move{ActID: 5, Legs: legs, Counter: debt.Counter}).Check(); err != nil {
		t.Fatal(err)
	}
	wantBalance(t, a, ledger.AssetCash, 0)
	wantBalance(t, a, ledger.AssetDebt, 600)
	apply(t, a, debt, ledger.MoveRepeated)
	// As booked (a journal's op): the same move, a repeat; another split
	// of another key is refused, the split the account makes books.
	split := debt
	split.Legs = legs
	apply(t, a, split, ledger.MoveRepeated)
	wrong := ledger.Move{ActID: 5, Kind: ledger.MoveWithdrawDebt, Key: "w/debt2", Legs: []ledger.Leg{{ledger.AssetCash, -1}, {ledger.AssetDebt, 1}}, Counter: "payout/bank"}
	apply(t, a, wrong, ledger.MoveRefused) // cash is 0: the split is debt +2
	wrong.Legs = leg(ledger.AssetDebt, 2)
	apply(t, a, wrong, ledger.MoveApplied)
	wantBalance(t, a, ledger.AssetDebt, 602)
	if err := a.Check(); err != nil {
		t.Fatal(err)
	}
	// Every month counts the debits as expense.
	var income, expense int64
	for _, m := range a.Months {
		if m.Asset == coin {
			income, expense = income+m.Income, expense+m.Expense
		}
	}
	if income != 100+30+10+25+50+100 || expense != 40+25+150 {
		t.Fatalf("coin months: income %d expense %d", income, expense)
	}
}

// TestMoveArchival books many moves into one account: consumptions hold
// archival back for the refund window; once archived, their keys still
// tell a repeat from a reused key, in the account and in a copy loaded
// from its chunks; every record round-trips.
func TestMoveArchival(t *testing.T) {
	a := funded(t)
	var chunks []ledger.Entry
	day := int64(3600 * 1000) // an hour: every consumption is within the window
	at := int64(2000)
	maxRecent := 0
	var moves []ledger.Move
	for i := range 200 {
		at += day
		m := ledger.Move{ActID: 5, Kind: ledger.MoveConsume, Key: fmt.Sprint("c", i), Legs: leg(ledger.AssetCash, -1), Counter: "merchant/m"}
		if i%2 == 1 {
			m = ledger.Move{ActID: 5, Kind: ledger.MoveWithdrawHold, Key: fmt.Sprint("h", i), Legs: []ledger.Leg{{Asset: ledger.AssetCash, Amount: -1}, {Asset: ledger.AssetTransit, Amount: 1}}}
		}
		if r, _, err := a.ApplyMove(&m, at); r != ledger.MoveApplied || err != nil {
			t.Fatalf("move %d: %v %v", i, r, err)
		}
		moves = append(moves, m)
		if n, chunk, ok := a.TakeSealed(); ok {
			if n != uint64(len(chunks)/ledger.ChunkEntries) {
				t.Fatalf("chunk %d after %d entries", n, len(chunks))
			}
			enc := ledger.AppendChunk(nil, 5, n, chunk)
			if _, _, back, err := ledger.DecodeChunk(enc); err != nil || !reflect.DeepEqual(back, chunk) {
				t.Fatalf("chunk %d does not round-trip: %v", n, err)
			}
			chunks = append(chunks, chunk...)
		}
		if len(a.Entries) >= 3*ledger.ChunkEntries {
			t.Fatalf("%d recent entries", len(a.Entries))
		}
		maxRecent = max(maxRecent, len(a.Entries))
	}
	// Consumptions within the window (hours apart) held archival back up
	// to the bound.
	if maxRecent != 3*ledger.ChunkEntries-1 {
		t.Fatalf("at most %d recent entries, want %d", maxRecent, 3*ledger.ChunkEntries-1)
	}
	if a.Archived == 0 {
		t.Fatal("nothing archived")
	}
	if err := a.Check(); err != nil {
		t.Fatal(err)
	}
	wantBalance(t, a, ledger.AssetCash, 1000-200)
	wantBalance(t, a, ledger.AssetTransit, 100)
	// A copy as a reader decodes it, with its archived keys loaded.
	loaded, err := ledger.UnmarshalAccount(ledger.MarshalAccount(nil, a))
	if err != nil {
		t.Fatal(err)
	}
	if err := loaded.SetArchivedKeys(chunks); err != nil {
		t.Fatal(err)
	}
	page := &ledger.Page{Seq: 1, Accounts: []*ledger.Account{a}}
	fromPage, err := ledger.DecodePage(ledger.AppendPage(nil, page))
	if err != nil || !bytes.Equal(ledger.MarshalAccount(nil, fromPage.Accounts[0]), ledger.MarshalAccount(nil, a)) {
		t.Fatalf("page does not round-trip: %v", err)
	}
	for _, acc := range []*ledger.Account{a, loaded} {
		old := moves[1] // archived
		if _, ok := acc.Entry(ledger.MoveEntryKey(old.Key, 0)); ok {
			t.Fatal("move 1 still recent")
		}
		apply(t, acc, old, ledger.MoveRepeated)
		old.Legs = []ledger.Leg{{Asset: ledger.AssetCash, Amount: -2}, {Asset: ledger.AssetTransit, Amount: 2}}
		apply(t, acc, old, ledger.MoveKeyReused)
		// An archived consumption can no longer be refunded.
		apply(t, acc, ledger.Move{ActID: 5, Kind: ledger.MoveRefund, Key: "late", Legs: leg(ledger.AssetCash, 1), Counter: "merchant/m", Ref: moves[0].Key}, ledger.MoveRefused)
	}
}

// TestMoveSimulation applies random moves and grants to a few accounts
// and checks after each step that every account holds its invariants,
// that the balances equal what a model summed from the applied legs, and
// that a refused move changed nothing. go test -run TestMoveSimulation
// -seed=N replays a failure.
func TestMoveSimulation(t *testing.T) {
	seed := uint64(*seedFlag)
	if seed == 0 {
		seed = rand.Uint64()
	}
	rng := rand.New(rand.NewPCG(seed, seed))
	t.Logf("seed %d", seed)
	accounts := map[uint64]*ledger.Account{}
	model := map[uint64]map[ledger.Asset]int64{}
	assets := []ledger.Asset{ledger.AssetCash, coin, "item:rose"}
	var keys []string
	for step := range 3000 {
		act := uint64(1 + rng.IntN(3))
		a := accounts[act]
		if a == nil {
			a, model[act] = &ledger.Account{ActID: act}, map[ledger.Asset]int64{}
			accounts[act] = a
		}
		asset := assets[rng.IntN(len(assets))]
		n := int64(1 + rng.IntN(50))
		at := int64(step) * 3600_000
		if rng.IntN(4) == 0 {
			g := grant(act, "s", uint64(step), tokens.StageFormal, "a", n)
			g.Asset = asset
			book(t, a, g, at)
			model[act][asset] += n
			continue
		}
		key := fmt.Sprint("k", step)
		if len(keys) > 0 && rng.IntN(5) == 0 {
			key = keys[rng.IntN(len(keys))]
		}
		var m ledger.Move
		switch rng.IntN(4) {
		case 0:
			m = ledger.Move{Kind: ledger.MoveConsume, Legs: leg(asset, -n), Counter: "merchant/m"}
		case 1:
			m = ledger.Move{Kind: ledger.MoveRefund, Legs: leg(asset, n%10+1), Counter: "merchant/m"}
			if len(keys) > 0 {
				m.Ref = keys[rng.IntN(len(keys))]
			} else {
				m.Ref = "none"
			}
		case 2:
			m = ledger.Move{Kind: ledger.MoveWithdrawHold, Legs: []ledger.Leg{{Asset: ledger.AssetCash, Amount: -n}, {Asset: ledger.AssetTransit, Amount: n}}}
		case 3:
			m = ledger.Move{Kind: ledger.MoveTransferIn, Legs: leg(asset, n), Counter: "transfer/x"}
		}
		m.ActID, m.Key = act, key
		before := ledger.MarshalAccount(nil, a)
		r, legs, err := a.ApplyMove(&m, at)
		if err != nil {
			t.Fatalf("seed %d step %d: %v", seed, step, err)
		}
		if r == ledger.MoveApplied {
			keys = append(keys, key)
			for _, l := range legs {
				model[act][l.Asset] += l.Amount
			}
		} else if !bytes.Equal(before, ledger.MarshalAccount(nil, a)) {
			t.Fatalf("seed %d step %d: %v changed the account", seed, step, r)
		}
		a.TakeSealed()
		if err := a.Check(); err != nil {
			t.Fatalf("seed %d step %d: %v", seed, step, err)
		}
		for asset, want := range model[act] {
			if got := a.Balance(asset); got != want || got < 0 {
				t.Fatalf("seed %d step %d: act %d %s balance %d, model %d", seed, step, act, asset, got, want)
			}
		}
	}
}

// TestDetailOfMoves: a ledger page over five months of grants and moves
// shows every month as the account's summaries hold it, the months
// between its first and last (computed from the page's entries) included:
// a move's debit is its month's expense.
func TestDetailOfMoves(t *testing.T) {
	a := &ledger.Account{ActID: 5}
	month := int64(31 * 24 * 3600 * 1000)
	for i := range 10 {
		at := int64(i/2)*month + 1000
		g := grant(5, "lobby", uint64(i+1), tokens.StageFormal, "coin", 100)
		g.Asset = coin
		book(t, a, g, at)
		m := ledger.Move{ActID: 5, Kind: ledger.MoveConsume, Key: fmt.Sprint("c", i), Legs: leg(coin, -30), Counter: "merchant/m"}
		if r, _, err := a.ApplyMove(&m, at+1); r != ledger.MoveApplied || err != nil {
			t.Fatalf("move %d: %v %v", i, r, err)
		}
	}
	d, err := ledger.ReadDetail(a, ledger.DetailQuery{Before: a.EntryCount(), Limit: 20}, nil, a)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Months) != 5 {
		t.Fatalf("%d months, want 5: %+v", len(d.Months), d.Months)
	}
	for _, m := range d.Months {
		if want := a.Month(m.Month); len(want) != 1 || want[0] != m {
			t.Fatalf("month %s: page %+v, account %+v", m.Month, m, want)
		}
		if m.Income != 200 || m.Expense != 60 {
			t.Fatalf("month %s: income %d expense %d, want 200 and 60", m.Month, m.Income, m.Expense)
		}
	}
}
