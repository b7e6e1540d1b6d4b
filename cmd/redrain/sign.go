package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"redrain/adminauth"
)

var signCommand = &command{name: "sign",
	summary: "print the signature headers of one client API (/v1) request, or a bind consent",
	synopsis: "redrain sign [--key APP:HEX] METHOD URL [BODY|@FILE|-]\n" +
		"redrain sign consent [--key APP:HEX] --app N --user U --act-id A [--ttl 1h]",
	details: `Prints the four headers that sign one client API request (/v1/...) with an
app key, one "Name: value" a line, for curl -H @FILE. The signature covers
METHOD, the path and query of URL exactly as they are sent (URL may also be
the path and query alone, /v1/...), and the body byte for byte: BODY
itself, the content of FILE (@FILE), stdin (-), or none when it is left
out. Each run draws a fresh nonce and takes the time: send the request once
(a node refuses a replayed nonce) and within a minute. Send a body from a
file with curl --data-binary @FILE (curl -d @FILE drops the file's
newlines, and the signature would no longer match).

"sign consent" prints the consent of the key's app (one whose user the
account already holds) that app N's user U joins the account A (act_id):
the JSON object that app N's bind request carries as its "consent" field,
valid for --ttl (default 1h, at most 24h).

--key is an app key "APP:HEX" or "APP.LABEL:HEX" of the node's app_keys,
APP the app it signs for (default $REDRAIN_APP_KEY; redrain keygen --id APP
makes one). Exit status: 2 on bad usage, 1 when the body cannot be read.`,
	examples: `# sign a grant and send it with curl
body='{"app_id":1,"user_id":"u-42","activity_id":"demo","scene_id":"rain","rain_id":1}'
redrain sign --key "$REDRAIN_APP_KEY" POST http://127.0.0.1:8080/v1/grants "$body" > h &&
  curl -s -H @h -d "$body" http://127.0.0.1:8080/v1/grants
# app 7 consents that app 2's user b-1 joins account 17; app 2's bind carries it
c=$(redrain sign consent --key "$APP7_KEY" --app 2 --user b-1 --act-id 17)
body='{"app_id":2,"user_id":"b-1","act_id":17,"consent":'"$c"'}'
redrain sign --key "$APP2_KEY" POST http://127.0.0.1:8080/v1/accounts/bind "$body" > h &&
  curl -s -H @h -d "$body" http://127.0.0.1:8080/v1/accounts/bind`}

// signMethods are the methods sign accepts, exactly as an HTTP client
// sends them (methods are case-sensitive).
var signMethods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

// runSign runs `redrain sign args` at the time now and returns the exit
// status.
func runSign(c *cli, args []string, now func() time.Time) int {
	fs := signCommand.flagSet()
	keyText := fs.String("key", "", "app key APP:HEX or APP.LABEL:HEX (default $REDRAIN_APP_KEY)")
	app := fs.Uint64("app", 0, "consent: the app whose user joins the account")
	user := fs.String("user", "", "consent: that app's user id")
	actID := fs.Uint64("act-id", 0, "consent: the account (act_id) the user joins")
	ttl := fs.Duration("ttl", time.Hour, "consent: how long it is valid, at most 24h")
	if len(args) == 0 {
		signCommand.writeUsage(c.stderr, fs)
		return 2
	}
	pos, err := parseSignArgs(fs, args)
	if err := signCommand.parsed(c, fs, err); err != nil {
		return c.exitCode(signCommand.name, err)
	}
	usageErr := func(format string, args ...any) int {
		return c.exitCode(signCommand.name, signCommand.usageError(c, format, args...))
	}
	consent := len(pos) > 0 && pos[0] == "consent"
	if !consent {
		var consentFlags []string
		fs.Visit(func(f *flag.Flag) { // the command line only: variables are read below
			if f.Name != "key" {
				consentFlags = append(consentFlags, "--"+f.Name)
			}
		})
		if len(consentFlags) > 0 {
			return usageErr("%s: only for 'redrain sign consent'", strings.Join(consentFlags, ", "))
		}
		if len(pos) < 2 || len(pos) > 3 {
			return usageErr("want METHOD URL [BODY|@FILE|-], not %d arguments %q", len(pos), pos)
		}
	}
	if err := signCommand.setFromEnv(c, fs); err != nil {
		return c.exitCode(signCommand.name, err)
	}
	text := appKeyOr(*keyText, c.getenv)
	if text == "" {
		return usageErr("no key: pass --key APP:HEX or set $REDRAIN_APP_KEY to a key of the node's app_keys")
	}
	key, _, err := adminauth.ParseAppKey(text)
	if err != nil {
		return usageErr("--key: %v", err)
	}
	if consent {
		return signConsent(key, pos[1:], *app, *user, *actID, *ttl, now(), c.stdout, usageErr)
	}

	method, target := pos[0], pos[1]
	if !slices.Contains(signMethods, method) {
		if up := strings.ToUpper(method); slices.Contains(signMethods, up) {
			return usageErr("method %q: methods are case-sensitive: write %s, as the request sends it", method, up)
		}
		return usageErr("method %q: want one of %s", method, strings.Join(signMethods, ", "))
	}
	path, rawQuery, err := requestTarget(target)
	if err != nil {
		return usageErr("URL %q: %v", target, err)
	}
	var body []byte
	if len(pos) == 3 {
		switch arg := pos[2]; {
		case arg == "-":
			body, err = io.ReadAll(c.stdin)
		case strings.HasPrefix(arg, "@"):
			body, err = os.ReadFile(arg[1:])
		default:
			body = []byte(arg)
		}
		if err != nil {
			fmt.Fprintf(c.stderr, "redrain sign: body: %v\n", err)
			return 1
		}
	}
	signer := &adminauth.Signer{Key: key, Now: now}
	h, err := signer.Headers(method, path, rawQuery, body)
	if err != nil {
		return usageErr("%v", err)
	}
	var out strings.Builder
	for _, name := range []string{adminauth.HeaderKey, adminauth.HeaderTimestamp, adminauth.HeaderNonce, adminauth.HeaderSignature} {
		fmt.Fprintf(&out, "%s: %s\n", name, h.Get(name))
	}
	if _, err := io.WriteString(c.stdout, out.String()); err != nil {
		fmt.Fprintf(c.stderr, "redrain sign: %v\n", err)
		return 1
	}
	return 0
}

// signConsent prints key's consent that app's user joins actID, valid
// from at for ttl.
func signConsent(key adminauth.Key, extra []string, app uint64, user string, actID uint64, ttl time.Duration, at time.Time,
	stdout io.Writer, usageErr func(string, ...any) int) int {
	switch {
	case len(extra) > 0:
		return usageErr("consent: unexpected arguments %q (its values are flags: --app, --user, --act-id, --ttl)", extra)
	case app < 1 || app > 1<<32-1:
		return usageErr("consent: --app N is required: the app whose user joins the account, 1-4294967295")
	case user == "":
		return usageErr("consent: --user U is required: the user id of app %d who joins the account", app)
	case actID < 1:
		return usageErr("consent: --act-id A is required: the account (act_id, 1 or more) the user joins")
	case ttl <= 0 || ttl > adminauth.ConsentLifeMax:
		return usageErr("consent: --ttl %v: want more than 0 and at most %v", ttl, adminauth.ConsentLifeMax)
	}
	c := adminauth.SignConsent(key, uint32(app), user, actID, at.Add(ttl))
	out, err := json.Marshal(struct {
		Key       string `json:"key"`
		Expires   int64  `json:"expires"`
		Signature string `json:"signature"`
	}{c.KeyID, c.Expires, c.Signature})
	if err == nil {
		_, err = stdout.Write(append(out, '\n'))
	}
	if err != nil {
		return 1
	}
	return 0
}

// parseSignArgs parses flags that may come before, between or after the
// positional arguments, and returns the positional ones; every argument
// after "--" is positional (a body that starts with '-').
func parseSignArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var rest []string
	if i := slices.Index(args, "--"); i >= 0 {
		args, rest = args[:i], args[i+1:]
	}
	pos, err := parseInterleaved(fs, args)
	return append(pos, rest...), err
}

// requestTarget returns the path (still percent-encoded, "/" when empty)
// and the raw query of a URL as an HTTP client sends them. The URL is
// http:// or https:// with a host, or a path that starts with '/'.
func requestTarget(s string) (path, rawQuery string, err error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", "", err
	}
	switch {
	case u.Scheme == "" && u.Host == "" && strings.HasPrefix(s, "/"):
	case (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && u.Opaque == "":
	default:
		return "", "", errors.New("want http://HOST/PATH, https://HOST/PATH or a path /PATH, with the query if any")
	}
	path = u.EscapedPath()
	if path == "" {
		path = "/"
	}
	return path, u.RawQuery, nil
}

// appKeyOr returns flag when set, else $REDRAIN_APP_KEY (empty when that
// is not set either: bench then sends its grant requests unsigned).
func appKeyOr(flag string, getenv func(string) string) string {
	if flag != "" {
		return flag
	}
	return getenv("REDRAIN_APP_KEY")
}
