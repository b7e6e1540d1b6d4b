package bench

import (
	"bufio"
	"fmt"
	"io"
	"math"
)

// The HdrHistogram percentile distribution (".hgrm"): what HdrHistogram's
// outputPercentileDistribution writes and its online plotter
// (https://hdrhistogram.github.io/HdrHistogram/plotFiles.html) reads.
const (
	// hdrTicksPerHalfDistance is how many rows the iteration writes per
	// halving of the distance to 100%: 5, as HdrHistogram's tools do.
	hdrTicksPerHalfDistance = 5
	// hdrDecimals is how many decimals a value is written with: the
	// bench's values are µs written in ms, so 3 keep them exact.
	hdrDecimals = 3
	// hdrBuckets and hdrSubBuckets are the layout HdrHistogram names in
	// the trailer: histogram's is that of an HdrHistogram with 2
	// significant digits (256 sub-buckets) tracking up to histValueMax.
	hdrBuckets    = histValueBits - histSubBits
	hdrSubBuckets = 2 * histSubCount
)

// writeHDR writes s, latencies in µs, in HdrHistogram's percentile
// distribution format with values in milliseconds: a header, then a row
// (Value, Percentile, TotalCount, 1/(1-Percentile)) at each percentile
// level of HdrHistogram's PercentileIterator (0%, 10%, ..., 50%, 55%, ...,
// halving the distance to 100% every 5 rows), the last at 100% without
// its fourth column, and the trailer of mean, standard deviation, max,
// count and layout.
//
// A row's Value is the bench's own quantile at its level (the middle of
// the bucket holding it, capped at the largest value recorded), so that
// the rows agree with the report's percentiles; HdrHistogram writes the
// bucket's highest value instead, less than a bucket's width (0.4%) apart.
// Mean and standard deviation are over the buckets' middles, as
// HdrHistogram computes them; Max is exact.
func (s *histSnapshot) writeHDR(w io.Writer) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "%12s %14s %10s %14s\n\n", "Value", "Percentile", "TotalCount", "1/(1-Percentile)")
	row := fmt.Sprintf("%%12.%df %%2.12f %%10d %%14.2f\n", hdrDecimals)
	lastRow := fmt.Sprintf("%%12.%df %%2.12f %%10d\n", hdrDecimals)
	s.percentiles(func(level float64, v, cum uint64) {
		if level == 100 {
			fmt.Fprintf(bw, lastRow, float64(v)/1e3, 1.0, cum)
		} else {
			fmt.Fprintf(bw, row, float64(v)/1e3, level/100, cum, 1/(1-level/100))
		}
	})

	var mean, std float64
	if s.total > 0 {
		for i, n := range s.counts {
			lower, width := histBounds(i)
			mean += float64(n) * float64(lower+width/2)
		}
		mean /= float64(s.total)
		var sq float64
		for i, n := range s.counts {
			if n > 0 {
				lower, width := histBounds(i)
				d := float64(lower+width/2) - mean
				sq += float64(n) * d * d
			}
		}
		std = math.Sqrt(sq / float64(s.total))
	}
	fmt.Fprintf(bw, "#[Mean    = %12.*f, StdDeviation   = %12.*f]\n", hdrDecimals, mean/1e3, hdrDecimals, std/1e3)
	fmt.Fprintf(bw, "#[Max     = %12.*f, Total count    = %12d]\n", hdrDecimals, float64(s.max)/1e3, s.total)
	fmt.Fprintf(bw, "#[Buckets = %12d, SubBuckets     = %12d]\n", hdrBuckets, hdrSubBuckets)
	return bw.Flush()
}

// percentiles calls row for each row of HdrHistogram's percentile
// distribution of s, in order: a level in percent, the value at it (the
// bench's quantile: the middle of its bucket, capped at the largest value
// recorded; at 100%, that largest value when it is known) and how many
// values are at most that bucket's. It does as
// HdrHistogram's PercentileIterator: levels from 0% up, each step
// 100/(hdrTicksPerHalfDistance·2^(k+1)) where the distance to 100% is in
// (100/2^(k+1), 100/2^k]; every bucket holding values writes a row for
// each level it reaches, except that the last one writes one, then the
// row at 100%. An empty s has no rows.
func (s *histSnapshot) percentiles(row func(level float64, v, cum uint64)) {
	var cum uint64
	last := -1 // The last bucket holding a value.
	level := 0.0
	for i, n := range s.counts {
		if n == 0 {
			continue
		}
		cum += n
		last = i
		for 100*float64(cum)/float64(s.total) >= level {
			row(level, s.value(i), cum)
			ticks := hdrTicksPerHalfDistance * math.Pow(2, math.Trunc(math.Log2(100/(100-level)))+1)
			level += 100 / ticks
			if cum == s.total {
				break
			}
		}
	}
	if last >= 0 {
		v := s.value(last)
		if s.max > 0 {
			v = s.max // In the last bucket: the largest value recorded, exact.
		}
		row(100, v, s.total)
	}
}
