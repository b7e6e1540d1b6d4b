package ingress

import (
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
	reqs := make([]GrantRequest, len(ctxs))
	ok := make([]bool, len(ctxs))
	admitted := make([]grant.Request, 0, len(ctxs))
	now := time.Now()
	for i, ctx := range ctxs {
		req, err := ParseGrantRequest(ctx.PostBody())
		if err != nil {
			writeError(ctx, err)
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
	if len(admitted) == 0 {
		return
	}
	res := make([]grant.Result, len(admitted))
	s.Grants.Admit(admitted, res)
	j := 0
	for i, ctx := range ctxs {
		if !ok[i] {
			continue
		}
		resp, e := s.answer(&reqs[i], &res[j])
		j++
		if e != nil {
			writeError(ctx, e)
			continue
		}
		writeJSON(ctx, fasthttp.StatusOK, AppendGrantResponse(nil, &resp))
	}
}

// grantBatch answers POST /v1/grants/batch: every item the guard admits
// goes to admission together (one hand-off per shard), and each item
// answers like a single grant (a result or an error object).
func (s *Server) grantBatch(ctx *fasthttp.RequestCtx) {
	reqs, err := ParseGrantBatch(ctx.PostBody())
	if err != nil {
		writeError(ctx, err)
		return
	}
	if !s.ready(ctx) {
		return
	}
	refused := make([]*errcode.Error, len(reqs))
	admitted := make([]grant.Request, 0, len(reqs))
	now, wait := time.Now(), time.Duration(0)
	for i := range reqs {
		if e, w := s.refusal(&reqs[i], now); e != nil { // guard.go: answered per item
			refused[i], wait = e, max(wait, w)
			continue
		}
		admitted = append(admitted, grantRequest(&reqs[i]))
	}
	res := make([]grant.Result, len(admitted))
	if len(admitted) > 0 {
		s.Grants.Admit(admitted, res)
	}
	b := make([]byte, 0, 64+300*len(reqs))
	b = append(b, `{"results":[`...)
	j := 0
	for i := range reqs {
		if i > 0 {
			b = append(b, ',')
		}
		if refused[i] != nil {
			b = errcode.AppendError(b, refused[i])
			continue
		}
		resp, e := s.answer(&reqs[i], &res[j])
		j++
		if e != nil {
			b = errcode.AppendError(b, e)
			continue
		}
		b = AppendGrantResponse(b, &resp)
	}
	if wait > 0 {
		setRetryAfter(ctx, wait)
	}
	writeJSON(ctx, fasthttp.StatusOK, append(b, "]}"...))
}

func grantRequest(r *GrantRequest) grant.Request {
	return grant.Request{AppID: r.AppID, UserID: r.UserID, ActivityID: r.ActivityID, SceneID: r.SceneID, RainID: r.RainID}
}

// answer maps one admission result to the client's answer: a packet, or
// the error of the table that goes with the outcome. The token is sealed
// here, on the request's goroutine, not in the shard that decided it.
func (s *Server) answer(req *GrantRequest, r *grant.Result) (GrantResponse, *errcode.Error) {
	g := &r.Grant
	switch r.Outcome {
	case grant.Issued, grant.Repeat:
		c := g.Claims()
		status := "issued"
		if r.Booked {
			status = "booked"
		}
		return GrantResponse{Token: s.Campaign.Ring.Seal(nil, &c), OutTradeNo: c.OutTradeNo, ActID: g.ActID,
			AwardType: g.AwardType, Asset: string(g.Asset), Amount: g.Amount, Stage: g.Stage.String(), Status: status}, nil
	case grant.NoAward:
		return GrantResponse{ActID: g.ActID, AwardType: storage.MarkNoAward, Stage: g.Stage.String(), Status: "no_award"}, nil
	case grant.InProgress:
		return GrantResponse{}, errcode.Errorf(errcode.CodeGrantInProgress, "a grant for this user and rain is being issued; retry")
	case grant.BudgetExhausted:
		return GrantResponse{}, errcode.Errorf(errcode.CodeBudgetExhausted, "the budget of award %q in activity %q is exhausted", g.AwardType, req.ActivityID)
	case grant.RainClosed:
		return GrantResponse{}, errcode.Errorf(errcode.CodeRainClosed, "rain %d of activity %q is not open", req.RainID, req.ActivityID)
	case grant.UnknownActivity:
		return GrantResponse{}, errcode.Errorf(errcode.CodeUnknownActivity, "activity %q does not exist", req.ActivityID)
	case grant.UnknownRain:
		return GrantResponse{}, errcode.Errorf(errcode.CodeUnknownRain, "activity %q has no rain %d in scene %q", req.ActivityID, req.RainID, req.SceneID)
	case grant.NotEligible:
		return GrantResponse{}, errcode.Errorf(errcode.CodeNotEligible, "no published version or stage of activity %q admits this user", req.ActivityID)
	case grant.Shed:
		return GrantResponse{}, errcode.Errorf(errcode.CodeShed, "too many grants in flight on this node; retry")
	case grant.Unavailable:
		return GrantResponse{}, unavailable(r.Err)
	}
	return GrantResponse{}, errcode.Errorf(errcode.CodeInternal, "grant outcome %v", r.Outcome)
}

func unavailable(err error) *errcode.Error {
	return errcode.Errorf(errcode.CodeUnavailable, "a backend is unavailable; retry: %v", err)
}
