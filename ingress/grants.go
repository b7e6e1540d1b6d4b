package ingress

import (
	"errors"
	"time"

	"github.com/valyala/fasthttp"

	"redrain/errcode"
	"redrain/grant"
	"redrain/storage"
)

// grantRun answers POST /v1/grants requests that a connection pipelined
// together (or one alone): those the guard admits go to admission as one
// batch, and each gets its own answer, a packet or an error.
func (s *Server) grantRun(ctxs []*fasthttp.RequestCtx) {
	sc := s.getGrantScratch(len(ctxs))
	defer s.putGrantScratch(sc)
	reqs, ok := sc.reqs, sc.ok
	admitted := sc.admitted
	now := time.Now()
	for i, ctx := range ctxs {
		app, signed := s.appOf(ctx) // apps.go
		if !signed {
			continue
		}
		req, err := ParseGrantRequest(ctx.PostBody())
		if err != nil {
			writeError(ctx, err)
			continue
		}
		if app != 0 && req.AppID != app {
			writeError(ctx, errOtherApp(app, req.AppID))
			continue
		}
		if !s.ready(ctx) {
			continue
		}
		if e, wait := s.refusal(&req, now); e != nil { // guard.go
			writeRefusal(ctx, e, wait)
			continue
		}
		reqs[i], ok[i] = req, true
		admitted = append(admitted, grantRequest(&req))
	}
	sc.admitted = admitted
	if len(admitted) == 0 {
		return
	}
	res := sc.results(len(admitted))
	s.Grants.Admit(admitted, res)
	j := 0
	for i, ctx := range ctxs {
		if !ok[i] {
			continue
		}
		b, e := s.appendAnswer(bodyBuffer(ctx), &reqs[i], &res[j])
		j++
		if e != nil {
			ctx.Response.SwapBody(b[:0])
			writeError(ctx, e)
			continue
		}
		setJSONBody(ctx, fasthttp.StatusOK, b)
	}
}

// grantBatch answers POST /v1/grants/batch: every item the guard admits
// goes to admission together (one hand-off per shard), and each item
// answers like a single grant (a result or an error object). The batch is
// signed once; an item for another app than the signer's is refused on
// its own (forbidden).
func (s *Server) grantBatch(ctx *fasthttp.RequestCtx) {
	app, signed := s.appOf(ctx) // apps.go
	if !signed {
		return
	}
	sc := s.getGrantScratch(0)
	defer s.putGrantScratch(sc)
	reqs, err := appendGrantBatch(sc.reqs, ctx.PostBody())
	sc.reqs = reqs
	if err != nil {
		writeError(ctx, err)
		return
	}
	if !s.ready(ctx) {
		return
	}
	refused := append(sc.refused, make([]*errcode.Error, len(reqs))...)
	sc.refused = refused
	admitted := sc.admitted
	now, wait := time.Now(), time.Duration(0)
	for i := range reqs {
		if app != 0 && reqs[i].AppID != app {
			refused[i] = errOtherApp(app, reqs[i].AppID)
			continue
		}
		if e, w := s.refusal(&reqs[i], now); e != nil { // guard.go: answered per item
			refused[i], wait = e, max(wait, w)
			continue
		}
		admitted = append(admitted, grantRequest(&reqs[i]))
	}
	sc.admitted = admitted
	res := sc.results(len(admitted))
	if len(admitted) > 0 {
		s.Grants.Admit(admitted, res)
	}
	b := append(bodyBuffer(ctx), `{"results":[`...)
	j := 0
	for i := range reqs {
		if i > 0 {
			b = append(b, ',')
		}
		if refused[i] != nil {
			b = errcode.AppendError(b, refused[i])
			continue
		}
		var e *errcode.Error
		b, e = s.appendAnswer(b, &reqs[i], &res[j])
		j++
		if e != nil {
			b = errcode.AppendError(b, e)
		}
	}
	if wait > 0 {
		setRetryAfter(ctx, wait)
	}
	setJSONBody(ctx, fasthttp.StatusOK, append(b, "]}"...))
}

// bodyBuffer takes ctx's response body buffer, empty, for an answer to be
// appended to and handed back by setJSONBody (or SwapBody): the answer is
// written once, into the memory the response is sent from (fasthttp's
// pooled body buffer), where building it apart and setting it as the body
// copied it (2.5% of a node's CPU in a burst of repeats).
func bodyBuffer(ctx *fasthttp.RequestCtx) []byte { return ctx.Response.SwapBody(nil)[:0] }

// setJSONBody answers status with the JSON body b, which bodyBuffer
// gave: b is the response's body now, and the caller's no longer.
func setJSONBody(ctx *fasthttp.RequestCtx, status int, b []byte) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.Response.SwapBody(b)
}

// grantScratch is what a grant route needs per request besides the
// strings it parses, reused from request to request (a batch of 100
// allocated ~55 KB of it each time). The answer is not in it: it is built
// in the response's own body buffer (bodyBuffer).
type grantScratch struct {
	reqs     []GrantRequest
	ok       []bool
	refused  []*errcode.Error
	admitted []grant.Request
	res      []grant.Result
}

// getGrantScratch returns an empty scratch with n zero requests (for a
// run of n single grants).
func (s *Server) getGrantScratch(n int) *grantScratch {
	sc, _ := s.scratch.Get().(*grantScratch)
	if sc == nil {
		sc = &grantScratch{}
	}
	sc.reqs = append(sc.reqs, make([]GrantRequest, n)...)
	sc.ok = append(sc.ok, make([]bool, n)...)
	return sc
}

// results returns n zero results.
func (sc *grantScratch) results(n int) []grant.Result {
	sc.res = append(sc.res, make([]grant.Result, n)...)
	return sc.res
}

// putGrantScratch empties sc and pools it. Like the admission's scratch
// (grant.Admission.putScratch) it does not zero what sc held: getGrantScratch,
// results and the routes write every element they read (2.3% of a node's
// CPU in a burst of repeats went to zeroing them here too).
func (s *Server) putGrantScratch(sc *grantScratch) {
	sc.reqs, sc.ok, sc.refused = sc.reqs[:0], sc.ok[:0], sc.refused[:0]
	sc.admitted, sc.res = sc.admitted[:0], sc.res[:0]
	s.scratch.Put(sc)
}

func grantRequest(r *GrantRequest) grant.Request {
	return grant.Request{AppID: r.AppID, UserID: r.UserID, ActivityID: r.ActivityID, SceneID: r.SceneID, RainID: r.RainID}
}

// appendAnswer appends the answer to one admission result, a packet, to
// dst; or returns dst and the error of the table that goes with the
// outcome. The token is sealed here, on the request's goroutine, not in
// the shard that decided it, straight into dst: it is base64 in the URL
// alphabet and the trade number hex, neither of which JSON escapes, so the
// bytes are AppendGrantResponse's.
func (s *Server) appendAnswer(dst []byte, req *GrantRequest, r *grant.Result) ([]byte, *errcode.Error) {
	g := &r.Grant
	switch r.Outcome {
	case grant.Issued, grant.Repeat:
		c := g.Claims()
		status := "issued"
		if r.Booked {
			status = "booked"
		}
		dst = append(dst, `{"token":"`...)
		dst, otn := s.Campaign.Ring.SealTo(dst, &c)
		dst = append(dst, `","out_trade_no":"`...)
		dst = append(append(dst, otn[:]...), '"')
		return appendGrantResponseTail(dst, &GrantResponse{ActID: g.ActID, AwardType: g.AwardType, Asset: string(g.Asset),
			Amount: g.Amount, Stage: g.Stage.String(), Status: status}), nil
	case grant.NoAward:
		return AppendGrantResponse(dst, &GrantResponse{ActID: g.ActID, AwardType: storage.MarkNoAward, Stage: g.Stage.String(), Status: "no_award"}), nil
	case grant.InProgress:
		return dst, errcode.Errorf(errcode.CodeGrantInProgress, "a grant for this user and rain is being issued; retry")
	case grant.BudgetExhausted:
		return dst, errcode.Errorf(errcode.CodeBudgetExhausted, "the budget of award %q in activity %q is exhausted", g.AwardType, req.ActivityID)
	case grant.RainClosed:
		return dst, errcode.Errorf(errcode.CodeRainClosed, "rain %d of activity %q is not open", req.RainID, req.ActivityID)
	case grant.UnknownActivity:
		return dst, errcode.Errorf(errcode.CodeUnknownActivity, "activity %q does not exist", req.ActivityID)
	case grant.UnknownRain:
		return dst, errcode.Errorf(errcode.CodeUnknownRain, "activity %q has no rain %d in scene %q", req.ActivityID, req.RainID, req.SceneID)
	case grant.NotEligible:
		return dst, errcode.Errorf(errcode.CodeNotEligible, "no published version or stage of activity %q admits this user", req.ActivityID)
	case grant.Shed:
		return dst, errcode.Errorf(errcode.CodeShed, "too many grants in flight on this node; retry")
	case grant.Unavailable:
		return dst, unavailable(r.Err)
	}
	return dst, errcode.Errorf(errcode.CodeInternal, "grant outcome %v", r.Outcome)
}

// OutstandingError is the API's error for grant.Admission.Outstanding's
// error (nil for nil): a user's outstanding packets that no node can
// answer for now are unavailable (503, retryable), act_id 0 is a
// malformed request, anything else (a broken invariant of the claim
// table) is internal.
func OutstandingError(err error) *errcode.Error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, grant.ErrUnavailable):
		return errcode.Errorf(errcode.CodeUnavailable, "%v", err)
	case errors.Is(err, grant.ErrNoUser):
		return errcode.Errorf(errcode.CodeMalformed, "%v", err)
	}
	return errcode.Errorf(errcode.CodeInternal, "%v", err)
}

func unavailable(err error) *errcode.Error {
	return errcode.Errorf(errcode.CodeUnavailable, "a backend is unavailable; retry: %v", err)
}
