package reconcile

import (
	"testing"

	"redrain/ledger"
	"redrain/tokens"
)

// TestOutTradeNo re-derives trade numbers from entries of both key formats,
// against the grants' own derivation.
func TestOutTradeNo(t *testing.T) {
	current := ledger.Grant{ActID: 42, ActivityID: "newyear", SceneID: "lobby", RainID: 1,
		Stage: tokens.StageGray, AwardType: "coin-gold"}
	legacy := current
	legacy.Legacy = true
	spring := current
	spring.ActivityID = "spring"
	for _, tc := range []struct {
		name  string
		g     ledger.Grant
		key   string
		idemp string
	}{
		{"activity keys", current, "42_newyear_lobby_1_gray", "42_newyear_lobby_1_coin-gold_gray"},
		{"another activity, same scene and rain", spring, "42_spring_lobby_1_gray", "42_spring_lobby_1_coin-gold_gray"},
		{"legacy keys", legacy, "42_lobby_1_gray", "42_lobby_1_coin-gold_gray"},
	} {
		e := ledger.Entry{LimitKey: tc.g.LimitKey(), AwardType: tc.g.AwardType}
		if e.LimitKey != tc.key || tc.g.IdempotencyKey() != tc.idemp {
			t.Fatalf("%s: keys %q, %q, want %q, %q", tc.name, e.LimitKey, tc.g.IdempotencyKey(), tc.key, tc.idemp)
		}
		got, ok := outTradeNo(42, e)
		if want := tc.g.OutTradeNo(); !ok || got != want || want != tokens.OutTradeNo(tc.idemp) {
			t.Errorf("%s: outTradeNo(42, %+v) = %q, %v, want %q, true", tc.name, e, got, ok, want)
		}
		if _, ok := outTradeNo(43, e); ok {
			t.Errorf("%s: outTradeNo(43, entry of act 42) ok, want refused", tc.name)
		}
	}
	if _, ok := outTradeNo(42, ledger.Entry{LimitKey: "42", AwardType: "cash"}); ok {
		t.Errorf("outTradeNo of a limit key without parts: ok, want refused")
	}
}
