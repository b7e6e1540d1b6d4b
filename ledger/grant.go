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
}

// LimitKey is the per-user limit: one packet per user, scene, rain and stage
// whatever award was drawn.
func (g *Grant) LimitKey() string {
	return tokens.LimitKey(g.ActID, g.SceneID, g.RainID, g.Stage)
}

// IdempotencyKey names this grant for exactly-once booking.
func (g *Grant) IdempotencyKey() string {
	return tokens.IdempotencyKey(g.ActID, g.SceneID, g.RainID, g.AwardType, g.Stage)
}

// Claims returns what the grant's token seals.
func (g *Grant) Claims() tokens.Claims {
	return tokens.Claims{
		AppID: g.AppID, ActID: g.ActID, ActivityID: g.ActivityID, SceneID: g.SceneID,
		RainID: g.RainID, AwardType: g.AwardType, Stage: g.Stage, Amount: g.Amount,
		OpenTime: g.OpenTime,
	}
}

// grantRecordVersion leads every encoded grant record.
const grantRecordVersion = 1

// GrantsPerRecordMax bounds how many grants one Kafka record carries.
const GrantsPerRecordMax = 4096

// AppendGrant appends the binary encoding of g.
func AppendGrant(dst []byte, g *Grant) []byte {
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

func (d *decoder) grant(g *Grant) {
	app := d.uvarint("app_id")
	if app > 1<<32-1 {
		d.fail("app_id range")
	}
	g.AppID = uint32(app)
	g.ActID = d.uvarint("act_id")
	g.UserID = d.string("user_id")
	g.ActivityID = d.string("activity_id")
	g.SceneID = d.string("scene_id")
	g.RainID = d.uvarint("rain_id")
	g.Stage = tokens.Stage(d.byte1("stage"))
	if g.Stage > tokens.StageInternal {
		d.fail("stage")
	}
	g.AwardType = d.string("award_type")
	g.Asset = Asset(d.string("asset"))
	g.Amount = d.varint("amount")
	g.BudgetID = d.string("budget_id")
	g.LeaseID = d.uvarint("lease_id")
	g.OpenTime = d.varint("open_time")
	g.IssuedAt = d.varint("issued_at")
	if d.err == nil && g.Amount <= 0 {
		d.fail("amount not positive")
	}
}

// AppendGrantRecord appends one Kafka record value holding grants.
func AppendGrantRecord(dst []byte, gs []Grant) []byte {
	dst = append(dst, grantRecordVersion)
	dst = appendUvarint(dst, uint64(len(gs)))
	for i := range gs {
		dst = AppendGrant(dst, &gs[i])
	}
	return dst
}

// DecodeGrantRecord decodes a record written by AppendGrantRecord, appending
// its grants to dst. On error it returns dst with its original length, so a
// caller cannot book part of a corrupt record.
func DecodeGrantRecord(dst []Grant, src []byte) ([]Grant, error) {
	d := decoder{b: src}
	dst0 := len(dst)
	if v := d.byte1("version"); d.err == nil && v != grantRecordVersion {
		return dst, fmt.Errorf("%w: grant record version %d", ErrCorrupt, v)
	}
	n := d.count("grant count")
	if n > GrantsPerRecordMax {
		d.fail("grant count")
	}
	for i := 0; i < n && d.err == nil; i++ {
		var g Grant
		d.grant(&g)
		dst = append(dst, g)
	}
	if err := d.end(); err != nil {
		return dst[:dst0], err
	}
	return dst, nil
}

func outTradeNo(g *Grant) string { return tokens.OutTradeNo(g.IdempotencyKey()) }

// OutTradeNo is the grant's trade number, derived from its idempotency key.
func (g *Grant) OutTradeNo() string { return outTradeNo(g) }
