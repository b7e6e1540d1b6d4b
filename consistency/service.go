package consistency

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"redrain/booking"
	"redrain/metrics"
	"redrain/statement"
	"redrain/storage"
)

// The service runs the checks on a node:
//
//   - continuous: every Every, the journals of the partitions this node
//     books, from where it left off (the head when it gained the
//     partition) to those booked Grace ago; cost per grant is one slot of
//     a batched read (records, accounts), nothing on the booking path.
//   - T+1: Margin after each UTC midnight, the day before, by one node of
//     those that run it: a lease in the store (rr/consistency/day/{date}:
//     running with its owner and expiry, renewed, then done), so a node
//     that dies mid-check leaves the day to another once the lease lapses.
//
// Both repair what they find; metrics count what was checked, found and
// repaired, by check and kind.

// ServiceConfig wires a service.
type ServiceConfig struct {
	Checker *Checker
	// Owned lists the partitions this node books (booking.Booker.Claims).
	Owned func() []int32
	// Every is the continuous check's period (0: 10 s; negative: off).
	Every time.Duration
	// Daily runs the T+1 check here, Margin after each UTC midnight (0:
	// DefaultMargin).
	Daily  bool
	Margin time.Duration
	// Owner names this node in the day's lease.
	Owner   string
	Metrics *metrics.Registry
	Log     *slog.Logger
}

// DefaultMargin leaves the statements' folds (every 10 s, closing.Slack)
// time to cover the day before the T+1 check compares it.
const DefaultMargin = 15 * time.Minute

// Service is a node's consistency checks.
type Service struct {
	cfg ServiceConfig
	c   *Checker

	mu      sync.Mutex
	cursors map[int32]uint64 // partition -> last journal seq checked
	status  Status

	checked                  map[string]*metrics.Counter // by what: journals, records, grants, postings, transfers
	found, repaired          map[string]*metrics.Counter // by kind
	errors                   *metrics.Counter
	dailyNext, lastDailyOpen *metrics.Gauge
}

// Status is what /admin/v1/audit shows of the checks.
type Status struct {
	// Continuous sums the continuous check's runs since the node started
	// (its mismatches: the last shownMax).
	Continuous *Report `json:"continuous"`
	// Daily is the last T+1 check this node ran, of Day.
	Daily   *Report `json:"daily,omitempty"`
	Day     string  `json:"day,omitempty"`
	DailyAt int64   `json:"daily_at,omitempty"`
	// LastError is the last check's failure ("" after a success).
	LastError string `json:"last_error,omitempty"`
}

// NewService returns the service of cfg.
func NewService(cfg ServiceConfig) *Service {
	if cfg.Every == 0 {
		cfg.Every = 10 * time.Second
	}
	if cfg.Margin <= 0 {
		cfg.Margin = DefaultMargin
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	m := cfg.Metrics
	if m == nil {
		m = &metrics.Registry{}
	}
	s := &Service{cfg: cfg, c: cfg.Checker, cursors: map[int32]uint64{}, status: Status{Continuous: &Report{}},
		checked: counters(m, "redrain_consistency_checked_total", "What the consistency checks compared (journals, grant records read from the topic, grants, statement postings, transfers).",
			"what", "journals", "records", "grants", "postings", "transfers"),
		found: counters(m, "redrain_consistency_mismatches_total", "Mismatches the consistency checks found, by kind (grant_unbooked, grant_unissued, statement_day, transfer_half, withdrawal_open).",
			"kind", Kinds...),
		repaired: counters(m, "redrain_consistency_repaired_total", "Mismatches the consistency checks repaired through the booking path (or a statements day rebuilt), by kind.",
			"kind", Kinds...)}
	s.errors = m.Counter("redrain_consistency_errors_total", "Consistency checks that failed (the stream or the store); retried.")
	s.dailyNext = m.Gauge("redrain_consistency_daily_next_timestamp_seconds", "When the T+1 consistency check runs next on this node (unix seconds; 0: it does not run here).")
	s.lastDailyOpen = m.Gauge("redrain_consistency_daily_open", "Mismatches the last T+1 consistency check run here left unrepaired.")
	return s
}

// Checker is the service's checker (reconcile's and tests' checks on
// demand).
func (s *Service) Checker() *Checker { return s.c }

// counters registers one counter of name per value of its label.
func counters(m *metrics.Registry, name, help, label string, values ...string) map[string]*metrics.Counter {
	out := make(map[string]*metrics.Counter, len(values))
	for _, v := range values {
		out[v] = m.Counter(name, help, label, v)
	}
	return out
}

// Status returns a copy of what the checks found so far.
func (s *Service) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.status
	c := *st.Continuous
	st.Continuous = &c
	return st
}

// StatusJSON is Status as JSON.
func (s *Service) StatusJSON() json.RawMessage {
	b, _ := json.Marshal(s.Status())
	return b
}

// Run runs the continuous check and, when configured, the T+1 one until
// ctx ends.
func (s *Service) Run(ctx context.Context) {
	var wg sync.WaitGroup
	if s.cfg.Every > 0 {
		wg.Add(1)
		go func() { defer wg.Done(); s.continuous(ctx) }()
	}
	if s.cfg.Daily {
		wg.Add(1)
		go func() { defer wg.Done(); s.daily(ctx) }()
	}
	wg.Wait()
}

func (s *Service) continuous(ctx context.Context) {
	for sleep(ctx, s.cfg.Every) {
		if err := s.Once(ctx); err != nil && ctx.Err() == nil {
			s.cfg.Log.Warn("consistency: continuous check failed (retried)", "err", err)
		}
	}
}

// Once runs the continuous check once over the partitions this node books.
func (s *Service) Once(ctx context.Context) error {
	owned := s.cfg.Owned()
	var heads []uint64
	err := s.c.cfg.DB.View(func(txn storage.Txn) error {
		var err error
		heads, err = booking.JournalSeqs(ctx, txn, s.c.cfg.Parts)
		return err
	})
	if err != nil {
		s.errors.Inc()
		return err
	}
	s.mu.Lock()
	mine := make(map[int32]bool, len(owned))
	for _, p := range owned {
		mine[p] = true
		if _, ok := s.cursors[p]; !ok {
			s.cursors[p] = heads[p] // gained: the T+1 check covers what came before
		}
	}
	for p := range s.cursors {
		if !mine[p] {
			delete(s.cursors, p)
		}
	}
	s.mu.Unlock()
	var errs []error
	for _, p := range owned {
		s.mu.Lock()
		from := s.cursors[p] + 1
		s.mu.Unlock()
		if from > heads[p] {
			continue
		}
		done, r, err := s.c.Journals(ctx, p, from, heads[p], true)
		s.mu.Lock()
		if _, ok := s.cursors[p]; ok {
			s.cursors[p] = max(s.cursors[p], done)
		}
		s.mu.Unlock()
		s.record("continuous", r, err)
		if err != nil {
			errs = append(errs, fmt.Errorf("partition %d: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// record counts and logs one check's report.
func (s *Service) record(check string, r *Report, err error) {
	for what, n := range map[string]int{"journals": r.Journals, "records": r.Records, "grants": r.Grants, "postings": r.Postings, "transfers": r.Transfers} {
		s.checked[what].Add(int64(n))
	}
	for i := range r.Mismatches {
		m := &r.Mismatches[i]
		s.found[m.Kind].Inc()
		if m.Repaired {
			s.repaired[m.Kind].Inc()
		}
		s.cfg.Log.Warn("consistency: mismatch", "check", check, "kind", m.Kind, "partition", m.Partition, "offset", m.Offset,
			"day", m.Day, "act_id", m.ActID, "key", m.Key, "amount", m.Amount, "repaired", m.Repaired, "detail", m.Detail)
	}
	if err != nil {
		s.errors.Inc()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.status.LastError = err.Error()
	} else {
		s.status.LastError = ""
	}
	if check == "continuous" {
		c := s.status.Continuous
		c.Journals += r.Journals
		c.Records += r.Records
		c.Grants += r.Grants
		c.Transfers += r.Transfers
		c.Repaired += r.Repaired
		c.Mismatches = append(c.Mismatches, r.Mismatches...)
		if n := len(c.Mismatches); n > shownMax {
			c.Mismatches = append([]Mismatch(nil), c.Mismatches[n-shownMax:]...)
		}
	}
}

// The day's lease in the store.
const (
	dayLease = 5 * time.Minute
	dayRetry = time.Minute
)

// DayKey is the store key of the T+1 check's lease of day.
func DayKey(d statement.Day) []byte { return []byte("rr/consistency/day/" + d.String()) }

type dayClaim struct {
	State string `json:"state"` // running, done
	Owner string `json:"owner"`
	Until int64  `json:"until"` // unix ms: the running lease's end
}

// claim takes day's lease for this node, renews it (renew), or marks it
// done; it reports whether this node holds it, and done when the day was
// checked already.
func (s *Service) claim(ctx context.Context, d statement.Day, state string) (held, done bool, err error) {
	now := s.c.cfg.Now().UnixMilli()
	err = s.c.cfg.DB.Update(ctx, func(txn storage.Txn) error {
		held, done = false, false
		raw, err := txn.Get(ctx, DayKey(d))
		if err != nil {
			return err
		}
		var c dayClaim
		if raw != nil {
			if err := json.Unmarshal(raw, &c); err != nil {
				return fmt.Errorf("consistency: %s: %w", DayKey(d), err)
			}
		}
		switch {
		case c.State == "done":
			done = true
			return nil
		case c.State == "running" && c.Owner != s.cfg.Owner && c.Until > now:
			return nil // another node's, live
		}
		held = true
		next := dayClaim{State: state, Owner: s.cfg.Owner, Until: now + dayLease.Milliseconds()}
		b, _ := json.Marshal(next)
		return txn.Set(DayKey(d), b)
	})
	return held, done, err
}

func (s *Service) daily(ctx context.Context) {
	for {
		now := s.c.cfg.Now().UTC()
		until := now.Truncate(24 * time.Hour)
		at := until.Add(s.cfg.Margin)
		if !at.After(now) {
			until = until.Add(24 * time.Hour)
			at = until.Add(s.cfg.Margin)
		}
		s.dailyNext.Set(at.Unix())
		if !sleep(ctx, at.Sub(now)) {
			return
		}
		s.Daily(ctx, statement.DayOf(until.UnixMilli())-1)
	}
}

// Daily runs the T+1 check of day d unless another node has or does; it
// returns once the day is done here or elsewhere, or ctx ends (a day
// still failing 24 hours later, when the next day's check is due, is
// given up: reconcile checks on demand).
func (s *Service) Daily(ctx context.Context, d statement.Day) {
	log := s.cfg.Log.With("day", d.String())
	giveUp := s.c.cfg.Now().Add(24 * time.Hour).UnixMilli()
	for s.c.cfg.Now().UnixMilli() < giveUp {
		held, done, err := s.claim(ctx, d, "running")
		if done {
			return
		}
		if err != nil || !held {
			if err != nil && ctx.Err() == nil && !errors.Is(err, storage.ErrConflict) {
				log.Warn("consistency: claiming the T+1 check", "err", err)
			}
			if !sleep(ctx, dayRetry) {
				return
			}
			continue
		}
		start := time.Now()
		r, err := s.holding(ctx, d)
		s.record("daily", r, err)
		if err == nil {
			if _, _, err := s.claim(ctx, d, "done"); err != nil {
				log.Warn("consistency: marking the T+1 check done", "err", err)
			}
			open := 0
			for i := range r.Mismatches {
				if !r.Mismatches[i].Repaired {
					open++
				}
			}
			s.lastDailyOpen.Set(int64(open))
			s.mu.Lock()
			s.status.Daily, s.status.Day, s.status.DailyAt = r, d.String(), s.c.cfg.Now().UnixMilli()
			s.mu.Unlock()
			log.Info("consistency: T+1 check", "took", time.Since(start).Round(time.Millisecond), "journals", r.Journals,
				"records", r.Records, "grants", r.Grants, "postings", r.Postings, "transfers", r.Transfers,
				"mismatches", len(r.Mismatches), "repaired", r.Repaired)
			return
		}
		if ctx.Err() != nil {
			return
		}
		log.Warn("consistency: T+1 check failed (retried)", "err", err)
		if !sleep(ctx, dayRetry) {
			return
		}
	}
	log.Error("consistency: T+1 check given up: not done by the next day's (redrain reconcile --consistency checks on demand)")
}

// sleep waits d unless ctx ends first; it reports whether ctx is live.
// holding runs day d's check while a goroutine renews its lease every
// quarter of it.
func (s *Service) holding(ctx context.Context, d statement.Day) (*Report, error) {
	var wg sync.WaitGroup
	lease, stop := context.WithCancel(ctx)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for sleep(lease, dayLease/4) {
			if _, _, err := s.claim(lease, d, "running"); err != nil && lease.Err() == nil {
				s.cfg.Log.Warn("consistency: renewing the T+1 check's lease", "day", d.String(), "err", err)
			}
		}
	}()
	defer wg.Wait()
	defer stop()
	return s.c.Day(ctx, d, true)
}

func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
	return ctx.Err() == nil
}
