package booking

import (
	"context"
	"testing"
	"time"

	"redrain/ledger"
	"redrain/metrics"
)

// TestBookingYields: while the grant path is busy, booking pauses three
// times what it spent since its last pause, bounded; when it is quiet, or
// nothing was spent, it does not pause.
func TestBookingYields(t *testing.T) {
	b := &Booker{Yielded: &metrics.Counter{}, clock: time.Now, lagMax: time.Second}
	ctx := context.Background()
	if got := b.yieldTo(ctx, time.Millisecond, 0); got != time.Millisecond || b.Yielded.Load() != 0 {
		t.Fatalf("no busy hook: yieldTo = %v, yielded %d; want no pause", got, b.Yielded.Load())
	}
	busy := false
	b.YieldWhile(func() bool { return busy })
	if got := b.yieldTo(ctx, time.Millisecond, 0); got != time.Millisecond || b.Yielded.Load() != 0 {
		t.Fatalf("quiet: yieldTo = %v, yielded %d; want no pause", got, b.Yielded.Load())
	}
	busy = true
	if got := b.yieldTo(ctx, 0, 0); got != 0 || b.Yielded.Load() != 0 {
		t.Fatalf("busy, nothing spent: yieldTo = %v, yielded %d; want no pause", got, b.Yielded.Load())
	}
	if got := b.yieldTo(ctx, 2*time.Millisecond, 0); got != 0 || b.Yielded.Load() != (6*time.Millisecond).Nanoseconds() {
		t.Fatalf("busy: yieldTo = %v, yielded %v; want a 6ms pause", got, time.Duration(b.Yielded.Load()))
	}
	// Behind: the oldest grant to commit is older than the bound, so it
	// books flat out; a younger one still waits; a negative bound never
	// waits; a redeem among the units is never paused (the committer does
	// not ask).
	b.Yielded = &metrics.Counter{}
	if got := b.yieldTo(ctx, 2*time.Millisecond, time.Now().Add(-2*time.Second).UnixMilli()); got != 0 || b.Yielded.Load() != 0 {
		t.Fatalf("behind: yieldTo = %v, yielded %v; want no pause", got, time.Duration(b.Yielded.Load()))
	}
	if got := b.yieldTo(ctx, 2*time.Millisecond, time.Now().Add(-100*time.Millisecond).UnixMilli()); got != 0 || b.Yielded.Load() != (6*time.Millisecond).Nanoseconds() {
		t.Fatalf("a young backlog: yieldTo = %v, yielded %v; want a 6ms pause", got, time.Duration(b.Yielded.Load()))
	}
	if units := []*unit{{grants: []ledger.Grant{{IssuedAt: 7}, {IssuedAt: 5}}}, {req: &opsReq{}}}; oldestIssue(units) != 5 || !hasRedeem(units) || hasRedeem(units[:1]) {
		t.Fatal("oldestIssue or hasRedeem misread the units")
	}
	b.lagMax = -1
	if got := b.yieldTo(ctx, 2*time.Millisecond, 0); got != 2*time.Millisecond {
		t.Fatalf("never give way: yieldTo = %v, want no pause", got)
	}
	b.lagMax = time.Second
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	b.Yielded = &metrics.Counter{}
	if got := b.yieldTo(canceled, time.Hour, 0); got != 0 || b.Yielded.Load() != bookYieldMax.Nanoseconds() {
		t.Fatalf("busy, long booking: yielded %v, want the bound %v", time.Duration(b.Yielded.Load()), bookYieldMax)
	}
}
