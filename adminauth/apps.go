package adminauth

import (
	"context"
	"crypto/hmac"
	"encoding/hex"
	"fmt"
	"hash/maphash"
	"strconv"
	"strings"
	"sync"
	"time"
)

// # App keys
//
// The client API (/v1/...) is signed by the app it acts for with the same
// scheme as the admin API (the four headers and the canonical string
// above), under an app key from the node's "app_keys". An app key's id
// names its app: the app id in decimal, optionally followed by '.' and a
// label of the key's own, so that an app can hold two keys while it
// rotates: "7:HEX" and "7.2027:HEX" both sign for app 7. AppOfKey reads
// the app back from the id.

// AppOfKey returns the app an app key id signs for: the decimal app id
// before the first '.', from 1 to 2^32-1, with no leading zero.
func AppOfKey(id string) (uint32, bool) {
	num, _, _ := strings.Cut(id, ".")
	if num == "" || num[0] == '0' {
		return 0, false
	}
	v, err := strconv.ParseUint(num, 10, 32)
	if err != nil || v == 0 {
		return 0, false
	}
	return uint32(v), true
}

// ParseAppKey parses one app key, "APP:HEX" or "APP.LABEL:HEX", and
// returns it with the app it signs for.
func ParseAppKey(s string) (Key, uint32, error) {
	k, err := ParseKey(s)
	if err != nil {
		return Key{}, 0, err
	}
	app, ok := AppOfKey(k.ID)
	if !ok {
		return Key{}, 0, fmt.Errorf("%w: id %q does not name an app: want the app id in decimal (1-4294967295), optionally followed by '.' and a label, such as 7 or 7.2027", ErrKeyInvalid, k.ID)
	}
	return k, app, nil
}

// ParseAppKeys parses the "app_keys" of a config (ParseAppKey each) into
// a map by key id; an id given twice is an error.
func ParseAppKeys(list []string) (map[string]Key, error) {
	keys := make(map[string]Key, len(list))
	for i, s := range list {
		k, _, err := ParseAppKey(s)
		if err != nil {
			return nil, fmt.Errorf("app key %d: %w", i, err)
		}
		if _, dup := keys[k.ID]; dup {
			return nil, fmt.Errorf("app key %d: %w: id %s is given twice", i, ErrKeyInvalid, k.ID)
		}
		keys[k.ID] = k
	}
	return keys, nil
}

// AppWindowDefault is how far an app request's timestamp may be from the
// node's clock: shorter than the admin API's, since a node remembers every
// app request's nonce for twice as long.
const AppWindowDefault = time.Minute

// HashNoncesMaxDefault is HashNonces' default bound: at 64 bits a nonce
// and its map slot, about 0.2 GB when full.
const HashNoncesMaxDefault = 8 << 20

// HashNonces keeps nonces in the process as 64-bit hashes (keyed by a
// random seed of the process, over the key id and the nonce) in three
// generations of Span each: a claim looks in all three and records in the
// newest, and the oldest is dropped as a new one starts, so a nonce is
// remembered for at least 2×Span. It is the store of the app API, where a
// node sees a nonce per request: a map entry of 8 bytes instead of a
// string, and expiry by dropping a whole map instead of per entry.
//
// Two different nonces share a hash with a probability of 2^-64 per pair:
// with Max nonces held, a genuine request is refused as replayed about
// once in 2^64/Max requests. Like MemoryNonces it sees only its own node:
// a request replayed to another node within the window is answered there
// again, which the app API allows because every one of its writes is
// idempotent (a grant by its user, activity and rain; a redeem by its
// token; a bind by its user).
type HashNonces struct {
	// Span is a generation's length: at least half of the longest ttl
	// asked of Claim (NewHashNonces sets it).
	Span time.Duration
	// Max bounds the nonces held (default HashNoncesMaxDefault); past it a
	// claim fails with ErrNoncesFull until a generation is dropped.
	Max int
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu    sync.Mutex
	seed  maphash.Seed
	gens  [3]map[uint64]struct{} // gens[0] the newest
	start time.Time              // when gens[0] began
}

// NewHashNonces returns a store that remembers each nonce for at least ttl.
func NewHashNonces(ttl time.Duration) *HashNonces {
	return &HashNonces{Span: (ttl + 1) / 2}
}

// Claim implements NonceStore.
func (h *HashNonces) Claim(_ context.Context, keyID, nonce string, ttl time.Duration) (bool, error) {
	if ttl < time.Millisecond || ttl > 2*h.Span {
		return false, fmt.Errorf("adminauth: nonce ttl %v is under 1ms or over twice the store's span %v", ttl, h.Span)
	}
	t := now(h.Now)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.gens[0] == nil {
		h.seed = maphash.MakeSeed()
		h.gens[0], h.start = map[uint64]struct{}{}, t
	}
	h.rotate(t)
	var m maphash.Hash
	m.SetSeed(h.seed)
	m.WriteString(keyID)
	m.WriteByte(0)
	m.WriteString(nonce)
	sum := m.Sum64()
	for _, g := range h.gens {
		if _, seen := g[sum]; seen {
			return false, nil
		}
	}
	limit := h.Max
	if limit <= 0 {
		limit = HashNoncesMaxDefault
	}
	if held := h.lenLocked(); held >= limit {
		return false, fmt.Errorf("%w: %d nonces held, the most this node keeps", ErrNoncesFull, held)
	}
	h.gens[0][sum] = struct{}{}
	return true, nil
}

// rotate starts a new generation for each Span elapsed since the newest
// began, dropping the oldest each time.
func (h *HashNonces) rotate(t time.Time) {
	for steps := 0; t.Sub(h.start) >= h.Span; steps++ {
		if steps == len(h.gens) {
			// Idle for longer than every generation: all are stale.
			h.start = t
			break
		}
		h.gens[2], h.gens[1], h.gens[0] = h.gens[1], h.gens[0], make(map[uint64]struct{}, len(h.gens[0]))
		h.start = h.start.Add(h.Span)
	}
}

// Len returns the number of nonces held.
func (h *HashNonces) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lenLocked()
}

func (h *HashNonces) lenLocked() int { return len(h.gens[0]) + len(h.gens[1]) + len(h.gens[2]) }

// # Bind consent
//
// A bind of app B's user to an account that holds no user of app B
// (linking two apps' users into one account) needs the consent of an app
// that the account does hold: that app signs
//
//	"redrain-bind-consent" "\n" B "\n" USER "\n" ACT_ID "\n" EXPIRES
//
// with one of its keys (EXPIRES in unix milliseconds, at most
// ConsentLifeMax ahead), and the bind carries it as
// "consent":{"key":ID,"expires":EXPIRES,"signature":HEX}. B's own signature
// on the request says the user is B's; the consent says the account's
// holder agrees to take them.

// ConsentLifeMax bounds how far ahead a consent may expire.
const ConsentLifeMax = 24 * time.Hour

// Consent is one app's agreement that app AppID's user UserID joins
// account ActID.
type Consent struct {
	KeyID     string // the consenting app's key
	Expires   int64  // unix milliseconds
	Signature string // lowercase hex HMAC-SHA256
}

func consentCanonical(app uint32, user string, actID uint64, expires int64) string {
	return "redrain-bind-consent\n" + strconv.FormatUint(uint64(app), 10) + "\n" + user + "\n" +
		strconv.FormatUint(actID, 10) + "\n" + strconv.FormatInt(expires, 10)
}

// SignConsent returns key's consent that app's user joins actID, valid
// until expires.
func SignConsent(key Key, app uint32, user string, actID uint64, expires time.Time) Consent {
	ms := expires.UnixMilli()
	return Consent{KeyID: key.ID, Expires: ms,
		Signature: hex.EncodeToString(mac(key.Secret, consentCanonical(app, user, actID, ms)))}
}

// VerifyConsent checks c against keys at now and returns the app that
// consented, or an *Error (reasons as Verify's: unknown_key, expired,
// malformed, bad_signature).
func VerifyConsent(keys map[string]Key, c Consent, app uint32, user string, actID uint64, at time.Time) (uint32, error) {
	key, ok := keys[c.KeyID]
	if !ok {
		_, err := fail(ReasonUnknownKey, "consent key %q is not configured", c.KeyID)
		return 0, err
	}
	consenter, ok := AppOfKey(c.KeyID)
	if !ok {
		_, err := fail(ReasonMalformed, "consent key %q names no app", c.KeyID)
		return 0, err
	}
	if ms := at.UnixMilli(); c.Expires <= ms || c.Expires > ms+ConsentLifeMax.Milliseconds() {
		_, err := fail(ReasonExpired, "consent expires at %d ms, not within %v after now (%d ms)", c.Expires, ConsentLifeMax, ms)
		return 0, err
	}
	sig, err := hex.DecodeString(c.Signature)
	if err != nil || len(sig) != signatureLen/2 || !lowerHex([]byte(c.Signature)) {
		_, err := fail(ReasonMalformed, "consent signature is not %d lowercase hex digits", signatureLen)
		return 0, err
	}
	if !hmac.Equal(mac(key.Secret, consentCanonical(app, user, actID, c.Expires)), sig) {
		_, err := fail(ReasonBadSignature, "consent signature does not match app %d user %q act_id %d under key %q", app, user, actID, c.KeyID)
		return 0, err
	}
	return consenter, nil
}
