package bench

import (
	"sync/atomic"
	"time"
)

// pacer spaces sends evenly for all workers together: slot k of the schedule
// is at k·interval after the start of the run, and each send takes the next
// free slot. A per-second budget was rejected because it sends a second's
// worth of requests in a burst at the top of every second.
//
// The schedule never moves: a worker that takes a slot already past (the
// target, the connection or the bench itself stalled, and every worker was
// busy) sends at once, and its request's latency is counted from the slot,
// not from the late send (see run.work). Dropping the missed slots instead
// would hide the stall from the latencies, the requests queued behind it
// never being sent (coordinated omission); so once the target recovers the
// backlog goes out as fast as the workers can send it, as the users it
// stands for would have kept arriving. When the target is too slow for the
// rate all along, the backlog grows to the end of the window: the slots
// left untaken are counted (Report.ScheduledNotSent).
//
// The pacer reads no clock, so that tests can drive it.
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

// take reserves the next free slot for a send and returns it, as the time
// since the start of the run. It may be later than the caller's clock (the
// caller sleeps until then) or earlier (the caller is late: it sends at
// once).
func (p *pacer) take() time.Duration {
	return time.Duration(p.next.Add(int64(p.interval)) - int64(p.interval))
}

// untaken returns how many slots before end no send has taken.
func (p *pacer) untaken(end time.Duration) int64 {
	next := time.Duration(p.next.Load())
	if next >= end {
		return 0
	}
	return int64((end - next + p.interval - 1) / p.interval)
}
