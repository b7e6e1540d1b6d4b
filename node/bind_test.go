package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"testing"

	"redrain/node"
	"redrain/storage"
	"redrain/storage/storagetest"
)

type bindRequest struct {
	AppID   uint32   `json:"app_id"`
	UserID  string   `json:"user_id"`
	ActID   uint64   `json:"act_id"`
	Consent *consent `json:"consent,omitempty"`
}

// consentedBind is the bind of app's user to act with the consent of app
// by, which act holds.
func consentedBind(app uint32, user string, act uint64, by uint32) bindRequest {
	return bindRequest{app, user, act, consentOf(by, app, user, act)}
}

type bindAnswer struct {
	bindRequest
	Status string `json:"status"`
}

// bind binds app's user to act with the consent of app by, which act
// holds.
func bind(t *testing.T, n *node.Node, app uint32, user string, act uint64, by uint32, wantStatus string) {
	t.Helper()
	var got bindAnswer
	if err := post(n, "/v1/accounts/bind", consentedBind(app, user, act, by), &got); err != nil {
		t.Fatal(err)
	}
	if want := (bindAnswer{bindRequest{AppID: app, UserID: user, ActID: act}, wantStatus}); got != want {
		t.Fatalf("bind = %+v, want %+v", got, want)
	}
}

// postCode posts in and returns the status and the error code answered.
func postCode(t *testing.T, n *node.Node, path string, in any) (int, string) {
	t.Helper()
	raw, _ := json.Marshal(in)
	resp, err := httpClient.Post(urlOf(n, path), "application/json", bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var e struct {
		Code string `json:"code"`
	}
	_ = json.Unmarshal(body, &e)
	return resp.StatusCode, e.Code
}

func grantOf(t *testing.T, n *node.Node, app uint32, user string) grantAnswer {
	t.Helper()
	req := demoGrant(user)
	req.AppID = app
	var g grantAnswer
	if err := post(n, "/v1/grants", req, &g); err != nil {
		t.Fatal(err)
	}
	return g
}

type wallet struct {
	ActID    uint64 `json:"act_id"`
	Balances []struct {
		AwardType string `json:"award_type"`
		Balance   int64  `json:"balance"`
	} `json:"balances"`
}

// TestBindAcrossApps binds app 2's user b to the account of app 1's user
// a on a whole node: b's grant for a's rain is a's packet and spends
// nothing, booking books one packet into one wallet, a conflicting bind
// changes nothing, and after Redis loses everything the rebuild restores
// the explicit bindings, including one whose user never had a grant.
func TestBindAcrossApps(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	addr := storagetest.Redis(t)
	rdb := redisClient(t, addr)

	n1 := startNode(t, dir, addr)
	a := grantOf(t, n1, 1, "a")
	act := a.ActID
	waitBooked(t, n1, 1) // a's identity on the account's record: app 1 may consent
	bind(t, n1, 2, "b", act, 1, "bound")
	b := grantOf(t, n1, 2, "b")
	if b.ActID != act || b.OutTradeNo != a.OutTradeNo || b.AwardType != a.AwardType || b.Amount != a.Amount {
		t.Fatalf("grant to (2, b) = %+v, want (1, a)'s packet %+v", b, a)
	}
	c := grantOf(t, n1, 3, "c")
	if code, ec := postCode(t, n1, "/v1/accounts/bind", consentedBind(3, "c", act, 1)); code != http.StatusConflict || ec != "already_bound" {
		t.Fatalf("bind (3, c) to %d = %d %s, want 409 already_bound", act, code, ec)
	}
	bind(t, n1, 4, "d", act, 1, "bound") // a user with no grant yet
	waitBooked(t, n1, 2)
	if s := getStats(t, n1); s.GrantsIssued != 2 {
		t.Fatalf("stats = %+v, want 2 grants issued (a's and c's)", s)
	}
	code, body := get(t, n1, "/v1/wallet/"+strconv.FormatUint(act, 10))
	var w wallet
	if code != http.StatusOK || json.Unmarshal(body, &w) != nil || len(w.Balances) != 1 || w.Balances[0].Balance != a.Amount {
		t.Fatalf("wallet of %d = %d %s, want one cash balance of %d", act, code, body, a.Amount)
	}
	audit(t, n1)
	stopNode(t, n1)

	// An index entry whose account's Apps lacks it (the bind transaction
	// writes both, so only the index scan of the rebuild can restore it).
	kv := openStore(t, dir)
	if err := kv.Update(ctx, func(txn storage.Txn) error {
		return txn.Set(storage.BindKey(6, "f"), storage.ActIDValue(act))
	}); err != nil {
		t.Fatal(err)
	}
	if err := kv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	n2 := startNode(t, dir, addr)
	for _, tt := range []struct {
		app  uint32
		user string
		act  uint64
	}{{1, "a", act}, {2, "b", act}, {4, "d", act}, {6, "f", act}, {3, "c", c.ActID}} {
		key := storage.BindMarkKey(tt.app, tt.user)
		if got, err := rdb.Get(ctx, key).Result(); err != nil || got != strconv.FormatUint(tt.act, 10) {
			t.Errorf("after the rebuild %s = %q (%v), want %d", key, got, err, tt.act)
		}
	}
	d := grantOf(t, n2, 4, "d")
	if d.ActID != act || d.OutTradeNo != a.OutTradeNo || d.Amount != a.Amount || d.Status != "booked" {
		t.Fatalf("grant to (4, d) after the rebuild = %+v, want (1, a)'s booked packet %+v", d, a)
	}
	if code, ec := postCode(t, n2, "/v1/accounts/bind", consentedBind(2, "b", c.ActID, 3)); code != http.StatusConflict || ec != "already_bound" {
		t.Fatalf("bind (2, b) to %d after the rebuild = %d %s, want 409 already_bound", c.ActID, code, ec)
	}
	if s := getStats(t, n2); s.GrantsIssued != 0 {
		t.Fatalf("stats = %+v, want no grant issued after the rebuild", s)
	}
	audit(t, n2)
}
