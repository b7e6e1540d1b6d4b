package node

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"redrain/actors"
	"redrain/metrics"
	"redrain/metrics/promexport"
	"redrain/reconcile"
	"redrain/storage"
)

// Series whose set changes at run time: one per budget, one per grant
// topic partition. Money is in the budget's minor units (fen for CNY).
var (
	budgetLabels = []string{"budget", "asset"}
	budgetDescs  = struct {
		total, issued, booked, remaining, inFlight, consistent *prometheus.Desc
	}{
		total:      prometheus.NewDesc("redrain_budget_total_minor_units", "A budget's total, in its asset's minor units.", budgetLabels, nil),
		issued:     prometheus.NewDesc("redrain_budget_issued_minor_units", "What a budget issued to users (acknowledged grants), in minor units.", budgetLabels, nil),
		booked:     prometheus.NewDesc("redrain_budget_booked_minor_units", "What was booked to users' accounts from a budget, in minor units.", budgetLabels, nil),
		remaining:  prometheus.NewDesc("redrain_budget_remaining_minor_units", "What a budget can still issue (total less issued), in minor units.", budgetLabels, nil),
		inFlight:   prometheus.NewDesc("redrain_budget_in_flight_minor_units", "Issued and not booked yet, in minor units.", budgetLabels, nil),
		consistent: prometheus.NewDesc("redrain_budget_consistent", "1 when a budget's figures add up (its identities hold), 0 when not.", budgetLabels, nil),
	}
	partitionLagDesc = prometheus.NewDesc("redrain_booking_partition_lag_records",
		"Grant records of one grant topic partition in Kafka not yet booked.", []string{"partition"}, nil)
)

// budgetViewsMaxAge is how long a read of the budgets' views answers
// scrapes: several scrapers (or a dashboard) cost one read a second.
const budgetViewsMaxAge = time.Second

// budgetViews reads every budget's view (actors.ReadBudgetViews, as GET
// /admin/v1/budgets reads them) at most once per budgetViewsMaxAge for
// /metrics and the dashboard together.
type budgetViews struct {
	read func(ctx context.Context) ([]*actors.BudgetView, error)

	mu    sync.Mutex
	at    time.Time
	views []*actors.BudgetView
}

func (b *budgetViews) get(ctx context.Context) ([]*actors.BudgetView, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if time.Since(b.at) > budgetViewsMaxAge {
		views, err := b.read(ctx)
		if err != nil {
			return nil, err
		}
		b.at, b.views = time.Now(), views
	}
	return b.views, nil
}

// budgetCollector exposes every budget's figures at scrape time.
type budgetCollector struct{ views *budgetViews }

func (c budgetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- budgetDescs.total
	ch <- budgetDescs.issued
	ch <- budgetDescs.booked
	ch <- budgetDescs.remaining
	ch <- budgetDescs.inFlight
	ch <- budgetDescs.consistent
}

func (c budgetCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	views, err := c.views.get(ctx)
	cancel()
	if err != nil {
		// The scrape goes on with the other series; the error is in the
		// answer's log and the budgets are missing from it.
		ch <- prometheus.NewInvalidMetric(budgetDescs.total, err)
		return
	}
	for _, v := range views {
		gauge := func(d *prometheus.Desc, x int64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(x), v.ID, v.Asset)
		}
		gauge(budgetDescs.total, v.Total)
		gauge(budgetDescs.issued, v.Issued)
		gauge(budgetDescs.booked, v.Booked)
		gauge(budgetDescs.remaining, v.Total-v.Issued)
		gauge(budgetDescs.inFlight, v.InFlight)
		ok := int64(0)
		if v.OK {
			ok = 1
		}
		gauge(budgetDescs.consistent, ok)
	}
}

// partitionLagCollector exposes the booking lag per partition, as the
// node last read it (every 250 ms, watchLag).
type partitionLagCollector struct{ n *Node }

func (c partitionLagCollector) Describe(ch chan<- *prometheus.Desc) { ch <- partitionLagDesc }

func (c partitionLagCollector) Collect(ch chan<- prometheus.Metric) {
	lag := c.n.partitionLag.Load()
	if lag == nil {
		return
	}
	for p, l := range *lag {
		ch <- prometheus.MustNewConstMetric(partitionLagDesc, prometheus.GaugeValue, float64(l), strconv.Itoa(int(p)))
	}
}

// registerMetrics adds the run-time series to the node's registry.
func (n *Node) registerMetrics() {
	n.budgetViews = &budgetViews{read: func(ctx context.Context) ([]*actors.BudgetView, error) {
		return actors.ReadBudgetViews(ctx, n.tikv, n.pipe, "", n.openIssued())
	}}
	n.exporter.Register(budgetCollector{n.budgetViews})
	n.exporter.Register(partitionLagCollector{n})
}

// The audit's results as series: what the last audit (periodic, or asked
// for at /admin/v1/audit) found, per check.
var (
	auditCheckDesc = prometheus.NewDesc("redrain_audit_check_ok",
		"1 when the last audit found the invariant held, 0 when it found violations.", []string{"check"}, nil)
	auditViolationsDesc = prometheus.NewDesc("redrain_audit_violations",
		"Violations the last audit found of one invariant (at most the examples it lists).", []string{"check"}, nil)
	auditLastDesc = prometheus.NewDesc("redrain_audit_last_run_timestamp_seconds",
		"When the last audit finished (Unix seconds).", nil, nil)
	auditDurationDesc = prometheus.NewDesc("redrain_audit_last_duration_seconds",
		"How long the last audit took.", nil, nil)
	auditBehindDesc = prometheus.NewDesc("redrain_audit_behind_minor_units",
		"What closed leases issued that booking had not booked yet, as of the last live audit.", nil, nil)
)

// audits keeps the last audit's report for /metrics.
type audits struct {
	mu       sync.Mutex
	last     *reconcile.Report
	at       time.Time
	took     time.Duration
	runs     *metrics.Counter
	failures *metrics.Counter // audits that could not run (store unreachable)
}

func newAudits(reg *metrics.Registry, e *promexport.Exporter) *audits {
	a := &audits{
		runs:     reg.Counter("redrain_audit_runs_total", "Audits of the store this node ran (periodic and asked for)."),
		failures: reg.Counter("redrain_audit_errors_total", "Audits that could not run to their end (the store unreachable, a time-out)."),
	}
	e.Register(a)
	return a
}

// run audits the store (live: booking may lag) and keeps the report.
func (a *audits) run(ctx context.Context, audit func(context.Context) (*reconcile.Report, error)) (*reconcile.Report, error) {
	start := time.Now()
	r, err := audit(ctx)
	a.runs.Inc()
	if err != nil {
		a.failures.Inc()
		return nil, err
	}
	a.mu.Lock()
	a.last, a.at, a.took = r, time.Now(), time.Since(start)
	a.mu.Unlock()
	return r, nil
}

// every audits the store live every d until ctx ends.
func (a *audits) every(ctx context.Context, d time.Duration, kv *storage.TiKV, log *slog.Logger) {
	every(ctx, d, func() {
		c, cancel := context.WithTimeout(ctx, d)
		r, err := a.run(c, func(ctx context.Context) (*reconcile.Report, error) { return reconcile.RunLive(ctx, kv) })
		cancel()
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("audit: could not run", "err", err)
		case err == nil && !r.OK:
			log.Error("audit: invariants violated (GET /admin/v1/audit for the report)", "failed", failedChecks(r))
		}
	})
}

func failedChecks(r *reconcile.Report) []string {
	var out []string
	for _, c := range r.Checks {
		if !c.OK {
			out = append(out, c.Name)
		}
	}
	return out
}

func (a *audits) Describe(ch chan<- *prometheus.Desc) {
	ch <- auditCheckDesc
	ch <- auditViolationsDesc
	ch <- auditLastDesc
	ch <- auditDurationDesc
	ch <- auditBehindDesc
}

func (a *audits) Collect(ch chan<- prometheus.Metric) {
	a.mu.Lock()
	r, at, took := a.last, a.at, a.took
	a.mu.Unlock()
	if r == nil {
		return
	}
	for _, c := range r.Checks {
		ok := 0.0
		if c.OK {
			ok = 1
		}
		ch <- prometheus.MustNewConstMetric(auditCheckDesc, prometheus.GaugeValue, ok, c.Name)
		ch <- prometheus.MustNewConstMetric(auditViolationsDesc, prometheus.GaugeValue, float64(len(c.Violations)), c.Name)
	}
	ch <- prometheus.MustNewConstMetric(auditLastDesc, prometheus.GaugeValue, float64(at.UnixNano())/1e9)
	ch <- prometheus.MustNewConstMetric(auditDurationDesc, prometheus.GaugeValue, took.Seconds())
	ch <- prometheus.MustNewConstMetric(auditBehindDesc, prometheus.GaugeValue, float64(r.Behind))
}
