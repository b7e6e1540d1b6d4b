package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"redrain/adminauth"
)

// This file talks to the nodes' admin API: a few requests a second, so
// encoding/json and a plain fasthttp.Client are fine, and they use their own
// connections so that they never queue behind pipelined grants.

// nodeStats is GET /admin/v1/stats of one node.
type nodeStats struct {
	GrantsIssued int64 `json:"grants_issued"` // New grants this node acknowledged since it started.
	GrantsBooked int64 `json:"grants_booked"` // Grants this node's consumers booked since it started.
	BookingLag   int64 `json:"booking_lag"`   // Grants in Kafka not yet booked, cluster-wide.
	Ready        bool  `json:"ready"`
	// CPUSeconds is the node process's user+system CPU time so far.
	CPUSeconds float64 `json:"cpu_seconds"`
	// GrantRecords counts the grant-stream records the node wrote; Allocs
	// the heap allocations of its process (booking's included), and
	// AllocBytes their bytes.
	GrantRecords int64 `json:"grant_records"`
	Allocs       int64 `json:"allocs"`
	AllocBytes   int64 `json:"alloc_bytes"`
	// BookingKeys counts the keys booking transactions wrote, and
	// BookingTxns those transactions.
	BookingKeys int64 `json:"booking_keys"`
	BookingTxns int64 `json:"booking_txns"`
	// IssueToBooked is the node's histogram of the time from a grant's
	// issue to its booking, since it started; nil when it has none.
	IssueToBooked *buckets `json:"issue_to_booked_seconds"`
}

// AuditResult is GET /admin/v1/audit: the node's check of the invariants
// over the store.
type AuditResult struct {
	OK     bool         `json:"ok"`
	Checks []AuditCheck `json:"checks"`
}

// AuditCheck is one invariant of an AuditResult.
type AuditCheck struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// admin issues signed admin API requests to the targets.
type admin struct {
	client  *fasthttp.Client
	signer  *adminauth.Signer
	targets []target
}

func newAdmin(targets []target, key adminauth.Key) *admin {
	return &admin{
		client: &fasthttp.Client{
			Name:                "redrain-bench",
			MaxIdleConnDuration: 2 * time.Second,
		},
		signer:  &adminauth.Signer{Key: key},
		targets: targets,
	}
}

// errAdminRefused marks an admin answer that waiting cannot change: no
// such route at that address (not the node's operations listener), or the
// key refused.
var errAdminRefused = errors.New("bench: the admin request was refused")

// get fetches path from t within timeout (or ctx's deadline, if sooner) and
// decodes its JSON body into v. Any status but 200 is an error.
func (a *admin) get(ctx context.Context, t target, path string, timeout time.Duration, v any) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(t.base + path)
	req.Header.SetMethod(fasthttp.MethodGet)
	h, err := a.signer.Headers(fasthttp.MethodGet, path, "", nil)
	if err != nil {
		return err
	}
	for name := range h {
		req.Header.Set(name, h.Get(name))
	}
	if err := a.client.DoTimeout(req, resp, timeout); err != nil {
		return fmt.Errorf("GET %s%s: %w", t.base, path, err)
	}
	switch code := resp.StatusCode(); code {
	case fasthttp.StatusOK:
	case fasthttp.StatusNotFound:
		return fmt.Errorf("%w: GET %s%s: status %d: %.200s (a node with --admin-http serves its admin routes there: give it as --admin-target)",
			errAdminRefused, t.base, path, code, resp.Body())
	case fasthttp.StatusUnauthorized:
		return fmt.Errorf("%w: GET %s%s: status %d: %.200s (sign with the node's admin key: --admin-key or $REDRAIN_ADMIN_KEY)",
			errAdminRefused, t.base, path, code, resp.Body())
	default:
		return fmt.Errorf("GET %s%s: status %d: %.200s", t.base, path, code, resp.Body())
	}
	if err := json.Unmarshal(resp.Body(), v); err != nil {
		return fmt.Errorf("GET %s%s: %w", t.base, path, err)
	}
	return nil
}

// statsAll fetches the stats of every target in parallel; stats[i] is valid
// when errs[i] is nil.
func (a *admin) statsAll(ctx context.Context, timeout time.Duration) (stats []nodeStats, errs []error) {
	stats = make([]nodeStats, len(a.targets))
	errs = make([]error, len(a.targets))
	var wg sync.WaitGroup
	for i, t := range a.targets {
		wg.Go(func() {
			errs[i] = a.get(ctx, t, adminauth.PathStats, timeout, &stats[i])
		})
	}
	wg.Wait()
	return stats, errs
}

// audit runs the audit on the first target.
func (a *admin) audit(ctx context.Context, timeout time.Duration) (*AuditResult, error) {
	var r AuditResult
	if err := a.get(ctx, a.targets[0], adminauth.PathAudit, timeout, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// bookedCounter follows the sum over targets of grants_booked from a
// baseline taken before the run.
type bookedCounter struct {
	base []int64 // grants_booked per target before the run.
	last []int64 // The latest grants_booked read per target.
	// cpuBase and cpuLast are the targets' CPU seconds, read alongside,
	// and the others the keys and transactions booking wrote.
	cpuBase, cpuLast   []float64
	keysBase, keysLast []int64
	txnsBase, txnsLast []int64
	// issueBase and issueLast are the targets' issue-to-booked histograms.
	issueBase, issueLast []*buckets
}

func newBookedCounter(base []nodeStats) *bookedCounter {
	n := len(base)
	c := &bookedCounter{base: make([]int64, n), last: make([]int64, n),
		cpuBase: make([]float64, n), cpuLast: make([]float64, n),
		keysBase: make([]int64, n), keysLast: make([]int64, n), txnsBase: make([]int64, n), txnsLast: make([]int64, n),
		issueBase: make([]*buckets, n), issueLast: make([]*buckets, n)}
	for i, s := range base {
		c.base[i] = s.GrantsBooked
		c.last[i] = s.GrantsBooked
		c.cpuBase[i], c.cpuLast[i] = s.CPUSeconds, s.CPUSeconds
		c.keysBase[i], c.keysLast[i] = s.BookingKeys, s.BookingKeys
		c.txnsBase[i], c.txnsLast[i] = s.BookingTxns, s.BookingTxns
		c.issueBase[i], c.issueLast[i] = s.IssueToBooked, s.IssueToBooked
	}
	return c
}

// issueToBooked returns the percentiles of the time from issue to booking
// of the grants the targets booked since the baseline, or nil when a
// target does not report it or nothing was booked.
func (c *bookedCounter) issueToBooked() *Quantiles {
	return quantilesOf(bucketsSince(c.issueBase, c.issueLast))
}

// cpu returns the CPU seconds the targets used since the baseline.
func (c *bookedCounter) cpu() float64 { return sinceBase(c.cpuBase, c.cpuLast) }

// update takes the targets' latest stats; targets with an error keep their
// previous reading.
func (c *bookedCounter) update(stats []nodeStats, errs []error) {
	for i := range stats {
		if errs[i] == nil {
			c.last[i] = stats[i].GrantsBooked
			c.cpuLast[i] = stats[i].CPUSeconds
			c.keysLast[i] = stats[i].BookingKeys
			c.txnsLast[i] = stats[i].BookingTxns
			c.issueLast[i] = stats[i].IssueToBooked
		}
	}
}

// total returns the grants booked since the baseline, summed over targets.
func (c *bookedCounter) total() int64 { return sinceBase(c.base, c.last) }

// writes returns the keys and transactions booking wrote since the
// baseline, summed over targets.
func (c *bookedCounter) writes() (keys, txns int64) {
	return sinceBase(c.keysBase, c.keysLast), sinceBase(c.txnsBase, c.txnsLast)
}

// sinceBase sums, over targets, how far each counter moved from its
// baseline. A target whose counter fell below its baseline restarted, and
// is counted from zero; one that restarted and then overtook its baseline
// is undercounted, which the counters cannot reveal.
func sinceBase[T int64 | float64](base, last []T) T {
	var n T
	for i := range last {
		if last[i] >= base[i] {
			n += last[i] - base[i]
		} else {
			n += last[i]
		}
	}
	return n
}
