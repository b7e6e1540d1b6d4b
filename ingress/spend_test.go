package ingress

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"redrain/adminauth"
	"redrain/errcode"
	"redrain/ledger"
	"redrain/spend"
	"redrain/spend/spendtest"
)

func TestParseSpendRequest(t *testing.T) {
	valid := []struct {
		op   spend.Op
		body string
		want spend.Request
	}{
		{spend.OpRecharge, `{"request_id":"r-1","app_id":3,"act_id":7,"amount":100,"currency":"gold"}`,
			spend.Request{Op: spend.OpRecharge, RequestID: "r-1", AppID: 3, ActID: 7, Amount: 100, Asset: "coin:gold"}},
		{spend.OpConsume, ` { "merchant_id" : "shop.1", "asset":"cash:general","amount":30,"act_id":7,"app_id":3,"request_id":"c_1"} `,
			spend.Request{Op: spend.OpConsume, RequestID: "c_1", AppID: 3, ActID: 7, Amount: 30, Asset: ledger.AssetGeneral, MerchantID: "shop.1"}},
		{spend.OpRefund, `{"request_id":"f-1","app_id":3,"act_id":7,"amount":5,"asset":"cash","merchant_id":"shop","consumption_id":"c-1"}`,
			spend.Request{Op: spend.OpRefund, RequestID: "f-1", AppID: 3, ActID: 7, Amount: 5, Asset: ledger.AssetCash, MerchantID: "shop", Consumption: "c-1"}},
		{spend.OpReverse, `{"request_id":"v-1","app_id":3,"act_id":7,"amount":30,"asset":"item:card","merchant_id":"shop","consumption_id":"c-1"}`,
			spend.Request{Op: spend.OpReverse, RequestID: "v-1", AppID: 3, ActID: 7, Amount: 30, Asset: "item:card", MerchantID: "shop", Consumption: "c-1"}},
		{spend.OpTransfer, `{"request_id":"t-1","app_id":3,"act_id":7,"amount":2,"asset":"coin:gold","to_act_id":18446744073709551615}`,
			spend.Request{Op: spend.OpTransfer, RequestID: "t-1", AppID: 3, ActID: 7, Amount: 2, Asset: "coin:gold", ToActID: 1<<64 - 1}},
		{spend.OpGift, `{"request_id":"g\u002d1","app_id":3,"act_id":7,"amount":1,"asset":"item:rose","to_act_id":8}`,
			spend.Request{Op: spend.OpGift, RequestID: "g-1", AppID: 3, ActID: 7, Amount: 1, Asset: "item:rose", ToActID: 8}},
		{spend.OpExpire, `{"request_id":"e-1","app_id":3,"act_id":7,"amount":1000000000000,"asset":"coin:gold"}`,
			spend.Request{Op: spend.OpExpire, RequestID: "e-1", AppID: 3, ActID: 7, Amount: spend.AmountMax, Asset: "coin:gold"}},
		{spend.OpExpire, `{"request_id":"e-2","app_id":3,"act_id":7,"amount":1,"asset":"coin:gold","budget_id":"act-9"}`,
			spend.Request{Op: spend.OpExpire, RequestID: "e-2", AppID: 3, ActID: 7, Amount: 1, Asset: "coin:gold", BudgetID: "act-9"}},
	}
	for _, tc := range valid {
		got, err := ParseSpendRequest(tc.op, []byte(tc.body))
		if err != nil || got != tc.want {
			t.Errorf("ParseSpendRequest(%s, %s) = %+v, %v, want %+v", tc.op, tc.body, got, err, tc.want)
		}
	}
	const consume = `{"request_id":"c-1","app_id":3,"act_id":7,"amount":30,"asset":"coin:gold","merchant_id":"shop"}`
	with := func(old, new string) string { return strings.Replace(consume, old, new, 1) }
	bad := []struct {
		op         spend.Op
		body, want string
	}{
		{spend.OpConsume, ``, "empty body"},
		{spend.OpConsume, `[]`, "'{'"},
		{spend.OpConsume, with(`,"merchant_id":"shop"`, ``), `missing field "merchant_id"`},
		{spend.OpConsume, with(`"amount":30`, `"amount":30,"to_act_id":8`), `unknown field "to_act_id"`},
		{spend.OpConsume, with(`"amount":30`, `"amount":30,"amount":31`), `duplicate field "amount"`},
		{spend.OpConsume, with(`30`, `"30"`), `"amount": want a positive integer`},
		{spend.OpConsume, with(`30`, `0`), `"amount": want a positive integer`},
		{spend.OpConsume, with(`30`, `-30`), `"amount"`},
		{spend.OpConsume, with(`30`, `3.5`), `"amount"`},
		{spend.OpConsume, with(`30`, `1000000000001`), `"amount": want a positive integer at most`},
		{spend.OpConsume, with(`"app_id":3`, `"app_id":4294967296`), `"app_id"`},
		{spend.OpConsume, with(`"c-1"`, `"c 1"`), `"request_id"`},
		{spend.OpConsume, with(`"c-1"`, `""`), `"request_id"`},
		{spend.OpConsume, with(`"c-1"`, `"`+strings.Repeat("c", 65)+`"`), `"request_id"`},
		{spend.OpConsume, with(`"c-1"`, `7`), `"request_id": want a string`},
		{spend.OpConsume, with(`"coin:gold"`, `"gold"`), `"asset"`},
		{spend.OpConsume, with(`"coin:gold"`, `"cash:transit"`), `"asset"`},
		{spend.OpConsume, with(`"shop"`, `"shop/1"`), `"merchant_id"`},
		{spend.OpConsume, consume + `{}`, ""},
		{spend.OpTransfer, `{"request_id":"t","app_id":3,"act_id":7,"amount":2,"asset":"coin:gold","to_act_id":7}`, `"to_act_id"`},
		{spend.OpTransfer, `{"request_id":"t","app_id":3,"act_id":7,"amount":2,"asset":"cash","to_act_id":8}`, `"asset"`},
		{spend.OpRecharge, `{"request_id":"r","app_id":3,"act_id":7,"amount":2,"currency":"a:b"}`, `"currency"`},
		{spend.OpRecharge, `{"request_id":"r","app_id":3,"act_id":7,"amount":2,"asset":"coin:gold"}`, `unknown field "asset"`},
		{spend.OpRefund, `{"request_id":"f","app_id":3,"act_id":7,"amount":2,"asset":"coin:gold","merchant_id":"m","consumption_id":"f"}`, `"consumption_id"`},
	}
	for _, tc := range bad {
		_, err := ParseSpendRequest(tc.op, []byte(tc.body))
		var e *errcode.Error
		if !errors.As(err, &e) || e.Code != errcode.CodeMalformed || !strings.Contains(e.Message, tc.want) {
			t.Errorf("ParseSpendRequest(%s, %s) = %v, want malformed_request naming %s", tc.op, tc.body, err, tc.want)
		}
	}
	big := consume + strings.Repeat(" ", BodyBytesMax)
	var e *errcode.Error
	if _, err := ParseSpendRequest(spend.OpConsume, []byte(big)); !errors.As(err, &e) || e.Code != errcode.CodeTooLarge {
		t.Errorf("ParseSpendRequest(%d bytes) = %v, want request_too_large", len(big), err)
	}
}

// stdSpend is every field of every spending body, for encoding/json.
type stdSpend struct {
	RequestID     *string `json:"request_id"`
	AppID         *uint32 `json:"app_id"`
	ActID         *uint64 `json:"act_id"`
	ToActID       *uint64 `json:"to_act_id"`
	Amount        *int64  `json:"amount"`
	Asset         *string `json:"asset"`
	Currency      *string `json:"currency"`
	MerchantID    *string `json:"merchant_id"`
	ConsumptionID *string `json:"consumption_id"`
	BudgetID      *string `json:"budget_id"`
}

// FuzzParseSpendRequest checks the parser against encoding/json: what it
// accepts, encoding/json reads the same way and spend.Validate accepts;
// its errors keep the parser contract.
func FuzzParseSpendRequest(f *testing.F) {
	for _, s := range []string{
		`{"request_id":"r-1","app_id":3,"act_id":7,"amount":100,"currency":"gold"}`,
		`{"request_id":"c-1","app_id":3,"act_id":7,"amount":30,"asset":"coin:gold","merchant_id":"shop"}`,
		`{"request_id":"f-1","app_id":3,"act_id":7,"amount":5,"asset":"cash","merchant_id":"shop","consumption_id":"c-1"}`,
		`{"request_id":"t-1","app_id":3,"act_id":7,"amount":2,"asset":"item:a","to_act_id":8}`,
		`{"request_id":"e\u002d1","app_id":3,"act_id":7,"amount":1,"asset":"coin:gold","budget_id":"b"}`,
		``, `{}`, `null`, `{"amount":01}`,
	} {
		for op := spend.OpRecharge; op <= spend.OpExpire; op++ {
			f.Add(uint8(op), []byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, op uint8, body []byte) {
		o := spend.OpRecharge + spend.Op(op%uint8(spend.OpExpire))
		got, err := ParseSpendRequest(o, body)
		if err != nil {
			var e *errcode.Error
			want := errcode.CodeMalformed
			if len(body) > BodyBytesMax {
				want = errcode.CodeTooLarge
			}
			if !errors.As(err, &e) || e.Code != want {
				t.Fatalf("ParseSpendRequest(%s, %q) = %v, want code %s", o, body, err, want)
			}
			return
		}
		if err := spend.Validate(&got); err != nil || got.Op != o {
			t.Fatalf("ParseSpendRequest(%s, %q) = %+v, which does not validate: %v", o, body, got, err)
		}
		var std stdSpend
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&std); err != nil {
			t.Fatalf("ParseSpendRequest(%s, %q) accepted what encoding/json refuses: %v", o, body, err)
		}
		asset := ""
		switch {
		case std.Asset != nil:
			asset = *std.Asset
		case std.Currency != nil:
			asset = "coin:" + *std.Currency
		}
		str := func(p *string) string {
			if p == nil {
				return ""
			}
			return *p
		}
		var to uint64
		if std.ToActID != nil {
			to = *std.ToActID
		}
		if *std.RequestID != got.RequestID || *std.AppID != got.AppID || *std.ActID != got.ActID || to != got.ToActID ||
			*std.Amount != got.Amount || ledger.Asset(asset) != got.Asset || str(std.MerchantID) != got.MerchantID ||
			str(std.ConsumptionID) != got.Consumption || str(std.BudgetID) != got.BudgetID {
			t.Fatalf("ParseSpendRequest(%s, %q) = %+v, encoding/json reads %+v", o, body, got, std)
		}
	})
}

// newSpendServer serves the spending routes over fake, apps signing with
// appKeys (app 1, 2 and 3).
func newSpendServer(t *testing.T, fake *spendtest.Booker) *testServer {
	t.Helper()
	keys, err := adminauth.ParseAppKeys(appKeys)
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Spend: &spend.Service{Booker: fake}, Ready: func() error { return nil },
		Apps: &adminauth.Verifier{Keys: keys, Window: adminauth.AppWindowDefault, Nonces: adminauth.NewHashNonces(2 * adminauth.AppWindowDefault)}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	return &testServer{url: "http://" + ln.Addr().String(), srv: srv}
}

type spendAnswer struct {
	RequestID string `json:"request_id"`
	Operation string `json:"operation"`
	Moves     []struct {
		ActID   uint64 `json:"act_id"`
		Kind    string `json:"kind"`
		Key     string `json:"key"`
		Asset   string `json:"asset"`
		Amount  int64  `json:"amount"`
		Counter string `json:"counter"`
		Balance int64  `json:"balance"`
	} `json:"moves"`
}

// TestSpendRoutes drives every spending route over the in-memory
// booking: signatures and reach, each business outcome's code, a repeat
// answered the same moves and marked replayed, and a transfer whose
// receiver's move failed completed by its repeat.
func TestSpendRoutes(t *testing.T) {
	fake := &spendtest.Booker{}
	fake.Join(7, 1, "u7")
	fake.Join(8, 1, "u8")
	fake.Join(9, 2, "u9")
	ts := newSpendServer(t, fake)
	app1, app2 := appSigner(t, 0), appSigner(t, 1)
	post := func(s *adminauth.Signer, path, body string) appAnswer {
		t.Helper()
		return ts.signed(t, s, "POST", path, body)
	}
	recharge := `{"request_id":"r-1","app_id":1,"act_id":7,"amount":100,"currency":"gold"}`
	wantAnswer(t, "unsigned recharge", ts.send(t, "POST", "/v1/coins/recharge", recharge, nil), 401, "unauthorized")
	wantAnswer(t, "recharge for another app", post(app2, "/v1/coins/recharge", recharge), 403, "forbidden")
	wantAnswer(t, "recharge of another app's user", post(app2, "/v1/coins/recharge",
		`{"request_id":"r-1","app_id":2,"act_id":7,"amount":100,"currency":"gold"}`), 403, "forbidden")
	wantAnswer(t, "recharge of an account with no record", post(app1, "/v1/coins/recharge",
		`{"request_id":"r-1","app_id":1,"act_id":70,"amount":100,"currency":"gold"}`), 403, "forbidden")
	first := post(app1, "/v1/coins/recharge", recharge)
	wantAnswer(t, "recharge", first, 200, "")
	h, _ := app1.Headers("POST", "/v1/coins/recharge", "", []byte(recharge))
	again := ts.send(t, "POST", "/v1/coins/recharge", recharge, h)
	wantAnswer(t, "repeated recharge", again, 200, "")
	if !bytes.Equal(first.body, again.body) {
		t.Errorf("repeat answered %s, first %s", again.body, first.body)
	}
	var a spendAnswer
	if err := json.Unmarshal(first.body, &a); err != nil || a.Operation != "recharge" || len(a.Moves) != 1 ||
		a.Moves[0].Balance != 100 || a.Moves[0].Amount != 100 || a.Moves[0].Counter != "recharge/1" || a.Moves[0].Key != "1:r-1" {
		t.Fatalf("recharge answer %s: %v", first.body, err)
	}
	wantAnswer(t, "request id reused", post(app1, "/v1/coins/recharge",
		`{"request_id":"r-1","app_id":1,"act_id":7,"amount":101,"currency":"gold"}`), 409, "request_id_reused")
	consume := `{"request_id":"c-1","app_id":1,"act_id":7,"amount":101,"asset":"coin:gold","merchant_id":"shop"}`
	wantAnswer(t, "consume beyond the balance", post(app1, "/v1/spend/consume", consume), 409, "insufficient_funds")
	wantAnswer(t, "consume", post(app1, "/v1/spend/consume", strings.Replace(consume, "101", "60", 1)), 200, "")
	refund := `{"request_id":"f-1","app_id":1,"act_id":7,"amount":61,"asset":"coin:gold","merchant_id":"shop","consumption_id":"c-1"}`
	wantAnswer(t, "refund beyond the consumption", post(app1, "/v1/spend/refund", refund), 409, "refund_exceeds")
	wantAnswer(t, "refund", post(app1, "/v1/spend/refund", strings.Replace(refund, "61", "10", 1)), 200, "")
	wantAnswer(t, "reverse a partly refunded consumption", post(app1, "/v1/spend/reverse",
		`{"request_id":"v-1","app_id":1,"act_id":7,"amount":60,"asset":"coin:gold","merchant_id":"shop","consumption_id":"c-1"}`), 409, "refund_exceeds")
	wantAnswer(t, "transfer to another app's user", post(app1, "/v1/spend/transfer",
		`{"request_id":"t-1","app_id":1,"act_id":7,"amount":5,"asset":"coin:gold","to_act_id":9}`), 403, "forbidden")

	crash := errors.New("owner gone")
	fake.Fail = func(m *ledger.Move) error {
		if m.ActID == 8 {
			return crash
		}
		return nil
	}
	gift := `{"request_id":"g-1","app_id":1,"act_id":7,"amount":5,"asset":"coin:gold","to_act_id":8}`
	wantAnswer(t, "gift with the receiver's partition down", post(app1, "/v1/spend/gift", gift), 503, "unavailable")
	fake.Fail = nil
	done := post(app1, "/v1/spend/gift", gift)
	wantAnswer(t, "gift repeated", done, 200, "")
	if err := json.Unmarshal(done.body, &a); err != nil || len(a.Moves) != 2 || a.Moves[0].Balance != 45 || a.Moves[1].Balance != 5 ||
		a.Moves[0].Kind != "gift_out" || a.Moves[1].Kind != "gift_in" || a.Moves[1].Counter != "transfer/7/1:g-1" {
		t.Fatalf("gift answer %s: %v", done.body, err)
	}
	wantAnswer(t, "expire", post(app1, "/v1/spend/expire",
		`{"request_id":"e-1","app_id":1,"act_id":8,"amount":5,"asset":"coin:gold","budget_id":"demo"}`), 200, "")
	fake.Fail = func(*ledger.Move) error { return fmt.Errorf("%w: an account broke a rule", ledger.ErrInvariant) }
	wantAnswer(t, "a broken money invariant", post(app1, "/v1/spend/expire",
		`{"request_id":"e-2","app_id":1,"act_id":8,"amount":1,"asset":"coin:gold"}`), 500, "internal")
	fake.Fail = nil
	wantAnswer(t, "malformed", post(app1, "/v1/spend/consume", `{"request_id":"c-2"}`), 400, "malformed_request")
	wantAnswer(t, "GET", ts.send(t, "GET", "/v1/spend/consume", "", nil), 405, "method_not_allowed")
	wantAnswer(t, "unknown operation", post(app1, "/v1/spend/steal", consume), 404, "not_found")
	for a, n := range fake.Sums() {
		if n != 0 {
			t.Errorf("%s sums to %d over all accounts", a, n)
		}
	}
}

// BenchmarkSpendWire is the wire side of one spending request: parse
// and validate the body, answer its booked moves.
func BenchmarkSpendWire(b *testing.B) {
	body := []byte(`{"request_id":"c-17","app_id":3,"act_id":42,"amount":30,"asset":"coin:gold","merchant_id":"shop-1"}`)
	b.ReportAllocs()
	var out []byte
	for b.Loop() {
		r, err := ParseSpendRequest(spend.OpConsume, body)
		if err != nil {
			b.Fatal(err)
		}
		o := spend.Outcome{Request: r, Moves: []spend.Booked{{Move: spend.Moves(&r)[0], Result: ledger.MoveApplied, Balance: 70}}}
		out = AppendSpendOutcome(out[:0], &o)
	}
}
