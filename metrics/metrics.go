// Package metrics holds a node's counters, gauges and histograms. The hot
// paths touch only atomics (Counter, Gauge, Histogram); a Registry reads
// them when /metrics is scraped (Samples), and metrics/promexport serves
// them with the Prometheus client library. This package imports the
// standard library only, so that the grant path, booking and the guard,
// which count, depend on no HTTP or client library.
package metrics

import (
	rtmetrics "runtime/metrics"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Registry holds named metrics in registration order. Its zero value is
// ready to use.
type Registry struct {
	mu      sync.Mutex
	entries []entry
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

// Kind is a metric's type in the exposition.
type Kind string

// Kinds.
const (
	KindCounter   Kind = "counter"
	KindGauge     Kind = "gauge"
	KindHistogram Kind = "histogram"
)

// Label is one constant label of a series.
type Label struct{ Name, Value string }

// Sample is one series' value now: Value for a counter or gauge; Bounds,
// Cumulative (one per bound, then +Inf), Sum for a histogram.
type Sample struct {
	Name, Help string
	Kind       Kind
	Labels     []Label
	Value      float64
	Bounds     []float64
	Cumulative []uint64
	Sum        float64
}

type entry struct {
	name, help string
	kind       Kind
	labels     []Label
	read       func(*Sample)
}

func labelsOf(kv []string) []Label {
	var out []Label
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, Label{kv[i], kv[i+1]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (r *Registry) add(name, help string, kind Kind, labels []string, read func(*Sample)) {
	r.mu.Lock()
	r.entries = append(r.entries, entry{name: name, help: help, kind: kind, labels: labelsOf(labels), read: read})
	r.mu.Unlock()
}

// Counter registers a counter; labels are constant pairs ("k", "v", ...),
// one series per registration.
func (r *Registry) Counter(name, help string, labels ...string) *Counter {
	c := &Counter{}
	r.add(name, help, KindCounter, labels, func(s *Sample) { s.Value = float64(c.Load()) })
	return c
}

// SecondsCounter registers a counter fed in nanoseconds and exposed in
// seconds (its name ends in _seconds_total).
func (r *Registry) SecondsCounter(name, help string, labels ...string) *Counter {
	c := &Counter{}
	r.add(name, help, KindCounter, labels, func(s *Sample) { s.Value = float64(c.Load()) / 1e9 })
	return c
}

// Gauge registers a gauge.
func (r *Registry) Gauge(name, help string, labels ...string) *Gauge {
	g := &Gauge{}
	r.add(name, help, KindGauge, labels, func(s *Sample) { s.Value = float64(g.Load()) })
	return g
}

// GaugeFunc registers a gauge read at scrape time.
func (r *Registry) GaugeFunc(name, help string, fn func() int64, labels ...string) {
	r.add(name, help, KindGauge, labels, func(s *Sample) { s.Value = float64(fn()) })
}

// FloatGaugeFunc registers a gauge read at scrape time, as a float.
func (r *Registry) FloatGaugeFunc(name, help string, fn func() float64, labels ...string) {
	r.add(name, help, KindGauge, labels, func(s *Sample) { s.Value = fn() })
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
	r.add(name, help, KindHistogram, labels, func(s *Sample) {
		_, cum := h.Buckets()
		s.Bounds, s.Cumulative = h.bounds, make([]uint64, len(cum))
		for i, c := range cum {
			s.Cumulative[i] = uint64(c)
		}
		s.Sum = float64(h.sumNs.Load()) / h.scale
	})
	return h
}

// Samples reads every registered series now, in registration order. The
// exporter (metrics/promexport) turns them into the Prometheus client
// library's metrics.
func (r *Registry) Samples() []Sample {
	r.mu.Lock()
	entries := slices.Clone(r.entries)
	r.mu.Unlock()
	out := make([]Sample, len(entries))
	for i, e := range entries {
		out[i] = Sample{Name: e.name, Help: e.help, Kind: e.kind, Labels: e.labels}
		e.read(&out[i])
	}
	return out
}

// HeapAllocs returns the heap allocations of the process so far: objects
// and bytes (the collector's work follows the bytes).
func HeapAllocs() (objects, bytes int64) {
	s := []rtmetrics.Sample{{Name: "/gc/heap/allocs:objects"}, {Name: "/gc/heap/allocs:bytes"}}
	rtmetrics.Read(s)
	v := func(i int) int64 {
		if s[i].Value.Kind() != rtmetrics.KindUint64 {
			return 0
		}
		return int64(s[i].Value.Uint64())
	}
	return v(0), v(1)
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
