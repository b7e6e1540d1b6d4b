package bench

import (
	"sync/atomic"
	"time"
)

// pacerLagMax is how far behind its schedule the pacer may fall and still
// catch up. Sleeping workers wake up to a millisecond or two late, and the
// slots they missed are sent at once, so the offered rate stays on target;
// but when the target is too slow for the rate (every worker is waiting for
// a response), slots older than this are dropped rather than sent in a burst
// once the target recovers, and the offered rate falls below Rate.
const pacerLagMax = 10 * time.Millisecond

// pacer spaces sends evenly for all workers together: slot k of the schedule
// is at k·interval after the start of the run, and each send takes the next
// free slot. A per-second budget was rejected because it sends a second's
// worth of requests in a burst at the top of every second.
//
// The pacer reads no clock: callers pass the time since the start of the
// run, so that tests can drive it.
type pacer struct {
	interval time.Duration // Invariant: > 0.
	next     atomic.Int64  // The next free slot, as a time.Duration since the start.
}

// newPacer returns a pacer for rate sends per second, rate > 0; a batch
// run sends Rate/Batch requests a second, which need not be whole. The
// interval is rounded to the nanosecond, so the achieved rate is within
// rate²/2e9 per second of the target (0.01% at 200000/s).
func newPacer(rate float64) *pacer {
	return &pacer{interval: max(time.Duration(float64(time.Second)/rate+0.5), 1)}
}

// take reserves a slot for a send by a caller whose clock reads now, and
// returns when the caller may send: the next free slot, or now-pacerLagMax
// when the schedule has fallen further behind than that. The returned slot
// may be later than now; the caller sleeps until then.
func (p *pacer) take(now time.Duration) time.Duration {
	for {
		next := p.next.Load()
		slot := max(time.Duration(next), now-pacerLagMax)
		if p.next.CompareAndSwap(next, int64(slot+p.interval)) {
			return slot
		}
	}
}
