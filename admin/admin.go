// Package admin serves the operator API behind /admin/v1/: activities and
// the wallet's presentation as versioned configuration (put, show, publish
// to a whitelist or to all, roll back), budgets as they stand, and the
// operator switches. Requests reach it authenticated (the ingress server
// checks signatures first).
//
// It owns the rules of a configuration change: a version must compile, an
// award keeps its asset for life, whitelists are resolved to unified
// act_ids when a version is stored, and a version's budgets exist before
// any node can serve it. It never changes money except through the budget
// functions it is given.
package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"redrain/campaign"
	"redrain/configstore"
	"redrain/errcode"
	"redrain/ledger"
	"redrain/presentation"
)

// bodyBytesMax bounds an admin request body (a version with its
// whitelists); the store's own limit is the same.
const bodyBytesMax = 1 << 20

// requestTimeout bounds one admin request's work.
const requestTimeout = 30 * time.Second

// Budgets is what the API needs of the money side.
type Budgets interface {
	// Ensure creates a budget with total if it does not exist.
	Ensure(ctx context.Context, id string, asset ledger.Asset, total int64) error
	// SetTotal moves a budget's total (creating it if missing) and returns
	// the total set: never below what is already committed.
	SetTotal(ctx context.Context, id string, asset ledger.Asset, total int64) (int64, error)
	// View is one budget's figures as JSON; List those of every budget
	// whose id starts with prefix.
	View(ctx context.Context, id string) (any, error)
	List(ctx context.Context, prefix string) (any, error)
}

// API is the operator API.
type API struct {
	Store *configstore.Store
	// Resolve maps an app identity to its unified act_id, binding a new
	// one if needed (the grant path's binder).
	Resolve func(ctx context.Context, app uint32, user string) (uint64, error)
	Budgets Budgets
	// CheckSwitches validates a switches document before it is stored.
	CheckSwitches func([]byte) error
	Log           *slog.Logger
}

// Serve answers an authenticated admin request; false if no route matches.
func (a *API) Serve(ctx *fasthttp.RequestCtx, keyID string) bool {
	path := string(ctx.Path())
	rest, ok := strings.CutPrefix(path, "/admin/v1/")
	if !ok {
		return false
	}
	c, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	var res any
	var err error
	switch parts := strings.Split(rest, "/"); {
	case rest == "activities":
		if !method(ctx, "GET") {
			return true
		}
		res, err = a.list(c)
	case len(parts) == 2 && parts[0] == "activities":
		switch {
		case ctx.IsGet():
			res, err = a.show(c, a.Store, parts[1], ctx.QueryArgs().Peek("version"))
		case ctx.IsPut():
			res, err = a.put(c, parts[1], ctx.PostBody(), keyID)
		default:
			errcode.MethodNotAllowed(ctx, "GET, PUT")
			return true
		}
	case len(parts) == 3 && parts[0] == "activities" && (parts[2] == "publish" || parts[2] == "rollback"):
		if !method(ctx, "POST") {
			return true
		}
		res, err = a.publish(c, parts[1], parts[2] == "rollback", ctx.PostBody(), keyID)
	case rest == "presentation":
		switch {
		case ctx.IsGet():
			res, err = a.show(c, a.Store.Documents(), presentation.DocumentID, ctx.QueryArgs().Peek("version"))
		case ctx.IsPut():
			res, err = a.putPresentation(c, ctx.PostBody(), keyID)
		default:
			errcode.MethodNotAllowed(ctx, "GET, PUT")
			return true
		}
	case rest == "presentation/publish" || rest == "presentation/rollback":
		if !method(ctx, "POST") {
			return true
		}
		res, err = a.publishPresentation(c, rest == "presentation/rollback", ctx.PostBody(), keyID)
	case rest == "budgets":
		if !method(ctx, "GET") {
			return true
		}
		act := string(ctx.QueryArgs().Peek("activity"))
		prefix := ""
		if act != "" {
			prefix = act + "/"
		}
		res, err = a.Budgets.List(c, prefix)
	case strings.HasPrefix(rest, "budgets/"):
		if !method(ctx, "GET") {
			return true
		}
		res, err = a.Budgets.View(c, strings.TrimPrefix(rest, "budgets/"))
	case rest == "switches":
		switch {
		case ctx.IsGet():
			res, err = a.switches(c)
		case ctx.IsPut():
			res, err = a.putSwitches(c, ctx.PostBody(), keyID)
		default:
			errcode.MethodNotAllowed(ctx, "GET, PUT")
			return true
		}
	default:
		return false
	}
	if err != nil {
		errcode.Write(ctx, classify(err))
		return true
	}
	body, err := json.Marshal(res)
	if err != nil {
		errcode.Write(ctx, err)
		return true
	}
	errcode.WriteJSON(ctx, fasthttp.StatusOK, body)
	return true
}

func checkSize(body []byte) error {
	if len(body) > bodyBytesMax {
		return errcode.Errorf(errcode.CodeTooLarge, "body of %d bytes; at most %d", len(body), bodyBytesMax)
	}
	return nil
}

func method(ctx *fasthttp.RequestCtx, m string) bool {
	if string(ctx.Method()) != m {
		errcode.MethodNotAllowed(ctx, m)
		return false
	}
	return true
}

// classify maps store and validation errors to the error table.
func classify(err error) error {
	var e *errcode.Error
	switch {
	case errors.As(err, &e):
		return e
	case errors.Is(err, presentation.ErrMalformed):
		return errcode.Errorf(errcode.CodeMalformed, "%v", err)
	case errors.Is(err, configstore.ErrNotFound):
		return errcode.Errorf(errcode.CodeNotFound, "%v", err)
	case errors.Is(err, campaign.ErrInvalid), errors.Is(err, configstore.ErrInvalid), errors.Is(err, presentation.ErrInvalid):
		return errcode.Errorf(errcode.CodeInvalidConfig, "%v", err)
	case errors.Is(err, context.DeadlineExceeded):
		return errcode.Errorf(errcode.CodeUnavailable, "timed out: %v", err)
	default:
		return errcode.Errorf(errcode.CodeUnavailable, "a backend is unavailable; retry: %v", err)
	}
}

func (a *API) list(ctx context.Context) (any, error) {
	heads, err := a.Store.List(ctx)
	if err != nil {
		return nil, err
	}
	type row struct {
		ID     string              `json:"id"`
		Latest uint64              `json:"latest"`
		Live   uint64              `json:"live"`
		Canary *configstore.Canary `json:"canary,omitempty"`
	}
	out := struct {
		Activities []row `json:"activities"`
	}{Activities: []row{}}
	for _, h := range heads {
		out.Activities = append(out.Activities, row{h.Activity, h.Latest, h.Live, h.Canary})
	}
	return out, nil
}

// show answers id's head with its versions, or one version, from store
// (the activities' or the documents').
func (a *API) show(ctx context.Context, store *configstore.Store, id string, version []byte) (any, error) {
	if len(version) > 0 {
		v, err := strconv.ParseUint(string(version), 10, 64)
		if err != nil || v == 0 {
			return nil, errcode.Errorf(errcode.CodeMalformed, "version %q: want a number >= 1", version)
		}
		return store.Version(ctx, id, v)
	}
	head, err := store.Head(ctx, id)
	if err != nil {
		return nil, err
	}
	versions, err := store.Versions(ctx, id)
	if err != nil {
		return nil, err
	}
	return struct {
		*configstore.Head
		Versions []configstore.VersionInfo `json:"versions"`
	}{head, versions}, nil
}

// put stores a new version: strict parse, whitelists resolved to act_ids,
// compiled, and checked against the latest version's award assets.
func (a *API) put(ctx context.Context, id string, body []byte, by string) (any, error) {
	if err := checkSize(body); err != nil {
		return nil, err
	}
	spec, err := campaign.ParseActivity(body)
	if err != nil {
		return nil, err
	}
	if spec.ID != id {
		return nil, errcode.Errorf(errcode.CodeMalformed, "body id %q does not match the path's %q", spec.ID, id)
	}
	v, err := a.Prepare(ctx, spec)
	if err != nil {
		return nil, err
	}
	n, err := a.Store.Put(ctx, id, v, by, "")
	if err != nil {
		return nil, err
	}
	return map[string]any{"activity": id, "version": n}, nil
}

// Prepare resolves spec's whitelists, validates it against the latest
// stored version and returns the body to store.
func (a *API) Prepare(ctx context.Context, spec *campaign.Activity) ([]byte, error) {
	for i := range spec.Stages {
		s := &spec.Stages[i]
		ids, err := a.resolve(ctx, s.Whitelist, s.ActIDs)
		if err != nil {
			return nil, err
		}
		s.ActIDs = ids
	}
	body, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	// Compile a decoded copy: compiling fills defaults into what it reads,
	// and the stored body is what the operator wrote plus act_ids.
	check, err := campaign.ParseActivity(body)
	if err != nil {
		return nil, err
	}
	if _, err := campaign.CompileActivity(check, 0); err != nil {
		return nil, err
	}
	head, err := a.Store.Head(ctx, spec.ID)
	switch {
	case errors.Is(err, configstore.ErrNotFound):
	case err != nil:
		return nil, err
	default:
		prev, err := a.version(ctx, spec.ID, head.Latest)
		if err != nil {
			return nil, err
		}
		if err := campaign.SameAwards(prev.Spec, check); err != nil {
			return nil, err
		}
	}
	return body, nil
}

// resolve maps "app_id:user_id" entries to unified act_ids and returns
// them with ids, sorted and without repeats.
func (a *API) resolve(ctx context.Context, entries []string, ids []uint64) ([]uint64, error) {
	out := slices.Clone(ids)
	for _, e := range entries {
		app, user, err := campaign.ParseIdentity(e)
		if err != nil {
			return nil, err
		}
		id, err := a.Resolve(ctx, app, user)
		if err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

func (a *API) version(ctx context.Context, id string, n uint64) (*campaign.Version, error) {
	v, err := a.Store.Version(ctx, id, n)
	if err != nil {
		return nil, err
	}
	return Compile(v)
}

// Compile compiles a stored version.
func Compile(v *configstore.Version) (*campaign.Version, error) {
	spec, err := campaign.ParseActivity(v.Body)
	if err != nil {
		return nil, fmt.Errorf("activity %s version %d: %w", v.Activity, v.Version, err)
	}
	return campaign.CompileActivity(spec, v.Version)
}

// publishRequest is the body of publish and rollback.
type publishRequest struct {
	Version   uint64   `json:"version"`
	Whitelist []string `json:"whitelist"`
}

// BudgetChange reports a total a publish set.
type BudgetChange struct {
	Budget    string `json:"budget"`
	Requested int64  `json:"requested"`
	Total     int64  `json:"total"`
}

// parsePublish reads the body of a publish or a rollback.
func parsePublish(body []byte, rollback bool) (*publishRequest, error) {
	if err := checkSize(body); err != nil {
		return nil, err
	}
	var req publishRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || dec.More() || req.Version == 0 {
		return nil, errcode.Errorf(errcode.CodeMalformed, `want {"version": N >= 1, "whitelist": ["app_id:user_id", ...]}`)
	}
	if rollback && len(req.Whitelist) > 0 {
		return nil, errcode.Errorf(errcode.CodeMalformed, "a rollback is to everyone: no whitelist")
	}
	return &req, nil
}

func (a *API) publish(ctx context.Context, id string, rollback bool, body []byte, by string) (any, error) {
	req, err := parsePublish(body, rollback)
	if err != nil {
		return nil, err
	}
	head, changes, err := a.Publish(ctx, id, req.Version, req.Whitelist, rollback, by)
	if err != nil {
		return nil, err
	}
	return map[string]any{"head": head, "budgets": changes}, nil
}

// Publish serves version n of activity id to the whitelisted users (a
// canary) or, with no whitelist, to everyone; rollback publishes an
// earlier version to everyone. The version's budgets are made to exist
// first: a canary only creates missing ones (everyone else still draws on
// them under the live version), a publish to everyone sets every total.
func (a *API) Publish(ctx context.Context, id string, n uint64, whitelist []string, rollback bool, by string) (*configstore.Head, []BudgetChange, error) {
	v, err := a.version(ctx, id, n)
	if err != nil {
		return nil, nil, err
	}
	canary, err := a.canary(ctx, n, whitelist)
	if err != nil {
		return nil, nil, err
	}
	changes := []BudgetChange{}
	for _, ch := range v.Children() {
		for _, w := range ch.Awards {
			if canary != nil {
				if err := a.Budgets.Ensure(ctx, w.BudgetID, w.Asset, w.Total); err != nil {
					return nil, nil, err
				}
				continue
			}
			set, err := a.Budgets.SetTotal(ctx, w.BudgetID, w.Asset, w.Total)
			if err != nil {
				return nil, nil, err
			}
			changes = append(changes, BudgetChange{Budget: w.BudgetID, Requested: w.Total, Total: set})
		}
	}
	head, err := a.setLive(ctx, a.Store, id, n, canary, rollback, by)
	if err != nil {
		return nil, nil, err
	}
	return head, changes, nil
}

// canary resolves a whitelist into the canary of version n; nil for none
// (a publish to everyone).
func (a *API) canary(ctx context.Context, n uint64, whitelist []string) (*configstore.Canary, error) {
	if len(whitelist) == 0 {
		return nil, nil
	}
	ids, err := a.resolve(ctx, whitelist, nil)
	if err != nil {
		return nil, err
	}
	return &configstore.Canary{Version: n, Whitelist: whitelist, ActIDs: ids}, nil
}

// setLive publishes version n of id in store (to canary, or to everyone
// when canary is nil) or rolls back to it, and logs the change.
func (a *API) setLive(ctx context.Context, store *configstore.Store, id string, n uint64, canary *configstore.Canary, rollback bool, by string) (*configstore.Head, error) {
	var head *configstore.Head
	var err error
	if rollback {
		head, err = store.Rollback(ctx, id, n, by)
	} else {
		head, err = store.Publish(ctx, id, n, canary, by)
	}
	if err != nil {
		return nil, err
	}
	if a.Log != nil {
		a.Log.Info("configuration published", "id", id, "version", n, "canary", canary != nil, "rollback", rollback, "by", by)
	}
	return head, nil
}

// putPresentation stores a new version of the wallet's presentation: the
// document parsed strictly and validated, stored as it decoded (fields in
// the format's order, a repeated key once).
func (a *API) putPresentation(ctx context.Context, body []byte, by string) (any, error) {
	if err := checkSize(body); err != nil {
		return nil, err
	}
	doc, err := presentation.Parse(body)
	if err != nil {
		return nil, err
	}
	stored, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	n, err := a.Store.Documents().Put(ctx, presentation.DocumentID, stored, by, "")
	if err != nil {
		return nil, err
	}
	return map[string]any{"version": n}, nil
}

// publishPresentation serves a stored version of the presentation to a
// whitelist or to everyone, or rolls back to one. Nothing else has to
// exist first: unlike an activity's, its versions hold no money.
func (a *API) publishPresentation(ctx context.Context, rollback bool, body []byte, by string) (any, error) {
	req, err := parsePublish(body, rollback)
	if err != nil {
		return nil, err
	}
	docs := a.Store.Documents()
	v, err := docs.Version(ctx, presentation.DocumentID, req.Version)
	if err != nil {
		return nil, err
	}
	// Every node compiles what it serves and refuses a snapshot whose
	// presentation does not compile: a stored version this release does
	// not accept (written under other rules, or past this API) is refused
	// here rather than left to stall every node's configuration.
	if _, err := presentation.Compile(v.Body, v.Version); err != nil {
		return nil, err
	}
	canary, err := a.canary(ctx, req.Version, req.Whitelist)
	if err != nil {
		return nil, err
	}
	head, err := a.setLive(ctx, docs, presentation.DocumentID, req.Version, canary, rollback, by)
	if err != nil {
		return nil, err
	}
	return map[string]any{"head": head}, nil
}

func (a *API) switches(ctx context.Context) (any, error) {
	raw, err := a.Store.Switches(ctx)
	if errors.Is(err, configstore.ErrNotFound) {
		return map[string]any{}, nil
	}
	if err != nil {
		return nil, err
	}
	return json.RawMessage(raw), nil
}

func (a *API) putSwitches(ctx context.Context, body []byte, by string) (any, error) {
	if err := checkSize(body); err != nil {
		return nil, err
	}
	if err := a.CheckSwitches(body); err != nil {
		return nil, errcode.Errorf(errcode.CodeInvalidConfig, "%v", err)
	}
	if err := a.Store.PutSwitches(ctx, body, by); err != nil {
		return nil, err
	}
	return json.RawMessage(body), nil
}
