package ingress_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"redrain/adminauth"
	"redrain/errcode"
	"redrain/ingress"
)

const canonicalBind = `{"app_id": 2, "user_id": "b-7", "act_id": 17}`

func TestParseBindRequest(t *testing.T) {
	good := []struct {
		body string
		want ingress.BindRequest
	}{
		{canonicalBind, ingress.BindRequest{AppID: 2, UserID: "b-7", ActID: 17}},
		{` {"act_id":18446744073709551615,"user_id":"\u00e9/x","app_id":4294967295} ` + "\n",
			ingress.BindRequest{AppID: 4294967295, UserID: "é/x", ActID: 18446744073709551615}},
		{`{"user_id":"` + strings.Repeat("u", ingress.IDLenMax) + `","app_id":1,"act_id":1}`,
			ingress.BindRequest{AppID: 1, UserID: strings.Repeat("u", ingress.IDLenMax), ActID: 1}},
	}
	for _, tt := range good {
		got, err := ingress.ParseBindRequest([]byte(tt.body))
		if err != nil || got != tt.want {
			t.Errorf("ParseBindRequest(%s) = %+v, %v; want %+v", tt.body, got, err, tt.want)
		}
	}
	sig := strings.Repeat("ab", 32)
	withConsent := `{"app_id":2,"user_id":"b-7","act_id":17,"consent":{"signature":"` + sig + `","key":"1.k2","expires":1798761600000}}`
	got, err := ingress.ParseBindRequest([]byte(withConsent))
	if err != nil || got.Consent == nil || *got.Consent != (adminauth.Consent{KeyID: "1.k2", Expires: 1798761600000, Signature: sig}) ||
		got.AppID != 2 || got.UserID != "b-7" || got.ActID != 17 {
		t.Errorf("ParseBindRequest(%s) = %+v (consent %+v), %v", withConsent, got, got.Consent, err)
	}
	bad := []struct {
		name, body, wantInMessage string
	}{
		{"consent missing a field", `{"app_id":2,"user_id":"b","act_id":17,"consent":{"key":"1","expires":5}}`, `missing field "signature"`},
		{"consent unknown field", `{"app_id":2,"user_id":"b","act_id":17,"consent":{"key":"1","expires":5,"signature":"a","x":1}}`, `unknown field "x"`},
		{"consent expires quoted", `{"app_id":2,"user_id":"b","act_id":17,"consent":{"key":"1","expires":"5","signature":"a"}}`, `field "consent.expires": want a positive integer`},
		{"consent not an object", `{"app_id":2,"user_id":"b","act_id":17,"consent":"yes"}`, "want '{'"},
		{"consent twice", `{"app_id":2,"user_id":"b","act_id":17,"consent":{"key":"1","expires":5,"signature":"a"},"consent":{"key":"1","expires":5,"signature":"a"}}`, `duplicate field "consent"`},
		{"consent without act_id", `{"app_id":2,"user_id":"b","consent":{"key":"1","expires":5,"signature":"a"}}`, `missing field "act_id"`},
		{"empty", ``, "empty body"},
		{"not an object", `[]`, "want '{'"},
		{"act_id zero", `{"app_id":2,"user_id":"b","act_id":0}`, `field "act_id": want a positive integer`},
		{"act_id negative", `{"app_id":2,"user_id":"b","act_id":-1}`, `field "act_id": want a positive integer`},
		{"act_id quoted", `{"app_id":2,"user_id":"b","act_id":"17"}`, `field "act_id": want a positive integer`},
		{"act_id too big", `{"app_id":2,"user_id":"b","act_id":18446744073709551616}`, `at most 18446744073709551615`},
		{"act_id fraction", `{"app_id":2,"user_id":"b","act_id":17.0}`, `field "act_id": want a positive integer`},
		{"app_id too big", `{"app_id":4294967296,"user_id":"b","act_id":1}`, `field "app_id": want a positive integer at most`},
		{"empty user", `{"app_id":2,"user_id":"","act_id":17}`, `field "user_id": must not be empty`},
		{"user not a string", `{"app_id":2,"user_id":7,"act_id":17}`, `field "user_id": want a string`},
		{"user too long", `{"app_id":2,"user_id":"` + strings.Repeat("u", ingress.IDLenMax+1) + `","act_id":17}`, "longer than 64 bytes"},
		{"user with control", `{"app_id":2,"user_id":"a\u0007","act_id":17}`, "control character"},
		{"missing act_id", `{"app_id":2,"user_id":"b"}`, `missing field "act_id"`},
		{"missing all", `{}`, `missing field "app_id"`},
		{"unknown field", `{"app_id":2,"user_id":"b","act_id":17,"x":1}`, `unknown field "x"`},
		{"field in another case", `{"App_Id":2,"user_id":"b","act_id":17}`, `unknown field "App_Id"`},
		{"duplicate field", `{"app_id":2,"user_id":"b","act_id":17,"act_id":18}`, `duplicate field "act_id"`},
		{"trailing data", canonicalBind + `{}`, "data after the top-level object"},
		{"trailing comma", `{"app_id":2,"user_id":"b","act_id":17,}`, "want a field name"},
		{"unterminated", `{"app_id":2,"user_id":"b"`, "unexpected end of body"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ingress.ParseBindRequest([]byte(tt.body))
			if err == nil {
				t.Fatalf("ParseBindRequest(%s) = %+v, want an error", tt.body, got)
			}
			if c := codeOf(t, err); c != errcode.CodeMalformed || !strings.Contains(err.Error(), tt.wantInMessage) {
				t.Fatalf("ParseBindRequest(%s) = %v, want %s mentioning %q", tt.body, err, errcode.CodeMalformed, tt.wantInMessage)
			}
		})
	}
	big := `{"app_id":2,"user_id":"b","act_id":17}` + strings.Repeat(" ", ingress.BodyBytesMax)
	if _, err := ingress.ParseBindRequest([]byte(big)); codeOf(t, err) != errcode.CodeTooLarge {
		t.Fatalf("ParseBindRequest(%d bytes) = %v, want %s", len(big), err, errcode.CodeTooLarge)
	}
}

func TestAppendBindResponse(t *testing.T) {
	r := ingress.BindResponse{AppID: 2, UserID: "b\"7\u2028", ActID: 17, Status: ingress.BindStatusBound}
	raw := ingress.AppendBindResponse(nil, &r)
	var got struct {
		AppID  uint32 `json:"app_id"`
		UserID string `json:"user_id"`
		ActID  uint64 `json:"act_id"`
		Status string `json:"status"`
	}
	if err := stdDecode(raw, &got); err != nil {
		t.Fatalf("AppendBindResponse = %s: %v", raw, err)
	}
	if got.AppID != r.AppID || got.UserID != r.UserID || got.ActID != r.ActID || got.Status != r.Status {
		t.Fatalf("AppendBindResponse = %s, decoded %+v, want %+v", raw, got, r)
	}
}

// FuzzParseBindRequest checks the parser against encoding/json: whatever
// it accepts, encoding/json reads the same way, and its errors keep the
// parser contract.
func FuzzParseBindRequest(f *testing.F) {
	for _, s := range append(fuzzSeeds, canonicalBind, `{"app_id":1,"user_id":"\ud83d\ude00","act_id":1}`,
		`{"app_id":1,"user_id":"u","act_id":0}`, `{"app_id":1,"user_id":"u","act_id":1,"act_id":1}`) {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := ingress.ParseBindRequest(body)
		if err != nil {
			checkParseError(t, body, err, ingress.BodyBytesMax)
			return
		}
		if got.AppID == 0 || got.ActID == 0 || got.UserID == "" || len(got.UserID) > ingress.IDLenMax || !utf8.ValidString(got.UserID) {
			t.Fatalf("ParseBindRequest(%q) = %+v, breaks an invariant", body, got)
		}
		var std struct {
			AppID  uint32 `json:"app_id"`
			UserID string `json:"user_id"`
			ActID  uint64 `json:"act_id"`
		}
		if err := stdDecode(body, &std); err != nil {
			t.Fatalf("ParseBindRequest(%q) accepted what encoding/json refuses: %v", body, err)
		}
		if std.AppID != got.AppID || std.UserID != got.UserID || std.ActID != got.ActID {
			t.Fatalf("ParseBindRequest(%q) = %+v, encoding/json reads %+v", body, got, std)
		}
	})
}
