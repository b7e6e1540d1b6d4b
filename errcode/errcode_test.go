package errcode

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
)

func TestCodeStatus(t *testing.T) {
	tests := []struct {
		code      Code
		status    int
		retryable bool
	}{
		{CodeMalformed, 400, false},
		{CodeTooLarge, 413, false},
		{CodeUnknownActivity, 404, false},
		{CodeUnknownRain, 404, false},
		{CodeUnknownLine, 404, false},
		{CodeInsufficientFunds, 409, false},
		{CodeUnknownChannel, 400, false},
		{CodeAmountOutOfRange, 400, false},
		{CodeRequestIDReused, 409, false},
		{CodeWithdrawalNotFound, 404, false},
		{CodeRainClosed, 409, false},
		{CodeBudgetExhausted, 409, false},
		{CodeGrantInProgress, 409, true},
		{CodeInvalidToken, 400, false},
		{CodeNotFound, 404, false},
		{CodeMethodNotAllowed, 405, false},
		{CodeUnavailable, 503, true},
		{CodeInternal, 500, false},
		{CodeAlreadyBound, 409, false},
		{CodeTooManyIdentities, 409, false},
		{CodeRecordReadable, 409, false},
		{CodeRateLimited, 429, true},
		{CodeShed, 503, true},
		{CodeRainSwitchedOff, 503, true},
		{CodeForbidden, 403, false},
		{CodeInsufficientFunds, 409, false},
		{CodeRequestIDReused, 409, false},
		{CodeRefundExceeds, 409, false},
		{Code("no_such_code"), 500, false},
	}
	for _, tt := range tests {
		if got := tt.code.Status(); got != tt.status {
			t.Errorf("Code(%q).Status() = %d, want %d", tt.code, got, tt.status)
		}
		if got := tt.code.Retryable(); got != tt.retryable {
			t.Errorf("Code(%q).Retryable() = %v, want %v", tt.code, got, tt.retryable)
		}
	}
}

func TestErrorIs(t *testing.T) {
	err := fmt.Errorf("grant: %w", Errorf(CodeRainClosed, "rain %d closed", 7))
	if !errors.Is(err, CodeRainClosed) {
		t.Errorf("errors.Is(%v, CodeRainClosed) = false, want true", err)
	}
	if errors.Is(err, CodeUnknownRain) {
		t.Errorf("errors.Is(%v, CodeUnknownRain) = true, want false", err)
	}
	if got, want := err.Error(), "grant: rain_closed: rain 7 closed"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestAppendError(t *testing.T) {
	messages := []string{
		"",
		"plain",
		`field "rain_id": want a positive integer`,
		"back\\slash, tab\t, newline\n, nul\x00, del\x7f",
		"unicode é 用 😀 \u2028\u2029",
	}
	for _, msg := range messages {
		e := &Error{Code: CodeMalformed, Message: msg}
		out := AppendError([]byte("prefix"), e)
		if !bytes.HasPrefix(out, []byte("prefix")) {
			t.Fatalf("AppendError(%q) = %q, lost the prefix", msg, out)
		}
		out = out[len("prefix"):]
		var got struct{ Code, Message string }
		if err := json.Unmarshal(out, &got); err != nil {
			t.Errorf("AppendError(%q) = %s, not valid JSON: %v", msg, out, err)
			continue
		}
		if got.Code != string(e.Code) || got.Message != msg {
			t.Errorf("AppendError(%q) = %s, decodes to %+v", msg, out, got)
		}
	}
	if got, want := string(AppendError(nil, &Error{Code: CodeNotFound, Message: "no route"})),
		`{"code":"not_found","message":"no route"}`; got != want {
		t.Errorf("AppendError = %s, want %s", got, want)
	}
	if got := AppendError(nil, nil); !json.Valid(got) || !bytes.Contains(got, []byte(`"internal"`)) {
		t.Errorf("AppendError(nil) = %s, want a valid internal error", got)
	}
}
