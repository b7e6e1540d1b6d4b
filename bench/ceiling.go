package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// CeilingConfig compares the grants a node accepts with what the same load
// gets from an empty fasthttp handler that the bench serves itself on
// 127.0.0.1 (the ceiling: what the bench, loopback TCP and fasthttp allow on
// this machine), in one run, phases alternating: ceiling, node, ceiling,
// node and so on. The machine is shared and its speed drifts between runs,
// so a figure is only worth its ratio to the ceiling measured beside it.
type CeilingConfig struct {
	// Run is the load of every phase. Each phase has users of its own (a
	// fresh UserPrefix, or Run.UserPrefix and the phase's number), so that
	// every node phase starts with new grants; all phases share one seed.
	// Run.Audit and Run.DrainTimeout apply once, after the last node phase.
	Run Config
	// Rounds is how many times each phase runs (default 2).
	Rounds int
}

// CeilingRound is one ceiling phase and the node phase after it.
type CeilingRound struct {
	// Ceiling is the phase against the empty handler: no stats, booking or
	// audit. Its NodeCPUSeconds is what the node used meanwhile (booking a
	// backlog left by the node phase before it, competing for the cores),
	// or 0 when the node's stats could not be read.
	Ceiling *Report `json:"ceiling"`
	// Node is the phase against the targets, not drained: its BookedTotal
	// is what was booked during the send window, and its SendCPUSeconds and
	// CPUPerAccepted the node's CPU over that window.
	Node *Report `json:"node"`
	// Ratio is Node.AcceptedPerSec / Ceiling.AcceptedPerSec.
	Ratio float64 `json:"ratio"`
}

// CeilingReport is the comparison's result.
type CeilingReport struct {
	Rounds []CeilingRound `json:"rounds"`
	// CeilingAcceptedPerSec and NodeAcceptedPerSec average the phases'
	// accepted grants per second; RatioMean averages the rounds' Ratio.
	CeilingAcceptedPerSec float64 `json:"ceiling_accepted_per_sec"`
	NodeAcceptedPerSec    float64 `json:"node_accepted_per_sec"`
	RatioMean             float64 `json:"ratio_mean"`

	// The booking of every node phase, drained after the last one:
	// BookedTotal is the targets' growth of grants_booked from before the
	// first node phase until the drain ended; DrainTime runs from the end
	// of the last node phase until booking_lag was 0 on every target;
	// BookedPerSec is BookedTotal over the time from the start of the first
	// node phase to the end of the drain (the ceiling phases included,
	// during which the node went on booking); NodeCPUSeconds is the
	// targets' CPU over that same time and CPUPerGrant that over
	// BookedTotal.
	BookedTotal    int64         `json:"booked_total"`
	Drained        bool          `json:"drained"`
	DrainTime      time.Duration `json:"drain_time_ns"`
	BookedPerSec   float64       `json:"booked_per_sec"`
	NodeCPUSeconds float64       `json:"node_cpu_seconds"`
	CPUPerGrant    time.Duration `json:"cpu_per_grant_ns"`
	// Audit is the audit's result, or nil when it was not run.
	Audit *AuditResult `json:"audit,omitempty"`
	// Problems lists what kept the comparison from completing as
	// configured, the phases' problems included; Err reports them.
	Problems []string `json:"problems,omitempty"`
}

// CompareCeiling starts the ceiling, waits for every target to be ready,
// and runs the rounds, then drains booking and runs the audit (if
// cfg.Run.Audit) as Run does. The requests of both phases are signed alike
// (cfg.Run.AppKey), so that the bench's own cost is the same in both; the
// ceiling does not check them. A node phase whose requests a target
// refuses (see Run) ends the comparison there, without a drain. Like Run,
// it fails only on an invalid cfg, a ceiling that cannot listen, or
// targets that are not ready; after that it returns a report, with what
// went wrong in its Problems.
func CompareCeiling(ctx context.Context, cfg CeilingConfig) (*CeilingReport, error) {
	if cfg.Rounds == 0 {
		cfg.Rounds = 2
	}
	if cfg.Rounds < 1 {
		return nil, fmt.Errorf("bench: ceiling comparison needs rounds >= 1, not %d", cfg.Rounds)
	}
	load, targets, err := cfg.Run.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := cfg.Run.refuseFiles("the ceiling comparison"); err != nil {
		return nil, err
	}
	// Every phase's users are checked now, before anything is sent.
	phaseCfgs := make([]Config, 2*cfg.Rounds)
	for i := range phaseCfgs {
		c := load
		c.UserPrefix = ""
		if cfg.Run.UserPrefix != "" {
			c.UserPrefix = fmt.Sprintf("%s%d-", cfg.Run.UserPrefix, i+1)
		}
		if phaseCfgs[i], _, err = c.withDefaults(); err != nil {
			return nil, err
		}
	}
	seed := pickSeed(load.Seed)
	adm, err := newAdminFor(load, targets)
	if err != nil {
		return nil, err
	}
	defer adm.client.CloseIdleConnections()

	ceil, err := startCeiling()
	if err != nil {
		return nil, err
	}
	defer ceil.close()
	// As many connections to the ceiling as to all targets together.
	ceilTargets := make([]target, len(targets))
	for i := range ceilTargets {
		ceilTargets[i] = ceil.target
	}

	if _, err := waitReady(ctx, adm, load.ReadyTimeout); err != nil {
		return nil, err
	}

	rep := &CeilingReport{}
	var first []nodeStats // Stats before the first node phase.
	var firstStart, lastEnd time.Time
	refused := false // A target refused the grant requests: see Run.
	for round := range cfg.Rounds {
		if ctx.Err() != nil || refused {
			break
		}
		var cr CeilingRound
		for _, ceiling := range []bool{true, false} {
			phase := 2 * round
			name := "ceiling"
			if !ceiling {
				phase++
				name = "node"
			}
			pc := phaseCfgs[phase]
			if pc.Progress != nil {
				fmt.Fprintf(pc.Progress, "round %d: %s\n", round+1, name)
			}
			before, errs := adm.statsAll(ctx, statsTimeout)
			if err := errors.Join(errs...); err != nil {
				rep.Problems = append(rep.Problems, fmt.Sprintf("round %d %s: stats before: %v", round+1, name, err))
				before = nil
			}
			var r *run
			var phaseRep *Report
			if ceiling {
				r = newRun(pc, ceilTargets, seed)
				phaseRep = sendPhase(ctx, r, nil, nil, seed)
				cr.Ceiling = phaseRep
			} else {
				r = newRun(pc, targets, seed)
				progressAdm := adm
				if before == nil {
					progressAdm = nil // No baseline to count booked from.
				}
				phaseRep = sendPhase(ctx, r, progressAdm, before, seed)
				cr.Node = phaseRep
				refused = r.refusal() != nil
				if first == nil && before != nil {
					first, firstStart = before, r.start
				}
				lastEnd = r.end
			}
			// The node's stats after the phase: its CPU over a node phase,
			// or what it did in the background during a ceiling phase.
			if before != nil {
				after, errs := statsAfterWindow(ctx, adm)
				if err := errors.Join(errs...); err != nil {
					if ctx.Err() == nil {
						rep.Problems = append(rep.Problems, fmt.Sprintf("round %d %s: stats after: %v", round+1, name, err))
					}
				} else {
					c := newBookedCounter(before)
					c.update(after, errs)
					if ceiling {
						phaseRep.NodeCPUSeconds = c.cpu()
					} else {
						phaseRep.BookedTotal = c.total()
						fillSendCPU(phaseRep, before, after, errs)
					}
				}
			}
			for _, p := range phaseRep.Problems {
				rep.Problems = append(rep.Problems, fmt.Sprintf("round %d %s: %s", round+1, name, p))
			}
			if ctx.Err() != nil || refused {
				break
			}
		}
		if cr.Ceiling == nil || cr.Node == nil {
			break // Canceled: a round without both phases has no ratio.
		}
		if cr.Ceiling.AcceptedPerSec > 0 {
			cr.Ratio = cr.Node.AcceptedPerSec / cr.Ceiling.AcceptedPerSec
		}
		rep.Rounds = append(rep.Rounds, cr)
	}
	ceil.close() // Its connections would otherwise idle through the drain.

	for _, cr := range rep.Rounds {
		rep.CeilingAcceptedPerSec += cr.Ceiling.AcceptedPerSec
		rep.NodeAcceptedPerSec += cr.Node.AcceptedPerSec
		rep.RatioMean += cr.Ratio
	}
	if n := float64(len(rep.Rounds)); n > 0 {
		rep.CeilingAcceptedPerSec /= n
		rep.NodeAcceptedPerSec /= n
		rep.RatioMean /= n
	}

	switch {
	case ctx.Err() != nil:
		rep.Problems = append(rep.Problems, fmt.Sprintf("canceled: %v; booking not drained", context.Cause(ctx)))
		return rep, nil
	case refused:
		rep.Problems = append(rep.Problems, "the grant requests were refused; booking not drained")
		return rep, nil
	case first == nil:
		rep.Problems = append(rep.Problems, "booking not drained: no node phase had stats to count from")
		return rep, nil
	}
	booked := newBookedCounter(first)
	rep.Drained, err = drain(ctx, adm, booked, lastEnd, load.DrainTimeout)
	rep.DrainTime = time.Since(lastEnd)
	if err != nil {
		rep.Problems = append(rep.Problems, err.Error())
	}
	rep.BookedTotal = booked.total()
	rep.NodeCPUSeconds = booked.cpu()
	if rep.BookedTotal > 0 {
		rep.CPUPerGrant = time.Duration(rep.NodeCPUSeconds / float64(rep.BookedTotal) * 1e9)
	}
	if d := time.Since(firstStart).Seconds(); d > 0 {
		rep.BookedPerSec = float64(rep.BookedTotal) / d
	}
	switch {
	case !load.Audit || ctx.Err() != nil:
	case !rep.Drained:
		rep.Problems = append(rep.Problems, "audit not run: booking did not drain")
	default:
		rep.Audit, err = adm.audit(ctx, auditTimeout)
		if err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("audit: %v", err))
		}
	}
	return rep, nil
}

// sendPhase runs one send window of r, without drain or audit, and counts
// it into a Report. adm and base, for the progress line, are nil for the
// ceiling.
func sendPhase(ctx context.Context, r *run, adm *admin, base []nodeStats, seed uint64) *Report {
	rep := &Report{Seed: seed}
	canceled, stopProgress := r.send(ctx, adm, base)
	stopProgress()
	rep.Duration = r.end.Sub(r.start)
	r.fill(rep)
	if err := r.refusal(); err != nil {
		rep.Problems = append(rep.Problems, err.Error())
	}
	if canceled {
		rep.Problems = append(rep.Problems, fmt.Sprintf("canceled %v into the phase: %v",
			rep.Duration.Round(time.Millisecond), context.Cause(ctx)))
	}
	return rep
}

// Err returns nil when the comparison completed cleanly: no Problems, no
// token mismatches in a node phase, and an audit (if one ran) that passed.
func (c *CeilingReport) Err() error {
	var errs []error
	for _, p := range c.Problems {
		errs = append(errs, errors.New(p))
	}
	for i, cr := range c.Rounds {
		if n := cr.Node.TokenMismatches; n > 0 {
			errs = append(errs, fmt.Errorf("round %d: %d repeats were answered with a different token", i+1, n))
		}
	}
	if err := auditErr(c.Audit); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("bench: %w", errors.Join(errs...))
	}
	return nil
}

// WriteText writes the comparison for a reader: a line per phase and per
// round's ratio, the means, then booking and the audit.
func (c *CeilingReport) WriteText(w io.Writer) {
	phase := func(round int, name string, r *Report) {
		fmt.Fprintf(w, "round %d %-7s %v: offered %.0f/s, accepted %.0f grants/s, %.0f requests/s, p50=%s p99=%s max=%s, errors %s\n",
			round, name, r.Duration.Round(time.Millisecond), r.OfferedPerSec, r.AcceptedPerSec, r.RequestsPerSec,
			formatLatency(r.LatencyP50), formatLatency(r.LatencyP99), formatLatency(r.LatencyMax), formatErrors(r.Errors))
	}
	for i, cr := range c.Rounds {
		phase(i+1, "ceiling", cr.Ceiling)
		if cr.Ceiling.NodeCPUSeconds > 0 {
			fmt.Fprintf(w, "                node cpu meanwhile %.2fs (booking in the background)\n", cr.Ceiling.NodeCPUSeconds)
		}
		phase(i+1, "node", cr.Node)
		cpu := "node cpu not reported"
		if cr.Node.SendCPUSeconds > 0 {
			cpu = fmt.Sprintf("node cpu %.2fs, %v per accepted grant",
				cr.Node.SendCPUSeconds, cr.Node.CPUPerAccepted.Round(time.Microsecond/10))
		}
		if cr.Node.GrantsPerRecord > 0 {
			cpu += fmt.Sprintf(", %.1f grants per record, %.1f allocations (%.0f bytes) per accepted grant (node-wide)",
				cr.Node.GrantsPerRecord, cr.Node.AllocsPerAccepted, cr.Node.AllocBytesPerAccepted)
		}
		fmt.Fprintf(w, "                booked %d during the phase; %s\n", cr.Node.BookedTotal, cpu)
		fmt.Fprintf(w, "round %d ratio   node/ceiling %.4f\n", i+1, cr.Ratio)
	}
	fmt.Fprintf(w, "mean            ceiling %.0f grants/s, node %.0f grants/s, node/ceiling %.4f (mean of %d rounds)\n",
		c.CeilingAcceptedPerSec, c.NodeAcceptedPerSec, c.RatioMean, len(c.Rounds))
	drained := "drained"
	if !c.Drained {
		drained = "NOT drained"
	}
	fmt.Fprintf(w, "booked          %d since the first node phase (%.0f/s), %s %v after the last\n",
		c.BookedTotal, c.BookedPerSec, drained, c.DrainTime.Round(time.Millisecond))
	if c.NodeCPUSeconds > 0 {
		fmt.Fprintf(w, "node cpu        %.1fs, %v per booked grant (issue + book, backends in process included)\n",
			c.NodeCPUSeconds, c.CPUPerGrant.Round(time.Microsecond/10))
	}
	writeAudit(w, "   ", c.Audit, c.Problems)
}

// WriteJSON writes the comparison as one indented JSON object; durations
// are in nanoseconds, in fields whose names end in _ns.
func (c *CeilingReport) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(c)
}

// ceilingTokenLen is the length of the ceiling's token: that of a node's
// token for the demo campaign (99 characters of base64, as measured), so
// that an answer is as long as a node's (255 bytes) and the bench reads as
// many bytes in both phases.
const ceilingTokenLen = 99

// ceilingGrant is the ceiling's answer to every grant: the fields and
// order of a node's answer (ingress.AppendGrantResponse), status "issued".
// Every grant gets the same token, so a repeat's token always matches.
var ceilingGrant = []byte(`{"token":"` + strings.Repeat("A", ceilingTokenLen) +
	`","out_trade_no":"00000000000000000000000000000000","act_id":1,"award_type":"cash","asset":"cash",` +
	`"amount":100,"stage":"formal","status":"issued"}`)

// ceiling is the empty handler that CompareCeiling measures against: it
// answers POST /v1/grants with ceilingGrant and POST /v1/grants/batch with
// one ceilingGrant per grant of the request, and nothing else (no stats,
// no audit). It is in the bench's process, like the load it answers; the
// node is not, so a node phase also pays for crossing between processes.
type ceiling struct {
	srv    *fasthttp.Server
	target target
	served chan error // Serve's return; closed when read by close.
}

func startCeiling() (*ceiling, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench: ceiling: %w", err)
	}
	c := &ceiling{served: make(chan error, 1)}
	c.srv = &fasthttp.Server{
		Handler: c.handle,
		// The settings of a node's server (ingress.Server.Serve), which
		// bench must not import: the two phases then differ only in what
		// the handler does. The write buffer matters most: with pipelined
		// clients 64 KiB raised the loopback ceiling ~10x over the default.
		Name:                  "redrain",
		MaxRequestBodySize:    batchBodyBytesMax,
		WriteBufferSize:       64 << 10,
		ReadBufferSize:        16 << 10,
		ReadTimeout:           time.Minute,
		IdleTimeout:           2 * time.Minute,
		NoDefaultServerHeader: true,
		NoDefaultContentType:  true,
	}
	addr := ln.Addr().String()
	c.target = target{base: "http://" + addr, addr: addr}
	go func() { c.served <- c.srv.Serve(ln) }()
	return c, nil
}

// close stops the server and waits for it; it may be called again.
func (c *ceiling) close() {
	if c.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = c.srv.ShutdownWithContext(ctx)
	<-c.served
	c.srv = nil
}

func (c *ceiling) handle(ctx *fasthttp.RequestCtx) {
	if !ctx.IsPost() {
		ctx.SetStatusCode(fasthttp.StatusMethodNotAllowed)
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"code":"method_not_allowed","message":"the ceiling answers POST only"}`)
		return
	}
	ctx.SetContentType("application/json")
	switch string(ctx.Path()) {
	case "/v1/grants":
		ctx.SetBody(ceilingGrant)
	case "/v1/grants/batch":
		n := countGrants(ctx.PostBody())
		if n < 1 || n > BatchMax {
			ctx.SetStatusCode(fasthttp.StatusBadRequest)
			ctx.SetBodyString(`{"code":"malformed_request","message":"want 1..1000 grants"}`)
			return
		}
		ctx.Response.AppendBodyString(`{"results":[`)
		for i := range n {
			if i > 0 {
				ctx.Response.AppendBodyString(",")
			}
			ctx.Response.AppendBody(ceilingGrant)
		}
		ctx.Response.AppendBodyString("]}")
	default:
		ctx.SetStatusCode(fasthttp.StatusNotFound)
		ctx.SetBodyString(`{"code":"not_found","message":"the ceiling answers grants only"}`)
	}
}

// countGrants returns the number of objects in the array of a batch
// request, {"grants":[{...},...]}: the objects opened two levels down.
// Strings are stepped over so that a brace in an id does not count. It
// does not validate the JSON: the ceiling reads only the bench's requests,
// and a parse would be work the ceiling is meant to leave out.
func countGrants(body []byte) int {
	n, depth := 0, 0
	for i := 0; i < len(body); i++ {
		switch body[i] {
		case '"':
			for i++; i < len(body) && body[i] != '"'; i++ {
				if body[i] == '\\' {
					i++
				}
			}
		case '{', '[':
			depth++
			if depth == 3 && body[i] == '{' {
				n++
			}
		case '}', ']':
			depth--
		}
	}
	return n
}
