package campaign

import (
	"fmt"
	"maps"
	"slices"

	"redrain/ledger"
	"redrain/tokens"
)

// ValidityMonthsMax bounds a validity: 100 years.
const ValidityMonthsMax = 1200

// Validity is how long an asset's credits stay valid: whole months after
// the month they were credited in (ledger.ExpiryCutoff).
type Validity struct {
	Months int `json:"months"`
}

// validateValidity checks the campaign file's validity rules: each names
// a coin ("coin:{currency}") or item ("item:{template}") asset, whose id
// is a valid currency or template id, for 1..ValidityMonthsMax months.
// Money never expires.
func validateValidity(v map[string]Validity) error {
	for _, name := range slices.Sorted(maps.Keys(v)) {
		a := ledger.Asset(name)
		var id string
		switch a.Kind() {
		case ledger.KindCoin:
			id = name[len("coin:"):]
		case ledger.KindItem:
			id = name[len("item:"):]
		default:
			return fmt.Errorf("validity: %q: want coin:{currency} or item:{template} (money never expires)", name)
		}
		if !validID(id) {
			return fmt.Errorf("validity: %q: want 1-64 characters of [A-Za-z0-9.-] after the kind", name)
		}
		if m := v[name].Months; m < 1 || m > ValidityMonthsMax {
			return fmt.Errorf("validity: %q: months %d, want 1..%d", name, m, ValidityMonthsMax)
		}
	}
	return nil
}

// ValidityRules returns the validity in months of each asset that has
// one; an asset without one never expires.
func (c *Config) ValidityRules() map[ledger.Asset]int {
	out := make(map[ledger.Asset]int, len(c.Validity))
	for name, v := range c.Validity {
		out[ledger.Asset(name)] = v.Months
	}
	return out
}

// ItemSources returns, for each item asset that exactly one budget of
// activities grants, that budget's id. Items enter the ledger only
// through grants (transfers, gifts and refunds move pieces already
// granted; nothing recharges items), so every piece of such an item came
// from that budget and an expired piece returns to it. A coin can be
// bought (recharge) and an item granted by several budgets has no single
// source: neither is listed.
func ItemSources(activities []*Activity) map[ledger.Asset]string {
	budgets := map[ledger.Asset]map[string]bool{}
	for _, a := range activities {
		for _, s := range a.Stages {
			stage, err := tokens.ParseStage(s.Stage)
			if err != nil {
				continue // compiled activities have valid stages
			}
			for _, w := range a.Awards {
				if _, ok := s.Budgets[w.Type]; !ok || w.Kind != KindItem {
					continue
				}
				asset := w.AssetOf()
				if budgets[asset] == nil {
					budgets[asset] = map[string]bool{}
				}
				budgets[asset][BudgetID(a.ID, stage, w.Type)] = true
			}
		}
	}
	out := map[ledger.Asset]string{}
	for asset, ids := range budgets {
		if len(ids) == 1 {
			for id := range ids {
				out[asset] = id
			}
		}
	}
	return out
}
