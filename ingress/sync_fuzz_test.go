package ingress_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"redrain/errcode"
	"redrain/ingress"
	"redrain/lines"
)

const canonicalNotice = `{"line":"games","app_id":7,"user_id":"u-1"}`

func TestParseSyncNotice(t *testing.T) {
	got, err := ingress.ParseSyncNotice([]byte(` {"user_id":"u\/1","app_id":4294967295,"line":"games"} `))
	if want := (lines.Notice{Line: "games", App: 4294967295, User: "u/1"}); err != nil || got != want {
		t.Fatalf("ParseSyncNotice = %+v, %v, want %+v", got, err, want)
	}
	for _, tc := range []struct{ body, want string }{
		{``, "empty body"},
		{`{"line":"games","app_id":7}`, `"user_id"`},
		{`{"app_id":7,"user_id":"u"}`, `"line"`},
		{`{"line":"games","app_id":0,"user_id":"u"}`, `"app_id": want a positive integer`},
		{`{"line":"games","app_id":4294967296,"user_id":"u"}`, `"app_id"`},
		{`{"line":"games","app_id":"7","user_id":"u"}`, `"app_id"`},
		{`{"line":"","app_id":7,"user_id":"u"}`, `"line": must not be empty`},
		{`{"line":"games","app_id":7,"user_id":"` + strings.Repeat("u", 65) + `"}`, `"user_id"`},
		{`{"line":"games","app_id":7,"user_id":"u","extra":1}`, `unknown field "extra"`},
		{`{"line":"games","line":"shop","app_id":7,"user_id":"u"}`, `duplicate field "line"`},
		{canonicalNotice + `{}`, ""},
	} {
		_, err := ingress.ParseSyncNotice([]byte(tc.body))
		if c := codeOf(t, err); c != errcode.CodeMalformed || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseSyncNotice(%s) = %v, want malformed_request naming %s", tc.body, err, tc.want)
		}
	}
	big := canonicalNotice + strings.Repeat(" ", ingress.BodyBytesMax)
	if _, err := ingress.ParseSyncNotice([]byte(big)); codeOf(t, err) != errcode.CodeTooLarge {
		t.Errorf("ParseSyncNotice(%d bytes) = %v, want request_too_large", len(big), err)
	}
}

// FuzzParseSyncNotice checks the parser against encoding/json: whatever it
// accepts, encoding/json reads the same way, and its errors keep the
// parser contract.
func FuzzParseSyncNotice(f *testing.F) {
	for _, s := range append(fuzzSeeds, canonicalNotice, `{"line":"\u0067","app_id":1,"user_id":"\ud83d\ude00"}`,
		`{"line":"g","app_id":1,"user_id":"u","user_id":"v"}`) {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := ingress.ParseSyncNotice(body)
		if err != nil {
			checkParseError(t, body, err, ingress.BodyBytesMax)
			return
		}
		if got.App == 0 || got.Line == "" || got.User == "" || len(got.User) > ingress.IDLenMax || !utf8.ValidString(got.User) || !utf8.ValidString(got.Line) {
			t.Fatalf("ParseSyncNotice(%q) = %+v, breaks an invariant", body, got)
		}
		var std lines.Notice
		if err := stdDecode(body, &std); err != nil {
			t.Fatalf("ParseSyncNotice(%q) accepted what encoding/json refuses: %v", body, err)
		}
		if std != got {
			t.Fatalf("ParseSyncNotice(%q) = %+v, encoding/json reads %+v", body, got, std)
		}
	})
}
