package ingress

// The wire form of the spending routes (POST /v1/coins/recharge and
// /v1/spend/{consume,refund,reverse,transfer,gift,expire}), under the rules
// of wire.go.

import (
	"errors"
	"strconv"

	"redrain/errcode"
	"redrain/ledger"
	"redrain/spend"
)

// The fields of each operation's body, required ones first: every body
// has request_id, app_id, act_id and amount.
var spendFields = [...]struct {
	names    []string
	required int
}{
	spend.OpRecharge: {[]string{"request_id", "app_id", "act_id", "amount", "currency"}, 5},
	spend.OpConsume:  {[]string{"request_id", "app_id", "act_id", "amount", "asset", "merchant_id"}, 6},
	spend.OpRefund:   {[]string{"request_id", "app_id", "act_id", "amount", "asset", "merchant_id", "consumption_id"}, 7},
	spend.OpReverse:  {[]string{"request_id", "app_id", "act_id", "amount", "asset", "merchant_id", "consumption_id"}, 7},
	spend.OpTransfer: {[]string{"request_id", "app_id", "act_id", "amount", "asset", "to_act_id"}, 6},
	spend.OpGift:     {[]string{"request_id", "app_id", "act_id", "amount", "asset", "to_act_id"}, 6},
	spend.OpExpire:   {[]string{"request_id", "app_id", "act_id", "amount", "asset", "budget_id"}, 5},
}

// assetBytesMax bounds an asset's name: a prefix and an id.
const assetBytesMax = len("item:") + spend.IDLenMax

// ParseSpendRequest parses the body of op's route, such as POST
// /v1/spend/consume: {"request_id": "o-17", "app_id": 3, "act_id": 42,
// "amount": 30, "asset": "coin:gold", "merchant_id": "shop-1"}.
//
// Fields by operation (all required but budget_id):
//
//	recharge   request_id, app_id, act_id, amount, currency
//	consume    request_id, app_id, act_id, amount, asset, merchant_id
//	refund     ... asset, merchant_id, consumption_id
//	reverse    as refund (amount: the whole consumption)
//	transfer   request_id, app_id, act_id, amount, asset, to_act_id
//	gift       as transfer
//	expire     request_id, app_id, act_id, amount, asset[, budget_id]
//
// Fields are in any order, each once; integers are plain JSON integers
// (app_id up to 2^32-1, act_id and to_act_id up to 2^64-1, amount up to
// spend.AmountMax); strings follow the string rules of ParseGrantRequest,
// and ids are 1..64 bytes of [A-Za-z0-9._-] (spend.Validate's rules, as
// are which assets each operation moves). Every error is an
// *errcode.Error: errcode.CodeTooLarge past BodyBytesMax, else
// errcode.CodeMalformed naming the field.
func ParseSpendRequest(op spend.Op, body []byte) (spend.Request, error) {
	r := spend.Request{Op: op}
	if int(op) >= len(spendFields) || spendFields[op].names == nil {
		return r, errcode.Errorf(errcode.CodeInternal, "no spending operation %d", op)
	}
	if len(body) > BodyBytesMax {
		return r, errTooLarge(len(body), BodyBytesMax)
	}
	fields := spendFields[op]
	s := scanner{buf: body}
	s.skipSpace()
	var text [assetBytesMax + 1]byte
	str := func(name string, limit int) (string, *errcode.Error) {
		if s.peek() != '"' {
			return "", errcode.Errorf(errcode.CodeMalformed, "field %q: want a string", name)
		}
		v, _, problem := s.appendString(text[:0], limit)
		if problem != "" {
			return "", errcode.Errorf(errcode.CodeMalformed, "field %q: %s", name, s.describe(problem, limit))
		}
		return string(v), nil
	}
	err := s.object(fields.names, fields.required, func(f int) *errcode.Error {
		name := fields.names[f]
		var err *errcode.Error
		var v uint64
		switch name {
		case "request_id":
			r.RequestID, err = str(name, spend.IDLenMax)
		case "app_id":
			v, err = s.positiveInt(name, 1<<32-1)
			r.AppID = uint32(v)
		case "act_id":
			r.ActID, err = s.positiveInt(name, 1<<64-1)
		case "to_act_id":
			r.ToActID, err = s.positiveInt(name, 1<<64-1)
		case "amount":
			v, err = s.positiveInt(name, spend.AmountMax)
			r.Amount = int64(v)
		case "currency":
			var c string
			c, err = str(name, spend.IDLenMax)
			if err == nil && !spend.CheckID(c) {
				err = errcode.Errorf(errcode.CodeMalformed, "field %q: want 1..%d bytes of [A-Za-z0-9._-]", name, spend.IDLenMax)
			}
			r.Asset = ledger.CoinAsset(c)
		case "asset":
			var a string
			a, err = str(name, assetBytesMax)
			r.Asset = ledger.Asset(a)
		case "merchant_id":
			r.MerchantID, err = str(name, spend.IDLenMax)
		case "consumption_id":
			r.Consumption, err = str(name, spend.IDLenMax)
		case "budget_id":
			r.BudgetID, err = str(name, spend.IDLenMax)
		}
		return err
	})
	if err == nil {
		err = s.end()
	}
	if err != nil {
		return spend.Request{Op: op}, err
	}
	if err := spend.Validate(&r); err != nil {
		var ie *spend.InvalidError
		if errors.As(err, &ie) {
			return spend.Request{Op: op}, errcode.Errorf(errcode.CodeMalformed, "field %q: %s", ie.Field, ie.Reason)
		}
		return spend.Request{Op: op}, errcode.Errorf(errcode.CodeMalformed, "%v", err)
	}
	return r, nil
}

// SpendFailure is the answer to an outcome that was not booked: nil when
// it was.
func SpendFailure(o *spend.Outcome) *errcode.Error {
	r := &o.Request
	switch o.Failure() {
	case 0:
		return nil
	case ledger.MoveInsufficient:
		return errcode.Errorf(errcode.CodeInsufficientFunds, "act_id %d holds less than %d of %s; nothing changed", r.ActID, r.Amount, r.Asset)
	case ledger.MoveKeyReused:
		return errcode.Errorf(errcode.CodeRequestIDReused, "request_id %q of app %d was used for another request; nothing changed", r.RequestID, r.AppID)
	case ledger.MoveRefused:
		if r.Op == spend.OpRefund {
			return errcode.Errorf(errcode.CodeRefundExceeds, "act_id %d: consumption %q of %s at merchant %q has less than %d left to refund, or is not there; nothing changed", r.ActID, r.Consumption, r.Asset, r.MerchantID, r.Amount)
		}
		if r.Op == spend.OpReverse {
			return errcode.Errorf(errcode.CodeRefundExceeds, "act_id %d: consumption %q of %d %s at merchant %q is not there whole (partly refunded, reversed, or another amount, asset or merchant); nothing changed", r.ActID, r.Consumption, r.Amount, r.Asset, r.MerchantID)
		}
	}
	return errcode.Errorf(errcode.CodeInternal, "booking refused %s %q (result %d)", r.Op, r.RequestID, o.Failure())
}

// AppendSpendOutcome appends the answer to a booked request:
//
//	{"request_id":"o-17","operation":"consume","moves":[{"act_id":42,
//	 "kind":"consume","key":"3:o-17","asset":"coin:gold","amount":-30,
//	 "counter":"merchant/shop-1","balance":70}]}
//
// with one move, or two for a transfer or gift (the sender's, then the
// receiver's). A move's amount is signed (what it changed on the
// account); balance is the account's balance in the asset, read after
// the request was booked.
func AppendSpendOutcome(dst []byte, o *spend.Outcome) []byte {
	dst = append(dst, `{"request_id":`...)
	dst = errcode.AppendJSON(dst, o.Request.RequestID)
	dst = append(dst, `,"operation":`...)
	dst = errcode.AppendJSON(dst, o.Request.Op.String())
	dst = append(dst, `,"moves":[`...)
	for i := range o.Moves {
		b := &o.Moves[i]
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"act_id":`...)
		dst = strconv.AppendUint(dst, b.Move.ActID, 10)
		dst = append(dst, `,"kind":`...)
		dst = errcode.AppendJSON(dst, b.Move.Kind.String())
		dst = append(dst, `,"key":`...)
		dst = errcode.AppendJSON(dst, b.Move.Key)
		dst = append(dst, `,"asset":`...)
		dst = errcode.AppendJSON(dst, string(b.Move.Legs[0].Asset))
		dst = append(dst, `,"amount":`...)
		dst = strconv.AppendInt(dst, b.Move.Legs[0].Amount, 10)
		dst = append(dst, `,"counter":`...)
		dst = errcode.AppendJSON(dst, b.Move.Counter)
		dst = append(dst, `,"balance":`...)
		dst = strconv.AppendInt(dst, b.Balance, 10)
		dst = append(dst, '}')
	}
	return append(dst, "]}"...)
}
