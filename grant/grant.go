// Package grant is the grant domain: it admits grant requests in
// micro-batches per shard, decides the per-user limit, spends budget from
// leases, draws awards and amounts, and hands each shard's batch to the
// grant stream as one record. It knows nothing of HTTP: what happened to a
// grant is a typed Outcome that the API maps to its error table.
//
// A shard is a partition of the grant topic; a user (act_id) belongs to
// one. Each shard has one goroutine that takes everything that arrived
// while its previous batch waited for its Kafka acknowledgement (no timer)
// and does once per batch what a grant needs: one clock read, the limit
// claims in its own table (no I/O), one lease take and settle per budget,
// one record, one acknowledgement wait. Nothing on this path starts a
// goroutine, hops a channel or takes a shared lock once per grant; callers
// pay one hand-off per request.
//
// One node decides each shard's users: the node whose booking owns the
// partition (Own, Disown). The others forward their batches for the shard
// to it, one message per batch (Peers, Serve).
//
// The package must never write to TiKV on the grant path, make a Redis call
// on it, or answer a grant before its record is acknowledged.
package grant

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"redrain/campaign"
	"redrain/ledger"
	"redrain/metrics"
	"redrain/storage"
	"redrain/tokens"
)

// Outcome is what happened to one grant request. Business outcomes are
// values, not Go errors; only Unavailable carries an error (Result.Err).
type Outcome uint8

// Outcomes.
const (
	Issued          Outcome = iota // a new packet
	Repeat                         // the user's packet for this rain, issued before (Result.Booked: booked already)
	NoAward                        // every award fell back to "no award", now or before: the user's packet is used up
	InProgress                     // a grant for this user and rain is in flight elsewhere; retry
	BudgetExhausted                // the award's budget (and its fallbacks') cannot pay
	RainClosed                     // the rain is not open
	UnknownActivity                // no such activity is served
	UnknownRain                    // the activity has no such rain
	NotEligible                    // no published version or stage admits this user
	Shed                           // the node has too many grants in flight; retry
	Unavailable                    // a backend failed; retry (Result.Err says which)
	outcomeCount
)

var outcomeNames = [outcomeCount]string{"issued", "repeat", "no_award", "in_progress", "budget_exhausted",
	"rain_closed", "unknown_activity", "unknown_rain", "not_eligible", "shed", "unavailable"}

// String returns the outcome's metric label, e.g. "budget_exhausted".
func (o Outcome) String() string {
	if o < outcomeCount {
		return outcomeNames[o]
	}
	return "unknown"
}

// Request is one grant as a client asks for it.
type Request struct {
	AppID      uint32
	UserID     string
	ActivityID string
	SceneID    string
	RainID     uint64
}

// Result is the answer to one Request.
type Result struct {
	Outcome Outcome
	// Grant is the packet (Issued, Repeat) or, for NoAward, the user
	// (ActID, Stage and the request's ids).
	Grant  ledger.Grant
	Booked bool  // Repeat: the packet is booked already
	Err    error // Unavailable: why
}

// Resolver binds app identities to act_ids, many at once (one round trip
// for every identity it does not know yet). ids[i] stays 0 for an identity
// it could not resolve, and the error says why. ctx bounds the round trip;
// with no deadline the resolver bounds it itself (the grant path passes
// none: most calls make no round trip, and a context with a timer per
// request was 2.5% of a node's CPU with single grants).
type Resolver interface {
	ResolveMany(ctx context.Context, apps []uint32, users []string, ids []uint64) error
}

// Stream is the grant topic as the grant path writes it
// (storage.GrantWriter; the simulation's log).
type Stream interface {
	// Partitions is the topic's partition count: one shard each.
	Partitions() int32
	// Partition is the partition of a user's grants.
	Partition(actID uint64) int32
	// Append writes a shard's grants to its partition and waits for the
	// acknowledgement, returning the records written. An error wrapping
	// storage.ErrStreamClosed or storage.ErrNotSent means nothing was
	// sent; any other error
	// leaves it unknown whether the grants landed (until
	// storage.WriteDeadline after the call began).
	Append(part int32, grants []ledger.Grant) (records int, err error)
}

// Config wires an Admission.
type Config struct {
	Log         *slog.Logger
	Campaign    *campaign.Campaign // draw salt
	Resolver    Resolver
	Stream      Stream
	Leases      LeaseSource
	Node        string // this node's id
	Incarnation uint64 // this process's start
	Metrics     *metrics.Registry
	Clock       func() time.Time
	// InFlightMax bounds the grants admitted and not yet answered on this
	// node; past it requests are refused Shed at once (default
	// InFlightMaxDefault).
	InFlightMax int
	// Owner says this node owns every shard for its whole life, from the
	// start (tests; Restore fills the claims). Otherwise a shard is
	// decided here only between Own and Disown, and forwarded to its
	// owner through Peers the rest of the time.
	Owner bool
	// Peers reaches the owners of the shards this node does not own (nil:
	// their grants are answered unavailable); Self is this node's own
	// forwarding address, as Peers.Owner names it.
	Peers Peers
	Self  string
}

// InFlightMaxDefault is the default bound on grants in flight per node:
// at ~1 KiB per grant in flight (request, grant, record bytes) it holds
// memory near 128 MiB whatever is offered.
const InFlightMaxDefault = 1 << 17

// Admission admits grants into per-shard micro-batches.
type Admission struct {
	log         *slog.Logger
	salt        string
	resolver    Resolver
	peers       Peers
	self        string
	stream      Stream
	clock       func() time.Time
	catalog     atomic.Pointer[campaign.Catalog]
	leaseSrc    LeaseSource
	node        string
	incarnation uint64

	// leases holds one holder per budget ever drawn from (budget id →
	// *leaseHolder), created on first use; lookups take no lock. Holders
	// of budgets a later configuration dropped stay until the node stops,
	// so their open leases are closed exactly once.
	leases sync.Map

	shards      []*shard
	scratch     sync.Pool    // of *admitScratch
	inFlight    atomic.Int64 // Invariant: <= inFlightMax after every admit's check
	inFlightMax int64
	claimed     atomic.Int64 // users with a claim in the in-process tables
	deciding    atomic.Int32 // shards owned here and restored
	lastBatch   atomic.Int64 // unix ns when a shard last started a batch
	records     atomic.Int64 // grant-stream records written
	// lateAcks counts grants whose record was acknowledged after their
	// lease's expiry as this node sees it (not answered as issued).
	lateAcks *metrics.Counter
	// Grants forwarded to their shard's owner, and grants decided here for
	// other nodes.
	forwardedOut, forwardedIn *metrics.Counter
	closing                   atomic.Bool
	stop                      chan struct{} // closed by Close
	wg                        sync.WaitGroup

	outcomes    [outcomeCount]*metrics.Counter
	latency     *metrics.Histogram
	batchSize   *metrics.Histogram
	perRecord   *metrics.Histogram
	stageTime   [stageCount]*metrics.Histogram
	inFlightMet *metrics.Gauge
}

// Stages of a shard's batch, timed per batch.
const (
	stageClaim = iota
	stageLease
	stageStream
	stageForward
	stageCount
)

var stageNames = [stageCount]string{"claim", "lease", "stream", "forward"}

// New builds an admission with one shard per grant-topic partition and an
// empty catalog: it grants once SetCatalog publishes activities.
func New(cfg Config) *Admission {
	if storage.WriteDeadline >= pendingMarkTTL {
		panic("grant: a claim would expire while its record may still land")
	}
	a := &Admission{
		log: cfg.Log, salt: cfg.Campaign.Config.DrawSalt, resolver: cfg.Resolver, peers: cfg.Peers, self: cfg.Self,
		stream: cfg.Stream, clock: cfg.Clock, leaseSrc: cfg.Leases, node: cfg.Node, incarnation: cfg.Incarnation,
		inFlightMax: int64(cfg.InFlightMax), stop: make(chan struct{}),
	}
	if a.inFlightMax <= 0 {
		a.inFlightMax = InFlightMaxDefault
	}
	a.catalog.Store(campaign.NewCatalog(0))
	reg := cfg.Metrics
	for o := range outcomeCount {
		a.outcomes[o] = reg.Counter("redrain_grants_total", "Grant requests by outcome.", "outcome", o.String())
	}
	a.latency = reg.Histogram("redrain_grant_seconds", "Grant request latency, parsed to answered (a batch request counts once).", metrics.LatencyBounds)
	a.batchSize = reg.CountHistogram("redrain_grant_batch_grants", "Grants in one shard batch.", metrics.CountBounds)
	a.perRecord = reg.CountHistogram("redrain_grants_per_record", "Grants in one grant-stream record.", metrics.CountBounds)
	for i, name := range stageNames {
		a.stageTime[i] = reg.Histogram("redrain_grant_stage_seconds", "Time a shard batch spends in each stage of the grant path.", metrics.LatencyBounds, "stage", name)
	}
	a.inFlightMet = reg.Gauge("redrain_grants_in_flight", "Grants admitted and not yet answered on this node.")
	a.forwardedOut = reg.Counter("redrain_grants_forwarded_total", "Grants sent to the node that owns their shard.")
	a.forwardedIn = reg.Counter("redrain_grants_decided_for_peers_total", "Grants other nodes forwarded here, the owner of their shard.")
	n := cfg.Stream.Partitions()
	a.shards = make([]*shard, n)
	if cfg.Owner {
		a.deciding.Store(n)
	}
	a.lateAcks = reg.Counter("redrain_grant_late_acks_total", "Grants whose record was acknowledged after their budget lease expired as this node sees it: answered unavailable, not issued.")
	for i := range a.shards {
		a.shards[i] = newShard(a, int32(i), cfg.Owner)
		a.wg.Add(1)
		go a.shards[i].run()
	}
	reg.GaugeFunc("redrain_grant_claims", "Users with a packet claim held in process (per rain and stage).", a.claimed.Load)
	a.wg.Add(1)
	go a.sweep()
	return a
}

// Booked is a packet that booking posted, as the claim table keeps it:
// the user, its rain (the limit key without its "{act_id}_": the claim
// table's key, shared by every packet of one rain and stage) and what it
// paid.
type Booked struct {
	ActID     uint64
	Rain      string
	AwardType string
	Amount    int64
	AppID     uint32 // 0 when unknown (restored from an account entry)
}

// BookedEntry is the packet an account's entry under limitKey holds.
func BookedEntry(actID uint64, limitKey, awardType string, amount int64) Booked {
	return Booked{ActID: actID, Rain: rainOf(limitKey), AwardType: awardType, Amount: amount}
}

// BookedOf is what the claim tables keep of the grants that ops booked or
// attributed (booking's report: other kinds carry none). Consecutive
// grants of one rain, as a unit's mostly are, share its key's string,
// built once for them (a key a grant was ~1% of a burst's CPU).
func BookedOf(ops []ledger.Op) []Booked {
	out := make([]Booked, 0, len(ops))
	var key []byte
	var last *ledger.Grant // the grant rain was built from
	rain := ""
	for i := range ops {
		if k := ops[i].Kind; k != ledger.OpBook && k != ledger.OpAttribute {
			continue
		}
		g := &ops[i].Grant
		if last == nil || !last.SameRain(g) {
			key = g.AppendLimitKey(key[:0])
			if r := key[bytes.IndexByte(key, '_')+1:]; string(r) != rain {
				rain = string(r)
			}
			last = g
		}
		out = append(out, Booked{ActID: g.ActID, Rain: rain, AwardType: g.AwardType, Amount: g.Amount, AppID: g.AppID})
	}
	return out
}

// MarkBooked records booked packets in the owning shards' claims, so that
// repeats answer "booked". It queues them and returns at once: booking
// never waits for a shard. A shard not owned here drops them. The shards
// keep gs: the caller must not change it.
func (a *Admission) MarkBooked(gs []Booked) {
	if len(gs) == 0 {
		return
	}
	// Booking reports one partition's packets at a time: they go to its
	// shard as they are.
	first := a.stream.Partition(gs[0].ActID)
	one := true
	for i := 1; i < len(gs) && one; i++ {
		one = a.stream.Partition(gs[i].ActID) == first
	}
	if one {
		a.shards[first].pushBooked(gs)
		return
	}
	byShard := make([][]Booked, len(a.shards))
	for _, g := range gs {
		p := a.stream.Partition(g.ActID)
		byShard[p] = append(byShard[p], g)
	}
	for p, part := range byShard {
		if len(part) > 0 {
			a.shards[p].pushBooked(part)
		}
	}
}

// Restore loads the packets the store holds into the claim tables of a
// starting owner, and returns once every shard has applied them. It runs
// after booking drained the grant topic, before the node serves: then the
// store holds every packet ever acknowledged, and the tables are exact.
func (a *Admission) Restore(gs []Booked) {
	a.MarkBooked(gs)
	for _, s := range a.shards {
		s.call(func() {}) // drains the queue first
	}
}

// Own makes this node decide shard p's users while t is valid. Until load
// has returned every packet the store holds for the partition (retried
// until it does, or Disown), the shard answers its grants unavailable.
// Own returns at once; the restore runs on its own goroutine.
func (a *Admission) Own(p int32, t Tenure, load func(ctx context.Context) ([]Booked, error)) {
	if a.closing.Load() {
		return // stopping: booking's report comes too late to matter
	}
	s := a.shards[p]
	epoch := s.ownEpoch.Add(1)
	current := func() bool { return s.ownEpoch.Load() == epoch && !a.closing.Load() }
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		s.call(func() {
			if current() {
				s.dropTable()
				s.table, s.tenure, s.restoring = newClaimTable(), t, true
			}
		})
		start := time.Now()
		for attempt := 1; current(); attempt++ {
			ctx, cancel := context.WithCancel(context.Background())
			gs, err := load(ctx)
			cancel()
			if err == nil {
				s.call(func() {
					if current() {
						s.booked(gs)
						s.restoring = false
						a.deciding.Add(1)
					}
				})
				a.log.Info("grant: shard owned here", "shard", p, "packets", len(gs), "took", time.Since(start).Round(time.Millisecond))
				return
			}
			a.log.Warn("grant: restoring a shard's claims; retrying", "shard", p, "attempt", attempt, "err", err)
			select {
			case <-a.stop:
				return
			case <-time.After(time.Second):
			}
		}
	}()
}

// Disown stops this node deciding shard p's users, and returns once the
// shard's current batch is answered: later ones are forwarded to the owner.
func (a *Admission) Disown(p int32) {
	s := a.shards[p]
	s.ownEpoch.Add(1)
	s.call(s.dropTable)
}

// Deciding counts the shards this node decides now (owned and restored).
func (a *Admission) Deciding() int { return int(a.deciding.Load()) }

// Shards is how many shards there are (the grant topic's partitions).
func (a *Admission) Shards() int { return len(a.shards) }

// dropTable forgets the shard's claims (the next owner restores them).
func (s *shard) dropTable() {
	if s.table != nil && !s.restoring {
		s.a.deciding.Add(-1)
	}
	if s.table != nil {
		var n int64
		for _, r := range s.table.rains {
			n += int64(r.users.len())
		}
		s.a.claimed.Add(-n)
	}
	s.table, s.tenure, s.restoring = nil, nil, false
}

// sweepEvery is how often the owner looks for rains whose claims can go.
const sweepEvery = 30 * time.Second

// sweep releases the claims of rains closed for releaseAfter, shard by
// shard, until Close.
func (a *Admission) sweep() {
	defer a.wg.Done()
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for !a.closing.Load() {
		select {
		case <-t.C:
		case <-a.stop:
			return
		}
		now := a.clock()
		cat := a.catalog.Load()
		isOpen := func(rainKey string) bool { return rainOpen(cat, rainKey, now) }
		for _, s := range a.shards {
			s.call(func() {
				if s.table != nil {
					a.claimed.Add(-s.table.sweep(now, isOpen))
				}
			})
		}
	}
}

// rainOpen reports whether the rain of a claim table key
// ("{activity}_{scene}_{rain}_{stage}") is open or unknown in cat. Legacy
// keys (no activity) are of rains before the key change: closed.
func rainOpen(cat *campaign.Catalog, rainKey string, now time.Time) bool {
	parts := strings.Split(rainKey, "_")
	if len(parts) != 4 {
		return false
	}
	pub := cat.Activity(parts[0])
	rain, err := strconv.ParseUint(parts[2], 10, 64)
	if pub == nil || err != nil {
		return true
	}
	known, open := pub.RainState(parts[1], rain, now)
	return open || !known
}

// SetCatalog swaps in what the node serves. Grants in flight finish on the
// catalog they started with.
func (a *Admission) SetCatalog(c *campaign.Catalog) { a.catalog.Store(c) }

// Catalog is what the node serves now.
func (a *Admission) Catalog() *campaign.Catalog { return a.catalog.Load() }

// busyWindow is how recent a shard batch must be for Busy.
const busyWindow = 100 * time.Millisecond

// Busy reports whether a shard started a batch within the last
// busyWindow: grants are flowing, and work that can wait (booking) should
// give way.
func (a *Admission) Busy() bool {
	return time.Now().UnixNano()-a.lastBatch.Load() < busyWindow.Nanoseconds()
}

// Records counts the grant-stream records this node wrote.
func (a *Admission) Records() int64 { return a.records.Load() }

// Issued counts the packets this node issued (new grants acknowledged).
func (a *Admission) Issued() int64 { return a.outcomes[Issued].Load() }

// OpenLeases reports, per budget, what this node issued under each lease
// it holds open.
func (a *Admission) OpenLeases() map[string][]OpenLease {
	out := map[string][]OpenLease{}
	a.leases.Range(func(id, h any) bool {
		if open := h.(*leaseHolder).open(); len(open) > 0 {
			out[id.(string)] = open
		}
		return true
	})
	return out
}

// holder returns the lease holder of w's budget, creating it on first use.
func (a *Admission) holder(w *campaign.ChildAward) *leaseHolder {
	if h, ok := a.leases.Load(w.BudgetID); ok {
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
	// no lease, and its renewals never start (the simulation found the
	// goroutine of such a holder left running for good).
	h, loaded := a.leases.LoadOrStore(w.BudgetID,
		newLeaseHolder(a.log, w.BudgetID, a.leaseSrc, a.node, a.incarnation, lo, hi, a.clock))
	if !loaded {
		go h.(*leaseHolder).renewLoop()
	}
	return h.(*leaseHolder)
}

// Close answers every grant already admitted, stops the shards and
// returns every lease's unspent budget. Admit after Close answers
// Unavailable.
func (a *Admission) Close(ctx context.Context) {
	if a.closing.Swap(true) {
		return
	}
	close(a.stop)
	for _, s := range a.shards {
		s.wakeUp()
	}
	a.wg.Wait()
	a.leases.Range(func(_, h any) bool {
		h.(*leaseHolder).closeAll(ctx)
		return true
	})
}

// errClosed answers grants that arrive while the node stops.
var errClosed = errors.New("grant: the node is stopping")

// item is one grant request on its way through a shard.
type item struct {
	g         ledger.Grant
	child     *campaign.Child
	limitKey  string
	req       *Request // what the client asked (forwarded as it is)
	res       *Result
	t         *ticket
	forwarded bool // another node sent it here, the shard's owner
	// Set by the shard while it decides the batch.
	lead *item // an earlier item of the same batch with the same limit key
	// sameUser: the next lead of the batch with the same act_id (another
	// rain, activity or stage of the user).
	sameUser *item
	award    *campaign.ChildAward
	h        *leaseHolder
	lease    *activeLease
	rc       *rainClaims // the claim table's rain, when the shard decides in process
}

// ticket is one request waiting for its items.
type ticket struct {
	left atomic.Int64
	done chan struct{}
}

func (t *ticket) finish(n int64) {
	if t.left.Add(-n) == 0 {
		close(t.done)
	}
}

// Admit decides every request and fills res[i] with the answer to reqs[i].
// It returns once every grant is answered: issued ones after their record
// is acknowledged. Requests that fail before reaching a shard (unknown
// activity, closed rain, not eligible) are answered at once and bind no
// user when the rain itself is unknown or closed.
func (a *Admission) Admit(reqs []Request, res []Result) {
	start := time.Now()
	a.admit(reqs, res, nil)
	a.count(res)
	a.latency.ObserveNs(time.Since(start).Nanoseconds())
}

// admit is Admit; with ids (a batch another node forwarded, its users
// bound there) it binds nothing, and a shard not owned here answers
// ErrNotOwner instead of forwarding again.
func (a *Admission) admit(reqs []Request, res []Result, ids []uint64) {
	if a.closing.Load() {
		for i := range res {
			res[i] = Result{Outcome: Unavailable, Err: errClosed}
		}
		return
	}
	now := a.clock()
	cat := a.catalog.Load()
	sc := a.getScratch(len(reqs))
	defer a.putScratch(sc)
	// Refuse a rain no served version has, or has open, before binding: a
	// bad request must not hand out an act_id.
	pubs, apps, users, bind := sc.pubs, sc.apps, sc.users, sc.bind
	for i := range reqs {
		r := &reqs[i]
		pub := cat.Activity(r.ActivityID)
		if pub == nil {
			res[i] = Result{Outcome: UnknownActivity}
			continue
		}
		switch known, open := pub.RainState(r.SceneID, r.RainID, now); {
		case !known:
			res[i] = Result{Outcome: UnknownRain}
			continue
		case !open:
			res[i] = Result{Outcome: RainClosed}
			continue
		}
		pubs[i] = pub
		apps, users, bind = append(apps, r.AppID), append(users, r.UserID), append(bind, i)
	}
	sc.apps, sc.users, sc.bind = apps, users, bind
	if len(bind) == 0 {
		return
	}
	forwarded := ids != nil
	var bindErr error
	if forwarded {
		for _, i := range bind {
			sc.ids = append(sc.ids, ids[i])
		}
	} else {
		sc.ids = append(sc.ids, make([]uint64, len(bind))...)
		bindErr = a.resolver.ResolveMany(context.Background(), apps, users, sc.ids)
	}
	items, keys := sc.items, sc.keys
	for j, i := range bind {
		r := &reqs[i]
		actID := sc.ids[j]
		if actID == 0 {
			res[i] = Result{Outcome: Unavailable, Err: bindErr}
			continue
		}
		ver := pubs[i].For(actID)
		if ver == nil {
			res[i] = Result{Outcome: NotEligible}
			continue
		}
		rain := ver.Rain(r.SceneID, r.RainID)
		switch {
		case rain == nil:
			res[i] = Result{Outcome: UnknownRain}
			continue
		case !rain.Open(now):
			res[i] = Result{Outcome: RainClosed}
			continue
		}
		child := ver.ChildFor(actID)
		if child == nil {
			res[i] = Result{Outcome: NotEligible}
			continue
		}
		items = append(items, item{res: &res[i], req: r, forwarded: forwarded, child: child, g: ledger.Grant{
			AppID: r.AppID, ActID: actID, UserID: r.UserID, ActivityID: ver.ID,
			SceneID: r.SceneID, RainID: r.RainID, Stage: child.Stage, OpenTime: rain.Start.UnixMilli(),
		}})
		// A new grant is never Legacy: its limit key is the current one
		// (ledger.Grant.LimitKey), built with the others in one buffer.
		g := &items[len(items)-1].g
		keys = tokens.AppendLimitKey(keys, g.ActID, g.ActivityID, g.SceneID, g.RainID, g.Stage)
		sc.keyEnds = append(sc.keyEnds, len(keys))
	}
	sc.items, sc.keys = items, keys
	if len(items) > 0 {
		// One string for the request's limit keys, not one per grant.
		all, start := string(keys), 0
		for k, end := range sc.keyEnds {
			items[k].limitKey, start = all[start:end], end
		}
		a.enqueue(items, sc)
	}
}

// admitScratch is what one Admit needs besides its answers, reused across
// requests: a batch of 100 grants allocated ~35 KB of it each time. It
// goes back to the pool only after every item was answered, so no shard
// holds an item of it then.
type admitScratch struct {
	pubs    []*campaign.Published
	apps    []uint32
	users   []string
	bind    []int
	ids     []uint64
	items   []item
	keys    []byte // the items' limit keys, back to back
	keyEnds []int
	byShard [][]*item // per shard, the items it takes
}

func (a *Admission) getScratch(n int) *admitScratch {
	sc, _ := a.scratch.Get().(*admitScratch)
	if sc == nil {
		sc = &admitScratch{byShard: make([][]*item, len(a.shards))}
	}
	sc.pubs = append(sc.pubs, make([]*campaign.Published, n)...)
	return sc
}

// putScratch empties sc and pools it. It does not zero what sc held:
// every use writes its elements whole (appends, or getScratch's zeroed
// pubs) before reading them, and zeroing ~35 KB of items per request here
// was 2.7% of a node's CPU in a burst of repeats. Until it is used again
// (or the pool drops it at a collection) a pooled scratch keeps its last
// request's strings alive: a few requests' worth per processor.
func (a *Admission) putScratch(sc *admitScratch) {
	for p := range sc.byShard {
		sc.byShard[p] = sc.byShard[p][:0]
	}
	sc.pubs, sc.apps, sc.users, sc.bind, sc.ids = sc.pubs[:0], sc.apps[:0], sc.users[:0], sc.bind[:0], sc.ids[:0]
	sc.items, sc.keys, sc.keyEnds = sc.items[:0], sc.keys[:0], sc.keyEnds[:0]
	a.scratch.Put(sc)
}

// enqueue hands items to their shards (one lock per shard per request) and
// waits until every one is answered.
func (a *Admission) enqueue(items []item, sc *admitScratch) {
	n := int64(len(items))
	if a.inFlight.Add(n) > a.inFlightMax {
		a.inFlight.Add(-n)
		for i := range items {
			*items[i].res = Result{Outcome: Shed}
		}
		return
	}
	a.inFlightMet.Add(n)
	t := &ticket{done: make(chan struct{})}
	t.left.Store(n)
	// Group by shard so that each shard's queue is locked once; a shard's
	// items stay in request order.
	byShard := sc.byShard
	for i := range items {
		it := &items[i]
		it.t = t
		p := a.stream.Partition(it.g.ActID)
		byShard[p] = append(byShard[p], it)
	}
	for p, its := range byShard {
		if len(its) > 0 {
			a.shards[p].push(its)
		}
	}
	<-t.done
	a.inFlight.Add(-n)
	a.inFlightMet.Add(-n)
}

// count adds a request's outcomes to the metrics, once per outcome.
func (a *Admission) count(res []Result) {
	var n [outcomeCount]int64
	for i := range res {
		n[res[i].Outcome]++
	}
	for o, c := range n {
		if c > 0 {
			a.outcomes[o].Add(c)
		}
	}
}
