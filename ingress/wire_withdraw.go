package ingress

// The wire form of POST /v1/withdrawals and of a withdrawal's answer,
// under the rules of wire.go.

import (
	"strconv"
	"unicode/utf8"

	"redrain/errcode"
	"redrain/withdraw"
)

// WithdrawRequest asks to pay Amount fen of ActID's cash out through
// Channel; RequestID is the app's idempotency key.
type WithdrawRequest struct {
	ActID     uint64 // Invariant: >= 1.
	Amount    int64  // fen; Invariant: 1..WithdrawAmountMax.
	Channel   string // Invariant: as GrantRequest.UserID.
	RequestID string // Invariant: as GrantRequest.UserID.
}

// WithdrawAmountMax bounds the amount field; the node's configured
// maximum is checked after parsing (amount_out_of_range).
const WithdrawAmountMax = 1 << 53

// The fields of a withdrawal request, all required.
var withdrawFieldNames = []string{"act_id", "amount", "channel", "request_id"}

// ParseWithdrawRequest parses {"act_id": 17, "amount": 500, "channel":
// "bank", "request_id": "w-1"}: every field required, in any order, each
// once; act_id in 1..2^64-1, amount in 1..WithdrawAmountMax, channel and
// request_id IDs (IDLenMax), under the rules of ParseGrantRequest. Every
// error is an *errcode.Error: errcode.CodeTooLarge past BodyBytesMax, else
// errcode.CodeMalformed naming the field.
func ParseWithdrawRequest(body []byte) (WithdrawRequest, error) {
	var r WithdrawRequest
	if len(body) > BodyBytesMax {
		return r, errTooLarge(len(body), BodyBytesMax)
	}
	s := scanner{buf: body}
	s.skipSpace()
	var text [2 * (IDLenMax + utf8.UTFMax)]byte
	var channel, request []byte
	err := s.object(withdrawFieldNames, len(withdrawFieldNames), func(f int) *errcode.Error {
		var err *errcode.Error
		var v uint64
		switch f {
		case 0:
			r.ActID, err = s.positiveInt(withdrawFieldNames[f], 1<<64-1)
		case 1:
			v, err = s.positiveInt(withdrawFieldNames[f], WithdrawAmountMax)
			r.Amount = int64(v)
		case 2:
			channel, err = s.id(text[:0], withdrawFieldNames[f])
		default:
			request, err = s.id(text[IDLenMax+utf8.UTFMax:IDLenMax+utf8.UTFMax], withdrawFieldNames[f])
		}
		return err
	})
	if err == nil {
		err = s.end()
	}
	if err != nil {
		return WithdrawRequest{}, err
	}
	r.Channel, r.RequestID = string(channel), string(request)
	return r, nil
}

// AppendWithdrawal appends a withdrawal as the API shows it:
// {"id","app_id","request_id","act_id","amount","channel","state",
// "attempts","channel_ref","last_error","created_at","held_at",
// "paying_at","done_at","updated_at"} (times in unix ms, 0 when not
// reached; channel_ref and last_error "" when none).
func AppendWithdrawal(dst []byte, r *withdraw.Record) []byte {
	dst = append(dst, `{"id":`...)
	dst = errcode.AppendJSON(dst, r.ID)
	dst = append(dst, `,"app_id":`...)
	dst = strconv.AppendUint(dst, uint64(r.AppID), 10)
	dst = append(dst, `,"request_id":`...)
	dst = errcode.AppendJSON(dst, r.RequestID)
	dst = append(dst, `,"act_id":`...)
	dst = strconv.AppendUint(dst, r.ActID, 10)
	dst = append(dst, `,"amount":`...)
	dst = strconv.AppendInt(dst, r.Amount, 10)
	dst = append(dst, `,"channel":`...)
	dst = errcode.AppendJSON(dst, r.Channel)
	dst = append(dst, `,"state":`...)
	dst = errcode.AppendJSON(dst, string(r.State))
	dst = append(dst, `,"attempts":`...)
	dst = strconv.AppendInt(dst, int64(r.Attempts), 10)
	dst = append(dst, `,"channel_ref":`...)
	dst = errcode.AppendJSON(dst, r.ChannelRef)
	dst = append(dst, `,"last_error":`...)
	dst = errcode.AppendJSON(dst, r.LastError)
	for _, t := range []struct {
		name string
		ms   int64
	}{{"created_at", r.CreatedAt}, {"held_at", r.HeldAt}, {"paying_at", r.PayingAt}, {"done_at", r.DoneAt}, {"updated_at", r.UpdatedAt}} {
		dst = append(dst, `,"`...)
		dst = append(dst, t.name...)
		dst = append(dst, `":`...)
		dst = strconv.AppendInt(dst, t.ms, 10)
	}
	return append(dst, '}')
}
