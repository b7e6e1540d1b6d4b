package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// A mixed bench (issue 13, "Done when"): grants, spending and withdrawals
// on the same users at once, through the signed API like any app. The
// set-up grants each user its first packet (rain 1 of Rains) and waits for
// booking, so that every account holds a user of the app; then each worker
// owns its own users and, until Duration has passed, picks an operation by
// the weights of Mix:
//
//   - grants: the user's next rain (POST /v1/grants); once it has every
//     rain, a repeat of one (answered the same again);
//   - spend: one of recharge coins (POST /v1/coins/recharge), consume coins
//     at a merchant (POST /v1/spend/consume), refund part of one of the
//     user's consumptions (POST /v1/spend/refund) or transfer coins to
//     another of the worker's users (POST /v1/spend/transfer);
//   - withdraw: POST /v1/withdrawals of WithdrawAmount fen through Channel
//     (the node books the user's outstanding packets first).
//
// Every answer is counted by operation and outcome. A 2xx, and a 409
// insufficient_funds or refund_exceeds, are normal answers (a user may hold
// too little); anything else (another 4xx, a 5xx, a time-out) is a problem
// and fails the run. After the load, booking drains and the audit runs on
// the first target: it must pass.

// Defaults of MixConfig.
const (
	DefaultMixWorkers     = 16
	DefaultWithdrawAmount = 100
	DefaultPayoutChannel  = "test"
	DefaultMixCurrency    = "gold"
	// MixRainsMax bounds Rains (one packet a rain a user).
	MixRainsMax = 1000
)

// The operations of a mixed run, in the report's order.
const (
	opGrant = iota
	opRecharge
	opConsume
	opRefund
	opTransfer
	opWithdraw
	opCount
)

var opNames = [opCount]string{"grant", "recharge", "consume", "refund", "transfer", "withdraw"}

// Mix is the weights of a mixed run's three kinds of operation.
type Mix struct {
	Grants, Spend, Withdraw int
}

// DefaultMix is 70% grants, 20% spending, 10% withdrawals.
var DefaultMix = Mix{Grants: 70, Spend: 20, Withdraw: 10}

// ParseMix reads "grants=70,spend=20,withdraw=10" (any order; a kind left
// out weighs 0; weights are whole numbers, at least one above 0).
func ParseMix(s string) (Mix, error) {
	var m Mix
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		name, value, ok := strings.Cut(strings.TrimSpace(part), "=")
		w, err := strconv.Atoi(value)
		if !ok || err != nil || w < 0 || w > 1_000_000 {
			return Mix{}, fmt.Errorf("mix %q: want kind=weight,... such as grants=70,spend=20,withdraw=10 (weights 0..1000000)", s)
		}
		if seen[name] {
			return Mix{}, fmt.Errorf("mix %q: %s twice", s, name)
		}
		seen[name] = true
		switch name {
		case "grants":
			m.Grants = w
		case "spend":
			m.Spend = w
		case "withdraw":
			m.Withdraw = w
		default:
			return Mix{}, fmt.Errorf("mix %q: unknown kind %q (grants, spend, withdraw)", s, name)
		}
	}
	if m.Grants+m.Spend+m.Withdraw == 0 {
		return Mix{}, fmt.Errorf("mix %q: every weight is 0", s)
	}
	return m, nil
}

func (m Mix) String() string {
	return fmt.Sprintf("grants=%d,spend=%d,withdraw=%d", m.Grants, m.Spend, m.Withdraw)
}

// MixConfig is a mixed run.
type MixConfig struct {
	// Run holds the targets (the load goes to the first), Users, Duration,
	// the keys, the grants' ids (AppID, ActivityID, SceneID, UserPrefix),
	// DrainTimeout, ReadyTimeout, RequestTimeout, Seed and Progress. Rate,
	// Batch, Conns, Pipeline and RepeatRatio are not used; the audit always
	// runs.
	Run Config
	// Mix weighs the operations (default DefaultMix).
	Mix Mix
	// Workers is how many requests are in flight at once (default 16),
	// each worker with its own users; at most Users.
	Workers int
	// Rains is how many rains of the activity each user is granted a
	// packet of, rains 1..Rains (default 1).
	Rains int
	// WithdrawAmount is each withdrawal's amount in fen (default 100, the
	// node's least by default); Channel the payout channel (default
	// "test", the development channel: redrain paytest).
	WithdrawAmount int64
	Channel        string
	// Currency is the coins' currency (default "gold").
	Currency string
}

func (c MixConfig) withDefaults() (MixConfig, []target, error) {
	if c.Mix == (Mix{}) {
		c.Mix = DefaultMix
	}
	setDefault(&c.Workers, DefaultMixWorkers)
	setDefault(&c.Rains, 1)
	setDefault(&c.WithdrawAmount, DefaultWithdrawAmount)
	setDefault(&c.Channel, DefaultPayoutChannel)
	setDefault(&c.Currency, DefaultMixCurrency)
	switch {
	case c.Mix.Grants < 0 || c.Mix.Spend < 0 || c.Mix.Withdraw < 0:
		return c, nil, fmt.Errorf("bench: mix %v: negative weight", c.Mix)
	case c.Rains < 1 || c.Rains > MixRainsMax:
		return c, nil, fmt.Errorf("bench: rains is %d, want 1..%d", c.Rains, MixRainsMax)
	case c.WithdrawAmount < 1:
		return c, nil, fmt.Errorf("bench: withdrawal amount is %d fen, want at least 1", c.WithdrawAmount)
	case c.Run.Rate != 0 || c.Run.Batch > 1:
		return c, nil, errors.New("bench: a mixed run is flat out, one operation a request: no rate or batch")
	}
	users := c.Run.Users
	c.Run.Batch = 1
	var targets []target
	var err error
	if c.Run, targets, err = c.Run.withDefaults(); err != nil {
		return c, nil, err
	}
	if users == 0 {
		c.Run.Users = 1000
	}
	if c.Workers < 1 || c.Workers > c.Run.Users || c.Workers > WorkersMax {
		return c, nil, fmt.Errorf("bench: workers is %d, want 1..min(users %d, %d)", c.Workers, c.Run.Users, WorkersMax)
	}
	if c.Run.Users > WalletHoldersMax {
		return c, nil, fmt.Errorf("bench: a mixed run has at most %d users", WalletHoldersMax)
	}
	// Request ids are the prefix, the user and a sequence number: 1-64
	// bytes of [A-Za-z0-9._-].
	if len(c.Run.UserPrefix) > 40 || strings.IndexFunc(c.Run.UserPrefix, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-')
	}) >= 0 {
		return c, nil, fmt.Errorf("bench: user prefix %q starts every request id of a mixed run: at most 40 bytes of [A-Za-z0-9._-]", c.Run.UserPrefix)
	}
	return c, targets, nil
}

// Validate reports the first problem that RunMix would find with c.
func (c MixConfig) Validate() error {
	_, _, err := c.withDefaults()
	return err
}

// MixReport is what RunMix measured.
type MixReport struct {
	Seed     uint64        `json:"seed"`
	Users    int           `json:"users"`
	Workers  int           `json:"workers"`
	Rains    int           `json:"rains"`
	Mix      string        `json:"mix"`
	Setup    time.Duration `json:"setup_ns"`
	Duration time.Duration `json:"duration_ns"`
	// Ops are the operations' figures, in a fixed order.
	Ops []MixOp `json:"ops"`
	// Requests counts every answer; RequestsPerSec is Requests/Duration.
	Requests       int64   `json:"requests"`
	RequestsPerSec float64 `json:"requests_per_sec"`
	// NodeCPUSeconds is the first target's CPU over the load (its stats),
	// CPUPerRequest that over Requests.
	NodeCPUSeconds float64       `json:"node_cpu_seconds"`
	CPUPerRequest  time.Duration `json:"cpu_per_request_ns"`
	// Drained says booking drained after the load; Audit is its result.
	Drained bool         `json:"drained"`
	Audit   *AuditResult `json:"audit,omitempty"`
	// Problems fail the run: unexpected answers, the drain, the audit.
	Problems []string `json:"problems,omitempty"`
}

// MixOp is one operation's figures.
type MixOp struct {
	Op string `json:"op"`
	// Sent counts the requests; PerSec is Sent/Duration.
	Sent   int64   `json:"sent"`
	PerSec float64 `json:"per_sec"`
	// Outcomes counts the answers: "200", "200 settled", "409
	// insufficient_funds", "503 shed", "transport", ...
	Outcomes map[string]int64 `json:"outcomes"`
	// Unexpected counts the answers that are not normal.
	Unexpected int64         `json:"unexpected"`
	P50        time.Duration `json:"p50_ns"`
	P99        time.Duration `json:"p99_ns"`
	Max        time.Duration `json:"max_ns"`
}

// mixUser is one user's state, owned by one worker.
type mixUser struct {
	n     int    // the user's number (user_id is UserPrefix + n)
	act   uint64 // its account, from the first grant
	rains int    // rains granted so far
	// consumptions are the request ids of its consumptions (of 30 coins),
	// refunded 10 at a time.
	consumptions []string
}

type mixWorker struct {
	users    []*mixUser
	seq      int
	latency  [opCount][]time.Duration
	outcomes [opCount]map[string]int64
	bad      [opCount]int64
	first    string // the first unexpected answer
}

type mixRun struct {
	cfg    MixConfig
	client *walletClient
}

// RunMix grants each user its first packet, waits for booking, runs the
// mixed load for cfg.Run.Duration, waits for booking again and audits;
// see the file's comment. It fails when the set-up does; after that it
// returns a report, whose Err fails on problems.
func RunMix(ctx context.Context, cfg MixConfig) (*MixReport, error) {
	cfg, targets, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	rc := cfg.Run
	seed := pickSeed(rc.Seed)
	adm, err := newAdminFor(rc, targets)
	if err != nil {
		return nil, err
	}
	defer adm.client.CloseIdleConnections()
	if _, err := waitReady(ctx, adm, rc.ReadyTimeout); err != nil {
		return nil, err
	}
	signer, _ := rc.appSigner() // validated by withDefaults
	m := &mixRun{cfg: cfg, client: &walletClient{client: adm.client, signer: signer, base: targets[0].base, app: rc.AppID, timeout: rc.RequestTimeout}}
	rep := &MixReport{Seed: seed, Users: rc.Users, Workers: cfg.Workers, Rains: cfg.Rains, Mix: cfg.Mix.String()}

	setupStart := time.Now()
	first := rc
	first.RainID = 1
	holders, err := m.client.grantBooked(ctx, adm, first, rc.Users)
	if err != nil {
		return nil, err
	}
	rep.Setup = time.Since(setupStart)
	// Each worker owns every Workers-th user: a user's requests are sent
	// one after another.
	workers := make([]*mixWorker, cfg.Workers)
	for i := range workers {
		workers[i] = &mixWorker{}
		for op := range opCount {
			workers[i].outcomes[op] = map[string]int64{}
		}
	}
	for i, h := range holders {
		workers[i%cfg.Workers].users = append(workers[i%cfg.Workers].users, &mixUser{n: h.user, act: h.act, rains: 1})
	}

	before, errs := adm.statsAll(ctx, statsTimeout)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("bench: stats before the load: %w", err)
	}
	loadCtx, cancel := context.WithTimeout(ctx, rc.Duration)
	start := time.Now()
	var wg sync.WaitGroup
	for i, w := range workers {
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		wg.Go(func() { m.work(loadCtx, w, rng) })
	}
	wg.Wait()
	cancel()
	rep.Duration = time.Since(start)
	after, errs := adm.statsAll(ctx, statsTimeout)
	if errors.Join(errs...) == nil {
		c := newBookedCounter(before)
		c.update(after, errs)
		rep.NodeCPUSeconds = c.cpu()
	}
	rep.fill(workers)
	if rep.Requests > 0 {
		rep.CPUPerRequest = time.Duration(rep.NodeCPUSeconds / float64(rep.Requests) * 1e9)
	}
	if err := ctx.Err(); err != nil {
		rep.Problems = append(rep.Problems, fmt.Sprintf("canceled: %v", context.Cause(ctx)))
		return rep, nil
	}
	stats, errs := adm.statsAll(ctx, statsTimeout)
	if err := errors.Join(errs...); err != nil {
		rep.Problems = append(rep.Problems, "stats after the load: "+err.Error())
		return rep, nil
	}
	if _, err := drain(ctx, adm, newBookedCounter(stats), time.Now(), rc.DrainTimeout); err != nil {
		rep.Problems = append(rep.Problems, err.Error())
		return rep, nil
	}
	rep.Drained = true
	audit, err := adm.audit(ctx, auditTimeout)
	if err != nil {
		rep.Problems = append(rep.Problems, "audit: "+err.Error())
		return rep, nil
	}
	rep.Audit = audit
	if !audit.OK {
		for _, c := range audit.Checks {
			if !c.OK {
				rep.Problems = append(rep.Problems, fmt.Sprintf("audit: %s: %s", c.Name, c.Detail))
			}
		}
	}
	return rep, nil
}

// work sends one operation after another until ctx is done.
func (m *mixRun) work(ctx context.Context, w *mixWorker, rng *rand.Rand) {
	mix := m.cfg.Mix
	total := mix.Grants + mix.Spend + mix.Withdraw
	for ctx.Err() == nil {
		u := w.users[rng.IntN(len(w.users))]
		w.seq++
		id := fmt.Sprintf("%sm%d-%d", m.cfg.Run.UserPrefix, u.n, w.seq)
		var op int
		var path string
		var body []byte
		switch k := rng.IntN(total); {
		case k < mix.Grants:
			op, path = opGrant, "/v1/grants"
			rain := u.rains + 1
			if rain > m.cfg.Rains {
				rain = 1 + rng.IntN(m.cfg.Rains) // every rain granted: a repeat
			}
			body = m.grantBody(u.n, rain)
			u.rains = max(u.rains, rain)
		case k < mix.Grants+mix.Spend:
			op, path, body = m.spend(w, u, id, rng)
		default:
			op, path = opWithdraw, "/v1/withdrawals"
			body = fmt.Appendf(nil, `{"act_id":%d,"amount":%d,"channel":%q,"request_id":%q}`, u.act, m.cfg.WithdrawAmount, m.cfg.Channel, id)
		}
		sent := time.Now()
		status, _, answer, err := m.client.do(context.WithoutCancel(ctx), fasthttp.MethodPost, path, body)
		took := time.Since(sent)
		outcome, normal := mixOutcome(op, status, answer, err)
		w.latency[op] = append(w.latency[op], took)
		w.outcomes[op][outcome]++
		if !normal {
			w.bad[op]++
			if w.first == "" {
				w.first = fmt.Sprintf("%s %s: %s %.300s", path, body, outcome, answer)
			}
			continue
		}
		if op == opConsume && status == fasthttp.StatusOK {
			u.consumptions = append(u.consumptions, id)
		}
	}
}

// spend picks one spending operation of u.
func (m *mixRun) spend(w *mixWorker, u *mixUser, id string, rng *rand.Rand) (int, string, []byte) {
	app, cur := m.cfg.Run.AppID, m.cfg.Currency
	switch rng.IntN(4) {
	case 0:
		return opRecharge, "/v1/coins/recharge", fmt.Appendf(nil, `{"request_id":%q,"app_id":%d,"act_id":%d,"amount":100,"currency":%q}`, id, app, u.act, cur)
	case 1:
		if len(u.consumptions) > 0 {
			c := u.consumptions[rng.IntN(len(u.consumptions))]
			return opRefund, "/v1/spend/refund", fmt.Appendf(nil, `{"request_id":%q,"app_id":%d,"act_id":%d,"amount":10,"asset":"coin:%s","merchant_id":"bench","consumption_id":%q}`, id, app, u.act, cur, c)
		}
	case 2:
		if to := w.users[rng.IntN(len(w.users))]; to != u {
			return opTransfer, "/v1/spend/transfer", fmt.Appendf(nil, `{"request_id":%q,"app_id":%d,"act_id":%d,"amount":5,"asset":"coin:%s","to_act_id":%d}`, id, app, u.act, cur, to.act)
		}
	}
	return opConsume, "/v1/spend/consume", fmt.Appendf(nil, `{"request_id":%q,"app_id":%d,"act_id":%d,"amount":30,"asset":"coin:%s","merchant_id":"bench"}`, id, app, u.act, cur)
}

func (m *mixRun) grantBody(user, rain int) []byte {
	rc := m.cfg.Run
	b, _ := json.Marshal(struct {
		AppID      uint32 `json:"app_id"`
		UserID     string `json:"user_id"`
		ActivityID string `json:"activity_id"`
		SceneID    string `json:"scene_id"`
		RainID     int    `json:"rain_id"`
	}{rc.AppID, rc.UserPrefix + strconv.Itoa(user), rc.ActivityID, rc.SceneID, rain})
	return b
}

// mixOutcome names an answer and says whether it is a normal one.
func mixOutcome(op, status int, answer []byte, err error) (string, bool) {
	if err != nil {
		if isTimeout(err) {
			return "timeout", false
		}
		return "transport", false
	}
	var a struct {
		Code  string `json:"code"`
		State string `json:"state"`
	}
	_ = json.Unmarshal(answer, &a)
	outcome := strconv.Itoa(status)
	switch {
	case a.Code != "":
		outcome += " " + a.Code
	case op == opWithdraw && a.State != "":
		outcome += " " + a.State
	}
	switch {
	case status == fasthttp.StatusOK:
		return outcome, op != opWithdraw || a.State == "settled" || a.State == "reversed"
	case status == fasthttp.StatusAccepted:
		return outcome, op == opWithdraw
	case status == fasthttp.StatusConflict:
		return outcome, a.Code == "insufficient_funds" || (op == opRefund && a.Code == "refund_exceeds")
	}
	return outcome, false
}

func (rep *MixReport) fill(workers []*mixWorker) {
	secs := rep.Duration.Seconds()
	for op := range opCount {
		o := MixOp{Op: opNames[op], Outcomes: map[string]int64{}}
		var lat []time.Duration
		for _, w := range workers {
			lat = append(lat, w.latency[op]...)
			for k, n := range w.outcomes[op] {
				o.Outcomes[k] += n
			}
			o.Unexpected += w.bad[op]
		}
		o.Sent = int64(len(lat))
		if secs > 0 {
			o.PerSec = float64(o.Sent) / secs
		}
		if len(lat) > 0 {
			slices.Sort(lat)
			o.P50, o.P99, o.Max = lat[len(lat)/2], lat[min(len(lat)-1, len(lat)*99/100)], lat[len(lat)-1]
		}
		rep.Requests += o.Sent
		if o.Unexpected > 0 {
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s: %d unexpected answers %v", o.Op, o.Unexpected, o.Outcomes))
		}
		rep.Ops = append(rep.Ops, o)
	}
	if secs > 0 {
		rep.RequestsPerSec = float64(rep.Requests) / secs
	}
	for _, w := range workers {
		if w.first != "" {
			rep.Problems = append(rep.Problems, "first unexpected answer: "+w.first)
			break
		}
	}
}

// OK says the run had no problem.
func (rep *MixReport) OK() bool { return len(rep.Problems) == 0 }

// Err fails on the run's problems.
func (rep *MixReport) Err() error {
	if rep.OK() {
		return nil
	}
	return fmt.Errorf("bench: mixed run: %s", strings.Join(rep.Problems, "; "))
}

// WriteText writes the report for a reader.
func (rep *MixReport) WriteText(w io.Writer) {
	fmt.Fprintf(w, "mixed load %s: %d users (%d rains each), %d workers, set-up %v, load %v\n",
		rep.Mix, rep.Users, rep.Rains, rep.Workers, rep.Setup.Round(time.Millisecond), rep.Duration.Round(time.Millisecond))
	fmt.Fprintf(w, "%-9s %8s %9s %9s %9s %9s  %s\n", "op", "sent", "per s", "p50", "p99", "max", "outcomes")
	for _, o := range rep.Ops {
		keys := make([]string, 0, len(o.Outcomes))
		for k := range o.Outcomes {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		var parts []string
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s ×%d", k, o.Outcomes[k]))
		}
		fmt.Fprintf(w, "%-9s %8d %9.1f %9v %9v %9v  %s\n", o.Op, o.Sent, o.PerSec,
			o.P50.Round(time.Microsecond), o.P99.Round(time.Microsecond), o.Max.Round(time.Microsecond), strings.Join(parts, ", "))
	}
	fmt.Fprintf(w, "all       %8d %9.1f   node CPU %.2f s, %v per request\n", rep.Requests, rep.RequestsPerSec, rep.NodeCPUSeconds, rep.CPUPerRequest.Round(time.Microsecond))
	switch {
	case rep.Audit != nil && rep.Audit.OK:
		fmt.Fprintf(w, "audit: ok (%d checks)\n", len(rep.Audit.Checks))
	case rep.Audit != nil:
		fmt.Fprintln(w, "audit: FAILED")
	}
	for _, p := range rep.Problems {
		fmt.Fprintln(w, "problem:", p)
	}
}

// WriteJSON writes the report as one JSON object.
func (rep *MixReport) WriteJSON(w io.Writer) error {
	b, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
