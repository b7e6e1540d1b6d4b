// Package dashboard is the operators' live page of a cluster (GET
// /dashboard on a node's operations listener): its assets, embedded in the
// binary, and the frames it shows, one a second over server-sent events.
// A frame is built from what every node publishes about itself (readiness,
// partitions, cumulative counters and latency histograms: rates and
// percentiles come from the differences between two samples), the budgets'
// views, and the live audit. One Hub per node builds frames while someone
// watches and shares each with every viewer, so viewers cost no more
// store reads than one.
package dashboard

import (
	"context"
	"encoding/json"
	"math"
	"sort"
	"sync"
	"time"

	"redrain/reconcile"
)

// Counters are what a node has counted since it started (its status
// carries them every second): grants by outcome, grants booked, refusals,
// and the latency histograms as cumulative bucket counts.
type Counters struct {
	Outcomes     map[string]int64 `json:"outcomes"`
	Booked       int64            `json:"booked"`
	Shed         int64            `json:"shed"`
	RateLimited  int64            `json:"rate_limited"`
	SwitchClosed int64            `json:"switch_closed"`
	// Latency is the grant request latency (redrain_grant_seconds);
	// IssueToBooked the time from a grant's issue to its booking.
	Latency       Histogram `json:"latency"`
	IssueToBooked Histogram `json:"issue_to_booked"`
}

// Histogram is a histogram's upper bounds (seconds) and the cumulative
// count at or below each, +Inf last (one more count than bounds).
type Histogram struct {
	Bounds     []float64 `json:"bounds"`
	Cumulative []int64   `json:"cumulative"`
}

// Node is one node as the dashboard sees it.
type Node struct {
	ID          string   `json:"id"`
	Incarnation uint64   `json:"incarnation"`
	HTTP        string   `json:"http"`
	Ready       bool     `json:"ready"`
	Reason      string   `json:"reason,omitempty"`
	Partitions  []int32  `json:"partitions"`
	Counters    Counters `json:"-"`
	// GrantsPerSecond is the node's answered grants a second (all
	// outcomes) over the last interval.
	GrantsPerSecond float64 `json:"grants_per_second"`
}

// Partition is one grant topic partition: the node that books it and the
// grants in Kafka it has not booked.
type Partition struct {
	Partition int32  `json:"partition"`
	Node      string `json:"node"`
	Lag       int64  `json:"lag"`
}

// Budget is one budget's burn-down, in its asset's minor units.
type Budget struct {
	ID        string  `json:"id"`
	Activity  string  `json:"activity"`
	Stage     string  `json:"stage"`
	Award     string  `json:"award"`
	Asset     string  `json:"asset"`
	Total     int64   `json:"total"`
	Issued    int64   `json:"issued"`
	Booked    int64   `json:"booked"`
	Remaining int64   `json:"remaining"`
	InFlight  int64   `json:"in_flight"`
	Spent     float64 `json:"spent"` // issued / total
	// Thresholds are the award's spent percentages where its draw changes.
	Thresholds []int `json:"thresholds"`
	// UnfoldedDetails and CachedAgeMs are the hot account's fold lag: the
	// details not folded into the budget yet, and the age of the balance
	// cached in Redis (-1: none).
	UnfoldedDetails int      `json:"unfolded_details"`
	CachedAgeMs     int64    `json:"cached_age_ms"`
	OK              bool     `json:"ok"`
	Problems        []string `json:"problems,omitempty"`
}

// Check is one invariant as of the last audit.
type Check struct {
	Name       string `json:"name"`
	OK         bool   `json:"ok"`
	Detail     string `json:"detail"`
	Violations int    `json:"violations"`
	// Example is one violation the audit listed, if any.
	Example string `json:"example,omitempty"`
}

// Audit is the last live audit.
type Audit struct {
	At     int64   `json:"at"` // unix ms when it finished
	OK     bool    `json:"ok"`
	Checks []Check `json:"checks"`
	Behind int64   `json:"behind"` // issued by closed leases, not booked yet
	Error  string  `json:"error,omitempty"`
}

// Rates are answers a second over the last interval, cluster-wide.
type Rates struct {
	Outcomes     map[string]float64 `json:"outcomes"`
	Accepted     float64            `json:"accepted"` // issued: new packets
	Booked       float64            `json:"booked"`
	Shed         float64            `json:"shed"`
	RateLimited  float64            `json:"rate_limited"`
	SwitchClosed float64            `json:"switch_closed"`
}

// Percentiles are milliseconds; -1 where nothing was observed.
type Percentiles struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	N    int64   `json:"n"` // observations in the window
}

// Frame is what the page shows at one moment.
type Frame struct {
	At         int64       `json:"at"` // unix ms
	Self       string      `json:"self"`
	Nodes      []Node      `json:"nodes"`
	Partitions []Partition `json:"partitions"`
	Lag        int64       `json:"lag"`
	Rates      Rates       `json:"rates"`
	// Latency and IssueToBooked are over the last LatencyWindow.
	Latency       Percentiles `json:"latency_ms"`
	IssueToBooked Percentiles `json:"issue_to_booked_ms"`
	Budgets       []Budget    `json:"budgets"`
	Audit         *Audit      `json:"audit"`
	// Problems are the sources that could not be read for this frame.
	Problems []string `json:"problems"`
}

// Source is what a node tells the dashboard.
type Source interface {
	// Self is this node's id.
	Self() string
	// Nodes returns every live node (with its counters) and every
	// partition's owner and lag.
	Nodes(ctx context.Context) ([]Node, []Partition, error)
	// Budgets returns every budget's figures.
	Budgets(ctx context.Context) ([]Budget, error)
	// Audit audits the store live now.
	Audit(ctx context.Context) (*reconcile.Report, error)
}

// Hub cadences: a frame a second; budgets read every other second; the
// audit (every account is read) at most every AuditEvery, and with at
// least auditSpacing times its own duration between two, so that on a
// large store it takes a bounded share of the node.
const (
	auditSpacing  = 4
	FrameEvery    = time.Second
	budgetsEvery  = 2 * time.Second
	AuditEvery    = 5 * time.Second
	LatencyWindow = 5 * time.Second
	// idleStop: the hub stops building frames this long after its last
	// viewer left.
	idleStop = 10 * time.Second
)

// Hub builds frames while anyone watches and hands the newest to every
// viewer.
type Hub struct {
	src Source
	now func() time.Time

	mu      sync.Mutex
	viewers map[chan []byte]struct{}
	running bool
	last    []byte    // the newest frame, JSON
	lastAt  time.Time // when a viewer was last seen

	// Builder state, touched by the building goroutine only (and by
	// Frame, which takes buildMu).
	buildMu   sync.Mutex
	prev      map[string]sample // by node id
	window    []windowSample
	budgets   []Budget
	budgetsAt time.Time
	budgetErr string
	audit     *Audit
	auditAt   time.Time
	auditTook time.Duration
}

type sample struct {
	incarnation uint64
	at          time.Time
	c           Counters
}

// windowSample is what all nodes observed in one interval.
type windowSample struct {
	at                     time.Time
	latency, issueToBooked Histogram // per-bucket (not cumulative) counts
}

// NewHub returns a hub over src.
func NewHub(src Source) *Hub {
	return &Hub{src: src, now: time.Now, viewers: map[chan []byte]struct{}{}, prev: map[string]sample{}}
}

// Subscribe returns a channel that receives each new frame (the newest
// only, when the viewer is slow) and a function that unsubscribes. The
// first viewer starts the hub; it stops a while after the last left.
func (h *Hub) Subscribe() (<-chan []byte, func()) {
	ch := make(chan []byte, 1)
	h.mu.Lock()
	h.viewers[ch] = struct{}{}
	h.lastAt = h.now()
	if h.last != nil {
		ch <- h.last
	}
	if !h.running {
		h.running = true
		go h.run()
	}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		delete(h.viewers, ch)
		h.lastAt = h.now()
		h.mu.Unlock()
	}
}

func (h *Hub) run() {
	t := time.NewTicker(FrameEvery)
	defer t.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), FrameEvery*4)
		f := h.Frame(ctx)
		cancel()
		b, err := json.Marshal(f)
		h.mu.Lock()
		if err == nil {
			h.last = b
			for ch := range h.viewers {
				select { // replace an unread frame with this one
				case <-ch:
				default:
				}
				ch <- b
			}
		}
		if len(h.viewers) == 0 && h.now().Sub(h.lastAt) > idleStop {
			h.running, h.last = false, nil
			h.mu.Unlock()
			return
		}
		h.mu.Unlock()
		<-t.C
	}
}

// Frame builds a frame now (the hub calls it every FrameEvery; a test or
// GET /dashboard/frame may call it too).
func (h *Hub) Frame(ctx context.Context) *Frame {
	h.buildMu.Lock()
	defer h.buildMu.Unlock()
	now := h.now()
	f := &Frame{At: now.UnixMilli(), Self: h.src.Self(), Nodes: []Node{}, Partitions: []Partition{}, Budgets: []Budget{}, Problems: []string{},
		Rates: Rates{Outcomes: map[string]float64{}}}
	nodes, parts, err := h.src.Nodes(ctx)
	if err != nil {
		f.Problems = append(f.Problems, "nodes: "+err.Error())
	}
	h.rates(f, nodes, now)
	f.Nodes = append(f.Nodes, nodes...)
	sort.Slice(f.Nodes, func(i, j int) bool { return f.Nodes[i].ID < f.Nodes[j].ID })
	f.Partitions = append(f.Partitions, parts...)
	sort.Slice(f.Partitions, func(i, j int) bool { return f.Partitions[i].Partition < f.Partitions[j].Partition })
	for _, p := range parts {
		f.Lag += p.Lag
	}

	if now.Sub(h.budgetsAt) >= budgetsEvery {
		h.budgetsAt = now
		if bs, err := h.src.Budgets(ctx); err != nil {
			h.budgetErr = "budgets: " + err.Error()
		} else {
			h.budgets, h.budgetErr = bs, ""
		}
	}
	if h.budgetErr != "" {
		f.Problems = append(f.Problems, h.budgetErr)
	}
	f.Budgets = append(f.Budgets, h.budgets...)

	if now.Sub(h.auditAt) >= max(AuditEvery, auditSpacing*h.auditTook) {
		h.auditAt = now
		start := time.Now()
		r, err := h.src.Audit(ctx)
		h.auditTook = time.Since(start)
		switch {
		case err != nil && h.audit != nil:
			a := *h.audit // keep the last result, say why it is old
			a.Error = err.Error()
			h.audit = &a
		case err != nil:
			h.audit = &Audit{At: now.UnixMilli(), Checks: []Check{}, Error: err.Error()}
		default:
			h.audit = auditOf(r, h.now())
		}
	}
	f.Audit = h.audit
	return f
}

// rates fills f's rates and percentiles from the difference between each
// node's counters and its previous sample.
func (h *Hub) rates(f *Frame, nodes []Node, now time.Time) {
	var win windowSample
	win.at = now
	seen := map[string]bool{}
	for i := range nodes {
		n := &nodes[i]
		seen[n.ID] = true
		cur := sample{incarnation: n.Incarnation, at: now, c: n.Counters}
		prev, ok := h.prev[n.ID]
		h.prev[n.ID] = cur
		if !ok || prev.incarnation != n.Incarnation {
			continue // a new node, or restarted: its counters start anew
		}
		dt := now.Sub(prev.at).Seconds()
		if dt <= 0 {
			continue
		}
		var answered float64
		for o, v := range cur.c.Outcomes {
			r := float64(max(v-prev.c.Outcomes[o], 0)) / dt
			f.Rates.Outcomes[o] += r
			answered += r
		}
		n.GrantsPerSecond = answered
		f.Rates.Accepted += float64(max(cur.c.Outcomes["issued"]-prev.c.Outcomes["issued"], 0)) / dt
		f.Rates.Booked += float64(max(cur.c.Booked-prev.c.Booked, 0)) / dt
		f.Rates.Shed += float64(max(cur.c.Shed-prev.c.Shed, 0)) / dt
		f.Rates.RateLimited += float64(max(cur.c.RateLimited-prev.c.RateLimited, 0)) / dt
		f.Rates.SwitchClosed += float64(max(cur.c.SwitchClosed-prev.c.SwitchClosed, 0)) / dt
		win.latency = addDelta(win.latency, cur.c.Latency, prev.c.Latency)
		win.issueToBooked = addDelta(win.issueToBooked, cur.c.IssueToBooked, prev.c.IssueToBooked)
	}
	for id := range h.prev {
		if !seen[id] {
			delete(h.prev, id)
		}
	}
	h.window = append(h.window, win)
	for len(h.window) > 0 && now.Sub(h.window[0].at) > LatencyWindow {
		h.window = h.window[1:]
	}
	var lat, itb Histogram
	for _, w := range h.window {
		lat = addCounts(lat, w.latency)
		itb = addCounts(itb, w.issueToBooked)
	}
	f.Latency, f.IssueToBooked = percentiles(lat), percentiles(itb)
}

// addDelta adds to acc (per-bucket counts) what cur observed since prev
// (both cumulative, over the same bounds; other bounds add nothing).
func addDelta(acc, cur, prev Histogram) Histogram {
	if len(cur.Cumulative) == 0 || len(prev.Cumulative) != len(cur.Cumulative) || len(cur.Cumulative) != len(cur.Bounds)+1 {
		return acc
	}
	d := Histogram{Bounds: cur.Bounds, Cumulative: make([]int64, len(cur.Cumulative))}
	var below int64
	for i := range cur.Cumulative {
		delta := max(cur.Cumulative[i]-prev.Cumulative[i], 0)
		d.Cumulative[i] = max(delta-below, 0) // per bucket
		below = max(delta, below)
	}
	return addCounts(acc, d)
}

// addCounts adds per-bucket counts b to a (same bounds, or a empty).
func addCounts(a, b Histogram) Histogram {
	if len(b.Cumulative) == 0 {
		return a
	}
	if len(a.Cumulative) == 0 {
		return Histogram{Bounds: b.Bounds, Cumulative: append([]int64(nil), b.Cumulative...)}
	}
	if len(a.Cumulative) != len(b.Cumulative) {
		return a
	}
	for i := range b.Cumulative {
		a.Cumulative[i] += b.Cumulative[i]
	}
	return a
}

// percentiles of per-bucket counts, in ms, interpolated linearly within a
// bucket (the +Inf bucket answers its lower bound).
func percentiles(h Histogram) Percentiles {
	var n int64
	for _, c := range h.Cumulative {
		n += c
	}
	p := Percentiles{P50: -1, P90: -1, P99: -1, P999: -1, N: n}
	if n == 0 {
		return p
	}
	q := func(x float64) float64 {
		rank := x * float64(n)
		var seen float64
		lo := 0.0
		for i, c := range h.Cumulative {
			hi := math.Inf(1)
			if i < len(h.Bounds) {
				hi = h.Bounds[i]
			}
			if c > 0 && seen+float64(c) >= rank {
				if math.IsInf(hi, 1) {
					return lo * 1000
				}
				return (lo + (hi-lo)*(rank-seen)/float64(c)) * 1000
			}
			seen += float64(c)
			lo = hi
		}
		return lo * 1000
	}
	p.P50, p.P90, p.P99, p.P999 = q(0.5), q(0.9), q(0.99), q(0.999)
	return p
}

// auditOf is a report as the page shows it.
func auditOf(r *reconcile.Report, at time.Time) *Audit {
	a := &Audit{At: at.UnixMilli(), OK: r.OK, Checks: []Check{}, Behind: r.Behind}
	for _, c := range r.Checks {
		ch := Check{Name: c.Name, OK: c.OK, Detail: c.Detail, Violations: len(c.Violations)}
		if len(c.Violations) > 0 {
			ch.Example = c.Violations[0]
		}
		a.Checks = append(a.Checks, ch)
	}
	return a
}
