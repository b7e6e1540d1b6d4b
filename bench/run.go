package bench

import (
	"context"
	"encoding/json"
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

// Run sends grant requests to cfg.Targets for cfg.Duration, then waits for
// booking to drain and runs the audit (if cfg.Audit), and reports it all.
//
// Before the first request, Run waits up to cfg.ReadyTimeout for every
// target to report ready, and fails if one does not; it also fails, without
// sending anything, on an invalid cfg. After that it returns a report even
// when ctx is canceled or booking does not drain: these are listed in the
// report's Problems, and Report.Err returns them.
//
// With cfg.Progress set, a line like
//
//	t=3s offered=12034/s accepted=11900/s booked=11000/s lag=900 p99=4.1ms errors=0
//
// is written each second of the run and the drain. offered and accepted
// count requests sent and accepted over the last second; booked is the
// growth of grants_booked summed over targets over the last second; lag is
// the largest booking_lag any target reports (each reports the cluster's);
// p99 is over the responses of the last second; errors is the total number
// of requests not accepted so far. booked and lag are "?" when a target's
// stats could not be read.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg, targets, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	seed := cfg.Seed
	for seed == 0 {
		seed = rand.Uint64()
	}
	adm := newAdmin(targets)
	defer adm.client.CloseIdleConnections()
	base, err := waitReady(ctx, adm, cfg.ReadyTimeout)
	if err != nil {
		return nil, err
	}

	r := newRun(cfg, targets, seed)
	rep := &Report{Seed: seed}
	var workers sync.WaitGroup
	r.start = time.Now()
	for i, w := range r.workers {
		rng := rand.New(rand.NewPCG(seed, uint64(i)+1))
		workers.Go(func() { r.work(w, rng) })
	}
	progressDone := make(chan struct{})
	var progress sync.WaitGroup
	if cfg.Progress != nil {
		progress.Go(func() { r.progress(ctx, adm, newBookedCounter(base), progressDone) })
	}

	window := time.NewTimer(cfg.Duration)
	canceled := false
	select {
	case <-window.C:
	case <-ctx.Done():
		window.Stop()
		canceled = true
	}
	windowEnd := time.Now()
	r.stopped.Store(true)
	close(r.stopCh)
	workers.Wait()
	rep.Duration = windowEnd.Sub(r.start)

	booked := newBookedCounter(base)
	if canceled {
		rep.Problems = append(rep.Problems, fmt.Sprintf("canceled %v into the run: %v",
			rep.Duration.Round(time.Millisecond), context.Cause(ctx)))
	} else {
		rep.Drained, err = drain(ctx, adm, booked, windowEnd, cfg.DrainTimeout)
		rep.DrainTime = time.Since(windowEnd)
		if err != nil {
			rep.Problems = append(rep.Problems, err.Error())
		}
	}
	close(progressDone)
	progress.Wait()

	switch {
	case !cfg.Audit || ctx.Err() != nil:
	case !rep.Drained:
		rep.Problems = append(rep.Problems, "audit not run: booking did not drain")
	default:
		rep.Audit, err = adm.audit(ctx, auditTimeout)
		if err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("audit: %v", err))
		}
	}

	r.fill(rep)
	rep.BookedTotal = booked.total()
	if d := (rep.Duration + rep.DrainTime).Seconds(); d > 0 {
		rep.BookedPerSec = float64(rep.BookedTotal) / d
	}
	return rep, nil
}

// run is the state shared by the workers of one Run.
type run struct {
	cfg       Config
	users     *users
	pacer     *pacer // nil when Rate is 0.
	bodyHead  []byte // The grant request body up to the user's number.
	bodyTail  []byte // The rest of it.
	tokenSeed maphash.Seed
	workers   []*worker

	start   time.Time
	stopped atomic.Bool   // Set when the send window closes.
	stopCh  chan struct{} // Closed when the send window closes, for sleeping workers.
}

// worker is one request in flight on one connection, and what it counted.
// Counters are atomics so that the progress line can read them while the
// worker runs.
type worker struct {
	client *fasthttp.PipelineClient // Shared with the connection's other workers.
	uri    string                   // The target's grant URL.

	offered, accepted       atomic.Int64
	repeats, repeatsBooked  atomic.Int64
	tokenMismatches, failed atomic.Int64
	// errors counts failed requests by code; only the worker touches it
	// while it runs.
	errors         map[string]int64
	transportFirst string // The first transport error, for the report.
	hist           histogram
}

func newRun(cfg Config, targets []target, seed uint64) *run {
	r := &run{
		cfg:       cfg,
		users:     newUsers(cfg.Users, rand.New(rand.NewPCG(seed, 0))),
		tokenSeed: maphash.MakeSeed(),
		stopCh:    make(chan struct{}),
	}
	if cfg.Rate > 0 {
		r.pacer = newPacer(cfg.Rate)
	}
	prefix, _ := json.Marshal(cfg.UserPrefix)
	activity, _ := json.Marshal(cfg.ActivityID)
	scene, _ := json.Marshal(cfg.SceneID)
	r.bodyHead = fmt.Appendf(nil, `{"app_id":%d,"user_id":%s`, cfg.AppID, prefix[:len(prefix)-1])
	r.bodyTail = fmt.Appendf(nil, `","activity_id":%s,"scene_id":%s,"rain_id":%d}`, activity, scene, cfg.RainID)

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
				r.workers = append(r.workers, &worker{
					client: client,
					uri:    t.base + "/v1/grants",
					errors: make(map[string]int64),
				})
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
	var fields grantFields
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()

	for !r.stopped.Load() {
		if r.pacer != nil {
			now := time.Since(r.start)
			slot := r.pacer.take(now)
			if slot >= r.cfg.Duration {
				return // Every later slot is past the window too.
			}
			if slot > now {
				timer.Reset(slot - now)
				select {
				case <-timer.C:
				case <-r.stopCh:
					return
				}
			}
		}
		user, repeat := r.users.pick(rng, r.cfg.RepeatRatio)
		body = strconv.AppendUint(append(body[:0], r.bodyHead...), uint64(user), 10)
		body = append(body, r.bodyTail...)
		// DoDeadline takes the body over, so it is set anew each time.
		req.SetBody(body)
		w.offered.Add(1)
		sent := time.Now()
		err := w.client.DoDeadline(req, resp, sent.Add(r.cfg.RequestTimeout))
		if err != nil {
			if isTimeout(err) {
				w.fail("timeout")
				continue
			}
			w.fail("transport")
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
		w.hist.record(uint64(time.Since(sent) / time.Microsecond))
		r.answer(w, resp, &fields, user, repeat)
	}
}

// answer counts one response to a grant request for user.
func (r *run) answer(w *worker, resp *fasthttp.Response, f *grantFields, user uint32, repeat bool) {
	parsed := parseGrantFields(resp.Body(), f)
	if status := resp.StatusCode(); status != fasthttp.StatusOK {
		if parsed && len(f.code) > 0 {
			w.fail(string(f.code))
		} else {
			w.fail("http_" + strconv.Itoa(status))
		}
		return
	}
	booked := string(f.status) == "booked"
	if !parsed || len(f.token) == 0 || !(booked || string(f.status) == "issued") {
		w.fail("bad_response")
		return
	}
	w.accepted.Add(1)
	tokenHash := maphash.Bytes(r.tokenSeed, f.token) | 1
	if !repeat && r.users.grant(user, tokenHash) {
		return
	}
	// A repeat, or a new attempt that lost a race with another one for the
	// same user: either way the node has granted this user before.
	w.repeats.Add(1)
	if booked {
		w.repeatsBooked.Add(1)
	}
	if !r.users.tokenMatches(user, tokenHash) {
		w.tokenMismatches.Add(1)
	}
}

func (w *worker) fail(code string) {
	w.errors[code]++
	w.failed.Add(1)
}

func isTimeout(err error) bool {
	var netErr net.Error
	return errors.Is(err, fasthttp.ErrTimeout) || (errors.As(err, &netErr) && netErr.Timeout())
}

// fill adds the workers' counts and latencies to rep. The workers must
// have returned.
func (r *run) fill(rep *Report) {
	rep.Errors = make(map[string]int64)
	hist := new(histSnapshot)
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
		if transportFirst == "" {
			transportFirst = w.transportFirst
		}
		hist.add(&w.hist)
	}
	if transportFirst != "" {
		rep.TransportErrorFirst = transportFirst
	}
	if s := rep.Duration.Seconds(); s > 0 {
		rep.OfferedPerSec = float64(rep.Offered) / s
		rep.AcceptedPerSec = float64(rep.Accepted) / s
	}
	rep.LatencyP50 = time.Duration(hist.quantile(0.5)) * time.Microsecond
	rep.LatencyP99 = time.Duration(hist.quantile(0.99)) * time.Microsecond
	rep.LatencyP999 = time.Duration(hist.quantile(0.999)) * time.Microsecond
	rep.LatencyMax = time.Duration(hist.max) * time.Microsecond
}

// sample is a reading of all workers' counters, for the progress line.
type sample struct {
	at                        time.Time
	offered, accepted, failed int64
	hist                      *histSnapshot
}

func (r *run) sample() sample {
	s := sample{at: time.Now(), hist: new(histSnapshot)}
	for _, w := range r.workers {
		s.offered += w.offered.Load()
		s.accepted += w.accepted.Load()
		s.failed += w.failed.Load()
		s.hist.add(&w.hist)
	}
	return s
}

// progress writes a line to cfg.Progress every second until done is
// closed; see Run for what it says.
func (r *run) progress(ctx context.Context, adm *admin, booked *bookedCounter, done <-chan struct{}) {
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	prev := sample{at: r.start, hist: new(histSnapshot)}
	prevBooked := booked.total()
	for {
		select {
		case <-done:
			return
		case <-ticker.C:
		}
		cur := r.sample()
		stats, errs := adm.statsAll(ctx, statsTimeout)
		line := progressLine{
			elapsed:  cur.at.Sub(r.start),
			seconds:  cur.at.Sub(prev.at).Seconds(),
			offered:  cur.offered - prev.offered,
			accepted: cur.accepted - prev.accepted,
			booked:   -1,
			lag:      -1,
			p99:      -1,
			failed:   cur.failed,
		}
		if errors.Join(errs...) == nil {
			booked.update(stats, errs)
			total := booked.total()
			line.booked = total - prevBooked
			prevBooked = total
			line.lag = 0
			for _, s := range stats {
				line.lag = max(line.lag, s.BookingLag)
			}
		}
		if interval := cur.hist.since(prev.hist); interval.total > 0 {
			line.p99 = time.Duration(interval.quantile(0.99)) * time.Microsecond
		}
		fmt.Fprintln(r.cfg.Progress, line.String())
		prev = cur
	}
}

// progressLine is one line of progress; see Run.
type progressLine struct {
	elapsed           time.Duration // Since the start of the run.
	seconds           float64       // Since the previous line.
	offered, accepted int64         // Since the previous line.
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
	return fmt.Sprintf("t=%ds offered=%d/s accepted=%d/s booked=%s/s lag=%s p99=%s errors=%d",
		int64(l.elapsed.Round(time.Second)/time.Second), perSec(l.offered), perSec(l.accepted),
		booked, lag, p99, l.failed)
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
