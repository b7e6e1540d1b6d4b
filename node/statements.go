package node

import (
	"context"
	"errors"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"redrain/campaign"
	"redrain/closing"
	"redrain/errcode"
	"redrain/statement"
	"redrain/storage"
)

// pathStatements is the statements' admin route.
const pathStatements = "/admin/v1/statements"

// Statements are folded from the journals by every node (closing.Folder:
// concurrent folds conflict on the watermarks and one wins) every
// statementsEvery, statementsMaxOps ops per transaction; the journals this
// node's booking committed come summed from its tap, the rest from the
// store.
const (
	statementsEvery  = 10 * time.Second
	statementsMaxOps = 20_000
)

// statementConfig is the statements' configuration: the campaign file's
// splits, sponsors from the activities served.
func (n *Node) statementConfig() *statement.Config {
	cat := n.grants.Catalog()
	var acts []*campaign.Activity
	for _, id := range cat.IDs() {
		if vs := cat.Activity(id).Versions(); len(vs) > 0 {
			acts = append(acts, vs[0].Spec)
		}
	}
	return n.Campaign.Config.Statements.StatementConfig(acts)
}

// FoldStatements folds every journal not yet in the statements.
func (n *Node) FoldStatements(ctx context.Context) (closing.Progress, error) {
	f := &closing.Folder{DB: n.tikv, Parts: n.stream.Partitions(), Config: n.statementConfig(), MaxOps: statementsMaxOps,
		Now: func() int64 { return time.Now().UnixMilli() }, Tap: &n.statementsTap}
	return f.FoldAll(ctx)
}

// foldStatements folds every statementsEvery until ctx ends.
func (n *Node) foldStatements(ctx context.Context) {
	every(ctx, statementsEvery, func() {
		if _, err := n.FoldStatements(ctx); err != nil && ctx.Err() == nil && !errors.Is(err, storage.ErrConflict) {
			n.log.Warn("statements: fold failed (retried)", "err", err)
		}
	})
}

// spawn runs loop in a goroutine of the node's background work (Close
// waits for it), labelled loop=name in CPU profiles: goroutines it
// starts, the store client's among them, inherit the label, so
// `go tool pprof -tagfocus loop=booking` shows what one loop costs.
func (n *Node) spawn(ctx context.Context, name string, loop func(context.Context)) {
	n.bg.Add(1)
	go func() {
		defer n.bg.Done()
		pprof.Do(ctx, pprof.Labels("loop", name), loop)
	}()
}

// every calls fn every d until ctx ends.
func every(ctx context.Context, d time.Duration, fn func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fn()
	}
}

// serveStatements answers GET /admin/v1/statements?period=&date=&party=
// [&format=json|csv]: the party's statement as the store holds it.
func (n *Node) serveStatements(ctx *fasthttp.RequestCtx) bool {
	if string(ctx.Path()) != pathStatements {
		return false
	}
	if !ctx.IsGet() {
		errcode.MethodNotAllowed(ctx, "GET")
		return true
	}
	q, err := statementQuery(ctx.QueryArgs())
	if err != nil {
		errcode.Write(ctx, err)
		return true
	}
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := closing.Read(c, n.tikv, n.stream.Partitions(), q.party, q.period)
	if err != nil {
		errcode.Write(ctx, errcode.Errorf(errcode.CodeUnavailable, "statements: %v", err))
		return true
	}
	if q.csv {
		ctx.SetStatusCode(fasthttp.StatusOK)
		ctx.SetContentType("text/csv; charset=utf-8")
		ctx.SetBody(st.CSV())
		return true
	}
	body, err := st.JSON()
	if err != nil {
		errcode.Write(ctx, err)
		return true
	}
	errcode.WriteJSON(ctx, fasthttp.StatusOK, body)
	return true
}

type stmtQuery struct {
	party  statement.Party
	period statement.Period
	csv    bool
}

// statementQuery parses the query strictly: period, date and party once
// each, format at most once, nothing else.
func statementQuery(args *fasthttp.Args) (stmtQuery, error) {
	var q stmtQuery
	got := map[string]string{}
	var bad error
	for k, v := range args.All() {
		key := string(k)
		switch _, dup := got[key]; {
		case bad != nil:
		case key != "period" && key != "date" && key != "party" && key != "format":
			bad = errcode.Errorf(errcode.CodeMalformed, "statements: unknown parameter %q (want period, date, party, format)", key)
		case dup:
			bad = errcode.Errorf(errcode.CodeMalformed, "statements: parameter %q given twice", key)
		}
		got[key] = string(v)
	}
	if bad != nil {
		return q, bad
	}
	for _, k := range []string{"period", "date", "party"} {
		if _, ok := got[k]; !ok {
			return q, errcode.Errorf(errcode.CodeMalformed, "statements: want period=day|month|year, date and party=activity:ID|sponsor:ID|user:ACT_ID|merchant:ID; %s missing", k)
		}
	}
	var err error
	if q.period, err = statement.ParsePeriod(got["period"], got["date"]); err != nil {
		return q, errcode.Errorf(errcode.CodeMalformed, "%v", err)
	}
	if q.party, err = statement.ParseParty(got["party"]); err != nil {
		return q, errcode.Errorf(errcode.CodeMalformed, "%v", err)
	}
	switch f, ok := got["format"]; {
	case !ok || f == "json":
	case f == "csv":
		q.csv = true
	default:
		return q, errcode.Errorf(errcode.CodeMalformed, "statements: format %q: want json or csv", strings.TrimSpace(f))
	}
	return q, nil
}
