package grant

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"redrain/ledger"
	"redrain/storage"
	"redrain/tokens"
)

// pendingMarkTTL bounds how long a claim whose record may or may not have
// landed blocks its user: after it, a retry issues again (the same token,
// by determinism). It outlives storage.WriteDeadline (checked in New), so
// a claim never expires while its record may still land.
const pendingMarkTTL = 30 * time.Second

// batchTimeout bounds a batch's lease waits.
const batchTimeout = 10 * time.Second

// shard admits the grants of one grant-topic partition. Its queue is the
// only state shared with callers; everything else belongs to its goroutine.
type shard struct {
	a  *Admission
	id int32

	mu      sync.Mutex
	queue   []*item
	stopped bool          // the goroutine has exited: push answers at once
	wake    chan struct{} // capacity 1: "the queue may hold something"
	ctl     chan func()   // work on the shard's own state (claims), run between batches
	bookedQ [][]Booked    // packets booking posted, for the claim table (owner only), as posted
	asks    []*ask        // Outstanding's questions, answered after the next batch (outstanding.go)
	exited  chan struct{} // closed when the goroutine returns

	// ownEpoch grows with every Own and Disown of the shard: a restore
	// started under an older one applies nothing.
	ownEpoch atomic.Uint64

	// Owned by the shard's goroutine.
	//
	// table is the in-process per-user limit when this node owns the
	// shard (nil: another node decides, and batches are forwarded to it).
	// tenure is booking's hold on the partition (nil: owned for life);
	// while restoring, the table is being filled from the store and
	// decides nothing yet.
	table     *claimTable
	tenure    Tenure
	restoring bool
	// remote is the forwarding address of the shard's owner as last read
	// from the store ("" unknown), at remoteAt.
	remote   string
	remoteAt time.Time
	body     []byte    // a forwarded batch, reused
	strs     strTable  // its strings, reused
	answers  []Result  // its answers, reused
	leads    leadTable // act_id -> its first lead in the batch being decided
	grants   []ledger.Grant
	amounts  []int64
	leases   []*activeLease
	errs     []error
	// Reused by every batch; they point into requests' items only while
	// the batch is decided (cleared when it ends).
	leadItems, fresh, pending, taken []*item
	groups                           []holderGroup
	keys                             []byte // a round's idempotency keys, back to back
	keyEnds                          []int
	touched                          uint16 // what claimInProcess's reads ahead read (kept, so they are not dropped)
}

// holderGroup is a batch's items that draw from one lease holder.
type holderGroup struct {
	h   *leaseHolder
	its []*item
}

func newShard(a *Admission, id int32, owner bool) *shard {
	s := &shard{a: a, id: id, wake: make(chan struct{}, 1), ctl: make(chan func()),
		exited: make(chan struct{})}
	if owner {
		s.table = newClaimTable()
	}
	return s
}

// pushBooked queues packets that booking posted; the goroutine applies
// them before its next batch. It never waits for the shard.
func (s *shard) pushBooked(gs []Booked) {
	// Taken as it is (MarkBooked's callers hand it over): appended into
	// one queue, the posts the goroutine had not drained yet were copied
	// (1.5% of a burst's samples).
	s.mu.Lock()
	s.bookedQ = append(s.bookedQ, gs)
	s.mu.Unlock()
	s.wakeUp()
}

// drainBooked applies the queued booked packets to the claim table (none
// when the shard is not owned here: its owner has them).
func (s *shard) drainBooked() {
	s.mu.Lock()
	qs := s.bookedQ
	s.bookedQ = nil
	s.mu.Unlock()
	if s.table != nil {
		for _, gs := range qs {
			s.booked(gs)
		}
	}
}

// call runs f on the shard's goroutine between batches (or here, once the
// goroutine has exited) and waits for it.
func (s *shard) call(f func()) {
	done := make(chan struct{})
	select {
	case s.ctl <- func() { f(); close(done) }:
		<-done
	case <-s.exited:
		f()
	}
}

// push appends a request's items for this shard and wakes its goroutine.
func (s *shard) push(its []*item) {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		for _, it := range its {
			*it.res = Result{Outcome: Unavailable, Err: errClosed}
		}
		s.finish(its)
		return
	}
	s.queue = append(s.queue, its...)
	s.mu.Unlock()
	s.wakeUp()
}

func (s *shard) wakeUp() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// run takes whatever the queue holds as one batch, again and again, until
// the admission closes and the queue is empty.
func (s *shard) run() {
	defer s.a.wg.Done()
	defer close(s.exited)
	var batch []*item
	var asks []*ask
	for {
		select {
		case <-s.wake:
			s.drainBooked()
		case f := <-s.ctl:
			s.drainBooked()
			f()
			continue
		}
		for {
			s.mu.Lock()
			batch, s.queue = s.queue, batch[:0]
			asks, s.asks = s.asks, asks[:0]
			s.mu.Unlock()
			if len(batch) == 0 && len(asks) == 0 {
				break
			}
			if len(batch) > 0 {
				s.process(batch)
				clear(batch)
			}
			// Asks taken with a batch are answered after it: a packet the
			// batch issued is outstanding to them.
			if len(asks) > 0 {
				s.drainBooked()
				s.answer(asks)
				clear(asks)
			}
		}
		if s.a.closing.Load() {
			s.mu.Lock()
			if len(s.queue) == 0 && len(s.asks) == 0 {
				s.stopped = true
				s.mu.Unlock()
				return
			}
			s.mu.Unlock()
			s.wakeUp()
		}
	}
}

// process decides one batch: claims, draws and leases, one record and
// the answers; or, when another node owns the shard, forwards it there.
func (s *shard) process(batch []*item) {
	a := s.a
	a.batchSize.Observe(int64(len(batch)))
	a.lastBatch.Store(time.Now().UnixNano())
	switch {
	case s.table == nil && s.a.peers != nil:
		s.forward(batch)
		s.finish(batch)
		return
	case s.table == nil, s.restoring, s.tenure != nil && !s.tenure.Valid():
		// Not owned here (and no peers to ask), still restoring, or a
		// tenure booking has not confirmed lately: another node may
		// decide these users now.
		for _, it := range batch {
			*it.res = Result{Outcome: Unavailable, Err: errMoving}
			if it.forwarded && s.table == nil {
				it.res.Err = ErrNotOwner
			}
		}
		s.finish(batch)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()

	// Duplicates inside the batch follow their first occurrence: found
	// among the leads of the same user (a table of act_ids sized for the
	// batch, each its first lead, the others chained by sameUser),
	// emptied before the batch is finished (once finished, the items are
	// their callers').
	leads := s.leadItems[:0]
	defer func() { clear(leads); s.leadItems = leads[:0] }()
	s.leads.size(len(batch))
	for _, it := range batch {
		at := s.leads.slot(it.g.ActID)
		first := *at
		dup := false
		for l := first; l != nil; l = l.sameUser {
			if l.limitKey == it.limitKey {
				it.lead, dup = l, true
				break
			}
		}
		if dup {
			continue
		}
		if first == nil {
			*at = it
		} else {
			it.sameUser, first.sameUser = first.sameUser, it
		}
		leads = append(leads, it)
	}

	if fresh := s.claimInProcess(leads); len(fresh) > 0 {
		s.issue(ctx, fresh)
		clear(fresh)
	}
	s.leads.empty()
	s.finish(batch)
}

// leadTable finds a batch's first lead of each user by act_id: open
// addressing over a slice at most half full, sized for the batch and
// emptied by clearing that much of it. A Go map emptied key by key cost
// ~4% of a node's samples in a burst of repeats (a lookup, an insert and
// a delete per grant); clearing a map instead costs its capacity, which
// one large batch would leave to every small one after it.
type leadTable struct {
	slots []*item
	shift uint8 // 64 - log2(len(slots)): an act_id's home is its Fibonacci hash's top bits
}

// size readies an empty table for a batch of n items.
func (t *leadTable) size(n int) {
	bits := uint8(4)
	for 1<<bits < 2*n {
		bits++
	}
	if cap(t.slots) < 1<<bits {
		t.slots = make([]*item, 1<<bits)
	}
	t.slots = t.slots[:1<<bits]
	t.shift = 64 - bits
}

// slot returns the slot of act's first lead: the lead, or the empty slot
// where it goes.
func (t *leadTable) slot(act uint64) **item {
	mask := uint64(len(t.slots) - 1)
	for i := (act * 0x9e3779b97f4a7c15) >> t.shift; ; i = (i + 1) & mask {
		if s := &t.slots[i]; *s == nil || (*s).g.ActID == act {
			return s
		}
	}
}

// empty drops every lead (the slots beyond the batch's size are empty
// already).
func (t *leadTable) empty() { clear(t.slots) }

// claimInProcess decides each lead from the shard's claim table and
// claims the new ones (pending), returning them. No I/O: the owner of a
// shard is the only one that decides its users.
func (s *shard) claimInProcess(leads []*item) []*item {
	a := s.a
	t0 := time.Now()
	nowMs := a.clock().UnixMilli()
	fresh := s.fresh[:0]
	var r *rainClaims
	last := "\x00" // no rain key is this
	// First every lead's rain and a read of its claim's place, then the
	// decisions: the reads do not wait on each other, so the processor
	// has many cache misses in flight at once (a table of millions of
	// users misses on most of them), where a decision per read waited
	// for each in turn.
	var touched uint16
	for _, it := range leads {
		if rk := rainOf(it.limitKey); rk != last {
			r, last = s.table.rain(rk), rk
		}
		it.rc = r
		touched += r.users.touch(it.g.ActID)
	}
	s.touched = touched
	var added int64
	for _, it := range leads {
		r := it.rc
		c, ok := r.users.get(it.g.ActID)
		switch {
		case !ok || (c.state == claimPending && nowMs >= c.amount):
			// Claimed for this batch without a write: only this goroutine
			// reads the table, and the batch ends with the claim issued,
			// pending until a deadline, no-award or given back (issue).
			if !ok {
				added++
			}
			fresh = append(fresh, it)
		case c.state == claimPending:
			*it.res = Result{Outcome: InProgress}
		case c.state == claimNoAward:
			*it.res = Result{Outcome: NoAward, Grant: it.g}
		default:
			s.setAward(it, r.awards[c.award], c.amount, c.app)
			*it.res = Result{Outcome: Repeat, Grant: it.g, Booked: c.state == claimBooked}
		}
	}
	a.claimed.Add(added)
	a.stageTime[stageClaim].ObserveNs(time.Since(t0).Nanoseconds())
	s.fresh = fresh
	return fresh
}

// setAward fills in a repeat's award from its mark, and the app of the
// first grant: a user bound in several apps gets the identical token
// through any of them.
func (s *shard) setAward(it *item, award string, amount int64, app uint32) {
	it.g.AwardType, it.g.Amount = award, amount
	if app != 0 {
		it.g.AppID = app
	}
	if w := it.child.Award(award); w != nil {
		it.g.Asset, it.g.BudgetID = w.Asset, w.BudgetID
	}
}

// issue draws and reserves every new grant, writes them as one record and
// answers them. Each has claimed its limit key; a definite failure gives
// the claim and the amount back, an uncertain one (the record may have
// landed) keeps both: the amount counts as issued and the claim expires.
func (s *shard) issue(ctx context.Context, fresh []*item) {
	a := s.a
	t0 := time.Now()
	for _, it := range fresh {
		if it.award = it.child.OnlyAward(); it.award == nil { // no hash for a seed PickAward ignores
			it.award = it.child.PickAward(ledger.DrawSeed(a.salt, it.limitKey))
		}
	}
	// Reserve per budget, once per batch. An award whose budget cannot pay
	// falls back along its chain (acyclic by validation, so this ends): to
	// another award, to "no award", or to budget_exhausted.
	pending := append(s.pending[:0], fresh...)
	defer func() { clear(pending[:cap(pending)]); s.pending = pending[:0] }()
	for len(pending) > 0 {
		// A new grant is never Legacy: its idempotency key is the current
		// one (ledger.Grant.IdempotencyKey), built with the round's others
		// in one buffer and one string.
		s.keys, s.keyEnds = s.keys[:0], s.keyEnds[:0]
		for _, it := range pending {
			w := it.award
			it.g.AwardType, it.g.Asset, it.g.BudgetID = w.Type, w.Asset, w.BudgetID
			g := &it.g
			s.keys = tokens.AppendIdempotencyKey(s.keys, g.ActID, g.ActivityID, g.SceneID, g.RainID, g.AwardType, g.Stage)
			s.keyEnds = append(s.keyEnds, len(s.keys))
		}
		keys, start := string(s.keys), 0
		groups := s.groups[:0]
		for k, it := range pending {
			w := it.award
			h := a.holder(w)
			lo, hi := w.Range(h.spentBP())
			it.g.Amount = ledger.Draw(ledger.DrawSeed(a.salt, keys[start:s.keyEnds[k]]), lo, hi)
			start = s.keyEnds[k]
			it.h = h
			groups = addToGroup(groups, h, it)
		}
		pending = pending[:0]
		for gi := range groups {
			its := groups[gi].its
			h := groups[gi].h
			s.amounts, s.leases, s.errs = s.amounts[:0], s.leases[:0], s.errs[:0]
			for _, it := range its {
				s.amounts = append(s.amounts, it.g.Amount)
			}
			s.leases = append(s.leases, make([]*activeLease, len(its))...)
			s.errs = append(s.errs, make([]error, len(its))...)
			h.takeBatch(ctx, s.amounts, s.leases, s.errs)
			for k, it := range its {
				err := s.errs[k]
				switch {
				case err == nil:
					it.lease = s.leases[k]
				case errors.Is(err, errExhausted) && it.award.FallbackTo != nil:
					it.award = it.award.FallbackTo
					pending = append(pending, it)
				case errors.Is(err, errExhausted) && it.award.NoAward:
					*it.res = Result{Outcome: NoAward, Grant: it.g}
					s.noAward(it)
				case errors.Is(err, errExhausted):
					*it.res = Result{Outcome: BudgetExhausted, Grant: it.g}
					s.unclaim(it)
				default:
					*it.res = Result{Outcome: Unavailable, Err: err}
					s.unclaim(it)
				}
			}
			clear(its)
			groups[gi].h = nil
		}
		s.groups = groups
	}
	a.stageTime[stageLease].ObserveNs(time.Since(t0).Nanoseconds())

	// One record for the batch (one clock read), one acknowledgement wait.
	t0 = time.Now()
	issuedAt := a.clock().UnixMilli()
	s.grants = s.grants[:0]
	taken := s.taken[:0]
	defer func() { clear(taken); s.taken = taken[:0] }()
	for _, it := range fresh {
		if it.lease == nil {
			continue
		}
		it.g.LeaseID, it.g.IssuedAt = it.lease.id, issuedAt
		s.grants = append(s.grants, it.g)
		taken = append(taken, it)
		s.claimIssued(it)
	}
	if len(taken) == 0 {
		return
	}
	records, err := a.stream.Append(s.id, s.grants)
	definite := errors.Is(err, storage.ErrStreamClosed) || errors.Is(err, storage.ErrNotSent)
	// A lease under which a grant may or may not have landed is marked
	// before the batch settles: settling a retired lease closes it, and a
	// holder must never close an uncertain lease at what it counted as
	// issued (the simulation found seeds where it did: closed at issued,
	// a grant that never landed counted in it for good).
	ackedAt := a.clock()
	var unsure *activeLease // the last lease marked uncertain: batches hold few
	for _, it := range taken {
		if (err != nil && !definite || err == nil && !it.lease.liveAt(ackedAt)) && it.lease != unsure {
			it.h.markUncertain(it.lease)
			unsure = it.lease
		}
	}
	s.settle(taken, err == nil || !definite)
	if records > 0 {
		a.records.Add(int64(records))
		a.perRecord.Observe(int64((len(taken) + records - 1) / records))
	}
	a.stageTime[stageStream].ObserveNs(time.Since(t0).Nanoseconds())
	for _, it := range taken {
		switch {
		case err == nil && !it.lease.liveAt(ackedAt):
			// Acknowledged after the lease's expiry as this node sees it
			// (a pause, a renewal that failed): another node may reclaim
			// the lease, so the grant is not answered under it. Its record
			// landed: booking books it unless the lease was fenced first,
			// and a retry finds the packet or draws again.
			*it.res = Result{Outcome: Unavailable, Err: errLeaseExpired}
			a.lateAcks.Add(1)
			s.uncertain(it)
		case err == nil:
			*it.res = Result{Outcome: Issued, Grant: it.g}
		case definite:
			// Nothing was sent: the reservation and the claim go back.
			*it.res = Result{Outcome: Unavailable, Err: err}
			s.unclaim(it)
		default:
			// The producer gave up, but the broker may have appended the
			// record before the failure reached us. Never give the amount
			// back on a guess (that could overspend): it counts as
			// issued, the claim expires, and booking marks it booked if
			// it landed.
			*it.res = Result{Outcome: Unavailable, Err: err}
			s.uncertain(it)
		}
	}
}

// addToGroup adds it to the group of h, a new one after the others when h
// has none yet: a batch draws from few holders, so a scan beats a map.
func addToGroup(groups []holderGroup, h *leaseHolder, it *item) []holderGroup {
	for i := range groups {
		if groups[i].h == h {
			groups[i].its = append(groups[i].its, it)
			return groups
		}
	}
	if len(groups) < cap(groups) { // reuse the group's slice of an earlier batch
		groups = groups[:len(groups)+1]
		g := &groups[len(groups)-1]
		g.h, g.its = h, append(g.its[:0], it)
		return groups
	}
	return append(groups, holderGroup{h: h, its: []*item{it}})
}

// settle ends the reservations of taken, per lease: acknowledged (or
// possibly landed) ones count as issued, the others give their amount back.
func (s *shard) settle(taken []*item, issued bool) {
	type key struct {
		h *leaseHolder
		l *activeLease
	}
	type sum struct {
		amount int64
		count  int
	}
	sums := map[key]*sum{}
	var order []key
	for _, it := range taken {
		k := key{it.h, it.lease}
		v := sums[k]
		if v == nil {
			v = &sum{}
			sums[k] = v
			order = append(order, k)
		}
		v.amount += it.g.Amount
		v.count++
	}
	for _, k := range order {
		v := sums[k]
		k.h.settleBatch(k.l, v.amount, v.count, issued)
	}
}

// claimIssued sets the claim of a grant whose record is about to be
// written to issued, before the acknowledgement, and a failure then sets
// it back (unclaim, uncertain). Nobody sees it early: only this goroutine
// reads the table, and it waits for the acknowledgement first. Written
// now, while the batch's claims are in cache, it costs no cache miss after
// the wait (~6% of BenchmarkAdmit's CPU).
func (s *shard) claimIssued(it *item) {
	g := &it.g
	award := it.rc.awardOf(g.AwardType)
	it.rc.users.set(g.ActID, claim{state: claimIssued, amount: g.Amount, app: g.AppID, award: award})
	it.rc.issued(g.ActID, award, g.Asset, g.BudgetID, g.OpenTime)
}

// noAward records that the user's packet for the rain is used up with
// nothing issued. Only the claim table holds it: after a restart (or a
// move of the shard) a retry draws again.
func (s *shard) noAward(it *item) {
	it.rc.users.set(it.g.ActID, claim{state: claimNoAward})
}

// uncertain keeps the claim of a grant whose record may have landed until
// the record surely has or has not: past storage.WriteDeadline. A retry
// before then is answered grant_in_progress; after it, the same packet is
// issued again and booking keeps one.
func (s *shard) uncertain(it *item) {
	it.rc.users.set(it.g.ActID, claim{state: claimPending, amount: s.a.clock().Add(pendingMarkTTL).UnixMilli()})
}

// unclaim gives back the claim of a grant that failed before its record
// was sent.
func (s *shard) unclaim(it *item) {
	it.rc.users.del(it.g.ActID)
	s.a.claimed.Add(-1)
}

// booked records packets that booking posted (or that the store holds, at
// start), so that repeats answer "booked".
func (s *shard) booked(gs []Booked) {
	var added int64
	for i := range gs {
		g := &gs[i]
		r := s.table.rain(g.Rain)
		c, ok := r.users.get(g.ActID)
		if !ok {
			added++
		} else if c.state == claimBooked {
			continue
		}
		app := c.app
		if c.state != claimIssued {
			app = g.AppID
		}
		r.users.set(g.ActID, claim{state: claimBooked, amount: g.Amount, app: app, award: r.awardOf(g.AwardType)})
	}
	s.a.claimed.Add(added)
}

// finish answers the batch: duplicates take their first occurrence's
// answer (a new packet is a repeat to them), and each request learns how
// many of its items are done, once per run of its items.
func (s *shard) finish(batch []*item) {
	for _, it := range batch {
		if it.lead == nil {
			continue
		}
		r := *it.lead.res
		if r.Outcome == Issued {
			r.Outcome = Repeat
		}
		*it.res = r
	}
	for i := 0; i < len(batch); {
		t, j := batch[i].t, i+1
		for j < len(batch) && batch[j].t == t {
			j++
		}
		t.finish(int64(j - i))
		i = j
	}
}
