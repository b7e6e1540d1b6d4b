package grant

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"redrain/grant/granttest"
	"redrain/ledger"
)

func newMemBudget(total int64) *granttest.Budget { return granttest.NewBudget(total) }

func check(t *testing.T, src *granttest.Budget) {
	t.Helper()
	if err := src.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestLeaseHolderNeverOverspends(t *testing.T) {
	const total = 100_000
	src := newMemBudget(total)
	h := newLeaseHolder(slog.Default(), "b", src, "n1", 1, 500, 8000, time.Now)
	ctx := context.Background()
	var mu sync.Mutex
	var acked, ackedCount int64
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for {
				amount := 1 + r.Int64N(200)
				l, err := h.take(ctx, amount)
				if errors.Is(err, errExhausted) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				ok := r.IntN(10) != 0 // one in ten fails to reach Kafka
				h.settle(l, amount, ok)
				if ok {
					mu.Lock()
					acked += amount
					ackedCount++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	h.closeAll(ctx)
	check(t, src)
	var issued, count int64
	for _, l := range src.Leases() {
		if !l.Closed {
			t.Errorf("lease %d left open after closeAll", l.ID)
		}
		issued += l.Issued
		count += l.IssuedCount
	}
	if issued != acked || count != ackedCount {
		t.Errorf("leases closed with issued %d (%d grants), want the acknowledged %d (%d)", issued, count, acked, ackedCount)
	}
	if got := src.Remaining() + issued; got != total {
		t.Errorf("remaining %d + issued %d = %d, want total %d", src.Remaining(), issued, got, total)
	}
	// Nothing is stranded: a node may call the budget exhausted while its
	// own retired leases are still returning their unspent parts (it asks
	// again after exhaustedRetry: a lease retired for the next one closes
	// on its own goroutine), but once they are back a new holder spends
	// the budget down to less than one packet. closeAll waits for them,
	// so each round starts with every lease back; a few rounds at most.
	for round := 0; round < 5 && src.Remaining() >= 200; round++ {
		h2 := newLeaseHolder(slog.Default(), "b", src, "n2", 1, 500, 8000, time.Now)
		for {
			l, err := h2.take(ctx, 200)
			if errors.Is(err, errExhausted) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			h2.settle(l, 200, true)
		}
		h2.closeAll(ctx)
		check(t, src)
	}
	if src.Remaining() >= 200 {
		t.Errorf("a fresh holder stopped with %d remaining", src.Remaining())
	}
}

func TestLeaseHolderTailDoesNotSpin(t *testing.T) {
	src := newMemBudget(150)
	h := newLeaseHolder(slog.Default(), "b", src, "n1", 1, 1000, 1000, time.Now)
	ctx := context.Background()
	l, err := h.take(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	h.settle(l, 100, true)
	if _, err := h.take(ctx, 100); !errors.Is(err, errExhausted) {
		t.Fatalf("take(100) with 50 left: err = %v, want errExhausted", err)
	}
	h.closeAll(ctx)
	check(t, src)
	if src.Remaining() != 50 {
		t.Errorf("remaining %d, want 50 returned", src.Remaining())
	}
}

func TestLeaseHolderFetchErrorIsReported(t *testing.T) {
	src := newMemBudget(1000)
	src.SetFailing(true)
	h := newLeaseHolder(slog.Default(), "b", src, "n1", 1, 100, 100, time.Now)
	if _, err := h.take(context.Background(), 10); err == nil || errors.Is(err, errExhausted) {
		t.Fatalf("take with the budget unreachable: err = %v, want the fetch error", err)
	}
	src.SetFailing(false)
	l, err := h.take(context.Background(), 10)
	if err != nil {
		t.Fatalf("take after the budget came back: %v", err)
	}
	h.settle(l, 10, true)
	h.closeAll(context.Background())
	check(t, src)
}

func TestLeaseHolderClosesLeaseWhoseReplyWasLost(t *testing.T) {
	src := newMemBudget(10_000)
	h := newLeaseHolder(slog.Default(), "b", src, "n1", 1, 1000, 1000, time.Now)
	// The grain committed a lease but its reply never reached the holder.
	lost, _ := src.TakeLease("b", 1000, "n1", 1)
	other, _ := src.TakeLease("b", 1000, "n2", 1) // another node's: not ours to close
	l, err := h.take(context.Background(), 10)
	if err != nil {
		t.Fatal(err)
	}
	h.settle(l, 10, true)
	h.closeAll(context.Background())
	check(t, src)
	if !src.Leases()[lost.ID].Closed || src.Leases()[lost.ID].Issued != 0 {
		t.Errorf("lost lease %+v: want closed with nothing issued", src.Leases()[lost.ID])
	}
	if src.Leases()[other.ID].Closed {
		t.Errorf("another node's lease was closed")
	}
	if got, want := src.Remaining(), int64(10_000-10-1000); got != want {
		t.Errorf("remaining %d, want %d (only the other node's lease and the 10 issued out)", got, want)
	}
}

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestLeaseExpiry: a lease is spent only while its holder can still
// answer under it; renewals keep it spendable past its first expiry; a
// lease the grain will not renew (it expired there) is dropped and closed
// at what was acknowledged; and a holder that stops renewing stops
// spending on its own.
func TestLeaseExpiry(t *testing.T) {
	clock := &fakeClock{t: time.UnixMilli(1_800_000_000_000)}
	src := newMemBudget(1_000_000)
	src.Now = clock.now
	h := newLeaseHolder(slog.Default(), "b", src, "n1", 1, 1000, 1000, clock.now)
	defer h.closeAll(context.Background())
	ctx := context.Background()
	take := func() *activeLease {
		t.Helper()
		l, err := h.take(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		h.settle(l, 10, true)
		return l
	}
	first := take()
	if !first.liveAt(clock.now()) {
		t.Fatal("a fresh lease is not live")
	}
	// Renewed halfway: still spent after its first expiry would be near.
	clock.add(ledger.LeaseTTL / 2)
	h.renewOnce()
	clock.add(ledger.LeaseTTL/2 + time.Second)
	if l := take(); l != first {
		t.Fatalf("after a renewal the holder moved from lease %d to %d", first.id, l.id)
	}
	// No renewal: within leaseSpendMargin of its bound the lease is retired
	// and a new one taken; past the bound a grant under it is not answered.
	clock.add(ledger.LeaseTTL - leaseSafety - leaseSpendMargin)
	second := take()
	if second == first {
		t.Fatal("a lease near its expiry was still spent")
	}
	if first.liveAt(clock.now().Add(leaseSpendMargin)) {
		t.Fatal("the old lease is live past its bound")
	}
	// The grain refuses the renewal of an expired lease: the holder drops
	// it and closes it at what it acknowledged.
	src.Expire(second.id)
	h.renewOnce()
	if second.liveAt(clock.now()) {
		t.Fatal("a lease whose renewal was refused is still live")
	}
	third := take()
	if third == second {
		t.Fatal("a lease whose renewal was refused was still spent")
	}
	waitFor(t, func() bool { l := src.Leases()[second.id]; return l.Closed && l.Issued == 10 })
	waitFor(t, func() bool { l := src.Leases()[first.id]; return l.Closed && l.Issued == 20 })
	check(t, src)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
