package bench

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"redrain/adminauth"
)

const (
	// pollInterval is how often stats are polled while waiting for
	// readiness or for booking to drain.
	pollInterval = 200 * time.Millisecond
	// statsTimeout bounds one stats request; it is under a second so that
	// the progress line keeps its pace when a target hangs.
	statsTimeout = 800 * time.Millisecond
	// auditTimeout bounds the audit, which reads the whole store.
	auditTimeout = 2 * time.Minute
	// transportBackoff is how long a worker waits after its connection
	// failed, so that a target that is down costs errors at a bounded rate
	// instead of a spinning core.
	transportBackoff = 50 * time.Millisecond
)

// Run sends grant requests, or batch grant requests when cfg.Batch > 1, to
// cfg.Targets for cfg.Duration, then waits for booking to drain and runs
// the audit (if cfg.Audit), and reports it all.
//
// Before the first request, Run waits up to cfg.ReadyTimeout for every
// target to report ready, and fails if one does not; it also fails, without
// sending anything, on an invalid cfg. After that it returns a report even
// when ctx is canceled or booking does not drain: these are listed in the
// report's Problems, and Report.Err returns them.
//
// Every grant request is signed with cfg.AppKey when it is set. A target
// that answers one 401 unauthorized (unsigned, or a key it does not take)
// or 403 forbidden (the key's app may not grant for that app_id) would
// refuse them all: the send window then ends at once, booking is neither drained
// nor audited, and the report's Problems say what to change (--app-key or
// $REDRAIN_APP_KEY, or --app).
//
// With cfg.Progress set, a line like
//
//	t=3s offered=12034/s accepted=11900/s booked=11000/s lag=900 p99=4.1ms errors=0
//
// is written each second of the run and the drain. offered and accepted
// count grants sent and accepted over the last second; booked is the
// growth of grants_booked summed over targets over the last second; lag is
// the largest booking_lag any target reports (each reports the cluster's);
// p99 is over the responses of the last second (to requests, which hold
// cfg.Batch grants each in batch mode), from schedule under cfg.Rate (see
// Report.LatencyP50); errors is the total number of
// grants not accepted so far. booked and lag are "?" when a target's
// stats could not be read.
//
// The files of cfg.HDRFile, SeriesFile and PlotFile are created before
// the wait for readiness (a path that cannot be created fails the run) and
// written last; a write that fails is one of the report's Problems.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg, targets, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	seed := pickSeed(cfg.Seed)
	adm, err := newAdminFor(cfg, targets)
	if err != nil {
		return nil, err
	}
	defer adm.client.CloseIdleConnections()
	out, err := createOutputs(cfg)
	if err != nil {
		return nil, err
	}
	base, err := waitReady(ctx, adm, cfg.ReadyTimeout)
	if err != nil {
		out.close(true)
		return nil, err
	}

	r := newRun(cfg, targets, seed)
	rep := &Report{Seed: seed}
	canceled, stopProgress := r.send(ctx, adm, base)
	rep.Duration = r.end.Sub(r.start)
	r.fill(rep)

	booked := newBookedCounter(base)
	refused := r.refusal()
	switch {
	case refused != nil:
		rep.Problems = append(rep.Problems, refused.Error())
	case canceled:
		rep.Problems = append(rep.Problems, fmt.Sprintf("canceled %v into the run: %v",
			rep.Duration.Round(time.Millisecond), context.Cause(ctx)))
	default:
		// The drain's first poll would read the same; this one is kept
		// apart for the figures of the send window alone.
		stats, errs := statsAfterWindow(ctx, adm)
		fillSendCPU(rep, base, stats, errs)
		rep.Drained, err = drain(ctx, adm, booked, r.end, cfg.DrainTimeout)
		rep.DrainTime = time.Since(r.end)
		if err != nil {
			rep.Problems = append(rep.Problems, err.Error())
		}
	}
	stopProgress()

	switch {
	case !cfg.Audit || ctx.Err() != nil || refused != nil:
	case !rep.Drained:
		rep.Problems = append(rep.Problems, "audit not run: booking did not drain")
	default:
		rep.Audit, err = adm.audit(ctx, auditTimeout)
		if err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("audit: %v", err))
		}
	}

	rep.BookedTotal = booked.total()
	rep.NodeCPUSeconds = booked.cpu()
	rep.IssueToBooked = booked.issueToBooked()
	if rep.BookedTotal > 0 {
		rep.CPUPerGrant = time.Duration(rep.NodeCPUSeconds / float64(rep.BookedTotal) * 1e9)
		if keys, txns := booked.writes(); keys > 0 && txns > 0 {
			rep.KeysPerBooked = float64(keys) / float64(rep.BookedTotal)
			rep.GrantsPerTxn = float64(rep.BookedTotal) / float64(txns)
		}
	}
	if d := (rep.Duration + rep.DrainTime).Seconds(); d > 0 {
		rep.BookedPerSec = float64(rep.BookedTotal) / d
	}
	rep.Series = r.series
	rep.Problems = append(rep.Problems, out.write(rep)...)
	return rep, nil
}

// pickSeed returns seed, or a random one when it is 0.
func pickSeed(seed uint64) uint64 {
	for seed == 0 {
		seed = rand.Uint64()
	}
	return seed
}

// newAdminFor returns the admin client of cfg, whose defaults have been
// applied and validated.
func newAdminFor(cfg Config, targets []target) (*admin, error) {
	key, err := adminauth.ParseKey(cfg.AdminKey) // validated by withDefaults
	if err != nil {
		return nil, err
	}
	return newAdmin(adminTargetsOf(cfg, targets), key), nil
}

// adminTargetsOf returns where the admin requests of targets go: cfg's
// AdminTargets (validated by withDefaults), else the targets themselves.
func adminTargetsOf(cfg Config, targets []target) []target {
	if len(cfg.AdminTargets) == 0 {
		return targets
	}
	out := make([]target, len(cfg.AdminTargets))
	for i, s := range cfg.AdminTargets {
		out[i], _ = parseTarget(s)
	}
	return out
}

// send runs the workers for one send window: until cfg.Duration has passed,
// ctx is canceled (canceled is then true) or a target refused the
// requests (r.refusal), and then until every worker has returned; it sets
// r.start and r.end. With cfg.Progress set, or the per-second series
// wanted, it starts the monitor (the progress line and the series), which
// goes on until stopProgress is called. adm reads the targets' stats for
// them, from the baseline base; it is nil when
// the targets have no stats (the ceiling of CompareCeiling).
func (r *run) send(ctx context.Context, adm *admin, base []nodeStats) (canceled bool, stopProgress func()) {
	var workers sync.WaitGroup
	r.start = time.Now()
	for i, w := range r.workers {
		rng := rand.New(rand.NewPCG(r.seed, uint64(i)+1))
		workers.Go(func() { r.work(w, rng) })
	}
	progressDone := make(chan struct{})
	var progress sync.WaitGroup
	if r.cfg.Progress != nil || r.wantSeries {
		var booked *bookedCounter
		if adm != nil {
			booked = newBookedCounter(base)
		}
		progress.Go(func() { r.monitor(ctx, adm, booked, progressDone) })
	}

	window := time.NewTimer(r.cfg.Duration)
	select {
	case <-window.C:
	case <-ctx.Done():
		window.Stop()
		canceled = true
	case <-r.refusedCh:
		window.Stop()
	}
	r.end = time.Now()
	r.stopped.Store(true)
	close(r.stopCh)
	workers.Wait()
	return canceled, func() {
		close(progressDone)
		progress.Wait()
	}
}

// statsAfterWindowTries bounds the reads of statsAfterWindow. A node that
// has just taken a burst may not answer its stats within statsTimeout (seen
// at 35k grants/s paced, 60 s); a few more tries, each at most
// statsTimeout later, move the window's end by less than the rate's
// variation, where giving up would lose the window's figures.
const statsAfterWindowTries = 5

// statsAfterWindow reads every target's stats once the send window is
// over, trying again (all targets, so that they stay of one moment) while
// one fails, up to statsAfterWindowTries times.
func statsAfterWindow(ctx context.Context, adm *admin) (stats []nodeStats, errs []error) {
	for range statsAfterWindowTries {
		stats, errs = adm.statsAll(ctx, statsTimeout)
		if errors.Join(errs...) == nil || ctx.Err() != nil {
			break
		}
	}
	return stats, errs
}

// fillSendCPU sets rep's node figures over the send window (CPU, grants
// issued and booked, records, allocations) from the targets' stats read
// before it (base) and after it. It leaves them 0 when a target's stats
// could not be read, rather than report a part as the whole.
func fillSendCPU(rep *Report, base, after []nodeStats, errs []error) {
	if errors.Join(errs...) != nil {
		return
	}
	c := newBookedCounter(base)
	c.update(after, errs)
	rep.SendCPUSeconds = c.cpu()
	if rep.Accepted > 0 {
		rep.CPUPerAccepted = time.Duration(rep.SendCPUSeconds / float64(rep.Accepted) * 1e9)
	}
	var issued, records, allocs, allocBytes int64
	for i := range after {
		issued += after[i].GrantsIssued - base[i].GrantsIssued
		records += after[i].GrantRecords - base[i].GrantRecords
		allocs += after[i].Allocs - base[i].Allocs
		allocBytes += after[i].AllocBytes - base[i].AllocBytes
	}
	rep.IssuedInWindow, rep.BookedInWindow = issued, c.total()
	if issued > 0 {
		rep.BookedInWindowShare = float64(rep.BookedInWindow) / float64(issued)
	}
	if records > 0 {
		rep.GrantsPerRecord = float64(issued) / float64(records)
	}
	if rep.Accepted > 0 && allocs > 0 {
		rep.AllocsPerAccepted = float64(allocs) / float64(rep.Accepted)
		rep.AllocBytesPerAccepted = float64(allocBytes) / float64(rep.Accepted)
	}
}

// run is the state shared by the workers of one Run.
type run struct {
	cfg       Config
	users     *users
	pacer     *pacer // nil when Rate is 0.
	bodyHead  []byte // The grant request body up to the user's number.
	bodyTail  []byte // The rest of it; a batch request joins such bodies.
	tokenSeed maphash.Seed
	seed      uint64            // Each worker's random source is seeded with it and the worker's index.
	signer    *adminauth.Signer // Signs each request; nil sends them unsigned.
	workers   []*worker
	// reads, when not nil, makes the workers read wallets instead of
	// granting (ReadWallets): each request is its prepare, each answer its
	// answer, and a "grant" in the counters is one read.
	reads *walletReads
	// wantSeries is set when cfg asks for the per-second series (a series
	// or a plot file); the monitor then appends to series, which is read
	// once it has returned.
	wantSeries bool
	series     []Second

	// refused is set, and refusedCh closed, by the first answer that says
	// a target refuses the run's requests (refuse); refusedErr, written
	// before refusedCh is closed, says why.
	refused    atomic.Bool
	refusedCh  chan struct{}
	refusedErr error

	start   time.Time     // When the send window opened.
	end     time.Time     // When it closed; set before the workers are told to stop.
	stopped atomic.Bool   // Set when the send window closes.
	stopCh  chan struct{} // Closed when the send window closes, for sleeping workers.
}

// worker is one request in flight on one connection, and what it counted.
// Counters count grants, not requests, and are atomics so that the progress
// line can read them while the worker runs.
type worker struct {
	client *fasthttp.PipelineClient // Shared with the connection's other workers.
	uri    string                   // The target's grant or batch grant URL.
	path   string                   // uri's path, as sent: what the signature covers.

	offered, accepted       atomic.Int64
	repeats, repeatsBooked  atomic.Int64
	tokenMismatches, failed atomic.Int64
	// errors counts grants that failed, by code, under mu: the worker
	// writes it, the per-second series reads it.
	mu             sync.Mutex
	errors         map[string]int64
	transportFirst string            // The first transport error, for the report.
	firstMessages  map[string]string // The first message answered with each error code.
	// hist holds the latencies of requests in µs, from when each was due
	// (its slot in the schedule under Rate, else its send) until its
	// answer; service, only under Rate (else it would equal hist), from
	// its actual send.
	hist    histogram
	service *histogram

	// The request in flight, which only the worker touches: its grants in
	// the order sent, and in batch mode the users it holds and the fields
	// of each item of its answer.
	// Invariant: 1 <= len(offers) <= cfg.Batch.
	offers []offer
	seen   map[uint32]struct{}
	items  []grantFields
	// wallet is the worker's state under run.reads; nil otherwise.
	wallet *walletWorker
}

// newRun returns the run of cfg, whose defaults have been applied and
// validated, against targets.
func newRun(cfg Config, targets []target, seed uint64) *run {
	r := &run{
		cfg:       cfg,
		users:     newUsers(cfg.Users, rand.New(rand.NewPCG(seed, 0))),
		tokenSeed: maphash.MakeSeed(),
		seed:      seed,
		stopCh:    make(chan struct{}),
		refusedCh: make(chan struct{}),
	}
	r.signer, _ = cfg.appSigner() // validated by withDefaults
	r.wantSeries = cfg.SeriesFile != "" || cfg.PlotFile != ""
	if cfg.Rate > 0 {
		r.pacer = newPacer(float64(cfg.Rate) / float64(cfg.Batch))
	}
	r.bodyHead, r.bodyTail = cfg.grantJSON()
	path := "/v1/grants"
	if cfg.Batch > 1 {
		path = "/v1/grants/batch"
	}

	// One PipelineClient per connection, rather than one per target with
	// MaxConns, so that each connection has exactly Pipeline requests in
	// flight; a shared client hands each request to its least busy
	// connection under a lock, scanning all of them.
	for _, t := range targets {
		for range cfg.Conns {
			client := &fasthttp.PipelineClient{
				Addr:                t.addr,
				IsTLS:               t.isTLS,
				Name:                "redrain-bench",
				MaxConns:            1,
				MaxPendingRequests:  cfg.Pipeline,
				MaxIdleConnDuration: 2 * time.Second,
				Logger:              quietLogger{}, // Failures are counted, and the first one kept.
			}
			for range cfg.Pipeline {
				w := &worker{
					client: client,
					uri:    t.base + path,
					path:   path,
					errors: make(map[string]int64),
					offers: make([]offer, 0, cfg.Batch),
				}
				if r.pacer != nil {
					w.service = new(histogram)
				}
				if cfg.Batch > 1 {
					w.seen = make(map[uint32]struct{}, cfg.Batch)
					w.items = make([]grantFields, 0, cfg.Batch)
				}
				r.workers = append(r.workers, w)
			}
		}
	}
	return r
}

type quietLogger struct{}

func (quietLogger) Printf(string, ...any) {}

// work sends requests until the send window closes, then returns once its
// last request is answered or timed out.
func (r *run) work(w *worker, rng *rand.Rand) {
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json")
	req.SetRequestURI(w.uri)
	var body []byte
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()

	for !r.stopped.Load() {
		// When the request is due, since r.start: its slot in the schedule
		// under Rate (which may be past: the worker is late, see pacer),
		// else when it is sent. Its latency runs from there.
		var due time.Duration
		if r.pacer != nil {
			due = r.pacer.take()
			if due >= r.cfg.Duration {
				return // Every later slot is past the window too.
			}
			if now := time.Since(r.start); due > now {
				timer.Reset(due - now)
				select {
				case <-timer.C:
				case <-r.stopCh:
					return
				}
			}
		}
		grants := int64(1)
		if r.reads != nil {
			if err := r.reads.prepare(w, rng, req); err != nil {
				r.refuse(err) // Not reached: the key was validated.
				return
			}
		} else {
			body = r.appendRequest(w, rng, body[:0])
			// DoDeadline takes the body over, so it is set anew each time.
			req.SetBody(body)
			if r.signer != nil {
				// A fresh nonce each time: a node refuses a replayed one.
				if err := signPost(r.signer, req, w.path, body); err != nil {
					r.refuse(err) // Not reached: the key was validated.
					return
				}
			}
			grants = int64(len(w.offers))
		}
		w.offered.Add(grants)
		sentAt := time.Now()
		sent := sentAt.Sub(r.start)
		if r.pacer == nil {
			due = sent
		}
		err := w.client.DoDeadline(req, resp, sentAt.Add(r.cfg.RequestTimeout))
		if err != nil {
			if isTimeout(err) {
				w.fail("timeout", grants)
				continue
			}
			w.fail("transport", grants)
			if w.transportFirst == "" {
				w.transportFirst = err.Error()
			}
			timer.Reset(transportBackoff)
			select {
			case <-timer.C:
			case <-r.stopCh:
				return
			}
			continue
		}
		answered := time.Since(r.start)
		w.hist.record(uint64((answered - due) / time.Microsecond))
		if w.service != nil {
			w.service.record(uint64((answered - sent) / time.Microsecond))
		}
		if r.reads != nil {
			r.reads.answer(w, resp)
		} else {
			r.answer(w, resp)
		}
	}
}

// appendRequest picks the grants of w's next request into w.offers and
// appends the request's body to b.
func (r *run) appendRequest(w *worker, rng *rand.Rand, b []byte) []byte {
	if r.cfg.Batch == 1 {
		user, repeat := r.users.pick(rng, r.cfg.RepeatRatio)
		w.offers = append(w.offers[:0], offer{user: user, repeat: repeat})
		return r.appendGrant(b, user)
	}
	w.offers = r.users.pickDistinct(rng, r.cfg.RepeatRatio, r.cfg.Batch, w.offers, w.seen)
	b = append(b, batchHead...)
	for i, o := range w.offers {
		if i > 0 {
			b = append(b, ',')
		}
		b = r.appendGrant(b, o.user)
	}
	return append(b, batchTail...)
}

// appendGrant appends the body of a grant request for user to b.
func (r *run) appendGrant(b []byte, user uint32) []byte {
	b = strconv.AppendUint(append(b, r.bodyHead...), uint64(user), 10)
	return append(b, r.bodyTail...)
}

// signPost sets on req the four headers that sign a POST of body to path.
func signPost(s *adminauth.Signer, req *fasthttp.Request, path string, body []byte) error {
	h, err := s.Headers(fasthttp.MethodPost, path, "", body)
	if err != nil {
		return err
	}
	for name, v := range h {
		req.Header.Set(name, v[0])
	}
	return nil
}

// Error codes of an answer that refuses the run's requests rather than a
// grant: every other request would get the same.
const (
	codeUnauthorized = "unauthorized"
	codeForbidden    = "forbidden"
)

// refuse ends the send window because of err, unless a refusal already
// did.
func (r *run) refuse(err error) {
	if r.refused.CompareAndSwap(false, true) {
		r.refusedErr = err
		close(r.refusedCh)
	}
}

// refusal returns why a target refused the run's requests, or nil. Call it
// once send has returned.
func (r *run) refusal() error {
	if !r.refused.Load() {
		return nil
	}
	return r.refusedErr
}

// refuseAnswer ends the send window for an answer with status and code
// that refuses every request of the run, with what to change.
func (r *run) refuseAnswer(w *worker, status int, code string, body []byte) {
	if r.refused.Load() {
		return // Only the first is reported; the others are counted.
	}
	r.refuse(fmt.Errorf("grant requests refused: POST %s: status %d: %.200s: %s",
		w.uri, status, body, refusalHint(r.signer, r.cfg.AppID, code)))
}

// refusalHint says what to change when a node refused, with code, a grant
// request for app signed by signer (nil: unsigned).
func refusalHint(signer *adminauth.Signer, app uint32, code string) string {
	switch {
	case code == codeForbidden:
		return fmt.Sprintf("the node does not let this app key (--app-key or $REDRAIN_APP_KEY) grant for app_id %d: "+
			"pass a key of the node's app_keys for app %d, or with --app the app the key signs for", app, app)
	case signer == nil:
		return fmt.Sprintf("the node takes only signed grant requests: pass a key of its app_keys for app %d (%d:HEX) "+
			"with --app-key or $REDRAIN_APP_KEY", app, app)
	default:
		return fmt.Sprintf("the node refused the signature of app key %q: pass a key of its app_keys for app %d "+
			"with --app-key or $REDRAIN_APP_KEY (and keep the clock within a minute of the node's)", signer.Key.ID, app)
	}
}

// answer counts the response to w's request, grant by grant.
func (r *run) answer(w *worker, resp *fasthttp.Response) {
	var f grantFields
	if status := resp.StatusCode(); status != fasthttp.StatusOK {
		// The request failed as a whole, and so did each of its grants.
		grants := int64(len(w.offers))
		var code string
		if parseGrantFields(resp.Body(), &f) && len(f.code) > 0 {
			code = string(f.code)
			w.failSaying(code, f.message, grants)
		} else {
			w.fail("http_"+strconv.Itoa(status), grants)
		}
		if status == fasthttp.StatusUnauthorized || code == codeUnauthorized || code == codeForbidden {
			r.refuseAnswer(w, status, code, resp.Body())
		}
		return
	}
	if r.cfg.Batch == 1 {
		if !parseGrantFields(resp.Body(), &f) {
			w.fail("bad_response", 1)
			return
		}
		r.answerGrant(w, &f, w.offers[0])
		return
	}
	items, ok := parseBatchResults(resp.Body(), w.items, len(w.offers))
	w.items = items
	if !ok || len(items) != len(w.offers) {
		// Answers cannot be matched to grants but by their place.
		w.fail("bad_response", int64(len(w.offers)))
		return
	}
	for i := range items {
		if code := items[i].code; len(code) > 0 {
			w.failSaying(string(code), items[i].message, 1)
			if string(code) == codeForbidden {
				r.refuseAnswer(w, fasthttp.StatusOK, codeForbidden, resp.Body())
			}
			continue
		}
		r.answerGrant(w, &items[i], w.offers[i])
	}
}

// answerGrant counts the answer f to grant o that came with a 200: a
// response, or an item of a batch response that is not an error.
func (r *run) answerGrant(w *worker, f *grantFields, o offer) {
	booked := string(f.status) == "booked"
	if string(f.status) == "no_award" {
		// Every award's budget (and fallback) ran out: an answer, but no
		// packet.
		w.fail("no_award", 1)
		return
	}
	if len(f.token) == 0 || !(booked || string(f.status) == "issued") {
		w.fail("bad_response", 1)
		return
	}
	w.accepted.Add(1)
	tokenHash := maphash.Bytes(r.tokenSeed, f.token) | 1
	if !o.repeat && r.users.grant(o.user, tokenHash) {
		return
	}
	// A repeat, or a new attempt that lost a race with another one for the
	// same user: either way the node has granted this user before.
	w.repeats.Add(1)
	if booked {
		w.repeatsBooked.Add(1)
	}
	if !r.users.tokenMatches(o.user, tokenHash) {
		w.tokenMismatches.Add(1)
	}
}

// fail counts grants that failed with code.
func (w *worker) fail(code string, grants int64) { w.failSaying(code, nil, grants) }

// failSaying counts grants that failed with code, and keeps the node's
// message if it is the first one for code.
func (w *worker) failSaying(code string, message []byte, grants int64) {
	w.mu.Lock()
	w.errors[code] += grants
	if len(message) > 0 && w.firstMessages[code] == "" {
		if w.firstMessages == nil {
			w.firstMessages = map[string]string{}
		}
		w.firstMessages[code] = string(message)
	}
	w.mu.Unlock()
	w.failed.Add(grants)
}

func isTimeout(err error) bool {
	var netErr net.Error
	return errors.Is(err, fasthttp.ErrTimeout) || (errors.As(err, &netErr) && netErr.Timeout())
}

// fill adds the workers' counts and latencies to rep. The workers must
// have returned.
func (r *run) fill(rep *Report) {
	rep.Batch = r.cfg.Batch
	rep.Errors = make(map[string]int64)
	hist, service := new(histSnapshot), new(histSnapshot)
	var transportFirst string
	for _, w := range r.workers {
		rep.Offered += w.offered.Load()
		rep.Accepted += w.accepted.Load()
		rep.Repeats += w.repeats.Load()
		rep.RepeatsBooked += w.repeatsBooked.Load()
		rep.TokenMismatches += w.tokenMismatches.Load()
		for code, n := range w.errors {
			rep.Errors[code] += n
		}
		for code, m := range w.firstMessages {
			if rep.ErrorMessages == nil {
				rep.ErrorMessages = map[string]string{}
			}
			if _, ok := rep.ErrorMessages[code]; !ok {
				rep.ErrorMessages[code] = m
			}
		}
		if transportFirst == "" {
			transportFirst = w.transportFirst
		}
		hist.add(&w.hist)
		if w.service != nil {
			service.add(w.service)
		}
	}
	if r.pacer == nil {
		service = hist
	} else {
		rep.LatencyFromSchedule = true
		rep.ScheduledNotSent = r.pacer.untaken(min(r.end.Sub(r.start), r.cfg.Duration)) * int64(r.cfg.Batch)
	}
	if transportFirst != "" {
		rep.TransportErrorFirst = transportFirst
	}
	rep.Requests = int64(hist.total)
	if s := rep.Duration.Seconds(); s > 0 {
		rep.OfferedPerSec = float64(rep.Offered) / s
		rep.AcceptedPerSec = float64(rep.Accepted) / s
		rep.RequestsPerSec = float64(rep.Requests) / s
	}
	rep.LatencyP50, rep.LatencyP99, rep.LatencyP999, rep.LatencyMax = hist.summary()
	rep.ServiceP50, rep.ServiceP99, rep.ServiceP999, rep.ServiceMax = service.summary()
	rep.latency, rep.service = hist, service
}

// sample is a reading of all workers' counters, for the progress line and
// the series.
type sample struct {
	at                        time.Time
	stopped                   bool // The send window had closed.
	offered, accepted, failed int64
	errors                    map[string]int64
	hist, service             *histSnapshot // service is nil when not paced.
}

func (r *run) sample() sample {
	s := sample{at: time.Now(), stopped: r.stopped.Load(), errors: make(map[string]int64), hist: new(histSnapshot)}
	if r.pacer != nil {
		s.service = new(histSnapshot)
	}
	for _, w := range r.workers {
		s.offered += w.offered.Load()
		s.accepted += w.accepted.Load()
		s.failed += w.failed.Load()
		w.mu.Lock()
		for code, n := range w.errors {
			s.errors[code] += n
		}
		w.mu.Unlock()
		s.hist.add(&w.hist)
		if w.service != nil {
			s.service.add(w.service)
		}
	}
	return s
}

// monitor writes a line to cfg.Progress every second until done is closed;
// see Run for what it says. Without adm (and booked) the line leaves out
// booked and lag. When r.series is wanted it also adds a Second to it each
// second, and one for the part of a second left once done is closed
// (unless nothing happened in a tail under 0.1 s), so that the series adds
// up to the run.
func (r *run) monitor(ctx context.Context, adm *admin, booked *bookedCounter, done <-chan struct{}) {
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	prev := sample{at: r.start, errors: map[string]int64{}, hist: new(histSnapshot)}
	if r.pacer != nil {
		prev.service = new(histSnapshot)
	}
	var prevBooked int64
	if adm != nil {
		prevBooked = booked.total()
	}
	for {
		last := false
		select {
		case <-done:
			last = true
		case <-ticker.C:
		}
		if last && !r.wantSeries {
			return
		}
		cur := r.sample()
		if last && cur.offered == prev.offered && cur.accepted == prev.accepted && cur.failed == prev.failed &&
			cur.hist.total == prev.hist.total && time.Since(prev.at) < time.Second/10 {
			return // A short tail where nothing happened; rates over it would be noise.
		}
		line := progressLine{
			elapsed:  cur.at.Sub(r.start),
			seconds:  cur.at.Sub(prev.at).Seconds(),
			offered:  cur.offered - prev.offered,
			accepted: cur.accepted - prev.accepted,
			noStats:  adm == nil,
			booked:   -1,
			lag:      -1,
			p99:      -1,
			failed:   cur.failed,
		}
		var stats []nodeStats
		var errs []error
		if adm != nil {
			stats, errs = adm.statsAll(ctx, statsTimeout)
		}
		if adm != nil && errors.Join(errs...) == nil {
			booked.update(stats, errs)
			total := booked.total()
			line.booked = total - prevBooked
			prevBooked = total
			line.lag = 0
			for _, s := range stats {
				line.lag = max(line.lag, s.BookingLag)
			}
		}
		interval := cur.hist.since(prev.hist)
		if interval.total > 0 {
			line.p99 = time.Duration(interval.quantile(0.99)) * time.Microsecond
		}
		if r.wantSeries {
			r.series = append(r.series, newSecond(r.start, prev, cur, interval, line))
		}
		if last {
			return
		}
		if r.cfg.Progress != nil {
			fmt.Fprintln(r.cfg.Progress, line.String())
		}
		prev = cur
	}
}

// progressLine is one line of progress; see Run.
type progressLine struct {
	elapsed           time.Duration // Since the start of the run.
	seconds           float64       // Since the previous line.
	offered, accepted int64         // Since the previous line.
	noStats           bool          // The target has no stats: booked and lag are left out.
	booked            int64         // Since the previous line; -1 when unknown.
	lag               int64         // -1 when unknown.
	p99               time.Duration // Since the previous line; -1 when nothing was answered.
	failed            int64         // Since the start.
}

func (l progressLine) String() string {
	perSec := func(n int64) int64 { return int64(float64(n)/l.seconds + 0.5) }
	booked, lag, p99 := "?", "?", "-"
	if l.booked >= 0 {
		booked = strconv.FormatInt(perSec(l.booked), 10)
	}
	if l.lag >= 0 {
		lag = strconv.FormatInt(l.lag, 10)
	}
	if l.p99 >= 0 {
		p99 = formatLatency(l.p99)
	}
	elapsed := int64(l.elapsed.Round(time.Second) / time.Second)
	if l.noStats {
		return fmt.Sprintf("t=%ds offered=%d/s accepted=%d/s p99=%s errors=%d",
			elapsed, perSec(l.offered), perSec(l.accepted), p99, l.failed)
	}
	return fmt.Sprintf("t=%ds offered=%d/s accepted=%d/s booked=%s/s lag=%s p99=%s errors=%d",
		elapsed, perSec(l.offered), perSec(l.accepted), booked, lag, p99, l.failed)
}

// waitReady polls every target's stats until all of them answer with
// ready, and returns those stats, or fails after timeout.
func waitReady(ctx context.Context, adm *admin, timeout time.Duration) ([]nodeStats, error) {
	deadline := time.Now().Add(timeout)
	return poll(ctx, adm, deadline, func(stats []nodeStats, errs []error) (bool, error) {
		var problems []string
		for i, t := range adm.targets {
			switch {
			case errs[i] != nil:
				problems = append(problems, errs[i].Error())
			case !stats[i].Ready:
				problems = append(problems, t.base+" is not ready")
			}
		}
		if len(problems) == 0 {
			return true, nil
		}
		return false, fmt.Errorf("bench: targets not ready within %v: %s", timeout, strings.Join(problems, "; "))
	})
}

// drain polls every target's stats, feeding booked, until booking_lag is 0
// on all of them. It returns false and an error saying what was left when
// timeout has passed since windowEnd or ctx is canceled.
func drain(ctx context.Context, adm *admin, booked *bookedCounter, windowEnd time.Time, timeout time.Duration) (bool, error) {
	_, err := poll(ctx, adm, windowEnd.Add(timeout), func(stats []nodeStats, errs []error) (bool, error) {
		booked.update(stats, errs)
		var problems []string
		for i, t := range adm.targets {
			switch {
			case errs[i] != nil:
				problems = append(problems, errs[i].Error())
			case stats[i].BookingLag != 0:
				problems = append(problems, fmt.Sprintf("%s: booking_lag %d", t.base, stats[i].BookingLag))
			}
		}
		if len(problems) == 0 {
			return true, nil
		}
		return false, fmt.Errorf("booking did not drain within %v of the end of the run: %s", timeout, strings.Join(problems, "; "))
	})
	return err == nil, err
}

// poll reads every target's stats each pollInterval and hands them to done
// until it returns true. When deadline passes or ctx is canceled first,
// poll returns the last error done returned.
func poll(ctx context.Context, adm *admin, deadline time.Time,
	done func([]nodeStats, []error) (bool, error)) ([]nodeStats, error) {
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for {
		// The last poll may overrun the deadline by up to pollInterval: one
		// cut short to the instant would report a timeout of its own rather
		// than what was left to wait for.
		stats, errs := adm.statsAll(ctx, max(min(statsTimeout, time.Until(deadline)), pollInterval))
		ok, err := done(stats, errs)
		if ok {
			return stats, nil
		}
		for _, e := range errs {
			if errors.Is(e, errAdminRefused) {
				return nil, e // waiting changes nothing
			}
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w (%w)", err, context.Cause(ctx))
		}
		if !time.Now().Before(deadline) {
			return nil, err
		}
		select {
		case <-ctx.Done():
		case <-ticker.C:
		}
	}
}
