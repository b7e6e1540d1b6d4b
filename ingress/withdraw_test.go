package ingress

import (
	"context"
	"encoding/json"
	"net"
	"testing"
	"time"

	"redrain/adminauth"
	"redrain/ledger"
	"redrain/storage"
	"redrain/withdraw"
	"redrain/withdraw/paytest"
	"redrain/withdraw/withdrawtest"
)

// recordedAccounts answers Accounts from a map (the accounts on record)
// and books nothing.
type recordedAccounts map[uint64]*ledger.Account

func (r recordedAccounts) Book(context.Context, []ledger.Grant) ([]byte, error) { return nil, nil }
func (r recordedAccounts) Accounts(_ context.Context, ids []uint64) (map[uint64]*ledger.Account, error) {
	out := map[uint64]*ledger.Account{}
	for _, id := range ids {
		if a := r[id]; a != nil {
			out[id] = a
		}
	}
	return out, nil
}

// TestWithdrawalRoutes drives POST /v1/withdrawals and GET
// /v1/withdrawals/{id} over a server with app keys, the withdrawal
// service over a store in memory, a ledger in memory and the payout test
// server over HTTP.
func TestWithdrawalRoutes(t *testing.T) {
	keys, err := adminauth.ParseAppKeys(appKeys)
	if err != nil {
		t.Fatal(err)
	}
	led := withdrawtest.NewLedger()
	led.Issue(7, 10, 100)
	pay := paytest.New()
	defer pay.Close()
	svc, err := withdraw.New(storage.NewMemoryStore().Client(nil), led, led, led, withdraw.Config{
		AmountMin: 100, AmountMax: 100_000, Node: "n1",
		Channels: map[string]withdraw.Channel{"bank": withdraw.NewHTTPChannel(pay.URL, time.Second)},
	})
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{
		Apps:        &adminauth.Verifier{Keys: keys, Window: adminauth.AppWindowDefault, Nonces: adminauth.NewHashNonces(2 * adminauth.AppWindowDefault)},
		Ready:       func() error { return nil },
		Ledger:      recordedAccounts{7: {ActID: 7, Apps: []ledger.AppUser{{AppID: 1, UserID: "u7"}}}},
		Withdrawals: svc,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(ln) }()
	defer func() { _ = s.Shutdown(context.Background()) }()
	ts := &testServer{url: "http://" + ln.Addr().String()}
	app1, app2 := appSigner(t, 0), appSigner(t, 1)
	body := func(amount int, channel, req string) string {
		b, _ := json.Marshal(map[string]any{"act_id": 7, "amount": amount, "channel": channel, "request_id": req})
		return string(b)
	}

	wantAnswer(t, "unsigned", ts.send(t, "POST", "/v1/withdrawals", body(300, "bank", "r1"), nil), 401, "unauthorized")
	wantAnswer(t, "another app's user", ts.signed(t, app2, "POST", "/v1/withdrawals", body(300, "bank", "r1")), 403, "forbidden")
	// A user not on record yet whose packets of the app are outstanding.
	led.Issue(8, 2, 100)
	fresh := `{"act_id":8,"amount":150,"channel":"bank","request_id":"f"}`
	wantAnswer(t, "a fresh user of another app", ts.signed(t, app2, "POST", "/v1/withdrawals", fresh), 403, "forbidden")
	wantAnswer(t, "a fresh user", ts.signed(t, app1, "POST", "/v1/withdrawals", fresh), 200, "")
	wantAnswer(t, "malformed", ts.signed(t, app1, "POST", "/v1/withdrawals", `{"act_id":7,"amount":"300","channel":"bank","request_id":"r1"}`), 400, "malformed_request")
	wantAnswer(t, "unknown channel", ts.signed(t, app1, "POST", "/v1/withdrawals", body(300, "post", "r1")), 400, "unknown_channel")
	wantAnswer(t, "too little", ts.signed(t, app1, "POST", "/v1/withdrawals", body(99, "bank", "r1")), 400, "amount_out_of_range")
	wantAnswer(t, "more than the cash", ts.signed(t, app1, "POST", "/v1/withdrawals", body(5000, "bank", "r0")), 409, "insufficient_funds")
	wantAnswer(t, "GET", ts.signed(t, app1, "GET", "/v1/withdrawals", ""), 405, "method_not_allowed")

	ok := ts.signed(t, app1, "POST", "/v1/withdrawals", body(300, "bank", "r1"))
	wantAnswer(t, "withdrawal", ok, 200, "")
	var w struct {
		ID, State, Channel, ChannelRef string
		Amount                         int64
		Attempts                       int
	}
	if err := json.Unmarshal(ok.body, &w); err != nil || w.State != "settled" || w.Amount != 300 || w.ID != withdraw.ID(1, "r1") {
		t.Fatalf("answer %s: %v", ok.body, err)
	}
	wantAnswer(t, "repeat", ts.signed(t, app1, "POST", "/v1/withdrawals", body(300, "bank", "r1")), 200, "")
	wantAnswer(t, "request id reused", ts.signed(t, app1, "POST", "/v1/withdrawals", body(400, "bank", "r1")), 409, "request_id_reused")
	got := ts.signed(t, app1, "GET", "/v1/withdrawals/"+w.ID, "")
	wantAnswer(t, "get", got, 200, "")
	if string(got.body) != string(ok.body) {
		t.Errorf("GET = %s, POST answered %s", got.body, ok.body)
	}
	wantAnswer(t, "get by another app", ts.signed(t, app2, "GET", "/v1/withdrawals/"+w.ID, ""), 404, "withdrawal_not_found")
	wantAnswer(t, "get unknown", ts.signed(t, app1, "GET", "/v1/withdrawals/"+withdraw.ID(1, "nope"), ""), 404, "withdrawal_not_found")
	wantAnswer(t, "get malformed", ts.signed(t, app1, "GET", "/v1/withdrawals/XYZ", ""), 400, "malformed_request")
	if c, c8 := led.Balance(ledger.UserAccount(7), ledger.AssetCash), led.Balance(ledger.UserAccount(8), ledger.AssetCash); c != 700 || c8 != 50 || pay.PaidTotal() != 450 {
		t.Errorf("cash %d and %d, paid %d: want 700, 50, 450", c, c8, pay.PaidTotal())
	}
}
