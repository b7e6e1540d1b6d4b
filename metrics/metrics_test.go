package metrics_test

import (
	"bytes"
	"math"
	"testing"

	"redrain/metrics"
)

func TestWriteText(t *testing.T) {
	var r metrics.Registry
	ok := r.Counter("grants_total", "Grants by outcome.", "outcome", "ok")
	bad := r.Counter("grants_total", "Grants by outcome.", "outcome", `a"b\c`)
	lag := r.Gauge("lag", "Lag.")
	h := r.Histogram("latency_seconds", "Latency.", []float64{0.001, 0.01}, "stage", "x")
	paused := r.SecondsCounter("paused_seconds_total", "Paused.")
	r.FloatGaugeFunc("ratio", "Ratio.", func() float64 { return math.Inf(1) })
	ok.Add(3)
	bad.Inc()
	lag.Set(-2)
	paused.Add(1_500_000_000)
	for _, ns := range []int64{500_000, 2_000_000, 3_000_000, 50_000_000} {
		h.ObserveNs(ns)
	}
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	// As the client library writes it (promexport's test compares the two):
	// families by name, series by label, label values escaped, +Inf.
	want := `# HELP grants_total Grants by outcome.
# TYPE grants_total counter
grants_total{outcome="a\"b\\c"} 1
grants_total{outcome="ok"} 3
# HELP lag Lag.
# TYPE lag gauge
lag -2
# HELP latency_seconds Latency.
# TYPE latency_seconds histogram
latency_seconds_bucket{stage="x",le="0.001"} 1
latency_seconds_bucket{stage="x",le="0.01"} 3
latency_seconds_bucket{stage="x",le="+Inf"} 4
latency_seconds_sum{stage="x"} 0.0555
latency_seconds_count{stage="x"} 4
# HELP paused_seconds_total Paused.
# TYPE paused_seconds_total counter
paused_seconds_total 1.5
# HELP ratio Ratio.
# TYPE ratio gauge
ratio +Inf
`
	if got := b.String(); got != want {
		t.Errorf("WriteText =\n%s\nwant\n%s", got, want)
	}
}

func TestProcessCPUSecondsGrows(t *testing.T) {
	before := metrics.ProcessCPUSeconds()
	x := 0
	for i := range 50_000_000 {
		x += i % 7
	}
	if after := metrics.ProcessCPUSeconds(); after <= before || x < 0 {
		t.Errorf("ProcessCPUSeconds went from %v to %v over busy work", before, after)
	}
}
