package ledger

import (
	"fmt"

	"redrain/tokens"
)

// Grant is one issued packet: the event the ingress hands to Kafka once its
// amount is taken from a budget lease, and what booking posts.
type Grant struct {
	AppID      uint32
	ActID      uint64
	UserID     string // the app's own user id, kept for the binding
	ActivityID string // the child activity whose budget paid
	SceneID    string
	RainID     uint64
	Stage      tokens.Stage
	AwardType  string
	Asset      Asset
	Amount     int64 // Invariant: > 0
	BudgetID   string
	LeaseID    uint64 // the lease the amount was taken from
	OpenTime   int64  // unix ms: the rain's start, sealed in the token
	IssuedAt   int64  // unix ms on the issuing node
	// Legacy marks a grant made before keys named the activity (a version 1
	// grant record, or a version 1 token being redeemed): its limit key,
	// idempotency key and out_trade_no are the legacy ones, so that it
	// dedupes against the account entry it was booked under before the
	// upgrade. Invariant: a grant issued now has Legacy false.
	Legacy bool
}

// LimitKey is the per-user limit: one packet per user, activity, scene,
// rain and stage whatever award was drawn (tokens.LimitKey, or
// tokens.LegacyLimitKey for a Legacy grant).
func (g *Grant) LimitKey() string {
	var buf [128]byte
	return string(g.AppendLimitKey(buf[:0]))
}

// AppendLimitKey appends g.LimitKey() to dst.
func (g *Grant) AppendLimitKey(dst []byte) []byte {
	if g.Legacy {
		return tokens.AppendLegacyLimitKey(dst, g.ActID, g.SceneID, g.RainID, g.Stage)
	}
	return tokens.AppendLimitKey(dst, g.ActID, g.ActivityID, g.SceneID, g.RainID, g.Stage)
}

// SameRain reports whether g's and o's limit keys differ at most in their
// act_id: what AppendLimitKey builds them from, compared field by field.
func (g *Grant) SameRain(o *Grant) bool {
	return g.Legacy == o.Legacy && g.SceneID == o.SceneID && g.RainID == o.RainID && g.Stage == o.Stage &&
		(g.Legacy || g.ActivityID == o.ActivityID)
}

// IdempotencyKey names this grant for exactly-once booking (the legacy key
// for a Legacy grant).
func (g *Grant) IdempotencyKey() string {
	if g.Legacy {
		return tokens.LegacyIdempotencyKey(g.ActID, g.SceneID, g.RainID, g.AwardType, g.Stage)
	}
	return tokens.IdempotencyKey(g.ActID, g.ActivityID, g.SceneID, g.RainID, g.AwardType, g.Stage)
}

// Claims returns what the grant's token seals; a Legacy grant's claims seal
// a version 1 token.
func (g *Grant) Claims() tokens.Claims {
	return tokens.Claims{
		AppID: g.AppID, ActID: g.ActID, ActivityID: g.ActivityID, SceneID: g.SceneID,
		RainID: g.RainID, AwardType: g.AwardType, Stage: g.Stage, Amount: g.Amount,
		OpenTime: g.OpenTime, Legacy: g.Legacy,
	}
}

// Grant record versions. A version 1 record was written before keys named
// the activity, and its grants decode as Legacy. A version 2 record carries
// one key-format byte before each grant (grantKeys*): a legacy grant is
// encoded again after the upgrade (booking re-encodes decoded grants, and a
// batch may mix both kinds), and must keep its keys, or it would book a
// second time under the new ones. Version 3 is the same grants as protocol
// buffers (grantproto.go, schema/grant.proto), the legacy flag a field of
// each grant. Nodes write version 3; versions 1 and 2, already on topics and
// in the store, decode for good.
const (
	grantRecordVersion       = 2
	grantRecordVersionLegacy = 1
)

// Key formats of a grant in a version 2 record.
const (
	grantKeysActivity byte = 0 // keys name the activity
	grantKeysLegacy   byte = 1 // Grant.Legacy: keys without the activity
)

// GrantsPerRecordMax bounds how many grants one Kafka record carries.
const GrantsPerRecordMax = 4096

// AppendGrant appends the binary encoding of g as a version 2 record holds
// it: its key format, then its fields (what version 1 journals hold, and
// DecodeGrant reads).
func AppendGrant(dst []byte, g *Grant) []byte {
	keys := grantKeysActivity
	if g.Legacy {
		keys = grantKeysLegacy
	}
	dst = append(dst, keys)
	dst = appendUvarint(dst, uint64(g.AppID))
	dst = appendUvarint(dst, g.ActID)
	dst = appendString(dst, g.UserID)
	dst = appendString(dst, g.ActivityID)
	dst = appendString(dst, g.SceneID)
	dst = appendUvarint(dst, g.RainID)
	dst = append(dst, byte(g.Stage))
	dst = appendString(dst, g.AwardType)
	dst = appendString(dst, string(g.Asset))
	dst = appendVarint(dst, g.Amount)
	dst = appendString(dst, g.BudgetID)
	dst = appendUvarint(dst, g.LeaseID)
	dst = appendVarint(dst, g.OpenTime)
	return appendVarint(dst, g.IssuedAt)
}

// grant decodes one grant of a record of the given version.
func (d *decoder) grant(g *Grant, version byte) {
	if version == grantRecordVersionLegacy {
		g.Legacy = true
	} else {
		d.keyFormat(g)
	}
	d.grantFields(g)
	if d.err == nil && g.Amount <= 0 {
		d.fail("amount not positive")
	}
}

// keyFormat decodes a version 2 grant's key-format byte.
func (d *decoder) keyFormat(g *Grant) {
	switch d.byte1("key format") {
	case grantKeysActivity:
	case grantKeysLegacy:
		g.Legacy = true
	default:
		d.fail("key format")
	}
}

// grantFields decodes a grant's fields after its key format.
func (d *decoder) grantFields(g *Grant) {
	g.AppID = d.appID()
	g.ActID = d.uvarint("act_id")
	g.UserID = d.string("user_id")
	g.ActivityID = d.string("activity_id")
	g.SceneID = d.string("scene_id")
	g.RainID = d.uvarint("rain_id")
	g.Stage = d.stage()
	g.AwardType = d.string("award_type")
	g.Asset = Asset(d.string("asset"))
	g.Amount = d.varint("amount")
	g.BudgetID = d.string("budget_id")
	g.LeaseID = d.uvarint("lease_id")
	g.OpenTime = d.varint("open_time")
	g.IssuedAt = d.varint("issued_at")
}

func (d *decoder) appID() uint32 {
	app := d.uvarint("app_id")
	if app > 1<<32-1 {
		d.fail("app_id range")
	}
	return uint32(app)
}

func (d *decoder) stage() tokens.Stage {
	s := tokens.Stage(d.byte1("stage"))
	if s > tokens.StageInternal {
		d.fail("stage")
	}
	return s
}

// AppendGrantRecord appends one Kafka record value holding grants, as a
// version 3 record (protocol buffers: message redrain.v1.GrantRecord of
// schema/grant.proto; Legacy grants included).
func AppendGrantRecord(dst []byte, gs []Grant) []byte {
	return appendGrantRecordProto(dst, gs)
}

// GrantRecordVersion returns the version of the grant record src (1, 2 or
// 3) by its first byte, or 0 when it is none of them. It does not decode
// the record.
func GrantRecordVersion(src []byte) int {
	switch {
	case len(src) == 0:
		return 0
	case src[0] == grantRecordVersionLegacy, src[0] == grantRecordVersion:
		return int(src[0])
	case src[0] == tagVersionProto:
		return grantRecordVersionProto
	}
	return 0
}

// DecodeGrantRecord decodes a record written by AppendGrantRecord (version
// 3), a version 2 record, or a version 1 record written before keys named
// the activity (its grants are Legacy), appending its grants to dst.
// Anything else is ErrCorrupt. On error it returns dst with its original
// length, so a caller cannot book part of a corrupt record.
func DecodeGrantRecord(dst []Grant, src []byte) ([]Grant, error) {
	if len(src) > 0 && src[0] == tagVersionProto {
		return decodeGrantRecordProto(dst, src)
	}
	d := decoder{b: src}
	dst0 := len(dst)
	v := d.byte1("version")
	if d.err == nil && v != grantRecordVersion && v != grantRecordVersionLegacy {
		return dst, fmt.Errorf("%w: grant record version %d", ErrCorrupt, v)
	}
	n := d.count("grant count")
	if n > GrantsPerRecordMax {
		d.fail("grant count")
	}
	for i := 0; i < n && d.err == nil; i++ {
		var g Grant
		d.grant(&g, v)
		dst = append(dst, g)
	}
	if err := d.end(); err != nil {
		return dst[:dst0], err
	}
	return dst, nil
}

func outTradeNo(g *Grant) string { return tokens.OutTradeNo(g.IdempotencyKey()) }

// entryStrings returns the text a grant's entry holds, its limit key
// (g.LimitKey()) and award type, as slices of one string: one object for
// the collector to mark per entry instead of two. The entry's
// out_trade_no is not among them: it derives from these two (TradeNo).
func entryStrings(g *Grant) (limitKey, award string) {
	var buf [256]byte
	b := g.AppendLimitKey(buf[:0])
	k := len(b)
	s := string(append(b, g.AwardType...))
	return s[:k], s[k:]
}

// OutTradeNo is the grant's trade number, derived from its idempotency key.
func (g *Grant) OutTradeNo() string { return outTradeNo(g) }

// DecodeGrant decodes one grant that AppendGrant wrote at the front of src,
// whatever its amount (a "no award" answer carries none), and returns how
// many bytes it took.
func DecodeGrant(src []byte) (Grant, int, error) {
	d := decoder{b: src}
	var g Grant
	d.grantAny(&g)
	if d.err != nil {
		return Grant{}, 0, d.err
	}
	return g, len(src) - len(d.b), nil
}
