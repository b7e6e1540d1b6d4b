// Package metrics holds a node's counters, gauges and histograms. The hot
// paths touch only atomics (Counter, Gauge, Histogram); a Registry reads
// them when /metrics is scraped (Samples), and metrics/promexport serves
// them with the Prometheus client library. This package imports the
// standard library only, so that the grant path, booking and the guard,
// which count, depend on no HTTP or client library.
package metrics

import (
	"fmt"
	"io"
	"math"
	rtmetrics "runtime/metrics"
	"slices"
	"sort"
	"strconv"
	"strings"
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

// WriteText writes the registry's series in the Prometheus text format as
// the client library writes them (families by name, series by labels;
// promexport's test holds the two to the same bytes), for tests and
// tools; /metrics is served by promexport.
func (r *Registry) WriteText(w io.Writer) error {
	samples := r.Samples()
	sort.SliceStable(samples, func(i, j int) bool {
		if samples[i].Name != samples[j].Name {
			return samples[i].Name < samples[j].Name
		}
		return labelKey(samples[i].Labels) < labelKey(samples[j].Labels)
	})
	var b []byte
	for i, s := range samples {
		if i == 0 || samples[i-1].Name != s.Name {
			b = fmt.Appendf(b, "# HELP %s %s\n# TYPE %s %s\n", s.Name, escapeHelp(s.Help), s.Name, s.Kind)
		}
		if s.Kind != KindHistogram {
			b = appendSeries(b, s.Name, s.Labels, "", s.Value)
			continue
		}
		for k, bound := range s.Bounds {
			b = appendSeries(b, s.Name+"_bucket", s.Labels, formatFloat(bound), float64(s.Cumulative[k]))
		}
		total := float64(s.Cumulative[len(s.Cumulative)-1])
		b = appendSeries(b, s.Name+"_bucket", s.Labels, "+Inf", total)
		b = appendSeries(b, s.Name+"_sum", s.Labels, "", s.Sum)
		b = appendSeries(b, s.Name+"_count", s.Labels, "", total)
	}
	_, err := w.Write(b)
	return err
}

func labelKey(ls []Label) string {
	var k strings.Builder
	for _, l := range ls {
		k.WriteString(l.Name + "\xff" + l.Value + "\xff")
	}
	return k.String()
}

func appendSeries(b []byte, name string, labels []Label, le string, v float64) []byte {
	b = append(b, name...)
	if len(labels) > 0 || le != "" {
		b = append(b, '{')
		for i, l := range labels {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(append(append(append(b, l.Name...), `="`...), escapeLabel(l.Value)...), '"')
		}
		if le != "" {
			if len(labels) > 0 {
				b = append(b, ',')
			}
			b = append(append(append(b, `le="`...), le...), '"')
		}
		b = append(b, '}')
	}
	return append(append(append(b, ' '), formatFloat(v)...), '\n')
}

var (
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
)

func escapeLabel(s string) string { return labelEscaper.Replace(s) }
func escapeHelp(s string) string  { return helpEscaper.Replace(s) }

// formatFloat writes a value as the exposition format does.
func formatFloat(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "+Inf"
	case math.IsInf(f, -1):
		return "-Inf"
	case math.IsNaN(f):
		return "NaN"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
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
