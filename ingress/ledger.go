package ingress

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"hash/fnv"
	"strconv"

	"github.com/valyala/fasthttp"

	"redrain/booking"
	"redrain/errcode"
	"redrain/ledger"
)

// GET /v1/ledger/{act_id}?asset=&cursor=&limit= answers one page of an
// account's entries, newest first, with the monthly summaries of the
// months the page touches (ledger.ReadDetail). The account comes from the
// node's Ledger (the owner of its partition, or the store), older entries
// from its history chunks. The cursor names "the entries before index N"
// of this account and filter: an entry's index never changes, so the next
// page is the same whatever was booked meanwhile. The app rules are the
// wallet's (apps.go).

// ledgerAssetLenMax bounds the asset parameter (campaign ids are short).
const ledgerAssetLenMax = 128

// ledgerQuery is a validated request; before is 0 until the account is
// read when the request carries no cursor (its first page).
type ledgerQuery struct {
	actID  uint64
	asset  ledger.Asset
	cursor bool
	before uint64
	limit  int
}

func (s *Server) ledgerDetail(ctx *fasthttp.RequestCtx, idText []byte) {
	app, ok := s.appOf(ctx)
	if !ok {
		return
	}
	q, e := parseLedgerQuery(idText, ctx.QueryArgs())
	if e != nil {
		writeError(ctx, e)
		return
	}
	c, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	accounts, err := s.Ledger.Accounts(c, []uint64{q.actID})
	if err != nil {
		writeError(ctx, unavailable(err))
		return
	}
	acct := accounts[q.actID]
	if app != 0 && acct != nil && !holdsApp(acct, app) {
		writeError(ctx, errNotReached(q.actID, app, acct))
		return
	}
	if acct == nil {
		if e := s.handedOut(c, q.actID); e != nil {
			writeError(ctx, e)
			return
		}
		acct = &ledger.Account{ActID: q.actID}
	}
	if q.asset != "" && !knownAsset(acct, q.asset) {
		writeError(ctx, errcode.Errorf(errcode.CodeMalformed, "asset %q: act_id %d never held it", q.asset, q.actID))
		return
	}
	if !q.cursor {
		q.before = acct.EntryCount()
	} else if q.before > acct.EntryCount() {
		writeError(ctx, errcode.Errorf(errcode.CodeMalformed, "cursor: not one this route gave for act_id %d", q.actID))
		return
	}
	d, err := booking.Detail(c, s.TiKV, acct, ledger.DetailQuery{Asset: q.asset, Before: q.before, Limit: q.limit}, nil)
	switch {
	case errors.Is(err, ledger.ErrInvariant), errors.Is(err, ledger.ErrCorrupt):
		writeError(ctx, errcode.Errorf(errcode.CodeInternal, "ledger of act_id %d: %v", q.actID, err))
		return
	case err != nil:
		writeError(ctx, unavailable(err))
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, appendLedgerPage(nil, q, d))
}

// handedOut answers whether an account with no record yet exists: nil if
// its id was handed out (it holds nothing yet), else 404 not_found, or
// unavailable. (The wallet asks the same; it can call this once its
// handler's restructuring has landed.)
func (s *Server) handedOut(c context.Context, actID uint64) *errcode.Error {
	next, err := ActIDsAllocated(c, s.TiKV)
	switch {
	case err != nil:
		return unavailable(err)
	case actID >= next:
		return errcode.Errorf(errcode.CodeNotFound, "no account %d", actID)
	}
	return nil
}

// parseLedgerQuery validates everything but what needs the account: each
// parameter at most once, no other parameter, a positive act_id, limit in
// 1..100 (default 20), an asset of a known form, a cursor of this act_id
// and asset.
func parseLedgerQuery(idText []byte, args *fasthttp.Args) (ledgerQuery, *errcode.Error) {
	q := ledgerQuery{limit: ledger.DetailLimitDefault}
	var err error
	if q.actID, err = strconv.ParseUint(string(idText), 10, 64); err != nil || q.actID == 0 {
		return q, errcode.Errorf(errcode.CodeMalformed, "act_id %q: want a positive integer", idText)
	}
	seen := map[string]bool{}
	var cursor []byte
	for k, v := range args.All() {
		name := string(k)
		if seen[name] {
			return q, errcode.Errorf(errcode.CodeMalformed, "query parameter %q given twice", name)
		}
		seen[name] = true
		switch name {
		case "asset":
			if !validAsset(v) {
				return q, errcode.Errorf(errcode.CodeMalformed, "asset %q: want cash, coin:{currency} or item:{template}", v)
			}
			q.asset = ledger.Asset(v)
		case "limit":
			n, err := strconv.Atoi(string(v))
			if err != nil || n < 1 || n > ledger.DetailLimitMax || strconv.Itoa(n) != string(v) {
				return q, errcode.Errorf(errcode.CodeMalformed, "limit %q: want an integer from 1 to %d", v, ledger.DetailLimitMax)
			}
			q.limit = n
		case "cursor":
			cursor = v
		default:
			return q, errcode.Errorf(errcode.CodeMalformed, "unknown query parameter %q (asset, cursor, limit)", name)
		}
	}
	if seen["cursor"] {
		before, ok := decodeLedgerCursor(cursor, q.actID, q.asset)
		if !ok {
			return q, errcode.Errorf(errcode.CodeMalformed, "cursor %q: not one this route gave for act_id %d and this asset filter", cursor, q.actID)
		}
		q.cursor, q.before = true, before
	}
	return q, nil
}

// validAsset: cash, or coin: or item: and an id (letters, digits, '.',
// '-'), as campaigns name them.
func validAsset(v []byte) bool {
	a := ledger.Asset(v)
	if len(v) > ledgerAssetLenMax || a.Kind() == "" {
		return false
	}
	if a == ledger.AssetCash {
		return true
	}
	for _, c := range v[len("coin:"):] { // "item:" is as long
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// knownAsset: the account holds (or held) asset. Not the catalog's
// assets: a read node has none, and a page must not depend on which node
// answers it.
func knownAsset(acct *ledger.Account, asset ledger.Asset) bool {
	for _, b := range acct.Balances {
		if b.Asset == asset {
			return true
		}
	}
	return false
}

// A cursor is base64url (no padding) of a version byte, the index the next
// page starts below (uvarint) and a 32-bit tag of the act_id, the asset
// filter and that index, so that a cursor altered, or used for another
// account or filter, is refused rather than answered with other entries.
const ledgerCursorVersion = 1

func ledgerCursorTag(actID uint64, asset ledger.Asset, before uint64) uint32 {
	h := fnv.New32a()
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], actID)
	binary.BigEndian.PutUint64(b[8:], before)
	h.Write(b[:])
	h.Write([]byte(asset))
	return h.Sum32()
}

func appendLedgerCursor(dst []byte, actID uint64, asset ledger.Asset, before uint64) []byte {
	raw := []byte{ledgerCursorVersion}
	raw = binary.AppendUvarint(raw, before)
	raw = binary.BigEndian.AppendUint32(raw, ledgerCursorTag(actID, asset, before))
	return base64.RawURLEncoding.AppendEncode(dst, raw)
}

func decodeLedgerCursor(text []byte, actID uint64, asset ledger.Asset) (uint64, bool) {
	if len(text) > 32 {
		return 0, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(string(text))
	if err != nil || len(raw) < 6 || raw[0] != ledgerCursorVersion {
		return 0, false
	}
	before, n := binary.Uvarint(raw[1:])
	if n <= 0 || 1+n+4 != len(raw) || before == 0 {
		return 0, false
	}
	if string(appendLedgerCursor(nil, actID, asset, before)) != string(text) {
		return 0, false // the tag, or a non-canonical form
	}
	return before, true
}

// appendLedgerPage appends the JSON answer.
func appendLedgerPage(b []byte, q ledgerQuery, d *ledger.Detail) []byte {
	b = append(b, `{"act_id":`...)
	b = strconv.AppendUint(b, q.actID, 10)
	b = append(b, `,"asset":`...)
	if q.asset == "" {
		b = append(b, "null"...)
	} else {
		b = errcode.AppendJSONString(b, string(q.asset))
	}
	b = append(b, `,"entries":[`...)
	for i, e := range d.Entries {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"index":`...)
		b = strconv.AppendUint(b, e.Index, 10)
		b = append(b, `,"asset":`...)
		b = errcode.AppendJSONString(b, string(e.Asset))
		b = append(b, `,"kind":`...)
		b = errcode.AppendJSONString(b, e.Asset.Kind())
		b = append(b, `,"amount":`...)
		b = strconv.AppendInt(b, e.Amount, 10)
		b = append(b, `,"award_type":`...)
		b = errcode.AppendJSONString(b, e.AwardType)
		b = append(b, `,"out_trade_no":`...)
		b = errcode.AppendJSONString(b, e.TradeNo())
		b = append(b, `,"booked_at":`...)
		b = strconv.AppendInt(b, e.BookedAt, 10)
		b = append(b, '}')
	}
	b = append(b, `],"months":[`...)
	for i, m := range d.Months {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"month":"`...)
		b = append(b, m.Month.String()...)
		b = append(b, `","asset":`...)
		b = errcode.AppendJSONString(b, string(m.Asset))
		b = append(b, `,"kind":`...)
		b = errcode.AppendJSONString(b, m.Asset.Kind())
		b = append(b, `,"income":`...)
		b = strconv.AppendInt(b, m.Income, 10)
		b = append(b, `,"expense":`...)
		b = strconv.AppendInt(b, m.Expense, 10)
		b = append(b, '}')
	}
	b = append(b, `],"next_cursor":`...)
	if d.More {
		b = append(b, '"')
		b = appendLedgerCursor(b, q.actID, q.asset, d.Next)
		b = append(b, '"')
	} else {
		b = append(b, "null"...)
	}
	return append(b, '}')
}
