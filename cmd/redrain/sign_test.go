package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"redrain/adminauth"
)

const (
	testAppKey      = "1:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	testAppKeyLabel = "7.2027:ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100"
)

// signClock is the time of the tests' signatures and verifications.
var signClock = time.UnixMilli(1_790_000_000_000)

func signNow() time.Time { return signClock }

// runSignTest runs `redrain sign args` with $REDRAIN_APP_KEY set to env.
func runSignTest(args []string, env, stdin string) (exit int, stdout, stderr string) {
	c, out, errOut := testCLI(map[string]string{"REDRAIN_APP_KEY": env}, stdin)
	exit = runSign(c, args, signNow)
	return exit, out.String(), errOut.String()
}

// parseHeaders reads the "Name: value" lines of sign's output, as curl -H
// @FILE does.
func parseHeaders(t *testing.T, out string) http.Header {
	t.Helper()
	h := http.Header{}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("output has %d lines, want 4:\n%s", len(lines), out)
	}
	for _, l := range lines {
		name, value, ok := strings.Cut(l, ": ")
		if !ok || value == "" || strings.TrimSpace(value) != value {
			t.Fatalf("line %q is not Name: value", l)
		}
		h.Add(name, value)
	}
	return h
}

// verify checks h as a node with app_keys keys does, for a request of
// method, path, rawQuery and body, and returns the key id that signed it.
func verify(t *testing.T, keys []string, h http.Header, method, path, rawQuery string, body []byte) (string, error) {
	t.Helper()
	parsed, err := adminauth.ParseAppKeys(keys)
	if err != nil {
		t.Fatal(err)
	}
	v := &adminauth.Verifier{Keys: parsed, Nonces: adminauth.NewHashNonces(2 * time.Minute),
		Window: adminauth.AppWindowDefault, Now: signNow}
	return v.Verify(context.Background(), []byte(method), []byte(path), []byte(rawQuery),
		func(n string) []byte { return []byte(h.Get(n)) }, body)
}

func TestSignRequest(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "body.json")
	fileBody := "{\"app_id\":1,\n\"user_id\":\"u-42\"}\n" // Newlines are signed as they are.
	if err := os.WriteFile(file, []byte(fileBody), 0o600); err != nil {
		t.Fatal(err)
	}
	grant := `{"app_id":1,"user_id":"u-42","activity_id":"demo","scene_id":"rain","rain_id":1}`
	for _, tc := range []struct {
		name              string
		args              []string
		env, stdin        string
		keyID             string // The key that signs.
		method, path, raw string // The request as sent.
		body              string
	}{
		{name: "grant", args: []string{"--key", testAppKey, "POST", "http://127.0.0.1:8080/v1/grants", grant},
			keyID: "1", method: "POST", path: "/v1/grants", body: grant},
		{name: "key from env", args: []string{"POST", "http://127.0.0.1:8080/v1/grants", grant}, env: testAppKey,
			keyID: "1", method: "POST", path: "/v1/grants", body: grant},
		{name: "flag over env", args: []string{"POST", "https://node.example/v1/grants/batch", "--key", testAppKeyLabel, grant},
			env: testAppKey, keyID: "7.2027", method: "POST", path: "/v1/grants/batch", body: grant},
		{name: "query kept as sent", args: []string{"--key", testAppKey, "GET", "http://h:1/v1/wallet?b=2&act_id=17&a=%2F"},
			keyID: "1", method: "GET", path: "/v1/wallet", raw: "b=2&act_id=17&a=%2F"},
		{name: "escaped path", args: []string{"--key", testAppKey, "GET", "http://h/v1/users/a%2Fb"},
			keyID: "1", method: "GET", path: "/v1/users/a%2Fb"},
		{name: "no path", args: []string{"--key", testAppKey, "GET", "http://h"}, keyID: "1", method: "GET", path: "/"},
		{name: "path only", args: []string{"--key", testAppKey, "GET", "/v1/wallet?act_id=3"},
			keyID: "1", method: "GET", path: "/v1/wallet", raw: "act_id=3"},
		{name: "file", args: []string{"--key", testAppKey, "POST", "http://h/v1/bind", "@" + file},
			keyID: "1", method: "POST", path: "/v1/bind", body: fileBody},
		{name: "stdin", args: []string{"--key", testAppKey, "POST", "http://h/v1/tokens/redeem", "-"}, stdin: "{\"token\":\"x\"}\n",
			keyID: "1", method: "POST", path: "/v1/tokens/redeem", body: "{\"token\":\"x\"}\n"},
		{name: "body after --", args: []string{"--key", testAppKey, "PUT", "http://h/v1/x", "--", "-1"},
			keyID: "1", method: "PUT", path: "/v1/x", body: "-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			exit, stdout, stderr := runSignTest(tc.args, tc.env, tc.stdin)
			if exit != 0 {
				t.Fatalf("exit %d, stderr:\n%s", exit, stderr)
			}
			h := parseHeaders(t, stdout)
			keys := []string{testAppKey, testAppKeyLabel}
			var body []byte
			if tc.body != "" {
				body = []byte(tc.body)
			}
			if id, err := verify(t, keys, h, tc.method, tc.path, tc.raw, body); err != nil || id != tc.keyID {
				t.Errorf("Verify = %q, %v; want key %q", id, err, tc.keyID)
			}
			// The signature covers the method, path, query and body.
			for _, other := range []struct{ method, path, raw, body string }{
				{tc.method, tc.path, tc.raw, tc.body + " "},
				{"DELETE", tc.path, tc.raw, tc.body},
				{tc.method, tc.path + "x", tc.raw, tc.body},
				{tc.method, tc.path, tc.raw + "&z=1", tc.body},
			} {
				_, err := verify(t, keys, h, other.method, other.path, other.raw, []byte(other.body))
				var ae *adminauth.Error
				if !errors.As(err, &ae) || ae.Reason != adminauth.ReasonBadSignature {
					t.Errorf("Verify of %s %s?%s with body %q = %v, want bad_signature", other.method, other.path, other.raw, other.body, err)
				}
			}
		})
	}
}

// TestSignFresh: each run signs with a fresh nonce, so a node takes two
// runs for the same request and refuses one run's headers twice.
func TestSignFresh(t *testing.T) {
	args := []string{"--key", testAppKey, "POST", "http://h/v1/grants", "{}"}
	_, first, _ := runSignTest(args, "", "")
	_, second, _ := runSignTest(args, "", "")
	h1, h2 := parseHeaders(t, first), parseHeaders(t, second)
	if h1.Get(adminauth.HeaderNonce) == h2.Get(adminauth.HeaderNonce) {
		t.Errorf("two runs share the nonce %s", h1.Get(adminauth.HeaderNonce))
	}
	if want := "1790000000000"; h1.Get(adminauth.HeaderTimestamp) != want {
		t.Errorf("timestamp %s, want the clock's %s", h1.Get(adminauth.HeaderTimestamp), want)
	}
	keys, err := adminauth.ParseAppKeys([]string{testAppKey})
	if err != nil {
		t.Fatal(err)
	}
	v := &adminauth.Verifier{Keys: keys, Nonces: adminauth.NewHashNonces(2 * time.Minute), Window: adminauth.AppWindowDefault, Now: signNow}
	check := func(h http.Header) error {
		_, err := v.Verify(context.Background(), []byte("POST"), []byte("/v1/grants"), nil,
			func(n string) []byte { return []byte(h.Get(n)) }, []byte("{}"))
		return err
	}
	var ae *adminauth.Error
	if err := check(h1); err != nil {
		t.Errorf("first run: %v", err)
	}
	if err := check(h2); err != nil {
		t.Errorf("second run: %v", err)
	}
	if err := check(h1); !errors.As(err, &ae) || ae.Reason != adminauth.ReasonReplayed {
		t.Errorf("first run again: %v, want replayed", err)
	}
}

func TestSignConsent(t *testing.T) {
	keys, err := adminauth.ParseAppKeys([]string{testAppKey, testAppKeyLabel})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		args    []string
		env     string
		keyID   string
		expires time.Duration // After signClock.
	}{
		{"default ttl", []string{"consent", "--key", testAppKeyLabel, "--app", "1", "--user", "u-42", "--act-id", "17"}, "", "7.2027", time.Hour},
		{"flags first, key from env", []string{"--app=1", "--user", "u-42", "--act-id", "17", "--ttl", "24h", "consent"}, testAppKey, "1", 24 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			exit, stdout, stderr := runSignTest(tc.args, tc.env, "")
			if exit != 0 {
				t.Fatalf("exit %d, stderr:\n%s", exit, stderr)
			}
			if !strings.HasSuffix(stdout, "}\n") || strings.Count(stdout, "\n") != 1 {
				t.Errorf("output %q, want one JSON object on a line", stdout)
			}
			var got map[string]any
			if err := json.Unmarshal([]byte(stdout), &got); err != nil || len(got) != 3 {
				t.Fatalf("output %q: %v; want {key, expires, signature}", stdout, err)
			}
			var c struct {
				Key       string `json:"key"`
				Expires   int64  `json:"expires"`
				Signature string `json:"signature"`
			}
			if err := json.Unmarshal([]byte(stdout), &c); err != nil {
				t.Fatal(err)
			}
			consent := adminauth.Consent{KeyID: c.Key, Expires: c.Expires, Signature: c.Signature}
			if c.Key != tc.keyID || c.Expires != signClock.Add(tc.expires).UnixMilli() {
				t.Errorf("consent %+v, want key %s expiring %v after now", c, tc.keyID, tc.expires)
			}
			app, _ := adminauth.AppOfKey(tc.keyID)
			if got, err := adminauth.VerifyConsent(keys, consent, 1, "u-42", 17, signClock); err != nil || got != app {
				t.Errorf("VerifyConsent = %d, %v; want app %d", got, err, app)
			}
			var ae *adminauth.Error
			if _, err := adminauth.VerifyConsent(keys, consent, 1, "u-43", 17, signClock); !errors.As(err, &ae) || ae.Reason != adminauth.ReasonBadSignature {
				t.Errorf("VerifyConsent for another user = %v, want bad_signature", err)
			}
			if _, err := adminauth.VerifyConsent(keys, consent, 1, "u-42", 18, signClock); !errors.As(err, &ae) || ae.Reason != adminauth.ReasonBadSignature {
				t.Errorf("VerifyConsent for another account = %v, want bad_signature", err)
			}
		})
	}
}

func TestSignErrors(t *testing.T) {
	url := "http://h/v1/grants"
	for _, tc := range []struct {
		name   string
		args   []string
		env    string
		exit   int
		stdout string // A part of stdout.
		stderr string // A part of stderr.
	}{
		{name: "help", args: []string{"-h"}, stdout: "redrain sign --key \"$REDRAIN_APP_KEY\" POST http://127.0.0.1:8080/v1/grants"},
		{name: "consent help", args: []string{"consent", "--help"}, stdout: "Usage:\n  redrain sign [--key APP:HEX] METHOD URL"},
		{name: "no arguments", args: nil, exit: 2, stderr: "Usage:\n  redrain sign"},
		{name: "no key", args: []string{"POST", url}, exit: 2, stderr: "no key: pass --key APP:HEX or set $REDRAIN_APP_KEY"},
		{name: "consent no key", args: []string{"consent", "--app", "1", "--user", "u", "--act-id", "1"}, exit: 2,
			stderr: "no key: pass --key APP:HEX or set $REDRAIN_APP_KEY"},
		{name: "bad key", args: []string{"--key", "1:00", "POST", url}, exit: 2, stderr: "--key: adminauth: invalid key: key 1: secret has 1 bytes"},
		{name: "bad key from env", args: []string{"POST", url}, env: "1", exit: 2, stderr: "--key: adminauth: invalid key: want ID:HEX"},
		{name: "key names no app", args: []string{"--key", "ops:" + strings.Repeat("ab", 32), "POST", url}, exit: 2,
			stderr: `--key: adminauth: invalid key: id "ops" does not name an app`},
		{name: "key app zero", args: []string{"--key", "0.x:" + strings.Repeat("ab", 32), "POST", url}, exit: 2,
			stderr: `id "0.x" does not name an app`},
		{name: "missing URL", args: []string{"POST"}, env: testAppKey, exit: 2, stderr: "want METHOD URL [BODY|@FILE|-], not 1 arguments"},
		{name: "too many", args: []string{"POST", url, "{}", "{}"}, env: testAppKey, exit: 2, stderr: "not 4 arguments"},
		{name: "lower-case method", args: []string{"post", url}, env: testAppKey, exit: 2, stderr: `method "post": methods are case-sensitive: write POST`},
		{name: "unknown method", args: []string{"FETCH", url}, env: testAppKey, exit: 2, stderr: `method "FETCH": want one of GET, HEAD, POST`},
		{name: "bad scheme", args: []string{"GET", "ftp://h/v1/x"}, env: testAppKey, exit: 2, stderr: `URL "ftp://h/v1/x": want http://HOST/PATH`},
		{name: "relative URL", args: []string{"GET", "v1/x"}, env: testAppKey, exit: 2, stderr: `URL "v1/x": want`},
		{name: "no host", args: []string{"GET", "http:///v1/x"}, env: testAppKey, exit: 2, stderr: "want http://HOST/PATH"},
		{name: "bad query", args: []string{"GET", "http://h/v1/x?a=%zz"}, env: testAppKey, exit: 2, stderr: "query"},
		{name: "missing file", args: []string{"POST", url, "@" + filepath.Join(t.TempDir(), "nope.json")}, env: testAppKey, exit: 1,
			stderr: "redrain sign: body: open"},
		{name: "unknown flag", args: []string{"--nope", "POST", url}, env: testAppKey, exit: 2, stderr: "flag provided but not defined: -nope"},
		{name: "consent flag on a request", args: []string{"POST", url, "--user", "u"}, env: testAppKey, exit: 2,
			stderr: "--user: only for 'redrain sign consent'"},
		{name: "consent without app", args: []string{"consent", "--user", "u", "--act-id", "1"}, env: testAppKey, exit: 2,
			stderr: "--app N is required"},
		{name: "consent app too large", args: []string{"consent", "--app", "4294967296", "--user", "u", "--act-id", "1"}, env: testAppKey, exit: 2,
			stderr: "--app N is required"},
		{name: "consent without user", args: []string{"consent", "--app", "2", "--act-id", "1"}, env: testAppKey, exit: 2,
			stderr: "--user U is required"},
		{name: "consent without act-id", args: []string{"consent", "--app", "2", "--user", "u"}, env: testAppKey, exit: 2,
			stderr: "--act-id A is required"},
		{name: "consent ttl too long", args: []string{"consent", "--app", "2", "--user", "u", "--act-id", "1", "--ttl", "25h"}, env: testAppKey,
			exit: 2, stderr: "--ttl 25h0m0s: want more than 0 and at most 24h0m0s"},
		{name: "consent ttl negative", args: []string{"consent", "--app", "2", "--user", "u", "--act-id", "1", "--ttl", "-1m"}, env: testAppKey,
			exit: 2, stderr: "--ttl -1m0s"},
		{name: "consent extra argument", args: []string{"consent", "u", "--app", "2"}, env: testAppKey, exit: 2,
			stderr: `consent: unexpected arguments ["u"]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			exit, stdout, stderr := runSignTest(tc.args, tc.env, "")
			if exit != tc.exit {
				t.Errorf("exit %d, want %d; stderr:\n%s", exit, tc.exit, stderr)
			}
			if !strings.Contains(stdout, tc.stdout) || (tc.stdout == "" && stdout != "") {
				t.Errorf("stdout:\n%s\nwant it to contain %q", stdout, tc.stdout)
			}
			if !strings.Contains(stderr, tc.stderr) || (tc.stderr == "" && stderr != "") {
				t.Errorf("stderr:\n%s\nwant it to contain %q", stderr, tc.stderr)
			}
		})
	}
}

func TestAppKeyOr(t *testing.T) {
	env := func(v string) func(string) string {
		return func(name string) string {
			if name == "REDRAIN_APP_KEY" {
				return v
			}
			return ""
		}
	}
	for _, tc := range []struct{ flag, env, want string }{
		{"", "", ""}, // Unsigned.
		{"", testAppKey, testAppKey},
		{testAppKeyLabel, testAppKey, testAppKeyLabel},
	} {
		if got := appKeyOr(tc.flag, env(tc.env)); got != tc.want {
			t.Errorf("appKeyOr(%q) with $REDRAIN_APP_KEY=%q = %q, want %q", tc.flag, tc.env, got, tc.want)
		}
	}
}
