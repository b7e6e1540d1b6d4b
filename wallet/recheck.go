package wallet

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"redrain/metrics"
)

// The continuous check: each poll of the Feed hands the accounts its
// journals changed to a queue, and CheckDelay later (the tombstones and
// the fills of that moment settled) a goroutine checks them (check.go),
// repairing drift. The queue holds at most recentMax accounts (beyond it
// a poll's accounts are skipped and counted: the daily check still sees
// them). Most changed accounts hold a tombstone (nobody read them
// since), which costs one MGET slot and no store read; the accounts read
// from the store, by this check and the daily one, are at most CheckRate
// a second.

// recentMax bounds the accounts the continuous check holds.
const recentMax = 1 << 18

// checks is the node's continuous and daily checks.
type checks struct {
	w     *Wallets
	c     *checker
	delay time.Duration

	mu   sync.Mutex
	q    []recentBatch
	n    int // accounts queued; Invariant: n <= recentMax
	wake chan struct{}

	checked, drift, repaired map[string]*metrics.Counter // by check: recent, daily
	skipped, errors          *metrics.Counter
	dailyNext                *metrics.Gauge // unix seconds of the next daily check (0: none scheduled)
}

type recentBatch struct {
	due  time.Time
	acts []uint64
}

// newChecks returns the checks of w, nil without Redis or with the
// continuous check off (CheckDelay < 0).
func newChecks(w *Wallets) *checks {
	if w.cfg.Redis == nil {
		return nil
	}
	rate := w.cfg.CheckRate
	if rate <= 0 {
		rate = 5000
	}
	c, err := newChecker(CheckConfig{TiKV: w.cfg.TiKV, Redis: w.cfg.Redis, Parts: w.cfg.Parts, TTL: w.cfg.TTL, Repair: true, Rate: rate})
	if err != nil {
		w.log.Error("wallet: cache checks off", "err", err)
		return nil
	}
	k := &checks{w: w, c: c, delay: w.cfg.CheckDelay, wake: make(chan struct{}, 1),
		checked: map[string]*metrics.Counter{}, drift: map[string]*metrics.Counter{}, repaired: map[string]*metrics.Counter{}}
	if k.delay == 0 {
		k.delay = 5 * time.Second
	}
	m := w.cfg.Metrics
	for _, check := range []string{"recent", "daily"} {
		k.checked[check] = m.Counter("redrain_wallet_checked_total", "Accounts whose Redis summary the cache checks compared with the store, by check (recent: the continuous one; daily: T+1).", "check", check)
		k.drift[check] = m.Counter("redrain_wallet_drift_total", "Redis summaries the cache checks found different from the store with every tombstone up to the store's read written, by check.", "check", check)
		k.repaired[check] = m.Counter("redrain_wallet_repaired_total", "Drifted Redis summaries the cache checks replaced with the store's, by check.", "check", check)
	}
	k.skipped = m.Counter("redrain_wallet_check_skipped_total", "Changed accounts the continuous cache check skipped: its queue was full.")
	k.dailyNext = m.Gauge("redrain_wallet_check_daily_next_timestamp_seconds", "When the daily cache check runs next on this node (unix seconds; 0: it does not run here).")
	k.errors = m.Counter("redrain_wallet_check_errors_total", "Cache checks that failed (Redis or the store); their accounts are left to the daily check.")
	return k
}

// saw queues the accounts one poll of the Feed changed (act -> journal
// seq); Run's goroutine calls it.
func (k *checks) saw(changed map[uint64]uint64) {
	if k == nil || k.delay < 0 || len(changed) == 0 {
		return
	}
	k.mu.Lock()
	if k.n+len(changed) > recentMax {
		k.mu.Unlock()
		k.skipped.Add(int64(len(changed)))
		return
	}
	acts := make([]uint64, 0, len(changed))
	for a := range changed {
		acts = append(acts, a)
	}
	k.q = append(k.q, recentBatch{due: k.w.cfg.Clock().Add(k.delay), acts: acts})
	k.n += len(acts)
	k.mu.Unlock()
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

// start runs the continuous check until ctx ends; the returned function
// waits for it.
func (k *checks) start(ctx context.Context) func() {
	if k == nil || k.delay < 0 {
		return func() {}
	}
	done := make(chan struct{})
	go func() { defer close(done); k.run(ctx) }()
	return func() { <-done }
}

func (k *checks) run(ctx context.Context) {
	for {
		k.mu.Lock()
		var b recentBatch
		if len(k.q) > 0 {
			b = k.q[0]
		}
		k.mu.Unlock()
		if b.acts == nil {
			select {
			case <-ctx.Done():
				return
			case <-k.wake:
				continue
			}
		}
		if !k.waitUntil(ctx, b.due) {
			return
		}
		k.mu.Lock()
		k.q[0] = recentBatch{}
		k.q = k.q[1:]
		k.n -= len(b.acts)
		k.mu.Unlock()
		_, _ = k.once(ctx, "recent", func(r *Report) error { return k.c.checkActs(ctx, b.acts, r) })
	}
}

// waitUntil waits until the read side's clock (a test moves it) reaches
// t, reporting whether ctx is still live.
func (k *checks) waitUntil(ctx context.Context, t time.Time) bool {
	for now := k.w.cfg.Clock(); now.Before(t); now = k.w.cfg.Clock() {
		if !sleep(ctx, min(t.Sub(now), 100*time.Millisecond)) {
			return false
		}
	}
	return ctx.Err() == nil
}

// once runs one check and counts and logs what it found.
func (k *checks) once(ctx context.Context, check string, run func(*Report) error) (Report, error) {
	var r Report
	err := run(&r)
	k.checked[check].Add(int64(r.Checked))
	k.drift[check].Add(int64(r.Drifted))
	k.repaired[check].Add(int64(r.Repaired))
	if err != nil && ctx.Err() == nil {
		k.errors.Inc()
		k.w.log.Warn("wallet: cache check failed (the continuous check's accounts are left to the daily check; the daily check is tried again)", "check", check, "err", err)
	}
	if r.Drifted > 0 {
		k.w.log.Warn("wallet: Redis summaries drifted from the store", "check", check, "drifted", r.Drifted,
			"repaired", r.Repaired, "superseded", r.Superseded, "examples", r.Drift)
	}
	return r, err
}

// RunDaily runs the T+1 check until ctx ends: margin after each UTC
// midnight, the users changed the day before are checked and their drift
// repaired, by one node of those that run it (see daily).
func (w *Wallets) RunDaily(ctx context.Context, margin time.Duration) {
	k := w.checks
	if k == nil {
		return
	}
	for {
		at, since, until := nextDaily(w.cfg.Clock(), margin)
		k.dailyNext.Set(at.Unix())
		if !k.waitUntil(ctx, at) {
			return
		}
		k.daily(ctx, since, until)
	}
}

// The daily claim: `rr:wcheck:{day}` holds "running" while a node checks
// that day (a lease of dailyLease, renewed every quarter of it) and "done"
// for dailyDone after. A node that finds it running asks again every
// dailyRetry, so the day is checked once while its checker lives, and by
// another node when it dies or fails. Two nodes checking at once (a lease
// lapsed under a pause) only repeat the work: a repair lands only over the
// value its check judged.
const (
	dailyLease = 5 * time.Minute
	dailyRetry = time.Minute
	dailyDone  = 48 * time.Hour
)

// DailyKey is the Redis key of the daily check's claim of day.
func DailyKey(day time.Time) string { return "rr:wcheck:" + day.UTC().Format(time.DateOnly) }

// daily checks the day [since, until) unless another node has or does;
// it returns once the day is done, here or elsewhere, when the next day's
// check is due (a day whose check keeps failing is given up then), or
// when ctx ends.
func (k *checks) daily(ctx context.Context, since, until time.Time) {
	rdb, key, log := k.c.cache.rdb, DailyKey(since), k.w.log.With("day", since.Format(time.DateOnly))
	for {
		if !k.w.cfg.Clock().Before(until.Add(24 * time.Hour)) {
			log.Error("wallet: daily cache check given up: not done by the next day's (redrain reconcile --redis checks on demand)")
			return
		}
		claimed, err := rdb.SetNX(ctx, key, "running", dailyLease).Result()
		if err == nil && !claimed {
			var v string
			switch v, err = rdb.Get(ctx, key).Result(); {
			case err == nil && v == "done":
				log.Info("wallet: daily cache check done by another node")
				return
			case errors.Is(err, redis.Nil):
				continue // the lease lapsed meanwhile: claim it
			}
		}
		if !claimed {
			if err != nil && ctx.Err() == nil {
				log.Warn("wallet: claiming the daily cache check in Redis; retrying", "err", err)
			}
			if !sleep(ctx, dailyRetry) {
				return
			}
			continue
		}
		lease, stop := context.WithCancel(ctx)
		renewed := make(chan struct{})
		go func() {
			defer close(renewed)
			for sleep(lease, dailyLease/4) {
				_ = rdb.SetXX(lease, key, "running", dailyLease).Err()
			}
		}()
		start := time.Now()
		r, err := k.once(ctx, "daily", func(r *Report) error {
			var err error
			*r, err = k.c.window(ctx, since, until)
			return err
		})
		stop()
		<-renewed
		if err == nil {
			if err := rdb.Set(ctx, key, "done", dailyDone).Err(); err != nil {
				log.Warn("wallet: marking the daily cache check done", "err", err)
			}
			log.Info("wallet: daily cache check", "took", time.Since(start).Round(time.Millisecond),
				"journals", r.Journals, "checked", r.Checked, "summaries", r.Summaries, "unsettled", r.Unsettled,
				"drifted", r.Drifted, "repaired", r.Repaired)
			return
		}
		_ = rdb.Del(context.WithoutCancel(ctx), key).Err() // let another node (or this one, later) take it
		if !sleep(ctx, dailyRetry) {
			return
		}
	}
}

// nextDaily is when the daily check runs next after now (margin past a
// UTC midnight) and the day it checks: the one that midnight ended.
func nextDaily(now time.Time, margin time.Duration) (at, since, until time.Time) {
	until = now.UTC().Truncate(24 * time.Hour)
	if at = until.Add(margin); !at.After(now) {
		until = until.Add(24 * time.Hour)
		at = until.Add(margin)
	}
	return at, until.Add(-24 * time.Hour), until
}
