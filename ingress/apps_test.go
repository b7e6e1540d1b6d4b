package ingress

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"redrain/adminauth"
)

// appKeys are the app keys of TestAppsAuthenticated's server: apps 1-3.
var appKeys = []string{
	"1:" + strings.Repeat("1a", 32),
	"2:" + strings.Repeat("2b", 32),
	"3.k2:" + strings.Repeat("3c", 32),
}

func appSigner(t testing.TB, i int) *adminauth.Signer {
	t.Helper()
	return &adminauth.Signer{Key: adminauth.MustParseKey(appKeys[i])}
}

// appAnswer is one HTTP answer of the app API.
type appAnswer struct {
	status int
	body   []byte
}

func (a appAnswer) code() string {
	var e struct {
		Code string `json:"code"`
	}
	_ = json.Unmarshal(a.body, &e)
	return e.Code
}

// send sends method path with body, signed with the headers h (nil:
// unsigned).
func (ts *testServer) send(t *testing.T, method, path, body string, h http.Header) appAnswer {
	t.Helper()
	req, err := http.NewRequest(method, ts.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return appAnswer{resp.StatusCode, raw}
}

// signed sends method path with body signed by s.
func (ts *testServer) signed(t *testing.T, s *adminauth.Signer, method, path, body string) appAnswer {
	t.Helper()
	h, err := s.Headers(method, path, "", []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return ts.send(t, method, path, body, h)
}

func wantAnswer(t *testing.T, what string, got appAnswer, status int, code string) {
	t.Helper()
	if got.status != status || got.code() != code {
		t.Fatalf("%s = %d %s, want %d %s", what, got.status, got.body, status, code)
	}
}

// TestAppsAuthenticated: a server with app keys refuses unsigned,
// altered, replayed and expired /v1 requests with 401 and issues nothing
// for them; a signed app reaches only its own users: their grants (single,
// pipelined, batch items), tokens, wallets and binds, and another app's
// account only with the consent of an app the account holds.
func TestAppsAuthenticated(t *testing.T) {
	ctx := context.Background()
	keys, err := adminauth.ParseAppKeys(appKeys)
	if err != nil {
		t.Fatal(err)
	}
	var booker *accountBooker
	ts := newServerOn(t, nil, false, 1, func(s *Server) {
		s.Apps = &adminauth.Verifier{Keys: keys, Window: adminauth.AppWindowDefault, Nonces: adminauth.NewHashNonces(2 * adminauth.AppWindowDefault)}
		booker = newAccountBookerOn(s.TiKV, 1) // the binder's partitions
		s.Tokens, s.Ledger = NewTokens(s.Campaign, s.Grants.Catalog, s.TiKV, booker), booker
	})
	app1, app2, app3 := appSigner(t, 0), appSigner(t, 1), appSigner(t, 2)
	grantA := `{"app_id":1,"user_id":"a","activity_id":"demo","scene_id":"rain","rain_id":1}`

	wantAnswer(t, "unsigned grant", ts.send(t, "POST", "/v1/grants", grantA, nil), 401, "unauthorized")
	h, _ := app1.Headers("POST", "/v1/grants", "", []byte(grantA))
	altered := strings.Replace(grantA, `"a"`, `"z"`, 1)
	wantAnswer(t, "altered grant", ts.send(t, "POST", "/v1/grants", altered, h), 401, "unauthorized")
	late := &adminauth.Signer{Key: app1.Key, Now: func() time.Time { return time.Now().Add(-2 * time.Minute) }}
	wantAnswer(t, "expired grant", ts.signed(t, late, "POST", "/v1/grants", grantA), 401, "unauthorized")
	if n := ts.grants.Issued(); n != 0 {
		t.Fatalf("%d grants issued for refused requests", n)
	}
	first := ts.send(t, "POST", "/v1/grants", grantA, h)
	wantAnswer(t, "signed grant", first, 200, "")
	var a grantAnswer
	if err := json.Unmarshal(first.body, &a); err != nil || a.ActID == 0 {
		t.Fatalf("grant answer %s: %v", first.body, err)
	}
	wantAnswer(t, "replayed grant", ts.send(t, "POST", "/v1/grants", grantA, h), 401, "unauthorized")
	wantAnswer(t, "app 1 granting to app 2's user", ts.signed(t, app1, "POST", "/v1/grants",
		`{"app_id":2,"user_id":"b","activity_id":"demo","scene_id":"rain","rain_id":1}`), 403, "forbidden")

	// Pipelined on one connection: each request is checked on its own.
	pipelined := pipeline(t, ts.url, []string{
		signedRaw(t, app2, grantBody(2, "p1")),
		postReq("/v1/grants", grantBody(2, "p2")),
		signedRaw(t, app2, grantBody(1, "p3")),
	})
	for i, want := range []int{200, 401, 403} {
		if pipelined[i].StatusCode != want {
			t.Fatalf("pipelined answer %d: %d, want %d", i, pipelined[i].StatusCode, want)
		}
	}

	// A batch signs once; an item for another app is refused alone.
	batch := ts.signed(t, app1, "POST", "/v1/grants/batch", `{"grants":[`+
		`{"app_id":1,"user_id":"c","activity_id":"demo","scene_id":"rain","rain_id":1},`+
		`{"app_id":3,"user_id":"d","activity_id":"demo","scene_id":"rain","rain_id":1}]}`)
	var br struct {
		Results []struct {
			Token string `json:"token"`
			Code  string `json:"code"`
		} `json:"results"`
	}
	if err := json.Unmarshal(batch.body, &br); err != nil || batch.status != 200 || len(br.Results) != 2 ||
		br.Results[0].Token == "" || br.Results[1].Code != "forbidden" {
		t.Fatalf("batch = %d %s, want the first issued and the second forbidden", batch.status, batch.body)
	}
	wantAnswer(t, "unsigned batch", ts.send(t, "POST", "/v1/grants/batch", `{"grants":[`+grantA+`]}`, nil), 401, "unauthorized")
	if n := ts.grants.Issued(); n != 3 {
		t.Fatalf("%d grants issued, want 3 (a, p1, c)", n)
	}

	// Tokens: another app's token is invalid for the asker, and not booked.
	tokens := `{"tokens":["` + a.Token + `"]}`
	for _, path := range []string{"/v1/tokens/status", "/v1/tokens/redeem"} {
		got := ts.signed(t, app2, "POST", path, tokens)
		if got.status != 200 || !strings.Contains(string(got.body), `"status":"invalid"`) || !strings.Contains(string(got.body), "app 1's") {
			t.Fatalf("%s of app 1's token by app 2 = %d %s, want invalid", path, got.status, got.body)
		}
	}
	if len(booker.booked) != 0 {
		t.Fatalf("booked %d grants for another app's token", len(booker.booked))
	}
	if got := ts.signed(t, app1, "POST", "/v1/tokens/status", tokens); got.status != 200 || !strings.Contains(string(got.body), `"status":"issued"`) {
		t.Fatalf("status of app 1's token by app 1 = %d %s", got.status, got.body)
	}
	wantAnswer(t, "unsigned status", ts.send(t, "POST", "/v1/tokens/status", tokens, nil), 401, "unauthorized")

	// Wallets and binds. a's account has no record yet: its wallet is
	// empty to anyone, and no app reaches it for a bind.
	act := strconv.FormatUint(a.ActID, 10)
	wallet := "/v1/wallet/" + act
	wantAnswer(t, "wallet with no record", ts.signed(t, app2, "GET", wallet, ""), 200, "")
	bindB := fmt.Sprintf(`{"app_id":2,"user_id":"b","act_id":%s}`, act)
	wantAnswer(t, "bind before the account is on record", ts.signed(t, app2, "POST", "/v1/accounts/bind", bindB), 403, "forbidden")
	// a's identity on record, as booking or an explicit bind leaves it.
	if _, err := ts.binder.Bind(ctx, 1, "a", a.ActID, nil); err != nil {
		t.Fatal(err)
	}
	wantAnswer(t, "wallet by the account's app", ts.signed(t, app1, "GET", wallet, ""), 200, "")
	wantAnswer(t, "wallet by another app", ts.signed(t, app2, "GET", wallet, ""), 403, "forbidden")
	wantAnswer(t, "unsigned wallet", ts.send(t, "GET", wallet, "", nil), 401, "unauthorized")
	wantAnswer(t, "app 1 binding app 2's user", ts.signed(t, app1, "POST", "/v1/accounts/bind", bindB), 403, "forbidden")
	wantAnswer(t, "bind to another app's account, no consent", ts.signed(t, app2, "POST", "/v1/accounts/bind", bindB), 403, "forbidden")
	consented := func(k *adminauth.Signer, user string) string {
		c := adminauth.SignConsent(k.Key, 2, user, a.ActID, time.Now().Add(time.Hour))
		return fmt.Sprintf(`{"app_id":2,"user_id":%q,"act_id":%s,"consent":{"key":%q,"expires":%d,"signature":%q}}`,
			user, act, c.KeyID, c.Expires, c.Signature)
	}
	wantAnswer(t, "consent of an app the account does not hold", ts.signed(t, app2, "POST", "/v1/accounts/bind", consented(app3, "b")), 403, "forbidden")
	forged := strings.Replace(consented(app1, "b"), `"user_id":"b"`, `"user_id":"e"`, 1)
	wantAnswer(t, "consent for another user", ts.signed(t, app2, "POST", "/v1/accounts/bind", forged), 401, "unauthorized")
	for _, user := range []string{"b", "e"} {
		if got, err := ts.binder.Resolve(ctx, 2, user); err != nil || got == a.ActID {
			t.Fatalf("after refused binds (2, %s) resolves to %d (%v), the account they asked for", user, got, err)
		}
	}
	wantAnswer(t, "bind with the account's app's consent", ts.signed(t, app2, "POST", "/v1/accounts/bind", consented(app1, "f")), 200, "")
	wantAnswer(t, "wallet by the newly bound app", ts.signed(t, app2, "GET", wallet, ""), 200, "")
	wantAnswer(t, "bind of app 2's second user, now that A holds app 2", ts.signed(t, app2, "POST", "/v1/accounts/bind",
		fmt.Sprintf(`{"app_id":2,"user_id":"g","act_id":%s}`, act)), 200, "")
}

// signedRaw is postReq of a /v1/grants body signed by s.
func signedRaw(t *testing.T, s *adminauth.Signer, body string) string {
	t.Helper()
	h, err := s.Headers("POST", "/v1/grants", "", []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for k := range h {
		b.WriteString(k + ": " + h.Get(k) + "\r\n")
	}
	r := postReq("/v1/grants", body)
	i := strings.Index(r, "\r\n") + 2
	return r[:i] + b.String() + r[i:]
}
