package adminauth_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"redrain/adminauth"
)

func TestAppOfKey(t *testing.T) {
	for _, tc := range []struct {
		id   string
		app  uint32
		want bool
	}{
		{"7", 7, true},
		{"7.2027", 7, true},
		{"4294967295.a.b", 4294967295, true},
		{"4294967296", 0, false},
		{"0", 0, false},
		{"07", 0, false},
		{"", 0, false},
		{".7", 0, false},
		{"ops", 0, false},
		{"7a", 0, false},
		{"-7", 0, false},
		{"+7", 0, false},
	} {
		app, ok := adminauth.AppOfKey(tc.id)
		if app != tc.app || ok != tc.want {
			t.Errorf("AppOfKey(%q) = %d, %v; want %d, %v", tc.id, app, ok, tc.app, tc.want)
		}
	}
	keys, err := adminauth.ParseAppKeys([]string{"1:" + secretHex, "1.next:" + secretHex, "2:" + secretHex})
	if err != nil || len(keys) != 3 {
		t.Fatalf("ParseAppKeys = %v, %v; want 3 keys", keys, err)
	}
	for _, bad := range [][]string{{"ops:" + secretHex}, {"0:" + secretHex}, {"1:" + secretHex, "1:" + secretHex}, {"1:abc"}} {
		if _, err := adminauth.ParseAppKeys(bad); !errors.Is(err, adminauth.ErrKeyInvalid) {
			t.Errorf("ParseAppKeys(%q) = %v, want ErrKeyInvalid", bad, err)
		}
	}
}

// TestHashNonces: a nonce is refused while remembered, per key id, for at
// least the ttl asked, and forgotten two spans after its generation
// passed; the bound holds; a ttl the store cannot keep is refused.
func TestHashNonces(t *testing.T) {
	ctx := context.Background()
	clock := t0
	h := adminauth.NewHashNonces(2 * time.Minute)
	h.Now = func() time.Time { return clock }
	claim := func(key, nonce string) bool {
		t.Helper()
		fresh, err := h.Claim(ctx, key, nonce, 2*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return fresh
	}
	if !claim("1", "n1") || claim("1", "n1") || !claim("2", "n1") || !claim("1", "n2") {
		t.Fatal("a fresh nonce must be taken once per key id")
	}
	// Remembered through the ttl, whatever the generation boundaries.
	for _, step := range []time.Duration{30 * time.Second, 59 * time.Second, 119 * time.Second} {
		clock = t0.Add(step)
		if claim("1", "n1") {
			t.Fatalf("nonce taken again %v after its first claim, within the ttl", step)
		}
	}
	clock = t0.Add(3*time.Minute + time.Second) // three spans of one minute: every generation dropped
	if !claim("1", "n1") {
		t.Fatal("nonce still refused three spans later")
	}
	if h.Len() != 1 {
		t.Fatalf("Len = %d after the old generations dropped, want 1", h.Len())
	}
	// Idle far longer than every generation: all stale at once.
	clock = clock.Add(time.Hour)
	if !claim("1", "n1") || h.Len() != 1 {
		t.Fatalf("after an hour idle: Len %d, want the one new claim", h.Len())
	}
	if _, err := h.Claim(ctx, "1", "x", 5*time.Minute); err == nil {
		t.Fatal("a ttl over twice the span was accepted")
	}
	small := &adminauth.HashNonces{Span: time.Minute, Max: 3}
	for i := range 3 {
		if fresh, err := small.Claim(ctx, "1", fmt.Sprint("n", i), time.Minute); !fresh || err != nil {
			t.Fatalf("claim %d: %v %v", i, fresh, err)
		}
	}
	if _, err := small.Claim(ctx, "1", "n9", time.Minute); !errors.Is(err, adminauth.ErrNoncesFull) {
		t.Fatalf("claim past Max = %v, want ErrNoncesFull", err)
	}
}

// TestVerifyAppRequest: an app key signs like an admin key, and the
// verifier answers the key id whose app AppOfKey reads.
func TestVerifyAppRequest(t *testing.T) {
	key := adminauth.MustParseKey("7.k2:" + secretHex)
	keys, err := adminauth.ParseAppKeys([]string{"7.k2:" + secretHex})
	if err != nil {
		t.Fatal(err)
	}
	v := &adminauth.Verifier{Keys: keys, Window: adminauth.AppWindowDefault, Nonces: adminauth.NewHashNonces(2 * adminauth.AppWindowDefault),
		Now: func() time.Time { return t0 }}
	s := &adminauth.Signer{Key: key, Now: func() time.Time { return t0 }}
	body := []byte(`{"grants":[]}`)
	h, err := s.Headers("POST", "/v1/grants/batch", "", body)
	if err != nil {
		t.Fatal(err)
	}
	verify := func(body []byte) (string, error) {
		return v.Verify(context.Background(), []byte("POST"), []byte("/v1/grants/batch"), nil,
			func(n string) []byte { return []byte(h.Get(n)) }, body)
	}
	if id, err := verify([]byte(`{"grants":[1]}`)); !isReason(err, adminauth.ReasonBadSignature) {
		t.Fatalf("altered body: %q, %v", id, err)
	}
	id, err := verify(body)
	if app, ok := adminauth.AppOfKey(id); err != nil || !ok || app != 7 {
		t.Fatalf("Verify = %q, %v; want app 7's key", id, err)
	}
	if _, err := verify(body); !isReason(err, adminauth.ReasonReplayed) {
		t.Fatalf("replay: %v", err)
	}
	// The app window is a minute.
	v.Now = func() time.Time { return t0.Add(adminauth.AppWindowDefault + time.Second) }
	h, _ = s.Headers("POST", "/v1/grants/batch", "", body)
	if _, err := verify(body); !isReason(err, adminauth.ReasonExpired) {
		t.Fatalf("a minute and a second late: %v", err)
	}
}

func isReason(err error, reason string) bool {
	var ae *adminauth.Error
	return errors.As(err, &ae) && ae.Reason == reason
}

// TestConsent: a consent verifies for exactly the app, user, account and
// expiry it was signed for, under a configured key, within its life.
func TestConsent(t *testing.T) {
	keys, err := adminauth.ParseAppKeys([]string{"1:" + secretHex, "2:" + strings.Repeat("e", 64)})
	if err != nil {
		t.Fatal(err)
	}
	c := adminauth.SignConsent(keys["1"], 2, "b-7", 17, t0.Add(time.Hour))
	if app, err := adminauth.VerifyConsent(keys, c, 2, "b-7", 17, t0); err != nil || app != 1 {
		t.Fatalf("VerifyConsent = %d, %v; want app 1", app, err)
	}
	for _, tc := range []struct {
		name   string
		c      adminauth.Consent
		app    uint32
		user   string
		act    uint64
		at     time.Time
		reason string
	}{
		{"another user", c, 2, "b-8", 17, t0, adminauth.ReasonBadSignature},
		{"another app", c, 3, "b-7", 17, t0, adminauth.ReasonBadSignature},
		{"another account", c, 2, "b-7", 18, t0, adminauth.ReasonBadSignature},
		{"expired", c, 2, "b-7", 17, t0.Add(time.Hour), adminauth.ReasonExpired},
		{"too far ahead", adminauth.SignConsent(keys["1"], 2, "b-7", 17, t0.Add(25*time.Hour)), 2, "b-7", 17, t0, adminauth.ReasonExpired},
		{"unknown key", adminauth.Consent{KeyID: "9", Expires: c.Expires, Signature: c.Signature}, 2, "b-7", 17, t0, adminauth.ReasonUnknownKey},
		{"other key's id", adminauth.Consent{KeyID: "2", Expires: c.Expires, Signature: c.Signature}, 2, "b-7", 17, t0, adminauth.ReasonBadSignature},
		{"later expiry", adminauth.Consent{KeyID: "1", Expires: c.Expires + 1, Signature: c.Signature}, 2, "b-7", 17, t0, adminauth.ReasonBadSignature},
		{"upper-case hex", adminauth.Consent{KeyID: "1", Expires: c.Expires, Signature: strings.ToUpper(c.Signature)}, 2, "b-7", 17, t0, adminauth.ReasonMalformed},
		{"short", adminauth.Consent{KeyID: "1", Expires: c.Expires, Signature: c.Signature[:10]}, 2, "b-7", 17, t0, adminauth.ReasonMalformed},
	} {
		if _, err := adminauth.VerifyConsent(keys, tc.c, tc.app, tc.user, tc.act, tc.at); !isReason(err, tc.reason) {
			t.Errorf("%s: %v, want %s", tc.name, err, tc.reason)
		}
	}
}

// BenchmarkVerifyApp verifies signed app requests, each with a fresh
// nonce: a single grant's body and a batch of 100 grants' (~8 KB). ns/op
// and allocs/op are per request.
func BenchmarkVerifyApp(b *testing.B) {
	grant := `{"app_id":1,"user_id":"u-123456","activity_id":"demo","scene_id":"rain","rain_id":1}`
	for _, c := range []struct {
		name, path string
		body       []byte
	}{
		{"single", "/v1/grants", []byte(grant)},
		{"batch=100", "/v1/grants/batch", []byte(`{"grants":[` + strings.Repeat(grant+",", 99) + grant + `]}`)},
	} {
		b.Run(c.name, func(b *testing.B) {
			keys, err := adminauth.ParseAppKeys([]string{"1:" + secretHex})
			if err != nil {
				b.Fatal(err)
			}
			v := &adminauth.Verifier{Keys: keys, Window: adminauth.AppWindowDefault, Nonces: adminauth.NewHashNonces(2 * adminauth.AppWindowDefault)}
			s := &adminauth.Signer{Key: keys["1"]}
			headers := make([]map[string][]byte, b.N) // a fresh nonce each
			for i := range headers {
				h, err := s.Headers("POST", c.path, "", c.body)
				if err != nil {
					b.Fatal(err)
				}
				headers[i] = map[string][]byte{}
				for k := range h {
					headers[i][k] = []byte(h.Get(k))
				}
			}
			ctx, method, path := context.Background(), []byte("POST"), []byte(c.path)
			b.ReportAllocs()
			b.SetBytes(int64(len(c.body)))
			b.ResetTimer()
			for i := range b.N {
				h := headers[i]
				if _, err := v.Verify(ctx, method, path, nil, func(n string) []byte { return h[n] }, c.body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
