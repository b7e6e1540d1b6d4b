package ingress_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode/utf16"
	"unicode/utf8"

	"redrain/errcode"
	"redrain/ingress"
)

// canonicalGrant is the example body of the API documentation.
const canonicalGrant = `{"app_id": 1, "user_id": "u-42", "activity_id": "demo", "scene_id": "rain", "rain_id": 1}`

var canonicalGrantWant = ingress.GrantRequest{AppID: 1, UserID: "u-42", ActivityID: "demo", SceneID: "rain", RainID: 1}

// grantBody builds a grant body from raw JSON values, in the order given.
func grantBody(appID, userID, activityID, sceneID, rainID string) string {
	return `{"app_id":` + appID + `,"user_id":` + userID + `,"activity_id":` + activityID +
		`,"scene_id":` + sceneID + `,"rain_id":` + rainID + `}`
}

// withUser is the canonical grant with user_id's raw JSON value replaced.
func withUser(raw string) string { return grantBody(`1`, raw, `"demo"`, `"rain"`, `1`) }

// withApp and withRain replace the raw JSON value of app_id or rain_id.
func withApp(raw string) string  { return grantBody(raw, `"u"`, `"demo"`, `"rain"`, `1`) }
func withRain(raw string) string { return grantBody(`1`, `"u"`, `"demo"`, `"rain"`, raw) }

// stdGrant is a GrantRequest as encoding/json sees it, for cross-checks.
type stdGrant struct {
	AppID      uint32 `json:"app_id"`
	UserID     string `json:"user_id"`
	ActivityID string `json:"activity_id"`
	SceneID    string `json:"scene_id"`
	RainID     uint64 `json:"rain_id"`
}

func (g stdGrant) request() ingress.GrantRequest {
	return ingress.GrantRequest{AppID: g.AppID, UserID: g.UserID, ActivityID: g.ActivityID, SceneID: g.SceneID, RainID: g.RainID}
}

// stdDecode decodes body into v with encoding/json at its strictest:
// unknown fields and trailing data are errors.
func stdDecode(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("data after the value (%v)", err)
	}
	return nil
}

// codeOf returns the code of err, which must be an *errcode.Error.
func codeOf(t testing.TB, err error) errcode.Code {
	t.Helper()
	var e *errcode.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *errcode.Error", err, err)
	}
	return e.Code
}

func TestParseGrantRequestValid(t *testing.T) {
	long := strings.Repeat("x", ingress.IDLenMax)
	emoji16 := strings.Repeat("😀", ingress.IDLenMax/4) // 64 bytes of 4-byte runes.
	tests := []struct {
		name string
		body string
		want ingress.GrantRequest
	}{
		{"canonical", canonicalGrant, canonicalGrantWant},
		{"compact", grantBody(`1`, `"u-42"`, `"demo"`, `"rain"`, `1`), canonicalGrantWant},
		{"whitespace everywhere",
			" \t\r\n{ \n\"app_id\"\t:\r1 ,\n \"user_id\" : \"u-42\" , \"activity_id\":\"demo\",\"scene_id\":\"rain\",\"rain_id\":1\n}\r\n\t ",
			canonicalGrantWant},
		{"reversed order", `{"rain_id":1,"scene_id":"rain","activity_id":"demo","user_id":"u-42","app_id":1}`, canonicalGrantWant},
		{"ids out of order", `{"scene_id":"rain","app_id":1,"user_id":"u-42","rain_id":1,"activity_id":"demo"}`, canonicalGrantWant},
		{"escaped field name", `{"app\u005fid":1,"user_id":"u-42","activity_id":"demo","scene_id":"rain","rain_id":1}`, canonicalGrantWant},
		{"short escapes", withUser(`"q\"b\\s\/"`), ingress.GrantRequest{AppID: 1, UserID: `q"b\s/`, ActivityID: "demo", SceneID: "rain", RainID: 1}},
		{"unicode escapes", withUser(`"\u00e9\u7528\uD83D\uDE00"`), ingress.GrantRequest{AppID: 1, UserID: "é用😀", ActivityID: "demo", SceneID: "rain", RainID: 1}},
		{"raw utf-8", withUser(`"用户-é-😀"`), ingress.GrantRequest{AppID: 1, UserID: "用户-é-😀", ActivityID: "demo", SceneID: "rain", RainID: 1}},
		{"max id length", grantBody(`1`, `"`+long+`"`, `"`+long+`"`, `"`+long+`"`, `1`), ingress.GrantRequest{AppID: 1, UserID: long, ActivityID: long, SceneID: long, RainID: 1}},
		{"max id length in 4-byte runes", withUser(`"` + emoji16 + `"`), ingress.GrantRequest{AppID: 1, UserID: emoji16, ActivityID: "demo", SceneID: "rain", RainID: 1}},
		{"max id length counted after unescaping", withUser(`"` + strings.Repeat(`\u0078`, ingress.IDLenMax) + `"`), ingress.GrantRequest{AppID: 1, UserID: long, ActivityID: "demo", SceneID: "rain", RainID: 1}},
		{"one byte ids", grantBody(`1`, `"a"`, `"b"`, `"c"`, `1`), ingress.GrantRequest{AppID: 1, UserID: "a", ActivityID: "b", SceneID: "c", RainID: 1}},
		{"space and tilde", withUser(`" ~"`), ingress.GrantRequest{AppID: 1, UserID: " ~", ActivityID: "demo", SceneID: "rain", RainID: 1}},
		{"app_id max uint32", withApp(`4294967295`), ingress.GrantRequest{AppID: math.MaxUint32, UserID: "u", ActivityID: "demo", SceneID: "rain", RainID: 1}},
		{"rain_id max uint64", withRain(`18446744073709551615`), ingress.GrantRequest{AppID: 1, UserID: "u", ActivityID: "demo", SceneID: "rain", RainID: math.MaxUint64}},
		{"numbers before closing brace", `{"user_id":"u","activity_id":"demo","scene_id":"rain","rain_id":10,"app_id":20}`, ingress.GrantRequest{AppID: 20, UserID: "u", ActivityID: "demo", SceneID: "rain", RainID: 10}},
		{"body of exactly BodyBytesMax", canonicalGrant + strings.Repeat(" ", ingress.BodyBytesMax-len(canonicalGrant)), canonicalGrantWant},
	}
	for _, tt := range tests {
		got, err := ingress.ParseGrantRequest([]byte(tt.body))
		if err != nil {
			t.Errorf("%s: ParseGrantRequest(%q) err = %v, want nil", tt.name, tt.body, err)
			continue
		}
		if got != tt.want {
			t.Errorf("%s: ParseGrantRequest(%q) = %+v, want %+v", tt.name, tt.body, got, tt.want)
		}
		// encoding/json must agree on every valid form.
		var std stdGrant
		if err := stdDecode([]byte(tt.body), &std); err != nil {
			t.Errorf("%s: encoding/json rejects %q: %v", tt.name, tt.body, err)
		} else if std.request() != got {
			t.Errorf("%s: encoding/json decodes %q to %+v, ParseGrantRequest to %+v", tt.name, tt.body, std.request(), got)
		}
	}
}

func TestParseGrantRequestInvalid(t *testing.T) {
	long := strings.Repeat("x", ingress.IDLenMax+1)
	tests := []struct {
		name    string
		body    string
		code    errcode.Code
		mention string // A word the message must contain (the field), if any.
	}{
		// Not an object at all.
		{"empty body", ``, errcode.CodeMalformed, "empty"},
		{"whitespace only", " \n\t ", errcode.CodeMalformed, "empty"},
		{"null", `null`, errcode.CodeMalformed, ""},
		{"array", `[]`, errcode.CodeMalformed, ""},
		{"string", `"x"`, errcode.CodeMalformed, ""},
		{"number", `1`, errcode.CodeMalformed, ""},
		{"byte order mark", "\ufeff" + canonicalGrant, errcode.CodeMalformed, ""},
		{"unclosed", `{`, errcode.CodeMalformed, ""},
		{"truncated", canonicalGrant[:len(canonicalGrant)-1], errcode.CodeMalformed, ""},
		{"truncated in value", `{"app_id":`, errcode.CodeMalformed, "app_id"},
		{"truncated in string", `{"user_id":"u`, errcode.CodeMalformed, "user_id"},
		{"truncated in name", `{"user_`, errcode.CodeMalformed, ""},

		// Structure.
		{"empty object", `{}`, errcode.CodeMalformed, "app_id"},
		{"missing app_id", `{"user_id":"u","activity_id":"demo","scene_id":"rain","rain_id":1}`, errcode.CodeMalformed, "app_id"},
		{"missing user_id", `{"app_id":1,"activity_id":"demo","scene_id":"rain","rain_id":1}`, errcode.CodeMalformed, "user_id"},
		{"missing activity_id", `{"app_id":1,"user_id":"u","scene_id":"rain","rain_id":1}`, errcode.CodeMalformed, "activity_id"},
		{"missing scene_id", `{"app_id":1,"user_id":"u","activity_id":"demo","rain_id":1}`, errcode.CodeMalformed, "scene_id"},
		{"missing rain_id", `{"app_id":1,"user_id":"u","activity_id":"demo","scene_id":"rain"}`, errcode.CodeMalformed, "rain_id"},
		{"unknown field", `{"app_id":1,"user_id":"u","activity_id":"demo","scene_id":"rain","rain_id":1,"extra":1}`, errcode.CodeMalformed, "extra"},
		{"unknown field first", `{"extra":null,"app_id":1,"user_id":"u","activity_id":"demo","scene_id":"rain","rain_id":1}`, errcode.CodeMalformed, "extra"},
		{"field name case differs", `{"App_ID":1,"user_id":"u","activity_id":"demo","scene_id":"rain","rain_id":1}`, errcode.CodeMalformed, "App_ID"},
		{"long unknown field", `{"` + strings.Repeat("n", 100) + `":1}`, errcode.CodeMalformed, "nnnn"},
		{"empty field name", `{"":1}`, errcode.CodeMalformed, ""},
		{"duplicate app_id", `{"app_id":1,"app_id":1,"user_id":"u","activity_id":"demo","scene_id":"rain","rain_id":1}`, errcode.CodeMalformed, "app_id"},
		{"duplicate user_id", canonicalGrant[:len(canonicalGrant)-1] + `,"user_id":"v"}`, errcode.CodeMalformed, "user_id"},
		{"duplicate activity_id", canonicalGrant[:len(canonicalGrant)-1] + `,"activity_id":"demo"}`, errcode.CodeMalformed, "activity_id"},
		{"duplicate scene_id", canonicalGrant[:len(canonicalGrant)-1] + `,"scene_id":"rain"}`, errcode.CodeMalformed, "scene_id"},
		{"duplicate rain_id", canonicalGrant[:len(canonicalGrant)-1] + `,"rain_id":2}`, errcode.CodeMalformed, "rain_id"},
		{"duplicate through an escape", canonicalGrant[:len(canonicalGrant)-1] + `,"rain\u005fid":2}`, errcode.CodeMalformed, "rain_id"},
		{"trailing garbage", canonicalGrant + ` x`, errcode.CodeMalformed, ""},
		{"trailing second object", canonicalGrant + canonicalGrant, errcode.CodeMalformed, ""},
		{"trailing nul", canonicalGrant + "\x00", errcode.CodeMalformed, ""},
		{"trailing comma", canonicalGrant[:len(canonicalGrant)-1] + `,}`, errcode.CodeMalformed, ""},
		{"leading comma", `{,"app_id":1}`, errcode.CodeMalformed, ""},
		{"missing comma", `{"app_id":1 "user_id":"u","activity_id":"demo","scene_id":"rain","rain_id":1}`, errcode.CodeMalformed, ""},
		{"missing colon", `{"app_id" 1,"user_id":"u","activity_id":"demo","scene_id":"rain","rain_id":1}`, errcode.CodeMalformed, ""},
		{"single quotes", `{'app_id':1}`, errcode.CodeMalformed, ""},
		{"unquoted name", `{app_id:1}`, errcode.CodeMalformed, ""},
		{"comment", `{/* c */"app_id":1}`, errcode.CodeMalformed, ""},
		{"non-JSON whitespace", "{\v\"app_id\":1}", errcode.CodeMalformed, ""},
		{"too large", canonicalGrant + strings.Repeat(" ", ingress.BodyBytesMax-len(canonicalGrant)+1), errcode.CodeTooLarge, ""},
		{"too large garbage", strings.Repeat("x", 1<<20), errcode.CodeTooLarge, ""},

		// Integers.
		{"app_id zero", withApp(`0`), errcode.CodeMalformed, "app_id"},
		{"app_id negative", withApp(`-1`), errcode.CodeMalformed, "app_id"},
		{"app_id minus zero", withApp(`-0`), errcode.CodeMalformed, "app_id"},
		{"app_id plus sign", withApp(`+1`), errcode.CodeMalformed, "app_id"},
		{"app_id leading zero", withApp(`01`), errcode.CodeMalformed, "app_id"},
		{"app_id fraction", withApp(`1.0`), errcode.CodeMalformed, "app_id"},
		{"app_id half", withApp(`1.5`), errcode.CodeMalformed, "app_id"},
		{"app_id exponent", withApp(`1e3`), errcode.CodeMalformed, "app_id"},
		{"app_id capital exponent", withApp(`1E3`), errcode.CodeMalformed, "app_id"},
		{"app_id hex", withApp(`0x1`), errcode.CodeMalformed, "app_id"},
		{"app_id quoted", withApp(`"1"`), errcode.CodeMalformed, "app_id"},
		{"app_id null", withApp(`null`), errcode.CodeMalformed, "app_id"},
		{"app_id bool", withApp(`true`), errcode.CodeMalformed, "app_id"},
		{"app_id array", withApp(`[1]`), errcode.CodeMalformed, "app_id"},
		{"app_id object", withApp(`{}`), errcode.CodeMalformed, "app_id"},
		{"app_id NaN", withApp(`NaN`), errcode.CodeMalformed, "app_id"},
		{"app_id digits then letter", withApp(`12a`), errcode.CodeMalformed, "app_id"},
		{"app_id max uint32 + 1", withApp(`4294967296`), errcode.CodeMalformed, "app_id"},
		{"app_id huge", withApp(`99999999999999999999999`), errcode.CodeMalformed, "app_id"},
		{"rain_id zero", withRain(`0`), errcode.CodeMalformed, "rain_id"},
		{"rain_id negative", withRain(`-5`), errcode.CodeMalformed, "rain_id"},
		{"rain_id leading zeros", withRain(`007`), errcode.CodeMalformed, "rain_id"},
		{"rain_id fraction", withRain(`7.25`), errcode.CodeMalformed, "rain_id"},
		{"rain_id exponent", withRain(`7e0`), errcode.CodeMalformed, "rain_id"},
		{"rain_id quoted", withRain(`"7"`), errcode.CodeMalformed, "rain_id"},
		{"rain_id max uint64 + 1", withRain(`18446744073709551616`), errcode.CodeMalformed, "rain_id"},
		{"rain_id 10x max uint64", withRain(`184467440737095516150`), errcode.CodeMalformed, "rain_id"},

		// Strings.
		{"user_id empty", withUser(`""`), errcode.CodeMalformed, "user_id"},
		{"activity_id empty", grantBody(`1`, `"u"`, `""`, `"rain"`, `1`), errcode.CodeMalformed, "activity_id"},
		{"scene_id empty", grantBody(`1`, `"u"`, `"demo"`, `""`, `1`), errcode.CodeMalformed, "scene_id"},
		{"user_id too long", withUser(`"` + long + `"`), errcode.CodeMalformed, "user_id"},
		{"activity_id too long", grantBody(`1`, `"u"`, `"`+long+`"`, `"rain"`, `1`), errcode.CodeMalformed, "activity_id"},
		{"scene_id too long", grantBody(`1`, `"u"`, `"demo"`, `"`+long+`"`, `1`), errcode.CodeMalformed, "scene_id"},
		{"user_id too long after unescaping", withUser(`"` + strings.Repeat(`\u0078`, ingress.IDLenMax+1) + `"`), errcode.CodeMalformed, "user_id"},
		{"user_id too long in 4-byte runes", withUser(`"` + strings.Repeat("😀", ingress.IDLenMax/4) + `x"`), errcode.CodeMalformed, "user_id"},
		{"user_id too long, escaped rune last", withUser(`"` + strings.Repeat("x", ingress.IDLenMax-1) + `\u00e9"`), errcode.CodeMalformed, "user_id"},
		{"user_id number", withUser(`42`), errcode.CodeMalformed, "user_id"},
		{"user_id null", withUser(`null`), errcode.CodeMalformed, "user_id"},
		{"user_id array", withUser(`["u"]`), errcode.CodeMalformed, "user_id"},
		{"user_id unterminated", `{"app_id":1,"user_id":"u`, errcode.CodeMalformed, "user_id"},
		{"raw control character", withUser("\"u\x01\""), errcode.CodeMalformed, "user_id"},
		{"raw tab", withUser("\"u\t\""), errcode.CodeMalformed, "user_id"},
		{"raw newline", withUser("\"u\n\""), errcode.CodeMalformed, "user_id"},
		{"raw nul", withUser("\"u\x00\""), errcode.CodeMalformed, "user_id"},
		{"raw DEL", withUser("\"u\x7f\""), errcode.CodeMalformed, "user_id"},
		{"raw C1 control", withUser("\"u\u0085\""), errcode.CodeMalformed, "user_id"},
		{"escaped newline", withUser(`"u\n"`), errcode.CodeMalformed, "user_id"},
		{"escaped tab", withUser(`"u\t"`), errcode.CodeMalformed, "user_id"},
		{"escaped nul", withUser(`"u\u0000"`), errcode.CodeMalformed, "user_id"},
		{"escaped DEL", withUser(`"u\u007F"`), errcode.CodeMalformed, "user_id"},
		{"escaped C1 control", withUser(`"u\u009f"`), errcode.CodeMalformed, "user_id"},
		{"invalid escape letter", withUser(`"u\x41"`), errcode.CodeMalformed, "user_id"},
		{"invalid escape a", withUser(`"u\a"`), errcode.CodeMalformed, "user_id"},
		{"escaped single quote", withUser(`"u\'"`), errcode.CodeMalformed, "user_id"},
		{"short unicode escape", withUser(`"u\u12"`), errcode.CodeMalformed, "user_id"},
		{"non-hex unicode escape", withUser(`"u\uZZZZ"`), errcode.CodeMalformed, "user_id"},
		{"backslash at end of body", `{"user_id":"u\`, errcode.CodeMalformed, "user_id"},
		{"lone high surrogate", withUser(`"u\ud800"`), errcode.CodeMalformed, "user_id"},
		{"lone high surrogate at end of string", withUser(`"\ud800"`), errcode.CodeMalformed, "user_id"},
		{"lone low surrogate", withUser(`"u\udc00"`), errcode.CodeMalformed, "user_id"},
		{"high surrogate then letter escape", withUser(`"\ud800\u0041"`), errcode.CodeMalformed, "user_id"},
		{"high surrogate then high surrogate", withUser(`"\ud800\ud800"`), errcode.CodeMalformed, "user_id"},
		{"high surrogate then bad escape", withUser(`"\ud800\uZZZZ"`), errcode.CodeMalformed, "user_id"},
		{"high surrogate then short escape", withUser(`"\ud800\n"`), errcode.CodeMalformed, "user_id"},
		{"invalid utf-8 byte", withUser("\"u\xff\""), errcode.CodeMalformed, "user_id"},
		{"truncated utf-8", withUser("\"u\xe2\x82\""), errcode.CodeMalformed, "user_id"},
		{"overlong utf-8", withUser("\"u\xc0\xaf\""), errcode.CodeMalformed, "user_id"},
		{"utf-8 encoded surrogate", withUser("\"u\xed\xa0\x80\""), errcode.CodeMalformed, "user_id"},
		{"invalid utf-8 in field name", "{\"\xff\":1}", errcode.CodeMalformed, ""},
		{"invalid escape in field name", `{"\q":1}`, errcode.CodeMalformed, ""},
	}
	for _, tt := range tests {
		got, err := ingress.ParseGrantRequest([]byte(tt.body))
		if err == nil {
			t.Errorf("%s: ParseGrantRequest(%q) = %+v, want code %s", tt.name, tt.body, got, tt.code)
			continue
		}
		if c := codeOf(t, err); c != tt.code {
			t.Errorf("%s: ParseGrantRequest(%q) err = %v, want code %s", tt.name, tt.body, err, tt.code)
		}
		if !errors.Is(err, tt.code) {
			t.Errorf("%s: errors.Is(%v, %s) = false", tt.name, err, tt.code)
		}
		if got != (ingress.GrantRequest{}) {
			t.Errorf("%s: ParseGrantRequest(%q) returned %+v with its error, want the zero value", tt.name, tt.body, got)
		}
		if tt.mention != "" && !strings.Contains(err.Error(), tt.mention) {
			t.Errorf("%s: ParseGrantRequest(%q) err = %v, want it to mention %q", tt.name, tt.body, err, tt.mention)
		}
	}
}

func TestParseGrantRequestMessage(t *testing.T) {
	_, err := ingress.ParseGrantRequest([]byte(withRain(`0`)))
	var e *errcode.Error
	if !errors.As(err, &e) {
		t.Fatalf("ParseGrantRequest err = %v, want an *errcode.Error", err)
	}
	if want := `field "rain_id": want a positive integer`; e.Message != want {
		t.Errorf("ParseGrantRequest(rain_id 0) message = %q, want %q", e.Message, want)
	}
}

func TestParseGrantRequestAllocs(t *testing.T) {
	body := []byte(canonicalGrant)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := ingress.ParseGrantRequest(body); err != nil {
			t.Fatal(err)
		}
	})
	// One string shared by the three IDs, nothing else.
	if allocs > 1 {
		t.Errorf("ParseGrantRequest allocates %v times per call, want at most 1", allocs)
	}
}

func TestParseGrantBatch(t *testing.T) {
	one := grantBody(`1`, `"u-1"`, `"demo"`, `"rain"`, `1`)
	two := grantBody(`2`, `"u-2"`, `"demo"`, `"rain"`, `9`)
	// minimal is the shortest grant object there is (71 bytes); the count
	// bounds a batch of them (GrantsPerBatchMax), and ListBodyBytesMax
	// bounds the bytes.
	const minimal = `{"app_id":1,"user_id":"u","activity_id":"d","scene_id":"s","rain_id":1}`
	fit := ingress.GrantsPerBatchMax
	items := func(n int) string { return strings.TrimSuffix(strings.Repeat(minimal+",", n), ",") }
	valid := []struct {
		name string
		body string
		n    int
	}{
		{"one", `{"grants":[` + one + `]}`, 1},
		{"two with whitespace", " {\n \"grants\" : [ " + one + " ,\n\t" + two + " ] } ", 2},
		{"as many items as allowed", `{"grants":[` + items(fit) + `]}`, fit},
	}
	for _, tt := range valid {
		got, err := ingress.ParseGrantBatch([]byte(tt.body))
		if err != nil {
			t.Errorf("%s: ParseGrantBatch err = %v, want nil", tt.name, err)
			continue
		}
		if len(got) != tt.n {
			t.Errorf("%s: ParseGrantBatch returned %d grants, want %d", tt.name, len(got), tt.n)
		}
		var std struct{ Grants []stdGrant }
		if err := stdDecode([]byte(tt.body), &std); err != nil {
			t.Errorf("%s: encoding/json rejects the batch: %v", tt.name, err)
			continue
		}
		for i := range std.Grants {
			if i < len(got) && std.Grants[i].request() != got[i] {
				t.Errorf("%s: grants[%d] = %+v, encoding/json says %+v", tt.name, i, got[i], std.Grants[i].request())
			}
		}
	}

	invalid := []struct {
		name    string
		body    string
		code    errcode.Code
		mention string
	}{
		{"empty body", ``, errcode.CodeMalformed, ""},
		{"bare array", `[` + one + `]`, errcode.CodeMalformed, ""},
		{"bare grant", one, errcode.CodeMalformed, "app_id"},
		{"empty object", `{}`, errcode.CodeMalformed, "grants"},
		{"empty array", `{"grants":[]}`, errcode.CodeMalformed, "grants"},
		{"null grants", `{"grants":null}`, errcode.CodeMalformed, "grants"},
		{"object grants", `{"grants":{}}`, errcode.CodeMalformed, "grants"},
		{"one more than allowed", `{"grants":[` + items(fit+1) + `]}`, errcode.CodeMalformed, "grants"},
		{"unknown field", `{"grants":[` + one + `],"x":1}`, errcode.CodeMalformed, "x"},
		{"unknown field first", `{"x":1,"grants":[` + one + `]}`, errcode.CodeMalformed, "x"},
		{"case differs", `{"Grants":[` + one + `]}`, errcode.CodeMalformed, "Grants"},
		{"duplicate grants", `{"grants":[` + one + `],"grants":[` + two + `]}`, errcode.CodeMalformed, "grants"},
		{"bad second item", `{"grants":[` + one + `,` + withRain(`0`) + `]}`, errcode.CodeMalformed, "grants[1]"},
		{"item not object", `{"grants":[` + one + `,1]}`, errcode.CodeMalformed, "grants[1]"},
		{"trailing comma in array", `{"grants":[` + one + `,]}`, errcode.CodeMalformed, ""},
		{"missing comma in array", `{"grants":[` + one + two + `]}`, errcode.CodeMalformed, ""},
		{"unclosed array", `{"grants":[` + one, errcode.CodeMalformed, ""},
		{"unclosed object", `{"grants":[` + one + `]`, errcode.CodeMalformed, ""},
		{"trailing comma in object", `{"grants":[` + one + `],}`, errcode.CodeMalformed, ""},
		{"trailing data", `{"grants":[` + one + `]} {}`, errcode.CodeMalformed, ""},
		{"too large", `{"grants":[` + one + `]}` + strings.Repeat(" ", ingress.ListBodyBytesMax), errcode.CodeTooLarge, ""},
	}
	for _, tt := range invalid {
		got, err := ingress.ParseGrantBatch([]byte(tt.body))
		if err == nil {
			t.Errorf("%s: ParseGrantBatch(%.80q) = %d grants, want code %s", tt.name, tt.body, len(got), tt.code)
			continue
		}
		if c := codeOf(t, err); c != tt.code {
			t.Errorf("%s: ParseGrantBatch(%.80q) err = %v, want code %s", tt.name, tt.body, err, tt.code)
		}
		if got != nil {
			t.Errorf("%s: ParseGrantBatch returned %d grants with its error, want nil", tt.name, len(got))
		}
		if tt.mention != "" && !strings.Contains(err.Error(), tt.mention) {
			t.Errorf("%s: ParseGrantBatch(%.80q) err = %v, want it to mention %q", tt.name, tt.body, err, tt.mention)
		}
	}
}

func TestParseTokens(t *testing.T) {
	tokens := func(n int, tok string) string {
		return `{"tokens":[` + strings.TrimSuffix(strings.Repeat(`"`+tok+`",`, n), ",") + `]}`
	}
	maxTok := strings.Repeat("A", ingress.TokenBytesMax)
	valid := []struct {
		name string
		body string
		want []string
	}{
		{"one", `{"tokens":["abc"]}`, []string{"abc"}},
		{"whitespace", " { \"tokens\" :\n[ \"a\" , \"b\" ]\t} ", []string{"a", "b"}},
		{"escapes", `{"tokens":["a\/b\u002dc\n"]}`, []string{"a/b-c\n"}},
		{"empty token is left to the token layer", `{"tokens":[""]}`, []string{""}},
		{"max token length", tokens(1, maxTok), []string{maxTok}},
		{"max token length after unescaping", `{"tokens":["` + strings.Repeat(`\u0041`, ingress.TokenBytesMax) + `"]}`, []string{maxTok}},
		{"max count", tokens(ingress.TokensPerRequestMax, "t"), slicesRepeat("t", ingress.TokensPerRequestMax)},
	}
	for _, tt := range valid {
		body := []byte(tt.body)
		got, err := ingress.ParseTokens(body)
		if err != nil {
			t.Errorf("%s: ParseTokens(%.80q) err = %v, want nil", tt.name, tt.body, err)
			continue
		}
		if !reflect.DeepEqual(toStrings(got), tt.want) {
			t.Errorf("%s: ParseTokens(%.80q) = %.80q, want %.80q", tt.name, tt.body, toStrings(got), tt.want)
		}
		// The tokens are copies: the server reuses body's buffer.
		for i := range body {
			body[i] = '#'
		}
		if !reflect.DeepEqual(toStrings(got), tt.want) {
			t.Errorf("%s: ParseTokens result changed when the body was overwritten", tt.name)
		}
	}

	// Appending to one token must not overwrite the next.
	got, err := ingress.ParseTokens([]byte(`{"tokens":["ab","cd"]}`))
	if err != nil {
		t.Fatal(err)
	}
	_ = append(got[0], "XY"...)
	if string(got[1]) != "cd" {
		t.Errorf("appending to tokens[0] changed tokens[1] to %q", got[1])
	}

	invalid := []struct {
		name    string
		body    string
		code    errcode.Code
		mention string
	}{
		{"empty body", ``, errcode.CodeMalformed, ""},
		{"bare array", `["a"]`, errcode.CodeMalformed, ""},
		{"empty object", `{}`, errcode.CodeMalformed, "tokens"},
		{"empty array", `{"tokens":[]}`, errcode.CodeMalformed, "tokens"},
		{"string not array", `{"tokens":"a"}`, errcode.CodeMalformed, "tokens"},
		{"too many", tokens(ingress.TokensPerRequestMax+1, "t"), errcode.CodeMalformed, "tokens"},
		{"too long", tokens(1, maxTok+"A"), errcode.CodeMalformed, "tokens[0]"},
		{"too long after unescaping", `{"tokens":["` + strings.Repeat(`\u0041`, ingress.TokenBytesMax+1) + `"]}`, errcode.CodeMalformed, "tokens[0]"},
		{"number item", `{"tokens":["a",1]}`, errcode.CodeMalformed, "tokens[1]"},
		{"null item", `{"tokens":[null]}`, errcode.CodeMalformed, "tokens[0]"},
		{"invalid escape", `{"tokens":["a","\z"]}`, errcode.CodeMalformed, "tokens[1]"},
		{"lone surrogate", `{"tokens":["\udfff"]}`, errcode.CodeMalformed, "tokens[0]"},
		{"raw control character", "{\"tokens\":[\"a\x1f\"]}", errcode.CodeMalformed, "tokens[0]"},
		{"invalid utf-8", "{\"tokens\":[\"a\xfe\"]}", errcode.CodeMalformed, "tokens[0]"},
		{"unknown field", `{"tokens":["a"],"b":1}`, errcode.CodeMalformed, "b"},
		{"duplicate field", `{"tokens":["a"],"tokens":["b"]}`, errcode.CodeMalformed, "tokens"},
		{"trailing comma", `{"tokens":["a",]}`, errcode.CodeMalformed, ""},
		{"trailing data", `{"tokens":["a"]}]`, errcode.CodeMalformed, ""},
		{"too large", tokens(1, strings.Repeat("A", ingress.ListBodyBytesMax)), errcode.CodeTooLarge, ""},
	}
	for _, tt := range invalid {
		got, err := ingress.ParseTokens([]byte(tt.body))
		if err == nil {
			t.Errorf("%s: ParseTokens(%.80q) = %d tokens, want code %s", tt.name, tt.body, len(got), tt.code)
			continue
		}
		if c := codeOf(t, err); c != tt.code {
			t.Errorf("%s: ParseTokens(%.80q) err = %v, want code %s", tt.name, tt.body, err, tt.code)
		}
		if tt.mention != "" && !strings.Contains(err.Error(), tt.mention) {
			t.Errorf("%s: ParseTokens(%.80q) err = %v, want it to mention %q", tt.name, tt.body, err, tt.mention)
		}
	}
}

func slicesRepeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

func toStrings(bs [][]byte) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = string(b)
	}
	return out
}

func TestAppendGrantResponse(t *testing.T) {
	r := ingress.GrantResponse{Token: []byte("tok"), OutTradeNo: "otn-1", ActID: 42, AwardType: "cash", Asset: "cash", Amount: 88, Stage: "gray", Status: "issued"}
	if got, want := string(ingress.AppendGrantResponse(nil, &r)),
		`{"token":"tok","out_trade_no":"otn-1","act_id":42,"award_type":"cash","asset":"cash","amount":88,"stage":"gray","status":"issued"}`; got != want {
		t.Errorf("AppendGrantResponse = %s, want %s", got, want)
	}
	type stdResponse struct {
		Token      string `json:"token"`
		OutTradeNo string `json:"out_trade_no"`
		ActID      uint64 `json:"act_id"`
		AwardType  string `json:"award_type"`
		Asset      string `json:"asset"`
		Amount     int64  `json:"amount"`
		Stage      string `json:"stage"`
		Status     string `json:"status"`
	}
	responses := []ingress.GrantResponse{
		{},
		r,
		{Token: []byte(`q"\` + "\n\x00é😀\u2028"), OutTradeNo: "\t", ActID: math.MaxUint64, AwardType: "coupon", Asset: "item:\"x", Amount: math.MinInt64, Stage: "internal", Status: "booked"},
		{Token: bytes.Repeat([]byte("A-_"), 100), ActID: 1, Amount: math.MaxInt64},
	}
	for _, r := range responses {
		out := ingress.AppendGrantResponse([]byte("x"), &r)[1:]
		var got stdResponse
		if err := stdDecode(out, &got); err != nil {
			t.Errorf("AppendGrantResponse(%+v) = %s, not valid JSON: %v", r, out, err)
			continue
		}
		want := stdResponse{string(r.Token), r.OutTradeNo, r.ActID, r.AwardType, r.Asset, r.Amount, r.Stage, r.Status}
		if got != want {
			t.Errorf("AppendGrantResponse(%+v) = %s, decodes to %+v, want %+v", r, out, got, want)
		}
	}
}

func TestAppendTokenResults(t *testing.T) {
	rs := []ingress.TokenResult{
		{OutTradeNo: "o1", Status: "booked", ActID: 1, AwardType: "cash", Amount: 88},
		{Status: "invalid", Error: "tag mismatch", ActID: 9, Amount: 9},
		{OutTradeNo: "o3", Status: "issued", ActID: 3, AwardType: "coupon", Amount: 1, Error: "ignored"},
	}
	want := `{"results":[` +
		`{"out_trade_no":"o1","status":"booked","act_id":1,"award_type":"cash","amount":88},` +
		`{"out_trade_no":"","status":"invalid","error":"tag mismatch"},` +
		`{"out_trade_no":"o3","status":"issued","act_id":3,"award_type":"coupon","amount":1}]}`
	if got := string(ingress.AppendTokenResults(nil, rs)); got != want {
		t.Errorf("AppendTokenResults =\n%s\nwant\n%s", got, want)
	}
	if got, want := string(ingress.AppendTokenResults(nil, nil)), `{"results":[]}`; got != want {
		t.Errorf("AppendTokenResults(nil) = %s, want %s", got, want)
	}

	type stdResult struct {
		OutTradeNo *string `json:"out_trade_no"`
		Status     string  `json:"status"`
		ActID      *uint64 `json:"act_id"`
		AwardType  *string `json:"award_type"`
		Amount     *int64  `json:"amount"`
		Error      *string `json:"error"`
	}
	rs = append(rs, ingress.TokenResult{OutTradeNo: "\"\\\x01", Status: "invalid", Error: "bad\nkey é"},
		ingress.TokenResult{OutTradeNo: "o5", Status: "redeemed", ActID: math.MaxUint64, AwardType: "\u2029", Amount: -1})
	out := ingress.AppendTokenResults(nil, rs)
	var got struct{ Results []stdResult }
	if err := stdDecode(out, &got); err != nil {
		t.Fatalf("AppendTokenResults = %s, not valid JSON: %v", out, err)
	}
	if len(got.Results) != len(rs) {
		t.Fatalf("AppendTokenResults = %s, decodes to %d results, want %d", out, len(got.Results), len(rs))
	}
	for i, r := range rs {
		g := got.Results[i]
		if g.OutTradeNo == nil || *g.OutTradeNo != r.OutTradeNo || g.Status != r.Status {
			t.Errorf("results[%d] = %s, want out_trade_no %q, status %q", i, out, r.OutTradeNo, r.Status)
		}
		if r.Status == "invalid" {
			if g.Error == nil || *g.Error != r.Error || g.ActID != nil || g.AwardType != nil || g.Amount != nil {
				t.Errorf("results[%d] (invalid) decodes to %+v, want only out_trade_no, status and error %q", i, g, r.Error)
			}
			continue
		}
		if g.Error != nil || g.ActID == nil || *g.ActID != r.ActID || g.AwardType == nil || *g.AwardType != r.AwardType || g.Amount == nil || *g.Amount != r.Amount {
			t.Errorf("results[%d] decodes to %+v, want %+v", i, g, r)
		}
	}
}

func TestAppendJSONString(t *testing.T) {
	exact := []struct{ in, want string }{
		{"", `""`},
		{"abc", `"abc"`},
		{`"`, `"\""`},
		{`\`, `"\\"`},
		{"/", `"/"`},
		{"\n\r\t\b\f", `"\n\r\t\b\f"`},
		{"\x00\x1f", `"\u0000\u001f"`},
		{"\x7f", "\"\x7f\""},
		{"é用😀", `"é用😀"`},
		{"\u2028\u2029", `"\u2028\u2029"`},
		{"a\xffb", `"a\ufffdb"`},
		{"\xe2\x82", `"\ufffd\ufffd"`},
	}
	for _, tt := range exact {
		if got := string(errcode.AppendJSONString(nil, tt.in)); got != tt.want {
			t.Errorf("errcode.AppendJSONString(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
	for _, tt := range exact {
		checkJSONString(t, tt.in)
	}
}

// checkJSONString checks that errcode.AppendJSONString(s) is valid JSON that
// encoding/json decodes to what it decodes its own encoding of s to (they
// differ from s only where s is not valid UTF-8).
func checkJSONString(t *testing.T, s string) {
	t.Helper()
	out := errcode.AppendJSONString(nil, s)
	if !utf8.Valid(out) {
		t.Fatalf("errcode.AppendJSONString(%q) = %q, not valid UTF-8", s, out)
	}
	var got string
	if err := stdDecode(out, &got); err != nil {
		t.Fatalf("errcode.AppendJSONString(%q) = %s, not a valid JSON string: %v", s, out, err)
	}
	stdOut, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var want string
	if err := json.Unmarshal(stdOut, &want); err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("errcode.AppendJSONString(%q) = %s, decodes to %q, want %q", s, out, got, want)
	}
}

// randomGrant returns a valid grant body drawn from rng, written with the
// freedom JSON allows (field order, whitespace, escapes), and the request it
// must parse to.
func randomGrant(rng *rand.Rand) (string, ingress.GrantRequest) {
	want := ingress.GrantRequest{
		AppID:      randomUint(rng, uint32(math.MaxUint32)),
		UserID:     randomID(rng),
		ActivityID: randomID(rng),
		SceneID:    randomID(rng),
		RainID:     randomUint(rng, uint64(math.MaxUint64)),
	}
	members := []string{
		randomName(rng, "app_id") + space(rng) + ":" + space(rng) + strconv.FormatUint(uint64(want.AppID), 10),
		randomName(rng, "user_id") + space(rng) + ":" + space(rng) + randomString(rng, want.UserID),
		randomName(rng, "activity_id") + space(rng) + ":" + space(rng) + randomString(rng, want.ActivityID),
		randomName(rng, "scene_id") + space(rng) + ":" + space(rng) + randomString(rng, want.SceneID),
		randomName(rng, "rain_id") + space(rng) + ":" + space(rng) + strconv.FormatUint(want.RainID, 10),
	}
	rng.Shuffle(len(members), func(i, j int) { members[i], members[j] = members[j], members[i] })
	var b strings.Builder
	b.WriteString(space(rng) + "{" + space(rng))
	for i, m := range members {
		if i > 0 {
			b.WriteString(space(rng) + "," + space(rng))
		}
		b.WriteString(m)
	}
	b.WriteString(space(rng) + "}" + space(rng))
	return b.String(), want
}

// randomUint favours the edges: 1, limit, and numbers of every length.
func randomUint[T uint32 | uint64](rng *rand.Rand, limit T) T {
	switch rng.IntN(4) {
	case 0:
		return 1
	case 1:
		return limit
	case 2:
		return T(rng.Uint64N(uint64(limit))) + 1
	default:
		digits := 1 + rng.IntN(len(strconv.FormatUint(uint64(limit), 10)))
		v := rng.Uint64N(uint64(math.Pow10(digits - 1)))
		if v == 0 {
			v = 1
		}
		return T(min(v, uint64(limit)))
	}
}

// idRunes are the characters random IDs are made of: ASCII including the
// ones JSON must escape, and one-, two-, three- and four-byte UTF-8.
var idRunes = []rune(` !"#/09:@AZ[\]_az{|}~-.é߿ࠀ用￿𐀀😀` + "\U0010FFFF")

func randomID(rng *rand.Rand) string {
	size := 1 + rng.IntN(ingress.IDLenMax)
	var b []byte
	for {
		r := idRunes[rng.IntN(len(idRunes))]
		if len(b)+utf8.RuneLen(r) > size {
			if len(b) == 0 {
				continue
			}
			return string(b)
		}
		b = utf8.AppendRune(b, r)
	}
}

// randomString writes s as a JSON string, escaping each character in one of
// the ways JSON allows, chosen at random.
func randomString(rng *rand.Rand, s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			if rng.IntN(2) == 0 {
				b.WriteString(`\` + string(r))
				continue
			}
		case r == '/' && rng.IntN(2) == 0:
			b.WriteString(`\/`)
			continue
		case rng.IntN(4) == 0:
			format := `\u%04x`
			if rng.IntN(2) == 0 {
				format = `\u%04X`
			}
			if r1, r2 := utf16.EncodeRune(r); r1 != utf8.RuneError {
				fmt.Fprintf(&b, format+format, r1, r2)
			} else {
				fmt.Fprintf(&b, format, r)
			}
			continue
		default:
			b.WriteRune(r)
			continue
		}
		fmt.Fprintf(&b, `\u%04x`, r)
	}
	b.WriteByte('"')
	return b.String()
}

// randomName writes a field name, now and then with an escaped character.
func randomName(rng *rand.Rand, name string) string {
	if rng.IntN(8) != 0 {
		return `"` + name + `"`
	}
	i := rng.IntN(len(name))
	return fmt.Sprintf(`"%s\u%04x%s"`, name[:i], name[i], name[i+1:])
}

func space(rng *rand.Rand) string {
	const ws = " \t\n\r"
	n := rng.IntN(4)
	if n == 3 {
		n = 0 // Favour no whitespace at all.
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = ws[rng.IntN(len(ws))]
	}
	return string(b)
}

// TestParseGrantRequestAgreesWithStdlib checks, for random valid bodies,
// that the parser accepts them and that encoding/json decodes them to the
// same request. A failure names its seed; every seed is replayed by the
// test itself, so fixing the failure is checked by running it again.
func TestParseGrantRequestAgreesWithStdlib(t *testing.T) {
	seeds := 5000
	if testing.Short() {
		seeds = 500
	}
	for seed := range uint64(seeds) {
		rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
		body, want := randomGrant(rng)
		got, err := ingress.ParseGrantRequest([]byte(body))
		if err != nil {
			t.Fatalf("seed %d: ParseGrantRequest(%q) err = %v, want %+v", seed, body, err, want)
		}
		if got != want {
			t.Fatalf("seed %d: ParseGrantRequest(%q) = %+v, want %+v", seed, body, got, want)
		}
		var std stdGrant
		if err := stdDecode([]byte(body), &std); err != nil {
			t.Fatalf("seed %d: encoding/json rejects %q: %v", seed, body, err)
		}
		if std.request() != got {
			t.Fatalf("seed %d: ParseGrantRequest(%q) = %+v, encoding/json says %+v", seed, body, got, std.request())
		}
	}
}

// TestParseGrantBatchAgreesWithStdlib is the batch form of
// TestParseGrantRequestAgreesWithStdlib.
func TestParseGrantBatchAgreesWithStdlib(t *testing.T) {
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 0x5bd1e995))
		n := 1 + rng.IntN(50)
		items := make([]string, n)
		want := make([]ingress.GrantRequest, n)
		for i := range items {
			items[i], want[i] = randomGrant(rng)
		}
		body := space(rng) + `{` + space(rng) + `"grants"` + space(rng) + `:` + space(rng) + `[` + strings.Join(items, ",") + `]` + space(rng) + `}`
		got, err := ingress.ParseGrantBatch([]byte(body))
		if err != nil {
			t.Fatalf("seed %d: ParseGrantBatch(%q) err = %v", seed, body, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("seed %d: ParseGrantBatch(%q) = %+v, want %+v", seed, body, got, want)
		}
		var std struct{ Grants []stdGrant }
		if err := stdDecode([]byte(body), &std); err != nil {
			t.Fatalf("seed %d: encoding/json rejects %q: %v", seed, body, err)
		}
		for i := range std.Grants {
			if std.Grants[i].request() != got[i] {
				t.Fatalf("seed %d: grants[%d] = %+v, encoding/json says %+v", seed, i, got[i], std.Grants[i].request())
			}
		}
	}
}

// benchGrant is a grant body of realistic size.
var benchGrant = []byte(`{"app_id": 10001, "user_id": "u-8c1f2e7a-4b6d-4f3e-9a5b-0d2c7e1f3a9b", "activity_id": "spring-festival-2026", "scene_id": "rain", "rain_id": 20260128}`)

func BenchmarkParseGrantRequest(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchGrant)))
	for b.Loop() {
		if _, err := ingress.ParseGrantRequest(benchGrant); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseGrantRequestStdlib is what ParseGrantRequest replaced:
// encoding/json into an equivalent struct, without the strict checks.
func BenchmarkParseGrantRequestStdlib(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchGrant)))
	for b.Loop() {
		var g stdGrant
		if err := json.Unmarshal(benchGrant, &g); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendGrantResponse(b *testing.B) {
	r := ingress.GrantResponse{
		Token:      []byte("AQAAAAEAAAAAAAAAAQ.kHc3Wq9x0Jt7b2mV5sYpL1nR8eG4dF6aZ-iUoK_wTyXcQvBh3NjM0lEr"),
		OutTradeNo: "rr-000000000000002a-0000000000000001",
		ActID:      42,
		AwardType:  "cash",
		Amount:     88,
		Status:     "issued",
	}
	dst := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		dst = ingress.AppendGrantResponse(dst[:0], &r)
	}
	b.SetBytes(int64(len(dst)))
}

func BenchmarkParseTokens(b *testing.B) {
	tok := `"AQAAAAEAAAAAAAAAAQ.kHc3Wq9x0Jt7b2mV5sYpL1nR8eG4dF6aZ-iUoK_wTyXcQvBh3NjM0lEr"`
	body := []byte(`{"tokens":[` + strings.TrimSuffix(strings.Repeat(tok+",", 100), ",") + `]}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := ingress.ParseTokens(body); err != nil {
			b.Fatal(err)
		}
	}
}
