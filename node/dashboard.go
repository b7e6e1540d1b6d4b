package node

import (
	"context"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"

	"redrain/dashboard"
	"redrain/reconcile"
	"redrain/tokens"
)

// counters is what this node has counted, from its own metrics, for its
// status (every second) and the dashboard.
func (n *Node) counters() *dashboard.Counters {
	mfs, err := n.exporter.GatherOwn()
	if err != nil {
		return nil
	}
	c := &dashboard.Counters{Outcomes: map[string]int64{}}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "redrain_grants_total":
			for _, m := range mf.GetMetric() {
				c.Outcomes[label(m, "outcome")] = int64(m.GetCounter().GetValue())
			}
		case "redrain_grants_booked_total":
			c.Booked = counterSum(mf)
		case "redrain_shed_total":
			c.Shed = counterSum(mf)
		case "redrain_rate_limited_total":
			c.RateLimited = counterSum(mf)
		case "redrain_switch_closed_total":
			c.SwitchClosed = counterSum(mf)
		case "redrain_grant_seconds":
			c.Latency = histogramOf(mf)
		case "redrain_grant_issue_to_booked_seconds":
			c.IssueToBooked = histogramOf(mf)
		}
	}
	return c
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func counterSum(mf *dto.MetricFamily) int64 {
	var sum float64
	for _, m := range mf.GetMetric() {
		sum += m.GetCounter().GetValue()
	}
	return int64(sum)
}

// histogramOf is the first series of a histogram family, cumulative.
func histogramOf(mf *dto.MetricFamily) dashboard.Histogram {
	ms := mf.GetMetric()
	if len(ms) == 0 {
		return dashboard.Histogram{}
	}
	h := ms[0].GetHistogram()
	var out dashboard.Histogram
	for _, b := range h.GetBucket() {
		out.Bounds = append(out.Bounds, b.GetUpperBound())
		out.Cumulative = append(out.Cumulative, int64(b.GetCumulativeCount()))
	}
	out.Cumulative = append(out.Cumulative, int64(h.GetSampleCount()))
	return out
}

// dashSource is the node as the dashboard's source.
type dashSource struct{ n *Node }

func (s dashSource) Self() string { return s.n.ID }

func (s dashSource) Nodes(ctx context.Context) ([]dashboard.Node, []dashboard.Partition, error) {
	n := s.n
	sts, err := n.statuses(ctx)
	if err != nil {
		return nil, nil, err
	}
	var nodes []dashboard.Node
	owner := map[int32]string{}
	for _, st := range sts {
		d := dashboard.Node{ID: st.ID, Incarnation: st.Incarnation, HTTP: st.HTTP, Ready: st.Ready, Reason: st.Reason, Partitions: st.Partitions}
		if st.Counters != nil {
			d.Counters = *st.Counters
		}
		if st.ID == n.ID && st.Incarnation == n.Incarnation {
			if c := n.counters(); c != nil { // fresher than the published status
				d.Counters = *c
			}
		}
		nodes = append(nodes, d)
		for _, p := range st.Partitions {
			owner[p] = st.ID
		}
	}
	var parts []dashboard.Partition
	if lag := n.partitionLag.Load(); lag != nil {
		for p, l := range *lag {
			parts = append(parts, dashboard.Partition{Partition: p, Node: owner[p], Lag: l})
		}
	}
	return nodes, parts, nil
}

func (s dashSource) Budgets(ctx context.Context) ([]dashboard.Budget, error) {
	n := s.n
	views, err := n.budgetViews.get(ctx)
	if err != nil {
		return nil, err
	}
	cat := n.grants.Catalog()
	out := make([]dashboard.Budget, 0, len(views))
	for _, v := range views {
		b := dashboard.Budget{ID: v.ID, Asset: v.Asset, Total: v.Total, Issued: v.Issued, Booked: v.Booked,
			Remaining: v.Total - v.Issued, InFlight: v.InFlight, UnfoldedDetails: v.UnfoldedDetails, CachedAgeMs: -1,
			OK: v.OK, Problems: v.Problems, Thresholds: []int{}}
		if v.Total > 0 {
			b.Spent = float64(v.Issued) / float64(v.Total)
		}
		if v.Cached != nil {
			b.CachedAgeMs = v.Cached.AgeMs
		}
		// Budget ids are activity/stage/award (campaign.BudgetID).
		if parts := strings.Split(v.ID, "/"); len(parts) == 3 {
			b.Activity, b.Stage, b.Award = parts[0], parts[1], parts[2]
			if stage, err := tokens.ParseStage(parts[1]); err == nil && cat != nil {
				if w := cat.Award(parts[0], stage, parts[2]); w != nil {
					for _, t := range w.Thresholds {
						b.Thresholds = append(b.Thresholds, t.Spent)
					}
				}
			}
		}
		out = append(out, b)
	}
	return out, nil
}

func (s dashSource) Audit(ctx context.Context) (*reconcile.Report, error) {
	c, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return s.n.audits.run(c, func(ctx context.Context) (*reconcile.Report, error) { return reconcile.RunLive(ctx, s.n.tikv) })
}
