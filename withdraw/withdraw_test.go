package withdraw_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"redrain/ledger"
	"redrain/metrics"
	"redrain/storage"
	"redrain/storage/storagetest"
	"redrain/withdraw"
	"redrain/withdraw/paytest"
	"redrain/withdraw/withdrawtest"
)

// clientTimeout is the channel client's deadline in these tests; a
// scripted Delay of lateDelay answers after it.
const (
	clientTimeout = 150 * time.Millisecond
	lateDelay     = 500 * time.Millisecond
)

type env struct {
	t     *testing.T
	kv    *storage.TiKV // one store, every service (node) over it
	led   *withdrawtest.Ledger
	pay   *paytest.Server
	skew  atomic.Int64 // ms added to every service's clock
	acts  map[string]uint64
	mu    sync.Mutex
	tweak func(*withdraw.Config)
}

// newStore is the store of the tests' env: one in memory, or the TiKV
// test cluster under TestOnTiKV.
var newStore = func(testing.TB) *storage.TiKV { return storage.NewMemoryStore().Client(nil) }

// TestOnTiKV runs the failure, restart, two-node and late-answer tests
// again over client-go's TiKV test cluster (real optimistic transactions
// and their conflicts) instead of the store in memory.
func TestOnTiKV(t *testing.T) {
	if testing.Short() {
		t.Skip("the TiKV test cluster: not in -short")
	}
	mem := newStore
	newStore = func(t testing.TB) *storage.TiKV { return storagetest.TiKV(t, "") }
	defer func() { newStore = mem }()
	for name, test := range map[string]func(*testing.T){
		"ChannelFailures": TestChannelFailures, "RestartResumes": TestRestartResumes,
		"ConcurrentNodes": TestConcurrentNodes, "PayArrivesTwice": TestPayArrivesTwice, "LateContradiction": TestLateContradiction, "Insufficient": TestInsufficientChangesNothing, "Simulation": TestSimulation,
	} {
		t.Run(name, test)
	}
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, kv: newStore(t), led: withdrawtest.NewLedger(), pay: paytest.New(), acts: map[string]uint64{}}
	t.Cleanup(e.pay.Close)
	return e
}

// service returns a withdrawal service of node over the env's store,
// ledger and channel "bank" (a new one is a restarted node).
func (e *env) service(node string) *withdraw.Service {
	e.t.Helper()
	cfg := withdraw.Config{
		AmountMin: 100, AmountMax: 1_000_000,
		Channels:       map[string]withdraw.Channel{"bank": withdraw.NewHTTPChannel(e.pay.URL, clientTimeout)},
		Node:           node,
		QueryBackoff:   10 * time.Millisecond,
		LateCheckAfter: time.Minute,
		Now:            func() time.Time { return time.Now().Add(time.Duration(e.skew.Load()) * time.Millisecond) },
	}
	if e.tweak != nil {
		e.tweak(&cfg)
	}
	s, err := withdraw.New(e.kv, e.led, e.led, e.led, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

func (e *env) withdraw(s *withdraw.Service, act uint64, amount int64, req string) (*withdraw.Record, error) {
	e.t.Helper()
	e.mu.Lock()
	e.acts[withdraw.ID(1, req)] = act
	e.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return s.Withdraw(ctx, withdraw.Request{AppID: 1, ActID: act, Amount: amount, Channel: "bank", RequestID: req})
}

// checkMoney checks that no money was made or lost, two ways: what the
// packets credited is what users hold (cash, transit, less debt, and what
// they spent) plus what the channel paid; and the payout account is what
// the channel paid. No id was paid twice.
func (e *env) checkMoney() {
	e.t.Helper()
	users, payout := e.led.Sums()
	paid := e.pay.PaidTotal()
	if e.led.Credited() != users+paid {
		e.t.Errorf("credited %d != users %d + paid by the channel %d (%s)", e.led.Credited(), users, paid, e.pay)
	}
	if payout != paid {
		e.t.Errorf("payout account %d != paid by the channel %d (%s)", payout, paid, e.pay)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for id := range e.acts {
		if n := e.pay.Paid(id); n > 1 {
			e.t.Errorf("withdrawal %s paid %d times", id, n)
		}
	}
}

func (e *env) want(act uint64, cash, transit int64) {
	e.t.Helper()
	u := ledger.UserAccount(act)
	if got := e.led.Balance(u, ledger.AssetCash); got != cash {
		e.t.Errorf("%s cash = %d, want %d", u, got, cash)
	}
	if got := e.led.Balance(u, ledger.AssetTransit); got != transit {
		e.t.Errorf("%s transit = %d, want %d", u, got, transit)
	}
}

func wantState(t *testing.T, rec *withdraw.Record, err error, state withdraw.State) {
	t.Helper()
	if err != nil {
		t.Fatalf("withdraw: %v", err)
	}
	if rec.State != state {
		t.Fatalf("state = %s (last error %q), want %s", rec.State, rec.LastError, state)
	}
}

// finish runs a recovery pass of s, which must leave nothing open, and
// checks that withdrawal id ended in state.
func (e *env) finish(s *withdraw.Service, id string, state withdraw.State) *withdraw.Record {
	e.t.Helper()
	if open, err := s.Recover(context.Background()); err != nil || open != 0 {
		e.t.Fatalf("Recover = %d, %v", open, err)
	}
	rec, err := s.Get(context.Background(), id)
	wantState(e.t, rec, err, state)
	return rec
}

func TestSettleBooksOutstandingFirst(t *testing.T) {
	e := newEnv(t)
	e.led.Issue(7, 3, 100) // the user's cash is all outstanding
	s := e.service("n1")
	rec, err := e.withdraw(s, 7, 250, "r1")
	wantState(t, rec, err, withdraw.StateSettled)
	e.want(7, 50, 0)
	if got := e.led.Balance("payout/bank", ledger.AssetTransit); got != 250 {
		t.Errorf("payout/bank = %d, want 250", got)
	}
	if rec.Attempts != 1 || rec.ChannelRef == "" || rec.HeldAt == 0 || rec.DoneAt == 0 {
		t.Errorf("record %+v: want 1 attempt, a channel ref, held and done times", rec)
	}
	if left, _ := e.led.Outstanding(context.Background(), 7); len(left) != 0 {
		t.Errorf("%d packets still outstanding", len(left))
	}
	got, err := s.Get(context.Background(), rec.ID)
	if err != nil || got.State != withdraw.StateSettled {
		t.Errorf("Get = %+v, %v", got, err)
	}
	// A repeat answers the same withdrawal and pays nothing more.
	again, err := e.withdraw(s, 7, 250, "r1")
	if err != nil || again.ID != rec.ID || again.State != withdraw.StateSettled {
		t.Errorf("repeat = %+v, %v", again, err)
	}
	if n := e.pay.Requests(rec.ID); n != 1 {
		t.Errorf("%d pay requests, want 1", n)
	}
	e.checkMoney()
}

// TestMetrics: the node's series count what it finished, its Pays and
// their unknown outcomes, and what the last recovery pass left open.
func TestMetrics(t *testing.T) {
	e := newEnv(t)
	reg := &metrics.Registry{}
	e.tweak = func(c *withdraw.Config) { c.Metrics = reg; c.PayAttempts = 1 }
	e.led.Issue(7, 10, 100)
	e.pay.Script(withdraw.ID(1, "b"), paytest.Step{Refuse: true})
	e.pay.Script(withdraw.ID(1, "d"), paytest.Step{Drop: true})
	s := e.service("n1")
	for _, r := range []struct {
		req    string
		amount int64
	}{{"a", 100}, {"b", 100}, {"c", 5000}, {"d", 100}} {
		_, _ = e.withdraw(s, 7, r.amount, r.req)
	}
	if _, err := s.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, x := range reg.Samples() {
		name := x.Name
		for _, l := range x.Labels {
			name += "," + l.Value
		}
		got[name] = x.Value
	}
	want := map[string]float64{
		"redrain_withdrawals_total,settled": 2, "redrain_withdrawals_total,reversed": 1, "redrain_withdrawals_total,refused": 1,
		"redrain_withdrawals_total,debt": 0, "redrain_withdrawal_pays_total": 4, "redrain_withdrawal_pay_unknown_total": 1,
		"redrain_withdrawals_open": 1, // the reversal, its late check not due
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
}

func TestInsufficientChangesNothing(t *testing.T) {
	e := newEnv(t)
	e.led.Issue(7, 1, 100)
	s := e.service("n1")
	for range 2 { // the repeat answers the same
		rec, err := e.withdraw(s, 7, 200, "r1")
		if !errors.Is(err, withdraw.ErrInsufficient) || rec == nil || rec.State != withdraw.StateRefused {
			t.Fatalf("withdraw = %+v, %v; want refused, insufficient_funds", rec, err)
		}
	}
	e.want(7, 100, 0)
	if e.pay.PaidTotal() != 0 {
		t.Errorf("paid %d", e.pay.PaidTotal())
	}
	if open, err := s.Recover(context.Background()); err != nil || open != 0 {
		t.Errorf("Recover = %d, %v: a refused withdrawal is finished", open, err)
	}
	e.checkMoney()
}

func TestRules(t *testing.T) {
	e := newEnv(t)
	e.led.Issue(7, 1, 5000)
	s := e.service("n1")
	ctx := context.Background()
	for _, c := range []struct {
		r    withdraw.Request
		code error
	}{
		{withdraw.Request{AppID: 1, ActID: 7, Amount: 99, Channel: "bank", RequestID: "a"}, withdraw.ErrAmountOutOfRange},
		{withdraw.Request{AppID: 1, ActID: 7, Amount: 1_000_001, Channel: "bank", RequestID: "a"}, withdraw.ErrAmountOutOfRange},
		{withdraw.Request{AppID: 1, ActID: 7, Amount: 100, Channel: "post", RequestID: "a"}, withdraw.ErrUnknownChannel},
	} {
		if _, err := s.Withdraw(ctx, c.r); !errors.Is(err, c.code) {
			t.Errorf("Withdraw(%+v) = %v, want %s", c.r, err, c.code)
		}
	}
	if _, err := e.withdraw(s, 7, 100, "b"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.withdraw(s, 7, 300, "b"); !errors.Is(err, withdraw.ErrRequestReused) {
		t.Errorf("other amount under the same request id: %v, want request_id_reused", err)
	}
	if _, err := s.Get(ctx, "nope"); !errors.Is(err, withdraw.ErrNotFound) {
		t.Errorf("Get(nope) = %v", err)
	}
	e.want(7, 4900, 0)
	e.checkMoney()
}

// TestChannelFailures runs each scripted failure of the channel and
// checks where the withdrawal ends, the balances, and that no payout was
// made twice.
func TestChannelFailures(t *testing.T) {
	for _, c := range []struct {
		name     string
		steps    []paytest.Step
		state    withdraw.State
		pays     int // Pay requests the server saw
		cash     int64
		attempts int
	}{
		{"refuses", []paytest.Step{{Refuse: true}}, withdraw.StateReversed, 1, 1000, 1},
		{"times out having paid", []paytest.Step{{Delay: lateDelay}}, withdraw.StateSettled, 1, 700, 1},
		{"times out having refused", []paytest.Step{{Refuse: true, Delay: lateDelay}}, withdraw.StateReversed, 1, 1000, 1},
		{"times out having done nothing", []paytest.Step{{Drop: true, Delay: lateDelay}}, withdraw.StateSettled, 2, 700, 2},
		{"loses the request twice", []paytest.Step{{Drop: true}, {Drop: true}}, withdraw.StateSettled, 3, 700, 3},
		{"fails after paying", []paytest.Step{{Status: 500}}, withdraw.StateSettled, 1, 700, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			e.led.Issue(7, 10, 100)
			e.pay.Script(withdraw.ID(1, "r"), c.steps...)
			rec, err := e.withdraw(e.service("n1"), 7, 300, "r")
			wantState(t, rec, err, c.state)
			e.want(7, c.cash, 0)
			if n := e.pay.Requests(rec.ID); n != c.pays {
				t.Errorf("%d pay requests, want %d", n, c.pays)
			}
			if rec.Attempts != c.attempts {
				t.Errorf("attempts = %d, want %d", rec.Attempts, c.attempts)
			}
			e.checkMoney()
		})
	}
}

// TestPayArrivesTwice: the first Pay is slow in the network (it reaches
// the channel after the client's deadline and after the query that found
// nothing), so the service sends it again; the channel receives the same
// id twice, pays it once, and the late one is answered as a duplicate.
func TestPayArrivesTwice(t *testing.T) {
	e := newEnv(t)
	e.led.Issue(7, 10, 100)
	id := withdraw.ID(1, "r")
	e.pay.Script(id, paytest.Step{Late: lateDelay})
	rec, err := e.withdraw(e.service("n1"), 7, 300, "r")
	wantState(t, rec, err, withdraw.StateSettled)
	for deadline := time.Now().Add(5 * time.Second); e.pay.Duplicates(id) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the late Pay never reached the channel (%s)", e.pay)
		}
	}
	if n, paid := e.pay.Requests(id), e.pay.Paid(id); n != 2 || paid != 1 || rec.Attempts != 2 {
		t.Errorf("%d pay requests, paid %d times, %d attempts: want 2, 1, 2", n, paid, rec.Attempts)
	}
	e.want(7, 700, 0)
	e.checkMoney()
}

func TestUndecidedStaysPaying(t *testing.T) {
	e := newEnv(t)
	e.led.Issue(7, 10, 100)
	e.tweak = func(c *withdraw.Config) { c.PayAttempts = 1 }
	id := withdraw.ID(1, "r")
	e.pay.Script(id, paytest.Step{Drop: true})
	s := e.service("n1")
	rec, err := e.withdraw(s, 7, 300, "r")
	wantState(t, rec, err, withdraw.StatePaying) // the channel never got it, one Pay a drive: not decided
	e.want(7, 700, 300)
	e.finish(s, id, withdraw.StateSettled)
	e.want(7, 700, 0)
	e.checkMoney()
}

// TestRestartResumes stops a node in the middle of a payout (its request
// deadline cuts the channel's answer and its queries) and has another
// node, over the same store, finish it once the lease is over.
func TestRestartResumes(t *testing.T) {
	e := newEnv(t)
	e.led.Issue(7, 10, 100)
	e.tweak = func(c *withdraw.Config) { c.Channels["bank"] = withdraw.NewHTTPChannel(e.pay.URL, 5*time.Second) }
	id := withdraw.ID(1, "r")
	e.pay.Script(id, paytest.Step{Delay: lateDelay}) // pays, answers late
	a := e.service("n1")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	rec, err := a.Withdraw(ctx, withdraw.Request{AppID: 1, ActID: 7, Amount: 300, Channel: "bank", RequestID: "r"})
	cancel()
	e.acts[id] = 7
	wantState(t, rec, err, withdraw.StatePaying)
	b := e.service("n2")
	if _, err := b.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	if rec, _ = b.Get(context.Background(), id); rec.State != withdraw.StatePaying {
		t.Fatalf("n2 took over n1's live lease: %s", rec.State)
	}
	e.skew.Store(time.Minute.Milliseconds()) // n1's lease is over
	rec = e.finish(b, id, withdraw.StateSettled)
	if rec.Owner != "n2" || e.pay.Requests(id) != 1 {
		t.Errorf("owner %s, %d pay requests: want n2 to settle it by a query", rec.Owner, e.pay.Requests(id))
	}
	e.want(7, 700, 0)
	e.checkMoney()
}

// TestRestartBeforeHold: booking is down when the withdrawal is asked;
// it is recorded, and a restarted node books it all later.
func TestRestartBeforeHold(t *testing.T) {
	e := newEnv(t)
	e.led.Issue(7, 10, 100)
	e.led.SetDown(true)
	rec, err := e.withdraw(e.service("n1"), 7, 300, "r")
	wantState(t, rec, err, withdraw.StateRequested)
	if rec.LastError == "" {
		t.Error("no last error recorded")
	}
	e.led.SetDown(false)
	e.skew.Store(time.Minute.Milliseconds())
	e.finish(e.service("n2"), rec.ID, withdraw.StateSettled)
	e.want(7, 700, 0)
	e.checkMoney()
}

// TestLateContradiction: the channel refuses, then says it paid: the
// reversal stands in the books and withdraw_debt takes the money back,
// from cash as far as it goes and as debt beyond.
func TestLateContradiction(t *testing.T) {
	e := newEnv(t)
	e.led.Issue(7, 10, 100)
	id := withdraw.ID(1, "r")
	e.pay.Script(id, paytest.Step{LatePaid: true})
	s := e.service("n1")
	rec, err := e.withdraw(s, 7, 300, "r")
	wantState(t, rec, err, withdraw.StateReversed)
	e.want(7, 1000, 0)
	e.led.Take(7, 900) // the user spends the reversed cash
	if _, err := s.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	if rec, _ = s.Get(context.Background(), id); rec.State != withdraw.StateReversed {
		t.Fatalf("late check before it was due: %s", rec.State)
	}
	e.skew.Store(2 * time.Minute.Milliseconds())
	e.finish(s, id, withdraw.StateDebt)
	e.want(7, 0, 0)
	if got := e.led.Balance(ledger.UserAccount(7), ledger.AssetDebt); got != 200 {
		t.Errorf("debt = %d, want 200", got)
	}
	e.checkMoney()
}

// TestConcurrentNodes drives the same withdrawals from two nodes at once:
// each is paid once.
func TestConcurrentNodes(t *testing.T) {
	e := newEnv(t)
	e.tweak = func(c *withdraw.Config) { c.Lease = time.Millisecond }
	a, b := e.service("n1"), e.service("n2")
	var wg sync.WaitGroup
	for i := range 8 {
		act := uint64(10 + i)
		e.led.Issue(act, 2, 100)
		req := "r" + string(rune('a'+i))
		e.pay.Script(withdraw.ID(1, req), paytest.Step{Delay: lateDelay})
		for _, s := range []*withdraw.Service{a, b} {
			wg.Go(func() { _, _ = e.withdraw(s, act, 150, req) })
		}
	}
	wg.Wait()
	for _, s := range []*withdraw.Service{a, b, a} {
		if _, err := s.Recover(context.Background()); err != nil {
			t.Log(err)
		}
	}
	if open, err := b.Recover(context.Background()); err != nil || open != 0 {
		t.Fatalf("Recover = %d, %v", open, err)
	}
	for i := range 8 {
		e.want(uint64(10+i), 50, 0)
	}
	e.checkMoney()
}

func TestHTTPChannelDuplicatePay(t *testing.T) {
	pay := paytest.New()
	defer pay.Close()
	ch := withdraw.NewHTTPChannel(pay.URL, time.Second)
	ctx := context.Background()
	if a, err := ch.Query(ctx, "x"); err != nil || a.Outcome != withdraw.Unknown {
		t.Fatalf("Query before = %+v, %v", a, err)
	}
	for range 2 {
		a, err := ch.Pay(ctx, withdraw.Payout{ID: "x", ActID: 1, Amount: 500})
		if err != nil || a.Outcome != withdraw.Paid || a.Ref == "" {
			t.Fatalf("Pay = %+v, %v", a, err)
		}
	}
	if pay.Paid("x") != 1 || pay.PaidTotal() != 500 || pay.Requests("x") != 2 {
		t.Errorf("paid %d times, %d fen, %d requests: want once, 500, 2", pay.Paid("x"), pay.PaidTotal(), pay.Requests("x"))
	}
	if _, err := ch.Pay(ctx, withdraw.Payout{ID: "x", ActID: 1, Amount: 600}); err == nil {
		t.Error("Pay of a paid id with another amount: no error")
	}
}
