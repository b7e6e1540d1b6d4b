// Package errcode is the table of client-visible error codes: every
// failure a client of the HTTP API (public or admin) can see has one stable
// code, one HTTP status and one answer to "may I retry?", and is written as
// {"code": "...", "message": "..."}. It holds no business rule and decides
// nothing by an error's text.
package errcode

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/valyala/fasthttp"
)

// Code is a stable, client-visible error code. Clients switch on it, so a
// code is never renamed or reused for another meaning; add a new one instead.
//
// Code also implements error, so that a caller can ask
// errors.Is(err, CodeMalformed) of any error chain holding an *Error.
type Code string

// The error table. Every client-visible failure has exactly one of these
// codes; Status maps each to its HTTP status and Retryable says whether the
// same request may succeed later.
const (
	CodeMalformed          Code = "malformed_request"    // 400: bad JSON, wrong types, unknown or duplicate fields, missing required fields
	CodeTooLarge           Code = "request_too_large"    // 413
	CodeUnknownActivity    Code = "unknown_activity"     // 404
	CodeUnknownRain        Code = "unknown_rain"         // 404
	CodeNotEligible        Code = "not_eligible"         // 403: the activity is not published to this user, or no stage admits them
	CodeUnauthorized       Code = "unauthorized"         // 401: admin or app request unsigned, altered, expired or replayed
	CodeForbidden          Code = "forbidden"            // 403: the signing app does not reach this user, token or account
	CodeInvalidConfig      Code = "invalid_config"       // 422: an activity version that does not validate
	CodeConflict           Code = "conflict"             // 409: the configuration changed meanwhile; retry
	CodeRainClosed         Code = "rain_closed"          // 409
	CodeBudgetExhausted    Code = "budget_exhausted"     // 409
	CodeGrantInProgress    Code = "grant_in_progress"    // 409, retryable
	CodeInvalidToken       Code = "invalid_token"        // 400
	CodeNotFound           Code = "not_found"            // 404 (unknown route / resource)
	CodeMethodNotAllowed   Code = "method_not_allowed"   // 405
	CodeUnavailable        Code = "unavailable"          // 503, retryable (backend down, not ready)
	CodeInternal           Code = "internal"             // 500
	CodeAlreadyBound       Code = "already_bound"        // 409: the app user is bound to another act_id
	CodeTooManyIdentities  Code = "too_many_identities"  // 409: the account holds as many app identities as it may
	CodeRecordReadable     Code = "record_readable"      // 409: park refused: booking can read the record and does not wait at it, so its grants must be booked
	CodeRateLimited        Code = "rate_limited"         // 429, retryable (Retry-After: until a token is back)
	CodeShed               Code = "shed"                 // 503, retryable: refused by the operator's shed percentage
	CodeRainSwitchedOff    Code = "rain_switched_off"    // 503, retryable: the operator switched the rain or activity off
	CodeUnknownLine        Code = "unknown_line"         // 404: a sync notice for a business line this node does not configure
	CodeInsufficientFunds  Code = "insufficient_funds"   // 409: a move would take a balance below zero; nothing changed
	CodeRequestIDReused    Code = "request_id_reused"    // 409: the request id was used before for another request; nothing changed
	CodeRefundExceeds      Code = "refund_exceeds"       // 409: a refund beyond what is left of its consumption, or a reversal of one that is not whole (or not there); nothing changed
	CodeUnknownChannel     Code = "unknown_channel"      // 400: a withdrawal names a payout channel the node does not configure
	CodeAmountOutOfRange   Code = "amount_out_of_range"  // 400: a withdrawal's amount is outside the configured minimum and maximum
	CodeWithdrawalNotFound Code = "withdrawal_not_found" // 404
)

// meta is the one table behind Status and Retryable. A code that is not in
// the table is treated as CodeInternal: a typo must not reach a client as a
// success or a client error.
func (c Code) meta() (status int, retryable bool) {
	switch c {
	case CodeMalformed:
		return 400, false
	case CodeTooLarge:
		return 413, false
	case CodeUnknownActivity:
		return 404, false
	case CodeUnknownRain, CodeUnknownLine, CodeWithdrawalNotFound:
		return 404, false
	case CodeNotEligible, CodeForbidden:
		return 403, false
	case CodeUnauthorized:
		return 401, false
	case CodeInvalidConfig:
		return 422, false
	case CodeConflict:
		return 409, true
	case CodeRainClosed:
		return 409, false
	case CodeBudgetExhausted:
		return 409, false
	case CodeGrantInProgress:
		return 409, true
	case CodeInvalidToken, CodeUnknownChannel, CodeAmountOutOfRange:
		return 400, false
	case CodeNotFound:
		return 404, false
	case CodeMethodNotAllowed:
		return 405, false
	case CodeUnavailable:
		return 503, true
	case CodeAlreadyBound, CodeTooManyIdentities, CodeRecordReadable:
		return 409, false
	case CodeInsufficientFunds, CodeRequestIDReused, CodeRefundExceeds:
		return 409, false
	case CodeRateLimited:
		return 429, true
	case CodeShed, CodeRainSwitchedOff:
		return 503, true
	default: // CodeInternal and anything not in the table.
		return 500, false
	}
}

// Status returns the HTTP status code that goes with c; a code missing from
// the table gets 500.
func (c Code) Status() int {
	status, _ := c.meta()
	return status
}

// Retryable reports whether a client may repeat the same request and expect
// it to succeed later (another grant for the same key still in flight, or a
// backend that is down or not ready yet).
func (c Code) Retryable() bool {
	_, retryable := c.meta()
	return retryable
}

// Error returns the code itself; it makes a Code usable as the target of
// errors.Is.
func (c Code) Error() string { return string(c) }

// Error is a client-visible failure: a code and a human message. The message
// is for people reading logs and responses; programs decide on Code.
type Error struct {
	Code    Code
	Message string
}

// Error returns "code: message".
func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Is reports whether target is e's Code, so errors.Is(err, CodeTooLarge)
// works through any wrapping.
func (e *Error) Is(target error) bool {
	c, ok := target.(Code)
	return ok && c == e.Code
}

// Errorf returns an *Error with code and a message formatted as by
// fmt.Sprintf.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// AppendError appends the JSON body {"code":"...","message":"..."} of e to
// dst, escaping both strings. A nil e is written as CodeInternal, so a
// handler bug still yields a well-formed body.
func AppendError(dst []byte, e *Error) []byte {
	if e == nil {
		e = &Error{Code: CodeInternal, Message: "internal error"}
	}
	dst = append(dst, `{"code":`...)
	dst = AppendJSON(dst, string(e.Code))
	dst = append(dst, `,"message":`...)
	dst = AppendJSON(dst, e.Message)
	return append(dst, '}')
}

// AppendJSONString appends s to dst as a quoted JSON string. It escapes '"',
// '\\', control characters below U+0020 and U+2028/U+2029 (which break
// JavaScript parsers), and writes each byte of invalid UTF-8 as U+FFFD, as
// encoding/json does, so the output is always valid JSON and valid UTF-8.
func AppendJSONString(dst []byte, s string) []byte {
	return AppendJSON(dst, s)
}

// AppendJSON is AppendJSONString for text held in a string or a []byte
// (tokens), without converting one to the other.
func AppendJSON[S string | []byte](dst []byte, s S) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	run := 0 // Start of the bytes not yet copied.
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[run:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			run = i
			continue
		}
		// At most UTFMax bytes are converted, which the compiler does on
		// the stack when S is []byte and not at all when S is string.
		r, size := utf8.DecodeRuneInString(string(s[i:min(i+utf8.UTFMax, len(s))]))
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[run:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[run:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		run = i
	}
	dst = append(dst, s[run:]...)
	return append(dst, '"')
}

// Write answers err as the table says: an *Error keeps its code, anything
// else is internal; a retryable code gets Retry-After: 1.
func Write(ctx *fasthttp.RequestCtx, err error) {
	e := As(err)
	if e.Code.Retryable() {
		ctx.Response.Header.Set("Retry-After", "1")
	}
	WriteJSON(ctx, e.Code.Status(), AppendError(nil, e))
}

// As returns err's *Error, or an internal one wrapping it.
func As(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return Errorf(CodeInternal, "%v", err)
}

// MethodNotAllowed answers 405 with the allowed methods.
func MethodNotAllowed(ctx *fasthttp.RequestCtx, allow string) {
	ctx.Response.Header.Set("Allow", allow)
	Write(ctx, Errorf(CodeMethodNotAllowed, "use %s", allow))
}

// WriteJSON answers a JSON body with status.
func WriteJSON(ctx *fasthttp.RequestCtx, status int, body []byte) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(body)
}
