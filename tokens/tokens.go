// Package tokens owns the red-packet token format: the claims a grant hands
// to a user, sealed with AES-128-GCM under a synthetic (derived) nonce, the
// key ring with key ids and rotation, and the derivation of out_trade_no and
// the idempotency and limit keys from the claims.
//
// A token is deterministic: the same claims sealed with the same key give the
// same bytes on every node, so a retried grant collapses into the original
// instead of diverging from it. The package must never accept a token whose
// tag fails and must never use a random or counter nonce. It is a pure core:
// it reads no clock and no random source, and imports only the standard
// library.
//
// Wire format (before base64, raw URL alphabet, no padding):
//
//	version (1 byte, = 2; 1 for legacy tokens) | key id (2 bytes, big endian) |
//	nonce (12 bytes) | AES-128-GCM(plaintext) with the 3 header bytes as
//	additional data, tag last
//
// Plaintext, in order: app_id (uvarint), act_id (uvarint), activity_id
// (string), scene_id (string), rain_id (uvarint), award_type (string), stage
// (1 byte), amount (zigzag varint), open_time (zigzag varint), out_trade_no
// (16 raw bytes). A string is a uvarint length of at most StringLenMax
// followed by its bytes. Every varint must be minimally encoded and nothing
// may follow out_trade_no, so each claims value has exactly one plaintext and
// a token that opens re-seals to the identical bytes.
//
// The version says which keys the token's out_trade_no derives from.
// Version 2 keys name the activity: the idempotency key is
// "{act_id}_{activity_id}_{scene_id}_{rain_id}_{award_type}_{stage}" and the
// limit key "{act_id}_{activity_id}_{scene_id}_{rain_id}_{stage}". Version 1
// tokens, sealed before keys named the activity, have the same plaintext but
// derive from the legacy keys "{act_id}_{scene_id}_{rain_id}_{award_type}_{stage}"
// and "{act_id}_{scene_id}_{rain_id}_{stage}". Open accepts both and sets
// Claims.Legacy for version 1, so a legacy token keeps its trade number and
// books once under the key it was issued with; Seal writes version 1 only for
// such claims. The version is authenticated (it is additional data and part
// of the synthetic nonce's input), so a token cannot be moved from one key
// format to the other.
package tokens

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"math"
	"strconv"
	"strings"
	"sync"
)

// Errors returned by Open. Compare them with errors.Is.
var (
	// ErrMalformed reports a token that is not a well-formed token of this
	// format: bad base64, too short or too long, an unknown version, bad field
	// encoding or bytes after the last field.
	ErrMalformed = errors.New("tokens: malformed token")
	// ErrUnknownKey reports a token sealed with a key id the ring does not hold.
	ErrUnknownKey = errors.New("tokens: unknown key id")
	// ErrForged reports a token that fails authentication: the GCM tag, the
	// synthetic nonce or the out_trade_no does not match.
	ErrForged = errors.New("tokens: forged token")
)

// Errors returned while building a ring and parsing configuration.
var (
	// ErrStageUnknown reports a stage name other than formal, gray or internal.
	ErrStageUnknown = errors.New("tokens: unknown stage")
	// ErrKeyInvalid reports a key whose id or secret cannot be used.
	ErrKeyInvalid = errors.New("tokens: invalid key")
	// ErrRingInvalid reports a ring whose key set is inconsistent: no keys,
	// duplicate ids, or an active id that is not among the keys.
	ErrRingInvalid = errors.New("tokens: invalid key ring")
)

const (
	// TokenLenMax is the most bytes of base64 text Open accepts. The largest
	// token Seal can produce is 384 bytes of text (288 raw bytes).
	TokenLenMax = 512
	// StringLenMax is the most bytes a string claim (ActivityID, SceneID,
	// AwardType) may hold. Campaign validation must enforce it: Seal panics on
	// longer strings and Open refuses them.
	StringLenMax = 64
	// SecretLenMin is the fewest bytes a key secret may hold.
	SecretLenMin = 32
)

const (
	// tokenVersion leads the tokens Seal writes for claims whose keys name
	// the activity; tokenVersionLegacy those of Legacy claims.
	tokenVersion       = 2
	tokenVersionLegacy = 1

	headerLen = 3 // version, key id
	nonceLen  = 12
	tagLen    = 16
	otnLen    = 16 // raw bytes of out_trade_no

	// plaintextLenMax is the largest plaintext: app_id (5), act_id (10),
	// rain_id (10), amount (10), open_time (10), stage (1), out_trade_no (16)
	// and three strings of one length byte and StringLenMax bytes.
	plaintextLenMax = 5 + 10 + 10 + 10 + 10 + 1 + otnLen + 3*(1+StringLenMax)
	// plaintextLenMin is the smallest plaintext: one byte per varint, one
	// length byte per (empty) string, the stage and out_trade_no.
	plaintextLenMin = 5 + 3 + 1 + otnLen
	rawLenMax       = headerLen + nonceLen + plaintextLenMax + tagLen
	rawLenMin       = headerLen + nonceLen + plaintextLenMin + tagLen

	// idempotencyKeyLenMax bounds the idempotency key of claims Seal accepts:
	// two uint64 in decimal, three strings (activity, scene, award), the
	// stage name and five separators. Legacy keys are shorter.
	idempotencyKeyLenMax = 20 + 20 + 3*StringLenMax + len("internal") + 5
)

// Domain separation labels: each derived value hashes its own label, so no
// two derivations can ever be made to agree.
const (
	labelOutTradeNo = "redrain/otn\x00"
	labelEnc        = "redrain/token/enc\x00"
	labelSIV        = "redrain/token/siv\x00"
)

// encodingSeal writes tokens; encodingOpen reads them and, being strict,
// refuses non-zero trailing bits, so every token has one text form.
var (
	encodingSeal = base64.RawURLEncoding
	encodingOpen = base64.RawURLEncoding.Strict()
)

// Stage of a child activity.
type Stage uint8

// Stages. The values are part of the token format.
const (
	StageFormal   Stage = 0
	StageGray     Stage = 1
	StageInternal Stage = 2
)

// stageCount is one more than the largest valid Stage.
const stageCount = 3

var stageNames = [stageCount]string{"formal", "gray", "internal"}

// String returns the stage's name: "formal", "gray" or "internal".
func (s Stage) String() string {
	if s < stageCount {
		return stageNames[s]
	}
	return "Stage(" + strconv.Itoa(int(s)) + ")"
}

// ParseStage returns the stage named s ("formal", "gray" or "internal").
func ParseStage(s string) (Stage, error) {
	for i, name := range stageNames {
		if s == name {
			return Stage(i), nil
		}
	}
	return 0, fmt.Errorf("%w: %q", ErrStageUnknown, s)
}

// Claims are the facts a token carries about one grant.
type Claims struct {
	AppID      uint32
	ActID      uint64
	ActivityID string // Invariant: len <= StringLenMax
	SceneID    string // Invariant: len <= StringLenMax
	RainID     uint64
	AwardType  string // Invariant: len <= StringLenMax
	Stage      Stage  // Invariant: one of the Stage constants
	Amount     int64  // minor units (fen) or a count
	// OutTradeNo is derived: OutTradeNo(IdempotencyKey(...)). Seal sets it and
	// Open verifies it.
	OutTradeNo string
	// OpenTime is unix milliseconds of the rain's start, not of the grant, so
	// that a grant is deterministic.
	OpenTime int64
	// KeyID is set by Seal from the ring's active key and reported by Open.
	KeyID uint16
	// Legacy marks the claims of a version 1 token, sealed before the keys
	// named the activity: their limit key, idempotency key and out_trade_no
	// are the legacy ones without the activity, and Seal writes them as a
	// version 1 token again. Open sets it; a new grant never does.
	Legacy bool
}

// IdempotencyKey returns
// "{act_id}_{activity_id}_{scene_id}_{rain_id}_{award_type}_{stage}" with
// decimal act_id and rain_id and the stage's String. The fields are not
// escaped, so campaign validation must keep "_" out of activity ids, scene
// ids and award types for the key to be unambiguous. Scene and rain ids are
// unique only within an activity, so the activity is part of the key: two
// activities on the same scene and rain are two packets.
func IdempotencyKey(actID uint64, activityID, sceneID string, rainID uint64, awardType string, stage Stage) string {
	var buf [idempotencyKeyLenMax]byte
	return string(AppendIdempotencyKey(buf[:0], actID, activityID, sceneID, rainID, awardType, stage))
}

// AppendIdempotencyKey appends IdempotencyKey's key to dst, so that a
// caller deriving many keys can build them in one buffer.
func AppendIdempotencyKey(dst []byte, actID uint64, activityID, sceneID string, rainID uint64, awardType string, stage Stage) []byte {
	b := appendKeyPrefix(dst, false, actID, activityID, sceneID, rainID)
	return appendKeySuffix(b, awardType, stage)
}

// LimitKey returns "{act_id}_{activity_id}_{scene_id}_{rain_id}_{stage}",
// the per-user limit: one packet per activity and rain whatever the award.
func LimitKey(actID uint64, activityID, sceneID string, rainID uint64, stage Stage) string {
	var buf [idempotencyKeyLenMax]byte
	return string(AppendLimitKey(buf[:0], actID, activityID, sceneID, rainID, stage))
}

// AppendLimitKey appends LimitKey's key to dst.
func AppendLimitKey(dst []byte, actID uint64, activityID, sceneID string, rainID uint64, stage Stage) []byte {
	b := appendKeyPrefix(dst, false, actID, activityID, sceneID, rainID)
	return append(b, stage.String()...)
}

// LegacyIdempotencyKey returns "{act_id}_{scene_id}_{rain_id}_{award_type}_{stage}",
// the idempotency key of grants made before keys named the activity
// (version 1 tokens and grant records).
func LegacyIdempotencyKey(actID uint64, sceneID string, rainID uint64, awardType string, stage Stage) string {
	var buf [idempotencyKeyLenMax]byte
	b := appendKeyPrefix(buf[:0], true, actID, "", sceneID, rainID)
	return string(appendKeySuffix(b, awardType, stage))
}

// LegacyLimitKey returns "{act_id}_{scene_id}_{rain_id}_{stage}", the limit
// key of grants made before keys named the activity. It has one part fewer
// than a LimitKey, so the two formats never produce the same key.
func LegacyLimitKey(actID uint64, sceneID string, rainID uint64, stage Stage) string {
	var buf [idempotencyKeyLenMax]byte
	return string(AppendLegacyLimitKey(buf[:0], actID, sceneID, rainID, stage))
}

// AppendLegacyLimitKey appends LegacyLimitKey's key to dst.
func AppendLegacyLimitKey(dst []byte, actID uint64, sceneID string, rainID uint64, stage Stage) []byte {
	b := appendKeyPrefix(dst, true, actID, "", sceneID, rainID)
	return append(b, stage.String()...)
}

// OutTradeNo derives the 32-hex-character trade number from an idempotency
// key: the hex of the first 16 bytes of SHA-256("redrain/otn\x00" + key).
func OutTradeNo(idempotencyKey string) string {
	var buf [2 * otnLen]byte
	return string(AppendOutTradeNo(buf[:0], []byte(idempotencyKey)))
}

// AppendOutTradeNo appends OutTradeNo's trade number of idempotencyKey to
// dst.
func AppendOutTradeNo(dst, idempotencyKey []byte) []byte {
	var buf [len(labelOutTradeNo) + idempotencyKeyLenMax]byte
	b := append(append(buf[:0], labelOutTradeNo...), idempotencyKey...)
	sum := sha256.Sum256(b)
	return hex.AppendEncode(dst, sum[:otnLen])
}

// OutTradeNoOfLimit derives the trade number of the grant with limitKey
// and awardType: its idempotency key is the limit key with the award
// inserted before the last part, the stage. That holds for both formats:
// "{act}_{activity}_{scene}_{rain}_{stage}" gives
// "{act}_{activity}_{scene}_{rain}_{award}_{stage}", and a legacy
// "{act}_{scene}_{rain}_{stage}" the legacy
// "{act}_{scene}_{rain}_{award}_{stage}". ok is false for a key without
// a stage part.
func OutTradeNoOfLimit(limitKey, awardType string) (otn string, ok bool) {
	i := strings.LastIndexByte(limitKey, '_')
	if i < 0 {
		return "", false
	}
	var kb [idempotencyKeyLenMax]byte
	k := append(kb[:0], limitKey[:i+1]...)
	k = append(k, awardType...)
	k = append(k, limitKey[i:]...)
	var buf [2 * otnLen]byte
	return string(AppendOutTradeNo(buf[:0], k)), true
}

// IdempotencyKey returns the idempotency key of c's fields: the legacy one
// when c.Legacy is set.
func (c *Claims) IdempotencyKey() string {
	var buf [idempotencyKeyLenMax]byte
	return string(appendIdempotencyKey(buf[:0], c))
}

// LimitKey returns the per-user limit key of c's fields: the legacy one when
// c.Legacy is set.
func (c *Claims) LimitKey() string {
	var buf [idempotencyKeyLenMax]byte
	b := appendKeyPrefix(buf[:0], c.Legacy, c.ActID, c.ActivityID, c.SceneID, c.RainID)
	return string(append(b, c.Stage.String()...))
}

// appendKeyPrefix appends "{act_id}_{activity_id}_{scene_id}_{rain_id}_",
// the part that limit and idempotency keys share; legacy leaves out the
// activity.
func appendKeyPrefix(b []byte, legacy bool, actID uint64, activityID, sceneID string, rainID uint64) []byte {
	b = strconv.AppendUint(b, actID, 10)
	b = append(b, '_')
	if !legacy {
		b = append(b, activityID...)
		b = append(b, '_')
	}
	b = append(b, sceneID...)
	b = append(b, '_')
	b = strconv.AppendUint(b, rainID, 10)
	return append(b, '_')
}

// appendKeySuffix appends "{award_type}_{stage}", the end of an idempotency
// key.
func appendKeySuffix(b []byte, awardType string, stage Stage) []byte {
	b = append(b, awardType...)
	b = append(b, '_')
	return append(b, stage.String()...)
}

func appendIdempotencyKey(b []byte, c *Claims) []byte {
	b = appendKeyPrefix(b, c.Legacy, c.ActID, c.ActivityID, c.SceneID, c.RainID)
	return appendKeySuffix(b, c.AwardType, c.Stage)
}

// outTradeNoSum returns the raw out_trade_no of c's fields without
// allocating.
func outTradeNoSum(c *Claims) [otnLen]byte {
	var buf [len(labelOutTradeNo) + idempotencyKeyLenMax]byte
	b := append(buf[:0], labelOutTradeNo...)
	b = appendIdempotencyKey(b, c)
	sum := sha256.Sum256(b)
	return [otnLen]byte(sum[:otnLen])
}

// Key is one token key as configured.
type Key struct {
	ID     uint16
	Secret []byte // Invariant: len >= SecretLenMin
}

// ParseKey parses a key written "ID:HEX" in a config file, for example
// "1:00112233...": a decimal id from 0 to 65535 and a hex secret of at least
// SecretLenMin bytes.
func ParseKey(s string) (Key, error) {
	idText, secretText, ok := strings.Cut(s, ":")
	if !ok {
		return Key{}, fmt.Errorf("%w: want ID:HEX, got no ':'", ErrKeyInvalid)
	}
	id, err := strconv.ParseUint(idText, 10, 16)
	if err != nil {
		return Key{}, fmt.Errorf("%w: id %q is not a decimal number from 0 to 65535", ErrKeyInvalid, idText)
	}
	secret, err := hex.DecodeString(secretText)
	if err != nil {
		return Key{}, fmt.Errorf("%w: key %d: secret is not hex: %v", ErrKeyInvalid, id, err)
	}
	if len(secret) < SecretLenMin {
		return Key{}, fmt.Errorf("%w: key %d: secret has %d bytes, want at least %d (%d hex digits)",
			ErrKeyInvalid, id, len(secret), SecretLenMin, 2*SecretLenMin)
	}
	return Key{ID: uint16(id), Secret: secret}, nil
}

// ringKey is one key of a ring with everything derived from its secret.
type ringKey struct {
	id     uint16
	aead   cipher.AEAD // AES-128-GCM under encKey, built once
	macKey []byte      // HMAC-SHA256 key of the synthetic nonce
}

// Ring holds the token keys: every key opens, only the active key seals. A
// Ring is immutable and safe for concurrent use.
//
// A key must seal fewer than 2^32 distinct tokens. The synthetic nonce is 96
// bits of HMAC output, so distinct plaintexts get effectively random nonces,
// and the GCM bound for random nonces (at most 2^32 messages per key, to keep
// the chance of a nonce collision under 2^-32) applies. Rotate keys well
// before that: add a new key as active and keep the old one to open.
type Ring struct {
	keys   []ringKey // Invariant: ids are distinct
	active int       // index of the sealing key in keys
	// scratch pools per-call state, so that Seal and Open do not allocate:
	// buffers passed through the cipher.AEAD and hash.Hash interfaces escape,
	// and so would be allocated on every call if they lived on the stack.
	scratch sync.Pool // of *scratch
}

// scratch is the reusable state of one Seal or Open call.
type scratch struct {
	raw  [rawLenMax]byte
	text [TokenLenMax / 4 * 3]byte // decoded token text, at most TokenLenMax
	pt   [plaintextLenMax]byte
	sum  [sha256.Size]byte
	strs [3*StringLenMax + 2*otnLen]byte
	macs []hash.Hash // one HMAC per ring key, built on first use
}

// NewRing builds a ring of keys that seals with the key whose id is active.
// Every key can open. The ring derives its own keys from the secrets and
// keeps no reference to them.
func NewRing(active uint16, keys ...Key) (*Ring, error) {
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no keys", ErrRingInvalid)
	}
	r := &Ring{keys: make([]ringKey, 0, len(keys)), active: -1}
	for _, k := range keys {
		if len(k.Secret) < SecretLenMin {
			return nil, fmt.Errorf("%w: key %d: secret has %d bytes, want at least %d",
				ErrKeyInvalid, k.ID, len(k.Secret), SecretLenMin)
		}
		for _, seen := range r.keys {
			if seen.id == k.ID {
				return nil, fmt.Errorf("%w: duplicate key id %d", ErrRingInvalid, k.ID)
			}
		}
		encKey := derive(labelEnc, k.Secret)
		block, err := aes.NewCipher(encKey[:16])
		if err != nil {
			panic("tokens: aes.NewCipher with a 16-byte key: " + err.Error())
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			panic("tokens: cipher.NewGCM: " + err.Error())
		}
		macKey := derive(labelSIV, k.Secret)
		if k.ID == active {
			r.active = len(r.keys)
		}
		r.keys = append(r.keys, ringKey{id: k.ID, aead: aead, macKey: macKey[:]})
	}
	if r.active < 0 {
		return nil, fmt.Errorf("%w: active key %d is not among the keys", ErrRingInvalid, active)
	}
	n := len(r.keys)
	r.scratch.New = func() any { return &scratch{macs: make([]hash.Hash, n)} }
	return r, nil
}

func derive(label string, secret []byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write([]byte(label))
	h.Write(secret)
	return [sha256.Size]byte(h.Sum(nil))
}

// ActiveKeyID returns the id of the key that seals.
func (r *Ring) ActiveKeyID() uint16 {
	return r.keys[r.active].id
}

// siv returns the synthetic nonce of a header and plaintext: the first 12
// bytes of HMAC-SHA256(macKey, header || plaintext).
//
// Why synthetic: a retried grant on any node must yield the identical token,
// and a random or counter nonce cannot. A nonce derived from the plaintext
// repeats only for identical plaintexts, which then give identical
// ciphertexts, so the repetition reveals nothing and GCM's nonce-reuse
// failure (the keystream and the authentication key leaking) cannot happen.
func (s *scratch) siv(r *Ring, i int, header, plaintext []byte) []byte {
	mac := s.macs[i]
	if mac == nil {
		mac = hmac.New(sha256.New, r.keys[i].macKey)
		s.macs[i] = mac
	} else {
		mac.Reset()
	}
	mac.Write(header)
	mac.Write(plaintext)
	return mac.Sum(s.sum[:0])[:nonceLen]
}

// Seal appends the token of c to dst: base64 in the raw URL encoding without
// padding. It first sets c.KeyID to the ring's active key and c.OutTradeNo to
// the trade number derived from c's fields, whatever they held. Sealing is
// deterministic: the same claims under the same key give identical bytes in
// every process. Claims with Legacy set (opened from a version 1 token) are
// sealed as a version 1 token with the legacy trade number, so an opened
// token re-seals to its own bytes.
//
// Seal panics if a string claim is longer than StringLenMax or the stage is
// unknown: Open would refuse such a token, and campaign validation keeps
// them out, so meeting one is a programming error.
func (r *Ring) Seal(dst []byte, c *Claims) []byte {
	dst, otnHex := r.SealTo(dst, c)
	if c.OutTradeNo != string(otnHex[:]) { // compares without allocating
		c.OutTradeNo = string(otnHex[:])
	}
	c.KeyID = r.keys[r.active].id
	return dst
}

// OutTradeNoText is an out_trade_no's 32 hex characters.
type OutTradeNoText [2 * otnLen]byte

// SealTo appends the token of c to dst exactly as Seal does and returns
// the trade number it sealed, but leaves c unchanged: a caller that writes
// the token and the trade number into one buffer (a grant's answer)
// allocates nothing. It panics where Seal does.
func (r *Ring) SealTo(dst []byte, c *Claims) ([]byte, OutTradeNoText) {
	checkClaims(c)
	otn := outTradeNoSum(c)
	var otnHex OutTradeNoText
	hex.Encode(otnHex[:], otn[:])

	s := r.scratch.Get().(*scratch)
	pt := appendPlaintext(s.pt[:0], c, &otn)
	version := byte(tokenVersion)
	if c.Legacy {
		version = tokenVersionLegacy
	}
	dst = r.seal(dst, s, r.active, version, pt)
	r.scratch.Put(s)
	return dst, otnHex
}

// seal appends the token of plaintext pt under the ring's key i and the
// given version to dst.
func (r *Ring) seal(dst []byte, s *scratch, i int, version byte, pt []byte) []byte {
	k := &r.keys[i]
	raw := append(s.raw[:0], version, byte(k.id>>8), byte(k.id))
	raw = append(raw, s.siv(r, i, raw[:headerLen], pt)...)
	// The nonce and header alias the front of raw; GCM writes only after
	// them, so the aliasing is exact-or-none as cipher.AEAD requires.
	raw = k.aead.Seal(raw, raw[headerLen:headerLen+nonceLen], pt, raw[:headerLen])
	return encodingSeal.AppendEncode(dst, raw)
}

func checkClaims(c *Claims) {
	if c.Stage >= stageCount {
		panic(fmt.Sprintf("tokens: Seal: unknown stage %d", c.Stage))
	}
	for _, s := range [...]string{c.ActivityID, c.SceneID, c.AwardType} {
		if len(s) > StringLenMax {
			panic(fmt.Sprintf("tokens: Seal: string claim %q has %d bytes, more than StringLenMax", s, len(s)))
		}
	}
}

func appendPlaintext(b []byte, c *Claims, otn *[otnLen]byte) []byte {
	b = binary.AppendUvarint(b, uint64(c.AppID))
	b = binary.AppendUvarint(b, c.ActID)
	b = appendString(b, c.ActivityID)
	b = appendString(b, c.SceneID)
	b = binary.AppendUvarint(b, c.RainID)
	b = appendString(b, c.AwardType)
	b = append(b, byte(c.Stage))
	b = binary.AppendVarint(b, c.Amount)
	b = binary.AppendVarint(b, c.OpenTime)
	return append(b, otn[:]...)
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// Open authenticates and decodes a token of version 2, or of version 1 (then
// it sets Legacy and checks the out_trade_no against the legacy key). It
// returns ErrMalformed for text that is not a token of this format,
// ErrUnknownKey for a key id the ring does not hold, and ErrForged when the
// tag, the synthetic nonce or the out_trade_no does not match. Open never
// panics, whatever token holds.
func (r *Ring) Open(token []byte) (Claims, error) {
	if len(token) > TokenLenMax || len(token) < encodingOpen.EncodedLen(rawLenMin) {
		return Claims{}, ErrMalformed
	}
	// The decoder skips CR and LF even when strict; refuse them so that
	// every token has exactly one text form.
	if bytes.IndexByte(token, '\n') >= 0 || bytes.IndexByte(token, '\r') >= 0 {
		return Claims{}, ErrMalformed
	}
	s := r.scratch.Get().(*scratch)
	c, err := r.open(s, token)
	r.scratch.Put(s)
	return c, err
}

func (r *Ring) open(s *scratch, token []byte) (Claims, error) {
	n, err := encodingOpen.Decode(s.text[:], token)
	if err != nil || n < rawLenMin || n > rawLenMax {
		return Claims{}, ErrMalformed
	}
	raw := s.text[:n]
	var legacy bool
	switch raw[0] {
	case tokenVersion:
	case tokenVersionLegacy:
		legacy = true
	default:
		return Claims{}, ErrMalformed
	}
	id := binary.BigEndian.Uint16(raw[1:headerLen])
	i := r.keyIndex(id)
	if i < 0 {
		return Claims{}, ErrUnknownKey
	}
	header := raw[:headerLen]
	nonce := raw[headerLen : headerLen+nonceLen]
	pt, err := r.keys[i].aead.Open(s.pt[:0], nonce, raw[headerLen+nonceLen:], header)
	if err != nil {
		return Claims{}, ErrForged
	}
	if subtle.ConstantTimeCompare(s.siv(r, i, header, pt), nonce) != 1 {
		return Claims{}, ErrForged
	}
	c, otn, ok := s.decodePlaintext(pt)
	if !ok {
		return Claims{}, ErrMalformed
	}
	c.Legacy = legacy
	if outTradeNoSum(&c) != otn {
		return Claims{}, ErrForged
	}
	c.KeyID = id
	return c, nil
}

func (r *Ring) keyIndex(id uint16) int {
	for i := range r.keys {
		if r.keys[i].id == id {
			return i
		}
	}
	return -1
}

// decodePlaintext decodes pt strictly: minimal varints, bounded strings, a
// known stage and no trailing bytes. The string claims and out_trade_no share
// one allocation.
func (s *scratch) decodePlaintext(pt []byte) (c Claims, otn [otnLen]byte, ok bool) {
	d := decoder{b: pt}
	appID := d.uvarint()
	c.ActID = d.uvarint()
	activity := d.bytes()
	scene := d.bytes()
	c.RainID = d.uvarint()
	award := d.bytes()
	stage := d.byte()
	c.Amount = d.varint()
	c.OpenTime = d.varint()
	otnRaw := d.fixed(otnLen)
	if d.bad || len(d.b) != 0 || appID > math.MaxUint32 || stage >= stageCount {
		return Claims{}, otn, false
	}
	c.AppID = uint32(appID)
	c.Stage = Stage(stage)
	otn = [otnLen]byte(otnRaw)

	b := append(s.strs[:0], activity...)
	b = append(b, scene...)
	b = append(b, award...)
	b = hex.AppendEncode(b, otn[:])
	all := string(b)
	c.ActivityID, all = all[:len(activity)], all[len(activity):]
	c.SceneID, all = all[:len(scene)], all[len(scene):]
	c.AwardType, c.OutTradeNo = all[:len(award)], all[len(award):]
	return c, otn, true
}

// decoder reads plaintext fields; after the first failure bad is set and
// every read returns a zero value.
type decoder struct {
	b   []byte
	bad bool
}

func (d *decoder) uvarint() uint64 {
	if d.bad {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	// n <= 0: truncated or overflowing. A last byte of zero after the first
	// is a non-minimal encoding, which would give a second token for the
	// same claims.
	if n <= 0 || (n > 1 && d.b[n-1] == 0) {
		d.bad = true
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	u := d.uvarint()
	return int64(u>>1) ^ -int64(u&1) // zigzag, as binary.AppendVarint
}

func (d *decoder) byte() byte {
	if d.bad || len(d.b) < 1 {
		d.bad = true
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.bad || n > StringLenMax {
		d.bad = true
		return nil
	}
	return d.fixed(int(n))
}

func (d *decoder) fixed(n int) []byte {
	if d.bad || len(d.b) < n {
		d.bad = true
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}
