package node_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"redrain/campaign"
	"redrain/storage/storagetest"
)

// TestMerchantSplitThroughNode is the seed's example end to end: with the
// campaign file's split rule for merchant m1 (host 10%, platform 5%,
// technical fee 0.6%, the rest the merchant's), a ¥100 consumption of
// reward cash at m1 through POST /v1/spend/consume, booked by the node's
// own booking and folded, is m1's day statement from GET
// /admin/v1/statements: income 100.00, host -10.00, platform -5.00,
// technical fee -0.60, net 84.40.
func TestMerchantSplitThroughNode(t *testing.T) {
	cfg := configFileWith(t, func(c *campaign.Config) {
		a := &c.Activities[0]
		a.Awards = []campaign.Award{{Type: "cash", Kind: campaign.KindMoney, Min: 10_000, Max: 10_000}}
		c.Statements.MerchantSplits = map[string]campaign.SplitRule{"m1": {Residual: "merchant", Fees: []campaign.SplitFee{
			{Party: "host", RatePPM: 100_000}, {Party: "platform", RatePPM: 50_000}, {Party: "technical_fee", RatePPM: 6_000}}}}
	})
	n := startNodeWith(t, t.TempDir(), storagetest.Redis(t), cfg)
	g := grantAll(t, n, []string{"split-1"})[0]
	waitBooked(t, n, 1)
	if g.Amount != 10_000 {
		t.Fatalf("grant %+v, want ¥100", g)
	}
	consume := map[string]any{"request_id": "c-100", "app_id": 1, "act_id": g.ActID, "amount": 10_000, "asset": "cash", "merchant_id": "m1"}
	if code, c := postCode(t, n, "/v1/spend/consume", consume); code != 200 {
		t.Fatalf("consume of ¥100 at m1 = %d %s, want 200", code, c)
	}
	if _, err := n.FoldStatements(context.Background()); err != nil {
		t.Fatal(err)
	}
	today := time.Now().UTC().Format(time.DateOnly)
	code, body := get(t, n, "/admin/v1/statements?period=day&date="+today+"&party=merchant:m1")
	var st struct {
		Lines []struct {
			Section, Item, Asset string
			Count, Amount        int64
			AmountYuan           string `json:"amount_yuan"`
		} `json:"lines"`
		Totals []struct {
			Asset              string
			Income, Other, Net int64
			Expenditure        int64
			NetYuan            string `json:"net_yuan"`
		} `json:"totals"`
	}
	if code != 200 || json.Unmarshal(body, &st) != nil {
		t.Fatalf("m1's statement: %d %s", code, body)
	}
	want := map[string]string{"income consume": "100.00", "other fee:host": "-10.00", "other fee:platform": "-5.00", "other fee:technical_fee": "-0.60"}
	got := map[string]string{}
	for _, l := range st.Lines {
		if l.Asset != "cash" || l.Count != 1 {
			t.Errorf("line %+v, want one cash posting", l)
		}
		got[l.Section+" "+l.Item] = l.AmountYuan
	}
	if len(got) != len(want) {
		t.Errorf("m1's lines %s, want %v", body, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("m1's %s = %q, want %s (%s)", k, got[k], v, body)
		}
	}
	if len(st.Totals) != 1 || st.Totals[0].Income != 10_000 || st.Totals[0].Other != -1_560 || st.Totals[0].Expenditure != 0 ||
		st.Totals[0].Net != 8_440 || st.Totals[0].NetYuan != "84.40" {
		t.Errorf("m1's totals %+v, want income 10000, other -1560, net 8440 (84.40)", st.Totals)
	}
}
