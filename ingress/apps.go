package ingress

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/valyala/fasthttp"

	"redrain/adminauth"
	"redrain/errcode"
	"redrain/ledger"
)

// Apps authenticate the client API (/v1/...) with the admin API's
// signature scheme under their app keys (adminauth: app keys): a node with
// app keys (Server.Apps) answers an unsigned, altered, expired or replayed
// request 401 unauthorized, and lets the app that signed reach only its
// own users, answering 403 forbidden otherwise:
//
//	grants       every grant's app_id is the signer's (a batch: per item)
//	tokens       a token sealed for another app is "invalid" (per token)
//	wallet       the account holds a user of the signer's app (one with
//	             no record yet answers its empty wallet)
//	ledger       as the wallet (one with no record yet: an empty page)
//	bind         the user is the signer's, and the account holds a user of
//	             the signer's app or the bind carries the consent of an app
//	             it holds
//
// An account's users are those on its record (its Apps): a user that got
// a packet is on record once the packet is booked, a bound one at once.
// With no app keys (the embedded demo only) every request is accepted
// unsigned and acts for any app.

// appAuthTimeout bounds the nonce claim of one app request.
const appAuthTimeout = 5 * time.Second

// appOf authenticates a /v1 request and returns the app that signed it, or
// 0 when the node has no app keys (any app). On a failure it answers ctx
// and reports false.
func (s *Server) appOf(ctx *fasthttp.RequestCtx) (uint32, bool) {
	if s.Apps == nil {
		return 0, true
	}
	c, cancel := context.WithTimeout(context.Background(), appAuthTimeout)
	defer cancel()
	keyID, err := s.Apps.Verify(c, ctx.Method(), ctx.Request.URI().PathOriginal(), ctx.URI().QueryString(),
		ctx.Request.Header.Peek, ctx.PostBody())
	if e := AuthFailure(err); e != nil {
		if e.Code.Retryable() {
			ctx.Response.Header.Set("Retry-After", "1")
		}
		writeError(ctx, e)
		return 0, false
	}
	app, ok := adminauth.AppOfKey(keyID)
	if !ok { // ParseAppKeys refused such ids
		writeError(ctx, errcode.Errorf(errcode.CodeInternal, "app key %q names no app", keyID))
		return 0, false
	}
	return app, true
}

// AuthFailure is the answer to a request whose signature check (admin or
// app) returned err: 401 unauthorized for an *adminauth.Error, 503
// unavailable when the nonce store could not answer, nil for nil.
func AuthFailure(err error) *errcode.Error {
	var ae *adminauth.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ae):
		return errcode.Errorf(errcode.CodeUnauthorized, "%s: %s", ae.Reason, ae.Msg)
	}
	return errcode.Errorf(errcode.CodeUnavailable, "cannot check the signature now: %v", err)
}

// errOtherApp is the answer to a grant or bind for another app's user.
func errOtherApp(signer, app uint32) *errcode.Error {
	return errcode.Errorf(errcode.CodeForbidden, "app_id %d: this request is signed by app %d, which acts only for its own users", app, signer)
}

// holdsApp reports whether acct has a user of app on record.
func holdsApp(acct *ledger.Account, app uint32) bool {
	return acct != nil && slices.ContainsFunc(acct.Apps, func(u ledger.AppUser) bool { return u.AppID == app })
}

// errNotReached is the answer to an app asking about an account that holds
// none of its users.
func errNotReached(actID uint64, app uint32, acct *ledger.Account) *errcode.Error {
	if acct == nil {
		return errcode.Errorf(errcode.CodeForbidden, "act_id %d has no user of app %d on record yet (a user who got a packet is on record once it is booked); retry shortly", actID, app)
	}
	return errcode.Errorf(errcode.CodeForbidden, "act_id %d holds no user of app %d", actID, app)
}

// bindReach returns the check that a bind signed by app may join req's
// user to the account (nil when apps are not authenticated): the account
// holds a user of app, or req carries a valid consent of an app it holds.
func (s *Server) bindReach(app uint32, req *BindRequest) func(acct *ledger.Account) error {
	if app == 0 {
		return nil
	}
	return func(acct *ledger.Account) error {
		if holdsApp(acct, app) {
			return nil
		}
		if req.Consent == nil {
			e := errNotReached(req.ActID, app, acct)
			e.Message += "; a bind that joins another app's account carries the consent of an app it holds (\"consent\")"
			return e
		}
		consenter, err := adminauth.VerifyConsent(s.Apps.Keys, *req.Consent, req.AppID, req.UserID, req.ActID, time.Now())
		var ae *adminauth.Error
		if errors.As(err, &ae) {
			return errcode.Errorf(errcode.CodeUnauthorized, "consent: %s: %s", ae.Reason, ae.Msg)
		}
		if err != nil {
			return errcode.Errorf(errcode.CodeInternal, "consent: %v", err)
		}
		if !holdsApp(acct, consenter) {
			e := errNotReached(req.ActID, consenter, acct)
			e.Message = "consent: " + e.Message
			return e
		}
		return nil
	}
}

// signedRequest authenticates a /v1 write request, parses its body with
// parse, checks that the app it names (appID) is the signer and that the
// node is ready. It returns the request and the signer (0: any app); on a
// failure it answers ctx and reports false.
func signedRequest[T any](s *Server, ctx *fasthttp.RequestCtx, parse func([]byte) (T, error), appID func(*T) uint32) (T, uint32, bool) {
	var zero T
	app, ok := s.appOf(ctx)
	if !ok {
		return zero, 0, false
	}
	req, err := parse(ctx.PostBody())
	if err != nil {
		writeError(ctx, err)
		return zero, 0, false
	}
	if named := appID(&req); app != 0 && named != app {
		writeError(ctx, errOtherApp(app, named))
		return zero, 0, false
	}
	if !s.ready(ctx) {
		return zero, 0, false
	}
	return req, app, true
}
