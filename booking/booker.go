package booking

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"

	"redrain/ledger"
	"redrain/metrics"
	"redrain/storage"
)

// Group is the default name of the consumer group of every node's booking
// (`serve --booking-group` names another: Config.GroupID).
const Group = "redrain-booking"

// bookBatchMax bounds the grants one unit applies and one transaction
// commits.
const bookBatchMax = 4096

// committers is how many transactions a node commits at once: each commits
// the units of its share of the partitions (p % committers), so that while
// one waits on the store another prepares or commits. Their keys never
// overlap (hot details are keyed by start timestamp).
const committers = 2

// While the grant path is busy, booking sleeps bookYieldRatio times the
// time it committed since its last pause, at most bookYieldMax at once,
// unless the oldest grant it is about to commit was issued more than
// Config.LagMax ago: then it books flat out until it has caught up, so
// that under a sustained rate it keeps up instead of lagging for good.
const (
	bookYieldRatio = 3
	bookYieldMax   = 500 * time.Millisecond
)

// DefaultLagMax is Config.LagMax when it is zero. Measured on two cores
// (bench --batch 100 --duration 10s, two rounds each): with a 1 s bound the
// node accepted 107k grants/s and drained 3.4-6.5 s after the burst;
// without one (booking always gave way) 147-158k/s, draining 11.8-14.4 s
// after.
const DefaultLagMax = time.Second

// Booker books the grant topic: it owns the accounts of the partitions the
// consumer group gives it, and commits every owned partition's units in
// shared transactions.
type Booker struct {
	log    *slog.Logger
	tikv   *storage.TiKV
	clock  func() time.Time
	parts  int32
	owner  string
	lagMax time.Duration
	wait   time.Duration // Config.UncleanWait
	// sweepEvery: a partition sweeps its pages after a commit settles
	// once this long passed since its last sweep (0: only on its loop's
	// tick; tests that sweep themselves).
	sweepEvery time.Duration

	Booked    *metrics.Counter // grants newly booked
	Moved     *metrics.Counter // moves booked (MoveApplied)
	Conflicts *metrics.Counter
	Batches   *metrics.Counter
	BatchTime *metrics.Histogram
	Keys      *metrics.Counter // keys written by booking transactions
	Pages     *metrics.Counter // pages written by checkpoints
	// Frozen and Thawed count account pages frozen (kept encoded, out of
	// the collector's sight) and thawed again (frozen.go).
	Frozen, Thawed *metrics.Counter
	Yielded        *metrics.Counter // nanoseconds booking paused for the grant path
	// OwnerReads and OwnerReadsMissed count Accounts' reads of a partition
	// owned elsewhere answered by its owner, and those that went to the
	// store after the owner could not answer.
	OwnerReads       *metrics.Counter
	OwnerReadsMissed *metrics.Counter
	// IssueToBooked is the time from each grant's issue (its record's
	// issued_at) to the commit that booked it.
	IssueToBooked *metrics.Histogram

	// fencedGrants counts grants refused under fenced leases.
	fencedGrants *metrics.Counter

	brokers   []string
	topic     string               // Config.Topic
	groupID   string               // Config.GroupID
	group     sarama.ConsumerGroup // Config.Group
	onBooked  atomic.Pointer[func([]ledger.Op)]
	onJournal atomic.Pointer[func(part int32, seq uint64, bookedAt int64, ops []ledger.Op)]
	// joined: a session of the group began at least once (the member has
	// its assignment, perhaps empty).
	joined   atomic.Bool
	onMoved  atomic.Pointer[func([]ledger.Move)]
	owners   atomic.Pointer[Owners] // nil: reads of partitions owned elsewhere go to the store
	busy     atomic.Pointer[func() bool]
	hold     atomic.Pointer[func() bool] // HoldStream
	sessions Sessions                    // nil: nobody listens
	// tail returns the end of a grant topic partition (its high-water
	// mark); nil (tests that feed partitions by hand): 0.
	tail func(p int32) (int64, error)
	// commits are the committers' queues; partition p sends its units to
	// commits[p % committers].
	commits []chan *unit

	mu     sync.Mutex
	owned  map[int32]*owned
	broken error
	// stuck holds, per partition, why it waits at a record it cannot read
	// (until an operator parks it).
	stuck map[int32]error
}

// owned is a partition this node books now.
type owned struct {
	p      *part
	tenure *Tenure
	gone   chan struct{} // closed when its goroutine stopped
	// err is why a broken money invariant stopped it, set before gone is
	// closed; nil when it gave the partition up.
	err error
}

// Config wires a booker.
type Config struct {
	Log        *slog.Logger
	TiKV       *storage.TiKV
	Brokers    []string
	Partitions int32
	Metrics    *metrics.Registry
	Clock      func() time.Time
	Owner      string // node id and incarnation, recorded with each epoch
	// LagMax bounds the age of the oldest unbooked grant while booking
	// gives way to a busy grant path (0: DefaultLagMax; negative: it never
	// gives way).
	LagMax time.Duration
	// Group and Tail stand in for the Kafka consumer group and the
	// topic's end (the simulation's log); nil: sarama on Brokers.
	Group sarama.ConsumerGroup
	Tail  func(part int32) (int64, error)
	// UncleanWait is how long a node that takes a partition over from an
	// owner that did not release it (killed, paused, cut off) waits before
	// it reads the topic's end and tells Sessions: a record that owner
	// started may land until then. 0 when no other process can have
	// owned the partition (a node alone on its embedded broker).
	UncleanWait time.Duration
	// Topic is the grant topic's name ("": storage.GrantTopic) and GroupID
	// the consumer group's ("": Group); every node of a cluster names the
	// same.
	Topic   string
	GroupID string
}

// New builds a booker; Run starts it.
func New(cfg Config) *Booker {
	m := cfg.Metrics
	commits := make([]chan *unit, committers)
	for i := range commits {
		commits[i] = make(chan *unit, max(cfg.Partitions, 1)*resultsMax)
	}
	return &Booker{
		commits: commits,
		log:     cfg.Log, tikv: cfg.TiKV, clock: cfg.Clock,
		parts: cfg.Partitions, owner: cfg.Owner, brokers: cfg.Brokers, lagMax: cmp.Or(cfg.LagMax, DefaultLagMax), wait: cfg.UncleanWait,
		topic: cmp.Or(cfg.Topic, storage.GrantTopic), groupID: cmp.Or(cfg.GroupID, Group),
		group: cfg.Group, tail: cfg.Tail, sweepEvery: sweepEvery,
		owned:            map[int32]*owned{},
		Booked:           m.Counter("redrain_grants_booked_total", "Grants booked into the ledger by this node."),
		Moved:            m.Counter("redrain_moves_booked_total", "Moves (spending, transfers, expiry, withdrawals' steps) booked into the ledger by this node."),
		Conflicts:        m.Counter("redrain_booking_conflicts_total", "Booking transactions retried after a write conflict."),
		Yielded:          m.SecondsCounter("redrain_booking_yielded_seconds_total", "Time booking paused to let a busy grant path run first."),
		Batches:          m.Counter("redrain_booking_batches_total", "Booking transactions committed."),
		BatchTime:        m.Histogram("redrain_booking_batch_seconds", "Time to commit one booking transaction.", metrics.LatencyBounds),
		Keys:             m.Counter("redrain_booking_keys_written_total", "Keys written by booking transactions (journals, pages, partition states, hot details)."),
		Pages:            m.Counter("redrain_booking_pages_written_total", "Account pages written by checkpoints."),
		Frozen:           m.Counter("redrain_booking_pages_frozen_total", "Account pages an owner froze: kept encoded in memory, untouched and clean for a sweep interval."),
		Thawed:           m.Counter("redrain_booking_pages_thawed_total", "Frozen account pages an owner thawed to read or change an account."),
		OwnerReads:       m.Counter("redrain_booking_owner_reads_total", "Reads of accounts owned by another node answered by that node."),
		OwnerReadsMissed: m.Counter("redrain_booking_owner_reads_missed_total", "Reads of accounts owned by another node that went to the store because the owner could not answer."),
		IssueToBooked:    m.Histogram("redrain_grant_issue_to_booked_seconds", "Time from a grant's issue to the commit that booked it.", metrics.IssueBounds),
		fencedGrants:     m.Counter("redrain_booking_fenced_grants_total", "Grants booking refused because their budget lease was fenced (reclaimed): written by a holder after its lease expired, never answered."),
	}
}

// Joined reports whether a session of the booking group began: the
// member holds the partitions the group assigned it. A member's join
// ends a rebalance of every member; until then the partitions (and the
// grant shards that follow them) may all still move.
func (b *Booker) Joined() bool { return b.joined.Load() }

// Broken reports the error that stopped booking, if any.
func (b *Booker) Broken() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.broken != nil {
		return b.broken
	}
	if len(b.stuck) == 0 {
		return nil
	}
	part := slices.Min(slices.Collect(maps.Keys(b.stuck)))
	return fmt.Errorf("partition %d stuck (park the record to go on: redrain admin park): %w", part, b.stuck[part])
}

// setStuck records why part waits at a record, or that it does not (nil).
func (b *Booker) setStuck(part int32, why error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if why == nil {
		delete(b.stuck, part)
		return
	}
	if b.stuck == nil {
		b.stuck = map[int32]error{}
	}
	b.stuck[part] = why
	b.log.Error("booking: partition stuck at a record it cannot read; park it to go on", "partition", part, "err", why)
}

// Claims returns the partitions this node books now.
func (b *Booker) Claims() []int32 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Sorted(maps.Keys(b.owned))
}

// YieldWhile makes booking give way while busy() says the grant path is
// busy (see bookYieldRatio).
func (b *Booker) YieldWhile(busy func() bool) { b.busy.Store(&busy) }

// HoldStream makes the partitions stop reading the grant topic while
// hold() says so: the grants issued meanwhile stay outstanding (the
// benchmark of withdrawals that book their user's packets themselves).
// Book and Move still book; a held partition is not stuck (the node stays
// ready, its booking lag grows). Each partition asks hold whenever its
// loop wakes, at least every ckptEvery/4.
func (b *Booker) HoldStream(hold func() bool) { b.hold.Store(&hold) }

// streamHeld reports whether HoldStream holds the stream now.
func (b *Booker) streamHeld() bool {
	h := b.hold.Load()
	return h != nil && (*h)()
}

// OnBooked sets f to be called with the ops of every committed unit (and
// of every journal caught up with): its OpBook and OpAttribute ops are the
// grants it newly booked or attributed; f skips the other kinds. f must
// not block, nor keep ops.
func (b *Booker) OnBooked(f func([]ledger.Op)) { b.onBooked.Store(&f) }

// OnJournal sets f to be called, after OnBooked's, with each journal the
// report to OnBooked came from: its partition, seq, booking time and ops
// (the same slice), in the order the partition committed them. f must not
// change the ops.
func (b *Booker) OnJournal(f func(part int32, seq uint64, bookedAt int64, ops []ledger.Op)) {
	b.onJournal.Store(&f)
}

// OnMoved sets f to be called with the moves this node booked once they
// are committed (through its owners or into the store), with the legs
// they booked. f must not block. Moves booked by other nodes reach
// readers through the journals (the wallet's Feed).
func (b *Booker) OnMoved(f func([]ledger.Move)) { b.onMoved.Store(&f) }

// reportMoves counts booked moves and hands them to OnMoved.
func (b *Booker) reportMoves(ms []ledger.Move) {
	if len(ms) == 0 {
		return
	}
	b.Moved.Add(int64(len(ms)))
	if f := b.onMoved.Load(); f != nil {
		(*f)(ms)
	}
}

// Run consumes the grant topic as a member of the booking group until ctx
// ends.
func (b *Booker) Run(ctx context.Context) error {
	group := b.group
	if group == nil {
		var closeAll func()
		var err error
		if group, closeAll, err = b.kafkaGroup(); err != nil {
			return err
		}
		defer closeAll()
	}
	// The committers outlive the partitions: a partition that stops (here,
	// the node stopping) waits for the answers to the units it sent before
	// it writes its release (awaitPending), as after a rebalance. Stopped
	// with it, they left every partition waiting releaseTimeout and each
	// stop took 5 s longer. They end once Consume has returned, which is
	// after every partition's goroutine did.
	commitCtx, stopCommits := context.WithCancel(context.WithoutCancel(ctx))
	defer stopCommits()
	for _, ch := range b.commits {
		go b.commitLoop(commitCtx, ch)
	}
	go b.confirmLoop(ctx)
	h := &handler{b: b}
	for ctx.Err() == nil {
		if err := group.Consume(ctx, []string{b.topic}, h); err != nil && ctx.Err() == nil {
			b.log.Warn("booking: consume", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
	return nil
}

// fetchMinBytes and fetchWait: what a booking fetch waits for
// (BENCHMARKS.md, *Fetches that wait*).
const (
	fetchMinBytes = 64 << 10
	fetchWait     = 100 * time.Millisecond
)

// kafkaGroup joins the booking group on the brokers and reads the topic's
// end through a client of its own.
func (b *Booker) kafkaGroup() (sarama.ConsumerGroup, func(), error) {
	cfg := storage.SaramaConfig("redrain-booker")
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	// The booked offset is in the store, written with each journal: Kafka's
	// offsets only say where to start reading, so they commit lazily.
	cfg.Consumer.Offsets.AutoCommit.Enable = true
	cfg.Consumer.Offsets.AutoCommit.Interval = time.Second
	cfg.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategySticky()}
	cfg.Consumer.Group.Session.Timeout = 10 * time.Second
	// After members die, a rebalance waits for them up to this long before
	// the survivors (or restarted nodes) get their partitions.
	cfg.Consumer.Group.Rebalance.Timeout = 15 * time.Second
	cfg.Consumer.Group.Heartbeat.Interval = time.Second
	cfg.Consumer.Fetch.Default = 4 << 20
	// A fetch waits for fetchMinBytes or fetchWait, whichever comes
	// first, instead of returning with the first record that lands: at a
	// paced rate each fetch then brings several records per partition, so
	// a unit books more grants, and the node (and the broker) answers
	// fewer fetches. 64 KiB is ~20 ms of records at 40k grants/s; the
	// wait bounds what a slow rate adds to issue→booked, and is long
	// enough that an idle node's empty fetches cost little (each one
	// wakes every partition's consumer: at 20 ms an idle node spent twice
	// the CPU it does).
	cfg.Consumer.Fetch.Min = fetchMinBytes
	cfg.Consumer.MaxWaitTime = fetchWait
	cfg.Consumer.Return.Errors = false
	group, err := sarama.NewConsumerGroup(b.brokers, b.groupID, cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: consumer group: %v", storage.ErrUnavailable, err)
	}
	client, err := sarama.NewClient(b.brokers, storage.SaramaConfig("redrain-booker-tail"))
	if err != nil {
		group.Close()
		return nil, nil, fmt.Errorf("%w: kafka client: %v", storage.ErrUnavailable, err)
	}
	b.tail = func(p int32) (int64, error) {
		off, err := client.GetOffset(b.topic, p, sarama.OffsetNewest)
		if err != nil {
			return 0, fmt.Errorf("%w: offset: %v", storage.ErrUnavailable, err)
		}
		return off, nil
	}
	return group, func() { client.Close(); group.Close() }, nil
}

type handler struct{ b *Booker }

func (h *handler) Setup(sarama.ConsumerGroupSession) error   { h.b.joined.Store(true); return nil }
func (h *handler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

// ConsumeClaim owns one partition for the session: it takes the partition
// over, then applies what arrives and what redeem asks, one unit at a time,
// while earlier units commit.
func (h *handler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	h.b.own(sess.Context(), sess, claim.Partition(), claim.Messages())
	return nil
}

// own takes partition id over and books what msgs delivers until ctx ends,
// the partition is fenced, or a money invariant stops it. sess marks
// booked messages (nil: nothing to mark, as in tests that feed msgs).
func (b *Booker) own(ctx context.Context, sess sarama.ConsumerGroupSession, id int32, msgs <-chan *sarama.ConsumerMessage) {
	var p *part
	for {
		var err error
		at := monoNow()
		if p, err = b.takeOver(ctx, id); err == nil {
			p.tenure = &Tenure{Partition: id, epoch: p.epoch}
			p.tenure.confirm(at)
			break
		}
		if ctx.Err() != nil {
			return
		}
		if isMoneyErr(err) {
			b.stop(ctx, "partition does not load", id, err)
			return
		}
		b.log.Warn("booking: taking partition over", "partition", id, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
	o := &owned{p: p, tenure: p.tenure, gone: make(chan struct{})}
	p.gone = o.gone
	b.mu.Lock()
	b.owned[p.id] = o
	b.mu.Unlock()
	stopped := false
	defer func() {
		b.setStuck(p.id, nil) // the next owner meets the record again
		p.tenure.ended.Store(true)
		if p.told && b.sessions != nil {
			b.sessions.Lost(p.tenure)
		}
		if !stopped && p.target >= 0 {
			// The grant path decides nothing for the partition here any
			// more and none of its records can still land, nor can an
			// earlier owner's (the wait for them is over: target was read
			// after it): the next owner need not wait.
			p.awaitPending(releaseTimeout)
			b.release(p)
		}
		b.mu.Lock()
		if b.owned[p.id] == o {
			delete(b.owned, p.id)
		}
		b.mu.Unlock()
		if !stopped {
			close(o.gone)
		}
	}()
	p.tellOwned()
	err := p.run(ctx, sess, msgs)
	switch {
	case err == nil || ctx.Err() != nil:
	case errors.Is(err, errFenced):
		b.log.Warn("booking: partition fenced; another node owns it now", "partition", p.id, "err", err)
	default:
		// The partition stays claimed until the session ends, but nothing
		// serves it: a redeem of its users gets the error at once rather
		// than waiting on the stopped goroutine.
		o.err = fmt.Errorf("booking stopped at partition %d: %w", p.id, err)
		stopped = true
		close(o.gone)
		b.stop(ctx, "money invariant broken", p.id, err)
	}
}

// run runs the partition's loop; a panic in it stops the partition like
// a broken money invariant (its memory can no longer be trusted), with the
// stack logged.
func (p *part) run(ctx context.Context, sess sarama.ConsumerGroupSession, msgs <-chan *sarama.ConsumerMessage) (err error) {
	defer func() {
		if r := recover(); r != nil {
			p.b.log.Error("booking: partition panicked", "partition", p.id, "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("booking: partition %d panicked: %v", p.id, r)
		}
	}()
	return p.loop(ctx, sess, msgs)
}

// loop is the partition's goroutine.
func (p *part) loop(ctx context.Context, sess sarama.ConsumerGroupSession, msgs <-chan *sarama.ConsumerMessage) error {
	tick := time.NewTicker(ckptEvery / 4)
	defer tick.Stop()
	grants := make([]ledger.Grant, 0, bookBatchMax)
	for {
		held := p.b.streamHeld()
		if p.stuck == nil && !held && len(p.held) > 0 && len(p.pending) < pipelineDepth {
			// Records taken after one that was parked since.
			m := p.held[0]
			p.held = p.held[1:]
			var err error
			if grants, err = p.gather(ctx, sess, m, msgs, grants[:0]); err != nil {
				return err
			}
			continue
		}
		in, ops := msgs, p.ops
		if len(p.pending) >= pipelineDepth {
			in, ops = nil, nil
		}
		if p.stuck != nil || held {
			in = nil
		}
		select {
		case <-ctx.Done():
			return nil
		case r := <-p.results:
			if err := p.settle(ctx, sess, r); err != nil {
				return err
			}
		case r := <-p.reads:
			p.read(r)
		case req := <-ops:
			u := p.newUnit()
			u.req = req
			if err := p.send(ctx, u); err != nil {
				req.done <- err
				return err
			}
		case <-tick.C:
			p.tellOwned()
			p.sweep()
			if err := p.refresh(ctx); err != nil {
				return err
			}
			if m := p.stuck; m != nil && p.stuckWhy != nil && !p.marked {
				p.markStuck(ctx, m.Offset, p.stuckWhy)
			}
			if m := p.stuck; m != nil && len(p.pending) < pipelineDepth && p.parked(ctx, m.Offset) {
				p.stuck, p.stuckWhy, p.marked = nil, nil, false
				p.b.setStuck(p.id, nil)
				if _, err := ledger.DecodeGrantRecord(nil, m.Value); err == nil {
					p.skip = m.Offset // parked for what its grants broke
				}
				var err error
				if grants, err = p.gather(ctx, sess, m, msgs, grants[:0]); err != nil {
					return err
				}
			}
			if len(p.pending) < pipelineDepth && p.ckptDue() {
				if err := p.send(ctx, p.newUnit()); err != nil {
					return err
				}
			}
		case m, ok := <-in:
			if !ok {
				return nil
			}
			if p.b.streamHeld() { // held since the loop last looked: kept for after the hold
				p.held = append(p.held, m)
				continue
			}
			var err error
			if grants, err = p.gather(ctx, sess, m, in, grants[:0]); err != nil {
				return err
			}
		}
	}
}

// gather decodes what has arrived from m on (records held back first),
// up to bookBatchMax grants, and sends it as one unit. Records below the
// booked offset were booked by an earlier owner and are skipped.
func (p *part) gather(ctx context.Context, sess sarama.ConsumerGroupSession, m *sarama.ConsumerMessage, in <-chan *sarama.ConsumerMessage, grants []ledger.Grant) ([]ledger.Grant, error) {
	var first, last *sarama.ConsumerMessage
	var bad error
	var refused []pageWrite
	var recs []*sarama.ConsumerMessage // the records of the unit, in order
	var ends []int                     // where each one's grants end in grants
	for {
		if m.Offset >= p.next.Booked {
			var err error
			n0 := len(grants)
			switch {
			case m.Offset == p.skip:
				p.b.log.Warn("booking: skipped a parked record (its grants broke a money check)", "partition", p.id, "offset", m.Offset)
			default:
				if grants, err = ledger.DecodeGrantRecord(grants, m.Value); err != nil {
					if !p.parked(ctx, m.Offset) {
						// Stuck: nothing after it is booked until an operator
						// parks it (Park); the loop asks again every tick.
						p.stuck = m
						bad = fmt.Errorf("undecodable grant record at offset %d: %w", m.Offset, err)
						break
					}
					p.b.log.Warn("booking: skipped a parked record", "partition", p.id, "offset", m.Offset)
				}
			}
			if bad != nil {
				break
			}
			grants = p.refuseFenced(grants, n0, m.Offset, &refused)
			if first == nil {
				first = m
			}
			last = m
			recs, ends = append(recs, m), append(ends, len(grants))
		} else if sess != nil {
			sess.MarkMessage(m, "")
		}
		if len(grants) >= bookBatchMax {
			break
		}
		var ok bool
		if len(p.held) > 0 {
			m, ok, p.held = p.held[0], true, p.held[1:]
		} else {
			select {
			case m, ok = <-in:
			default:
			}
		}
		if !ok || m == nil {
			break
		}
	}
	// The records before an undecodable one hold acknowledged grants too:
	// they are booked before the partition waits.
	if last != nil {
		// The unit keeps the slice the records were decoded into (it may
		// be applied again after a failure) until it settles (recycle);
		// the next gather decodes into a spare one of at least its size (a
		// copy per unit was ~1.3% of a burst's samples).
		u := p.newUnit()
		u.grants = grants
		u.from, u.to, u.last, u.refused = first.Offset, last.Offset+1, last, refused
		next := p.grantSlice(len(grants))
		err := p.send(ctx, u)
		var ge *grantError
		if errors.As(err, &ge) {
			return next, p.holdAt(ctx, recs, ends, grants, refused, ge)
		}
		if err != nil {
			return next, err
		}
		grants = next
	}
	if bad != nil {
		p.b.setStuck(p.id, bad)
	}
	return grants, nil
}

// holdAt handles a unit of records in which grant ge.index cannot be
// booked (a broken money check, so a retry would break it again): the
// records before that grant's record are booked, the partition waits at
// that record as at an undecodable one, until an operator parks it, and
// the records after it are held back for then. Nothing of the unit was
// applied (apply rolls back on error).
func (p *part) holdAt(ctx context.Context, recs []*sarama.ConsumerMessage, ends []int, grants []ledger.Grant, refused []pageWrite, ge *grantError) error {
	k := 0
	for k < len(ends)-1 && ends[k] <= ge.index {
		k++
	}
	bad := recs[k]
	if k > 0 {
		u := p.newUnit()
		u.grants = slices.Clone(grants[:ends[k-1]])
		u.from, u.to, u.last = recs[0].Offset, bad.Offset, recs[k-1]
		for _, r := range refused {
			if bytes.Compare(r.key, storage.FencedKey(p.id, bad.Offset)) < 0 {
				u.refused = append(u.refused, r)
			}
		}
		if err := p.send(ctx, u); err != nil {
			return err // the records before it break a check on their own: not theirs to hold
		}
	}
	p.stuck, p.stuckWhy = bad, fmt.Errorf("grant record at offset %d breaks a money check: %w", bad.Offset, ge.err)
	p.held = append(slices.Clone(recs[k+1:]), p.held...)
	p.b.setStuck(p.id, p.stuckWhy)
	p.markStuck(ctx, bad.Offset, p.stuckWhy)
	return nil
}

// stop halts booking for good: the node reports it on /readyz, and it is
// never retried with the same memory. It returns when the session ends.
func (b *Booker) stop(ctx context.Context, why string, part int32, err error) {
	b.mu.Lock()
	b.broken = fmt.Errorf("%s at partition %d: %w", why, part, err)
	b.mu.Unlock()
	b.log.Error("booking stopped: "+why, "partition", part, "err", err)
	<-ctx.Done()
}

// commitLoop commits the units of every owned partition: what is waiting
// when a transaction ends goes into the next one (group commit across
// partitions, no timer).
func (b *Booker) commitLoop(ctx context.Context, commits <-chan *unit) {
	failed := map[*part]uint64{}
	var spent time.Duration
	for {
		var units []*unit
		select {
		case <-ctx.Done():
			return
		case u := <-commits:
			units = append(units, u)
		}
		n := units[0].size()
	fill:
		for n < bookBatchMax {
			select {
			case u := <-commits:
				units = append(units, u)
				n += u.size()
			default:
				break fill
			}
		}
		units = b.linger(ctx, commits, units, n)
		if !hasRedeem(units) { // a redeem is never paused for the grant path
			spent = b.yieldTo(ctx, spent, oldestIssue(units))
		}
		start := time.Now()
		b.commit(ctx, units, failed)
		spent += time.Since(start)
	}
}

// A transaction of fewer than lingerGrants grants waits up to
// commitLinger for more units first: at a low steady rate the units that
// wait when a transaction ends are small, and each transaction's fixed
// cost (its partition states, hot details, the store's two phases) fell
// on ~45 grants at 5k grants/s with a 5 ms wait; 50 ms makes it ~127 and
// costs ~60 ms of issue→booked, far inside its 1 s budget
// (BENCHMARKS.md, Commit linger). Up to a full transaction
// (bookBatchMax), not 1,024 grants: since a transaction goes to the store
// in one request (storage.CommitBatchBytes) the units waiting when one
// ends hold ~2,000 grants in a burst, and transactions of ~4,700 cost
// 0.92x the CPU per booked grant (the store's per-key work at commit:
// states read, locks read back, written again) for ~40 ms more
// issue→booked at p50 (BENCHMARKS.md, Transactions filled to a full
// batch). A redeem among them never waits.
const (
	lingerGrants = bookBatchMax
	commitLinger = 50 * time.Millisecond
)

// linger adds to units (holding n grants) what arrives within
// commitLinger, while they hold fewer than lingerGrants grants and no
// redeem.
func (b *Booker) linger(ctx context.Context, commits <-chan *unit, units []*unit, n int) []*unit {
	if n >= lingerGrants || hasRedeem(units) {
		return units
	}
	t := time.NewTimer(commitLinger)
	defer t.Stop()
	for n < lingerGrants {
		select {
		case u := <-commits:
			units = append(units, u)
			n += u.size()
			if u.req != nil {
				return units
			}
		case <-t.C:
			return units
		case <-ctx.Done():
			return units
		}
	}
	return units
}

// hasRedeem reports whether a redeem waits among units.
func hasRedeem(units []*unit) bool {
	for _, u := range units {
		if u.req != nil {
			return true
		}
	}
	return false
}

// oldestIssue is the earliest issued_at (unix ms) of the stream grants in
// units, 0 when they hold none.
func oldestIssue(units []*unit) int64 {
	var oldest int64
	for _, u := range units {
		for i := range u.grants {
			if at := u.grants[i].IssuedAt; at > 0 && (oldest == 0 || at < oldest) {
				oldest = at
			}
		}
	}
	return oldest
}

func (u *unit) size() int {
	if u.req != nil {
		return len(u.req.grants) + len(u.req.moves)
	}
	return max(len(u.grants), 1)
}

// yieldTo lets the grant path run first while it is busy: booking sleeps
// bookYieldRatio times what it spent since its last pause (at most
// bookYieldMax), so during a burst it lags and drains after.
func (b *Booker) yieldTo(ctx context.Context, spent time.Duration, oldest int64) time.Duration {
	busy := b.busy.Load()
	if busy == nil || spent <= 0 || !(*busy)() || b.lagMax < 0 {
		return spent
	}
	if oldest > 0 && b.clock().Sub(time.UnixMilli(oldest)) > b.lagMax {
		return 0 // behind: book flat out
	}
	pause := min(spent*bookYieldRatio, bookYieldMax)
	b.Yielded.Add(pause.Nanoseconds())
	select {
	case <-ctx.Done():
	case <-time.After(pause):
	}
	return 0
}

// errMoved reports that a partition's journal grew elsewhere since its
// owner last committed.
var errMoved = errors.New("booking: partition written elsewhere")

// errCheck aborts a transaction whose partitions failed their check.
var errCheck = errors.New("booking: partition check failed")

// commit writes units in one transaction. A partition whose stored state
// is not what its units expect (fenced, or written elsewhere) has its
// units failed and the others go on; a write conflict or an unavailable
// store is retried; a broken money check fails them all.
func (b *Booker) commit(ctx context.Context, units []*unit, failed map[*part]uint64) {
	fail := func(u *unit, err error) {
		if g, ok := failed[u.p]; !ok || u.gen > g {
			failed[u.p] = u.gen
		}
		u.p.answer(result{u: u, err: err})
	}
	live := units[:0]
	for _, u := range units {
		if g, ok := failed[u.p]; ok && u.gen <= g {
			u.p.answer(result{u: u, err: errMoved})
			continue
		}
		live = append(live, u)
	}
	for attempt := 0; len(live) > 0 && ctx.Err() == nil; attempt++ {
		start := time.Now()
		var bad map[*part]error
		keys := 0
		err := b.tikv.Update(ctx, func(txn storage.Txn) error {
			var err error
			if bad, err = checkParts(ctx, txn, live); err != nil {
				return err
			}
			if len(bad) > 0 {
				return errCheck
			}
			keys, err = writeUnits(txn, live)
			return err
		})
		switch {
		case errors.Is(err, errCheck):
			rest := live[:0]
			for _, u := range live {
				if e := bad[u.p]; e != nil {
					fail(u, e)
				} else {
					rest = append(rest, u)
				}
			}
			live = rest
		case err == nil:
			b.Batches.Inc()
			b.BatchTime.ObserveNs(time.Since(start).Nanoseconds())
			b.Keys.Add(int64(keys))
			b.committed(ctx, live)
			return
		case isMoneyErr(err):
			for _, u := range live {
				fail(u, err)
			}
			return
		default:
			if errors.Is(err, storage.ErrConflict) {
				b.Conflicts.Inc()
			} else {
				b.log.Warn("booking: commit failed; retrying", "err", err, "attempt", attempt)
			}
			select {
			case <-ctx.Done():
			case <-time.After(min(time.Duration(attempt+1)*20*time.Millisecond, time.Second)):
			}
		}
	}
}

// checkParts reads the state of every partition units write and reports
// those whose first unit does not find the epoch and journal seq it
// expects.
func checkParts(ctx context.Context, txn storage.Txn, units []*unit) (map[*part]error, error) {
	firsts := map[*part]*unit{}
	var keys [][]byte
	for _, u := range units {
		if firsts[u.p] == nil {
			firsts[u.p] = u
			keys = append(keys, storage.PartKey(u.p.id))
		}
	}
	raw, err := storage.BatchGet(ctx, txn, keys)
	if err != nil {
		return nil, err
	}
	bad := map[*part]error{}
	for p, u := range firsts {
		s, err := partStateOf(p.id, raw[string(storage.PartKey(p.id))])
		if err != nil {
			return nil, err
		}
		switch {
		case s.Epoch != u.epoch:
			bad[p] = fmt.Errorf("%w: epoch %d, ours %d", errFenced, s.Epoch, u.epoch)
		case s.NextSeq != u.first:
			bad[p] = fmt.Errorf("%w: journal at %d, ours at %d", errMoved, s.NextSeq-1, u.first-1)
		}
	}
	return bad, nil
}

// writeUnits writes units' journals, pages, partition states and one hot
// detail per budget in txn, after checking that their postings balance.
// It returns how many keys it wrote.
func writeUnits(txn storage.Txn, units []*unit) (int, error) {
	hot := map[string]*ledger.HotDetail{}
	assetOf := map[string]ledger.Asset{}
	moved := map[ledger.Asset]int64{}   // on the accounts, as the partitions computed it
	byMoves := map[ledger.Asset]int64{} // of that, the moves' legs
	// The moves' postings (a grant's pair, its budget's debit and its
	// user's credit, would balance by construction: grants are checked
	// by the two sums below).
	var postings ledger.Batch
	states := map[int32]*ledger.PartState{}
	keys := 0
	set := func(k, v []byte) error {
		keys++
		return txn.Set(k, v)
	}
	for _, u := range units {
		if u.journal != nil {
			if err := set(storage.JournalKey(u.p.id, u.state.NextSeq-1), u.journal); err != nil {
				return 0, err
			}
		}
		for _, w := range u.chunks {
			if err := set(w.key, w.value); err != nil {
				return 0, err
			}
		}
		for _, w := range u.refused {
			if err := set(w.key, w.value); err != nil {
				return 0, err
			}
		}
		for _, w := range u.pages {
			if err := set(w.key, w.value); err != nil {
				return 0, err
			}
		}
		for i := range u.ops {
			g := &u.ops[i].Grant
			switch u.ops[i].Kind {
			case ledger.OpBook:
				if err := hotOf(hot, g).Add(g); err != nil {
					return 0, err
				}
				assetOf[g.BudgetID] = g.Asset
			case ledger.OpAttribute:
				if err := hotOf(hot, g).Attribute(g); err != nil {
					return 0, err
				}
			}
		}
		for i := range u.moves {
			m := &u.moves[i]
			if m.Counter != "" {
				postings = ledger.MovePostings(postings, m)
			} else if err := ledger.CheckMove(m); err != nil {
				// Its legs balance among the user's money sub-accounts.
				return 0, err
			}
			for _, l := range m.Legs {
				// Not the budgets': what the moves took or gave.
				byMoves[l.Asset] += l.Amount
			}
			// An expiry into a budget's account returns to the budget:
			// one hot detail per budget and commit, folded like grants.
			if id, ok := strings.CutPrefix(m.Counter, "budget/"); ok && m.Kind == ledger.MoveExpire {
				h := hot[id]
				if h == nil {
					h = &ledger.HotDetail{BudgetID: id}
					hot[id] = h
				}
				var err error
				if h.Expired, err = ledger.Add(h.Expired, -m.Legs[0].Amount); err != nil {
					return 0, err
				}
			}
		}
		for _, d := range u.deltas {
			moved[d.Asset] += d.Amount
		}
		states[u.p.id] = &u.state
	}
	// Always on: a batch that does not balance is never written. Two
	// independent sums: what the accounts' balances moved, less the legs
	// of the moves booked, against what the budgets' hot accounts are
	// debited, per asset.
	if err := postings.Check(); err != nil {
		return 0, err
	}
	for asset, v := range byMoves {
		moved[asset] -= v
	}
	debited := map[ledger.Asset]int64{}
	for id, h := range hot {
		debited[assetOf[id]] += h.Amount
	}
	for _, asset := range slices.Sorted(maps.Keys(moved)) {
		if moved[asset] != debited[asset] {
			return 0, fmt.Errorf("%w: accounts moved %d %s, budgets debited %d", ledger.ErrUnbalanced, moved[asset], asset, debited[asset])
		}
		delete(debited, asset)
	}
	for asset, d := range debited {
		if d != 0 {
			return 0, fmt.Errorf("%w: budgets debited %d %s that no account received", ledger.ErrUnbalanced, d, asset)
		}
	}
	for id, s := range states {
		if err := set(storage.PartKey(id), ledger.AppendPartState(nil, s)); err != nil {
			return 0, err
		}
	}
	seq := uint32(0)
	for _, id := range slices.Sorted(maps.Keys(hot)) {
		if err := set(storage.HotKey(id, txn.StartTS(), seq), ledger.MarshalHotDetail(nil, hot[id])); err != nil {
			return 0, err
		}
		seq++
	}
	return keys, nil
}

func hotOf(hot map[string]*ledger.HotDetail, g *ledger.Grant) *ledger.HotDetail {
	h := hot[g.BudgetID]
	if h == nil {
		h = &ledger.HotDetail{BudgetID: g.BudgetID}
		hot[g.BudgetID] = h
	}
	return h
}

// committed reports committed units to their partitions and to OnBooked.
func (b *Booker) committed(ctx context.Context, units []*unit) {
	var moved []ledger.Move
	pages := 0
	now := b.clock().UnixMilli()
	for _, u := range units {
		u.reported.Store(true)
		b.report(u.p.id, u.state.NextSeq-1, u.bookedAt, u.ops) // a unit with ops wrote journal NextSeq-1
		moved = append(moved, u.moves...)
		b.Booked.Add(int64(u.booked))
		if u.req == nil {
			b.observeIssue(now, u.ops)
		}
		pages += len(u.pages)
		u.p.answer(result{u: u})
	}
	b.Pages.Add(int64(pages))
	b.reportMoves(moved)
}

// observeIssue records issue→booked for the grants ops booked: grants of
// one record share their issued_at, so one observation per run of them.
func (b *Booker) observeIssue(now int64, ops []ledger.Op) {
	var at, n int64
	flush := func() {
		if n > 0 && at > 0 {
			b.IssueToBooked.ObserveNsN(max(now-at, 0)*int64(time.Millisecond), n)
		}
	}
	for i := range ops {
		if ops[i].Kind != ledger.OpBook {
			continue
		}
		if t := ops[i].Grant.IssuedAt; t != at {
			flush()
			at, n = t, 0
		}
		n++
	}
	flush()
}

// report hands the ops of a committed unit or caught-up journal to
// OnBooked.
func (b *Booker) report(part int32, seq uint64, bookedAt int64, ops []ledger.Op) {
	if len(ops) == 0 {
		return
	}
	if f := b.onBooked.Load(); f != nil {
		(*f)(ops)
	}
	if f := b.onJournal.Load(); f != nil {
		(*f)(part, seq, bookedAt, ops)
	}
}

// answer hands a unit's result to its partition, unless the partition's
// goroutine has stopped.
func (p *part) answer(r result) {
	select {
	case p.results <- r:
	case <-p.gone:
	}
}

// Book books grants at once (redeem), exactly once per limit key, and
// returns one outcome per grant: through the owner of their partition when
// it is this node, or else straight into the store, where the owner's next
// commit finds the write and catches up.
func (b *Booker) Book(ctx context.Context, grants []ledger.Grant) ([]byte, error) {
	out := make([]byte, len(grants))
	byPart := map[int32][]int{}
	for i := range grants {
		p := storage.PartitionOf(grants[i].ActID, b.parts)
		byPart[p] = append(byPart[p], i)
	}
	for _, part := range slices.Sorted(maps.Keys(byPart)) {
		idx := byPart[part]
		sub := make([]ledger.Grant, len(idx))
		for j, i := range idx {
			sub[j] = grants[i]
		}
		outcomes, err := b.bookOwned(ctx, part, sub)
		if errors.Is(err, errNotOwned) {
			outcomes, err = b.bookElsewhere(ctx, part, sub)
		}
		if err != nil {
			return nil, err
		}
		for j, i := range idx {
			out[i] = outcomes[j]
		}
	}
	return out, nil
}

var errNotOwned = errors.New("booking: partition not owned here")

// ErrNotOwned is Fence's error on a node that does not book the partition.
var ErrNotOwned = errNotOwned

// Fence fences a lease on partition part, which this node books: from
// max(f.From, the next offset it books) on, the partition refuses and
// reports the lease's grants (a fence drawn earlier holds instead). It
// returns the fence that holds once the partition's state holds it in the
// store; ErrNotOwned when the partition is not booked here.
func (b *Booker) Fence(ctx context.Context, part int32, f ledger.Fence) (ledger.Fence, error) {
	o := b.ownedPart(part)
	if o == nil {
		return ledger.Fence{}, errNotOwned
	}
	req := &opsReq{done: make(chan error, 1), fence: &f}
	select {
	case o.p.ops <- req:
	case <-o.gone:
		return ledger.Fence{}, errNotOwned
	case <-ctx.Done():
		return ledger.Fence{}, ctx.Err()
	}
	select {
	case err := <-req.done:
		return f, err
	case <-o.gone:
		return ledger.Fence{}, errNotOwned
	case <-ctx.Done():
		return ledger.Fence{}, ctx.Err()
	}
}

func (b *Booker) ownedPart(part int32) *owned {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.owned[part]
}

// bookOwned asks this node's owner of the partition to book grants.
func (b *Booker) bookOwned(ctx context.Context, part int32, grants []ledger.Grant) ([]byte, error) {
	req := &opsReq{grants: grants, done: make(chan error, 1)}
	if err := b.askOwner(ctx, part, req); err != nil {
		return nil, err
	}
	return req.outcomes, nil
}

// askOwner hands req to this node's owner of the partition and waits
// until the unit that applied it committed (errNotOwned: no owner here).
func (b *Booker) askOwner(ctx context.Context, part int32, req *opsReq) error {
	o := b.ownedPart(part)
	if o == nil {
		return errNotOwned
	}
	select {
	case o.p.ops <- req:
	case <-o.gone:
		if o.err != nil {
			return o.err
		}
		return errNotOwned
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.done:
		return err
	case <-o.gone:
		// It may have committed: booking again elsewhere is exact either way.
		return errNotOwned
	case <-ctx.Done():
		return ctx.Err()
	}
}

// bookElsewhere books grants straight into the store, as a journal of
// their partition written by a node that does not own it.
func (b *Booker) bookElsewhere(ctx context.Context, part int32, grants []ledger.Grant) ([]byte, error) {
	u, err := b.applyElsewhereRetried(ctx, part, &opsReq{grants: grants})
	if err != nil {
		return nil, err
	}
	b.Booked.Add(int64(countOutcome(u.outcomes, BookedNow)))
	return u.outcomes, nil
}

// applyElsewhereRetried applies req in a transaction of its own
// (applyElsewhere), again while it conflicts.
func (b *Booker) applyElsewhereRetried(ctx context.Context, part int32, req *opsReq) (*unit, error) {
	var u *unit
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		err = b.tikv.Update(ctx, func(txn storage.Txn) error {
			var e error
			u, e = applyElsewhere(ctx, txn, b, part, req)
			return e
		})
		if !errors.Is(err, storage.ErrConflict) {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(attempt+1) * 5 * time.Millisecond):
		}
	}
	return u, err
}

// ErrMovesMax is Move's error for more moves than MovesMax at once.
var ErrMovesMax = errors.New("booking: too many moves at once")

// MovesMax bounds the moves of one Move call (one unit of a partition,
// one transaction when booked elsewhere).
const MovesMax = bookBatchMax

// Move books moves (issue 13: spending, transfers' halves, expiry,
// withdrawals' steps), exactly once per (account, key), and answers one
// result per move, in order: through this node's owner of each move's
// partition (applied in a unit with whatever else it holds, answered once
// that unit committed), or else straight into the store as a journal of
// the partition (the owner catches up). Moves of one partition apply in
// the order given, so a later move sees an earlier one's change. A move
// that is invalid whatever the account holds fails the whole call before
// anything is booked (an error wrapping ledger.ErrMoveInvalid). Any other
// error may come after the moves of some partitions were booked: the
// same call again is exact (those answer MoveRepeated), as is a move
// whose unit was applied again after a failed commit that had landed.
func (b *Booker) Move(ctx context.Context, moves []ledger.Move) ([]ledger.MoveResult, error) {
	if len(moves) > MovesMax {
		return nil, fmt.Errorf("%w: %d, at most %d", ErrMovesMax, len(moves), MovesMax)
	}
	byPart := map[int32][]int{}
	for i := range moves {
		if err := moves[i].Validate(); err != nil {
			return nil, err
		}
		p := storage.PartitionOf(moves[i].ActID, b.parts)
		byPart[p] = append(byPart[p], i)
	}
	out := make([]ledger.MoveResult, len(moves))
	for _, part := range slices.Sorted(maps.Keys(byPart)) {
		idx := byPart[part]
		sub := make([]ledger.Move, len(idx))
		for j, i := range idx {
			sub[j] = moves[i]
			sub[j].Legs = slices.Clone(moves[i].Legs) // the journal holds them
		}
		req := &opsReq{moves: sub, done: make(chan error, 1)}
		err := b.askOwner(ctx, part, req)
		results := req.results
		if errors.Is(err, errNotOwned) {
			var u *unit
			if u, err = b.applyElsewhereRetried(ctx, part, &opsReq{moves: sub}); err == nil {
				results = u.results
				b.reportMoves(u.moves)
			}
		}
		if err != nil {
			return nil, err
		}
		for j, i := range idx {
			out[i] = results[j]
		}
	}
	return out, nil
}

func countOutcome(out []byte, o byte) int {
	n := 0
	for _, v := range out {
		if v == o {
			n++
		}
	}
	return n
}

// applyElsewhere applies req's grants or moves to their partition's
// accounts as the store holds them and writes the journal in txn, as the
// owner would; the unit holds the outcomes and results.
func applyElsewhere(ctx context.Context, txn storage.Txn, b *Booker, id int32, req *opsReq) (*unit, error) {
	ids := make([]uint64, 0, len(req.grants)+len(req.moves))
	for i := range req.grants {
		ids = append(ids, req.grants[i].ActID)
	}
	for i := range req.moves {
		ids = append(ids, req.moves[i].ActID)
	}
	v, err := readAccounts(ctx, txn, id, ids)
	if err != nil {
		return nil, err
	}
	p := &part{b: b, id: id, epoch: v.state.Epoch, pages: map[uint64]*pageMem{},
		committed: *v.state, next: *v.state}
	p.putAll(v.accounts)
	u := p.newUnit()
	u.req = req
	if err := p.apply(u); err != nil {
		return nil, err
	}
	if u.journal == nil {
		return u, nil
	}
	_, err = writeUnits(txn, []*unit{u})
	return u, err
}

// Accounts returns the committed accounts of ids: from this node's owners
// of their partitions, from the owners on other nodes (ReadThrough), or
// from the store for the others. None is older than the store's as the
// call found it. An account read through another node does not know the
// limit keys of its archived entries (Booked on it errors; EntryOf and
// AllEntries read its chunks): loading them would read every chunk of a
// heavy user on each read, which is what asking the owner avoids.
func (b *Booker) Accounts(ctx context.Context, ids []uint64) (map[uint64]*ledger.Account, error) {
	out := make(map[uint64]*ledger.Account, len(ids))
	byPart := map[int32][]uint64{}
	for _, id := range ids {
		p := storage.PartitionOf(id, b.parts)
		byPart[p] = append(byPart[p], id)
	}
	var foreign []int32
	for part, pids := range byPart {
		o := b.ownedPart(part)
		if o == nil || o.p.readFrom(ctx, o.gone, &readReq{ids: pids}, out) != readServed {
			foreign = append(foreign, part)
		}
	}
	if o := b.owners.Load(); o != nil && len(foreign) > 0 {
		foreign = b.readThrough(ctx, *o, foreign, byPart, out)
	}
	if len(foreign) == 0 {
		return out, nil
	}
	var rest []uint64
	for _, part := range foreign {
		rest = append(rest, byPart[part]...)
	}
	err := b.tikv.View(func(txn storage.Txn) error {
		m, err := ReadAccounts(ctx, txn, b.parts, rest)
		maps.Copy(out, m)
		return err
	})
	return out, err
}

// readFrom asks the partition's goroutine for committed accounts (r.ids),
// copied into out, and returns readServed; otherwise the status the
// goroutine answered (r.at set), or readNotOwner when the partition is
// gone or ctx ended first.
func (p *part) readFrom(ctx context.Context, gone chan struct{}, r *readReq, out map[uint64]*ledger.Account) byte {
	r.out, r.done = map[uint64]*ledger.Account{}, make(chan struct{})
	select {
	case p.reads <- r:
	case <-gone:
		return readNotOwner
	case <-ctx.Done():
		return readNotOwner
	}
	select {
	case <-r.done:
		if r.at != nil && r.status != readServed {
			return r.status
		}
		maps.Copy(out, r.out)
		return readServed
	case <-gone:
		return readNotOwner
	case <-ctx.Done():
		return readNotOwner
	}
}

// HighWaterMarks returns the next offset of every partition of the grant
// topic named topic.
func HighWaterMarks(client sarama.Client, topic string) (map[int32]int64, error) {
	parts, err := client.Partitions(topic)
	if err != nil {
		return nil, fmt.Errorf("%w: partitions: %v", storage.ErrUnavailable, err)
	}
	return topicOffsets(client, topic, parts, sarama.OffsetNewest)
}

// topicOffsets asks each partition's leader for the offset at time
// (sarama.OffsetNewest or OffsetOldest) of topic's partitions parts: one
// request per broker, not one per partition (the node's lag, refreshed
// four times a second, asked 2 × partitions requests each time).
func topicOffsets(client sarama.Client, topic string, parts []int32, time int64) (map[int32]int64, error) {
	type ask struct {
		req   *sarama.OffsetRequest
		parts []int32
	}
	byBroker := map[*sarama.Broker]*ask{}
	for _, p := range parts {
		b, err := client.Leader(topic, p)
		if err != nil {
			return nil, fmt.Errorf("%w: leader of partition %d: %v", storage.ErrUnavailable, p, err)
		}
		a := byBroker[b]
		if a == nil {
			a = &ask{req: sarama.NewOffsetRequest(client.Config().Version)}
			byBroker[b] = a
		}
		a.req.AddBlock(topic, p, time, 1)
		a.parts = append(a.parts, p)
	}
	out := make(map[int32]int64, len(parts))
	for b, a := range byBroker {
		resp, err := b.GetAvailableOffsets(a.req)
		if err != nil {
			_ = b.Close() // as sarama's GetOffset: the next request reconnects
			return nil, fmt.Errorf("%w: offsets: %v", storage.ErrUnavailable, err)
		}
		for _, p := range a.parts {
			block := resp.GetBlock(topic, p)
			switch {
			case block == nil:
				return nil, fmt.Errorf("%w: offsets: no answer for partition %d", storage.ErrUnavailable, p)
			case !errors.Is(block.Err, sarama.ErrNoError):
				return nil, fmt.Errorf("%w: offset of partition %d: %v", storage.ErrUnavailable, p, block.Err)
			case len(block.Offsets) != 1:
				return nil, fmt.Errorf("%w: offset of partition %d: %d offsets", storage.ErrUnavailable, p, len(block.Offsets))
			}
			out[p] = block.Offsets[0]
		}
	}
	return out, nil
}

// LagOf returns, per partition, the records of the grant topic named topic
// that the store does not hold booked yet (a partition's booked offset is
// written with its journal, so this is exact; Kafka's group offsets lag
// behind it).
func LagOf(ctx context.Context, client sarama.Client, topic string, tikv *storage.TiKV) (map[int32]int64, error) {
	hwm, err := HighWaterMarks(client, topic)
	if err != nil {
		return nil, err
	}
	booked, err := Booked(ctx, tikv, int32(len(hwm)))
	if err != nil {
		return nil, err
	}
	parts := slices.Collect(maps.Keys(hwm))
	oldest, err := topicOffsets(client, topic, parts, sarama.OffsetOldest)
	if err != nil {
		return nil, err
	}
	lag := make(map[int32]int64, len(hwm))
	for p, h := range hwm {
		lag[p] = max(h-max(booked[p], oldest[p]), 0)
	}
	return lag, nil
}
