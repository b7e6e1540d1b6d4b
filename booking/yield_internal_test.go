package booking

import (
	"context"
	"testing"
	"time"

	"redrain/metrics"
)

// TestBookingYields: while the grant path is busy, booking pauses three
// times what it spent since its last pause, bounded; when it is quiet, or
// nothing was spent, it does not pause.
func TestBookingYields(t *testing.T) {
	b := &Booker{Yielded: &metrics.Counter{}}
	ctx := context.Background()
	if got := b.yieldTo(ctx, time.Millisecond); got != time.Millisecond || b.Yielded.Load() != 0 {
		t.Fatalf("no busy hook: yieldTo = %v, yielded %d; want no pause", got, b.Yielded.Load())
	}
	busy := false
	b.YieldWhile(func() bool { return busy })
	if got := b.yieldTo(ctx, time.Millisecond); got != time.Millisecond || b.Yielded.Load() != 0 {
		t.Fatalf("quiet: yieldTo = %v, yielded %d; want no pause", got, b.Yielded.Load())
	}
	busy = true
	if got := b.yieldTo(ctx, 0); got != 0 || b.Yielded.Load() != 0 {
		t.Fatalf("busy, nothing spent: yieldTo = %v, yielded %d; want no pause", got, b.Yielded.Load())
	}
	if got := b.yieldTo(ctx, 2*time.Millisecond); got != 0 || b.Yielded.Load() != (6*time.Millisecond).Nanoseconds() {
		t.Fatalf("busy: yieldTo = %v, yielded %v; want a 6ms pause", got, time.Duration(b.Yielded.Load()))
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	b.Yielded = &metrics.Counter{}
	if got := b.yieldTo(canceled, time.Hour); got != 0 || b.Yielded.Load() != bookYieldMax.Nanoseconds() {
		t.Fatalf("busy, long booking: yielded %v, want the bound %v", time.Duration(b.Yielded.Load()), bookYieldMax)
	}
}
