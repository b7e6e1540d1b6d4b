package bench

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// buckets is a node's histogram as GET /admin/v1/stats carries it: upper
// bounds in seconds and the cumulative count of observations at or below
// each, the +Inf bucket last.
// Invariant (of a valid one): len(Cumulative) == len(Bounds)+1.
type buckets struct {
	Bounds     []float64 `json:"bounds"`
	Cumulative []int64   `json:"cumulative"`
}

func (b *buckets) valid() bool {
	return b != nil && len(b.Bounds) > 0 && len(b.Cumulative) == len(b.Bounds)+1
}

// bucketsSince sums, over targets, how far each target's histogram moved
// from its baseline, as sinceBase does for counters: a target whose count
// fell below its baseline restarted and is counted from zero. It returns
// nil when a target has no valid histogram or the targets' bounds differ:
// then no quantile can be told.
func bucketsSince(base, last []*buckets) *buckets {
	if len(last) == 0 {
		return nil
	}
	sum := &buckets{}
	for i := range last {
		if !last[i].valid() || !base[i].valid() || !slices.Equal(base[i].Bounds, last[i].Bounds) {
			return nil
		}
		if i == 0 {
			sum.Bounds = last[i].Bounds
			sum.Cumulative = make([]int64, len(last[i].Cumulative))
		} else if !slices.Equal(sum.Bounds, last[i].Bounds) {
			return nil
		}
		restarted := last[i].Cumulative[len(last[i].Bounds)] < base[i].Cumulative[len(base[i].Bounds)]
		for j, n := range last[i].Cumulative {
			if !restarted {
				n -= base[i].Cumulative[j]
			}
			sum.Cumulative[j] += n
		}
	}
	return sum
}

// quantile returns the q-quantile (0 < q <= 1) of b, interpolated
// linearly within the bucket that holds it, as Prometheus's
// histogram_quantile does: the lowest bucket starts at 0. When it lies in
// the +Inf bucket, it returns the highest bound and beyond = true: the
// quantile is at least that. ok is false when b counts nothing.
func (b *buckets) quantile(q float64) (seconds float64, beyond, ok bool) {
	total := b.Cumulative[len(b.Cumulative)-1]
	if total <= 0 {
		return 0, false, false
	}
	rank := q * float64(total)
	i, _ := slices.BinarySearchFunc(b.Cumulative, rank, func(n int64, r float64) int {
		if float64(n) < r {
			return -1
		}
		return 1 // The first bucket whose count reaches rank.
	})
	if i >= len(b.Bounds) {
		return b.Bounds[len(b.Bounds)-1], true, true
	}
	lo, below := 0.0, int64(0)
	if i > 0 {
		lo, below = b.Bounds[i-1], b.Cumulative[i-1]
	}
	in := b.Cumulative[i] - below // > 0: the count reached rank > below here.
	return lo + (b.Bounds[i]-lo)*(rank-float64(below))/float64(in), false, true
}

// Quantiles are percentiles of a node histogram over a run, interpolated
// within its buckets (so only as exact as the buckets are narrow).
type Quantiles struct {
	// Count is the observations over the run.
	Count int64         `json:"count"`
	P50   time.Duration `json:"p50_ns"`
	P99   time.Duration `json:"p99_ns"`
	// P50Beyond and P99Beyond report a percentile beyond the highest
	// bound: the figure is that bound, a lower limit.
	P50Beyond bool `json:"p50_beyond,omitempty"`
	P99Beyond bool `json:"p99_beyond,omitempty"`
}

// quantilesOf returns the median and p99 of b, or nil when b is nil or
// counts nothing.
func quantilesOf(b *buckets) *Quantiles {
	if b == nil {
		return nil
	}
	p50, beyond50, ok := b.quantile(0.5)
	if !ok {
		return nil
	}
	p99, beyond99, _ := b.quantile(0.99)
	d := func(s float64) time.Duration { return time.Duration(math.Round(s * 1e9)) }
	return &Quantiles{Count: b.Cumulative[len(b.Cumulative)-1], P50: d(p50), P99: d(p99),
		P50Beyond: beyond50, P99Beyond: beyond99}
}

// String writes q as "p50=120ms p99=850ms over 1234 grants", a
// percentile beyond the highest bound as ">120s".
func (q *Quantiles) String() string {
	f := func(d time.Duration, beyond bool) string {
		if beyond {
			return ">" + formatLatency(d)
		}
		return formatLatency(d)
	}
	return fmt.Sprintf("p50=%s p99=%s over %d grants", f(q.P50, q.P50Beyond), f(q.P99, q.P99Beyond), q.Count)
}
