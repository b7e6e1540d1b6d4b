package withdraw_test

import (
	"context"
	"strconv"
	"sync"
	"testing"

	"redrain/storage"
	"redrain/withdraw"
	"redrain/withdraw/withdrawtest"
)

// memChannel pays at once, each id once.
type memChannel struct {
	mu   sync.Mutex
	paid map[string]bool
}

func (c *memChannel) Pay(_ context.Context, p withdraw.Payout) (withdraw.Answer, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.paid[p.ID] = true
	return withdraw.Answer{Outcome: withdraw.Paid, Ref: p.ID}, nil
}

func (c *memChannel) Query(_ context.Context, id string) (withdraw.Answer, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.paid[id] {
		return withdraw.Answer{Outcome: withdraw.Paid, Ref: id}, nil
	}
	return withdraw.Answer{Outcome: withdraw.Unknown}, nil
}

// BenchmarkWithdraw10Outstanding is one withdrawal of a user who has 10
// outstanding packets: the service's own cost (records in the memory
// store, the packets booked, hold, pay, settle) over the fakes of booking
// and the grant path and a channel in memory. The node's figure, with the
// real Booker.Move and Admission.Outstanding over TiKV and a paytest
// channel over HTTP, is bench's (BENCHMARKS.md: Withdrawals).
func BenchmarkWithdraw10Outstanding(b *testing.B) {
	led := withdrawtest.NewLedger()
	s, err := withdraw.New(storage.NewMemoryStore().Client(nil), led, led, led, withdraw.Config{
		AmountMin: 1, AmountMax: 1 << 30, Node: "n1",
		Channels: map[string]withdraw.Channel{"bank": &memChannel{paid: map[string]bool{}}},
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	act := uint64(0)
	for b.Loop() {
		b.StopTimer()
		act++
		led.Issue(act, 10, 100)
		b.StartTimer()
		rec, err := s.Withdraw(ctx, withdraw.Request{AppID: 1, ActID: act, Amount: 900, Channel: "bank", RequestID: strconv.FormatUint(act, 10)})
		if err != nil || rec.State != withdraw.StateSettled {
			b.Fatalf("withdraw = %+v, %v", rec, err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "withdrawals/s")
}
