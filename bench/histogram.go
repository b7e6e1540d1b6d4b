package bench

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// The histogram is log-linear: values below histLinearMax each have their
// own bucket, and every power of two above that is split into histSubCount
// equal buckets. A bucket is at most 1/histSubCount of its lower bound wide,
// so a value read back is within 1/(2*histSubCount) of what was recorded:
// two significant digits, the same layout as HdrHistogram with
// significant figures set to 2.
const (
	histSubBits   = 7
	histSubCount  = 1 << histSubBits
	histLinearMax = 2 * histSubCount // Values below this are recorded exactly.
	// histValueBits bounds what can be recorded: larger values are clamped
	// to histValueMax. The bench records microseconds, so this is about 35
	// minutes, far beyond any request timeout.
	histValueBits = 31
	histValueMax  = 1<<histValueBits - 1
	// histBucketCount is histLinearMax exact buckets plus histSubCount for
	// each power of two from histLinearMax up to histValueMax.
	histBucketCount = (histValueBits - histSubBits + 1) * histSubCount
)

// histogram records values from one writer goroutine while any number of
// readers take snapshots. Counters are atomics so that the progress line can
// read a running worker's histogram without a lock; since each worker owns
// its histogram the atomics are never contended.
//
// Each histogram is 25 KiB; one per worker (targets × Conns × Pipeline) was
// preferred to one shared histogram, whose buckets would bounce between the
// cores of every worker on each response.
type histogram struct {
	counts [histBucketCount]atomic.Uint64
	max    atomic.Uint64 // Largest value recorded, unclamped. Written only by the owner.
}

// histIndex returns the bucket of v, which must be <= histValueMax.
func histIndex(v uint64) int {
	if v < histLinearMax {
		return int(v)
	}
	// v has n significant bits, n > histSubBits+1; keep the top
	// histSubBits+1 of them: m is in [histSubCount, histLinearMax).
	shift := bits.Len64(v) - (histSubBits + 1)
	m := v >> shift
	return shift*histSubCount + int(m)
}

// histBounds returns the smallest value in bucket i and the bucket's width.
func histBounds(i int) (lower, width uint64) {
	if i < histLinearMax {
		return uint64(i), 1
	}
	shift := i/histSubCount - 1
	m := uint64(i%histSubCount + histSubCount)
	return m << shift, 1 << shift
}

// record adds one value. Only the histogram's owner may call it.
func (h *histogram) record(v uint64) {
	if v > h.max.Load() {
		h.max.Store(v)
	}
	h.counts[histIndex(min(v, histValueMax))].Add(1)
}

// histSnapshot is a plain copy of one or more histograms, for merging,
// subtracting and reading percentiles.
type histSnapshot struct {
	counts [histBucketCount]uint64
	total  uint64
	max    uint64 // 0 when unknown, as in a difference of two snapshots.
}

// add merges h into s.
func (s *histSnapshot) add(h *histogram) {
	for i := range h.counts {
		n := h.counts[i].Load()
		s.counts[i] += n
		s.total += n
	}
	s.max = max(s.max, h.max.Load())
}

// since returns what was recorded between prev and s, where prev is an
// earlier snapshot of the same histograms.
func (s *histSnapshot) since(prev *histSnapshot) *histSnapshot {
	d := &histSnapshot{}
	for i := range s.counts {
		n := s.counts[i] - prev.counts[i]
		d.counts[i] = n
		d.total += n
	}
	return d
}

// quantile returns the value at quantile q in [0, 1]: the middle of the
// bucket holding the ceil(q·total)-th smallest value, capped at the largest
// value recorded when that is known. It returns 0 for an empty snapshot.
func (s *histSnapshot) quantile(q float64) uint64 {
	if s.total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(s.total)))
	rank = min(max(rank, 1), s.total)
	var seen uint64
	for i, n := range s.counts {
		seen += n
		if seen < rank {
			continue
		}
		return s.value(i)
	}
	panic("bench: histogram total does not match its buckets")
}

// value returns what a value read back from bucket i is: the middle of
// the bucket, capped at the largest value recorded when that is known.
func (s *histSnapshot) value(i int) uint64 {
	lower, width := histBounds(i)
	v := lower + (width-1)/2
	if s.max > 0 {
		v = min(v, s.max)
	}
	return v
}

// summary returns the percentiles the report prints, of a snapshot of
// latencies in µs.
func (s *histSnapshot) summary() (p50, p99, p999, maxv time.Duration) {
	us := func(v uint64) time.Duration { return time.Duration(v) * time.Microsecond }
	return us(s.quantile(0.5)), us(s.quantile(0.99)), us(s.quantile(0.999)), us(s.max)
}
