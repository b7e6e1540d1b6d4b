package bench

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Report is what a run measured. Counts are of grants, whether they were
// sent one a request or in batches, and cover the whole run, including
// responses that arrived after the send window closed.
type Report struct {
	// Duration is the send window: from the first request until Config's
	// Duration ran out or ctx was canceled. The rates per second below are
	// counts divided by it.
	Duration time.Duration `json:"duration_ns"`
	// Seed is the seed the run used (Config.Seed, or the one picked).
	Seed uint64 `json:"seed"`
	// Batch is the number of grants a request held: Config.Batch, or 1
	// for single grant requests.
	Batch int `json:"batch"`

	// Offered counts grants sent. Every one of them ends up in Accepted or
	// in Errors: Offered = Accepted + the sum of Errors.
	Offered int64 `json:"offered"`
	// Accepted counts grants answered with status "issued" or "booked"
	// and a token, in a 200 response or an item of one.
	Accepted int64 `json:"accepted"`
	// Repeats counts the Accepted grants that repeated the grant of a user
	// already granted in this run; Accepted - Repeats new grants were
	// issued.
	Repeats int64 `json:"repeats"`
	// RepeatsBooked counts the Repeats answered with status "booked"
	// rather than "issued": the first grant had been booked by then.
	RepeatsBooked int64 `json:"repeats_booked"`
	// TokenMismatches counts Repeats answered with a token other than the
	// one of the user's first grant. A node must return the identical
	// token, so anything but 0 is a bug; Err reports it.
	TokenMismatches int64 `json:"token_mismatches"`
	// Errors counts grants that were not accepted, by the error code of
	// their response or batch item (such as "budget_exhausted"), or by
	// "http_<status>" when the response had no code, "bad_response" for a
	// 200 without a status and token (or for a batch, without one answer
	// per grant), "timeout" when no response came within
	// Config.RequestTimeout, and "transport" when the connection failed. A
	// batch request that failed as a whole counts once for each of its
	// grants.
	Errors map[string]int64 `json:"errors"`
	// TransportErrorFirst is the text of the first "transport" error, the
	// only hint at its cause; empty when there was none.
	TransportErrorFirst string `json:"transport_error_first,omitempty"`
	// ErrorMessages holds, for the codes the node answered with a message,
	// one such message (the first a worker got).
	ErrorMessages map[string]string `json:"error_messages,omitempty"`

	// Requests counts the responses that arrived, to single grant or batch
	// requests alike (timeouts and transport errors have none).
	Requests int64 `json:"requests"`

	// OfferedPerSec, AcceptedPerSec and RequestsPerSec are Offered,
	// Accepted and Requests divided by Duration.
	OfferedPerSec  float64 `json:"offered_per_sec"`
	AcceptedPerSec float64 `json:"accepted_per_sec"`
	RequestsPerSec float64 `json:"requests_per_sec"`
	// BookedPerSec is BookedTotal divided by Duration + DrainTime: the
	// booking throughput over the time from the first request until
	// booking had caught up.
	BookedPerSec float64 `json:"booked_per_sec"`

	// Latencies run from when a request was due until its response
	// arrived, over every response, accepted or not (timeouts and
	// transport errors have none). Under Config.Rate a request is due at
	// its slot in the pacing schedule (LatencyFromSchedule), so a request
	// sent late because the target, the connection or the bench stalled
	// is charged the wait too, and a stall shows in the latencies of every
	// request queued behind it, not of the one it held up alone; without a
	// rate, at its send. They are per request, not per grant: a batch
	// request's latency is that of all its grants. Percentiles are exact
	// to two significant digits and LatencyMax is exact.
	LatencyP50  time.Duration `json:"latency_p50_ns"`
	LatencyP99  time.Duration `json:"latency_p99_ns"`
	LatencyP999 time.Duration `json:"latency_p999_ns"`
	LatencyMax  time.Duration `json:"latency_max_ns"`
	// LatencyFromSchedule is true under Config.Rate: the latencies above
	// run from each request's slot in the schedule.
	LatencyFromSchedule bool `json:"latency_from_schedule"`
	// The service times run from a request's actual send until its
	// response arrived, over the same responses: under Config.Rate they
	// leave out the time a request waited to be sent, and so hide stalls;
	// without a rate they equal the latencies.
	ServiceP50  time.Duration `json:"service_p50_ns"`
	ServiceP99  time.Duration `json:"service_p99_ns"`
	ServiceP999 time.Duration `json:"service_p999_ns"`
	ServiceMax  time.Duration `json:"service_max_ns"`
	// ScheduledNotSent counts, under Config.Rate, the grants of the slots
	// of the send window that no request took: the run was that far behind
	// its schedule when the window closed (the target or the bench could
	// not keep up with the rate). Their wait is in no latency.
	ScheduledNotSent int64 `json:"scheduled_not_sent"`
	// latency and service are the distributions behind the percentiles
	// (service is latency when not paced), for WriteHDR.
	latency, service *histSnapshot
	// Series is the per-second series, when Config asked for it (a series
	// or a plot file); see Second.
	Series []Second `json:"-"`

	// BookedTotal is the sum over targets of the growth of grants_booked
	// from before the run until the drain ended. It counts every grant the
	// targets' consumers booked meanwhile, including any not sent by this
	// run; when the drain timed out, only those booked by then; and 0 when
	// ctx was canceled during the run, as no drain was attempted. In a node
	// phase of CompareCeiling, which is not drained, it is the growth over
	// the send window.
	BookedTotal int64 `json:"booked_total"`
	// DrainTime runs from the end of the send window until booking_lag
	// was 0 on every target (or until DrainTimeout ran out). It includes
	// the wait for responses still in flight.
	DrainTime time.Duration `json:"drain_time_ns"`
	// NodeCPUSeconds is the CPU the targets' processes used from the start
	// of the run until booking drained (all their work: issuing, booking,
	// the embedded backends they host). CPUPerGrant is that divided by
	// BookedTotal.
	NodeCPUSeconds float64       `json:"node_cpu_seconds"`
	CPUPerGrant    time.Duration `json:"cpu_per_grant_ns"`
	// SendCPUSeconds is the CPU the targets' processes used over the send
	// window alone: from their stats read before the first request until
	// those read once the last answer was in. Booking that kept up during
	// the window is in it, a backlog booked later is not. CPUPerAccepted
	// is that divided by Accepted. Both are 0 when the stats could not be
	// read, or when the target has none (the ceiling of CompareCeiling).
	SendCPUSeconds float64       `json:"send_cpu_seconds"`
	CPUPerAccepted time.Duration `json:"cpu_per_accepted_ns"`
	// GrantsPerRecord is new grants per grant-stream record over the send
	// window, and AllocsPerAccepted the targets' heap allocations (all of
	// their work, booking's included) per accepted grant, and
	// AllocBytesPerAccepted their bytes; 0 when the targets do not report
	// them.
	GrantsPerRecord       float64 `json:"grants_per_record"`
	AllocsPerAccepted     float64 `json:"allocs_per_accepted"`
	AllocBytesPerAccepted float64 `json:"alloc_bytes_per_accepted"`
	// KeysPerBooked is the keys booking transactions wrote per booked
	// grant, and GrantsPerTxn the grants booked per transaction, from the
	// run's start until booking drained; 0 when the targets do not report
	// them.
	KeysPerBooked float64 `json:"keys_per_booked"`
	GrantsPerTxn  float64 `json:"grants_per_txn"`
	// IssuedInWindow is the new grants the targets acknowledged over the
	// send window (grants_issued; Accepted also counts repeats, which issue
	// nothing), and BookedInWindow the grants they booked over it, both
	// from the stats read before the first request and once the last
	// answer was in. BookedInWindowShare is BookedInWindow /
	// IssuedInWindow: at a sustained rate, how well booking keeps up (the
	// grants of the window's last moments cannot be booked yet). All 0
	// when the stats could not be read.
	IssuedInWindow      int64   `json:"issued_in_window"`
	BookedInWindow      int64   `json:"booked_in_window"`
	BookedInWindowShare float64 `json:"booked_in_window_share"`
	// IssueToBooked is the time from a grant's issue to its booking over
	// the grants the targets booked from the start of the run until the
	// drain ended, interpolated in the nodes' histogram buckets; nil when
	// the targets do not report it (or booked nothing).
	IssueToBooked *Quantiles `json:"issue_to_booked,omitempty"`
	// Drained reports whether booking_lag reached 0 on every target.
	Drained bool `json:"drained"`

	// Audit is the audit's result, or nil when it was not run.
	Audit *AuditResult `json:"audit,omitempty"`
	// Problems lists what kept the run from completing as configured: ctx
	// canceled, booking not drained within DrainTimeout, the audit skipped
	// or unreachable. Err reports them.
	Problems []string `json:"problems,omitempty"`
}

// Err returns nil when the run completed cleanly: no Problems, no token
// mismatches, and an audit (if one ran) that passed. Errors from the node,
// such as budget_exhausted, are results rather than failures and are not
// reported.
func (r *Report) Err() error {
	var errs []error
	for _, p := range r.Problems {
		errs = append(errs, errors.New(p))
	}
	if r.TokenMismatches > 0 {
		errs = append(errs, fmt.Errorf("%d repeats were answered with a different token", r.TokenMismatches))
	}
	if err := auditErr(r.Audit); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("bench: %w", errors.Join(errs...))
	}
	return nil
}

// WriteText writes r for a reader, one figure a line.
func (r *Report) WriteText(w io.Writer) {
	fmt.Fprintf(w, "duration     %v (seed %d)\n", r.Duration.Round(time.Millisecond), r.Seed)
	fmt.Fprintf(w, "offered      %d (%.0f/s)\n", r.Offered, r.OfferedPerSec)
	fmt.Fprintf(w, "accepted     %d (%.0f/s): %d new, %d repeats (%d found booked)\n",
		r.Accepted, r.AcceptedPerSec, r.Accepted-r.Repeats, r.Repeats, r.RepeatsBooked)
	if r.TokenMismatches > 0 {
		fmt.Fprintf(w, "MISMATCHED   %d repeats answered with a different token\n", r.TokenMismatches)
	}
	fmt.Fprintf(w, "requests     %d (%.0f/s)\n", r.Requests, r.RequestsPerSec)
	fmt.Fprintf(w, "errors       %s\n", formatErrors(r.Errors))
	if r.TransportErrorFirst != "" {
		fmt.Fprintf(w, "             first transport error: %s\n", r.TransportErrorFirst)
	}
	for _, code := range errorCodes(r.Errors) {
		if m := r.ErrorMessages[code]; m != "" {
			fmt.Fprintf(w, "             %s: %q\n", code, m)
		}
	}
	latency, from := "latency     ", "from send to answer"
	if r.LatencyFromSchedule {
		from = "from schedule: each request's slot in the --rate schedule to its answer, waits to send included"
	}
	if r.Batch > 1 {
		latency = fmt.Sprintf("latency (per request of %d grants)", r.Batch)
	}
	fmt.Fprintf(w, "%s p50=%s p99=%s p99.9=%s max=%s (%s)\n", latency,
		formatLatency(r.LatencyP50), formatLatency(r.LatencyP99),
		formatLatency(r.LatencyP999), formatLatency(r.LatencyMax), from)
	if r.LatencyFromSchedule {
		fmt.Fprintf(w, "service time p50=%s p99=%s p99.9=%s max=%s (from send: the actual send to the answer)\n",
			formatLatency(r.ServiceP50), formatLatency(r.ServiceP99),
			formatLatency(r.ServiceP999), formatLatency(r.ServiceMax))
	}
	if r.ScheduledNotSent > 0 {
		fmt.Fprintf(w, "BEHIND       %d grants scheduled in the window were not sent: the run could not keep up with --rate\n",
			r.ScheduledNotSent)
	}
	drained := "drained"
	if !r.Drained {
		drained = "NOT drained"
	}
	fmt.Fprintf(w, "booked       %d (%.0f/s over run and drain), %s after %v\n",
		r.BookedTotal, r.BookedPerSec, drained, r.DrainTime.Round(time.Millisecond))
	if r.IssuedInWindow > 0 {
		fmt.Fprintf(w, "             %d during the send window: %.3f of the %d new grants issued in it\n",
			r.BookedInWindow, r.BookedInWindowShare, r.IssuedInWindow)
	}
	if r.IssueToBooked != nil {
		fmt.Fprintf(w, "issue→booked %s (node histogram, interpolated)\n", r.IssueToBooked)
	}
	if r.NodeCPUSeconds > 0 {
		fmt.Fprintf(w, "node cpu     %.1fs, %v per booked grant (issue + book, backends in process included)\n",
			r.NodeCPUSeconds, r.CPUPerGrant.Round(time.Microsecond/10))
	}
	if r.SendCPUSeconds > 0 {
		fmt.Fprintf(w, "             %.1fs during the send window, %v per accepted grant\n",
			r.SendCPUSeconds, r.CPUPerAccepted.Round(time.Microsecond/10))
	}
	if r.GrantsPerRecord > 0 || r.AllocsPerAccepted > 0 {
		fmt.Fprintf(w, "             %.1f grants per stream record, %.1f allocations (%.0f bytes) per accepted grant (node-wide)\n",
			r.GrantsPerRecord, r.AllocsPerAccepted, r.AllocBytesPerAccepted)
	}
	if r.KeysPerBooked > 0 {
		fmt.Fprintf(w, "             %.4f keys written per booked grant, %.0f grants per booking transaction\n",
			r.KeysPerBooked, r.GrantsPerTxn)
	}
	writeAudit(w, "", r.Audit, r.Problems)
}

// WriteHDR writes the latency distribution behind LatencyP50 and the
// others (from schedule under Config.Rate) in HdrHistogram's percentile
// distribution text format, values in milliseconds: what
// outputPercentileDistribution writes, and HdrHistogram's plotter reads.
// A row's Value is the report's percentile at its level, so that the rows
// agree with the printed figures. It fails on a Report that Run did not
// make (one decoded from JSON has no distribution).
func (r *Report) WriteHDR(w io.Writer) error {
	if r.latency == nil {
		return errNoDistribution
	}
	return r.latency.writeHDR(w)
}

// WriteServiceHDR is WriteHDR for the service times (from the actual
// send), the same distribution as WriteHDR's when not paced.
func (r *Report) WriteServiceHDR(w io.Writer) error {
	if r.service == nil {
		return errNoDistribution
	}
	return r.service.writeHDR(w)
}

var errNoDistribution = errors.New("bench: the report holds no latency distribution (only Run's reports do)")

// auditErr names the failed checks of an audit that ran and failed.
func auditErr(a *AuditResult) error {
	if a == nil || a.OK {
		return nil
	}
	var failed []string
	for _, c := range a.Checks {
		if !c.OK {
			failed = append(failed, c.Name)
		}
	}
	return fmt.Errorf("audit failed: %s", strings.Join(failed, ", "))
}

// writeAudit prints the audit's verdict and checks, then the problems,
// with their labels padded by pad (to line up with the report's).
func writeAudit(w io.Writer, pad string, a *AuditResult, problems []string) {
	verdict := func(ok bool) string {
		if ok {
			return "ok"
		}
		return "FAILED"
	}
	if a == nil {
		fmt.Fprintf(w, "audit        %snot run\n", pad)
	} else {
		fmt.Fprintf(w, "audit        %s%s\n", pad, verdict(a.OK))
		for _, c := range a.Checks {
			fmt.Fprintf(w, "  %-24s %-6s %s\n", c.Name, verdict(c.OK), c.Detail)
		}
	}
	for _, p := range problems {
		fmt.Fprintf(w, "problem      %s%s\n", pad, p)
	}
}

// WriteJSON writes r as one indented JSON object; durations are in
// nanoseconds, in fields whose names end in _ns.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// errorCodes are the codes of errs, the most frequent first.
func errorCodes(errs map[string]int64) []string {
	codes := make([]string, 0, len(errs))
	for code := range errs {
		codes = append(codes, code)
	}
	slices.SortFunc(codes, func(a, b string) int {
		if c := cmp.Compare(errs[b], errs[a]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	return codes
}

// formatErrors writes errors by code, the most frequent first.
func formatErrors(errs map[string]int64) string {
	if len(errs) == 0 {
		return "none"
	}
	var b strings.Builder
	for i, code := range errorCodes(errs) {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", code, errs[code])
	}
	return b.String()
}

// formatLatency rounds d to two significant digits, the histogram's
// precision: 4.1ms, 410µs.
func formatLatency(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	unit := time.Duration(1)
	for d/unit >= 100 {
		unit *= 10
	}
	return d.Round(unit).String()
}
