package ingress

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"redrain/ledger"
)

// memBudget is a LeaseSource over one in-memory ledger.Budget: the real
// lease rules, without a grain or TiKV.
type memBudget struct {
	mu     sync.Mutex
	b      ledger.Budget
	leases map[uint64]*ledger.Lease
	fail   bool
}

func newMemBudget(total int64) *memBudget {
	return &memBudget{b: ledger.Budget{ID: "b", Asset: ledger.AssetCash, Total: total}, leases: map[uint64]*ledger.Lease{}}
}

func (m *memBudget) TakeLease(id string, want int64, owner string, inc uint64) (*ledger.Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail {
		return nil, errors.New("budget grain unreachable")
	}
	l := m.b.TakeLease(want, owner, inc)
	if l != nil {
		m.leases[l.ID] = l
	}
	return l, nil
}

func (m *memBudget) CloseLease(id string, leaseID uint64, issued, count int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.b.CloseLease(m.leases[leaseID], issued, count)
}

func (m *memBudget) OpenLeasesOf(id, owner string, inc uint64) ([]*ledger.Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*ledger.Lease
	for _, l := range m.leases {
		if !l.Closed && l.Owner == owner && l.Incarnation == inc {
			out = append(out, l)
		}
	}
	return out, nil
}

func (m *memBudget) check(t *testing.T) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.b.Check(); err != nil {
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
	src.check(t)
	var issued, count int64
	for _, l := range src.leases {
		if !l.Closed {
			t.Errorf("lease %d left open after closeAll", l.ID)
		}
		issued += l.Issued
		count += l.IssuedCount
	}
	if issued != acked || count != ackedCount {
		t.Errorf("leases closed with issued %d (%d grants), want the acknowledged %d (%d)", issued, count, acked, ackedCount)
	}
	if got := src.b.Remaining() + issued; got != total {
		t.Errorf("remaining %d + issued %d = %d, want total %d", src.b.Remaining(), issued, got, total)
	}
	// Nothing is stranded: a node may call the budget exhausted while its
	// own retired leases are still returning their unspent parts (it asks
	// again after exhaustedRetry), but once they are back a new holder
	// spends the budget down to less than one packet.
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
	src.check(t)
	if src.b.Remaining() >= 200 {
		t.Errorf("a fresh holder stopped with %d remaining", src.b.Remaining())
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
	src.check(t)
	if src.b.Remaining() != 50 {
		t.Errorf("remaining %d, want 50 returned", src.b.Remaining())
	}
}

func TestLeaseHolderFetchErrorIsReported(t *testing.T) {
	src := newMemBudget(1000)
	src.fail = true
	h := newLeaseHolder(slog.Default(), "b", src, "n1", 1, 100, 100, time.Now)
	if _, err := h.take(context.Background(), 10); err == nil || errors.Is(err, errExhausted) {
		t.Fatalf("take with the budget unreachable: err = %v, want the fetch error", err)
	}
	src.mu.Lock()
	src.fail = false
	src.mu.Unlock()
	l, err := h.take(context.Background(), 10)
	if err != nil {
		t.Fatalf("take after the budget came back: %v", err)
	}
	h.settle(l, 10, true)
	h.closeAll(context.Background())
	src.check(t)
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
	src.check(t)
	if !src.leases[lost.ID].Closed || src.leases[lost.ID].Issued != 0 {
		t.Errorf("lost lease %+v: want closed with nothing issued", src.leases[lost.ID])
	}
	if src.leases[other.ID].Closed {
		t.Errorf("another node's lease was closed")
	}
	if got, want := src.b.Remaining(), int64(10_000-10-1000); got != want {
		t.Errorf("remaining %d, want %d (only the other node's lease and the 10 issued out)", got, want)
	}
}
