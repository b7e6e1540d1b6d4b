package ingress

import (
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"redrain/errcode"
	"redrain/protect"
)

// refusal asks the server's guard (nil: none) about one grant request at
// time now: the operator's switches first, then the shed and rate limits.
// It returns the error to answer with and how long the client should wait,
// or nil when the request may go on. It runs before admission, so a
// refused request binds no user, claims no limit key and spends no budget.
func (s *Server) refusal(req *GrantRequest, now time.Time) (*errcode.Error, time.Duration) {
	g := s.Guard
	if !g.RainOpen(req.ActivityID, req.SceneID, req.RainID) {
		return errcode.Errorf(errcode.CodeRainSwitchedOff, "rain %d of activity %q in scene %q is switched off by the operator",
			req.RainID, req.ActivityID, req.SceneID), g.RetryAfter()
	}
	v := g.Admit(req.AppID, req.UserID, now)
	switch v.Reason {
	case protect.Admitted:
		return nil, 0
	case protect.Shed:
		return errcode.Errorf(errcode.CodeShed, "the service is shedding load; retry after %v", v.RetryAfter), v.RetryAfter
	case protect.LimitedUser:
		return errcode.Errorf(errcode.CodeRateLimited, "app %d user %q is over its rate limit; retry after %v", req.AppID, req.UserID, v.RetryAfter), v.RetryAfter
	case protect.LimitedClient:
		return errcode.Errorf(errcode.CodeRateLimited, "app %d is over its rate limit; retry after %v", req.AppID, v.RetryAfter), v.RetryAfter
	}
	return errcode.Errorf(errcode.CodeInternal, "guard: %v", v), 0
}

// writeRefusal answers with e and a Retry-After of wait.
func writeRefusal(ctx *fasthttp.RequestCtx, e *errcode.Error, wait time.Duration) {
	writeError(ctx, e)
	setRetryAfter(ctx, wait)
}

// setRetryAfter sets Retry-After to wait in whole seconds, rounded up and
// at least 1 (the header has no finer unit, and 0 would invite a storm).
func setRetryAfter(ctx *fasthttp.RequestCtx, wait time.Duration) {
	secs := max(int64((wait+time.Second-1)/time.Second), 1)
	ctx.Response.Header.Set("Retry-After", strconv.FormatInt(secs, 10))
}
