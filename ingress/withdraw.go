package ingress

import (
	"context"
	"errors"

	"github.com/valyala/fasthttp"

	"redrain/errcode"
	"redrain/withdraw"
)

// Withdrawals is what the withdrawal routes ask (withdraw.Service).
type Withdrawals interface {
	Withdraw(ctx context.Context, r withdraw.Request) (*withdraw.Record, error)
	Get(ctx context.Context, id string) (*withdraw.Record, error)
	Granted(ctx context.Context, actID uint64, app uint32) (bool, error)
}

// POST /v1/withdrawals and GET /v1/withdrawals/{id} (DESIGN.md: The flow
// of a withdrawal). The POST is app-signed like a redeem or a bind: the
// account must hold a user of the signing app on record, or have an
// outstanding packet of it (a new user's first packets are not booked yet). A withdrawal is shown only
// to the app that made it (another app gets withdrawal_not_found). The
// POST answers 200 with a final state, 202 with one the node's recovery
// loop still drives (poll the GET), and 409 insufficient_funds when the
// cash was short.

// withdrawalIDLen is the length of a withdrawal's id (withdraw.ID).
const withdrawalIDLen = 32

func (s *Server) withdraw(ctx *fasthttp.RequestCtx) {
	app, ok := s.appOf(ctx)
	if !ok {
		return
	}
	req, err := ParseWithdrawRequest(ctx.PostBody())
	if err != nil {
		writeError(ctx, err)
		return
	}
	if !s.ready(ctx) || !s.servesWithdrawals(ctx) {
		return
	}
	c, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	if app != 0 {
		accounts, err := s.Ledger.Accounts(c, []uint64{req.ActID})
		if err != nil {
			writeError(ctx, unavailable(err))
			return
		}
		if acct := accounts[req.ActID]; !holdsApp(acct, app) {
			// Not on record: a user whose packets of app are all
			// outstanding is reached through them.
			granted, err := s.Withdrawals.Granted(c, req.ActID, app)
			if err != nil {
				writeError(ctx, withdrawError(err))
				return
			}
			if !granted {
				writeError(ctx, errNotReached(req.ActID, app, acct))
				return
			}
		}
	}
	rec, err := s.Withdrawals.Withdraw(c, withdraw.Request{AppID: app, ActID: req.ActID, Amount: req.Amount,
		Channel: req.Channel, RequestID: req.RequestID})
	if err != nil {
		writeError(ctx, withdrawError(err))
		return
	}
	status := fasthttp.StatusOK
	if !rec.State.Final() {
		status = fasthttp.StatusAccepted
	}
	writeJSON(ctx, status, AppendWithdrawal(nil, rec))
}

func (s *Server) withdrawal(ctx *fasthttp.RequestCtx, id []byte) {
	app, ok := s.appOf(ctx)
	if !ok {
		return
	}
	if len(id) != withdrawalIDLen || !isLowerHex(id) {
		writeError(ctx, errcode.Errorf(errcode.CodeMalformed, "withdrawal id %q: want %d lowercase hex digits", id, withdrawalIDLen))
		return
	}
	if !s.servesWithdrawals(ctx) {
		return
	}
	c, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	rec, err := s.Withdrawals.Get(c, string(id))
	if err == nil && app != 0 && rec.AppID != app {
		err = withdraw.ErrNotFound // not this app's: it does not learn that it exists
	}
	if err != nil {
		writeError(ctx, withdrawError(err))
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, AppendWithdrawal(nil, rec))
}

// servesWithdrawals answers 503 when the node has no withdrawal service.
func (s *Server) servesWithdrawals(ctx *fasthttp.RequestCtx) bool {
	if s.Withdrawals == nil {
		writeError(ctx, errcode.Errorf(errcode.CodeUnavailable, "this node serves no withdrawals (booking of moves is not in this build yet)"))
		return false
	}
	return true
}

func isLowerHex(b []byte) bool {
	for _, c := range b {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// withdrawCodes maps the withdrawal service's outcomes to client codes:
// the one table.
var withdrawCodes = []struct {
	err  error
	code errcode.Code
}{
	{withdraw.ErrInsufficient, errcode.CodeInsufficientFunds},
	{withdraw.ErrAmountOutOfRange, errcode.CodeAmountOutOfRange},
	{withdraw.ErrUnknownChannel, errcode.CodeUnknownChannel},
	{withdraw.ErrRequestReused, errcode.CodeRequestIDReused},
	{withdraw.ErrNotFound, errcode.CodeWithdrawalNotFound},
	{withdraw.ErrInvalid, errcode.CodeMalformed},
	{withdraw.ErrUnavailable, errcode.CodeUnavailable},
}

// withdrawError is the client's answer to a withdrawal service error.
func withdrawError(err error) *errcode.Error {
	for _, c := range withdrawCodes {
		if errors.Is(err, c.err) {
			return errcode.Errorf(c.code, "%v", err)
		}
	}
	return errcode.Errorf(errcode.CodeInternal, "withdrawal: %v", err)
}
