package ledger

import (
	"encoding/binary"
	"math/bits"

	"redrain/tokens"
)

// A version 3 grant record is protocol buffers: message redrain.v1.GrantRecord
// of schema/grant.proto, so any protobuf tool reads it (`protoc --decode
// redrain.v1.GrantRecord schema/grant.proto`). It is written and read here by
// hand, field by field, without the protobuf runtime: on the grant path a
// record costs what the version 2 layout cost, and nothing is allocated to
// encode it.
//
// Its first field is the version (field 1, varint 3), so its first byte is
// that field's tag, 0x08. Versions 1 and 2 start with their version byte, 1
// or 2, which no protobuf message can start with (they would be tags of
// field 0, which does not exist): the first byte tells the three apart.
//
// The encoding is canonical, as every protobuf library writes it: fields in
// the order of their numbers, a scalar field left out when it is zero (proto3
// implicit presence), varints minimal. The decoder accepts that encoding
// only (a field out of order, repeated, unknown, present with its zero value
// or of the wrong wire type is ErrCorrupt), so an accepted record re-encodes
// to its own bytes. Strings are written as they are: the API admits only
// UTF-8 ids.

// grantRecordVersionProto is the version field of a version 3 record.
const grantRecordVersionProto = 3

// Wire types and the tags of schema/grant.proto.
const (
	wireVarint = 0
	wireBytes  = 2

	protoRecordVersion = 1 // GrantRecord.version
	protoRecordGrants  = 2 // GrantRecord.grants

	// Grant's fields, in number order.
	protoAppID      = 1
	protoActID      = 2
	protoUserID     = 3
	protoActivityID = 4
	protoSceneID    = 5
	protoRainID     = 6
	protoStage      = 7
	protoAwardType  = 8
	protoAsset      = 9
	protoAmount     = 10
	protoBudgetID   = 11
	protoLeaseID    = 12
	protoOpenTime   = 13
	protoIssuedAt   = 14
	protoLegacyKeys = 15
	protoGrantLast  = protoLegacyKeys
)

// tagVersionProto is the first byte of every version 3 record.
const tagVersionProto = protoRecordVersion<<3 | wireVarint

func protoTag(field, wire byte) byte { return field<<3 | wire }

// appendGrantRecordProto appends a version 3 record of gs.
func appendGrantRecordProto(dst []byte, gs []Grant) []byte {
	dst = append(dst, tagVersionProto, grantRecordVersionProto)
	for i := range gs {
		// The grant's length goes before it: one byte is kept for it, and
		// the grant moves up in the rare case that it needs more (a grant
		// of 128 bytes or more: long ids).
		dst = append(dst, protoTag(protoRecordGrants, wireBytes), 0)
		at := len(dst)
		dst = appendGrantProto(dst, &gs[i])
		n := len(dst) - at
		if n < 0x80 {
			dst[at-1] = byte(n)
			continue
		}
		extra := uvarintLen(uint64(n)) - 1
		var pad [binary.MaxVarintLen64]byte
		dst = append(dst, pad[:extra]...)
		copy(dst[at+extra:], dst[at:at+n])
		binary.PutUvarint(dst[at-1:], uint64(n))
	}
	return dst
}

// uvarintLen is the length of v's varint.
func uvarintLen(v uint64) int { return (bits.Len64(v|1) + 6) / 7 }

// appendGrantProto appends g's fields as message redrain.v1.Grant.
func appendGrantProto(dst []byte, g *Grant) []byte {
	dst = appendProtoUint(dst, protoAppID, uint64(g.AppID))
	dst = appendProtoUint(dst, protoActID, g.ActID)
	dst = appendProtoString(dst, protoUserID, g.UserID)
	dst = appendProtoString(dst, protoActivityID, g.ActivityID)
	dst = appendProtoString(dst, protoSceneID, g.SceneID)
	dst = appendProtoUint(dst, protoRainID, g.RainID)
	dst = appendProtoUint(dst, protoStage, uint64(g.Stage))
	dst = appendProtoString(dst, protoAwardType, g.AwardType)
	dst = appendProtoString(dst, protoAsset, string(g.Asset))
	dst = appendProtoUint(dst, protoAmount, uint64(g.Amount))
	dst = appendProtoString(dst, protoBudgetID, g.BudgetID)
	dst = appendProtoUint(dst, protoLeaseID, g.LeaseID)
	dst = appendProtoUint(dst, protoOpenTime, uint64(g.OpenTime))
	dst = appendProtoUint(dst, protoIssuedAt, uint64(g.IssuedAt))
	if g.Legacy {
		dst = append(dst, protoTag(protoLegacyKeys, wireVarint), 1)
	}
	return dst
}

// appendProtoUint appends a varint field (uint32, uint64, int64 as its two's
// complement, an enum), or nothing when v is zero.
func appendProtoUint(dst []byte, field byte, v uint64) []byte {
	if v == 0 {
		return dst
	}
	return binary.AppendUvarint(append(dst, protoTag(field, wireVarint)), v)
}

// appendProtoString appends a string field, or nothing when s is empty.
func appendProtoString(dst []byte, field byte, s string) []byte {
	if s == "" {
		return dst
	}
	return appendString(append(dst, protoTag(field, wireBytes)), s)
}

// decodeGrantRecordProto decodes a version 3 record (src starts with
// tagVersionProto), appending its grants to dst.
func decodeGrantRecordProto(dst []Grant, src []byte) ([]Grant, error) {
	d := decoder{b: src}
	dst0 := len(dst)
	d.byte1("version tag")
	if v := d.uvarint("version"); d.err == nil && v != grantRecordVersionProto {
		d.fail("version")
	}
	for n := 0; len(d.b) > 0 && d.err == nil; n++ {
		if d.byte1("grant tag") != protoTag(protoRecordGrants, wireBytes) {
			d.fail("record field")
			break
		}
		if n == GrantsPerRecordMax {
			d.fail("grant count")
			break
		}
		size := d.uvarint("grant length")
		if d.err == nil && size > uint64(len(d.b)) {
			d.fail("grant length")
		}
		if d.err != nil {
			break
		}
		gd := decoder{b: d.b[:size]}
		d.b = d.b[size:]
		// Decoded in its place in dst, not copied there (a grant is
		// ~170 bytes, six strings among them).
		dst = append(dst, Grant{})
		g := &dst[len(dst)-1]
		var prev *Grant
		if len(dst)-1 > dst0 {
			prev = &dst[len(dst)-2]
		}
		gd.grantProto(g, prev)
		if gd.err == nil && g.Amount <= 0 {
			gd.fail("amount not positive")
		}
		d.err = gd.err
	}
	if d.err != nil {
		return dst[:dst0], d.err
	}
	return dst, nil
}

// grantText is g's text field of protobuf field number field, nil for a
// field that is not text.
func grantText(g *Grant, field byte) *string {
	switch field {
	case protoUserID:
		return &g.UserID
	case protoActivityID:
		return &g.ActivityID
	case protoSceneID:
		return &g.SceneID
	case protoAwardType:
		return &g.AwardType
	case protoAsset:
		return (*string)(&g.Asset)
	case protoBudgetID:
		return &g.BudgetID
	}
	return nil
}

// grantProto decodes the fields of one message redrain.v1.Grant (all of d).
// A text field equal to prev's (the record's grant before it, or nil)
// shares prev's string: a record's grants repeat their activity, scene,
// award type, asset and budget, and each string decoded is an object the
// collector marks for as long as an account holds it.
func (d *decoder) grantProto(g *Grant, prev *Grant) {
	last := byte(0)
	for len(d.b) > 0 && d.err == nil {
		tag := d.byte1("grant field")
		field, wire := tag>>3, tag&7
		// Every field number is below 16: its tag is one byte, and a
		// multi-byte tag is a field this version does not know.
		if tag&0x80 != 0 || field <= last || field > protoGrantLast {
			d.fail("grant field order")
			return
		}
		last = field
		if text := grantText(g, field); text != nil {
			if wire != wireBytes {
				d.fail("grant field wire type")
				return
			}
			var same string
			if prev != nil {
				same = *grantText(prev, field)
			}
			if *text = d.stringAs("grant string", same); d.err == nil && *text == "" {
				d.fail("grant string empty")
			}
			continue
		}
		if wire != wireVarint {
			d.fail("grant field wire type")
			return
		}
		v := d.uvarint("grant varint")
		if d.err == nil && v == 0 {
			d.fail("grant field zero")
		}
		switch field {
		case protoAppID:
			if v > 1<<32-1 {
				d.fail("app_id range")
			}
			g.AppID = uint32(v)
		case protoActID:
			g.ActID = v
		case protoRainID:
			g.RainID = v
		case protoStage:
			if v > uint64(tokens.StageInternal) {
				d.fail("stage")
			}
			g.Stage = tokens.Stage(v)
		case protoAmount:
			g.Amount = int64(v)
		case protoLeaseID:
			g.LeaseID = v
		case protoOpenTime:
			g.OpenTime = int64(v)
		case protoIssuedAt:
			g.IssuedAt = int64(v)
		case protoLegacyKeys:
			if v != 1 {
				d.fail("legacy_keys")
			}
			g.Legacy = true
		}
	}
}
