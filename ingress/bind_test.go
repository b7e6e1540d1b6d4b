package ingress

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"redrain/booking"
	"redrain/campaign"
	"redrain/errcode"
	"redrain/grant"
	"redrain/grant/granttest"
	"redrain/ledger"
	"redrain/metrics"
	"redrain/protect"
	"redrain/storage"
	"redrain/storage/storagetest"
	"redrain/wallet"
)

// testServer is one node's HTTP API over real backends (redis-server, the
// embedded broker, the TiKV test cluster) with budget leases from memory
// and no booking: what the grant path and bind touch, nothing more.
type testServer struct {
	url    string
	srv    *Server
	grants *grant.Admission
	binder *Binder
	camp   *campaign.Campaign
	kv     *storage.TiKV
	pipe   *storage.Pipeliner
	rdb    *redis.Client
}

func newTestServer(t *testing.T, guard *protect.Guard) *testServer {
	t.Helper()
	return newServerOn(t, guard, false, 1)
}

// newServerOn is newTestServer on parts grant-topic partitions; an owner
// decides limits and bindings in process, as a node on the embedded
// broker does. Each of configure changes the server before it serves.
func newServerOn(t testing.TB, guard *protect.Guard, owner bool, parts int32, configure ...func(*Server)) *testServer {
	t.Helper()
	kv := storagetest.TiKV(t, "")
	addr := storagetest.Redis(t)
	rs, err := storage.OpenRedis(addr, 8)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rs.Close)
	// The index is whole (as a node's recovery leaves it): binders bind.
	if err := rs.Client.Set(context.Background(), storage.RedisEpochKey, "test", 0).Err(); err != nil {
		t.Fatal(err)
	}
	pipe := storage.NewPipeliner(rs.Client, 2)
	t.Cleanup(pipe.Close)
	k := storagetest.Kafka(t, "", parts)
	gw, err := storage.NewGrantWriter(k.Brokers, parts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gw.Close() })
	camp, err := campaign.Compile(campaign.Demo())
	if err != nil {
		t.Fatal(err)
	}
	reg := &metrics.Registry{}
	binder := NewBinder(kv, pipe, owner, parts)
	is := grant.New(grant.Config{Log: slog.New(slog.DiscardHandler), Campaign: camp, Resolver: binder,
		Stream: gw, Leases: granttest.NewBudget(1 << 40), Node: "n-test", Incarnation: 1,
		Metrics: reg, Clock: time.Now, Owner: true})
	t.Cleanup(func() { is.Close(context.Background()) })
	cat, err := camp.SeedCatalog()
	if err != nil {
		t.Fatal(err)
	}
	is.SetCatalog(cat)
	srv := &Server{Grants: is, Binder: binder, Campaign: camp, Tokens: NewTokens(camp, is.Catalog, kv, nil), TiKV: kv, Metrics: reg, Guard: guard,
		Wallet: wallet.New(wallet.Config{TiKV: kv, Parts: parts, Log: slog.New(slog.DiscardHandler)}),
		Ready:  func() error { return nil }}
	for _, c := range configure {
		c(srv)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = rdb.Close() })
	return &testServer{url: "http://" + ln.Addr().String(), srv: srv, grants: is, binder: binder, camp: camp, kv: kv, pipe: pipe, rdb: rdb}
}

// post sends body and returns the status, the Retry-After header and the
// body of the answer.
func (ts *testServer) post(t *testing.T, path, body string) (int, string, []byte) {
	t.Helper()
	resp, err := http.Post(ts.url+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	return resp.StatusCode, resp.Header.Get("Retry-After"), raw
}

type grantAnswer struct {
	Token      string `json:"token"`
	OutTradeNo string `json:"out_trade_no"`
	ActID      uint64 `json:"act_id"`
	AwardType  string `json:"award_type"`
	Amount     int64  `json:"amount"`
	Status     string `json:"status"`
}

func grantBody(app uint32, user string) string {
	return `{"app_id":` + strconv.FormatUint(uint64(app), 10) + `,"user_id":"` + user +
		`","activity_id":"demo","scene_id":"rain","rain_id":1}`
}

func (ts *testServer) grant(t *testing.T, app uint32, user string) grantAnswer {
	t.Helper()
	code, _, body := ts.post(t, "/v1/grants", grantBody(app, user))
	var g grantAnswer
	if code != http.StatusOK || json.Unmarshal(body, &g) != nil {
		t.Fatalf("grant to (%d, %s) = %d %s, want 200 and a packet", app, user, code, body)
	}
	return g
}

type errorAnswer struct {
	Code    errcode.Code `json:"code"`
	Message string       `json:"message"`
}

func bindBody(app uint32, user string, act uint64) string {
	return `{"app_id":` + strconv.FormatUint(uint64(app), 10) + `,"user_id":"` + user + `","act_id":` +
		strconv.FormatUint(act, 10) + `}`
}

// bindFails binds and expects the error code (and its HTTP status).
func (ts *testServer) bindFails(t *testing.T, body string, want errcode.Code) errorAnswer {
	t.Helper()
	code, _, raw := ts.post(t, "/v1/accounts/bind", body)
	var e errorAnswer
	if err := json.Unmarshal(raw, &e); err != nil || code != want.Status() || e.Code != want {
		t.Fatalf("bind %s = %d %s, want %d %s", body, code, raw, want.Status(), want)
	}
	return e
}

func (ts *testServer) bindOK(t *testing.T, app uint32, user string, act uint64, status string) {
	t.Helper()
	code, _, raw := ts.post(t, "/v1/accounts/bind", bindBody(app, user, act))
	want := string(AppendBindResponse(nil, &BindResponse{AppID: app, UserID: user, ActID: act, Status: status}))
	if code != http.StatusOK || string(raw) != want {
		t.Fatalf("bind (%d, %s) to %d = %d %s, want 200 %s", app, user, act, code, raw, want)
	}
}

// redisGet returns the value of key, "" when it is missing.
func (ts *testServer) redisGet(t *testing.T, key string) string {
	t.Helper()
	v, err := ts.rdb.Get(context.Background(), key).Result()
	if errors.Is(err, redis.Nil) {
		return ""
	}
	if err != nil {
		t.Fatalf("GET %s: %v", key, err)
	}
	return v
}

// durable reads the index key of (app, user) (0 when missing) and the
// account record of act (nil when missing) from TiKV.
func (ts *testServer) durable(t *testing.T, app uint32, user string, act uint64) (uint64, *ledger.Account) {
	t.Helper()
	ctx := context.Background()
	var bound uint64
	var acct *ledger.Account
	err := ts.kv.Update(ctx, func(txn storage.Txn) error {
		raw, err := storage.Get(ctx, txn, storage.BindKey(app, user))
		if err != nil {
			return err
		}
		if raw != nil {
			bound, _ = storage.ParseActIDValue(raw)
		}
		accounts, err := booking.ReadAccounts(ctx, txn, ts.binder.parts, []uint64{act})
		acct = accounts[act]
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return bound, acct
}

// TestBindUnifiesGrants binds app 2's user b to the account of app 1's
// user a, which has a grant for the rain but no booking yet: b's grant for
// the same rain is a's packet again (same act, trade number, award and
// amount, no budget spent), and the binding is in TiKV's index and in the
// account's Apps.
func TestBindUnifiesGrants(t *testing.T) {
	ts := newTestServer(t, nil)
	first := ts.grant(t, 1, "a")
	if first.Status != "issued" {
		t.Fatalf("first grant = %+v, want issued", first)
	}
	act := first.ActID

	ts.bindOK(t, 2, "b", act, BindStatusBound)
	ts.bindOK(t, 2, "b", act, BindStatusSame) // a repeated request
	ts.bindOK(t, 1, "a", act, BindStatusSame) // the identity that made the account
	if got := ts.redisGet(t, storage.BindMarkKey(2, "b")); got != strconv.FormatUint(act, 10) {
		t.Fatalf("after bind %s = %q, want %d", storage.BindMarkKey(2, "b"), got, act)
	}
	bound, acct := ts.durable(t, 2, "b", act)
	wantApps := []ledger.AppUser{{AppID: 1, UserID: "a"}, {AppID: 2, UserID: "b"}}
	if bound != act || acct == nil || acct.Version != 2 || len(acct.Entries) != 0 || !equalApps(acct.Apps, wantApps) {
		t.Fatalf("in TiKV: index %d, account %+v; want index %d and a version 2 account with apps %v, no entries", bound, acct, act, wantApps)
	}

	again := ts.grant(t, 2, "b")
	if again.ActID != act || again.OutTradeNo != first.OutTradeNo || again.AwardType != first.AwardType || again.Amount != first.Amount {
		t.Fatalf("grant to (2, b) after binding = %+v, want the packet of (1, a): %+v", again, first)
	}
	// The repeat answers the identical token: the mark carries the app of
	// the first grant, which the token seals.
	if again.Token != first.Token {
		t.Fatalf("token of (2, b)'s repeat differs from (1, a)'s")
	}
	if n := ts.grants.Issued(); n != 1 {
		t.Fatalf("grants issued = %d after a bound user's repeat, want 1 (no budget spent)", n)
	}

	// An account with a record is a bind target too.
	ts.bindOK(t, 5, "e", act, BindStatusBound)
}

func equalApps(a, b []ledger.AppUser) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestBindRefusals: a user bound elsewhere, an act_id never handed out and
// malformed requests are refused and change nothing.
func TestBindRefusals(t *testing.T) {
	ts := newTestServer(t, nil)
	a := ts.grant(t, 1, "a").ActID
	c := ts.grant(t, 3, "c").ActID
	if a == c {
		t.Fatalf("two users share act_id %d", a)
	}

	e := ts.bindFails(t, bindBody(3, "c", a), errcode.CodeAlreadyBound)
	if !strings.Contains(e.Message, "act_id "+strconv.FormatUint(c, 10)) {
		t.Errorf("already_bound message %q does not name act_id %d", e.Message, c)
	}
	if got := ts.redisGet(t, storage.BindMarkKey(3, "c")); got != strconv.FormatUint(c, 10) {
		t.Errorf("after a refused bind %s = %q, want %d still", storage.BindMarkKey(3, "c"), got, c)
	}
	if bound, acct := ts.durable(t, 3, "c", a); bound != 0 || acct != nil {
		t.Errorf("after a refused bind: index %d, account %+v; want neither written", bound, acct)
	}

	// Ids never handed out: past the allocation counter, and inside this
	// node's block but not given to anyone yet.
	for _, act := range []uint64{1 << 40, max(a, c) + 100} {
		ts.bindFails(t, bindBody(4, "d", act), errcode.CodeNotFound)
		if got := ts.redisGet(t, storage.BindMarkKey(4, "d")); got != "" {
			t.Errorf("after a bind to unknown act %d, %s = %q, want it unset", act, storage.BindMarkKey(4, "d"), got)
		}
		if bound, acct := ts.durable(t, 4, "d", act); bound != 0 || acct != nil {
			t.Errorf("after a bind to unknown act %d: index %d, account %+v; want neither written", act, bound, acct)
		}
	}

	ts.bindFails(t, bindBody(4, "d", 0), errcode.CodeMalformed)
	ts.bindFails(t, bindBody(4, "", a), errcode.CodeMalformed)
	ts.bindFails(t, `{"app_id":4,"user_id":"d","act_id":1,"x":1}`, errcode.CodeMalformed)
	ts.bindFails(t, `{"app_id":4,"user_id":"d","act_id":1}`+strings.Repeat(" ", BodyBytesMax), errcode.CodeTooLarge)
	resp, err := http.Get(ts.url + "/v1/accounts/bind")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "POST" {
		t.Errorf("GET /v1/accounts/bind = %d (Allow %q), want 405 with Allow POST", resp.StatusCode, resp.Header.Get("Allow"))
	}

	// A backend that is down: 503, retryable, nothing bound.
	ts.pipe.Close()
	code, retry, raw := ts.post(t, "/v1/accounts/bind", bindBody(4, "d", a))
	if code != http.StatusServiceUnavailable || retry == "" || !bytes.Contains(raw, []byte(`"code":"unavailable"`)) {
		t.Fatalf("bind with Redis unreachable = %d (Retry-After %q) %s, want 503 unavailable", code, retry, raw)
	}
	if got := ts.redisGet(t, storage.BindMarkKey(4, "d")); got != "" {
		t.Errorf("after a failed bind %s = %q, want it unset", storage.BindMarkKey(4, "d"), got)
	}
}

// TestBindDurableConflict: when TiKV's index binds the user elsewhere but
// Redis does not know it (a key lost without a rebuild), the index wins:
// 409, and Redis is set back to the durable binding.
func TestBindDurableConflict(t *testing.T) {
	ts := newTestServer(t, nil)
	a := ts.grant(t, 1, "a").ActID
	c := ts.grant(t, 3, "c").ActID
	ts.bindOK(t, 2, "b", c, BindStatusBound)
	if err := ts.rdb.Del(context.Background(), storage.BindMarkKey(2, "b")).Err(); err != nil {
		t.Fatal(err)
	}
	ts.binder.forget(2, "b")
	e := ts.bindFails(t, bindBody(2, "b", a), errcode.CodeAlreadyBound)
	if !strings.Contains(e.Message, "act_id "+strconv.FormatUint(c, 10)) {
		t.Errorf("message %q does not name the durable act_id %d", e.Message, c)
	}
	if got := ts.redisGet(t, storage.BindMarkKey(2, "b")); got != strconv.FormatUint(c, 10) {
		t.Errorf("after the conflict %s = %q, want the durable %d", storage.BindMarkKey(2, "b"), got, c)
	}
	if _, acct := ts.durable(t, 2, "b", a); acct != nil {
		t.Errorf("account %d = %+v after a refused bind, want none written", a, acct)
	}
	if g := ts.grant(t, 2, "b"); g.ActID != c {
		t.Errorf("grant to (2, b) = %+v, want act_id %d", g, c)
	}
}

// TestBadRainBindsNobody: a grant for a rain no served version has, or
// has open, is refused before the user is bound, so bad input hands out
// no act_id.
func TestBadRainBindsNobody(t *testing.T) {
	ts := newTestServer(t, nil)
	for _, rain := range []int{2, 999} {
		code, _, body := ts.post(t, "/v1/grants",
			fmt.Sprintf(`{"app_id":1,"user_id":"nobody","activity_id":"demo","scene_id":"rain","rain_id":%d}`, rain))
		if code != 404 || !strings.Contains(string(body), string(errcode.CodeUnknownRain)) {
			t.Fatalf("grant for rain %d: %d %s, want 404 unknown_rain", rain, code, body)
		}
	}
	if v := ts.redisGet(t, storage.BindMarkKey(1, "nobody")); v != "" {
		t.Fatalf("a refused grant bound the user to act %s", v)
	}
}

// TestBindFloodIsBounded: binds to one account beyond its burst are
// refused 429 rate_limited with a Retry-After and bind nothing; with time
// passing, an account takes identities up to AccountIdentitiesMax, then
// refuses another 409 too_many_identities (binding nothing), while a
// repeat of a bound identity still answers already_bound_same.
func TestBindFloodIsBounded(t *testing.T) {
	ts := newTestServer(t, nil)
	act := ts.grant(t, 1, "owner").ActID
	var clock time.Time = time.Unix(1_900_000_000, 0)
	ts.binder.now = func() time.Time { return clock }
	for i := range bindsPerAccountBurst {
		ts.bindOK(t, 2, fmt.Sprintf("burst-%d", i), act, BindStatusBound)
	}
	code, retry, raw := ts.post(t, "/v1/accounts/bind", bindBody(2, "one-too-many", act))
	if code != http.StatusTooManyRequests || retry == "" || !bytes.Contains(raw, []byte(`"code":"rate_limited"`)) {
		t.Fatalf("bind past the burst = %d (Retry-After %q) %s, want 429 rate_limited", code, retry, raw)
	}
	if got := ts.redisGet(t, storage.BindMarkKey(2, "one-too-many")); got != "" {
		t.Fatalf("a refused bind set %s = %q", storage.BindMarkKey(2, "one-too-many"), got)
	}
	// One more identity per half second, up to the cap (the grant's
	// identity is not on the record: nothing books in this harness).
	for i := bindsPerAccountBurst; i < AccountIdentitiesMax; i++ {
		clock = clock.Add(time.Second / bindsPerAccountPerSecondMax)
		ts.bindOK(t, 3, fmt.Sprintf("later-%d", i), act, BindStatusBound)
	}
	clock = clock.Add(time.Minute)
	ts.bindFails(t, bindBody(4, "past-the-cap", act), errcode.CodeTooManyIdentities)
	if got := ts.redisGet(t, storage.BindMarkKey(4, "past-the-cap")); got != "" {
		t.Fatalf("a bind past the cap set %s = %q", storage.BindMarkKey(4, "past-the-cap"), got)
	}
	ts.bindOK(t, 2, "burst-0", act, BindStatusSame)
	_, acct := ts.durable(t, 2, "burst-0", act)
	if len(acct.Apps) != AccountIdentitiesMax {
		t.Fatalf("the account holds %d identities, want %d", len(acct.Apps), AccountIdentitiesMax)
	}
}
