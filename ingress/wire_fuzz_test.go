package ingress_test

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"

	"redrain/errcode"
	"redrain/ingress"
)

// fuzzSeeds are bodies, good and bad, that start every request fuzzer.
var fuzzSeeds = []string{
	``,
	`{}`,
	`null`,
	canonicalGrant,
	string(benchGrant),
	withUser(`"\u00e9\ud83d\ude00\"\\\/"`),
	withUser(`"\ud800"`),
	withUser("\"\xff\""),
	withApp(`4294967295`),
	withApp(`4294967296`),
	withRain(`18446744073709551615`),
	withRain(`18446744073709551616`),
	withRain(`1.0`),
	withRain(`01`),
	`{"app\u005fid":1,"user_id":"u","activity_id":"a","scene_id":"s","rain_id":1}`,
	`{"App_Id":1,"user_id":"u","activity_id":"a","scene_id":"s","rain_id":1}`,
	canonicalGrant[:len(canonicalGrant)-1] + `,"rain_id":2}`,
	`{"grants":[` + canonicalGrant + `,` + canonicalGrant + `]}`,
	`{"grants":[]}`,
	`{"tokens":["abc","d\u0065f",""]}`,
	`{"tokens":[1]}`,
}

// checkParseError checks the contract every parser error keeps: an
// *errcode.Error whose code is errcode.CodeTooLarge exactly when the body is over
// the limit, and errcode.CodeMalformed otherwise.
func checkParseError(t *testing.T, body []byte, err error, limit int) {
	t.Helper()
	want := errcode.CodeMalformed
	if len(body) > limit {
		want = errcode.CodeTooLarge
	}
	if c := codeOf(t, err); c != want {
		t.Fatalf("err = %v for a %d-byte body, want code %s", err, len(body), want)
	}
}

func FuzzParseGrantRequest(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := ingress.ParseGrantRequest(body)
		if err != nil {
			checkParseError(t, body, err, ingress.BodyBytesMax)
			return
		}
		checkGrant(t, got)
		// Everything the strict parser accepts, the lax one must too.
		var std stdGrant
		if err := stdDecode(body, &std); err != nil {
			t.Fatalf("ParseGrantRequest(%q) = %+v, but encoding/json rejects it: %v", body, got, err)
		}
		if std.request() != got {
			t.Fatalf("ParseGrantRequest(%q) = %+v, encoding/json says %+v", body, got, std.request())
		}
	})
}

func FuzzParseGrantBatch(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
		if strings.HasPrefix(s, "{\"app") {
			f.Add([]byte(`{"grants":[` + s + `]}`))
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := ingress.ParseGrantBatch(body)
		if err != nil {
			checkParseError(t, body, err, ingress.ListBodyBytesMax)
			return
		}
		if len(got) < 1 || len(got) > ingress.GrantsPerBatchMax {
			t.Fatalf("ParseGrantBatch(%q) returned %d grants", body, len(got))
		}
		for _, g := range got {
			checkGrant(t, g)
		}
		var std struct{ Grants []stdGrant }
		if err := stdDecode(body, &std); err != nil {
			t.Fatalf("ParseGrantBatch(%q) accepts, but encoding/json rejects it: %v", body, err)
		}
		if len(std.Grants) != len(got) {
			t.Fatalf("ParseGrantBatch(%q) = %d grants, encoding/json says %d", body, len(got), len(std.Grants))
		}
		for i := range got {
			if std.Grants[i].request() != got[i] {
				t.Fatalf("ParseGrantBatch(%q): grants[%d] = %+v, encoding/json says %+v", body, i, got[i], std.Grants[i].request())
			}
		}
	})
}

func FuzzParseTokens(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := ingress.ParseTokens(body)
		if err != nil {
			checkParseError(t, body, err, ingress.ListBodyBytesMax)
			return
		}
		if len(got) < 1 || len(got) > ingress.TokensPerRequestMax {
			t.Fatalf("ParseTokens(%q) returned %d tokens", body, len(got))
		}
		var std struct {
			Tokens []string `json:"tokens"`
		}
		if err := stdDecode(body, &std); err != nil {
			t.Fatalf("ParseTokens(%q) accepts, but encoding/json rejects it: %v", body, err)
		}
		if len(std.Tokens) != len(got) {
			t.Fatalf("ParseTokens(%q) = %d tokens, encoding/json says %d", body, len(got), len(std.Tokens))
		}
		for i, tok := range got {
			if len(tok) > ingress.TokenBytesMax {
				t.Fatalf("ParseTokens(%q): tokens[%d] is %d bytes", body, i, len(tok))
			}
			if string(tok) != std.Tokens[i] {
				t.Fatalf("ParseTokens(%q): tokens[%d] = %q, encoding/json says %q", body, i, tok, std.Tokens[i])
			}
		}
	})
}

// FuzzAppendJSONString checks that any string, valid UTF-8 or not, comes out
// as a JSON string that encoding/json reads back as it reads its own.
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "abc", "\"\\/\b\f\n\r\t\x00\x1f\x7f", "é用😀\u2028\u2029", "a\xffb\xe2\x82", "\xed\xa0\x80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkJSONString(t, s)
		// The []byte path (tokens) must write the same bytes.
		r := ingress.GrantResponse{Token: []byte(s)}
		out := ingress.AppendGrantResponse(nil, &r)
		want := append([]byte(`{"token":`), errcode.AppendJSONString(nil, s)...)
		if !bytes.HasPrefix(out, want) {
			t.Fatalf("AppendGrantResponse token %q = %s, want prefix %s", s, out, want)
		}
	})
}

// checkGrant checks the invariants of an accepted request.
func checkGrant(t *testing.T, g ingress.GrantRequest) {
	t.Helper()
	if g.AppID < 1 || g.RainID < 1 {
		t.Fatalf("accepted %+v: app_id and rain_id must be positive", g)
	}
	for _, id := range []string{g.UserID, g.ActivityID, g.SceneID} {
		if len(id) < 1 || len(id) > ingress.IDLenMax {
			t.Fatalf("accepted %+v: ID %q is %d bytes", g, id, len(id))
		}
		if !utf8.ValidString(id) {
			t.Fatalf("accepted %+v: ID %q is not valid UTF-8", g, id)
		}
		for _, r := range id {
			if r < 0x20 || (r >= 0x7f && r < 0xa0) {
				t.Fatalf("accepted %+v: ID %q holds %U", g, id, r)
			}
		}
	}
}
