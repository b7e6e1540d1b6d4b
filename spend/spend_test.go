package spend_test

import (
	"context"
	"errors"
	"flag"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"redrain/ledger"
	"redrain/spend"
	"redrain/spend/spendtest"
)

func valid(op spend.Op) spend.Request {
	r := spend.Request{Op: op, AppID: 3, RequestID: "r-1", ActID: 7, Asset: "coin:gold", Amount: 10}
	switch op {
	case spend.OpConsume:
		r.MerchantID = "shop"
	case spend.OpRefund, spend.OpReverse:
		r.MerchantID, r.Consumption = "shop", "c-1"
	case spend.OpTransfer, spend.OpGift:
		r.ToActID = 8
	}
	return r
}

func TestValidate(t *testing.T) {
	for op := spend.OpRecharge; op <= spend.OpExpire; op++ {
		r := valid(op)
		if err := spend.Validate(&r); err != nil {
			t.Errorf("Validate(%s) = %v, want nil", op, err)
		}
	}
	tests := []struct {
		name  string
		op    spend.Op
		edit  func(*spend.Request)
		field string
	}{
		{"unknown op", 99, func(*spend.Request) {}, "op"},
		{"no app", spend.OpConsume, func(r *spend.Request) { r.AppID = 0 }, "app_id"},
		{"empty request id", spend.OpConsume, func(r *spend.Request) { r.RequestID = "" }, "request_id"},
		{"request id with a colon", spend.OpConsume, func(r *spend.Request) { r.RequestID = "a:b" }, "request_id"},
		{"request id with '<'", spend.OpConsume, func(r *spend.Request) { r.RequestID = "a<1" }, "request_id"},
		{"long request id", spend.OpConsume, func(r *spend.Request) { r.RequestID = strings.Repeat("a", 65) }, "request_id"},
		{"no account", spend.OpConsume, func(r *spend.Request) { r.ActID = 0 }, "act_id"},
		{"zero amount", spend.OpConsume, func(r *spend.Request) { r.Amount = 0 }, "amount"},
		{"negative amount", spend.OpRecharge, func(r *spend.Request) { r.Amount = -5 }, "amount"},
		{"amount too large", spend.OpRecharge, func(r *spend.Request) { r.Amount = spend.AmountMax + 1 }, "amount"},
		{"recharge cash", spend.OpRecharge, func(r *spend.Request) { r.Asset = ledger.AssetCash }, "asset"},
		{"recharge item", spend.OpRecharge, func(r *spend.Request) { r.Asset = "item:card" }, "asset"},
		{"unknown asset", spend.OpConsume, func(r *spend.Request) { r.Asset = "gems" }, "asset"},
		{"coin without currency", spend.OpConsume, func(r *spend.Request) { r.Asset = "coin:" }, "asset"},
		{"coin with a slash", spend.OpConsume, func(r *spend.Request) { r.Asset = "coin:a/b" }, "asset"},
		{"transit is not spent", spend.OpConsume, func(r *spend.Request) { r.Asset = ledger.AssetTransit }, "asset"},
		{"debt is not spent", spend.OpConsume, func(r *spend.Request) { r.Asset = ledger.AssetDebt }, "asset"},
		{"cash is not transferred", spend.OpTransfer, func(r *spend.Request) { r.Asset = ledger.AssetCash }, "asset"},
		{"general reward is not gifted", spend.OpGift, func(r *spend.Request) { r.Asset = ledger.AssetGeneral }, "asset"},
		{"transfer to nobody", spend.OpTransfer, func(r *spend.Request) { r.ToActID = 0 }, "to_act_id"},
		{"transfer to oneself", spend.OpGift, func(r *spend.Request) { r.ToActID = 7 }, "to_act_id"},
		{"consume to a receiver", spend.OpConsume, func(r *spend.Request) { r.ToActID = 8 }, "to_act_id"},
		{"consume without merchant", spend.OpConsume, func(r *spend.Request) { r.MerchantID = "" }, "merchant_id"},
		{"merchant with a slash", spend.OpConsume, func(r *spend.Request) { r.MerchantID = "a/b" }, "merchant_id"},
		{"recharge with merchant", spend.OpRecharge, func(r *spend.Request) { r.MerchantID = "shop" }, "merchant_id"},
		{"refund without consumption", spend.OpRefund, func(r *spend.Request) { r.Consumption = "" }, "consumption_id"},
		{"refund of itself", spend.OpRefund, func(r *spend.Request) { r.Consumption = r.RequestID }, "consumption_id"},
		{"consume with consumption", spend.OpConsume, func(r *spend.Request) { r.Consumption = "c" }, "consumption_id"},
		{"budget on a consume", spend.OpConsume, func(r *spend.Request) { r.BudgetID = "b" }, "budget_id"},
		{"budget with a space", spend.OpExpire, func(r *spend.Request) { r.BudgetID = "a b" }, "budget_id"},
	}
	for _, tt := range tests {
		r := valid(tt.op)
		r.Op = tt.op
		tt.edit(&r)
		var ie *spend.InvalidError
		if err := spend.Validate(&r); !errors.As(err, &ie) || ie.Field != tt.field {
			t.Errorf("%s: Validate = %v, want an error on %q", tt.name, err, tt.field)
		}
	}
}

func TestMoves(t *testing.T) {
	check := func(r spend.Request, want []ledger.Move) {
		t.Helper()
		got := spend.Moves(&r)
		if len(got) != len(want) {
			t.Fatalf("Moves(%s) = %+v, want %+v", r.Op, got, want)
		}
		for i := range got {
			g, w := got[i], want[i]
			if g.ActID != w.ActID || g.Kind != w.Kind || g.Key != w.Key || g.AppID != w.AppID || g.Counter != w.Counter ||
				g.Ref != w.Ref || len(g.Legs) != 1 || g.Legs[0] != w.Legs[0] {
				t.Errorf("Moves(%s)[%d] = %+v, want %+v", r.Op, i, g, w)
			}
			if err := ledger.MovePostings(nil, &g).Check(); err != nil {
				t.Errorf("Moves(%s)[%d]: postings: %v", r.Op, i, err)
			}
		}
	}
	leg := func(a ledger.Asset, n int64) []ledger.Leg { return []ledger.Leg{{Asset: a, Amount: n}} }
	check(valid(spend.OpRecharge), []ledger.Move{{ActID: 7, Kind: ledger.MoveRecharge, Key: "3:r-1", AppID: 3, Legs: leg("coin:gold", 10), Counter: "recharge/3"}})
	check(valid(spend.OpConsume), []ledger.Move{{ActID: 7, Kind: ledger.MoveConsume, Key: "3:r-1", AppID: 3, Legs: leg("coin:gold", -10), Counter: "merchant/shop"}})
	check(valid(spend.OpRefund), []ledger.Move{{ActID: 7, Kind: ledger.MoveRefund, Key: "3:r-1", AppID: 3, Legs: leg("coin:gold", 10), Counter: "merchant/shop", Ref: "3:c-1"}})
	check(valid(spend.OpReverse), []ledger.Move{{ActID: 7, Kind: ledger.MoveReverse, Key: "3:r-1", AppID: 3, Legs: leg("coin:gold", 10), Counter: "merchant/shop", Ref: "3:c-1"}})
	check(valid(spend.OpExpire), []ledger.Move{{ActID: 7, Kind: ledger.MoveExpire, Key: "3:r-1", AppID: 3, Legs: leg("coin:gold", -10), Counter: "expired/coin:gold"}})
	e := valid(spend.OpExpire)
	e.BudgetID = "act-9"
	check(e, []ledger.Move{{ActID: 7, Kind: ledger.MoveExpire, Key: "3:r-1", AppID: 3, Legs: leg("coin:gold", -10), Counter: "budget/act-9"}})
	check(valid(spend.OpTransfer), []ledger.Move{
		{ActID: 7, Kind: ledger.MoveTransferOut, Key: "3:r-1", AppID: 3, Legs: leg("coin:gold", -10), Counter: "transfer/7/3:r-1", Ref: "8"},
		{ActID: 8, Kind: ledger.MoveTransferIn, Key: "3:r-1<7", AppID: 3, Legs: leg("coin:gold", 10), Counter: "transfer/7/3:r-1", Ref: "7"}})
	check(valid(spend.OpGift), []ledger.Move{
		{ActID: 7, Kind: ledger.MoveGiftOut, Key: "3:r-1", AppID: 3, Legs: leg("coin:gold", -10), Counter: "transfer/7/3:r-1", Ref: "8"},
		{ActID: 8, Kind: ledger.MoveGiftIn, Key: "3:r-1<7", AppID: 3, Legs: leg("coin:gold", 10), Counter: "transfer/7/3:r-1", Ref: "7"}})
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// do runs r and checks its failure (0: booked) and the balance it left
// on r's account.
func do(t *testing.T, s *spend.Service, r spend.Request, failure ledger.MoveResult, balance int64) spend.Outcome {
	t.Helper()
	o, err := s.Do(ctxT(t), r, nil)
	if err != nil {
		t.Fatalf("Do(%s %s) = %v", r.Op, r.RequestID, err)
	}
	if got := o.Failure(); got != failure {
		t.Fatalf("Do(%s %s): failure %d, want %d", r.Op, r.RequestID, got, failure)
	}
	if failure == 0 && o.Moves[0].Balance != balance {
		t.Errorf("Do(%s %s): balance %d, want %d", r.Op, r.RequestID, o.Moves[0].Balance, balance)
	}
	return o
}

func TestServiceRules(t *testing.T) {
	fake := &spendtest.Booker{}
	s := &spend.Service{Booker: fake}
	req := func(op spend.Op, id string, amount int64) spend.Request {
		r := valid(op)
		r.RequestID, r.Amount = id, amount
		return r
	}
	user := ledger.UserAccount(7)
	do(t, s, req(spend.OpRecharge, "r1", 100), 0, 100)
	if o := do(t, s, req(spend.OpRecharge, "r1", 100), 0, 100); !o.Replayed() {
		t.Errorf("a repeated recharge is not replayed")
	}
	do(t, s, req(spend.OpRecharge, "r1", 101), ledger.MoveKeyReused, 0)
	do(t, s, req(spend.OpConsume, "r1", 1), ledger.MoveKeyReused, 0)
	do(t, s, req(spend.OpConsume, "c1", 101), ledger.MoveInsufficient, 0)
	if got := fake.Balance(user, "coin:gold"); got != 100 {
		t.Fatalf("balance after insufficient funds %d, want 100", got)
	}
	c1 := req(spend.OpConsume, "c1", 60)
	do(t, s, c1, 0, 40)
	refund := func(id, of string, n int64) spend.Request {
		r := req(spend.OpRefund, id, n)
		r.Consumption = of
		return r
	}
	reverse := func(id, of string, n int64) spend.Request {
		r := refund(id, of, n)
		r.Op = spend.OpReverse
		return r
	}
	do(t, s, refund("f1", "c1", 20), 0, 60)
	do(t, s, refund("f2", "c1", 41), ledger.MoveRefused, 0)
	do(t, s, refund("f2", "c1", 40), 0, 100)
	do(t, s, refund("f3", "c1", 1), ledger.MoveRefused, 0)
	do(t, s, refund("f4", "nope", 1), ledger.MoveRefused, 0)
	do(t, s, reverse("v1", "c1", 60), ledger.MoveRefused, 0) // partly refunded
	do(t, s, req(spend.OpConsume, "c2", 30), 0, 70)
	do(t, s, reverse("v2", "c2", 29), ledger.MoveRefused, 0) // not the whole
	do(t, s, reverse("v2", "c2", 30), 0, 100)
	do(t, s, reverse("v2", "c2", 30), 0, 100) // a repeat
	do(t, s, reverse("v3", "c2", 30), ledger.MoveRefused, 0)
	do(t, s, refund("f5", "c2", 1), ledger.MoveRefused, 0)
	if got := fake.Balance("merchant/shop", "coin:gold"); got != 0 {
		t.Errorf("merchant balance %d, want 0 after every consumption came back", got)
	}
	e := req(spend.OpExpire, "e1", 30)
	e.BudgetID = "act-9"
	do(t, s, e, 0, 70)
	do(t, s, req(spend.OpExpire, "e2", 71), ledger.MoveInsufficient, 0)
	do(t, s, req(spend.OpExpire, "e2", 70), 0, 0)
	if got := fake.Balance("budget/act-9", "coin:gold"); got != 30 {
		t.Errorf("budget/act-9 %d, want the 30 expired", got)
	}
	if got := fake.Balance("expired/coin:gold", "coin:gold"); got != 70 {
		t.Errorf("expired/coin:gold %d, want 70", got)
	}
	for a, n := range fake.Sums() {
		if n != 0 {
			t.Errorf("%s sums to %d over all accounts", a, n)
		}
	}
}

func TestTransferCrashBetweenMoves(t *testing.T) {
	fake := &spendtest.Booker{}
	fake.Credit(7, "item:card", 5)
	s := &spend.Service{Booker: fake}
	r := valid(spend.OpGift)
	r.Asset, r.Amount = "item:card", 3
	crash := errors.New("partition owner gone")
	fake.Fail = func(m *ledger.Move) error {
		if m.ActID == 8 {
			return crash
		}
		return nil
	}
	if _, err := s.Do(ctxT(t), r, nil); !errors.Is(err, crash) {
		t.Fatalf("Do with the receiver's partition down = %v, want %v", err, crash)
	}
	counter := spend.TransferAccount(7, spend.Key(3, "r-1"))
	if got := fake.Balance(counter, "item:card"); got != 3 {
		t.Fatalf("%s holds %d after the crash, want 3 (unbalanced: the consistency service's to find)", counter, got)
	}
	fake.Fail = nil
	o := do(t, s, r, 0, 2)
	if o.Moves[0].Result != ledger.MoveRepeated || o.Moves[1].Result != ledger.MoveApplied || o.Replayed() {
		t.Errorf("the repeat after the crash: %+v, want the sender's repeated and the receiver's applied", o.Moves)
	}
	if o.Moves[1].Balance != 3 {
		t.Errorf("receiver balance %d, want 3", o.Moves[1].Balance)
	}
	if o := do(t, s, r, 0, 2); !o.Replayed() {
		t.Errorf("a third time: %+v, want replayed", o.Moves)
	}
	if got := fake.Balance(counter, "item:card"); got != 0 {
		t.Errorf("%s holds %d once complete, want 0", counter, got)
	}
	// The same request id to another receiver is another request.
	r.ToActID = 9
	do(t, s, r, ledger.MoveKeyReused, 0)
	// More than the sender holds: nothing reaches the receiver.
	r2 := valid(spend.OpTransfer)
	r2.RequestID, r2.Asset, r2.Amount = "t2", "item:card", 3
	do(t, s, r2, ledger.MoveInsufficient, 0)
	if got := fake.Balance(ledger.UserAccount(8), "item:card"); got != 3 {
		t.Errorf("receiver holds %d, want 3", got)
	}
}

func TestReach(t *testing.T) {
	fake := &spendtest.Booker{}
	fake.Join(7, 3, "u7")
	fake.Join(8, 4, "u8")
	fake.Credit(7, "coin:gold", 10)
	s := &spend.Service{Booker: fake}
	errNo := errors.New("not reached")
	reach := func(id uint64, a *ledger.Account) error {
		if a == nil {
			return errNo
		}
		for _, u := range a.Apps {
			if u.AppID == 3 {
				return nil
			}
		}
		return errNo
	}
	r := valid(spend.OpTransfer)
	if _, err := s.Do(ctxT(t), r, reach); !errors.Is(err, errNo) {
		t.Errorf("transfer to an account without the app's user = %v, want %v", err, errNo)
	}
	if got := fake.Balance(ledger.UserAccount(7), "coin:gold"); got != 10 {
		t.Errorf("balance %d after a refused transfer, want 10", got)
	}
	c := valid(spend.OpConsume)
	if o, err := s.Do(ctxT(t), c, reach); err != nil || !o.Booked() {
		t.Errorf("consume on a reached account = %+v, %v", o, err)
	}
}

// budgets is a Budgets of fixed budgets.
type budgets map[string]ledger.Asset

func (b budgets) BudgetAsset(_ context.Context, id string) (ledger.Asset, bool, error) {
	a, ok := b[id]
	return a, ok, nil
}

// TestExpiryBudget: an expiry into a budget that does not exist, or that
// pays another asset, is refused before anything is booked.
func TestExpiryBudget(t *testing.T) {
	fake := &spendtest.Booker{}
	fake.Credit(7, "coin:gold", 10)
	s := &spend.Service{Booker: fake, Budgets: budgets{"act-9": "coin:gold", "act-8": "coin:silver"}}
	for _, id := range []string{"no-such", "act-8"} {
		r := valid(spend.OpExpire)
		r.BudgetID, r.Amount = id, 5
		var ie *spend.InvalidError
		if _, err := s.Do(ctxT(t), r, nil); !errors.As(err, &ie) || ie.Field != "budget_id" {
			t.Errorf("expiry into budget %s = %v, want an invalid budget_id", id, err)
		}
	}
	if got := fake.Balance(ledger.UserAccount(7), "coin:gold"); got != 10 {
		t.Errorf("balance %d after refused expiries, want 10", got)
	}
	r := valid(spend.OpExpire)
	r.BudgetID, r.Amount = "act-9", 5
	if o, err := s.Do(ctxT(t), r, nil); err != nil || !o.Booked() {
		t.Errorf("expiry into its budget = %+v, %v", o, err)
	}
	if got := fake.Balance("budget/act-9", "coin:gold"); got != 5 {
		t.Errorf("budget/act-9 %d, want 5", got)
	}
}

var seed = flag.Uint64("seed", 0, "the seed of TestSimulation (0: from the clock)")

// TestSimulation runs random requests, some with a crash between a
// transfer's moves and each repeated at random, and checks after every
// step that no balance is below zero, every asset sums to zero over all
// accounts, and the service's balances match a model.
func TestSimulation(t *testing.T) {
	s0 := *seed
	if s0 == 0 {
		s0 = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (go test -run TestSimulation -seed=%d replays it)", s0, s0)
	rng := rand.New(rand.NewPCG(s0, 1))
	fake := &spendtest.Booker{}
	s := &spend.Service{Booker: fake}
	const users = 4
	assets := []ledger.Asset{"coin:a", "item:b"}
	model := map[uint64]map[ledger.Asset]int64{}
	for u := uint64(1); u <= users; u++ {
		model[u] = map[ledger.Asset]int64{}
	}
	var consumed []spend.Request
	var sent []spend.Request
	for step := range 2000 {
		var r spend.Request
		if len(sent) > 0 && rng.IntN(5) == 0 {
			r = sent[rng.IntN(len(sent))] // a repeat
		} else {
			r = spend.Request{AppID: 1, RequestID: "s" + strconv.Itoa(step), ActID: 1 + rng.Uint64N(users),
				Asset: assets[rng.IntN(len(assets))], Amount: 1 + rng.Int64N(20)}
			switch rng.IntN(6) {
			case 0:
				r.Op, r.Asset = spend.OpRecharge, "coin:a"
				r.Amount *= 3
			case 1:
				r.Op, r.MerchantID = spend.OpConsume, "m"
			case 2:
				if len(consumed) == 0 {
					continue
				}
				c := consumed[rng.IntN(len(consumed))]
				r.Op, r.ActID, r.Asset, r.MerchantID, r.Consumption = spend.OpRefund, c.ActID, c.Asset, "m", c.RequestID
				if rng.IntN(2) == 0 {
					r.Op, r.Amount = spend.OpReverse, c.Amount
				}
			case 3, 4:
				r.Op, r.ToActID = spend.OpTransfer+spend.Op(rng.IntN(2)), 1+rng.Uint64N(users)
				if r.ToActID == r.ActID {
					continue
				}
			default:
				r.Op = spend.OpExpire
			}
		}
		sent = append(sent, r)
		crash := rng.IntN(8) == 0
		fake.Fail = func(m *ledger.Move) error {
			if crash && (m.Kind == ledger.MoveTransferIn || m.Kind == ledger.MoveGiftIn) {
				return errors.New("crash")
			}
			return nil
		}
		o, err := s.Do(ctxT(t), r, nil)
		if err != nil && !crash {
			t.Fatalf("seed %d step %d: %+v: %v", s0, step, r, err)
		}
		for _, b := range o.Moves {
			if b.Result == ledger.MoveApplied {
				model[b.Move.ActID][b.Move.Legs[0].Asset] += b.Move.Legs[0].Amount
			}
		}
		if err == nil && o.Booked() && r.Op == spend.OpConsume {
			consumed = append(consumed, r)
		}
		for a, n := range fake.Sums() {
			if n != 0 {
				t.Fatalf("seed %d step %d: %s sums to %d", s0, step, a, n)
			}
		}
		for u, bs := range model {
			for _, a := range assets {
				got := fake.Balance(ledger.UserAccount(u), a)
				if got < 0 || got != bs[a] {
					t.Fatalf("seed %d step %d: user %d %s = %d, model %d", s0, step, u, a, got, bs[a])
				}
			}
		}
	}
	// Every transfer repeated once more completes: no transfer account
	// is left unbalanced.
	fake.Fail = nil
	for _, r := range sent {
		if r.Op != spend.OpTransfer && r.Op != spend.OpGift {
			continue
		}
		if _, err := s.Do(ctxT(t), r, nil); err != nil {
			t.Fatalf("seed %d: completing %+v: %v", s0, r, err)
		}
		if got := fake.Balance(spend.TransferAccount(r.ActID, spend.Key(r.AppID, r.RequestID)), r.Asset); got != 0 {
			t.Errorf("seed %d: transfer %s holds %d after its repeat", s0, r.RequestID, got)
		}
	}
}
