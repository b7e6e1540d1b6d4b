package adminauth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Signer signs admin requests with one key. It is safe for concurrent use.
type Signer struct {
	Key Key
	// Now is the clock of the timestamps; nil means time.Now.
	Now func() time.Time
}

// Headers returns the four headers that sign a request with method, path
// (as sent, still percent-encoded), rawQuery (without the '?') and body.
// Each call draws a fresh nonce, so each result signs one request.
func (s *Signer) Headers(method, path, rawQuery string, body []byte) (http.Header, error) {
	if !validKeyID(s.Key.ID) || len(s.Key.Secret) < SecretLenMin {
		return nil, fmt.Errorf("%w: signer key %q has a bad id or a secret under %d bytes", ErrKeyInvalid, s.Key.ID, SecretLenMin)
	}
	var raw [16]byte
	_, _ = rand.Read(raw[:]) // crypto/rand.Read never fails; it crashes the program instead.
	nonce := hex.EncodeToString(raw[:])
	ts := strconv.FormatInt(now(s.Now).UnixMilli(), 10)
	c, err := Canonical(method, path, rawQuery, ts, nonce, bodyHash(body))
	if err != nil {
		return nil, fmt.Errorf("adminauth: sign %s %s: %w", method, path, err)
	}
	h := make(http.Header, 4)
	h.Set(HeaderKey, s.Key.ID)
	h.Set(HeaderTimestamp, ts)
	h.Set(HeaderNonce, nonce)
	h.Set(HeaderSignature, hex.EncodeToString(mac(s.Key.Secret, c)))
	return h, nil
}

// Sign sets the four signature headers on req, whose body is body (req's
// own Body is not read). Change nothing of req's method, URL or body after
// signing it.
func (s *Signer) Sign(req *http.Request, body []byte) error {
	method := req.Method
	if method == "" {
		method = http.MethodGet // as net/http sends it
	}
	h, err := s.Headers(method, req.URL.EscapedPath(), req.URL.RawQuery, body)
	if err != nil {
		return err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	return nil
}

func now(f func() time.Time) time.Time {
	if f == nil {
		return time.Now()
	}
	return f()
}

// Reasons of an *Error, in the order Verify checks them.
const (
	ReasonUnsigned     = "unsigned"
	ReasonMalformed    = "malformed"
	ReasonUnknownKey   = "unknown_key"
	ReasonExpired      = "expired"
	ReasonBadSignature = "bad_signature"
	ReasonReplayed     = "replayed"
)

// Error is a request that failed verification. The HTTP layer answers it
// with 401 {"code":"unauthorized","message":Error()}.
type Error struct {
	Reason string // One of the Reason constants.
	Msg    string // What was wrong, for the caller; never a secret.
}

func (e *Error) Error() string { return e.Reason + ": " + e.Msg }

func fail(reason, format string, args ...any) (string, error) {
	return "", &Error{Reason: reason, Msg: fmt.Sprintf(format, args...)}
}

// DefaultWindow is the Verifier's default window.
const DefaultWindow = 5 * time.Minute

// Verifier checks the signatures of admin requests. It is safe for
// concurrent use once its fields are set.
type Verifier struct {
	// Keys are the accepted keys by id.
	Keys map[string]Key
	// Window is how far a request's timestamp may be from now, either way
	// (default DefaultWindow). Nonces are remembered for twice as long, so
	// a request is refused as expired before its nonce is forgotten.
	Window time.Duration
	// Nonces remembers the nonces of verified requests.
	Nonces NonceStore
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Verify checks the signature of a request: method as sent, path as sent
// (still percent-encoded, without the query), rawQuery without the '?',
// header returning a header's value (nil or empty when absent) and the
// body. It returns the key id that signed it, or an *Error for a request
// to refuse with 401, or another error when the nonce store failed.
func (v *Verifier) Verify(ctx context.Context, method, path, rawQuery []byte, header func(name string) []byte, body []byte) (keyID string, err error) {
	window := v.Window
	if window == 0 {
		window = DefaultWindow
	}
	if window < time.Millisecond || v.Nonces == nil {
		return "", errors.New("adminauth: verifier needs a window of at least 1ms and a nonce store")
	}
	id, ts, nonce, sig := header(HeaderKey), header(HeaderTimestamp), header(HeaderNonce), header(HeaderSignature)
	for _, h := range []struct {
		name  string
		value []byte
	}{{HeaderKey, id}, {HeaderTimestamp, ts}, {HeaderNonce, nonce}, {HeaderSignature, sig}} {
		if len(h.value) == 0 {
			return fail(ReasonUnsigned, "header %s is missing", h.name)
		}
	}
	keyID = string(id)
	if !validKeyID(keyID) {
		return fail(ReasonMalformed, "%s is not 1-%d characters of [A-Za-z0-9._-]", HeaderKey, KeyIDLenMax)
	}
	millis, ok := parseMillis(ts)
	if !ok {
		return fail(ReasonMalformed, "%s is not unix milliseconds in decimal", HeaderTimestamp)
	}
	if !validNonce(string(nonce)) {
		return fail(ReasonMalformed, "%s is not %d-%d characters of [A-Za-z0-9_-]", HeaderNonce, NonceLenMin, NonceLenMax)
	}
	if len(sig) != signatureLen || !lowerHex(sig) {
		return fail(ReasonMalformed, "%s is not %d lowercase hex digits", HeaderSignature, signatureLen)
	}
	want := make([]byte, len(sig)/2)
	_, _ = hex.Decode(want, sig) // lowerHex checked every digit
	canonical, err := Canonical(string(method), string(path), string(rawQuery), string(ts), string(nonce), bodyHash(body))
	if err != nil {
		return fail(ReasonMalformed, "%v", err)
	}
	key, ok := v.Keys[keyID]
	if !ok {
		return fail(ReasonUnknownKey, "key %q is not configured", keyID)
	}
	if skew := now(v.Now).UnixMilli() - millis; skew > window.Milliseconds() || -skew > window.Milliseconds() {
		return fail(ReasonExpired, "timestamp is %dms away from the server's clock, more than the %v allowed", skew, window)
	}
	if !hmac.Equal(mac(key.Secret, canonical), want) {
		return fail(ReasonBadSignature, "signature does not match the request under key %q", keyID)
	}
	// Only now, so that a forged request cannot use up a genuine nonce.
	fresh, err := v.Nonces.Claim(ctx, keyID, string(nonce), 2*window)
	if err != nil {
		return "", err
	}
	if !fresh {
		return fail(ReasonReplayed, "nonce was already used with key %q", keyID)
	}
	return keyID, nil
}

// parseMillis parses a timestamp of 1-19 decimal digits that fits an int64.
func parseMillis(b []byte) (int64, bool) {
	if len(b) > timestampLenMax {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if n > (1<<63-1-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

func lowerHex(b []byte) bool {
	for _, c := range b {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
