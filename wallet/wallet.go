// Package wallet is the read side of users' wallets (issue 12): what a user
// holds, answered in layers, each exact.
//
//  1. holders (package holders): per asset family, the exact set of
//     users who hold anything, in process. A user who holds nothing is
//     answered here alone, with no store or Redis read. The set is built
//     from a scan of the store at start and fed by the Feed, which tails
//     the partitions' journals in the store (the booking stream as
//     committed: numbered, never rewritten), so it never answers "holds
//     nothing" for a user a committed booking credited, except for the
//     time until the Feed's next poll (Config.Poll, 100 ms by default).
//  2. Redis: each user's wallet summary (balances and the app identities
//     on the account), `rr:w:{act_id}`, filled on a miss and invalidated
//     by the Feed. A value carries the seq of the partition's last journal
//     its read reflected; the Feed writes a tombstone carrying the seq of
//     the journal that changed the account. Both are written through
//     scripts that keep the higher seq (a max register per key), so a
//     fill racing a change never leaves a summary older than a change the
//     Feed has seen, whatever the order the two reach Redis in, and
//     however many nodes fill and invalidate.
//  3. the store of record (booking.ReadAccountsAt: the account's page and
//     the journals after it).
//
// Failures: when Redis fails, reads go to the store at most
// Config.StoreRate a second and beyond that are answered from the node's
// own copy of what it last served (Stale) or refused (unavailable); when
// the store fails, a summary in Redis or in that copy is answered Stale
// (the Feed cannot see changes while the store is down).
package wallet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"redrain/booking"
	"redrain/holders"
	"redrain/ledger"
	"redrain/metrics"
	"redrain/storage"
)

// Source is the layer that answered a read.
type Source uint8

// The layers.
const (
	SourceHolders  Source = iota + 1 // the user holds nothing: the first layer alone
	SourceCache                      // Redis's summary
	SourceStore                      // the store of record
	SourceFallback                   // the node's copy of what it last served (Stale)
)

func (s Source) String() string {
	switch s {
	case SourceHolders:
		return "holders"
	case SourceCache:
		return "cache"
	case SourceStore:
		return "store"
	case SourceFallback:
		return "fallback"
	}
	return "unknown"
}

// Summary is a user's wallet as the read side answers it.
type Summary struct {
	ActID    uint64
	Balances []ledger.Balance // sorted by asset, no zero balance
	// Apps are the app identities bound to the account (who may read it).
	Apps []ledger.AppUser
	// Recorded says the account has a record in the store; a user who
	// holds nothing has none or one with only identities, and is answered
	// without reading it: Apps is then empty.
	Recorded bool
	Source   Source
	// Stale marks an answer that may miss a change: the store could not
	// be read, and the summary is the last one Redis or this node held.
	Stale bool
}

// Errors of Read.
var (
	// ErrNotFound: no act_id was ever handed out at or above this one.
	ErrNotFound = errors.New("wallet: no such account")
	// ErrUnavailable: neither Redis nor the store answered, and this node
	// holds no copy of the summary.
	ErrUnavailable = errors.New("wallet: unavailable")
)

// Config is what the read side needs.
type Config struct {
	TiKV  *storage.TiKV
	Parts int32 // the grant topic's partitions
	// Redis holds the summaries (the second layer); nil: no second layer.
	Redis *redis.Client
	Log   *slog.Logger
	// Metrics gets the series below; nil: a registry of its own.
	Metrics *metrics.Registry
	// StoreRate bounds reads of the store a second while Redis fails
	// (default 2,000).
	StoreRate int
	// Poll is the Feed's period (default 100 ms); TTL a summary's life in
	// Redis (default 1 h).
	Poll, TTL time.Duration
	// Fallback is how many summaries the node keeps a copy of (default
	// 65,536).
	Fallback int
	// Clock is the time source (default time.Now).
	Clock func() time.Time
	// CheckDelay is how long after the Feed saw an account change the
	// continuous cache check compares its summary in Redis with the store
	// (default 5 s; negative: no continuous check); CheckRate bounds the
	// accounts it and the daily check read from the store a second
	// (default 5,000). See recheck.go.
	CheckDelay time.Duration
	CheckRate  int
}

// Wallets answers wallet reads and runs the Feed that keeps its layers
// exact.
type Wallets struct {
	cfg     Config
	log     *slog.Logger
	set     *holders.Set
	cache   *cache
	copies  *copies
	limiter *bucket
	alloc   atomic.Uint64 // act_ids below it were handed out (a lower bound)
	allocMu sync.Mutex
	allocAt time.Time    // when alloc was last read (guarded by allocMu)
	feedOK  atomic.Int64 // unix ns of the Feed's last poll that read the store
	pendMu  sync.Mutex
	pending map[uint64]uint64 // tombstones Redis has not taken yet: act -> seq
	// hold are accounts this node's booking just changed (Journal, Moved),
	// whose journal the Feed has not tombstoned yet, in runs named by the
	// first poll that will (pollGen): reads skip Redis until that poll's
	// tombstones are in.
	hold     held
	pendings atomic.Int64 // len(pending) + hold.len(), read without the lock
	pollGen  atomic.Uint64
	// tail decodes the journals the Feed polls (its goroutine only).
	tail ledger.TailDecoder
	// lastChanged is how many accounts the Feed's last poll changed (its
	// goroutine only).
	lastChanged int
	// tap holds the journals this node's booking committed until the
	// Feed's next poll (tap.go).
	tap tap
	// distrust: more tombstones were due than pending keeps; every read
	// skips Redis until Run has removed every summary from it.
	distrust atomic.Bool
	// redisDown: the last Redis command of a read or of the Feed failed;
	// reads that skip Redis then reach the store at StoreRate a second too.
	redisDown atomic.Bool
	builtOnce atomic.Bool // the holders set was built at least once
	// cacheReady: the Feed has written the tombstones of every journal
	// up to the positions it started from (from the watermarks in Redis
	// on), so Redis's summaries can be trusted; reads neither read nor
	// fill Redis before.
	cacheReady atomic.Bool
	// checks are the cache consistency checks (recheck.go); nil without
	// Redis.
	checks *checks

	reads      [SourceFallback + 1]*metrics.Counter
	readErrors *metrics.Counter
	journals   *metrics.Counter
	// journalsRead are the journals the Feed read from the store (the
	// rest came from the tap).
	journalsRead *metrics.Counter
	feedErrors   *metrics.Counter
	builds       *metrics.Counter
}

// New returns the read side; Run starts its Feed.
func New(cfg Config) *Wallets {
	if cfg.StoreRate <= 0 {
		cfg.StoreRate = 2000
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 100 * time.Millisecond
	}
	if cfg.TTL <= 0 {
		cfg.TTL = time.Hour
	}
	if cfg.Fallback <= 0 {
		cfg.Fallback = 1 << 16
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = &metrics.Registry{}
	}
	w := &Wallets{cfg: cfg, log: cfg.Log, set: holders.New(), copies: newCopies(cfg.Fallback),
		limiter: newBucket(cfg.StoreRate, cfg.Clock), pending: map[uint64]uint64{}}
	if cfg.Redis != nil {
		w.cache = newCache(cfg.Redis, cfg.TTL, cfg.Parts)
	}
	w.checks = newChecks(w)
	m := cfg.Metrics
	for s := SourceHolders; s <= SourceFallback; s++ {
		w.reads[s] = m.Counter("redrain_wallet_reads_total", "Wallet reads answered, by the layer that answered.", "source", s.String())
	}
	w.readErrors = m.Counter("redrain_wallet_read_errors_total", "Wallet reads refused because neither Redis nor the store answered and the node held no copy.")
	w.journals = m.Counter("redrain_wallet_feed_journals_total", "Booking journals the wallet's feed applied to its layers.")
	w.journalsRead = m.Counter("redrain_wallet_feed_journals_read_total", "Booking journals the wallet's feed read from the store (the others this node's booking handed it as it committed them).")
	w.feedErrors = m.Counter("redrain_wallet_feed_errors_total", "Polls of the store by the wallet's feed that failed (retried).")
	w.builds = m.Counter("redrain_wallet_holders_builds_total", "Builds of the holders layer from a scan of the store.")
	m.GaugeFunc("redrain_wallet_holders_bytes", "Memory of the holders layer (bytes).", func() int64 { return int64(w.set.Bytes()) })
	m.GaugeFunc("redrain_wallet_holders_ready", "1 while the holders layer answers (built, not invalidated).", func() int64 {
		if w.set.Any(1) == holders.Unknown {
			return 0
		}
		return 1
	})
	m.FloatGaugeFunc("redrain_wallet_feed_age_seconds", "Time since the wallet's feed last read the store.", func() float64 {
		return w.feedAge().Seconds()
	})
	return w
}

// Holders is the first layer (for tests and the benchmarks).
func (w *Wallets) Holders() *holders.Set { return w.set }

// feedAge is how long ago the Feed last read the store.
func (w *Wallets) feedAge() time.Duration {
	last := w.feedOK.Load()
	if last == 0 {
		return time.Duration(1<<62 - 1)
	}
	return w.cfg.Clock().Sub(time.Unix(0, last))
}

// fresh reports whether the Feed saw the store recently enough that a
// summary in Redis reflects every change it could have invalidated.
func (w *Wallets) fresh() bool { return w.feedAge() <= 3*w.cfg.Poll+time.Second }

// readTimeout bounds a read's I/O (Redis, the store) when the caller's
// context has no deadline.
const readTimeout = 30 * time.Second

// withReadTimeout is ctx bounded by readTimeout unless it has a deadline.
func withReadTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, readTimeout)
}

// Read answers act's wallet from the first layer that can. A user who holds
// nothing is answered from memory; only the layers below set a timer.
func (w *Wallets) Read(ctx context.Context, act uint64) (Summary, error) {
	if w.set.Any(act) == holders.No {
		if act >= w.alloc.Load() { // beyond what the node saw handed out
			c, cancel := withReadTimeout(ctx)
			err := w.allocated(c, act)
			cancel()
			if err != nil {
				return Summary{}, err
			}
		}
		w.reads[SourceHolders].Inc()
		// Holding nothing is as fresh as the Feed's last look at the store.
		return Summary{ActID: act, Source: SourceHolders, Stale: !w.fresh()}, nil
	}
	ctx, cancel := withReadTimeout(ctx)
	defer cancel()
	useCache := w.cache != nil && w.cacheReady.Load() && !w.isPending(act)
	if useCache {
		s, hit, err := w.cache.get(ctx, act)
		w.redisDown.Store(err != nil)
		if err == nil && hit {
			s.Source, s.Stale = SourceCache, !w.fresh()
			w.copies.put(s)
			w.reads[SourceCache].Inc()
			return s, nil
		}
		useCache = err == nil // a miss fills Redis; a failure does not
	}
	// With Redis failing (this read's command, or the last word from Redis
	// for a read that skips it: a tombstone it has not taken, or not
	// trusted yet), the store at a bounded rate.
	if w.cache != nil && w.redisDown.Load() && !w.limiter.take() {
		return w.fallback(act, fmt.Errorf("redis failing; store reads at their bound (%d/s)", w.cfg.StoreRate))
	}
	s, seq, err := w.readStore(ctx, act)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return Summary{}, err
		}
		return w.fallback(act, err)
	}
	if useCache {
		if err := w.cache.fill(ctx, s, seq); err != nil {
			w.log.Debug("wallet: filling the cache", "act_id", act, "err", err)
		}
	}
	w.copies.put(s)
	w.reads[SourceStore].Inc()
	return s, nil
}

// fallback answers act from the node's copy, marked stale, or refuses.
func (w *Wallets) fallback(act uint64, why error) (Summary, error) {
	if s, ok := w.copies.get(act); ok {
		s.Source, s.Stale = SourceFallback, true
		w.reads[SourceFallback].Inc()
		return s, nil
	}
	w.readErrors.Inc()
	return Summary{}, fmt.Errorf("%w: %v", ErrUnavailable, why)
}

// readStore reads act's account from the store, with the seq of its
// partition's last journal the read reflects.
func (w *Wallets) readStore(ctx context.Context, act uint64) (Summary, uint64, error) {
	var acct *ledger.Account
	var seq uint64
	err := w.cfg.TiKV.View(func(txn storage.Txn) error {
		accounts, seqs, err := booking.ReadAccountsAt(ctx, txn, w.cfg.Parts, []uint64{act})
		if err != nil {
			return err
		}
		acct, seq = accounts[act], seqs[storage.PartitionOf(act, w.cfg.Parts)]
		return nil
	})
	if err != nil {
		return Summary{}, 0, err
	}
	if acct == nil {
		if err := w.allocated(ctx, act); err != nil {
			return Summary{}, 0, err
		}
		return Summary{ActID: act, Source: SourceStore}, seq, nil
	}
	return summaryOf(acct), seq, nil
}

// summaryOf is what the wallet shows of an account.
func summaryOf(a *ledger.Account) Summary {
	s := Summary{ActID: a.ActID, Recorded: true, Source: SourceStore, Apps: append([]ledger.AppUser(nil), a.Apps...)}
	for _, b := range a.Balances {
		if b.Amount != 0 {
			s.Balances = append(s.Balances, b)
		}
	}
	return s
}

// allocEvery is how often, at most, the store's act_id allocation is read
// again for an act_id at or above what the node last saw.
const allocEvery = 100 * time.Millisecond

// allocated returns ErrNotFound unless act was handed out: below the
// store's act_id allocation (read again, at most every allocEvery, only for
// an act_id at or above what the node last saw).
func (w *Wallets) allocated(ctx context.Context, act uint64) error {
	if act < w.alloc.Load() {
		return nil
	}
	w.allocMu.Lock()
	defer w.allocMu.Unlock()
	if act < w.alloc.Load() {
		return nil
	}
	// An act_id beyond what the node saw is read again at most every
	// allocEvery: ids nobody was handed cost no store read each.
	now := w.cfg.Clock()
	if now.Sub(w.allocAt) < allocEvery {
		return fmt.Errorf("%w: %d", ErrNotFound, act)
	}
	w.allocAt = now
	var next uint64 = 1
	err := w.cfg.TiKV.View(func(txn storage.Txn) error {
		raw, err := storage.Get(ctx, txn, storage.ActAllocKey)
		if err != nil || raw == nil {
			return err
		}
		next, _ = storage.ParseActIDValue(raw)
		return nil
	})
	if err != nil {
		return fmt.Errorf("%w: reading the act_id allocation: %v", ErrUnavailable, err)
	}
	if next > w.alloc.Load() {
		w.alloc.Store(next)
	}
	if act >= next {
		return fmt.Errorf("%w: %d", ErrNotFound, act)
	}
	return nil
}

func (w *Wallets) isPending(act uint64) bool {
	if w.distrust.Load() {
		return true
	}
	if w.pendings.Load() == 0 {
		return false
	}
	w.pendMu.Lock()
	defer w.pendMu.Unlock()
	_, ok := w.pending[act]
	if !ok {
		ok = w.hold.has(act)
	}
	return ok
}

// Applied is how many journals the Feed has applied since Run began.
func (w *Wallets) Applied() int64 { return w.journals.Load() }

// Built reports whether the holders set was built from the store at least
// once.
func (w *Wallets) Built() bool { return w.builtOnce.Load() }

// booked takes the grants among a journal this node's booking has just
// committed (OpBook and OpAttribute; Journal), before the Feed polls it:
// the holders set takes them at once, and reads of their users skip Redis
// until the Feed has written their tombstones, so a node that booked a
// grant shows it in the wallet as soon as its token status says booked.
// It reports whether the holders set took them.
func (w *Wallets) booked(ops []ledger.Op) bool {
	// A user and family may come twice (holders.Set.Apply takes
	// repeats).
	adds := make([]holders.Change, 0, len(ops))
	acts := make([]uint64, 0, len(ops))
	for i := range ops {
		if k := ops[i].Kind; k != ledger.OpBook && k != ledger.OpAttribute {
			continue
		}
		g := &ops[i].Grant
		acts = append(acts, g.ActID)
		fam, ok := holders.FamilyOf(g.Asset)
		c := holders.Change{Act: g.ActID, Family: fam}
		if !ok || c.Act > holders.MaxAct {
			continue
		}
		adds = append(adds, c)
	}
	err := w.set.Apply(adds, nil)
	if err != nil {
		w.log.Debug("wallet: holders refused booked grants; the feed applies their journal", "err", err)
	}
	w.holdReads(acts)
	return err == nil
}

// Moved is told of moves this node's booking has just committed, as
// Journal of grants: a credit makes its user a holder at once, and reads of
// every moved user skip Redis until the Feed has written their
// tombstones. A debit that left a family empty is the Feed's to remove
// (it reads the account); until then the holders layer says yes and the
// read goes on to the store.
func (w *Wallets) Moved(ms []ledger.Move) {
	var adds []holders.Change
	seen := make(map[holders.Change]bool, len(ms))
	acts := make([]uint64, len(ms))
	for i := range ms {
		acts[i] = ms[i].ActID
		for _, l := range ms[i].Legs {
			fam, ok := holders.FamilyOf(l.Asset)
			c := holders.Change{Act: ms[i].ActID, Family: fam}
			if !ok || l.Amount <= 0 || c.Act > holders.MaxAct || seen[c] {
				continue
			}
			seen[c] = true
			adds = append(adds, c)
		}
	}
	if err := w.set.Apply(adds, nil); err != nil {
		w.log.Debug("wallet: holders refused booked moves; the feed applies their journal", "err", err)
	}
	w.holdReads(acts)
}

// holdReads makes reads of acts skip Redis until the Feed's next poll has
// written their tombstones.
func (w *Wallets) holdReads(acts []uint64) {
	if w.cache == nil {
		return
	}
	next := w.pollGen.Load() + 1
	w.pendMu.Lock()
	w.hold.add(next, acts)
	w.pendings.Store(int64(len(w.pending) + w.hold.len()))
	w.pendMu.Unlock()
}
