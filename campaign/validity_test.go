package campaign

import (
	"errors"
	"os"
	"strings"
	"testing"

	"redrain/ledger"
)

// TestValidityConfig: the campaign file's validity is parsed per asset
// and validated; an asset without one never expires.
func TestValidityConfig(t *testing.T) {
	write := configWriter(t)
	c, err := Load(write(`,"validity":{"coin:gold":{"months":12},"item:rose":{"months":1}}`))
	if err != nil {
		t.Fatal(err)
	}
	rules := c.Config.ValidityRules()
	if len(rules) != 2 || rules["coin:gold"] != 12 || rules["item:rose"] != 1 {
		t.Errorf("rules %v", rules)
	}
	if _, ok := rules[ledger.CoinAsset("silver")]; ok {
		t.Error("an asset without validity has a rule")
	}
	for _, tc := range []struct{ v, want string }{
		{`,"validity":{"cash":{"months":12}}`, "money never expires"},
		{`,"validity":{"coin:":{"months":12}}`, "want coin:"},
		{`,"validity":{"gold":{"months":12}}`, "want coin:"},
		{`,"validity":{"coin:go_ld":{"months":12}}`, "characters"},
		{`,"validity":{"coin:gold":{"months":0}}`, "months 0"},
		{`,"validity":{"item:rose":{"months":1201}}`, "months 1201"},
		{`,"validity":{"item:rose":{"days":3}}`, `unknown field "days"`},
		{`,"validity":{"item:rose":{"months":"3"}}`, "months"},
	} {
		if _, err := Load(write(tc.v)); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Load(%s) = %v, want ErrInvalid mentioning %q", tc.v, err, tc.want)
		}
	}
}

// TestItemSources: an item granted by exactly one budget returns to it;
// one granted by two budgets, coins and cash have no single source.
func TestItemSources(t *testing.T) {
	a := &Activity{ID: "spring",
		Awards: []Award{{Type: "rose", Kind: KindItem, Template: "rose"}, {Type: "tulip", Kind: KindItem, Template: "tulip"},
			{Type: "gold", Kind: KindCoin, Currency: "gold"}, {Type: "cash", Kind: KindMoney}},
		Stages: []Stage{{Stage: "formal", Budgets: map[string]int64{"rose": 10, "tulip": 10, "gold": 10, "cash": 10}}}}
	b := &Activity{ID: "autumn",
		Awards: []Award{{Type: "tulip", Kind: KindItem, Template: "tulip"}},
		Stages: []Stage{{Stage: "formal", Budgets: map[string]int64{"tulip": 5}}}}
	got := ItemSources([]*Activity{a, b})
	if len(got) != 1 || got["item:rose"] != "spring/formal/rose" {
		t.Errorf("ItemSources = %v, want only item:rose from spring/formal/rose", got)
	}
}

// configWriter returns a function that writes a campaign file of the
// test token key and draw salt with extra (JSON members after a comma)
// and returns its path.
func configWriter(t *testing.T) func(extra string) string {
	dir := t.TempDir()
	return func(extra string) string {
		path := dir + "/c.json"
		body := `{"token_keys":["1:` + demoKeyHex + `"],"active_token_key":1,"draw_salt":"s"` + extra + `}`
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
}
