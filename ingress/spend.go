package ingress

import (
	"context"
	"errors"
	"log/slog"

	"github.com/valyala/fasthttp"

	"redrain/errcode"
	"redrain/ledger"
	"redrain/spend"
)

// The spending routes (app-signed, write side): the route names the
// operation, the body is ParseSpendRequest's, and the answer is
// AppendSpendOutcome's. A repeat of a request (same app, same request_id,
// same content) books nothing again and is answered the same moves, with
// the header Idempotent-Replayed: true when none of them was booked by
// this call; its balances are as read now.

// spendRoutes maps each route to its operation.
var spendRoutes = map[string]spend.Op{
	"/v1/coins/recharge": spend.OpRecharge,
	"/v1/spend/consume":  spend.OpConsume,
	"/v1/spend/refund":   spend.OpRefund,
	"/v1/spend/reverse":  spend.OpReverse,
	"/v1/spend/transfer": spend.OpTransfer,
	"/v1/spend/gift":     spend.OpGift,
	"/v1/spend/expire":   spend.OpExpire,
}

// spendOpOf is the operation of a spending route's path, 0 for none.
func spendOpOf(path []byte) spend.Op { return spendRoutes[string(path)] }

// HeaderReplayed marks the answer to a request that was booked before.
const HeaderReplayed = "Idempotent-Replayed"

func (s *Server) spend(ctx *fasthttp.RequestCtx, op spend.Op) {
	parse := func(body []byte) (spend.Request, error) { return ParseSpendRequest(op, body) }
	req, app, ok := signedRequest(s, ctx, parse, func(r *spend.Request) uint32 { return r.AppID })
	if !ok {
		return
	}
	c, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	o, err := s.Spend.Do(c, req, spendReach(app))
	var ce *errcode.Error
	var ie *spend.InvalidError
	switch {
	case errors.As(err, &ce):
		writeError(ctx, ce)
		return
	case errors.As(err, &ie): // the request names what is not there (an expiry's budget)
		writeError(ctx, errcode.Errorf(errcode.CodeMalformed, "%v", ie))
		return
	case errors.Is(err, spend.ErrBroken), errors.Is(err, ledger.ErrInvariant), errors.Is(err, ledger.ErrCorrupt):
		log := s.Log
		if log == nil {
			log = slog.Default()
		}
		log.Error("spending: booking broke a rule of moves", "op", op.String(), "app_id", req.AppID, "request_id", req.RequestID, "err", err)
		writeError(ctx, errcode.Errorf(errcode.CodeInternal, "%v", err))
		return
	case err != nil:
		writeError(ctx, unavailable(err))
		return
	}
	if e := SpendFailure(&o); e != nil {
		writeError(ctx, e)
		return
	}
	if o.Replayed() {
		ctx.Response.Header.Set(HeaderReplayed, "true")
	}
	writeJSON(ctx, fasthttp.StatusOK, AppendSpendOutcome(nil, &o))
}

// spendReach is the check that the signing app reaches every account a
// request moves (nil when apps are not authenticated): each holds a user
// of the app on record. A transfer's or gift's receiver must too, so an
// app moves nothing into an account it cannot see.
func spendReach(app uint32) spend.Reach {
	if app == 0 {
		return nil
	}
	return func(actID uint64, acct *ledger.Account) error {
		if holdsApp(acct, app) {
			return nil
		}
		return errNotReached(actID, app, acct)
	}
}
