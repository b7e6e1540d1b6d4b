// Package metrics is a small, allocation-free registry of counters, gauges
// and histograms served in the Prometheus text format. The hot paths touch
// only atomics; formatting happens when /metrics is scraped.
package metrics

import (
	"fmt"
	"io"
	"math"
	rtmetrics "runtime/metrics"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Registry holds named metrics in registration order.
type Registry struct {
	mu      sync.Mutex
	entries []entry
}

type entry struct {
	name, help, kind string
	labels           string // rendered `{k="v",...}` or ""
	write            func(w io.Writer, name, labels string)
}

// Counter only grows.
type Counter struct{ v atomic.Int64 }

// Add adds n (n >= 0).
func (c *Counter) Add(n int64) { c.v.Add(n) }

// Inc adds one.
func (c *Counter) Inc() { c.v.Add(1) }

// Load returns the value.
func (c *Counter) Load() int64 { return c.v.Load() }

// Gauge goes up and down.
type Gauge struct{ v atomic.Int64 }

// Set sets the value.
func (g *Gauge) Set(n int64) { g.v.Store(n) }

// Add adds n.
func (g *Gauge) Add(n int64) { g.v.Add(n) }

// Load returns the value.
func (g *Gauge) Load() int64 { return g.v.Load() }

// Histogram counts observations into fixed upper bounds (seconds).
type Histogram struct {
	bounds []float64
	counts []atomic.Int64 // one per bound, plus +Inf
	sumNs  atomic.Int64   // nanoseconds, or the sum of counts for a count histogram
	scale  float64        // what sumNs is divided by when written: 1e9 for seconds, 1 for counts
}

// CountBounds are buckets for sizes (grants in a batch or a record).
var CountBounds = []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096}

// Observe records one observation of a count histogram.
func (h *Histogram) Observe(v int64) {
	i := sort.SearchFloat64s(h.bounds, float64(v))
	h.counts[i].Add(1)
	h.sumNs.Add(v)
}

// LatencyBounds are the default latency buckets, in seconds.
var LatencyBounds = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

// ObserveNs records one observation of ns nanoseconds.
func (h *Histogram) ObserveNs(ns int64) {
	s := float64(ns) / 1e9
	i := sort.SearchFloat64s(h.bounds, s)
	h.counts[i].Add(1)
	h.sumNs.Add(ns)
}

// ObserveNsN records n observations of ns nanoseconds each.
func (h *Histogram) ObserveNsN(ns, n int64) {
	s := float64(ns) / 1e9
	i := sort.SearchFloat64s(h.bounds, s)
	h.counts[i].Add(n)
	h.sumNs.Add(ns * n)
}

// Buckets returns the histogram's upper bounds (seconds, or counts) and
// the cumulative count of observations at or below each, +Inf last.
func (h *Histogram) Buckets() (bounds []float64, cumulative []int64) {
	cumulative = make([]int64, len(h.counts))
	var sum int64
	for i := range h.counts {
		sum += h.counts[i].Load()
		cumulative[i] = sum
	}
	return h.bounds, cumulative
}

// IssueBounds are buckets for the time from a grant's issue to its booking.
var IssueBounds = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60, 120}

// Labels renders label pairs ("k", "v", ...) in the text format.
func Labels(kv ...string) string {
	if len(kv) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteByte('{')
	for i := 0; i+1 < len(kv); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", kv[i], kv[i+1])
	}
	b.WriteByte('}')
	return b.String()
}

func (r *Registry) add(e entry) {
	r.mu.Lock()
	r.entries = append(r.entries, e)
	r.mu.Unlock()
}

// Counter registers a counter.
func (r *Registry) Counter(name, help string, labels ...string) *Counter {
	c := &Counter{}
	r.add(entry{name: name, help: help, kind: "counter", labels: Labels(labels...),
		write: func(w io.Writer, n, l string) { fmt.Fprintf(w, "%s%s %d\n", n, l, c.Load()) }})
	return c
}

// Gauge registers a gauge.
func (r *Registry) Gauge(name, help string, labels ...string) *Gauge {
	g := &Gauge{}
	r.add(entry{name: name, help: help, kind: "gauge", labels: Labels(labels...),
		write: func(w io.Writer, n, l string) { fmt.Fprintf(w, "%s%s %d\n", n, l, g.Load()) }})
	return g
}

// GaugeFunc registers a gauge read at scrape time.
func (r *Registry) GaugeFunc(name, help string, fn func() int64, labels ...string) {
	r.add(entry{name: name, help: help, kind: "gauge", labels: Labels(labels...),
		write: func(w io.Writer, n, l string) { fmt.Fprintf(w, "%s%s %d\n", n, l, fn()) }})
}

// Histogram registers a histogram over bounds (seconds, ascending), fed by
// ObserveNs.
func (r *Registry) Histogram(name, help string, bounds []float64, labels ...string) *Histogram {
	return r.histogram(name, help, bounds, 1e9, labels)
}

// CountHistogram registers a histogram of counts over bounds (ascending),
// fed by Observe.
func (r *Registry) CountHistogram(name, help string, bounds []float64, labels ...string) *Histogram {
	return r.histogram(name, help, bounds, 1, labels)
}

func (r *Registry) histogram(name, help string, bounds []float64, scale float64, labels []string) *Histogram {
	h := &Histogram{bounds: bounds, counts: make([]atomic.Int64, len(bounds)+1), scale: scale}
	r.add(entry{name: name, help: help, kind: "histogram", labels: Labels(labels...),
		write: func(w io.Writer, n, l string) {
			var cum int64
			inner := strings.TrimSuffix(strings.TrimPrefix(l, "{"), "}")
			if inner != "" {
				inner += ","
			}
			for i, b := range h.bounds {
				cum += h.counts[i].Load()
				fmt.Fprintf(w, "%s_bucket{%sle=\"%g\"} %d\n", n, inner, b, cum)
			}
			cum += h.counts[len(h.bounds)].Load()
			fmt.Fprintf(w, "%s_bucket{%sle=\"+Inf\"} %d\n", n, inner, cum)
			fmt.Fprintf(w, "%s_sum%s %s\n", n, l, formatFloat(float64(h.sumNs.Load())/h.scale))
			fmt.Fprintf(w, "%s_count%s %d\n", n, l, cum)
		}})
	return h
}

func formatFloat(f float64) string {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return "0"
	}
	return fmt.Sprintf("%g", f)
}

// WriteText writes every metric in the Prometheus text exposition format,
// with one HELP and TYPE line per metric name.
func (r *Registry) WriteText(w io.Writer) {
	r.mu.Lock()
	entries := append([]entry(nil), r.entries...)
	r.mu.Unlock()
	seen := map[string]bool{}
	// Group series of one name together, as the format requires.
	order := []string{}
	byName := map[string][]entry{}
	for _, e := range entries {
		if !seen[e.name] {
			seen[e.name] = true
			order = append(order, e.name)
		}
		byName[e.name] = append(byName[e.name], e)
	}
	for _, name := range order {
		es := byName[name]
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, es[0].help, name, es[0].kind)
		for _, e := range es {
			e.write(w, name, e.labels)
		}
	}
}

// HeapAllocs returns the heap allocations (objects) of the process so far.
func HeapAllocs() int64 {
	s := []rtmetrics.Sample{{Name: "/gc/heap/allocs:objects"}}
	rtmetrics.Read(s)
	if s[0].Value.Kind() != rtmetrics.KindUint64 {
		return 0
	}
	return int64(s[0].Value.Uint64())
}

// ProcessCPUSeconds returns the user and system CPU time this process has
// used.
func ProcessCPUSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// FloatGaugeFunc registers a gauge read at scrape time, as a float.
func (r *Registry) FloatGaugeFunc(name, help string, fn func() float64, labels ...string) {
	r.add(entry{name: name, help: help, kind: "gauge", labels: Labels(labels...),
		write: func(w io.Writer, n, l string) { fmt.Fprintf(w, "%s%s %s\n", n, l, formatFloat(fn())) }})
}
