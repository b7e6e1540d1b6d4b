package spend

import (
	"context"
	"errors"
	"fmt"

	"redrain/ledger"
)

// ErrBroken reports that booking answered what its rules exclude (a
// receiver's move refused after its sender's was booked, results that do
// not match the moves): a bug or a corrupt account, never retried.
var ErrBroken = errors.New("spend: booking broke a rule of moves")

// Service books spending requests through booking.
type Service struct {
	Booker Booker
	// Budgets, when set, is asked of an expiry's budget_id before
	// anything is booked: an expiry into a budget that does not exist, or
	// that pays another asset, is refused (an *InvalidError on
	// budget_id), since its return would reach no budget's record.
	Budgets Budgets
}

// Budgets tells the asset a budget pays; ok is false when there is no
// budget of that id.
type Budgets interface {
	BudgetAsset(ctx context.Context, id string) (asset ledger.Asset, ok bool, err error)
}

// Booked is one move of an outcome.
type Booked struct {
	Move   ledger.Move
	Result ledger.MoveResult
	// Balance is the move's asset on its account as read after the
	// request's moves were booked (not for a move that was not booked).
	Balance int64
}

// Outcome is what became of a request: its moves, each with its result.
// It is booked when every move is applied now or was before (repeated);
// otherwise the first move that was not says why, and nothing of the
// request changed.
type Outcome struct {
	Request Request
	Moves   []Booked
}

// Booked reports whether every move of the request is booked.
func (o *Outcome) Booked() bool {
	for _, b := range o.Moves {
		if b.Result != ledger.MoveApplied && b.Result != ledger.MoveRepeated {
			return false
		}
	}
	return len(o.Moves) > 0
}

// Replayed reports whether the request was booked before, whole: this
// answer changed nothing.
func (o *Outcome) Replayed() bool {
	for _, b := range o.Moves {
		if b.Result != ledger.MoveRepeated {
			return false
		}
	}
	return len(o.Moves) > 0
}

// Failure is the result of the move that was not booked (0 when the
// request is booked): MoveInsufficient, MoveKeyReused or MoveRefused.
func (o *Outcome) Failure() ledger.MoveResult {
	for _, b := range o.Moves {
		if b.Result != ledger.MoveApplied && b.Result != ledger.MoveRepeated {
			return b.Result
		}
	}
	return 0
}

// Reach says whether the caller may act on the account actID as booked
// (nil: no record yet); its error is the answer to the request.
type Reach func(actID uint64, acct *ledger.Account) error

// Do validates r (an *InvalidError), asks reach (unless nil) of every
// account r moves, books r's moves and reads the balances they left. Any
// other error is operational and the same request may be sent again: a
// repeat books nothing twice.
//
// A transfer or gift is two moves, on two accounts that may be in two
// partitions: the sender's first, and the receiver's only once the
// sender's is booked (now or before), so the receiver is never credited
// what the sender could not pay. A crash or an error between the two
// leaves the sender's booked and its transfer account unbalanced; a
// repeat of the request finds the sender's move (repeated) and books the
// receiver's, which its key (InKey) books at most once.
func (s *Service) Do(ctx context.Context, r Request, reach Reach) (Outcome, error) {
	out := Outcome{Request: r}
	if err := Validate(&r); err != nil {
		return out, err
	}
	if r.BudgetID != "" && s.Budgets != nil {
		asset, ok, err := s.Budgets.BudgetAsset(ctx, r.BudgetID)
		switch {
		case err != nil:
			return out, fmt.Errorf("spend: read budget %s: %w", r.BudgetID, err)
		case !ok:
			return out, invalid("budget_id", "no budget %q", r.BudgetID)
		case asset != r.Asset:
			return out, invalid("budget_id", "budget %q pays %s, not %s", r.BudgetID, asset, r.Asset)
		}
	}
	moves := Moves(&r)
	ids := make([]uint64, 0, len(moves))
	for i := range moves {
		ids = append(ids, moves[i].ActID)
	}
	if reach != nil {
		accts, err := s.Booker.Accounts(ctx, ids)
		if err != nil {
			return out, fmt.Errorf("spend: read accounts: %w", err)
		}
		for _, id := range ids {
			if err := reach(id, accts[id]); err != nil {
				return out, err
			}
		}
	}
	out.Moves = make([]Booked, len(moves))
	for i := range moves {
		out.Moves[i].Move = moves[i]
	}
	for i := range moves {
		res, err := s.Booker.Move(ctx, moves[i:i+1])
		switch {
		case err != nil && i > 0:
			return out, fmt.Errorf("spend: %s %s: the sender's move is booked, the receiver's is not yet (repeat the request to complete it): %w", r.Op, moves[i].Key, err)
		case err != nil:
			return out, fmt.Errorf("spend: %s %s: %w", r.Op, moves[i].Key, err)
		case len(res) != 1:
			return out, fmt.Errorf("%w: %d results for one move", ErrBroken, len(res))
		}
		out.Moves[i].Result = res[0]
		switch res[0] {
		case ledger.MoveApplied, ledger.MoveRepeated:
			continue
		case ledger.MoveInsufficient, ledger.MoveKeyReused, ledger.MoveRefused:
			if i > 0 {
				// The receiver's move only adds, under a key no other
				// content shares: nothing may refuse it.
				return out, fmt.Errorf("%w: %s: the receiver's move %s was answered %d after the sender's was booked", ErrBroken, r.Op, moves[i].Key, res[0])
			}
			return out, nil
		default:
			return out, fmt.Errorf("%w: unknown result %d", ErrBroken, res[0])
		}
	}
	accts, err := s.Booker.Accounts(ctx, ids)
	if err != nil {
		return out, fmt.Errorf("spend: %s %s is booked; reading its balances: %w", r.Op, moves[0].Key, err)
	}
	for i := range out.Moves {
		if a := accts[out.Moves[i].Move.ActID]; a != nil {
			out.Moves[i].Balance = a.Balance(out.Moves[i].Move.Legs[0].Asset)
		}
	}
	return out, nil
}
