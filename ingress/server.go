package ingress

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http/pprof"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
	"github.com/valyala/fasthttp/pprofhandler"

	"redrain/adminauth"
	"redrain/campaign"
	"redrain/errcode"
	"redrain/grant"
	"redrain/ledger"
	"redrain/lines"
	"redrain/metrics"
	"redrain/metrics/promexport"
	"redrain/openapi"
	"redrain/protect"
	"redrain/spend"
	"redrain/storage"
	"redrain/wallet"
)

// Stats is what GET /admin/v1/stats answers.
type Stats struct {
	GrantsIssued, GrantsBooked, BookingLag int64
	Ready                                  bool
	CPUSeconds                             float64 // user + system CPU of the process so far
	GrantRecords                           int64   // grant-stream records written
	Allocs                                 int64   // heap allocations of the process so far
	AllocBytes                             int64   // bytes of those allocations
	BookingKeys, BookingTxns               int64   // keys booking transactions wrote; those transactions
	// IssueToBookedBounds are the upper bounds (seconds) of the buckets of
	// the time from a grant's issue to its booking, and IssueToBooked the
	// count of grants booked at or below each since the node started,
	// cumulative, the +Inf bucket last (metrics.Histogram.Buckets). Both
	// nil when the node does not measure it.
	IssueToBookedBounds []float64
	IssueToBooked       []int64
}

// Server is the fasthttp API of one node.
type Server struct {
	Grants   *grant.Admission
	Binder   *Binder
	Campaign *campaign.Campaign // token keys
	Tokens   *Tokens
	// Ledger answers committed accounts: booking's owner of their
	// partition, or the store.
	Ledger BookNow
	// Spend books the spending routes (spend.go); nil: they answer 404.
	Spend *spend.Service
	// Wallet answers GET /v1/wallet/{act_id} (package wallet: the holders
	// layer, Redis, the store).
	Wallet interface {
		Read(ctx context.Context, act uint64) (wallet.Summary, error)
	}
	// Role says which /v1 routes this node serves (RoleAll: every one).
	Role Role
	// Presentation gives the wallet's entry slots for a user (package
	// presentation: the pre-encoded JSON array and its version); nil: none.
	Presentation interface {
		For(actID uint64) (json.RawMessage, uint64)
	}
	TiKV    *storage.TiKV
	Metrics *metrics.Registry
	// Exporter serves /metrics (Metrics and the node's collectors); nil:
	// Metrics alone.
	Exporter *promexport.Exporter
	// Ready returns nil when the node serves; otherwise why not.
	Ready func() error
	Stats func() Stats
	// Audit runs the reconciliation and returns its JSON report.
	Audit func(ctx context.Context) ([]byte, error)
	// Cluster returns the cluster view (members, nodes, partitions) as JSON.
	Cluster func(ctx context.Context) ([]byte, error)
	// Apps checks the signatures of /v1 requests under the app keys
	// (apps.go); nil: no app keys, every request is accepted unsigned and
	// may act for any app (the embedded demo).
	Apps *adminauth.Verifier
	// Authenticate checks an admin request's signature and returns the key
	// id that signed it; every /admin/v1/ route is refused without it.
	Authenticate func(ctx *fasthttp.RequestCtx) (keyID string, err error)
	// Admin serves the configuration routes (activities, budgets,
	// switches) once the request is authenticated; false = no such route.
	Admin func(ctx *fasthttp.RequestCtx, keyID string) bool
	// Guard applies the operator's switches, shed and rate limits to grant
	// requests before admission sees them (guard.go); nil admits all.
	Guard *protect.Guard
	// Log gets the panics a handler recovered from (nil: slog.Default()).
	Log *slog.Logger
	// Plane is which routes this listener serves (PlaneAll: every one).
	Plane Plane
	// Dashboard serves /dashboard and /dashboard/* (the operators' live
	// page, its assets and its event stream: SetStream) on the
	// operations plane; nil: not found.
	Dashboard fasthttp.RequestHandler
	// Draining, when set and true, makes /readyz answer 503 while every
	// route still serves (each connection closes after its answers, so
	// that clients reconnect elsewhere): the node is stopping, and load
	// balancers are to stop sending before its listener closes.
	Draining func() bool
	// Sync queues business lines' notices (POST /v1/sync/notify, sync.go);
	// nil: the node configures no lines.
	Sync *lines.Syncer
	// Withdrawals serves POST /v1/withdrawals and GET
	// /v1/withdrawals/{id} (withdraw.go); nil: answered 503.
	Withdrawals Withdrawals

	panicsOnce sync.Once
	panics     *metrics.Counter // redrain_http_panics_total; nil without Metrics

	metricsOnce  sync.Once
	metricsH     fasthttp.RequestHandler // serves /metrics from Metrics
	tikvMetricsH fasthttp.RequestHandler // serves /metrics/tikv

	scratch  sync.Pool // of *grantScratch (grants.go)
	mu       sync.Mutex
	set      *connSet // the connections being served (conn.go)
	shutdown bool     // Shutdown ran: a later Serve returns at once
}

// Plane says which routes a listener serves: a node with an operations
// listener (--admin-http) serves the API on one (PlaneAPI) and the
// operations routes on the other (PlaneOps); /healthz, /readyz and
// /openapi.json are on both. A route of the other plane is answered 404
// not_found.
type Plane uint8

const (
	PlaneAll Plane = iota // the API and the operations routes (embedded demo)
	PlaneAPI              // /v1/*
	PlaneOps              // /admin/v1/*, /metrics, /debug/pprof/, /dashboard
)

func (s *Server) metricsHandlers() {
	e := s.Exporter
	if e == nil {
		e = promexport.New(s.Metrics)
	}
	s.metricsH, s.tikvMetricsH = e.Handler(), promexport.HandlerFor(promexport.TiKVGatherer())
}

// Role is which side of the API a node serves (redrain serve --role): the
// read side (wallets, ledgers) keeps answering while Kafka or booking is
// down, the write side (grants, binds, tokens) while reads fail.
type Role uint8

const (
	RoleAll   Role = iota // both sides (the default)
	RoleRead              // /v1/wallet/, /v1/ledger/
	RoleWrite             // every other /v1 route
)

func (r Role) String() string {
	switch r {
	case RoleRead:
		return "read"
	case RoleWrite:
		return "write"
	}
	return "all"
}

// ParseRole reads a --role value.
func ParseRole(s string) (Role, error) {
	switch s {
	case "", "all":
		return RoleAll, nil
	case "read":
		return RoleRead, nil
	case "write":
		return RoleWrite, nil
	}
	return RoleAll, fmt.Errorf("role %q: want read, write or all", s)
}

// RoleOf is the side that serves a /v1 path.
func RoleOf(path []byte) Role {
	if bytes.HasPrefix(path, []byte("/v1/wallet/")) || bytes.HasPrefix(path, []byte("/v1/ledger/")) {
		return RoleRead
	}
	return RoleWrite
}

// opsRoute reports whether path is an operations route.
func opsRoute(path []byte) bool {
	return bytes.HasPrefix(path, []byte("/admin/")) || bytes.Equal(path, []byte("/metrics")) ||
		bytes.Equal(path, []byte("/metrics/tikv")) || bytes.HasPrefix(path, []byte("/debug/")) ||
		bytes.Equal(path, []byte("/dashboard")) || bytes.HasPrefix(path, []byte("/dashboard/"))
}

// pprofIndex serves net/http/pprof's index of profiles.
var pprofIndex = fasthttpadaptor.NewFastHTTPHandlerFunc(pprof.Index)

// requestTimeout bounds one request's work.
const requestTimeout = 30 * time.Second

func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	path := ctx.Path()
	post, get := ctx.IsPost(), ctx.IsGet()
	switch {
	case s.Plane == PlaneAPI && opsRoute(path):
		writeError(ctx, errcode.Errorf(errcode.CodeNotFound, "no route %s %s on the API listener (operations routes are on the node's --admin-http listener)", ctx.Method(), path))
	case s.Plane == PlaneOps && bytes.HasPrefix(path, []byte("/v1/")):
		writeError(ctx, errcode.Errorf(errcode.CodeNotFound, "no route %s %s on the operations listener (the API is on the node's --http listener)", ctx.Method(), path))
	case s.Role != RoleAll && bytes.HasPrefix(path, []byte("/v1/")) && RoleOf(path) != s.Role:
		writeError(ctx, errcode.Errorf(errcode.CodeNotFound, "no route %s %s on this node: it serves the %s side (--role %s); %s is served by nodes of --role %s or all", ctx.Method(), path, s.Role, s.Role, path, RoleOf(path)))
	case bytes.Equal(path, []byte("/v1/grants")):
		if !post {
			methodNotAllowed(ctx, "POST")
			return
		}
		s.grantRun([]*fasthttp.RequestCtx{ctx})
	case bytes.Equal(path, []byte("/v1/grants/batch")):
		if !post {
			methodNotAllowed(ctx, "POST")
			return
		}
		s.grantBatch(ctx)
	case bytes.Equal(path, []byte("/v1/accounts/bind")): // bind.go
		if !post {
			methodNotAllowed(ctx, "POST")
			return
		}
		s.bind(ctx)
	case bytes.Equal(path, []byte("/v1/tokens/status")), bytes.Equal(path, []byte("/v1/tokens/redeem")):
		if !post {
			methodNotAllowed(ctx, "POST")
			return
		}
		s.tokens(ctx, bytes.HasSuffix(path, []byte("/redeem")))
	case bytes.Equal(path, []byte("/v1/coins/recharge")), bytes.HasPrefix(path, []byte("/v1/spend/")): // spend.go
		op := spendOpOf(path)
		switch {
		case op == 0 || s.Spend == nil:
			writeError(ctx, errcode.Errorf(errcode.CodeNotFound, "no route %s %s", ctx.Method(), path))
		case !post:
			methodNotAllowed(ctx, "POST")
		default:
			s.spend(ctx, op)
		}
	case bytes.HasPrefix(path, []byte("/v1/wallet/")):
		if !get {
			methodNotAllowed(ctx, "GET")
			return
		}
		s.wallet(ctx, path[len("/v1/wallet/"):])
	case bytes.HasPrefix(path, []byte("/v1/ledger/")): // ledger.go
		if !get {
			methodNotAllowed(ctx, "GET")
			return
		}
		s.ledgerDetail(ctx, path[len("/v1/ledger/"):])
	case bytes.Equal(path, []byte("/v1/withdrawals")): // withdraw.go
		if !post {
			methodNotAllowed(ctx, "POST")
			return
		}
		s.withdraw(ctx)
	case bytes.HasPrefix(path, []byte("/v1/withdrawals/")):
		if !get {
			methodNotAllowed(ctx, "GET")
			return
		}
		s.withdrawal(ctx, path[len("/v1/withdrawals/"):])
	case bytes.Equal(path, []byte("/v1/sync/notify")): // sync.go
		if !post {
			methodNotAllowed(ctx, "POST")
			return
		}
		s.syncNotify(ctx)
	case bytes.Equal(path, []byte("/healthz")):
		writeJSON(ctx, fasthttp.StatusOK, []byte(`{"status":"ok"}`))
	case bytes.Equal(path, []byte("/openapi.json")): // the API's document, public (package openapi)
		if !get {
			methodNotAllowed(ctx, "GET")
			return
		}
		writeJSON(ctx, fasthttp.StatusOK, openapi.JSON())
	case bytes.Equal(path, []byte("/readyz")):
		if s.Draining != nil && s.Draining() {
			writeJSON(ctx, fasthttp.StatusServiceUnavailable, []byte(`{"status":"not_ready","reason":"stopping: draining before the listener closes"}`))
			return
		}
		if err := s.Ready(); err != nil {
			b := append([]byte(`{"status":"not_ready","reason":`), errcode.AppendJSONString(nil, err.Error())...)
			writeJSON(ctx, fasthttp.StatusServiceUnavailable, append(b, '}'))
			return
		}
		writeJSON(ctx, fasthttp.StatusOK, []byte(`{"status":"ready"}`))
	case bytes.Equal(path, []byte("/metrics")):
		s.metricsOnce.Do(s.metricsHandlers)
		s.metricsH(ctx)
	case bytes.Equal(path, []byte("/metrics/tikv")):
		s.metricsOnce.Do(s.metricsHandlers)
		s.tikvMetricsH(ctx)
	case bytes.HasPrefix(path, []byte("/debug/pprof/")):
		if bytes.Equal(path, []byte("/debug/pprof/")) {
			// pprofhandler answers a path ending in / 404; the index is
			// net/http/pprof's.
			pprofIndex(ctx)
			return
		}
		pprofhandler.PprofHandler(ctx)
	case bytes.HasPrefix(path, []byte("/admin/v1/")):
		s.admin(ctx, path)
	case s.Dashboard != nil && (bytes.Equal(path, []byte("/dashboard")) || bytes.HasPrefix(path, []byte("/dashboard/"))):
		s.Dashboard(ctx)
	default:
		writeError(ctx, errcode.Errorf(errcode.CodeNotFound, "no route %s %s", ctx.Method(), path))
	}
}

// admin serves /admin/v1/: every request is authenticated first, so an
// unsigned, altered, expired or replayed one changes nothing.
func (s *Server) admin(ctx *fasthttp.RequestCtx, path []byte) {
	if s.Authenticate == nil {
		writeError(ctx, errcode.Errorf(errcode.CodeUnauthorized, "admin API disabled: no admin keys"))
		return
	}
	keyID, err := s.Authenticate(ctx)
	if err != nil {
		writeError(ctx, err)
		return
	}
	get := ctx.IsGet()
	switch {
	case bytes.Equal(path, []byte("/admin/v1/stats")):
		if !get {
			methodNotAllowed(ctx, "GET")
			return
		}
		writeJSON(ctx, fasthttp.StatusOK, appendStats(nil, s.Stats()))
	case bytes.Equal(path, []byte("/admin/v1/cluster")):
		if !get {
			methodNotAllowed(ctx, "GET")
			return
		}
		c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		body, err := s.Cluster(c)
		if err != nil {
			writeError(ctx, unavailable(err))
			return
		}
		writeJSON(ctx, fasthttp.StatusOK, body)
	case bytes.Equal(path, []byte("/admin/v1/audit")):
		if !get {
			methodNotAllowed(ctx, "GET")
			return
		}
		c, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		body, err := s.Audit(c)
		if err != nil {
			writeError(ctx, unavailable(err))
			return
		}
		writeJSON(ctx, fasthttp.StatusOK, body)
	default:
		if s.Admin == nil || !s.Admin(ctx, keyID) {
			writeError(ctx, errcode.Errorf(errcode.CodeNotFound, "no route %s %s", ctx.Method(), path))
		}
	}
}

func (s *Server) ready(ctx *fasthttp.RequestCtx) bool {
	if err := s.Ready(); err != nil {
		writeError(ctx, errcode.Errorf(errcode.CodeUnavailable, "node not ready: %v", err))
		ctx.Response.Header.Set("Retry-After", "1")
		return false
	}
	return true
}

func (s *Server) tokens(ctx *fasthttp.RequestCtx, redeem bool) {
	app, ok := s.appOf(ctx)
	if !ok {
		return
	}
	raw, err := ParseTokens(ctx.PostBody())
	if err != nil {
		writeError(ctx, err)
		return
	}
	if !s.ready(ctx) {
		return
	}
	c, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	var rs []TokenResult
	if redeem {
		rs, err = s.Tokens.Redeem(c, raw, app)
	} else {
		rs, err = s.Tokens.Status(c, raw, app)
	}
	if err != nil {
		writeError(ctx, err)
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, AppendTokenResults(nil, rs))
}

func (s *Server) wallet(ctx *fasthttp.RequestCtx, idText []byte) {
	app, ok := s.appOf(ctx)
	if !ok {
		return
	}
	actID, err := strconv.ParseUint(string(idText), 10, 64)
	if err != nil || actID == 0 {
		writeError(ctx, errcode.Errorf(errcode.CodeMalformed, "act_id %q: want a positive integer", idText))
		return
	}
	// Read bounds its own I/O: a user who holds nothing is answered from
	// memory, with no timer to set.
	sum, err := s.Wallet.Read(context.Background(), actID)
	switch {
	case errors.Is(err, wallet.ErrNotFound):
		writeError(ctx, errcode.Errorf(errcode.CodeNotFound, "no account %d", actID))
		return
	case err != nil:
		writeError(ctx, unavailable(err))
		return
	}
	// A user who holds nothing is answered by the first layer alone,
	// without the account's identities: its empty wallet shows nothing to
	// any app, as an account with no record does.
	if app != 0 && sum.Recorded && !slices.ContainsFunc(sum.Apps, func(u ledger.AppUser) bool { return u.AppID == app }) {
		writeError(ctx, errNotReached(actID, app, &ledger.Account{ActID: actID}))
		return
	}
	ids, err := walletIdentities(ctx, app, sum)
	if err != nil {
		writeError(ctx, err)
		return
	}
	ctx.Response.Header.Set("X-Redrain-Wallet-Source", sum.Source.String())
	b := []byte(`{"act_id":`)
	b = strconv.AppendUint(b, actID, 10)
	b = append(b, `,"balances":[`...)
	for i, bal := range sum.Balances {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"asset":`...)
		b = errcode.AppendJSONString(b, string(bal.Asset))
		b = append(b, `,"kind":`...)
		b = errcode.AppendJSONString(b, bal.Asset.Kind())
		b = append(b, `,"balance":`...)
		b = strconv.AppendInt(b, bal.Amount, 10)
		b = append(b, '}')
	}
	b = append(b, ']')
	stale := sum.Stale
	if s.Sync != nil {
		c, cancel := context.WithTimeout(context.Background(), requestTimeout)
		var linesStale bool
		b, linesStale = s.walletLines(c, b, ids)
		cancel()
		stale = stale || linesStale
	}
	slots, version := json.RawMessage(`[]`), uint64(0)
	if s.Presentation != nil {
		slots, version = s.Presentation.For(actID)
	}
	b = append(b, `,"slots":`...)
	b = append(b, slots...)
	b = append(b, `,"presentation_version":`...)
	b = strconv.AppendUint(b, version, 10)
	b = append(b, `,"stale":`...)
	b = strconv.AppendBool(b, stale)
	writeJSON(ctx, fasthttp.StatusOK, append(b, '}'))
}

// walletIdentities are the app identities whose business-line assets a
// wallet answer shows: the signing app's user on the account, or the one
// the request names (?user_id=, with ?app_id= when unsigned), or, unsigned,
// every identity on the account.
func walletIdentities(ctx *fasthttp.RequestCtx, app uint32, sum wallet.Summary) ([]ledger.AppUser, error) {
	args := ctx.QueryArgs()
	if user := args.Peek("user_id"); len(user) > 0 {
		if len(user) > 128 {
			return nil, errcode.Errorf(errcode.CodeMalformed, "user_id: at most 128 bytes")
		}
		a := app
		if raw := args.Peek("app_id"); len(raw) > 0 {
			n, err := strconv.ParseUint(string(raw), 10, 32)
			if err != nil || n == 0 || app != 0 && uint32(n) != app {
				return nil, errcode.Errorf(errcode.CodeMalformed, "app_id %q: want the signing app's id, a positive integer", raw)
			}
			a = uint32(n)
		}
		if a == 0 {
			return nil, errcode.Errorf(errcode.CodeMalformed, "user_id without app_id: an unsigned request names the app")
		}
		return []ledger.AppUser{{AppID: a, UserID: string(user)}}, nil
	}
	if len(args.Peek("app_id")) > 0 {
		return nil, errcode.Errorf(errcode.CodeMalformed, "app_id without user_id")
	}
	var out []ledger.AppUser
	for _, u := range sum.Apps {
		if app == 0 || u.AppID == app {
			out = append(out, u)
		}
	}
	return out, nil
}

// walletLine is one business line's snapshot of one identity, as a wallet
// answer shows it.
type walletLine struct {
	App  uint32 `json:"app_id"`
	User string `json:"user_id"`
	lines.Snapshot
}

// walletLines appends the business lines' latest snapshots of ids
// (`,"lines":[...]`) and asks for their push-pull; stale when the
// snapshots could not be read.
func (s *Server) walletLines(c context.Context, b []byte, ids []ledger.AppUser) ([]byte, bool) {
	var out []walletLine
	stale := false
	for _, id := range ids {
		snaps, err := s.Sync.Snapshots(c, id.AppID, id.UserID)
		if err != nil {
			stale = true
			continue
		}
		for _, sn := range snaps {
			out = append(out, walletLine{App: id.AppID, User: id.UserID, Snapshot: sn})
		}
		s.Sync.Entered(id.AppID, id.UserID)
	}
	b = append(b, `,"lines":`...)
	if len(out) == 0 {
		return append(b, "[]"...), stale
	}
	j, err := json.Marshal(out)
	if err != nil {
		return append(b, "[]"...), true
	}
	return append(b, j...), stale
}

func writeError(ctx *fasthttp.RequestCtx, err error) { errcode.Write(ctx, err) }

func methodNotAllowed(ctx *fasthttp.RequestCtx, allow string) { errcode.MethodNotAllowed(ctx, allow) }

func writeJSON(ctx *fasthttp.RequestCtx, status int, body []byte) {
	errcode.WriteJSON(ctx, status, body)
}

// appendStats appends st as the JSON object of GET /admin/v1/stats to b.
// The issue-to-booked histogram is
// "issue_to_booked_seconds":{"bounds":[...],"cumulative":[...]}, with one
// more cumulative count than bounds (+Inf), and left out when st has none.
func appendStats(b []byte, st Stats) []byte {
	b = append(b, `{"grants_issued":`...)
	b = strconv.AppendInt(b, st.GrantsIssued, 10)
	b = append(b, `,"grants_booked":`...)
	b = strconv.AppendInt(b, st.GrantsBooked, 10)
	b = append(b, `,"booking_lag":`...)
	b = strconv.AppendInt(b, st.BookingLag, 10)
	b = append(b, `,"ready":`...)
	b = strconv.AppendBool(b, st.Ready)
	b = append(b, `,"cpu_seconds":`...)
	b = strconv.AppendFloat(b, st.CPUSeconds, 'f', 3, 64)
	b = append(b, `,"grant_records":`...)
	b = strconv.AppendInt(b, st.GrantRecords, 10)
	b = append(b, `,"allocs":`...)
	b = strconv.AppendInt(b, st.Allocs, 10)
	b = append(b, `,"alloc_bytes":`...)
	b = strconv.AppendInt(b, st.AllocBytes, 10)
	b = append(b, `,"booking_keys":`...)
	b = strconv.AppendInt(b, st.BookingKeys, 10)
	b = append(b, `,"booking_txns":`...)
	b = strconv.AppendInt(b, st.BookingTxns, 10)
	if len(st.IssueToBookedBounds) > 0 && len(st.IssueToBooked) == len(st.IssueToBookedBounds)+1 {
		b = append(b, `,"issue_to_booked_seconds":{"bounds":[`...)
		for i, v := range st.IssueToBookedBounds {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendFloat(b, v, 'g', -1, 64)
		}
		b = append(b, `],"cumulative":[`...)
		for i, n := range st.IssueToBooked {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, n, 10)
		}
		b = append(b, "]}"...)
	}
	return append(b, '}')
}
