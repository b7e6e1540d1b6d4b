package ingress

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"redrain/campaign"
	"redrain/ledger"
	"redrain/metrics"
	"redrain/storage"
)

// pendingMarkTTL bounds how long a crashed grant's pending mark blocks its
// user: after it, a retry issues again (the same token, by determinism).
const pendingMarkTTL = 30 * time.Second

// Issuer is the grant path: rain check, binding, per-user limit, budget
// lease, deterministic draw, token, grant stream. No TiKV write and no lone
// Redis call happen on it: Redis commands go through the pipeliner, budget
// through local leases.
type Issuer struct {
	log     *slog.Logger
	camp    *campaign.Campaign // token keys and draw salt
	catalog atomic.Pointer[campaign.Catalog]
	binder  *Binder
	redis   *storage.Pipeliner
	stream  *storage.GrantWriter
	clock   func() time.Time

	// leases holds one holder per budget ever drawn from (budget id →
	// *leaseHolder), created on first use; every grant looks its holder up
	// here, so reads take no lock. Holders of budgets a later configuration
	// dropped stay until the node stops, so their open leases are closed
	// exactly once.
	leases      sync.Map
	leaseSrc    LeaseSource
	node        string
	incarnation uint64

	// inflight holds this node's grants between their claim and their
	// issued mark, so that a duplicate arriving meanwhile waits for the
	// first one's answer instead of failing. Bounded by the grants in
	// flight, never by users seen.
	inflight sync.Map // limit key → *pendingGrant
	marks    sync.WaitGroup

	grants    map[string]*metrics.Counter // by outcome
	grantTime *metrics.Histogram
	stageTime [stageCount]*metrics.Histogram
	GrantsNew *metrics.Counter
}

// IssuerConfig wires an issuer.
type IssuerConfig struct {
	Log         *slog.Logger
	Campaign    *campaign.Campaign
	TiKV        *storage.TiKV
	Pipeliner   *storage.Pipeliner
	Stream      *storage.GrantWriter
	Leases      LeaseSource
	Node        string // this node's id
	Incarnation uint64 // this process's start
	Metrics     *metrics.Registry
	Clock       func() time.Time
}

// Stages of the grant path, timed separately.
const (
	stageBind = iota
	stageClaim
	stageLease
	stageStream
	stageMark
	stageCount
)

var stageNames = [stageCount]string{"bind", "claim", "lease", "stream", "mark"}

// Grant outcomes as counted in metrics.
var grantOutcomes = []string{"issued", "repeat", "no_award", "in_progress", "budget_exhausted", "rain_closed", "not_eligible", "unknown", "error"}

// NewIssuer builds an issuer with an empty catalog: it grants once
// SetCatalog publishes activities.
func NewIssuer(ctx context.Context, cfg IssuerConfig) (*Issuer, error) {
	is := &Issuer{
		log: cfg.Log, camp: cfg.Campaign, binder: NewBinder(cfg.TiKV, cfg.Pipeliner), redis: cfg.Pipeliner,
		stream: cfg.Stream, clock: cfg.Clock,
		leaseSrc: cfg.Leases, node: cfg.Node, incarnation: cfg.Incarnation,
		grants: map[string]*metrics.Counter{},
	}
	is.catalog.Store(campaign.NewCatalog(0))
	for _, o := range grantOutcomes {
		is.grants[o] = cfg.Metrics.Counter("redrain_grants_total", "Grant requests by outcome.", "outcome", o)
	}
	is.grantTime = cfg.Metrics.Histogram("redrain_grant_seconds", "Grant latency, request parsed to answer.", metrics.LatencyBounds)
	for i, name := range stageNames {
		is.stageTime[i] = cfg.Metrics.Histogram("redrain_grant_stage_seconds", "Time spent in each stage of the grant path.", metrics.LatencyBounds, "stage", name)
	}
	is.GrantsNew = is.grants["issued"]
	return is, nil
}

// SetCatalog swaps in what the node serves. Grants in flight finish on the
// catalog they started with.
func (is *Issuer) SetCatalog(c *campaign.Catalog) { is.catalog.Store(c) }

// Catalog is what the node serves now.
func (is *Issuer) Catalog() *campaign.Catalog { return is.catalog.Load() }

// Binder resolves app identities to act_ids.
func (is *Issuer) Binder() *Binder { return is.binder }

// OpenLeases reports, per budget, what this node issued under each lease
// it holds open.
func (is *Issuer) OpenLeases() map[string][]OpenLease {
	out := map[string][]OpenLease{}
	is.leases.Range(func(id, h any) bool {
		if open := h.(*leaseHolder).open(); len(open) > 0 {
			out[id.(string)] = open
		}
		return true
	})
	return out
}

// holder returns the lease holder of w's budget, creating it on first use.
func (is *Issuer) holder(w *campaign.ChildAward) *leaseHolder {
	if h, ok := is.leases.Load(w.BudgetID); ok {
		return h.(*leaseHolder)
	}
	// A lease covers 256 maximal grants at first and doubles while
	// leases last under two seconds, up to 65536 of them; and never more
	// than a 64th of the budget at first (a 16th at most), so that small
	// budgets spread over nodes and the spent share that thresholds
	// read stays fine-grained.
	// Both are whole multiples of the largest packet, so that a lease
	// of a fixed-amount award is spent to the last fen.
	m := w.MaxAmount()
	lo := max(min(m*256, w.Total/64)/m*m, m)
	hi := max(min(m*65536, w.Total/16)/m*m, lo)
	// A holder that loses the race to be stored was never used: it holds
	// no lease.
	h, _ := is.leases.LoadOrStore(w.BudgetID,
		newLeaseHolder(is.log, w.BudgetID, is.leaseSrc, is.node, is.incarnation, lo, hi, is.clock))
	return h.(*leaseHolder)
}

// pendingGrant is a grant between its claim and its issued mark.
type pendingGrant struct {
	done chan struct{}
	res  *GrantResponse
	err  error
}

// Close waits for issued marks in flight and returns every lease's unspent
// budget.
func (is *Issuer) Close(ctx context.Context) {
	is.marks.Wait()
	is.leases.Range(func(_, h any) bool {
		h.(*leaseHolder).closeAll(ctx)
		return true
	})
}

// Grant issues one packet, or answers a repeat with the identical token.
func (is *Issuer) Grant(ctx context.Context, req *GrantRequest) (*GrantResponse, error) {
	start := time.Now()
	res, outcome, err := is.grant(ctx, req)
	is.grants[outcome].Inc()
	is.grantTime.ObserveNs(time.Since(start).Nanoseconds())
	return res, err
}

func (is *Issuer) grant(ctx context.Context, req *GrantRequest) (*GrantResponse, string, error) {
	pub := is.catalog.Load().Activity(req.ActivityID)
	if pub == nil {
		return nil, "unknown", Errorf(CodeUnknownActivity, "activity %q does not exist", req.ActivityID)
	}
	// Refuse a rain no served version has, or has open, before binding: a
	// bad request must not hand out an act_id.
	switch known, open := pub.RainState(req.SceneID, req.RainID, is.clock()); {
	case !known:
		return nil, "unknown", unknownRain(req)
	case !open:
		return nil, "rain_closed", rainClosed(req)
	}
	t0 := time.Now()
	actID, err := is.binder.Resolve(ctx, req.AppID, req.UserID)
	is.lap(stageBind, t0)
	if err != nil {
		return nil, "error", unavailable(err)
	}
	ver := pub.For(actID)
	if ver == nil {
		return nil, "not_eligible", Errorf(CodeNotEligible, "activity %q is not published to this user yet", req.ActivityID)
	}
	rain := ver.Rain(req.SceneID, req.RainID)
	if rain == nil {
		return nil, "unknown", unknownRain(req)
	}
	if !rain.Open(is.clock()) {
		return nil, "rain_closed", rainClosed(req)
	}
	child := ver.ChildFor(actID)
	if child == nil {
		return nil, "not_eligible", Errorf(CodeNotEligible, "no stage of activity %q admits this user", req.ActivityID)
	}
	g := ledger.Grant{
		AppID: req.AppID, ActID: actID, UserID: req.UserID, ActivityID: ver.ID,
		SceneID: req.SceneID, RainID: req.RainID, Stage: child.Stage,
		OpenTime: rain.Start.UnixMilli(),
	}
	limitKey := g.LimitKey()
	pg := &pendingGrant{done: make(chan struct{})}
	if prev, loaded := is.inflight.LoadOrStore(limitKey, pg); loaded {
		// The same user and rain is being granted on this node right now.
		p := prev.(*pendingGrant)
		select {
		case <-p.done:
		case <-ctx.Done():
			return nil, "error", unavailable(ctx.Err())
		}
		if p.err != nil {
			return nil, "in_progress", Errorf(CodeGrantInProgress, "a grant for this user and rain failed just now; retry")
		}
		r := *p.res
		return &r, "repeat", nil
	}
	res, outcome, err := is.issue(ctx, &g, child, limitKey)
	pg.res, pg.err = res, err
	close(pg.done)
	if outcome != "issued" {
		is.inflight.Delete(limitKey)
	}
	return res, outcome, err
}

// issue claims the limit key in Redis and, when it is new, issues. Only an
// issued grant stays in inflight; its issued mark removes it.
func (is *Issuer) issue(ctx context.Context, g *ledger.Grant, child *campaign.Child, limitKey string) (*GrantResponse, string, error) {
	markKey := storage.LimitMarkKey(limitKey)
	t0 := time.Now()
	// Claim the per-user limit (one packet per user and rain, whatever
	// award) and read the booked mark in the same round trip.
	booked := redis.NewStringCmd(ctx, "get", storage.BookedMarkKey(limitKey))
	claim := redis.NewStringCmd(ctx, "set", markKey, storage.MarkPending, "nx", "get", "px", pendingMarkTTL.Milliseconds())
	if err := is.redis.Do(ctx, booked, claim); err != nil {
		return nil, "error", unavailable(err)
	}
	is.lap(stageClaim, t0)
	if v, err := booked.Result(); err == nil {
		if _, award, amount, app, ok := storage.ParseMark(v); ok {
			setAward(g, child, award, amount, app)
			return is.answer(g, true), "repeat", nil
		}
	}
	prev, err := claim.Result()
	switch {
	case errors.Is(err, redis.Nil):
	case err != nil:
		return nil, "error", unavailable(err)
	case prev == storage.MarkPending:
		return nil, "in_progress", Errorf(CodeGrantInProgress, "a grant for this user and rain is being issued; retry")
	default:
		_, award, amount, app, ok := storage.ParseMark(prev)
		if !ok {
			return nil, "error", Errorf(CodeInternal, "unreadable grant mark")
		}
		if award == storage.MarkNoAward {
			return noAwardAnswer(g), "repeat", nil
		}
		setAward(g, child, award, amount, app)
		return is.answer(g, false), "repeat", nil
	}

	// New grant: draw, reserve, stream. Any failure undoes the claim.
	award := child.PickAward(ledger.DrawSeed(is.camp.Config.DrawSalt, limitKey))
	var holder *leaseHolder
	var lease *activeLease
	t0 = time.Now()
	// An award whose budget cannot pay falls back along its chain (which
	// compiles acyclic, so this ends): to another award, to "no award", or
	// to budget_exhausted.
	for {
		g.AwardType, g.Asset, g.BudgetID = award.Type, award.Asset, award.BudgetID
		holder = is.holder(award)
		lo, hi := award.Range(holder.spentBP())
		g.Amount = ledger.Draw(ledger.DrawSeed(is.camp.Config.DrawSalt, g.IdempotencyKey()), lo, hi)
		lease, err = holder.take(ctx, g.Amount)
		if !errors.Is(err, errExhausted) {
			break
		}
		switch {
		case award.FallbackTo != nil:
			award = award.FallbackTo
			continue
		case award.NoAward:
			is.lap(stageLease, t0)
			return is.noAward(g, limitKey, markKey)
		}
		break
	}
	t0 = is.lap(stageLease, t0)
	if err != nil {
		is.unclaim(markKey)
		if errors.Is(err, errExhausted) {
			return nil, "budget_exhausted", Errorf(CodeBudgetExhausted, "the budget of award %q in activity %q is exhausted", award.Type, g.ActivityID)
		}
		return nil, "error", unavailable(err)
	}
	g.LeaseID = lease.id
	g.IssuedAt = is.clock().UnixMilli()
	if err := is.stream.Write(g); err != nil {
		// The producer gave up, but the broker may have appended the record
		// before the failure reached us. Never give the amount back on a
		// guess (that could overspend): it counts as issued, the pending
		// mark expires, and booking marks it booked if it landed.
		holder.settle(lease, g.Amount, true)
		return nil, "error", unavailable(err)
	}
	holder.settle(lease, g.Amount, true)
	is.lap(stageStream, t0)
	// The issued mark goes out after the answer: duplicates meanwhile are
	// answered from inflight on this node.
	is.marks.Add(1)
	go is.markIssued(limitKey, markKey, g.AwardType, g.Amount, g.AppID)
	return is.answer(g, false), "issued", nil
}

// setAward fills in a repeat's award from its mark, and the app of the
// first grant: a user bound in several apps gets the identical token
// through any of them.
func setAward(g *ledger.Grant, child *campaign.Child, award string, amount int64, app uint32) {
	g.AwardType, g.Amount = award, amount
	if app != 0 {
		g.AppID = app
	}
	if w := child.Award(award); w != nil {
		g.Asset = w.Asset
	}
}

// noAward answers a grant whose awards all fell back to "no award": the
// user's packet for the rain is used up and nothing is issued or booked.
// The mark lives in Redis only; if Redis loses it, a retry draws again.
func (is *Issuer) noAward(g *ledger.Grant, limitKey, markKey string) (*GrantResponse, string, error) {
	is.marks.Add(1)
	go is.markIssued(limitKey, markKey, storage.MarkNoAward, 0, g.AppID)
	return noAwardAnswer(g), "no_award", nil
}

func noAwardAnswer(g *ledger.Grant) *GrantResponse {
	return &GrantResponse{ActID: g.ActID, AwardType: storage.MarkNoAward, Stage: g.Stage.String(), Status: "no_award"}
}

func (is *Issuer) markIssued(limitKey, markKey, award string, amount int64, app uint32) {
	defer is.marks.Done()
	defer is.inflight.Delete(limitKey)
	t0 := time.Now()
	ctx := context.Background()
	set := redis.NewStatusCmd(ctx, "set", markKey, storage.MarkValue(storage.MarkIssued, award, amount, app))
	if err := is.redis.Do(ctx, set); err != nil || set.Err() != nil {
		// The grant stands (it is in Kafka); the pending mark expires, and
		// booking's booked mark answers repeats once it is booked.
		is.log.Warn("grant: issued mark not set", "limit_key", limitKey, "err", errors.Join(err, set.Err()))
	}
	is.lap(stageMark, t0)
}

func (is *Issuer) lap(stage int, since time.Time) time.Time {
	now := time.Now()
	is.stageTime[stage].ObserveNs(now.Sub(since).Nanoseconds())
	return now
}

// unclaim drops a pending mark after a grant failed before its record.
func (is *Issuer) unclaim(markKey string) {
	ctx := context.Background()
	// Only this grant wrote the pending mark, and nothing else changes it.
	del := redis.NewIntCmd(ctx, "del", markKey)
	if err := is.redis.Do(ctx, del); err != nil || del.Err() != nil {
		is.log.Warn("grant: pending mark not removed; it expires", "key", markKey, "err", errors.Join(err, del.Err()))
	}
}

func (is *Issuer) answer(g *ledger.Grant, booked bool) *GrantResponse {
	c := g.Claims()
	status := "issued"
	if booked {
		status = "booked"
	}
	tok := is.camp.Ring.Seal(nil, &c)
	return &GrantResponse{Token: tok, OutTradeNo: c.OutTradeNo, ActID: g.ActID, AwardType: g.AwardType,
		Asset: string(g.Asset), Amount: g.Amount, Stage: g.Stage.String(), Status: status}
}

func unknownRain(req *GrantRequest) *Error {
	return Errorf(CodeUnknownRain, "activity %q has no rain %d in scene %q", req.ActivityID, req.RainID, req.SceneID)
}

func rainClosed(req *GrantRequest) *Error {
	return Errorf(CodeRainClosed, "rain %d of activity %q is not open", req.RainID, req.ActivityID)
}

func unavailable(err error) *Error {
	return Errorf(CodeUnavailable, "a backend is unavailable; retry: %v", err)
}
