package ingress_test

import (
	"encoding/json"
	"strings"
	"testing"

	"redrain/errcode"
	"redrain/ingress"
	"redrain/withdraw"
)

const canonicalWithdraw = `{"act_id":17,"amount":500,"channel":"bank","request_id":"w-1"}`

func TestParseWithdrawRequest(t *testing.T) {
	got, err := ingress.ParseWithdrawRequest([]byte(" {\"request_id\":\"w-1\" , \"channel\":\"bank\",\"amount\":500,\"act_id\":17}\n"))
	want := ingress.WithdrawRequest{ActID: 17, Amount: 500, Channel: "bank", RequestID: "w-1"}
	if err != nil || got != want {
		t.Fatalf("ParseWithdrawRequest = %+v, %v; want %+v", got, err, want)
	}
	for _, bad := range []string{
		`{"act_id":17,"amount":500,"channel":"bank"}`,
		`{"act_id":17,"amount":0,"channel":"bank","request_id":"w"}`,
		`{"act_id":17,"amount":-5,"channel":"bank","request_id":"w"}`,
		`{"act_id":17,"amount":5.0,"channel":"bank","request_id":"w"}`,
		`{"act_id":17,"amount":9007199254740993,"channel":"bank","request_id":"w"}`,
		`{"act_id":17,"amount":5,"channel":"","request_id":"w"}`,
		`{"act_id":17,"amount":5,"channel":"bank","request_id":"` + strings.Repeat("w", ingress.IDLenMax+1) + `"}`,
		`{"act_id":17,"amount":5,"channel":"bank","request_id":"w","act_id":17}`,
		`{"act_id":17,"amount":5,"channel":"bank","request_id":"w","extra":1}`,
		`{"act_id":17,"amount":5,"channel":"bank","request_id":"w"} x`,
		`{"act_id":"17","amount":5,"channel":"bank","request_id":"w"}`,
	} {
		if _, err := ingress.ParseWithdrawRequest([]byte(bad)); !errorsIsCode(err, errcode.CodeMalformed) {
			t.Errorf("ParseWithdrawRequest(%s) = %v, want malformed_request", bad, err)
		}
	}
}

func errorsIsCode(err error, c errcode.Code) bool {
	e, ok := err.(*errcode.Error)
	return ok && e.Code == c
}

func TestAppendWithdrawal(t *testing.T) {
	r := &withdraw.Record{ID: "ab", AppID: 2, RequestID: "r\"1", ActID: 9, Amount: 300, Channel: "bank",
		State: withdraw.StateSettled, Attempts: 2, ChannelRef: "p-1", CreatedAt: 1, HeldAt: 2, PayingAt: 3, DoneAt: 4, UpdatedAt: 5}
	var v map[string]any
	if err := json.Unmarshal(ingress.AppendWithdrawal(nil, r), &v); err != nil {
		t.Fatal(err)
	}
	if v["request_id"] != "r\"1" || v["state"] != "settled" || v["amount"] != 300.0 || v["done_at"] != 4.0 || v["last_error"] != "" || len(v) != 15 {
		t.Errorf("AppendWithdrawal = %v", v)
	}
}

// FuzzParseWithdrawRequest checks the parser against encoding/json:
// whatever it accepts, encoding/json reads the same way, and its errors
// keep the parser contract.
func FuzzParseWithdrawRequest(f *testing.F) {
	for _, s := range append(fuzzSeeds, canonicalWithdraw, `{"act_id":1,"amount":1,"channel":"\ud83d\ude00","request_id":"\u0041"}`,
		`{"act_id":1,"amount":9007199254740992,"channel":"c","request_id":"r"}`) {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := ingress.ParseWithdrawRequest(body)
		if err != nil {
			checkParseError(t, body, err, ingress.BodyBytesMax)
			return
		}
		if got.ActID == 0 || got.Amount < 1 || got.Amount > ingress.WithdrawAmountMax || got.Channel == "" || got.RequestID == "" ||
			len(got.Channel) > ingress.IDLenMax || len(got.RequestID) > ingress.IDLenMax {
			t.Fatalf("ParseWithdrawRequest(%q) = %+v, breaks an invariant", body, got)
		}
		var std struct {
			ActID     uint64 `json:"act_id"`
			Amount    int64  `json:"amount"`
			Channel   string `json:"channel"`
			RequestID string `json:"request_id"`
		}
		if err := stdDecode(body, &std); err != nil {
			t.Fatalf("ParseWithdrawRequest(%q) accepted what encoding/json refuses: %v", body, err)
		}
		if std.ActID != got.ActID || std.Amount != got.Amount || std.Channel != got.Channel || std.RequestID != got.RequestID {
			t.Fatalf("ParseWithdrawRequest(%q) = %+v, encoding/json reads %+v", body, got, std)
		}
	})
}
