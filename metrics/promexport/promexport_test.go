package promexport_test

import (
	"math"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"redrain/metrics"
	"redrain/metrics/promexport"
)

func registry() *metrics.Registry {
	var r metrics.Registry
	r.Counter("grants_total", "Grants by outcome.", "outcome", "ok").Add(3)
	r.Counter("grants_total", "Grants by outcome.", "outcome", "a\"b\\c\nd").Inc()
	r.Gauge("lag", "Lag, with a \\ and a\nnewline.").Set(-2)
	h := r.Histogram("latency_seconds", "Latency.", []float64{0.001, 0.01}, "stage", "x", "node", "n1")
	for _, ns := range []int64{500_000, 2_000_000, 3_000_000, 50_000_000} {
		h.ObserveNs(ns)
	}
	r.SecondsCounter("paused_seconds_total", "Paused.").Add(1_500_000_000)
	r.FloatGaugeFunc("ratio", "Ratio.", func() float64 { return math.Inf(1) })
	r.FloatGaugeFunc("big", "Big.", func() float64 { return 1_234_567 })
	return &r
}

// TestText: the library's exposition of a registry: families by name,
// series by label, label values escaped, seconds from nanoseconds, +Inf.
func TestText(t *testing.T) {
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
	if got := promexport.Text(&r); got != want {
		t.Errorf("Text =\n%s\nwant\n%s", got, want)
	}
}

// TestHandlerServesProcessSeries: /metrics carries the registry's series,
// the added collectors' and the Go runtime's and the process's, with the
// process CPU a counter; the TiKV client's are apart.
func TestHandlerServesProcessSeries(t *testing.T) {
	e := promexport.New(registry())
	e.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "redrain_test_dynamic", Help: "Dynamic."}, func() float64 { return 2 }))
	var ctx fasthttp.RequestCtx
	ctx.Request.SetRequestURI("/metrics")
	e.Handler()(&ctx)
	if code := ctx.Response.StatusCode(); code != 200 {
		t.Fatalf("status %d: %s", code, ctx.Response.Body())
	}
	body := string(ctx.Response.Body())
	for _, want := range []string{
		"\ngrants_total{outcome=\"ok\"} 3\n",
		"\nredrain_test_dynamic 2\n",
		"\nbig 1.234567e+06\n",
		"# TYPE process_cpu_seconds_total counter\n",
		"# TYPE go_goroutines gauge\n",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(body, "tikv_client_go_") {
		t.Errorf("/metrics carries the TiKV client's series")
	}
	ctx.Response.Reset()
	promexport.HandlerFor(promexport.TiKVGatherer())(&ctx)
	tikv := string(ctx.Response.Body())
	if !strings.Contains(tikv, "# TYPE tikv_client_go_txn_cmd_duration_seconds histogram\n") || strings.Contains(tikv, "go_goroutines") {
		t.Errorf("/metrics/tikv serves:\n%.2000s", tikv)
	}
}
