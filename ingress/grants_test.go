package ingress

import (
	"fmt"
	"testing"

	"redrain/campaign"
	"redrain/errcode"
	"redrain/grant"
	"redrain/ledger"
	"redrain/tokens"
)

// TestAppendAnswerSealsInPlace: an answer sealed straight into the buffer
// is byte for byte the GrantResponse of Seal's token and trade number, for
// current and legacy grants, issued and booked.
func TestAppendAnswerSealsInPlace(t *testing.T) {
	camp, err := campaign.Compile(campaign.Demo())
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Campaign: camp}
	for _, r := range []grant.Result{
		{Outcome: grant.Issued, Grant: ledger.Grant{AppID: 7, ActID: 1 << 40, ActivityID: "demo", SceneID: "rain", RainID: 3,
			Stage: tokens.StageGray, AwardType: "cash", Asset: ledger.AssetCash, Amount: 88, OpenTime: 1_700_000_000_000}},
		{Outcome: grant.Repeat, Booked: true, Grant: ledger.Grant{AppID: 1, ActID: 42, ActivityID: "demo", SceneID: "rain", RainID: 1,
			AwardType: "coin", Asset: "coin:gold", Amount: 5, Legacy: true}},
	} {
		g := &r.Grant
		c := g.Claims()
		status := "issued"
		if r.Booked {
			status = "booked"
		}
		want := AppendGrantResponse([]byte("x"), &GrantResponse{Token: camp.Ring.Seal(nil, &c), OutTradeNo: c.OutTradeNo, ActID: g.ActID,
			AwardType: g.AwardType, Asset: string(g.Asset), Amount: g.Amount, Stage: g.Stage.String(), Status: status})
		got, e := s.appendAnswer([]byte("x"), &GrantRequest{}, &r)
		if e != nil || string(got) != string(want) {
			t.Errorf("appendAnswer(%+v) = %s, %v; want %s", r, got, e, want)
		}
	}
}

// TestOutstandingError: Outstanding's errors map to their API codes, and
// only unavailability is retryable.
func TestOutstandingError(t *testing.T) {
	for _, c := range []struct {
		err  error
		want errcode.Code
	}{
		{fmt.Errorf("%w: owner unreachable", grant.ErrUnavailable), errcode.CodeUnavailable},
		{grant.ErrNoUser, errcode.CodeMalformed},
		{fmt.Errorf("%w: claim table", ledger.ErrInvariant), errcode.CodeInternal},
	} {
		e := OutstandingError(c.err)
		if e == nil || e.Code != c.want || e.Code.Retryable() != (c.want == errcode.CodeUnavailable) {
			t.Errorf("OutstandingError(%v) = %v, want %s", c.err, e, c.want)
		}
	}
	if e := OutstandingError(nil); e != nil {
		t.Errorf("OutstandingError(nil) = %v, want nil", e)
	}
}
