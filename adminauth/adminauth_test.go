package adminauth_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"redrain/adminauth"
	"redrain/storage/storagetest"
)

var (
	secretHex = strings.Repeat("0123456789abcdef", 4)
	testKey   = adminauth.MustParseKey("ops:" + secretHex)
	otherKey  = adminauth.MustParseKey("ops:" + strings.Repeat("f", 64)) // same id, another secret
	t0        = time.UnixMilli(1_750_000_000_000)
)

func TestParseKey(t *testing.T) {
	for _, tc := range []struct {
		in, wantID string
		ok         bool
	}{
		{"ops:" + secretHex, "ops", true},
		{"a.B_c-9:" + secretHex + "00", "a.B_c-9", true},
		{adminauth.DevKey, "dev", true},
		{strings.Repeat("k", 32) + ":" + secretHex, strings.Repeat("k", 32), true},
		{strings.Repeat("k", 33) + ":" + secretHex, "", false},
		{":" + secretHex, "", false},
		{"o/ps:" + secretHex, "", false},
		{"o:ps:" + secretHex, "", false},
		{"ops" + secretHex, "", false},
		{"ops:" + secretHex[:62], "", false},
		{"ops:" + secretHex[:63], "", false},
		{"ops:" + strings.ToUpper(secretHex), "ops", true},
		{"ops:" + secretHex[:62] + "zz", "", false},
		{"", "", false},
	} {
		k, err := adminauth.ParseKey(tc.in)
		if tc.ok != (err == nil) || k.ID != tc.wantID {
			t.Errorf("ParseKey(%q) = %q, %v; want id %q, ok %v", tc.in, k.ID, err, tc.wantID, tc.ok)
		}
		if err != nil && !errors.Is(err, adminauth.ErrKeyInvalid) {
			t.Errorf("ParseKey(%q) error %v is not ErrKeyInvalid", tc.in, err)
		}
		if err == nil && len(k.Secret) < adminauth.SecretLenMin {
			t.Errorf("ParseKey(%q) secret has %d bytes", tc.in, len(k.Secret))
		}
	}
}

func TestParseKeys(t *testing.T) {
	keys, err := adminauth.ParseKeys([]string{"a:" + secretHex, "b:" + secretHex})
	if err != nil || len(keys) != 2 || keys["b"].ID != "b" {
		t.Fatalf("ParseKeys = %v, %v", keys, err)
	}
	if _, err := adminauth.ParseKeys([]string{"a:" + secretHex, "a:" + strings.Repeat("1", 64)}); !errors.Is(err, adminauth.ErrKeyInvalid) {
		t.Errorf("ParseKeys with a duplicate id = %v, want ErrKeyInvalid", err)
	}
	if _, err := adminauth.ParseKeys([]string{"a:" + secretHex, "bad"}); err == nil {
		t.Error("ParseKeys with a bad key succeeded")
	}
}

func TestCanonical(t *testing.T) {
	const h = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" // sha256("")
	for _, tc := range []struct {
		query, want string
	}{
		{"", ""},
		{"b=2&a=1", "a=1&b=2"},
		{"a=2&a=1&a=10", "a=1&a=10&a=2"},
		{"a.b=1&a=2", "a=2&a.b=1"},
		{"x=a+b&y=%2F", "x=a+b&y=%2F"},
		{"x=a%20b", "x=a+b"},
		{"flag", "flag="},
		{"a=1&&b=2", "a=1&b=2"},
	} {
		got, err := adminauth.Canonical("GET", "/p", tc.query, "1", "n", h)
		want := "GET\n/p\n" + tc.want + "\n1\nn\n" + h
		if err != nil || got != want {
			t.Errorf("Canonical(query %q) = %q, %v; want %q", tc.query, got, err, want)
		}
	}
	for _, q := range []string{"a=%zz", "a=1;b=2", "%"} {
		if _, err := adminauth.Canonical("GET", "/p", q, "1", "n", h); err == nil {
			t.Errorf("Canonical(query %q) accepted an unparsable query", q)
		}
	}
}

// request is one admin request as a server sees it.
type request struct {
	method, path, query string
	header              map[string]string
	body                []byte
}

func (r *request) get(name string) []byte {
	if v, ok := r.header[name]; ok {
		return []byte(v)
	}
	return nil
}

// signed returns a request signed with key at t0.
func signed(t testing.TB, key adminauth.Key) *request {
	t.Helper()
	r := &request{method: "PUT", path: "/admin/v1/activities/spring%2Dx", query: "b=2&a=1&a=0", body: []byte(`{"id":"spring"}`)}
	s := adminauth.Signer{Key: key, Now: func() time.Time { return t0 }}
	h, err := s.Headers(r.method, r.path, r.query, r.body)
	if err != nil {
		t.Fatal(err)
	}
	r.header = map[string]string{}
	for k := range h {
		r.header[k] = h.Get(k)
	}
	return r
}

func verify(v *adminauth.Verifier, r *request) (string, error) {
	return v.Verify(context.Background(), []byte(r.method), []byte(r.path), []byte(r.query), r.get, r.body)
}

// reason returns the reason of err, "" for nil and "error" for an error
// that is not an *adminauth.Error.
func reason(err error) string {
	if err == nil {
		return ""
	}
	var e *adminauth.Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return "error"
}

// stores returns the nonce stores the verification tests run against.
func stores(t *testing.T) map[string]func() adminauth.NonceStore {
	addr := storagetest.Redis(t)
	rc := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { rc.Close() })
	return map[string]func() adminauth.NonceStore{
		"memory": func() adminauth.NonceStore { return &adminauth.MemoryNonces{} },
		"redis":  func() adminauth.NonceStore { return adminauth.RedisNonces{Client: rc} },
	}
}

func TestVerify(t *testing.T) {
	window := 5 * time.Minute
	set := func(name, value string) func(*request) {
		return func(r *request) { r.header[name] = value }
	}
	del := func(name string) func(*request) {
		return func(r *request) { delete(r.header, name) }
	}
	cases := []struct {
		name   string
		mutate func(*request)
		skew   time.Duration // the server's clock minus t0
		want   string
	}{
		{"valid", func(*request) {}, 0, ""},
		{"no headers", func(r *request) { r.header = nil }, 0, adminauth.ReasonUnsigned},
		{"no key", del(adminauth.HeaderKey), 0, adminauth.ReasonUnsigned},
		{"no timestamp", del(adminauth.HeaderTimestamp), 0, adminauth.ReasonUnsigned},
		{"no nonce", del(adminauth.HeaderNonce), 0, adminauth.ReasonUnsigned},
		{"no signature", del(adminauth.HeaderSignature), 0, adminauth.ReasonUnsigned},
		{"empty signature", set(adminauth.HeaderSignature, ""), 0, adminauth.ReasonUnsigned},
		{"bad key id", set(adminauth.HeaderKey, "o:ps"), 0, adminauth.ReasonMalformed},
		{"long key id", set(adminauth.HeaderKey, strings.Repeat("k", 33)), 0, adminauth.ReasonMalformed},
		{"timestamp not decimal", set(adminauth.HeaderTimestamp, "1.75e12"), 0, adminauth.ReasonMalformed},
		{"timestamp negative", set(adminauth.HeaderTimestamp, "-1750000000000"), 0, adminauth.ReasonMalformed},
		{"timestamp overflows", set(adminauth.HeaderTimestamp, "9223372036854775808"), 0, adminauth.ReasonMalformed},
		{"nonce short", set(adminauth.HeaderNonce, "0123456789abcde"), 0, adminauth.ReasonMalformed},
		{"nonce long", set(adminauth.HeaderNonce, strings.Repeat("n", 65)), 0, adminauth.ReasonMalformed},
		{"nonce bad char", set(adminauth.HeaderNonce, "0123456789abcdef."), 0, adminauth.ReasonMalformed},
		{"signature uppercase", func(r *request) {
			r.header[adminauth.HeaderSignature] = strings.ToUpper(r.header[adminauth.HeaderSignature])
		}, 0, adminauth.ReasonMalformed},
		{"signature short", func(r *request) {
			r.header[adminauth.HeaderSignature] = r.header[adminauth.HeaderSignature][2:]
		}, 0, adminauth.ReasonMalformed},
		{"query unparsable", func(r *request) { r.query += "&c=%zz" }, 0, adminauth.ReasonMalformed},
		{"unknown key", set(adminauth.HeaderKey, "nobody"), 0, adminauth.ReasonUnknownKey},
		{"expired past", func(*request) {}, window + time.Millisecond, adminauth.ReasonExpired},
		{"expired future", func(*request) {}, -window - time.Millisecond, adminauth.ReasonExpired},
		{"edge of window past", func(*request) {}, window, ""},
		{"edge of window future", func(*request) {}, -window, ""},
		{"method", func(r *request) { r.method = "POST" }, 0, adminauth.ReasonBadSignature},
		{"method case", func(r *request) { r.method = "put" }, 0, adminauth.ReasonBadSignature},
		{"path", func(r *request) { r.path = "/admin/v1/activities/spring-y" }, 0, adminauth.ReasonBadSignature},
		{"path decoded", func(r *request) { r.path = "/admin/v1/activities/spring-x" }, 0, adminauth.ReasonBadSignature},
		{"query added", func(r *request) { r.query += "&c=3" }, 0, adminauth.ReasonBadSignature},
		{"query duplicate added", func(r *request) { r.query += "&a=1" }, 0, adminauth.ReasonBadSignature},
		{"query removed", func(r *request) { r.query = "b=2&a=1" }, 0, adminauth.ReasonBadSignature},
		{"query removed all", func(r *request) { r.query = "" }, 0, adminauth.ReasonBadSignature},
		{"query changed", func(r *request) { r.query = "b=3&a=1&a=0" }, 0, adminauth.ReasonBadSignature},
		{"query key changed", func(r *request) { r.query = "c=2&a=1&a=0" }, 0, adminauth.ReasonBadSignature},
		{"query reordered", func(r *request) { r.query = "a=0&b=2&a=1" }, 0, ""},
		{"query escaped otherwise", func(r *request) { r.query = "a=%31&b=2&a=0" }, 0, ""},
		{"body changed", func(r *request) { r.body = []byte(`{"id":"spring2"}`) }, 0, adminauth.ReasonBadSignature},
		{"body dropped", func(r *request) { r.body = nil }, 0, adminauth.ReasonBadSignature},
		{"timestamp changed", func(r *request) {
			r.header[adminauth.HeaderTimestamp] = "1750000000001"
		}, 0, adminauth.ReasonBadSignature},
		{"nonce changed", func(r *request) {
			n := []byte(r.header[adminauth.HeaderNonce])
			n[0] = "01"[boolInt(n[0] == '0')]
			r.header[adminauth.HeaderNonce] = string(n)
		}, 0, adminauth.ReasonBadSignature},
		{"signature changed", func(r *request) {
			s := []byte(r.header[adminauth.HeaderSignature])
			s[len(s)-1] = "10"[boolInt(s[len(s)-1] == '1')]
			r.header[adminauth.HeaderSignature] = string(s)
		}, 0, adminauth.ReasonBadSignature},
		{"signed with another secret", func(r *request) {
			*r = *signed(t, otherKey)
		}, 0, adminauth.ReasonBadSignature},
	}
	for storeName, newStore := range stores(t) {
		for _, tc := range cases {
			t.Run(storeName+"/"+tc.name, func(t *testing.T) {
				r := signed(t, testKey)
				tc.mutate(r)
				v := &adminauth.Verifier{Keys: map[string]adminauth.Key{"ops": testKey}, Window: window,
					Nonces: newStore(), Now: func() time.Time { return t0.Add(tc.skew) }}
				id, err := verify(v, r)
				if got := reason(err); got != tc.want {
					t.Fatalf("Verify = %q, %v; want reason %q", id, err, tc.want)
				}
				if err == nil && id != "ops" {
					t.Fatalf("Verify = %q, want key id ops", id)
				}
				if err != nil && id != "" {
					t.Fatalf("Verify failed with %v but returned key id %q", err, id)
				}
			})
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// countingNonces counts the claims that reach a store.
type countingNonces struct {
	adminauth.NonceStore
	claims int
}

func (c *countingNonces) Claim(ctx context.Context, keyID, nonce string, ttl time.Duration) (bool, error) {
	c.claims++
	return c.NonceStore.Claim(ctx, keyID, nonce, ttl)
}

func TestReplay(t *testing.T) {
	for storeName, newStore := range stores(t) {
		t.Run(storeName, func(t *testing.T) {
			store := &countingNonces{NonceStore: newStore()}
			clock := t0
			v := &adminauth.Verifier{Keys: map[string]adminauth.Key{"ops": testKey}, Nonces: store,
				Now: func() time.Time { return clock }}
			r := signed(t, testKey)

			// A forged request with the genuine nonce is refused and leaves
			// the nonce unclaimed.
			forged := *r
			forged.body = []byte(`{"id":"evil"}`)
			if _, err := verify(v, &forged); reason(err) != adminauth.ReasonBadSignature {
				t.Fatalf("forged: %v, want bad_signature", err)
			}
			if store.claims != 0 {
				t.Fatalf("a forged request claimed %d nonces", store.claims)
			}
			if _, err := verify(v, r); err != nil {
				t.Fatalf("first: %v", err)
			}
			if _, err := verify(v, r); reason(err) != adminauth.ReasonReplayed {
				t.Fatalf("second: %v, want replayed", err)
			}
			// Another node sharing the store refuses it too.
			v2 := *v
			if _, err := verify(&v2, r); reason(err) != adminauth.ReasonReplayed {
				t.Fatalf("on another verifier: %v, want replayed", err)
			}
			// Once out of the window the request is expired, never accepted.
			clock = t0.Add(adminauth.DefaultWindow + time.Millisecond)
			if _, err := verify(v, r); reason(err) != adminauth.ReasonExpired {
				t.Fatalf("after the window: %v, want expired", err)
			}
			// The same nonce under another key is another nonce.
			keys := map[string]adminauth.Key{"ops": testKey, "ops2": {ID: "ops2", Secret: testKey.Secret}}
			v3 := &adminauth.Verifier{Keys: keys, Nonces: store, Now: func() time.Time { return t0 }}
			r2 := signed(t, keys["ops2"])
			r2.header[adminauth.HeaderNonce] = r.header[adminauth.HeaderNonce]
			resign(t, r2, keys["ops2"])
			if _, err := verify(v3, r2); err != nil {
				t.Fatalf("same nonce under another key: %v", err)
			}
		})
	}
}

// resign recomputes r's signature over its current fields.
func resign(t *testing.T, r *request, key adminauth.Key) {
	t.Helper()
	sum := sha256.Sum256(r.body)
	c, err := adminauth.Canonical(r.method, r.path, r.query, r.header[adminauth.HeaderTimestamp],
		r.header[adminauth.HeaderNonce], hex.EncodeToString(sum[:]))
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, key.Secret)
	m.Write([]byte(c))
	r.header[adminauth.HeaderSignature] = hex.EncodeToString(m.Sum(nil))
}

func TestRedisNonces(t *testing.T) {
	rc := redis.NewClient(&redis.Options{Addr: storagetest.Redis(t)})
	defer rc.Close()
	ctx := context.Background()
	s := adminauth.RedisNonces{Client: rc}
	if fresh, err := s.Claim(ctx, "ops", "n1", 90*time.Second); !fresh || err != nil {
		t.Fatalf("first claim = %v, %v", fresh, err)
	}
	ttl, err := rc.PTTL(ctx, adminauth.NonceKeyPrefix+"ops:n1").Result()
	if err != nil || ttl <= 0 || ttl > 90*time.Second {
		t.Fatalf("PTTL = %v, %v; want in (0, 90s]", ttl, err)
	}
	if fresh, err := s.Claim(ctx, "ops", "n1", 90*time.Second); fresh || err != nil {
		t.Fatalf("second claim = %v, %v", fresh, err)
	}

	// A store that cannot answer is an error the caller can tell from a
	// refusal (the server answers 503, not 401).
	down := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: time.Second})
	defer down.Close()
	v := &adminauth.Verifier{Keys: map[string]adminauth.Key{"ops": testKey},
		Nonces: adminauth.RedisNonces{Client: down}, Now: func() time.Time { return t0 }}
	if _, err := verify(v, signed(t, testKey)); reason(err) != "error" {
		t.Fatalf("Verify with Redis down = %v, want a plain error", err)
	}
}

func TestMemoryNonces(t *testing.T) {
	ctx := context.Background()
	clock := t0
	m := &adminauth.MemoryNonces{Max: 2, Now: func() time.Time { return clock }}
	claim := func(key, nonce string) (bool, error) { return m.Claim(ctx, key, nonce, time.Minute) }
	for _, step := range []struct {
		advance    time.Duration
		key, nonce string
		fresh      bool
		full       bool
	}{
		{0, "a", "n1", true, false},
		{0, "a", "n1", false, false},
		{0, "b", "n1", true, false},
		{0, "a", "n2", false, true}, // two unexpired nonces held
		{time.Minute - time.Millisecond, "a", "n1", false, false},
		{time.Millisecond, "a", "n2", true, false}, // n1s expired and dropped
		{0, "a", "n1", true, false},
		{0, "a", "n3", false, true},
		{time.Minute, "a", "n1", true, false}, // claimed again after expiry
	} {
		clock = clock.Add(step.advance)
		fresh, err := claim(step.key, step.nonce)
		if fresh != step.fresh || errors.Is(err, adminauth.ErrNoncesFull) != step.full || (err != nil && !step.full) {
			t.Fatalf("at %v Claim(%s, %s) = %v, %v; want fresh %v, full %v",
				clock.Sub(t0), step.key, step.nonce, fresh, err, step.fresh, step.full)
		}
		if m.Len() > 2 {
			t.Fatalf("holds %d nonces, more than Max", m.Len())
		}
	}
}

// FuzzVerify feeds arbitrary requests to Verify: it never panics, never
// fails with anything but an *Error (the store is in memory), accepts only
// a signature that is the HMAC of exactly these fields under the secret,
// and a verifier holding another secret for the same key id accepts
// nothing.
func FuzzVerify(f *testing.F) {
	r := signed(f, testKey)
	f.Add(r.method, r.path, r.query, r.header[adminauth.HeaderKey], r.header[adminauth.HeaderTimestamp],
		r.header[adminauth.HeaderNonce], r.header[adminauth.HeaderSignature], r.body)
	f.Add("GET", "/admin/v1/stats", "", "ops", "1750000000000", strings.Repeat("a", 16), strings.Repeat("0", 64), []byte(nil))
	f.Add("GET", "/", "a=%zz", "ops", "-1", "x", "X", []byte("{}"))
	f.Fuzz(func(t *testing.T, method, path, query, keyID, ts, nonce, sig string, body []byte) {
		r := &request{method: method, path: path, query: query, body: body, header: map[string]string{
			adminauth.HeaderKey: keyID, adminauth.HeaderTimestamp: ts, adminauth.HeaderNonce: nonce, adminauth.HeaderSignature: sig}}
		clock := func() time.Time { return t0 }
		v := &adminauth.Verifier{Keys: map[string]adminauth.Key{"ops": testKey}, Nonces: &adminauth.MemoryNonces{}, Now: clock}
		id, err := verify(v, r)
		if err != nil {
			if reason(err) == "error" {
				t.Fatalf("Verify failed with a non-*Error: %v", err)
			}
		} else if id != "ops" || sig != referenceSignature(testKey.Secret, r) {
			t.Fatalf("Verify accepted key %q with signature %s, not the reference HMAC", id, sig)
		}
		other := &adminauth.Verifier{Keys: map[string]adminauth.Key{"ops": otherKey}, Nonces: &adminauth.MemoryNonces{}, Now: clock}
		if _, err := verify(other, r); err == nil {
			t.Fatal("a verifier without the signing secret accepted the request")
		}
	})
}

// referenceSignature computes the signature of r as the package comment
// describes it, independently of the package's code.
func referenceSignature(secret []byte, r *request) string {
	values, err := url.ParseQuery(r.query)
	if err != nil {
		return ""
	}
	var pairs [][2]string
	for k, vs := range values {
		for _, v := range vs {
			pairs = append(pairs, [2]string{k, v})
		}
	}
	sort.Slice(pairs, func(i, j int) bool {
		if pairs[i][0] != pairs[j][0] {
			return pairs[i][0] < pairs[j][0]
		}
		return pairs[i][1] < pairs[j][1]
	})
	var q []string
	for _, p := range pairs {
		q = append(q, url.QueryEscape(p[0])+"="+url.QueryEscape(p[1]))
	}
	sum := sha256.Sum256(r.body)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(strings.Join([]string{r.method, r.path, strings.Join(q, "&"),
		r.header[adminauth.HeaderTimestamp], r.header[adminauth.HeaderNonce], hex.EncodeToString(sum[:])}, "\n")))
	return hex.EncodeToString(m.Sum(nil))
}

// TestIsDevKey: the development key is recognised by its secret under any
// id; another secret is not it.
func TestIsDevKey(t *testing.T) {
	secret := strings.SplitN(adminauth.DevKey, ":", 2)[1]
	for _, s := range []string{adminauth.DevKey, "ops:" + secret, "x:" + strings.ToUpper(secret)} {
		if !adminauth.IsDevKey(adminauth.MustParseKey(s)) {
			t.Errorf("IsDevKey(%s...) = false", s[:8])
		}
	}
	if adminauth.IsDevKey(adminauth.MustParseKey("ops:" + strings.Repeat("5a", 32))) {
		t.Error("IsDevKey of another secret = true")
	}
}
