package node

import (
	"context"
	"errors"

	"redrain/booking"
	"redrain/ledger"
	"redrain/spend"
)

// errMovesPending answers every move while booking cannot book moves.
var errMovesPending = errors.New("booking cannot book moves yet: this build's booking.Booker has no Move (issue 13, item 1); nothing was booked")

// movesPending stands for booking's moves in the spending routes until
// booking.Booker has Move(ctx, []ledger.Move) ([]ledger.MoveResult, error):
// it reads accounts from the Booker (the routes' reach check and
// balances) and answers every move with errMovesPending (503
// unavailable), booking nothing. To be replaced by the Booker itself
// (spendBooker returns n.booker) once Booker.Move is in.
type movesPending struct{ *booking.Booker }

// Move books nothing.
func (movesPending) Move(context.Context, []ledger.Move) ([]ledger.MoveResult, error) {
	return nil, errMovesPending
}

// spendBooker is the booking of the spending routes: Config.Moves when
// set (tests), else the node's Booker through movesPending.
func (n *Node) spendBooker() spend.Booker {
	if n.cfg.Moves != nil {
		return n.cfg.Moves
	}
	return movesPending{n.booker}
}
