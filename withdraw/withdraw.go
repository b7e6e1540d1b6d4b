// Package withdraw owns withdrawals: a user's cash paid out through a
// payout channel. A withdrawal first books every outstanding packet of
// the user (so the booking delay never shows where money leaves), holds
// the amount (withdraw_hold: cash → cash:transit), asks its channel to pay
// under the withdrawal's id, and on the channel's answer settles
// (withdraw_settle: transit → payout/{channel}) or reverses
// (withdraw_reverse: transit → cash). Its state is durable in TiKV
// (rr/wd/), and a recovery loop drives every unfinished one to its end.
//
// It must never decide a payout on a time-out or a transport error (only
// the channel's answer to Pay or Query decides), send a payout under
// another id than the withdrawal's, book a step of a withdrawal under
// another key than its own (so each is booked once), or import the
// HTTP server (fasthttp): ingress serves its routes.
package withdraw

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"redrain/ledger"
	"redrain/metrics"
	"redrain/storage"
)

// Packets knows each user's issued-not-booked packets (grant.Admission's
// Outstanding): rebuilt exactly as their tokens would book.
type Packets interface {
	Outstanding(ctx context.Context, actID uint64) ([]ledger.Grant, error)
}

// Booker books grants exactly once per limit key (booking.Booker.Book, the
// redeem path).
type Booker interface {
	Book(ctx context.Context, grants []ledger.Grant) ([]byte, error)
}

// Mover books moves exactly once per (account, key) (booking.Booker.Move).
type Mover interface {
	Move(ctx context.Context, moves []ledger.Move) ([]ledger.MoveResult, error)
}

// Config is a withdrawal service's rules and timings.
type Config struct {
	// AmountMin and AmountMax bound one withdrawal, in fen.
	AmountMin, AmountMax int64
	// Channels are the known payout channels by name.
	Channels map[string]Channel
	// Node names this node in the records it drives.
	Node string
	// Lease is how long a node keeps a withdrawal it drives to itself
	// (renewed by every step); another node's recovery leaves it alone
	// until then.
	Lease time.Duration
	// QueryAttempts bounds the Query requests one drive sends after an
	// unknown outcome; QueryBackoff is the first wait between them
	// (doubling up to a second).
	QueryAttempts int
	QueryBackoff  time.Duration
	// PayAttempts bounds the Pay requests one drive sends for a
	// withdrawal (each after the channel said it never got the last).
	PayAttempts int
	// LateCheckAfter is when, after a reversal, the recovery loop asks the
	// channel once more whether it paid after all (a late, contradictory
	// answer books withdraw_debt).
	LateCheckAfter time.Duration
	// RecoverEvery is the period of the recovery loop (Run).
	RecoverEvery time.Duration
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// Log gets what the recovery loop could not finish (nil: slog.Default()).
	Log *slog.Logger
	// Metrics gets the service's series (nil: none): withdrawals this
	// node finished by final state, Pay requests and their unknown
	// outcomes, and the withdrawals open at the last recovery pass.
	Metrics *metrics.Registry
}

// Defaults of Config's zero fields.
const (
	leaseDefault          = 30 * time.Second
	queryAttemptsDefault  = 8
	queryBackoffDefault   = 50 * time.Millisecond
	payAttemptsDefault    = 3
	lateCheckDefault      = 10 * time.Minute
	recoverEveryDefault   = 10 * time.Second
	recoverBatchMax       = 1000
	queryBackoffMax       = time.Second
	requestIDBytesMax     = 64
	claimAttemptsMax      = 4
	withdrawAmountMaxHard = 1 << 40 // fen: no configuration may allow more in one withdrawal
)

// The business outcomes of Withdraw and Get, for errors.Is; ingress maps
// each to its stable client code (errcode) in one table.
var (
	ErrAmountOutOfRange = errors.New("amount out of range")        // amount_out_of_range: nothing changed
	ErrUnknownChannel   = errors.New("unknown payout channel")     // unknown_channel: nothing changed
	ErrRequestReused    = errors.New("request_id reused")          // request_id_reused: nothing changed
	ErrInsufficient     = errors.New("insufficient funds")         // insufficient_funds: refused, nothing held
	ErrNotFound         = errors.New("no such withdrawal")         // withdrawal_not_found
	ErrInvalid          = errors.New("invalid withdrawal request") // malformed_request
	ErrUnavailable      = errors.New("withdrawals unavailable")    // unavailable, retryable: nothing recorded
)

// Service runs withdrawals over a store.
type Service struct {
	cfg     Config
	store   store
	packets Packets
	booker  Booker
	mover   Mover
	// driving holds the ids this process drives now: a repeat of a
	// request, or the recovery loop, leaves such a withdrawal to the
	// goroutine that has it (the lease keeps other nodes out).
	driving sync.Map
	// Counters (never nil: unregistered without Config.Metrics).
	finished map[State]*metrics.Counter
	pays     *metrics.Counter
	unknown  *metrics.Counter
	open     atomic.Int64 // at the last recovery pass
}

// New returns a service over kv. It checks cfg.
func New(kv *storage.TiKV, packets Packets, booker Booker, mover Mover, cfg Config) (*Service, error) {
	switch {
	case cfg.AmountMin < 1 || cfg.AmountMax < cfg.AmountMin || cfg.AmountMax > withdrawAmountMaxHard:
		return nil, fmt.Errorf("withdraw: amounts %d..%d: want 1 <= min <= max <= %d fen", cfg.AmountMin, cfg.AmountMax, int64(withdrawAmountMaxHard))
	case kv == nil || packets == nil || booker == nil || mover == nil:
		return nil, errors.New("withdraw: a store, packets, a booker and a mover are required")
	}
	for name, ch := range cfg.Channels {
		if name == "" || ch == nil {
			return nil, fmt.Errorf("withdraw: channel %q: a name and a client are required", name)
		}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.Lease, leaseDefault)
	def(&cfg.QueryBackoff, queryBackoffDefault)
	def(&cfg.LateCheckAfter, lateCheckDefault)
	def(&cfg.RecoverEvery, recoverEveryDefault)
	if cfg.QueryAttempts <= 0 {
		cfg.QueryAttempts = queryAttemptsDefault
	}
	if cfg.PayAttempts <= 0 {
		cfg.PayAttempts = payAttemptsDefault
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	s := &Service{cfg: cfg, store: store{kv}, packets: packets, booker: booker, mover: mover,
		finished: map[State]*metrics.Counter{}, pays: &metrics.Counter{}, unknown: &metrics.Counter{}}
	for _, st := range []State{StateSettled, StateReversed, StateRefused, StateDebt} {
		s.finished[st] = &metrics.Counter{}
	}
	if r := cfg.Metrics; r != nil {
		for st := range s.finished {
			s.finished[st] = r.Counter("redrain_withdrawals_total", "Withdrawals this node finished, by final state (settled, reversed, refused: insufficient funds, debt: paid after its reversal).", "state", string(st))
		}
		s.pays = r.Counter("redrain_withdrawal_pays_total", "Pay requests this node sent to payout channels.")
		s.unknown = r.Counter("redrain_withdrawal_pay_unknown_total", "Pay requests whose outcome was unknown (time-out, transport error, 5xx): the channel was asked before anything was decided.")
		r.GaugeFunc("redrain_withdrawals_open", "Unfinished withdrawals (and reversals whose late check is due) at this node's last recovery pass.", s.open.Load)
	}
	return s, nil
}

// Request asks for a withdrawal.
type Request struct {
	AppID     uint32 // the app that signed the request (its user's app)
	ActID     uint64
	Amount    int64 // fen
	Channel   string
	RequestID string // the app's idempotency key
}

// Withdraw records r's withdrawal (or finds the one an earlier request
// with the same app and request id recorded) and drives it as far as it
// goes now. It returns the record as it stands: a final state, or an
// unfinished one that the recovery loop finishes (the caller polls Get).
// Every failure wraps one of the Err outcomes above: ErrAmountOutOfRange,
// ErrUnknownChannel and ErrInvalid changing nothing, ErrRequestReused when
// the request id named another withdrawal, ErrInsufficient (with the
// refused record) when the cash was short, ErrUnavailable when nothing
// could be recorded.
func (s *Service) Withdraw(ctx context.Context, r Request) (*Record, error) {
	switch {
	case r.Amount < s.cfg.AmountMin || r.Amount > s.cfg.AmountMax:
		return nil, fmt.Errorf("%w: amount %d: a withdrawal is %d to %d fen", ErrAmountOutOfRange, r.Amount, s.cfg.AmountMin, s.cfg.AmountMax)
	case s.cfg.Channels[r.Channel] == nil:
		return nil, fmt.Errorf("%w: %q is not a payout channel of this node", ErrUnknownChannel, r.Channel)
	case r.ActID == 0 || r.RequestID == "" || len(r.RequestID) > requestIDBytesMax:
		return nil, fmt.Errorf("%w: act_id and request_id (1 to %d bytes) are required", ErrInvalid, requestIDBytesMax)
	}
	t := s.cfg.Now()
	now := t.UnixMilli()
	// Created with this node's lease: driving it next needs no claim.
	rec := &Record{ID: ID(r.AppID, r.RequestID), AppID: r.AppID, RequestID: r.RequestID, ActID: r.ActID,
		Amount: r.Amount, Channel: r.Channel, State: StateRequested, CreatedAt: now, UpdatedAt: now,
		Owner: s.cfg.Node, LeaseUntil: t.Add(s.cfg.Lease).UnixMilli()}
	have, _, err := s.store.create(ctx, rec)
	if err != nil {
		return nil, fmt.Errorf("%w: not recorded: %w", ErrUnavailable, err)
	}
	if have.ActID != r.ActID || have.Amount != r.Amount || have.Channel != r.Channel {
		return nil, fmt.Errorf("%w: request_id %q of app %d named withdrawal %s of act_id %d, %d fen via %q", ErrRequestReused, r.RequestID, r.AppID, have.ID, have.ActID, have.Amount, have.Channel)
	}
	if have.Open() {
		if _, err := s.drive(ctx, have.ID); err != nil {
			s.cfg.Log.Warn("withdraw: unfinished, the recovery loop resumes it", "id", have.ID, "err", err)
		}
		// As stored, even when ctx ended meanwhile (the answer says where
		// the withdrawal stands).
		if cur, err := s.store.load(context.WithoutCancel(ctx), have.ID); err == nil && cur != nil {
			have = cur
		}
	}
	if have.State == StateRefused {
		return have, fmt.Errorf("%w: act_id %d: %s", ErrInsufficient, have.ActID, have.LastError)
	}
	return have, nil
}

// Granted reports whether actID has an outstanding packet granted by
// app: an app reaches a user whose packets are not booked yet (so not on
// the account's record) through them.
func (s *Service) Granted(ctx context.Context, actID uint64, app uint32) (bool, error) {
	grants, err := s.packets.Outstanding(ctx, actID)
	if err != nil {
		return false, fmt.Errorf("%w: outstanding packets of act_id %d: %w", ErrUnavailable, actID, err)
	}
	for i := range grants {
		if grants[i].AppID == app {
			return true, nil
		}
	}
	return false, nil
}

// Get returns withdrawal id: ErrNotFound when there is none.
func (s *Service) Get(ctx context.Context, id string) (*Record, error) {
	rec, err := s.store.load(ctx, id)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: withdrawal %s: %w", ErrUnavailable, id, err)
	case rec == nil:
		return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	return rec, nil
}

// Run drives every unfinished withdrawal now and every RecoverEvery
// until ctx ends.
func (s *Service) Run(ctx context.Context) {
	t := time.NewTicker(s.cfg.RecoverEvery)
	defer t.Stop()
	for {
		if _, err := s.Recover(ctx); err != nil && ctx.Err() == nil {
			s.cfg.Log.Warn("withdraw: recovery pass", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Recover drives every unfinished withdrawal once (up to a batch), and
// returns how many are still open afterwards.
func (s *Service) Recover(ctx context.Context) (int, error) {
	ids, err := s.store.open(ctx, recoverBatchMax)
	if err != nil {
		return 0, err
	}
	open := 0
	defer func() { s.open.Store(int64(open)) }()
	var errs []error
	for _, id := range ids {
		if ctx.Err() != nil {
			return open, ctx.Err()
		}
		rec, err := s.drive(ctx, id)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", id, err))
		}
		if rec == nil || rec.Open() {
			open++
		}
	}
	return open, errors.Join(errs...)
}
