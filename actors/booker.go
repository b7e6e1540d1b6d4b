package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pcluster "github.com/asynkron/protoactor-go/cluster"
	"github.com/redis/go-redis/v9"
	"github.com/tikv/client-go/v2/txnkv/transaction"

	"redrain/ledger"
	"redrain/metrics"
	"redrain/storage"
)

// BookingGroup is the consumer group of every node's booker.
const BookingGroup = "redrain-booking"

// bookBatchMax bounds the grants of one booking transaction. Measured while
// planning: the TiKV test cluster costs ~20-40 µs of CPU per key written, so
// booking writes one key per user plus one per budget per batch, and many
// grants share one transaction.
const bookBatchMax = 2048

// While the grant path is busy, booking sleeps bookYieldRatio times the
// time it booked since its last pause, at most bookYieldMax at once: it
// takes about a quarter of its loop's time during a burst, lags, and
// drains after. On two cores, booking flat out (~100 µs of CPU per grant
// in the embedded store) held the grant path to ~20k grants/s.
const (
	bookYieldRatio = 3
	bookYieldMax   = 500 * time.Millisecond
)

// Booker posts grants into TiKV: the user grains prepare each user's new
// account record, and one transaction writes them all, conditional on what
// it read, with one hot detail per budget.
type Booker struct {
	log     *slog.Logger
	tikv    *storage.TiKV
	redis   *storage.Pipeliner
	cluster *pcluster.Cluster
	clock   func() time.Time

	Booked    *metrics.Counter // grants newly booked
	Conflicts *metrics.Counter
	Batches   *metrics.Counter
	BatchTime *metrics.Histogram

	// Yielded counts the nanoseconds booking paused for the grant path.
	Yielded *metrics.Counter

	brokers  []string
	onBooked atomic.Pointer[func([]ledger.Grant)]
	busy     atomic.Pointer[func() bool]
	group    chan *groupReq // partitions' batches for the shared transaction
	claims   atomic.Pointer[[]int32]
	mu       sync.Mutex
	broken   error // a record that cannot be decoded stops booking
}

// BookerConfig wires a booker.
type BookerConfig struct {
	Log        *slog.Logger
	TiKV       *storage.TiKV
	Redis      *storage.Pipeliner
	Brokers    []string
	Partitions int32
	Metrics    *metrics.Registry
	Clock      func() time.Time
}

// Kinds returns the grain kinds a member hosts.
// counts (may be nil) follows how many grains of each kind are alive here.
func Kinds(log *slog.Logger, tikv *storage.TiKV, clock func() time.Time, counts *GrainCounts) []*pcluster.Kind {
	if counts == nil {
		counts = &GrainCounts{}
	}
	return []*pcluster.Kind{newUserKind(log, clock, &counts.User), newBudgetKind(log, tikv, &counts.Budget)}
}

// NewBooker builds a booker; Attach gives it the cluster once it started.
func NewBooker(cfg BookerConfig) *Booker {
	m := cfg.Metrics
	return &Booker{
		log: cfg.Log, tikv: cfg.TiKV, redis: cfg.Redis, clock: cfg.Clock,
		brokers: cfg.Brokers, group: make(chan *groupReq, max(cfg.Partitions, 1)),
		Booked:    m.Counter("redrain_grants_booked_total", "Grants booked into the ledger by this node."),
		Conflicts: m.Counter("redrain_booking_conflicts_total", "Booking transactions retried after a write conflict."),
		Yielded:   m.Counter("redrain_booking_yielded_nanoseconds_total", "Time booking paused to let a busy grant path run first."),
		Batches:   m.Counter("redrain_booking_batches_total", "Booking transactions committed."),
		BatchTime: m.Histogram("redrain_booking_batch_seconds", "Time to book one batch.", metrics.LatencyBounds),
	}
}

// Attach gives the booker the cluster through which it reaches grains.
func (b *Booker) Attach(c *pcluster.Cluster) { b.cluster = c }

// Broken reports the error that stopped booking, if any.
func (b *Booker) Broken() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.broken
}

// Outcomes of Book, one per grant.
const (
	BookedNow     = outcomeBooked
	BookedBefore  = outcomeDuplicate
	BookedAttrib  = outcomeAttributed
	bookRetryMax  = 50
	prepareTimout = 10 * time.Second
)

// Book posts grants exactly once per limit key and returns one outcome per
// grant. It retries write conflicts; any other error means nothing was
// written and the caller may retry the whole batch.
func (b *Booker) Book(ctx context.Context, grants []ledger.Grant) ([]byte, error) {
	start := time.Now()
	var outcomes []byte
	var err error
	for attempt := 0; attempt < bookRetryMax; attempt++ {
		outcomes, err = b.bookOnce(ctx, grants)
		// A grain that found a broken money invariant would find it again.
		if isMoneyErr(err) || !errors.Is(err, storage.ErrConflict) && !errors.Is(err, ErrGrain) {
			break
		}
		b.Conflicts.Inc()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(attempt+1) * 5 * time.Millisecond):
		}
	}
	if err != nil {
		return nil, err
	}
	b.Batches.Inc()
	b.BatchTime.ObserveNs(time.Since(start).Nanoseconds())
	b.markBooked(ctx, grants, outcomes)
	return outcomes, nil
}

type userBatch struct {
	actID  uint64
	idx    []int // indexes into grants
	key    []byte
	pid    *actor.PID
	future *actor.Future
}

func (b *Booker) bookOnce(ctx context.Context, grants []ledger.Grant) ([]byte, error) {
	outcomes := make([]byte, len(grants))
	users := make([]*userBatch, 0, len(grants))
	byAct := make(map[uint64]*userBatch, len(grants))
	for i := range grants {
		u := byAct[grants[i].ActID]
		if u == nil {
			u = &userBatch{actID: grants[i].ActID, key: storage.AccountKey(grants[i].ActID)}
			byAct[u.actID] = u
			users = append(users, u)
		}
		u.idx = append(u.idx, i)
	}
	booked := 0
	err := b.tikv.Update(ctx, func(txn *transaction.KVTxn) error {
		keys := make([][]byte, len(users))
		for i, u := range users {
			keys[i] = u.key
		}
		stored, err := storage.BatchGet(ctx, txn, keys)
		if err != nil {
			return err
		}
		// Every user in parallel: one request per user, not per grant.
		for _, u := range users {
			p := &prepare{stored: stored[string(u.key)], grants: make([]ledger.Grant, len(u.idx))}
			for j, i := range u.idx {
				p.grants[j] = grants[i]
			}
			if u.pid, err = grainPID(b.cluster, UserIdentity(u.actID), KindUser); err != nil {
				return err
			}
			u.future = b.cluster.ActorSystem.Root.RequestFuture(u.pid, encodePrepare(p), prepareTimout)
		}
		hot := map[string]*ledger.HotDetail{}
		var postings ledger.Batch
		for _, u := range users {
			res, err := u.future.Result()
			if err != nil {
				// Timed out or dead: ask the identity lookup again next time.
				b.cluster.PidCache.RemoveByValue(UserIdentity(u.actID), KindUser, u.pid)
			}
			payload, err := replyPayload(res, err)
			if err != nil {
				return err
			}
			prep, err := decodePrepared(payload, len(u.idx))
			if err != nil {
				return err
			}
			if prep.record == nil {
				continue
			}
			if err := txn.Set(u.key, prep.record); err != nil {
				return err
			}
			for j, i := range u.idx {
				g := &grants[i]
				outcomes[i] = prep.outcomes[j]
				if outcomes[i] == outcomeDuplicate {
					continue
				}
				h := hot[g.BudgetID]
				if h == nil {
					h = &ledger.HotDetail{BudgetID: g.BudgetID}
					hot[g.BudgetID] = h
				}
				if outcomes[i] == outcomeBooked {
					if err := h.Add(g); err != nil {
						return err
					}
					postings = ledger.GrantPostings(postings, g)
					booked++
				} else if err := h.Attribute(g); err != nil {
					return err
				}
			}
		}
		// Always on: a batch that does not balance is never written.
		if err := postings.Check(); err != nil {
			return err
		}
		seq := uint32(0)
		for id, h := range hot {
			if err := txn.Set(storage.HotKey(id, txn.StartTS(), seq), ledger.MarshalHotDetail(nil, h)); err != nil {
				return err
			}
			seq++
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	b.Booked.Add(int64(booked))
	return outcomes, nil
}

// grainPID finds (activating if needed) a grain's actor. Booking does not
// use Cluster.RequestFuture: it applies its options to a configuration that
// protoactor shares across every call in the process
// (cluster.DefaultGrainCallConfig), a data race under concurrent bookings
// that also changed the timeout of every later call.
func grainPID(c *pcluster.Cluster, identity, kind string) (*actor.PID, error) {
	if pid, _ := c.PidCache.Get(identity, kind); pid != nil {
		return pid, nil
	}
	pid := c.Get(identity, kind)
	if pid == nil {
		return nil, fmt.Errorf("%w: no activation of %s/%s", ErrGrain, kind, identity)
	}
	c.PidCache.Set(identity, kind, pid)
	return pid, nil
}

// YieldWhile makes booking give way while busy() says the grant path is
// busy (see bookYieldRatio).
func (b *Booker) YieldWhile(busy func() bool) { b.busy.Store(&busy) }

// OnBooked sets f to be called with the grants of every committed batch
// that it newly booked (the grant path's claim table learns "booked" from
// it). f must not block.
func (b *Booker) OnBooked(f func([]ledger.Grant)) { b.onBooked.Store(&f) }

// markBooked records booked status in Redis. It is an index: a failure here
// loses nothing (status falls back to TiKV), so it is logged, not retried.
func (b *Booker) markBooked(ctx context.Context, grants []ledger.Grant, outcomes []byte) {
	cmds := make([]redis.Cmder, 0, len(grants))
	var fresh []ledger.Grant
	for i := range grants {
		if outcomes[i] == outcomeDuplicate {
			continue
		}
		g := &grants[i]
		fresh = append(fresh, *g)
		cmds = append(cmds, redis.NewStatusCmd(ctx, "set", storage.BookedMarkKey(g.LimitKey()),
			storage.MarkValue(storage.MarkBooked, g.AwardType, g.Amount, g.AppID)))
	}
	if f := b.onBooked.Load(); f != nil && len(fresh) > 0 {
		(*f)(fresh)
	}
	if len(cmds) == 0 {
		return
	}
	if err := b.redis.Do(ctx, cmds...); err != nil {
		b.log.Warn("booking: redis marks", "err", err)
		return
	}
	for _, c := range cmds {
		if c.Err() != nil {
			b.log.Warn("booking: redis mark", "err", c.Err())
			return
		}
	}
}
