package withdraw_test

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"redrain/ledger"
	"redrain/withdraw"
	"redrain/withdraw/paytest"
)

var seedFlag = flag.Uint64("seed", 0, "TestSimulation's seed (0: from the clock)")

// TestSimulation runs random withdrawals on two nodes over one store and
// one payout server whose answers fail at random (refusals, time-outs
// having paid or not, lost requests, 5xx after paying, late
// contradictions), with requests cut short (a node stopping mid-way),
// repeats, spending and clock jumps in between. After every step no
// payout account holds more than the channel paid and the channel paid no
// id twice; at the end, once the recovery loop has finished everything,
// the money is exact.
func TestSimulation(t *testing.T) {
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay: go test ./withdraw -run '%s$' -seed=%d)", seed, t.Name(), seed)
	r := rand.New(rand.NewPCG(seed, 0))
	e := newEnv(t)
	e.tweak = func(c *withdraw.Config) {
		c.Channels["bank"] = withdraw.NewHTTPChannel(e.pay.URL, 60*time.Millisecond)
		c.Lease = time.Duration(1+r.IntN(200)) * time.Millisecond
		c.PayAttempts = 1 + r.IntN(3)
		c.QueryAttempts = 1 + r.IntN(3)
		c.QueryBackoff = time.Millisecond
		c.LateCheckAfter = time.Second
	}
	nodes := []*withdraw.Service{e.service("n1"), e.service("n2")}
	const users = 5
	for u := range users {
		e.led.Issue(uint64(u+1), 1+r.IntN(10), int64(100+r.IntN(400)))
	}
	scripts := []paytest.Step{
		{}, {Refuse: true}, {Delay: 200 * time.Millisecond}, {Refuse: true, Delay: 200 * time.Millisecond},
		{Drop: true}, {Drop: true, Delay: 200 * time.Millisecond}, {Status: 500}, {LatePaid: true},
		{Late: 100 * time.Millisecond}, {Late: 100 * time.Millisecond, Refuse: true},
	}
	scripted := map[string]bool{}
	withdrawOn := func(s *withdraw.Service, act uint64, amount int64, req string, within time.Duration) {
		id := withdraw.ID(1, req)
		e.mu.Lock()
		if !scripted[id] {
			scripted[id] = true
			var steps []paytest.Step
			for range r.IntN(3) {
				steps = append(steps, scripts[r.IntN(len(scripts))])
			}
			e.pay.Script(id, steps...)
		}
		e.acts[id] = act
		e.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), within)
		defer cancel()
		_, _ = s.Withdraw(ctx, withdraw.Request{AppID: 1, ActID: act, Amount: amount, Channel: "bank", RequestID: req})
	}
	check := func(step int) {
		t.Helper()
		users, payout := e.led.Sums()
		paid := e.pay.PaidTotal()
		if payout > paid {
			t.Fatalf("step %d: payout accounts %d, more than the channel paid (%d) (%s)", step, payout, paid, e.pay)
		}
		if users+paid < e.led.Credited() {
			t.Fatalf("step %d: users %d + paid %d < credited %d: money lost", step, users, paid, e.led.Credited())
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		for id := range e.acts {
			if n := e.pay.Paid(id); n > 1 {
				t.Fatalf("step %d: withdrawal %s paid %d times", step, id, n)
			}
		}
	}
	for step := range 40 {
		act := uint64(1 + r.IntN(users))
		req := fmt.Sprintf("r%d", r.IntN(30)) // repeats now and then (and reuse with other content)
		amount := int64(100 + r.IntN(1500))
		within := 5 * time.Second
		if r.IntN(4) == 0 {
			within = time.Duration(10+r.IntN(100)) * time.Millisecond // the node stops mid-way
		}
		switch op := r.IntN(10); {
		case op < 5:
			withdrawOn(nodes[r.IntN(2)], act, amount, req, within)
		case op < 6: // both nodes at once
			var wg sync.WaitGroup
			for _, s := range nodes {
				wg.Go(func() { withdrawOn(s, act, amount, req, within) })
			}
			wg.Wait()
		case op < 7:
			_, _ = nodes[r.IntN(2)].Recover(context.Background())
		case op < 8:
			if cash := e.led.Balance(ledger.UserAccount(act), ledger.AssetCash); cash > 0 {
				e.led.Take(act, 1+r.Int64N(cash))
			}
		case op < 9:
			e.led.Issue(act, 1+r.IntN(3), int64(100+r.IntN(400)))
		default:
			e.skew.Add(int64(r.IntN(2000)))
		}
		check(step)
	}
	for i := 0; ; i++ {
		e.skew.Add(time.Hour.Milliseconds()) // every lease over, every late check due
		open, err := nodes[i%2].Recover(context.Background())
		if open == 0 && err == nil {
			break
		}
		if i == 30 {
			t.Fatalf("still %d open after %d recovery passes: %v", open, i, err)
		}
	}
	e.checkMoney()
	states := map[withdraw.State]int{}
	for id := range e.acts {
		if rec, err := nodes[0].Get(context.Background(), id); err == nil {
			states[rec.State]++
		}
	}
	t.Logf("withdrawals by final state: %v; paid %d fen", states, e.pay.PaidTotal())
	for u := range users {
		if tr := e.led.Balance(ledger.UserAccount(uint64(u+1)), ledger.AssetTransit); tr != 0 {
			t.Errorf("user %d: %d still in transit after everything finished", u+1, tr)
		}
	}
}
