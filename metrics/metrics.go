// Package metrics holds a node's counters, gauges and histograms and
// serves them with the Prometheus client library. The hot paths touch only
// atomics (Counter, Gauge, Histogram); a Registry turns them into metrics
// of the client library when /metrics is scraped (it is a
// prometheus.Collector), so formatting, escaping and the exposition format
// are the library's, and the process's Go runtime and process series join
// them (Registry.Gatherer); the TiKV client's are served apart
// (TiKVGatherer).
package metrics

import (
	"bytes"
	"io"
	rtmetrics "runtime/metrics"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	tikvmetrics "github.com/tikv/client-go/v2/metrics"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
)

// Registry holds named metrics in registration order. Its zero value is
// ready to use.
type Registry struct {
	mu      sync.Mutex
	entries []entry
	extra   []prometheus.Collector
	reg     *prometheus.Registry // built on first use (own)
}

type entry struct {
	desc    *prometheus.Desc
	collect func(ch chan<- prometheus.Metric, d *prometheus.Desc)
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

// labelsOf turns label pairs ("k", "v", ...) into constant labels.
func labelsOf(kv []string) prometheus.Labels {
	if len(kv) == 0 {
		return nil
	}
	l := make(prometheus.Labels, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		l[kv[i]] = kv[i+1]
	}
	return l
}

func (r *Registry) add(name, help string, labels []string, collect func(chan<- prometheus.Metric, *prometheus.Desc)) {
	r.mu.Lock()
	r.entries = append(r.entries, entry{desc: prometheus.NewDesc(name, help, nil, labelsOf(labels)), collect: collect})
	r.mu.Unlock()
}

// Counter registers a counter; labels are constant pairs ("k", "v", ...),
// one series per registration.
func (r *Registry) Counter(name, help string, labels ...string) *Counter {
	c := &Counter{}
	r.add(name, help, labels, func(ch chan<- prometheus.Metric, d *prometheus.Desc) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(c.Load()))
	})
	return c
}

// SecondsCounter registers a counter fed in nanoseconds and exposed in
// seconds (its name ends in _seconds_total).
func (r *Registry) SecondsCounter(name, help string, labels ...string) *Counter {
	c := &Counter{}
	r.add(name, help, labels, func(ch chan<- prometheus.Metric, d *prometheus.Desc) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(c.Load())/1e9)
	})
	return c
}

// Gauge registers a gauge.
func (r *Registry) Gauge(name, help string, labels ...string) *Gauge {
	g := &Gauge{}
	r.add(name, help, labels, func(ch chan<- prometheus.Metric, d *prometheus.Desc) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(g.Load()))
	})
	return g
}

// GaugeFunc registers a gauge read at scrape time.
func (r *Registry) GaugeFunc(name, help string, fn func() int64, labels ...string) {
	r.add(name, help, labels, func(ch chan<- prometheus.Metric, d *prometheus.Desc) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(fn()))
	})
}

// FloatGaugeFunc registers a gauge read at scrape time, as a float.
func (r *Registry) FloatGaugeFunc(name, help string, fn func() float64, labels ...string) {
	r.add(name, help, labels, func(ch chan<- prometheus.Metric, d *prometheus.Desc) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, fn())
	})
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
	r.add(name, help, labels, func(ch chan<- prometheus.Metric, d *prometheus.Desc) {
		_, cum := h.Buckets()
		buckets := make(map[float64]uint64, len(h.bounds))
		for i, b := range h.bounds {
			buckets[b] = uint64(cum[i])
		}
		ch <- prometheus.MustNewConstHistogram(d, uint64(cum[len(cum)-1]), float64(h.sumNs.Load())/h.scale, buckets)
	})
	return h
}

// Register adds a collector of the client library (series whose set
// changes at run time: one per budget, one per partition) to the
// registry's own metrics.
func (r *Registry) Register(c prometheus.Collector) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.extra = append(r.extra, c)
	if r.reg != nil {
		r.reg.MustRegister(c)
	}
}

// Describe sends nothing: the registry is an unchecked collector (its
// series are only known at scrape time; the library still checks their
// consistency when it gathers them).
func (r *Registry) Describe(chan<- *prometheus.Desc) {}

// Collect sends the value of every registered metric now.
func (r *Registry) Collect(ch chan<- prometheus.Metric) {
	r.mu.Lock()
	entries := slices.Clone(r.entries)
	r.mu.Unlock()
	for _, e := range entries {
		e.collect(ch, e.desc)
	}
}

// own is the library registry of this registry's metrics and collectors.
func (r *Registry) own() *prometheus.Registry {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.reg == nil {
		r.reg = prometheus.NewPedanticRegistry()
		r.reg.MustRegister(r)
		for _, c := range r.extra {
			r.reg.MustRegister(c)
		}
	}
	return r.reg
}

// tikvPrefix starts the names of the TiKV client's series.
const tikvPrefix = "tikv_client_go_"

var registerTiKV sync.Once

// filtered is the library's default registry (process-wide: shared by every
// node of a process) with only the families keep accepts.
func filtered(keep func(name string) bool) prometheus.Gatherer {
	registerTiKV.Do(tikvmetrics.RegisterMetrics)
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		mfs, err := prometheus.DefaultGatherer.Gather()
		return slices.DeleteFunc(mfs, func(mf *dto.MetricFamily) bool { return !keep(mf.GetName()) }), err
	})
}

// Gatherer is what /metrics serves: this registry's metrics and the Go
// runtime's (go_*) and the process's (process_*) series.
func (r *Registry) Gatherer() prometheus.Gatherer {
	return prometheus.Gatherers{r.own(), filtered(func(name string) bool { return !strings.HasPrefix(name, tikvPrefix) })}
}

// TiKVGatherer is what /metrics/tikv serves: the TiKV client's own series
// (tikv_client_go_*), apart because their names are client-go's (dashboards
// for TiKV use them as they are) and break Prometheus's naming lint
// (counters without _total), which /metrics passes.
func TiKVGatherer() prometheus.Gatherer {
	return filtered(func(name string) bool { return strings.HasPrefix(name, tikvPrefix) })
}

func handlerFor(g prometheus.Gatherer) fasthttp.RequestHandler {
	return fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorHandling:     promhttp.ContinueOnError,
		EnableOpenMetrics: true,
	}))
}

// Handler serves /metrics (the Prometheus text format, or OpenMetrics
// when the scraper asks for it).
func (r *Registry) Handler() fasthttp.RequestHandler { return handlerFor(r.Gatherer()) }

// TiKVHandler serves /metrics/tikv.
func TiKVHandler() fasthttp.RequestHandler { return handlerFor(TiKVGatherer()) }

// WriteText writes the registry's own metrics (not the process-wide ones)
// in the Prometheus text format, families sorted by name.
func (r *Registry) WriteText(w io.Writer) error {
	mfs, err := r.own().Gather()
	var b bytes.Buffer
	for _, mf := range mfs {
		if _, werr := expfmt.MetricFamilyToText(&b, mf); werr != nil && err == nil {
			err = werr
		}
	}
	if _, werr := w.Write(b.Bytes()); werr != nil && err == nil {
		err = werr
	}
	return err
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
