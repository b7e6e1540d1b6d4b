// Package adminauth owns the signatures of the admin API (/admin/v1/...):
// the admin keys, the Signer that clients use, the Verifier that a node
// runs before it answers an admin request, the nonce stores that refuse
// replays, and the Client behind `redrain admin`, which signs every
// request it sends. Every in-repo caller of the admin API signs with a
// Signer. The client API (/v1/...) is signed with the same scheme under
// app keys (apps.go: app keys, HashNonces, bind consent).
//
// It is HTTP-library agnostic on the verifying side: Verify takes the
// method, the raw path, the raw query, a header lookup and the body, so the
// fasthttp server can call it without copying the request. It must never
// claim a nonce before the signature has verified (a forged request would
// otherwise burn the nonce of a genuine one), and never compare signatures
// in variable time.
//
// # The scheme
//
// Every admin request carries four headers:
//
//	X-Redrain-Key        key id: 1-32 of [A-Za-z0-9._-]
//	X-Redrain-Timestamp  unix milliseconds, decimal
//	X-Redrain-Nonce      16-64 of [A-Za-z0-9_-] (clients send 32 hex digits from crypto/rand)
//	X-Redrain-Signature  lowercase hex of HMAC-SHA256(secret, canonical)
//
// where canonical is
//
//	METHOD "\n" PATH "\n" CANONICAL_QUERY "\n" TIMESTAMP "\n" NONCE "\n" hex(sha256(body))
//
// PATH is the request path exactly as sent, still percent-encoded.
// CANONICAL_QUERY is the query's parameters (url.ParseQuery), duplicates
// kept, sorted by key and then value, each written
// url.QueryEscape(k)+"="+url.QueryEscape(v) and joined by "&"; it is empty
// when there are none. TIMESTAMP and NONCE are the header values as sent.
//
// A key is written "ID:HEX" (as in a config file or REDRAIN_ADMIN_KEY): the
// key id, a colon and a secret of at least SecretLenMin bytes in hex.
//
// # Verification
//
// Verify checks, in this order, and answers the first failure as an *Error
// whose Reason is one of:
//
//	reason         when
//	unsigned       one of the four headers is missing or empty
//	malformed      a header or the query does not have its shape
//	unknown_key    the key id is not configured
//	expired        the timestamp is more than the window (default 5 min) away from now, past or future
//	bad_signature  the signature is not the HMAC of this request under the key
//	replayed       the nonce was already used with this key within twice the window
//
// The HTTP layer answers every *Error with 401 and the code
// "unauthorized". A nonce store that cannot answer (Redis down) is a plain
// wrapped error, not an *Error: the request may be retried (503).
package adminauth

import (
	"cmp"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// Header names of the scheme.
const (
	HeaderKey       = "X-Redrain-Key"
	HeaderTimestamp = "X-Redrain-Timestamp"
	HeaderNonce     = "X-Redrain-Nonce"
	HeaderSignature = "X-Redrain-Signature"
)

// Shape limits of the scheme.
const (
	KeyIDLenMax  = 32
	NonceLenMin  = 16
	NonceLenMax  = 64
	SecretLenMin = 32
	// timestampLenMax is the digits of the largest int64.
	timestampLenMax = 19
	// signatureLen is the hex length of an HMAC-SHA256.
	signatureLen = 2 * sha256.Size
)

// DevKey is the public development admin key: the default of
// `redrain admin` and bench, and the key a node accepts when it is given
// none (and then warns). Its secret is in this source file, so anyone can
// sign with it: never use it in production.
const DevKey = "dev:3f2b3c8001b1b31dbb502863b8879303ac4327849ed5ec79e57afa59474e7e84"

// IsDevKey reports whether k signs with DevKey's secret, whatever its id.
func IsDevKey(k Key) bool { return hmac.Equal(k.Secret, MustParseKey(DevKey).Secret) }

// ErrKeyInvalid reports a key that cannot be parsed or used.
var ErrKeyInvalid = errors.New("adminauth: invalid key")

// Key is one admin key.
type Key struct {
	ID     string // Invariant: 1-KeyIDLenMax of [A-Za-z0-9._-]
	Secret []byte // Invariant: len >= SecretLenMin
}

// ParseKey parses a key written "ID:HEX", for example "ops:00112233...":
// an id of 1-32 characters [A-Za-z0-9._-] and a hex secret of at least
// SecretLenMin bytes.
func ParseKey(s string) (Key, error) {
	id, secretText, ok := strings.Cut(s, ":")
	if !ok {
		return Key{}, fmt.Errorf("%w: want ID:HEX, got no ':'", ErrKeyInvalid)
	}
	if !validKeyID(id) {
		return Key{}, fmt.Errorf("%w: id %q is not 1-%d characters of [A-Za-z0-9._-]", ErrKeyInvalid, id, KeyIDLenMax)
	}
	secret, err := hex.DecodeString(secretText)
	if err != nil {
		return Key{}, fmt.Errorf("%w: key %s: secret is not hex: %v", ErrKeyInvalid, id, err)
	}
	if len(secret) < SecretLenMin {
		return Key{}, fmt.Errorf("%w: key %s: secret has %d bytes, want at least %d (%d hex digits)",
			ErrKeyInvalid, id, len(secret), SecretLenMin, 2*SecretLenMin)
	}
	return Key{ID: id, Secret: secret}, nil
}

// MustParseKey is ParseKey for keys written in source, such as DevKey; it
// panics on an error.
func MustParseKey(s string) Key {
	k, err := ParseKey(s)
	if err != nil {
		panic(err)
	}
	return k
}

// ParseKeys parses a list of keys into a map by id. Two keys with the same
// id are an error, even with the same secret, since a config that names a
// key twice is not what its author meant.
func ParseKeys(list []string) (map[string]Key, error) {
	keys := make(map[string]Key, len(list))
	for i, s := range list {
		k, err := ParseKey(s)
		if err != nil {
			return nil, fmt.Errorf("admin key %d: %w", i, err)
		}
		if _, dup := keys[k.ID]; dup {
			return nil, fmt.Errorf("admin key %d: %w: id %s is given twice", i, ErrKeyInvalid, k.ID)
		}
		keys[k.ID] = k
	}
	return keys, nil
}

// Canonical returns the string that is signed for a request: see the
// package comment. bodyHash is hex(sha256(body)). It fails only on a query
// that url.ParseQuery refuses.
func Canonical(method, path, rawQuery, timestamp, nonce, bodyHash string) (string, error) {
	q, err := canonicalQuery(rawQuery)
	if err != nil {
		return "", err
	}
	return method + "\n" + path + "\n" + q + "\n" + timestamp + "\n" + nonce + "\n" + bodyHash, nil
}

// canonicalQuery returns CANONICAL_QUERY of rawQuery.
func canonicalQuery(rawQuery string) (string, error) {
	values, err := url.ParseQuery(rawQuery)
	if err != nil {
		return "", fmt.Errorf("query: %w", err)
	}
	type pair struct{ k, v string }
	var pairs []pair
	for k, vs := range values {
		for _, v := range vs {
			pairs = append(pairs, pair{k, v})
		}
	}
	slices.SortFunc(pairs, func(a, b pair) int {
		return cmp.Or(strings.Compare(a.k, b.k), strings.Compare(a.v, b.v))
	})
	var b strings.Builder
	for i, p := range pairs {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(url.QueryEscape(p.k))
		b.WriteByte('=')
		b.WriteString(url.QueryEscape(p.v))
	}
	return b.String(), nil
}

// bodyHash returns hex(sha256(body)).
func bodyHash(body []byte) string {
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
}

// mac returns HMAC-SHA256(secret, canonical).
func mac(secret []byte, canonical string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(canonical))
	return m.Sum(nil)
}

func validKeyID(s string) bool {
	return len(s) >= 1 && len(s) <= KeyIDLenMax && allOf(s, ".")
}

func validNonce(s string) bool {
	return len(s) >= NonceLenMin && len(s) <= NonceLenMax && allOf(s, "")
}

// allOf reports whether every byte of s is a letter, a digit, '_', '-' or
// one of extra.
func allOf(s, extra string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' ||
			strings.IndexByte(extra, c) >= 0) {
			return false
		}
	}
	return true
}
