// Package promexport serves a metrics.Registry with the Prometheus client
// library (client_golang): the registry's series as the library's metrics
// at scrape time, with the Go runtime's (go_*) and the process's
// (process_*) series, on /metrics; the TiKV client's own series apart, on
// /metrics/tikv. The library writes the exposition (types, escaping,
// +Inf and NaN, OpenMetrics when asked).
package promexport

import (
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	tikvmetrics "github.com/tikv/client-go/v2/metrics"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"redrain/metrics"
)

// collector is a metrics.Registry as an unchecked collector: its series
// are only known at scrape time (the library still checks them when it
// gathers).
type collector struct{ r *metrics.Registry }

func (c collector) Describe(chan<- *prometheus.Desc) {}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.r.Samples() {
		var labels prometheus.Labels
		if len(s.Labels) > 0 {
			labels = make(prometheus.Labels, len(s.Labels))
			for _, l := range s.Labels {
				labels[l.Name] = l.Value
			}
		}
		d := prometheus.NewDesc(s.Name, s.Help, nil, labels)
		switch s.Kind {
		case metrics.KindCounter:
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, s.Value)
		case metrics.KindGauge:
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, s.Value)
		case metrics.KindHistogram:
			buckets := make(map[float64]uint64, len(s.Bounds))
			for i, b := range s.Bounds {
				buckets[b] = s.Cumulative[i]
			}
			ch <- prometheus.MustNewConstHistogram(d, s.Cumulative[len(s.Cumulative)-1], s.Sum, buckets)
		}
	}
}

// Exporter serves one node's registry and the collectors the node adds.
type Exporter struct {
	own  *prometheus.Registry // the registry's series only
	all  *prometheus.Registry // and the added collectors
	once sync.Once
	h    fasthttp.RequestHandler
}

// New returns an exporter of r.
func New(r *metrics.Registry) *Exporter {
	e := &Exporter{own: prometheus.NewRegistry(), all: prometheus.NewPedanticRegistry()}
	e.own.MustRegister(collector{r})
	e.all.MustRegister(collector{r})
	return e
}

// Register adds a collector of the library (series whose set changes at
// run time: one per budget, one per partition) to what /metrics serves.
func (e *Exporter) Register(c prometheus.Collector) { e.all.MustRegister(c) }

// GatherOwn gathers the registry's series only: none of the added
// collectors (which may read a store) nor the process-wide ones.
func (e *Exporter) GatherOwn() ([]*dto.MetricFamily, error) { return e.own.Gather() }

// tikvPrefix starts the names of the TiKV client's series.
const tikvPrefix = "tikv_client_go_"

var registerTiKV sync.Once

// defaultFamilies is the library's default registry (process-wide: shared
// by every node of a process: the Go runtime's, the process's and the TiKV
// client's series) with only the families keep accepts.
func defaultFamilies(keep func(name string) bool) prometheus.Gatherer {
	registerTiKV.Do(tikvmetrics.RegisterMetrics)
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		mfs, err := prometheus.DefaultGatherer.Gather()
		return slices.DeleteFunc(mfs, func(mf *dto.MetricFamily) bool { return !keep(mf.GetName()) }), err
	})
}

// Gatherer is what /metrics serves: the registry's series, the added
// collectors', and the Go runtime's and the process's.
func (e *Exporter) Gatherer() prometheus.Gatherer {
	return prometheus.Gatherers{e.all, defaultFamilies(func(name string) bool { return !strings.HasPrefix(name, tikvPrefix) })}
}

// TiKVGatherer is what /metrics/tikv serves: the TiKV client's own series
// (tikv_client_go_*), apart because their names are client-go's (dashboards
// for TiKV use them as they are) and break Prometheus's naming lint
// (counters without _total), which /metrics passes.
func TiKVGatherer() prometheus.Gatherer {
	return defaultFamilies(func(name string) bool { return strings.HasPrefix(name, tikvPrefix) })
}

// HandlerFor serves what g gathers (the text format, or OpenMetrics when
// the scraper asks for it).
func HandlerFor(g prometheus.Gatherer) fasthttp.RequestHandler {
	return fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorHandling:     promhttp.ContinueOnError,
		EnableOpenMetrics: true,
	}))
}

// Handler serves /metrics.
func (e *Exporter) Handler() fasthttp.RequestHandler {
	e.once.Do(func() { e.h = HandlerFor(e.Gatherer()) })
	return e.h
}

// Text is the registry's own series in the text format, as /metrics
// writes them (for tests and tools).
func Text(r *metrics.Registry) string {
	mfs, _ := New(r).GatherOwn()
	var b strings.Builder
	for _, mf := range mfs {
		_, _ = expfmt.MetricFamilyToText(&b, mf)
	}
	return b.String()
}
