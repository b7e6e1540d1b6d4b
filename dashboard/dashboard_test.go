package dashboard

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"redrain/reconcile"
)

// fakeSource serves what a test sets.
type fakeSource struct {
	nodes   []Node
	parts   []Partition
	budgets []Budget
	report  *reconcile.Report
	audits  int
	fail    error
}

func (f *fakeSource) Self() string { return "n1" }
func (f *fakeSource) Nodes(context.Context) ([]Node, []Partition, error) {
	return append([]Node(nil), f.nodes...), f.parts, f.fail
}
func (f *fakeSource) Budgets(context.Context) ([]Budget, error) { return f.budgets, f.fail }
func (f *fakeSource) Audit(context.Context) (*reconcile.Report, error) {
	f.audits++
	if f.fail != nil {
		return nil, f.fail
	}
	return f.report, nil
}

// hist is a cumulative histogram over bounds 1 ms, 10 ms, 100 ms.
func hist(le1, le10, le100, inf int64) Histogram {
	return Histogram{Bounds: []float64{0.001, 0.01, 0.1}, Cumulative: []int64{le1, le1 + le10, le1 + le10 + le100, le1 + le10 + le100 + inf}}
}

func TestFrameRatesAndPercentiles(t *testing.T) {
	now := time.Unix(1000, 0)
	src := &fakeSource{
		nodes: []Node{
			{ID: "n1", Incarnation: 1, Counters: Counters{Outcomes: map[string]int64{"issued": 100, "repeat": 10}, Booked: 50, Latency: hist(10, 0, 0, 0)}},
			{ID: "n2", Incarnation: 7, Counters: Counters{Outcomes: map[string]int64{"issued": 1000}, Booked: 900, Shed: 5}},
		},
		parts:  []Partition{{Partition: 1, Node: "n2", Lag: 30}, {Partition: 0, Node: "n1", Lag: 12}},
		report: &reconcile.Report{OK: true, Checks: []*reconcile.Check{{Name: "exactly_once", OK: true}}},
	}
	h := NewHub(src)
	h.now = func() time.Time { return now }
	f := h.Frame(context.Background())
	if f.Rates.Accepted != 0 || f.Lag != 42 || len(f.Nodes) != 2 || f.Partitions[0].Partition != 0 || f.Audit == nil || !f.Audit.OK {
		t.Fatalf("first frame: %+v", f)
	}
	// Two seconds on: n1 issued 200 more and booked 100; n2 restarted
	// (a new incarnation: its counters start anew, no rate from it).
	now = now.Add(2 * time.Second)
	src.nodes[0].Counters = Counters{Outcomes: map[string]int64{"issued": 300, "repeat": 30}, Booked: 150, Latency: hist(10, 90, 0, 0)}
	src.nodes[1] = Node{ID: "n2", Incarnation: 8, Counters: Counters{Outcomes: map[string]int64{"issued": 3}}}
	f = h.Frame(context.Background())
	if f.Rates.Accepted != 100 || f.Rates.Booked != 50 || f.Rates.Outcomes["repeat"] != 10 || f.Rates.Shed != 0 {
		t.Errorf("rates %+v", f.Rates)
	}
	if f.Nodes[0].GrantsPerSecond != 110 || f.Nodes[1].GrantsPerSecond != 0 {
		t.Errorf("per node %v, %v", f.Nodes[0].GrantsPerSecond, f.Nodes[1].GrantsPerSecond)
	}
	// 90 observations in (1 ms, 10 ms]: the median is 5.5 ms, p99 9.91 ms
	// (interpolated within the bucket).
	if f.Latency.N != 90 || math.Abs(f.Latency.P50-5.5) > 1e-9 || math.Abs(f.Latency.P99-9.91) > 1e-9 {
		t.Errorf("latency %+v", f.Latency)
	}
	if f.IssueToBooked.N != 0 || f.IssueToBooked.P99 != -1 {
		t.Errorf("issue to booked with nothing observed: %+v", f.IssueToBooked)
	}
	// The audit runs at most every AuditEvery; both frames were 2 s apart.
	if src.audits != 1 {
		t.Errorf("%d audits in 2 s", src.audits)
	}
	// A failing source: the frame says so and keeps the last audit.
	now = now.Add(AuditEvery)
	src.fail = errors.New("store down")
	f = h.Frame(context.Background())
	if len(f.Problems) != 2 || f.Audit == nil || !f.Audit.OK || f.Audit.Error != "store down" {
		t.Errorf("failing source: problems %q, audit %+v", f.Problems, f.Audit)
	}
}

func TestPercentilesBeyondTheLastBound(t *testing.T) {
	p := percentiles(Histogram{Bounds: []float64{0.001}, Cumulative: []int64{1, 99}})
	if p.P50 != 1 || p.P99 != 1 || p.N != 100 { // the +Inf bucket answers its lower bound
		t.Errorf("%+v", p)
	}
}

func TestHubSharesFrames(t *testing.T) {
	src := &fakeSource{report: &reconcile.Report{OK: true}}
	h := NewHub(src)
	a, leaveA := h.Subscribe()
	b, leaveB := h.Subscribe()
	fa, fb := <-a, <-b
	if len(fa) == 0 || string(fa) != string(fb) {
		t.Fatalf("viewers got %q and %q", fa, fb)
	}
	leaveA()
	leaveB()
	h.mu.Lock()
	n := len(h.viewers)
	h.mu.Unlock()
	if n != 0 {
		t.Errorf("%d viewers after both left", n)
	}
}
