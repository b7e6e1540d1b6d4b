package tokens

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
)

var seedFlag = flag.Uint64("seed", 0, "seed of the randomized tests; 0 picks one from the clock")

// testRand returns a generator seeded from -seed (or the clock) and prints
// the seed if the test fails, so that -seed=N replays it.
func testRand(t testing.TB) *rand.Rand {
	t.Helper()
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("replay with: go test -run '^%s$' -seed=%d ./tokens/", t.Name(), seed)
		}
	})
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// secretOf returns n bytes counting up from first, as the golden vectors use.
func secretOf(first byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = first + byte(i)
	}
	return b
}

func testKey(id uint16) Key {
	return Key{ID: id, Secret: secretOf(byte(id)*7, 32)}
}

func mustRing(t testing.TB, active uint16, keys ...Key) *Ring {
	t.Helper()
	r, err := NewRing(active, keys...)
	if err != nil {
		t.Fatalf("NewRing(%d, ...) = %v", active, err)
	}
	return r
}

func sampleClaims() Claims {
	return Claims{
		AppID:      10001,
		ActID:      1234567,
		ActivityID: "act-2026-spring",
		SceneID:    "s1",
		RainID:     7,
		AwardType:  "cash",
		Stage:      StageGray,
		Amount:     888,
		OpenTime:   1767225600000,
	}
}

func randString(rng *rand.Rand) string {
	n := rng.IntN(StringLenMax + 1)
	if rng.IntN(4) == 0 {
		n = []int{0, 1, StringLenMax}[rng.IntN(3)]
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.UintN(256))
	}
	return string(b)
}

func randUint64(rng *rand.Rand) uint64 {
	switch rng.IntN(4) {
	case 0:
		return []uint64{0, 1, 127, 128, math.MaxUint32, math.MaxUint64}[rng.IntN(6)]
	case 1:
		return rng.Uint64N(1 << 16)
	default:
		return rng.Uint64() >> rng.UintN(64)
	}
}

func randInt64(rng *rand.Rand) int64 {
	if rng.IntN(4) == 0 {
		return []int64{0, -1, 1, math.MinInt64, math.MaxInt64, -64, 63, 64}[rng.IntN(8)]
	}
	v := int64(randUint64(rng) >> 1)
	if rng.IntN(2) == 0 {
		v = -v
	}
	return v
}

func randClaims(rng *rand.Rand) Claims {
	return Claims{
		AppID:      uint32(randUint64(rng)),
		ActID:      randUint64(rng),
		ActivityID: randString(rng),
		SceneID:    randString(rng),
		RainID:     randUint64(rng),
		AwardType:  randString(rng),
		Stage:      Stage(rng.IntN(stageCount)),
		Amount:     randInt64(rng),
		OpenTime:   randInt64(rng),
		// Garbage that Seal must overwrite.
		OutTradeNo: randString(rng),
		KeyID:      uint16(rng.Uint32()),
		Legacy:     rng.IntN(2) == 0,
	}
}

func decodeText(t testing.TB, token []byte) []byte {
	t.Helper()
	raw, err := encodingOpen.DecodeString(string(token))
	if err != nil {
		t.Fatalf("decoding a sealed token: %v", err)
	}
	return raw
}

func encodeRaw(raw []byte) []byte {
	return encodingSeal.AppendEncode(nil, raw)
}

// sealPlaintext seals an arbitrary plaintext as a version 2 token with the
// ring's active key and a correct synthetic nonce: what only a holder of the
// key could produce.
func sealPlaintext(r *Ring, pt []byte) []byte {
	return sealPlaintextVersion(r, tokenVersion, pt)
}

// sealPlaintextVersion is sealPlaintext under any version byte.
func sealPlaintextVersion(r *Ring, version byte, pt []byte) []byte {
	s := r.scratch.Get().(*scratch)
	defer r.scratch.Put(s)
	return r.seal(nil, s, r.active, version, pt)
}

// plaintextOf returns the plaintext Seal encrypts for c.
func plaintextOf(c Claims) []byte {
	otn := outTradeNoSum(&c)
	return appendPlaintext(nil, &c, &otn)
}

func TestStage(t *testing.T) {
	tests := []struct {
		stage Stage
		name  string
	}{
		{StageFormal, "formal"},
		{StageGray, "gray"},
		{StageInternal, "internal"},
	}
	for _, tt := range tests {
		if got := tt.stage.String(); got != tt.name {
			t.Errorf("Stage(%d).String() = %q, want %q", tt.stage, got, tt.name)
		}
		got, err := ParseStage(tt.name)
		if err != nil || got != tt.stage {
			t.Errorf("ParseStage(%q) = %v, %v, want %v, nil", tt.name, got, err, tt.stage)
		}
	}
	if got := Stage(9).String(); got != "Stage(9)" {
		t.Errorf("Stage(9).String() = %q, want %q", got, "Stage(9)")
	}
	for _, s := range []string{"", "Formal", "GRAY", "prod", "internal "} {
		if _, err := ParseStage(s); !errors.Is(err, ErrStageUnknown) {
			t.Errorf("ParseStage(%q) error = %v, want ErrStageUnknown", s, err)
		}
	}
}

func TestIdempotencyKey(t *testing.T) {
	tests := []struct {
		actID      uint64
		activityID string
		sceneID    string
		rainID     uint64
		awardType  string
		stage      Stage
		want       string
		wantLegacy string
	}{
		{1001, "newyear", "s1", 7, "cash", StageFormal, "1001_newyear_s1_7_cash_formal", "1001_s1_7_cash_formal"},
		{1001, "spring", "s1", 7, "cash", StageFormal, "1001_spring_s1_7_cash_formal", "1001_s1_7_cash_formal"},
		{0, "", "", 0, "", StageGray, "0___0__gray", "0__0__gray"},
		{math.MaxUint64, "act-2026", "scene-a", math.MaxUint64, "coupon", StageInternal,
			"18446744073709551615_act-2026_scene-a_18446744073709551615_coupon_internal",
			"18446744073709551615_scene-a_18446744073709551615_coupon_internal"},
		{42, strings.Repeat("a", StringLenMax), strings.Repeat("x", 100), 1, "cash", StageFormal,
			"42_" + strings.Repeat("a", StringLenMax) + "_" + strings.Repeat("x", 100) + "_1_cash_formal",
			"42_" + strings.Repeat("x", 100) + "_1_cash_formal"},
	}
	for _, tt := range tests {
		got := IdempotencyKey(tt.actID, tt.activityID, tt.sceneID, tt.rainID, tt.awardType, tt.stage)
		if got != tt.want {
			t.Errorf("IdempotencyKey(%d, %q, %q, %d, %q, %v) = %q, want %q",
				tt.actID, tt.activityID, tt.sceneID, tt.rainID, tt.awardType, tt.stage, got, tt.want)
		}
		if got := LegacyIdempotencyKey(tt.actID, tt.sceneID, tt.rainID, tt.awardType, tt.stage); got != tt.wantLegacy {
			t.Errorf("LegacyIdempotencyKey(%d, %q, %d, %q, %v) = %q, want %q",
				tt.actID, tt.sceneID, tt.rainID, tt.awardType, tt.stage, got, tt.wantLegacy)
		}
		c := Claims{ActID: tt.actID, ActivityID: tt.activityID, SceneID: tt.sceneID, RainID: tt.rainID, AwardType: tt.awardType, Stage: tt.stage}
		if got := c.IdempotencyKey(); got != tt.want {
			t.Errorf("Claims.IdempotencyKey() = %q, want %q", got, tt.want)
		}
		c.Legacy = true
		if got := c.IdempotencyKey(); got != tt.wantLegacy {
			t.Errorf("Claims{Legacy: true}.IdempotencyKey() = %q, want %q", got, tt.wantLegacy)
		}
	}
}

func TestLimitKey(t *testing.T) {
	tests := []struct {
		actID      uint64
		activityID string
		sceneID    string
		rainID     uint64
		stage      Stage
		want       string
		wantLegacy string
	}{
		{1001, "newyear", "s1", 7, StageFormal, "1001_newyear_s1_7_formal", "1001_s1_7_formal"},
		{1001, "spring", "s1", 7, StageFormal, "1001_spring_s1_7_formal", "1001_s1_7_formal"},
		{0, "", "", 0, StageGray, "0___0_gray", "0__0_gray"},
		{math.MaxUint64, "act-2026", "scene-a", 3, StageInternal,
			"18446744073709551615_act-2026_scene-a_3_internal", "18446744073709551615_scene-a_3_internal"},
	}
	for _, tt := range tests {
		got := LimitKey(tt.actID, tt.activityID, tt.sceneID, tt.rainID, tt.stage)
		if got != tt.want {
			t.Errorf("LimitKey(%d, %q, %q, %d, %v) = %q, want %q", tt.actID, tt.activityID, tt.sceneID, tt.rainID, tt.stage, got, tt.want)
		}
		if got := LegacyLimitKey(tt.actID, tt.sceneID, tt.rainID, tt.stage); got != tt.wantLegacy {
			t.Errorf("LegacyLimitKey(%d, %q, %d, %v) = %q, want %q", tt.actID, tt.sceneID, tt.rainID, tt.stage, got, tt.wantLegacy)
		}
		// The limit does not depend on the award: one packet per rain.
		for _, award := range []string{"cash", "coupon"} {
			c := Claims{ActID: tt.actID, ActivityID: tt.activityID, SceneID: tt.sceneID, RainID: tt.rainID, AwardType: award, Stage: tt.stage}
			if got := c.LimitKey(); got != tt.want {
				t.Errorf("Claims{AwardType: %q}.LimitKey() = %q, want %q", award, got, tt.want)
			}
			c.Legacy = true
			if got := c.LimitKey(); got != tt.wantLegacy {
				t.Errorf("Claims{AwardType: %q, Legacy: true}.LimitKey() = %q, want %q", award, got, tt.wantLegacy)
			}
		}
	}
}

// TestKeysNameTheActivity: two activities on the same scene and rain are two
// packets (two limit keys, two trade numbers), while their legacy keys were
// one; and no key of one format equals a key of the other.
func TestKeysNameTheActivity(t *testing.T) {
	newyear := Claims{ActID: 42, ActivityID: "newyear", SceneID: "lobby", RainID: 1, AwardType: "cash", Stage: StageFormal}
	spring := newyear
	spring.ActivityID = "spring"
	if newyear.LimitKey() == spring.LimitKey() || newyear.IdempotencyKey() == spring.IdempotencyKey() {
		t.Errorf("newyear and spring share keys: %q, %q", newyear.LimitKey(), newyear.IdempotencyKey())
	}
	if OutTradeNo(newyear.IdempotencyKey()) == OutTradeNo(spring.IdempotencyKey()) {
		t.Errorf("newyear and spring share out_trade_no %s", OutTradeNo(newyear.IdempotencyKey()))
	}
	newyear.Legacy, spring.Legacy = true, true
	if newyear.LimitKey() != spring.LimitKey() {
		t.Errorf("legacy limit keys %q and %q differ; the legacy format names no activity", newyear.LimitKey(), spring.LimitKey())
	}
	// A legacy key has one "_" fewer than a key of the same kind naming the
	// activity (whose ids hold no "_"), so the formats never collide.
	legacy := newyear
	current := newyear
	current.Legacy = false
	for _, pair := range [][2]string{
		{legacy.LimitKey(), current.LimitKey()},
		{legacy.IdempotencyKey(), current.IdempotencyKey()},
	} {
		if strings.Count(pair[0], "_")+1 != strings.Count(pair[1], "_") {
			t.Errorf("legacy key %q and key %q: want exactly one separator more in the second", pair[0], pair[1])
		}
	}
}

func TestOutTradeNo(t *testing.T) {
	// Expected values computed outside Go:
	// printf 'redrain/otn\0%s' "$key" | sha256sum | cut -c1-32
	tests := []struct {
		key  string
		want string
	}{
		{"1001_s1_7_cash_formal", "f8c6e35336526ac2b19f2a213473605d"},
		{"18446744073709551615_scene-a_18446744073709551615_coupon_internal", "b50cb9a4b8e2512f0fa7ac202c2f4252"},
		{"", "e764222eecbfcf304ae2dad94cc64312"},
		{"0__0__gray", "aeb6197ea177a8222cc1d6a6aa2d4383"},
		{"42_lobby_1_cash_formal", "7a11250c3bbbe791df8705d25e7ed375"},
		{"42_newyear_lobby_1_cash_formal", "5d3981aaecbedb286089274cc1c9e567"},
		{"42_spring_lobby_1_cash_formal", "850ab0707efea2e505c37038e15a71d4"},
	}
	for _, tt := range tests {
		if got := OutTradeNo(tt.key); got != tt.want {
			t.Errorf("OutTradeNo(%q) = %q, want %q", tt.key, got, tt.want)
		}
	}
	long := strings.Repeat("k", 1000)
	if got := OutTradeNo(long); len(got) != 32 {
		t.Errorf("len(OutTradeNo(1000 bytes)) = %d, want 32", len(got))
	}
}

func TestParseKey(t *testing.T) {
	secret := hex.EncodeToString(secretOf(0, 32))
	tests := []struct {
		in      string
		wantID  uint16
		wantErr bool
	}{
		{"1:" + secret, 1, false},
		{"0:" + secret, 0, false},
		{"65535:" + strings.ToUpper(secret), 65535, false},
		{"7:" + secret + secret, 7, false},
		{secret, 0, true},             // no id
		{":" + secret, 0, true},       // empty id
		{"65536:" + secret, 0, true},  // id out of range
		{"-1:" + secret, 0, true},     // negative id
		{"x:" + secret, 0, true},      // id not a number
		{" 1:" + secret, 0, true},     // id with space
		{"1:", 0, true},               // empty secret
		{"1:" + secret[:62], 0, true}, // 31 bytes
		{"1:" + secret[:63], 0, true}, // odd length
		{"1:" + secret[:62] + "zz", 0, true},
		{"1:" + secret + ":", 0, true},
	}
	for _, tt := range tests {
		k, err := ParseKey(tt.in)
		if tt.wantErr {
			if !errors.Is(err, ErrKeyInvalid) {
				t.Errorf("ParseKey(%q) error = %v, want ErrKeyInvalid", tt.in, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseKey(%q) = %v", tt.in, err)
			continue
		}
		if k.ID != tt.wantID || hex.EncodeToString(k.Secret) != strings.ToLower(tt.in[strings.IndexByte(tt.in, ':')+1:]) {
			t.Errorf("ParseKey(%q) = {%d, %x}, want id %d and the hex secret", tt.in, k.ID, k.Secret, tt.wantID)
		}
	}
}

func TestNewRing(t *testing.T) {
	k1, k2 := testKey(1), testKey(2)
	short := Key{ID: 3, Secret: secretOf(0, 31)}
	tests := []struct {
		name    string
		active  uint16
		keys    []Key
		wantErr error
	}{
		{"one key", 1, []Key{k1}, nil},
		{"two keys", 2, []Key{k1, k2}, nil},
		{"no keys", 1, nil, ErrRingInvalid},
		{"active missing", 3, []Key{k1, k2}, ErrRingInvalid},
		{"duplicate id", 1, []Key{k1, k2, {ID: 1, Secret: secretOf(9, 32)}}, ErrRingInvalid},
		{"short secret", 1, []Key{k1, short}, ErrKeyInvalid},
	}
	for _, tt := range tests {
		r, err := NewRing(tt.active, tt.keys...)
		if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
			t.Errorf("%s: NewRing error = %v, want %v", tt.name, err, tt.wantErr)
			continue
		}
		if err == nil && r.ActiveKeyID() != tt.active {
			t.Errorf("%s: ActiveKeyID() = %d, want %d", tt.name, r.ActiveKeyID(), tt.active)
		}
	}
}

// TestSealGolden pins the wire format of both versions. The tokens were
// computed outside Go (Python, the cryptography package's AESGCM, hmac and
// hashlib) from the format in the package comment, so they also check that
// this code implements the documented format, and that any process seals
// these bytes. The version 1 vectors are the ones pinned before keys named
// the activity: sealing their claims as Legacy must give the same bytes.
func TestSealGolden(t *testing.T) {
	legacy := func(c Claims) Claims { c.Legacy = true; return c }
	maxClaims := Claims{AppID: math.MaxUint32, ActID: math.MaxUint64, SceneID: "scene-a", AwardType: "coupon",
		Stage: StageInternal, Amount: -1, OpenTime: -1}
	extremes := Claims{Amount: math.MinInt64, OpenTime: math.MaxInt64}
	tests := []struct {
		key    Key
		claims Claims
		otn    string
		token  string
	}{
		{
			Key{ID: 1, Secret: secretOf(0, 32)},
			legacy(sampleClaims()),
			"e1138a4e1885bead20470b09b19a7c44",
			"AQAB24uwujb2NIAs17jvrcl9t2ttzsRGTwamcV7fIKYTn85JUcg5aPZdCGS3I2sT-l8GtDoMM-i0p2d4iuA-ZJzXhpOu2vGQ1bULhmhFQmMN7b_mmXE",
		},
		{
			Key{ID: 258, Secret: secretOf(100, 40)},
			legacy(maxClaims),
			"8fc105f606a0cf64212a37ca1401619c",
			"AQEC5DAMNDQs_0CSccsQInd3cZsb--Y5xO3n6PiJhaZRG857LcdqOU9rFbyI6fyVrNF9oDc7f1BCijxy_1FRava7GvJReBQxZ1P2mYH4hJC0ng",
		},
		{
			Key{ID: 258, Secret: secretOf(100, 40)},
			legacy(extremes),
			"f7436c87e620f38d322aa7b0abaf88c8",
			"AQECTuSzbSvG8qCt7hv2JUFm5bxdTBPOX-PPkXlnBAO8WcXzJDHk0eoaU3SPR2AQaw8638G_Rha4PA2r3wQ0Uz_8zoL2Vmw4vjQ",
		},
		{
			Key{ID: 1, Secret: secretOf(0, 32)},
			sampleClaims(),
			"d9308f61c4828a47a3006da86bb9165f",
			"AgABU_Xk_3x-TCmX-RPltOD_zsf54QxhbmLM25M-onOj4CO2d6djvUZLfkPCNbDzk7X5grTPP4JswWjraobZzDr171va0DJnUoGDmRLquA53nApvTJE",
		},
		{
			Key{ID: 258, Secret: secretOf(100, 40)},
			maxClaims,
			"695c53ad33aafa7a933ab0f4323744b4",
			"AgEC_t5x5c76re7qNz_IM9M_uUW2czJ53ZZHhSqj3xm6_k2NkiwO6WEPLEMHQ8VbSfNeiCSCe7xaOEwdZhql_6i6lsHaa43A67ac63WtQA22Xw",
		},
		{
			Key{ID: 258, Secret: secretOf(100, 40)},
			extremes,
			"4b3488d0e159905278afe706c9890f53",
			"AgECeN_9liKSETQpTOtuEo33BJ6nKK8BAeJzlafZvRAWqOzD48DCEUmaIufQHYrCaBygw62wbPyAdGo-2druDYB94isrkbmrr7U",
		},
		{
			Key{ID: 1, Secret: secretOf(0, 32)},
			newyearClaims(),
			"5d3981aaecbedb286089274cc1c9e567",
			"AgABxHVHBhFSoDayeZHyqvbLRYoVpOwJUm9ZTJSSL4PBb5WrlxeyUBqwp64rwSO-i2uXj9H2l4D3tI9GdhiAtwfZ0eCIygPunQWR8AZ8",
		},
	}
	for i, tt := range tests {
		r := mustRing(t, tt.key.ID, tt.key)
		c := tt.claims
		got := r.Seal(nil, &c)
		if string(got) != tt.token {
			t.Errorf("golden %d: Seal = %s, want %s", i, got, tt.token)
		}
		if c.OutTradeNo != tt.otn || c.KeyID != tt.key.ID {
			t.Errorf("golden %d: Seal set OutTradeNo, KeyID = %q, %d, want %q, %d", i, c.OutTradeNo, c.KeyID, tt.otn, tt.key.ID)
		}
		opened, err := r.Open([]byte(tt.token))
		if err != nil || opened != c {
			t.Errorf("golden %d: Open = %+v, %v, want %+v, nil", i, opened, err, c)
		}
	}
}

// newyearClaims are the claims of legacyToken: user 42's cash packet of
// activity newyear in scene lobby, rain 1.
func newyearClaims() Claims {
	return Claims{AppID: 1, ActID: 42, ActivityID: "newyear", SceneID: "lobby", RainID: 1,
		AwardType: "cash", Stage: StageFormal, Amount: 145, OpenTime: 1801267200000}
}

// legacyToken was sealed by the code of version 1 (before keys named the
// activity) from newyearClaims under key 1 with secret 00 01 ... 1f, and
// kept as a test vector: tokens handed out before the upgrade must open,
// keep their trade number and book under their legacy keys.
const legacyToken = "AQABFKXUlPjBk5fch_N-5FCyV3KO0FqNWRL96VbVW_vvLCoWD56SyQD1yEkDtj5IvV6ZQH0jUw5F6gUOxggCsEZlMSrpr-BQ3zPoxC3f"

func TestOpenLegacyToken(t *testing.T) {
	key := Key{ID: 1, Secret: secretOf(0, 32)}
	// The ring has rotated to a new active key since: a legacy token opens
	// with any key the ring still holds.
	r := mustRing(t, 5, key, testKey(5))
	got, err := r.Open([]byte(legacyToken))
	if err != nil {
		t.Fatalf("Open(legacy token) error = %v", err)
	}
	want := newyearClaims()
	want.Legacy, want.KeyID, want.OutTradeNo = true, 1, "7a11250c3bbbe791df8705d25e7ed375"
	if got != want {
		t.Fatalf("Open(legacy token) = %+v, want %+v", got, want)
	}
	if k := got.LimitKey(); k != "42_lobby_1_formal" {
		t.Errorf("legacy LimitKey() = %q, want %q", k, "42_lobby_1_formal")
	}
	if k := got.IdempotencyKey(); k != "42_lobby_1_cash_formal" || OutTradeNo(k) != got.OutTradeNo {
		t.Errorf("legacy IdempotencyKey() = %q (out_trade_no %s), want %q (out_trade_no %s)",
			k, OutTradeNo(k), "42_lobby_1_cash_formal", got.OutTradeNo)
	}
	// Re-sealed under its own key it is the identical token, as version 1.
	again := got
	if resealed := mustRing(t, 1, key).Seal(nil, &again); string(resealed) != legacyToken || again != got {
		t.Errorf("re-sealing the legacy token = %s (%+v), want %s", resealed, again, legacyToken)
	}
	// The same packet granted now is another token with another trade
	// number: the keys name the activity.
	current := newyearClaims()
	token := mustRing(t, 1, key).Seal(nil, &current)
	if string(token[:2]) != "Ag" || current.OutTradeNo == got.OutTradeNo || current.Legacy {
		t.Errorf("claims sealed now = %s (%+v), want a version 2 token with a new trade number", token, current)
	}
}

// TestOpenLegacyForged: an altered version 1 token fails, and the version
// byte is authenticated, so a token cannot change key format.
func TestOpenLegacyForged(t *testing.T) {
	key := Key{ID: 1, Secret: secretOf(0, 32)}
	r := mustRing(t, 1, key)
	raw := decodeText(t, []byte(legacyToken))
	// Every single bit flipped is refused.
	for i := range raw {
		for bit := range 8 {
			flipped := bytes.Clone(raw)
			flipped[i] ^= 1 << bit
			if got, err := r.Open(encodeRaw(flipped)); err == nil {
				t.Fatalf("legacy token with raw byte %d bit %d flipped: Open = %+v, nil", i, bit, got)
			}
		}
	}
	// Its version byte set to 2 (a key-format change, not a bit flip).
	v2 := bytes.Clone(raw)
	v2[0] = tokenVersion
	if got, err := r.Open(encodeRaw(v2)); !errors.Is(err, ErrForged) {
		t.Errorf("legacy token relabelled version 2: Open = %+v, %v, want ErrForged", got, err)
	}
	// Its amount changed by XOR-ing the ciphertext.
	c := newyearClaims()
	c.Legacy = true
	altered := c
	altered.Amount = 888
	pt, ptAltered := plaintextOf(c), plaintextOf(altered)
	if len(pt) != len(ptAltered) {
		t.Fatalf("plaintexts differ in length: %d and %d", len(pt), len(ptAltered))
	}
	xored := bytes.Clone(raw)
	for i := range pt {
		xored[headerLen+nonceLen+i] ^= pt[i] ^ ptAltered[i]
	}
	if got, err := r.Open(encodeRaw(xored)); !errors.Is(err, ErrForged) {
		t.Errorf("legacy token XOR-ed to amount 888: Open = %+v, %v, want ErrForged", got, err)
	}
	// A guessed key under the same key id.
	attacker := mustRing(t, 1, Key{ID: 1, Secret: secretOf(200, 32)})
	if got, err := r.Open(attacker.Seal(nil, &altered)); !errors.Is(err, ErrForged) {
		t.Errorf("legacy token of a guessed key: Open = %+v, %v, want ErrForged", got, err)
	}
	// A key holder's tokens whose trade number is of the other key format:
	// Open checks each version against its own keys.
	current := newyearClaims()
	otnCurrent, otnLegacy := outTradeNoSum(&current), outTradeNoSum(&c)
	if got, err := r.Open(sealPlaintextVersion(r, tokenVersionLegacy, appendPlaintext(nil, &c, &otnCurrent))); !errors.Is(err, ErrForged) {
		t.Errorf("version 1 token with the version 2 trade number: Open = %+v, %v, want ErrForged", got, err)
	}
	if got, err := r.Open(sealPlaintextVersion(r, tokenVersion, appendPlaintext(nil, &current, &otnLegacy))); !errors.Is(err, ErrForged) {
		t.Errorf("version 2 token with the legacy trade number: Open = %+v, %v, want ErrForged", got, err)
	}
	if got, err := r.Open(sealPlaintextVersion(r, tokenVersionLegacy, appendPlaintext(nil, &c, &otnLegacy))); err != nil || !got.Legacy || got.Amount != 145 {
		t.Errorf("the key holder's own version 1 token: Open = %+v, %v, want the legacy claims", got, err)
	}
}

func TestSealOpenRoundTrip(t *testing.T) {
	rng := testRand(t)
	r := mustRing(t, 2, testKey(1), testKey(2))
	var dst []byte
	for i := range 5000 {
		c := randClaims(rng)
		dst = r.Seal(dst[:0], &c)
		if len(dst) > TokenLenMax {
			t.Fatalf("claims %d: token has %d bytes, more than TokenLenMax", i, len(dst))
		}
		if c.KeyID != 2 || c.OutTradeNo != c.idempotencyOutTradeNo() {
			t.Fatalf("claims %d: Seal set KeyID, OutTradeNo = %d, %q, want 2, %q", i, c.KeyID, c.OutTradeNo, c.idempotencyOutTradeNo())
		}
		got, err := r.Open(dst)
		if err != nil {
			t.Fatalf("claims %d: Open(Seal(%+v)) error = %v", i, c, err)
		}
		if got != c {
			t.Fatalf("claims %d: Open(Seal(c)) = %+v, want %+v", i, got, c)
		}
	}
	// The largest claims fit the bounds the format promises.
	c := Claims{
		AppID: math.MaxUint32, ActID: math.MaxUint64, RainID: math.MaxUint64,
		ActivityID: strings.Repeat("a", StringLenMax), SceneID: strings.Repeat("s", StringLenMax),
		AwardType: strings.Repeat("w", StringLenMax), Stage: StageInternal,
		Amount: math.MinInt64, OpenTime: math.MinInt64,
	}
	token := r.Seal(nil, &c)
	if len(token) != encodingSeal.EncodedLen(rawLenMax) || len(token) > TokenLenMax {
		t.Errorf("largest token has %d bytes, want %d", len(token), encodingSeal.EncodedLen(rawLenMax))
	}
	if got, err := r.Open(token); err != nil || got != c {
		t.Errorf("Open(largest) = %+v, %v, want %+v, nil", got, err, c)
	}
}

func (c *Claims) idempotencyOutTradeNo() string {
	return OutTradeNo(c.IdempotencyKey())
}

func TestSealDeterministic(t *testing.T) {
	rng := testRand(t)
	secret := hex.EncodeToString(secretOf(50, 32))
	ring := func() *Ring {
		k, err := ParseKey("9:" + secret)
		if err != nil {
			t.Fatal(err)
		}
		return mustRing(t, 9, testKey(1), k)
	}
	a, b := ring(), ring()
	for range 500 {
		c := randClaims(rng)
		c2 := c
		ta := a.Seal(nil, &c)
		tb := b.Seal(nil, &c2)
		if !bytes.Equal(ta, tb) {
			t.Fatalf("two rings of the same keys sealed %s and %s", ta, tb)
		}
		if again := a.Seal(nil, &c); !bytes.Equal(ta, again) {
			t.Fatalf("sealing twice gave %s and %s", ta, again)
		}
		// Seal appends and leaves what dst held.
		prefix := []byte("prefix:")
		if got := a.Seal(prefix, &c); string(got) != "prefix:"+string(ta) {
			t.Fatalf("Seal(prefix) = %s, want prefix:%s", got, ta)
		}
	}
	// Different claims give different tokens and different trade numbers.
	c1, c2 := sampleClaims(), sampleClaims()
	c2.Amount++
	if t1, t2 := a.Seal(nil, &c1), a.Seal(nil, &c2); bytes.Equal(t1, t2) {
		t.Errorf("claims differing in amount sealed the same token %s", t1)
	}
	c2 = sampleClaims()
	c2.RainID++
	a.Seal(nil, &c2)
	if c1.OutTradeNo == c2.OutTradeNo {
		t.Errorf("claims differing in rain id got the same out_trade_no %s", c1.OutTradeNo)
	}
}

func TestRotation(t *testing.T) {
	k1, k2 := testKey(1), testKey(2)
	old := mustRing(t, 1, k1)
	rotated := mustRing(t, 2, k1, k2)
	retired := mustRing(t, 2, k2)

	c := sampleClaims()
	token := old.Seal(nil, &c)
	got, err := rotated.Open(token)
	if err != nil || got != c || got.KeyID != 1 {
		t.Errorf("rotated.Open(token of key 1) = %+v, %v, want %+v, nil", got, err, c)
	}
	if _, err := retired.Open(token); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("ring without key 1: Open error = %v, want ErrUnknownKey", err)
	}

	// The rotated ring seals with key 2, which the old ring cannot open.
	c2 := sampleClaims()
	token2 := rotated.Seal(nil, &c2)
	if c2.KeyID != 2 {
		t.Errorf("rotated ring sealed with key %d, want 2", c2.KeyID)
	}
	if bytes.Equal(token, token2) {
		t.Errorf("keys 1 and 2 sealed identical tokens")
	}
	if got, err := retired.Open(token2); err != nil || got != c2 {
		t.Errorf("retired.Open(token of key 2) = %+v, %v, want %+v, nil", got, err, c2)
	}
	if _, err := old.Open(token2); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("old.Open(token of key 2) error = %v, want ErrUnknownKey", err)
	}
}

// TestOpenBitFlip flips every bit of a token's raw bytes and of its text.
func TestOpenBitFlip(t *testing.T) {
	// Keys 1 and 3: flipping bit 1 of the key id turns 1 into 3, a key the
	// ring holds, whose tag then fails.
	r := mustRing(t, 1, testKey(1), testKey(3))
	for _, c := range []Claims{sampleClaims(), {}, {Legacy: true}, newyearClaims()} {
		token := r.Seal(nil, &c)
		raw := decodeText(t, token)
		for i := range raw {
			for bit := range 8 {
				flipped := bytes.Clone(raw)
				flipped[i] ^= 1 << bit
				got, err := r.Open(encodeRaw(flipped))
				var ok bool
				switch {
				case i == 0 && (flipped[0] == tokenVersion || flipped[0] == tokenVersionLegacy):
					// Another known version: authenticated, so the tag fails.
					ok = errors.Is(err, ErrForged)
				case i == 0:
					ok = errors.Is(err, ErrMalformed)
				case i < headerLen:
					ok = errors.Is(err, ErrUnknownKey) || errors.Is(err, ErrForged)
				default:
					ok = errors.Is(err, ErrForged)
				}
				if !ok {
					t.Fatalf("raw byte %d bit %d flipped: Open = %+v, %v, want a refusal", i, bit, got, err)
				}
			}
		}
		for i := range token {
			for bit := range 8 {
				flipped := bytes.Clone(token)
				flipped[i] ^= 1 << bit
				if got, err := r.Open(flipped); err == nil {
					t.Fatalf("text byte %d bit %d flipped: Open = %+v, nil, want an error", i, bit, got)
				}
			}
		}
	}
}

// TestOpenTruncated cuts a token at every length, in text and in raw bytes,
// and extends it.
func TestOpenTruncated(t *testing.T) {
	r := mustRing(t, 1, testKey(1))
	c := sampleClaims()
	token := r.Seal(nil, &c)
	raw := decodeText(t, token)
	for n := range len(token) {
		if got, err := r.Open(token[:n]); err == nil {
			t.Fatalf("text cut to %d of %d bytes: Open = %+v, nil", n, len(token), got)
		} else if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrForged) {
			t.Fatalf("text cut to %d of %d bytes: Open error = %v, want ErrMalformed or ErrForged", n, len(token), err)
		}
	}
	for n := range len(raw) {
		if got, err := r.Open(encodeRaw(raw[:n])); err == nil {
			t.Fatalf("raw cut to %d of %d bytes: Open = %+v, nil", n, len(raw), got)
		} else if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrForged) {
			t.Fatalf("raw cut to %d of %d bytes: Open error = %v, want ErrMalformed or ErrForged", n, len(raw), err)
		}
	}
	for _, extra := range [][]byte{{0}, {0xff}, raw[len(raw)-16:]} {
		if _, err := r.Open(encodeRaw(append(bytes.Clone(raw), extra...))); !errors.Is(err, ErrForged) {
			t.Errorf("raw with %d bytes appended: Open error = %v, want ErrForged", len(extra), err)
		}
	}
}

func TestOpenMalformed(t *testing.T) {
	r := mustRing(t, 1, testKey(1))
	c := sampleClaims()
	// Pick claims whose raw length is not a multiple of 3, so that the last
	// character carries unused bits.
	for (headerLen+nonceLen+len(plaintextOf(c))+tagLen)%3 == 0 {
		c.ActivityID += "x"
	}
	token := r.Seal(nil, &c)
	raw := decodeText(t, token)

	lastBitFlipped := bytes.Clone(token)
	last := strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", lastBitFlipped[len(token)-1])
	lastBitFlipped[len(token)-1] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last^1]

	version3 := bytes.Clone(raw)
	version3[0] = 3
	version0 := bytes.Clone(raw)
	version0[0] = 0

	withNewline := append(append(bytes.Clone(token[:10]), '\n'), token[10:]...)
	withCR := append(bytes.Clone(token), '\r')
	stdAlphabet := bytes.ReplaceAll(bytes.ReplaceAll(bytes.Clone(token), []byte("-"), []byte("+")), []byte("_"), []byte("/"))

	tests := []struct {
		name  string
		token []byte
	}{
		{"nil", nil},
		{"empty", []byte{}},
		{"one char", []byte("A")},
		{"too long", bytes.Repeat([]byte("A"), TokenLenMax+1)},
		{"longest text, raw too long", bytes.Repeat([]byte("A"), TokenLenMax)},
		{"padding", append(bytes.Clone(token), '=')},
		{"padded to quantum", append(bytes.Clone(token), "==="[:(4-len(token)%4)%4]...)},
		{"newline inside", withNewline},
		{"carriage return after", withCR},
		{"non-canonical last character", lastBitFlipped},
		{"version 3", encodeRaw(version3)},
		{"version 0", encodeRaw(version0)},
		{"space", append([]byte(" "), token...)},
		{"nul", append(bytes.Clone(token), 0)},
	}
	if !bytes.Equal(stdAlphabet, token) {
		tests = append(tests, struct {
			name  string
			token []byte
		}{"standard alphabet", stdAlphabet})
	}
	for _, tt := range tests {
		if got, err := r.Open(tt.token); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Open = %+v, %v, want ErrMalformed", tt.name, got, err)
		}
	}
	if got, err := r.Open(token); err != nil || got != c {
		t.Errorf("the unmodified token: Open = %+v, %v, want %+v, nil", got, err, c)
	}
}

// TestOpenStrictPlaintext seals plaintexts that only a key holder could
// produce and that are not the encoding of any claims: Open refuses them.
func TestOpenStrictPlaintext(t *testing.T) {
	r := mustRing(t, 1, testKey(1))
	c := sampleClaims()
	pt := plaintextOf(c)
	otn := outTradeNoSum(&c)

	// encode builds a plaintext field by field; fields replaces some.
	encode := func(fields ...[]byte) []byte { return bytes.Join(fields, nil) }
	uv := func(v uint64) []byte { return binary.AppendUvarint(nil, v) }
	str := func(s string) []byte { return append(uv(uint64(len(s))), s...) }
	tail := func(c Claims) []byte { // stage, amount, open_time, out_trade_no
		b := []byte{byte(c.Stage)}
		b = binary.AppendVarint(b, c.Amount)
		b = binary.AppendVarint(b, c.OpenTime)
		return append(b, otn[:]...)
	}
	if got := encode(uv(uint64(c.AppID)), uv(c.ActID), str(c.ActivityID), str(c.SceneID), uv(c.RainID), str(c.AwardType), tail(c)); !bytes.Equal(got, pt) {
		t.Fatalf("test encoder = %x, want %x", got, pt)
	}
	if _, err := r.Open(sealPlaintext(r, pt)); err != nil {
		t.Fatalf("Open(sealPlaintext(plaintext of claims)) error = %v", err)
	}

	badStage := c
	badStage.Stage = 3
	tests := []struct {
		name string
		pt   []byte
	}{
		{"trailing byte", append(bytes.Clone(pt), 0)},
		{"trailing bytes", append(bytes.Clone(pt), pt...)},
		{"missing last byte", pt[:len(pt)-1]},
		{"non-minimal app id", encode([]byte{0x91, 0xce, 0x80, 0x00}, uv(c.ActID), str(c.ActivityID), str(c.SceneID), uv(c.RainID), str(c.AwardType), tail(c))},
		{"non-minimal zero", encode([]byte{0x80, 0x00}, uv(c.ActID), str(c.ActivityID), str(c.SceneID), uv(c.RainID), str(c.AwardType), tail(c))},
		{"app id over 32 bits", encode(uv(1<<32), uv(c.ActID), str(c.ActivityID), str(c.SceneID), uv(c.RainID), str(c.AwardType), tail(c))},
		{"varint overflow", encode(uv(uint64(c.AppID)), bytes.Repeat([]byte{0xff}, 10), []byte{0x01}, str(c.ActivityID), str(c.SceneID), uv(c.RainID), str(c.AwardType), tail(c))},
		{"string too long", encode(uv(uint64(c.AppID)), uv(c.ActID), str(strings.Repeat("a", StringLenMax+1)), str(c.SceneID), uv(c.RainID), str(c.AwardType), tail(c))},
		{"string length past end", encode(uv(uint64(c.AppID)), uv(c.ActID), str(c.ActivityID), str(c.SceneID), uv(c.RainID), uv(60), []byte(c.AwardType), tail(c))},
		{"unknown stage", encode(uv(uint64(c.AppID)), uv(c.ActID), str(c.ActivityID), str(c.SceneID), uv(c.RainID), str(c.AwardType), tail(badStage))},
	}
	for _, tt := range tests {
		if got, err := r.Open(sealPlaintext(r, tt.pt)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Open = %+v, %v, want ErrMalformed", tt.name, got, err)
		}
	}
}

// TestOpenAlteredAmount shows the ways of changing a token's amount without
// the key, and that each is refused.
func TestOpenAlteredAmount(t *testing.T) {
	r := mustRing(t, 1, testKey(1))
	c := sampleClaims() // Amount 888
	token := r.Seal(nil, &c)
	raw := decodeText(t, token)

	// GCM is a stream cipher: XOR-ing the ciphertext changes the plaintext
	// at will. 888 and 999 have zigzag varints of the same length.
	pt := plaintextOf(c)
	altered := c
	altered.Amount = 999
	ptAltered := plaintextOf(altered)
	if len(pt) != len(ptAltered) {
		t.Fatalf("plaintexts differ in length: %d and %d", len(pt), len(ptAltered))
	}
	xored := bytes.Clone(raw)
	for i := range pt {
		xored[headerLen+nonceLen+i] ^= pt[i] ^ ptAltered[i]
	}
	if got, err := r.Open(encodeRaw(xored)); !errors.Is(err, ErrForged) {
		t.Errorf("ciphertext XOR-ed to amount 999: Open = %+v, %v, want ErrForged", got, err)
	}

	// A ring with a guessed secret under the same key id.
	attacker := mustRing(t, 1, Key{ID: 1, Secret: secretOf(200, 32)})
	forged := attacker.Seal(nil, &altered)
	if got, err := r.Open(forged); !errors.Is(err, ErrForged) {
		t.Errorf("token of a guessed key: Open = %+v, %v, want ErrForged", got, err)
	}

	// The right encryption key but a nonce that is not the synthetic one:
	// GCM authenticates, the synthetic nonce check refuses.
	k := &r.keys[r.active]
	header := raw[:headerLen]
	for _, nonce := range [][]byte{make([]byte, nonceLen), bytes.Repeat([]byte{0xa5}, nonceLen)} {
		wrong := append(append(bytes.Clone(header), nonce...), k.aead.Seal(nil, nonce, ptAltered, header)...)
		if got, err := r.Open(encodeRaw(wrong)); !errors.Is(err, ErrForged) {
			t.Errorf("nonce %x: Open = %+v, %v, want ErrForged", nonce, got, err)
		}
	}

	// A key holder's token whose out_trade_no is not the one of its fields.
	wrongOTN := bytes.Clone(ptAltered)
	wrongOTN[len(wrongOTN)-1] ^= 1
	if got, err := r.Open(sealPlaintext(r, wrongOTN)); !errors.Is(err, ErrForged) {
		t.Errorf("out_trade_no mismatch: Open = %+v, %v, want ErrForged", got, err)
	}
	// The original still opens with the original amount.
	if got, err := r.Open(token); err != nil || got.Amount != 888 {
		t.Errorf("Open(original) = %+v, %v, want amount 888", got, err)
	}
}

// TestOpenNeverPanics feeds Open random text, random raw bytes behind a
// valid header, and random edits of valid tokens.
func TestOpenNeverPanics(t *testing.T) {
	rng := testRand(t)
	fr := newFuzzRings(t)
	r := fr.open
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/\n\r \x00\xff"
	var valid [][]byte
	for range 16 {
		c := randClaims(rng)
		valid = append(valid, r.Seal(nil, &c))
	}
	for i := range 100000 {
		var token []byte
		switch i % 3 {
		case 0: // random text
			token = make([]byte, rng.IntN(TokenLenMax+64))
			for j := range token {
				token[j] = alphabet[rng.IntN(len(alphabet))]
			}
		case 1: // random raw bytes behind a valid header
			raw := make([]byte, rng.IntN(rawLenMax+32))
			for j := range raw {
				raw[j] = byte(rng.UintN(256))
			}
			copy(raw, []byte{tokenVersion, 0, 1})
			token = encodeRaw(raw)
		default: // edits of a valid token
			token = bytes.Clone(valid[rng.IntN(len(valid))])
			for range 1 + rng.IntN(3) {
				j := rng.IntN(len(token) + 1)
				ch := alphabet[rng.IntN(len(alphabet))]
				switch rng.IntN(3) {
				case 0:
					token = append(token[:j:j], append([]byte{ch}, token[j:]...)...)
				case 1:
					if j < len(token) {
						token = append(token[:j:j], token[j+1:]...)
					}
				default:
					if j < len(token) {
						token[j] = ch
					}
				}
			}
		}
		fr.check(t, token)
	}
}

// fuzzRings opens with keys 1 and 2 and re-seals with either.
type fuzzRings struct {
	open     *Ring
	byActive map[uint16]*Ring
}

func newFuzzRings(t testing.TB) fuzzRings {
	k1, k2 := testKey(1), testKey(2)
	r1, r2 := mustRing(t, 1, k1, k2), mustRing(t, 2, k1, k2)
	return fuzzRings{open: r1, byActive: map[uint16]*Ring{1: r1, 2: r2}}
}

// check opens token and checks the outcome is a known error, or a success
// that re-seals to the identical token.
func (fr fuzzRings) check(t testing.TB, token []byte) {
	t.Helper()
	var c Claims
	var err error
	func() {
		defer func() {
			if p := recover(); p != nil {
				t.Fatalf("Open(%q) panicked: %v", token, p)
			}
		}()
		c, err = fr.open.Open(token)
	}()
	if err != nil {
		if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnknownKey) && !errors.Is(err, ErrForged) {
			t.Fatalf("Open(%q) error = %v, not one of ErrMalformed, ErrUnknownKey, ErrForged", token, err)
		}
		if c != (Claims{}) {
			t.Fatalf("Open(%q) failed with %v but returned claims %+v", token, err, c)
		}
		return
	}
	again := c
	if resealed := fr.byActive[c.KeyID].Seal(nil, &again); !bytes.Equal(resealed, token) || again != c {
		t.Fatalf("Open(%q) = %+v, which re-seals to %q", token, c, resealed)
	}
}

func TestSealPanicsOnInvalidClaims(t *testing.T) {
	r := mustRing(t, 1, testKey(1))
	long := strings.Repeat("x", StringLenMax+1)
	tests := []struct {
		name   string
		change func(*Claims)
	}{
		{"activity id", func(c *Claims) { c.ActivityID = long }},
		{"scene id", func(c *Claims) { c.SceneID = long }},
		{"award type", func(c *Claims) { c.AwardType = long }},
		{"stage", func(c *Claims) { c.Stage = stageCount }},
	}
	for _, tt := range tests {
		c := sampleClaims()
		tt.change(&c)
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: Seal did not panic", tt.name)
				}
			}()
			r.Seal(nil, &c)
		}()
	}
}

// TestConcurrent seals and opens from many goroutines; run it with -race.
func TestConcurrent(t *testing.T) {
	r := mustRing(t, 2, testKey(1), testKey(2))
	old := mustRing(t, 1, testKey(1))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			var dst []byte
			for i := range 300 {
				c := sampleClaims()
				c.ActID = uint64(g)
				c.RainID = uint64(i)
				sealer := r
				if i%2 == 0 {
					sealer = old
				}
				dst = sealer.Seal(dst[:0], &c)
				got, err := r.Open(dst)
				if err != nil || got != c {
					t.Errorf("goroutine %d claims %d: Open = %+v, %v, want %+v", g, i, got, err, c)
					return
				}
			}
		})
	}
	wg.Wait()
}

func FuzzOpen(f *testing.F) {
	fr := newFuzzRings(f)
	r, rotated := fr.byActive[1], fr.byActive[2]
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 8 {
		c := randClaims(rng)
		sealer := r
		if i%2 == 1 {
			sealer = rotated
		}
		f.Add(sealer.Seal(nil, &c))
	}
	c := sampleClaims()
	f.Add(r.Seal(nil, &c))
	c.Legacy = true
	f.Add(r.Seal(nil, &c))
	f.Add([]byte(legacyToken)) // key 1's secret differs here: ErrForged
	for _, s := range []string{"", "A", "AQAB", "AQAB====", strings.Repeat("A", 75), strings.Repeat("_", 400), "\n\r", "\x00\xff"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, token []byte) {
		fr.check(t, token)
	})
}

func BenchmarkSeal(b *testing.B) {
	r := mustRing(b, 1, testKey(1))
	b.Run("claims=reused", func(b *testing.B) {
		b.ReportAllocs()
		c := sampleClaims()
		dst := make([]byte, 0, TokenLenMax)
		for b.Loop() {
			dst = r.Seal(dst[:0], &c)
		}
	})
	// A grant builds fresh claims, so Seal allocates their OutTradeNo.
	b.Run("claims=fresh", func(b *testing.B) {
		b.ReportAllocs()
		c := sampleClaims()
		dst := make([]byte, 0, TokenLenMax)
		for b.Loop() {
			c.OutTradeNo = ""
			dst = r.Seal(dst[:0], &c)
		}
	})
}

func BenchmarkOpen(b *testing.B) {
	r := mustRing(b, 1, testKey(1))
	c := sampleClaims()
	token := r.Seal(nil, &c)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Open(token); err != nil {
			b.Fatal(err)
		}
	}
}
