package withdraw

import (
	"context"
	"errors"
	"fmt"
	"time"

	"redrain/ledger"
	"redrain/storage"
)

// errUndecided: the channel has not said yet whether it paid; the
// withdrawal stays paying and the recovery loop asks again.
var errUndecided = errors.New("withdraw: the channel's outcome is not known yet")

// ErrInvariant is a booking answer that a correct ledger cannot give (a
// settle or reversal refused, a key reused): the withdrawal stops where it
// is, loudly, for an operator.
var ErrInvariant = errors.New("withdraw: money invariant broken")

// drive takes withdrawal id as far as it goes now, and returns its record
// as it left it. It drives only a withdrawal no other node holds (the
// lease on the record); every step is a write conditional on the version
// it read, so a node that lost the withdrawal stops at its next step.
func (s *Service) drive(ctx context.Context, id string) (*Record, error) {
	if _, busy := s.driving.LoadOrStore(id, struct{}{}); busy {
		return s.store.load(ctx, id)
	}
	defer s.driving.Delete(id)
	rec, mine, err := s.claim(ctx, id)
	if err != nil || !mine {
		return rec, err
	}
	for rec.Open() {
		done, err := s.step(ctx, rec)
		if err != nil {
			if !errors.Is(err, errVersion) && !errors.Is(err, storage.ErrConflict) {
				s.note(ctx, rec, err)
			}
			return rec, err
		}
		if done {
			break
		}
	}
	return rec, nil
}

// claim reads withdrawal id and takes its lease unless another node
// holds it; mine says whether this node may drive it now (not when the
// record is missing, finished, not due, or held elsewhere).
func (s *Service) claim(ctx context.Context, id string) (rec *Record, mine bool, err error) {
	for range claimAttemptsMax {
		rec, err = s.store.load(ctx, id)
		if err != nil || rec == nil || !rec.Open() {
			return rec, false, err
		}
		now := s.cfg.Now()
		if rec.Owner != s.cfg.Node && rec.LeaseUntil > now.UnixMilli() {
			return rec, false, nil
		}
		if rec.State == StateReversed && rec.LateCheckAt > now.UnixMilli() {
			return rec, false, nil // its late check is not due: nothing to write
		}
		if rec.Owner == s.cfg.Node && rec.LeaseUntil-now.UnixMilli() > s.cfg.Lease.Milliseconds()/2 {
			return rec, true, nil // held here, long enough: every step renews it
		}
		rec.Owner = s.cfg.Node
		err = s.save(ctx, rec)
		if errors.Is(err, errVersion) || errors.Is(err, storage.ErrConflict) {
			continue
		}
		return rec, err == nil, err
	}
	return rec, false, nil // others keep changing it: they drive it
}

// save writes rec conditionally, renewing this node's lease.
func (s *Service) save(ctx context.Context, rec *Record) error {
	now := s.cfg.Now()
	rec.UpdatedAt = now.UnixMilli()
	rec.LeaseUntil = now.Add(s.cfg.Lease).UnixMilli()
	return s.store.update(ctx, rec)
}

// finish saves rec, which this step made final, and counts it.
func (s *Service) finish(ctx context.Context, rec *Record) error {
	if err := s.save(ctx, rec); err != nil {
		return err
	}
	s.finished[rec.State].Inc()
	return nil
}

// note records err as the withdrawal's last error (best effort: the
// record may have moved on), also when err is ctx's end.
func (s *Service) note(ctx context.Context, rec *Record, err error) {
	rec.LastError = err.Error()
	_ = s.save(context.WithoutCancel(ctx), rec)
}

// step makes one transition of rec; done when nothing more can happen now.
func (s *Service) step(ctx context.Context, rec *Record) (done bool, err error) {
	now := s.cfg.Now().UnixMilli()
	switch rec.State {
	case StateRequested:
		return false, s.hold(ctx, rec)
	case StateHeld:
		// Written with the first Pay's attempt (outcome): one write less,
		// and a record still held says nothing was sent.
		rec.State, rec.PayingAt = StatePaying, now
		return false, nil
	case StatePaying:
		a, err := s.outcome(ctx, rec)
		if err != nil {
			return false, err
		}
		return false, s.decide(ctx, rec, a)
	case StateReversed:
		if rec.LateCheckAt > now {
			return true, nil
		}
		return false, s.lateCheck(ctx, rec)
	}
	return true, nil
}

// hold books the user's outstanding packets, then the hold.
func (s *Service) hold(ctx context.Context, rec *Record) error {
	grants, err := s.packets.Outstanding(ctx, rec.ActID)
	if err != nil {
		return fmt.Errorf("outstanding packets: %w", err)
	}
	if len(grants) > 0 {
		if _, err := s.booker.Book(ctx, grants); err != nil {
			return fmt.Errorf("booking %d outstanding packets: %w", len(grants), err)
		}
	}
	res, err := s.move(ctx, rec, ledger.MoveWithdrawHold, "hold", "",
		ledger.Leg{Asset: ledger.AssetCash, Amount: -rec.Amount}, ledger.Leg{Asset: ledger.AssetTransit, Amount: rec.Amount})
	switch {
	case err != nil:
		return err
	case res == ledger.MoveInsufficient:
		rec.State, rec.DoneAt, rec.LastError = StateRefused, s.cfg.Now().UnixMilli(),
			fmt.Sprintf("withdrawable cash is below %d fen", rec.Amount)
		return s.finish(ctx, rec)
	case res != ledger.MoveApplied && res != ledger.MoveRepeated:
		return fmt.Errorf("%w: hold of %s: move result %d", ErrInvariant, rec.ID, res)
	}
	rec.State, rec.HeldAt, rec.LastError = StateHeld, s.cfg.Now().UnixMilli(), ""
	return s.save(ctx, rec)
}

// outcome gets the channel's decision on rec: Paid or Refused. A
// withdrawal that may have been sent already (Attempts > 0) is asked
// about first; one the channel never got is sent (again, under the same
// id). errUndecided when the channel did not answer either way in time.
func (s *Service) outcome(ctx context.Context, rec *Record) (Answer, error) {
	ch := s.cfg.Channels[rec.Channel]
	if ch == nil {
		// The channel left the configuration with a withdrawal in flight:
		// nothing may be decided without it.
		return Answer{}, fmt.Errorf("channel %q is not configured: the payout's outcome cannot be asked", rec.Channel)
	}
	ask := rec.Attempts > 0
	for pays := 0; ; {
		if ask {
			a, err := s.query(ctx, ch, rec)
			if err != nil || a.Outcome != Unknown {
				return a, err
			}
			// The channel never got it: sending it again is safe (same id).
		}
		if pays == s.cfg.PayAttempts {
			return Answer{}, errUndecided
		}
		pays++
		rec.Attempts++
		if err := s.save(ctx, rec); err != nil { // before it is sent: a crash resumes with a Query
			return Answer{}, err
		}
		s.pays.Inc()
		a, err := ch.Pay(ctx, Payout{ID: rec.ID, ActID: rec.ActID, Amount: rec.Amount})
		if err == nil {
			return a, nil
		}
		s.unknown.Inc()
		rec.LastError = "pay: " + err.Error()
		ask = true
	}
}

// query asks the channel about rec until it answers, at most
// QueryAttempts times with growing waits.
func (s *Service) query(ctx context.Context, ch Channel, rec *Record) (Answer, error) {
	wait := s.cfg.QueryBackoff
	for i := 0; i < s.cfg.QueryAttempts; i++ {
		a, err := ch.Query(ctx, rec.ID)
		if err == nil {
			return a, nil
		}
		rec.LastError = "query: " + err.Error()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return Answer{}, ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, queryBackoffMax)
	}
	return Answer{}, errUndecided
}

// decide books the channel's answer: settle on Paid, reverse on Refused.
func (s *Service) decide(ctx context.Context, rec *Record, a Answer) error {
	var res ledger.MoveResult
	var err error
	switch a.Outcome {
	case Paid:
		res, err = s.move(ctx, rec, ledger.MoveWithdrawSettle, "settle", payoutAccount(rec.Channel),
			ledger.Leg{Asset: ledger.AssetTransit, Amount: -rec.Amount})
	case Refused:
		res, err = s.move(ctx, rec, ledger.MoveWithdrawReverse, "reverse", "",
			ledger.Leg{Asset: ledger.AssetTransit, Amount: -rec.Amount}, ledger.Leg{Asset: ledger.AssetCash, Amount: rec.Amount})
	default:
		return fmt.Errorf("channel answered %q: neither paid nor refused", a.Outcome)
	}
	if err != nil {
		return err
	}
	if res != ledger.MoveApplied && res != ledger.MoveRepeated {
		return fmt.Errorf("%w: %s of %s: move result %d", ErrInvariant, a.Outcome, rec.ID, res)
	}
	now := s.cfg.Now()
	rec.DoneAt, rec.LastError = now.UnixMilli(), ""
	if a.Outcome == Paid {
		rec.State, rec.ChannelRef = StateSettled, a.Ref
	} else {
		rec.State, rec.LastError = StateReversed, "refused: "+a.Reason
		rec.LateCheckAt = now.Add(s.cfg.LateCheckAfter).UnixMilli()
	}
	return s.finish(ctx, rec)
}

// lateCheck asks the channel once more about a reversed withdrawal: a
// payout it now says it made is owed back (withdraw_debt).
func (s *Service) lateCheck(ctx context.Context, rec *Record) error {
	ch := s.cfg.Channels[rec.Channel]
	if ch == nil {
		return fmt.Errorf("channel %q is not configured: the late check waits", rec.Channel)
	}
	a, err := s.query(ctx, ch, rec)
	if err != nil {
		return err
	}
	if a.Outcome == Paid {
		res, err := s.move(ctx, rec, ledger.MoveWithdrawDebt, "debt", payoutAccount(rec.Channel),
			ledger.Leg{Asset: ledger.AssetCash, Amount: -rec.Amount})
		if err != nil {
			return err
		}
		if res != ledger.MoveApplied && res != ledger.MoveRepeated {
			return fmt.Errorf("%w: debt of %s: move result %d", ErrInvariant, rec.ID, res)
		}
		rec.State, rec.ChannelRef = StateDebt, a.Ref
		rec.LastError = "the channel paid after the reversal: withdraw_debt booked"
		rec.LateCheckAt = 0
		return s.finish(ctx, rec)
	}
	rec.LateCheckAt = 0
	return s.save(ctx, rec)
}

// move books one step of rec under its own key.
func (s *Service) move(ctx context.Context, rec *Record, kind ledger.MoveKind, step, counter string, legs ...ledger.Leg) (ledger.MoveResult, error) {
	m := ledger.Move{ActID: rec.ActID, Kind: kind, Key: MoveKey(rec.ID, step), AppID: rec.AppID,
		Legs: legs, Counter: counter, Ref: rec.ID}
	res, err := s.mover.Move(ctx, []ledger.Move{m})
	if err != nil {
		return 0, fmt.Errorf("booking %s: %w", kind, err)
	}
	if len(res) != 1 {
		return 0, fmt.Errorf("%w: booking %s answered %d results for one move", ErrInvariant, kind, len(res))
	}
	return res[0], nil
}

// MoveKey is the key of one step (hold, settle, reverse, debt) of
// withdrawal id in its user's account.
func MoveKey(id, step string) string { return "wd/" + id + "/" + step }

// payoutAccount is the counter account of channel's payouts.
func payoutAccount(channel string) string { return "payout/" + channel }
