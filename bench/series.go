package bench

import (
	"encoding/json"
	"io"
	"math"
	"time"
)

// Second is one line of the per-second series (Config.SeriesFile), one
// JSON object a line: what happened over one second of the run and of the
// drain after it (the last one may be shorter, IntervalS says how long).
// Latencies are of the responses that arrived within the second, in
// milliseconds to the histogram's two significant digits, from when each
// request was due: its slot in the schedule under Config.Rate, else its
// send (as Report's latencies).
type Second struct {
	// T is the end of the second, in seconds since the send window opened.
	T float64 `json:"t"`
	// IntervalS is how long the interval was, in seconds (about 1).
	IntervalS float64 `json:"interval_s"`
	// Phase is "send" while the send window was open at its start, then
	// "drain".
	Phase string `json:"phase"`
	// Offered and Accepted count the grants sent and accepted in it, and
	// OfferedPerS and AcceptedPerS are the same per second.
	Offered      int64   `json:"offered"`
	Accepted     int64   `json:"accepted"`
	OfferedPerS  float64 `json:"offered_per_s"`
	AcceptedPerS float64 `json:"accepted_per_s"`
	// Errors counts the grants that failed in it, by code (Report.Errors
	// says which codes there are); empty when none did. Over the series,
	// Offered, Accepted and Errors add up to the Report's.
	Errors map[string]int64 `json:"errors"`
	// Booked is the growth of grants_booked summed over the targets in
	// it, BookedPerS the same per second, and BookingLag the largest
	// booking_lag any target reported at its end; all absent when a
	// target's stats could not be read.
	Booked     *int64   `json:"booked,omitempty"`
	BookedPerS *float64 `json:"booked_per_s,omitempty"`
	BookingLag *int64   `json:"booking_lag,omitempty"`
	// Responses counts the responses that arrived in it, which the
	// percentiles are over (all 0 when there were none).
	Responses int64   `json:"responses"`
	P50Ms     float64 `json:"p50_ms"`
	P90Ms     float64 `json:"p90_ms"`
	P99Ms     float64 `json:"p99_ms"`
	P999Ms    float64 `json:"p999_ms"`
	MaxMs     float64 `json:"max_ms"`
	// ServiceP99Ms is, under Config.Rate, the p99 of the same responses'
	// service time: from their actual send. Absent when not paced.
	ServiceP99Ms *float64 `json:"service_p99_ms,omitempty"`
}

// newSecond returns the Second from sample prev to cur of the run that
// started at start; lat is cur's latencies since prev's, and line the
// progress line of the same interval (booked and lag, -1 when unknown).
func newSecond(start time.Time, prev, cur sample, lat *histSnapshot, line progressLine) Second {
	secs := cur.at.Sub(prev.at).Seconds()
	ms := func(us uint64) float64 { return float64(us) / 1e3 }
	s := Second{
		T:            roundTo(cur.at.Sub(start).Seconds(), 1e3),
		IntervalS:    roundTo(secs, 1e3),
		Phase:        "send",
		Offered:      cur.offered - prev.offered,
		Accepted:     cur.accepted - prev.accepted,
		OfferedPerS:  roundTo(float64(cur.offered-prev.offered)/secs, 10),
		AcceptedPerS: roundTo(float64(cur.accepted-prev.accepted)/secs, 10),
		Errors:       map[string]int64{},
		Responses:    int64(lat.total),
		P50Ms:        ms(lat.quantile(0.5)),
		P90Ms:        ms(lat.quantile(0.9)),
		P99Ms:        ms(lat.quantile(0.99)),
		P999Ms:       ms(lat.quantile(0.999)),
		MaxMs:        ms(lat.quantile(1)),
	}
	if prev.stopped {
		s.Phase = "drain"
	}
	for code, n := range cur.errors {
		if d := n - prev.errors[code]; d > 0 {
			s.Errors[code] = d
		}
	}
	if line.booked >= 0 {
		perSec := roundTo(float64(line.booked)/secs, 10)
		s.Booked, s.BookedPerS = &line.booked, &perSec
	}
	if line.lag >= 0 {
		s.BookingLag = &line.lag
	}
	if cur.service != nil && lat.total > 0 {
		p99 := ms(cur.service.since(prev.service).quantile(0.99))
		s.ServiceP99Ms = &p99
	}
	return s
}

// roundTo rounds v to 1/scale.
func roundTo(v, scale float64) float64 {
	return math.Round(v*scale) / scale
}

// WriteSeries writes series as JSON lines, one Second a line.
func WriteSeries(w io.Writer, series []Second) error {
	enc := json.NewEncoder(w)
	for i := range series {
		if err := enc.Encode(&series[i]); err != nil {
			return err
		}
	}
	return nil
}
