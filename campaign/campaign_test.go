package campaign

import (
	"errors"
	"os"
	"strings"
	"testing"

	"redrain/ledger"
	"redrain/tokens"
)

func spring(t *testing.T) *Activity {
	t.Helper()
	raw, err := os.ReadFile("../examples/spring.json")
	if err != nil {
		t.Fatal(err)
	}
	a, err := ParseActivity(raw)
	if err != nil {
		t.Fatal(err)
	}
	// What the admin API does on PUT: whitelists resolved to act_ids.
	for i := range a.Stages {
		for j := range a.Stages[i].Whitelist {
			a.Stages[i].ActIDs = append(a.Stages[i].ActIDs, uint64(100*(i+1)+j))
		}
	}
	return a
}

func TestExampleCompiles(t *testing.T) {
	v, err := CompileActivity(spring(t), 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Children()) != 3 {
		t.Fatalf("children = %d, want 3", len(v.Children()))
	}
	kinds := map[string]int{}
	for _, w := range v.Spec.Awards {
		kinds[w.Kind]++
	}
	if len(v.Spec.Awards) < 10 || kinds[KindMoney] == 0 || kinds[KindCoin] == 0 || kinds[KindItem] == 0 {
		t.Fatalf("example awards by kind = %v, want >= 10 over money, coin and item", kinds)
	}
	f := v.Child(tokens.StageFormal)
	for _, tc := range []struct{ award, budget, asset string }{
		{"cash", "spring/formal/cash", "cash"},
		{"coin-gold", "spring/formal/coin-gold", "coin:gold"},
		{"card-fu", "spring/formal/card-fu", "item:card-fu"},
	} {
		w := f.Award(tc.award)
		if w == nil || w.BudgetID != tc.budget || w.Asset != ledger.Asset(tc.asset) {
			t.Errorf("award %s = %+v, want budget %s asset %s", tc.award, w, tc.budget, tc.asset)
		}
	}
	if w := f.Award("cash"); w.FallbackTo != f.Award("coin-gold") || !f.Award("coin-gold").NoAward {
		t.Errorf("fallback chain cash → coin-gold → none not compiled")
	}
	if f.Award("coin-silver").FallbackTo != nil || f.Award("coin-silver").NoAward {
		t.Errorf("coin-silver has no fallback")
	}
}

func TestStageChoice(t *testing.T) {
	v, err := CompileActivity(spring(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	if c := v.ChildFor(100); c.Stage != tokens.StageInternal {
		t.Errorf("whitelisted staff act 100 in %v, want internal", c.Stage)
	}
	if c := v.ChildFor(200); c.Stage != tokens.StageGray {
		t.Errorf("gray-whitelisted act 200 in %v, want gray", c.Stage)
	}
	// 5% of all users land in gray by hash; the rest in formal.
	gray := 0
	const n = 100000
	for id := uint64(1000); id < 1000+n; id++ {
		switch v.ChildFor(id).Stage {
		case tokens.StageGray:
			gray++
		case tokens.StageInternal:
			t.Fatalf("act %d not whitelisted but internal", id)
		}
	}
	if gray < n*4/100 || gray > n*6/100 {
		t.Errorf("gray share = %d of %d, want about 5%%", gray, n)
	}
	// Without a formal stage, users outside the whitelists are in none.
	a := spring(t)
	a.Stages = a.Stages[:2]
	a.Stages[1].Percent = 0
	v, err = CompileActivity(a, 2)
	if err != nil {
		t.Fatal(err)
	}
	if c := v.ChildFor(99999); c != nil {
		t.Errorf("act outside every whitelist got stage %v, want none", c.Stage)
	}
}

func TestThresholdRange(t *testing.T) {
	v, err := CompileActivity(spring(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	w := v.Child(tokens.StageFormal).Award("cash")
	for _, tc := range []struct {
		spentBP, lo, hi int64
	}{{0, 1, 888}, {8999, 1, 888}, {9000, 1, 88}, {10000, 1, 88}} {
		if lo, hi := w.Range(tc.spentBP); lo != tc.lo || hi != tc.hi {
			t.Errorf("Range(%d) = %d..%d, want %d..%d", tc.spentBP, lo, hi, tc.lo, tc.hi)
		}
	}
	if w.MaxAmount() != 888 {
		t.Errorf("MaxAmount = %d, want 888", w.MaxAmount())
	}
}

func TestCompileRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(a *Activity)
		want string
	}{
		{"no stages", func(a *Activity) { a.Stages = nil }, "one stage"},
		{"unknown stage", func(a *Activity) { a.Stages[0].Stage = "beta" }, "want internal, gray or formal"},
		{"stage twice", func(a *Activity) { a.Stages[1].Stage = "internal" }, "defined twice"},
		{"unknown kind", func(a *Activity) { a.Awards[0].Kind = "gems" }, "want money, coin or item"},
		{"coin without currency", func(a *Activity) { a.Awards[2].Currency = "" }, "needs a currency"},
		{"item without template", func(a *Activity) { a.Awards[5].Template = "" }, "needs a template"},
		{"money with currency", func(a *Activity) { a.Awards[0].Currency = "x" }, "no currency"},
		{"too many items", func(a *Activity) { a.Awards[5].Max = 5000 }, "max <= 1000"},
		{"min zero", func(a *Activity) { a.Awards[0].Min = 0 }, "1 <= min"},
		{"threshold out of range", func(a *Activity) { a.Awards[0].Thresholds[0].Spent = 100 }, "spent_percent"},
		{"threshold bad range", func(a *Activity) { a.Awards[0].Thresholds[0].Min = 100 }, "threshold 90%"},
		{"award named none", func(a *Activity) { a.Awards[9].Type = "none" }, "type"},
		{"fallback unknown", func(a *Activity) { a.Awards[3].Fallback = "gems" }, "not offered"},
		{"fallback cycle", func(a *Activity) { a.Awards[2].Fallback = "cash" }, "cycle"},
		{"negative budget", func(a *Activity) { a.Stages[2].Budgets["cash"] = -1 }, "< 0"},
		{"budget of unknown award", func(a *Activity) { a.Stages[2].Budgets["gems"] = 1 }, "unknown award"},
		{"formal whitelist", func(a *Activity) { a.Stages[2].Whitelist = []string{"1:x"}; a.Stages[2].ActIDs = []uint64{5} }, "no whitelist"},
		{"percent on internal", func(a *Activity) { a.Stages[0].Percent = 3 }, "only the gray stage"},
		{"unresolved whitelist", func(a *Activity) { a.Stages[0].ActIDs = nil }, "not resolved"},
		{"bad whitelist entry", func(a *Activity) { a.Stages[0].Whitelist[0] = "staff" }, "app_id:user_id"},
		{"internal admits nobody", func(a *Activity) { a.Stages[0].Whitelist, a.Stages[0].ActIDs = nil, nil }, "admits nobody"},
		{"bad id", func(a *Activity) { a.ID = "spring_2027" }, "id"},
		{"bad sponsor", func(a *Activity) { a.Sponsor = "acme corp" }, "sponsor"},
		{"rain twice", func(a *Activity) { a.Rains[2] = a.Rains[1] }, "defined twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := spring(t)
			tc.edit(a)
			_, err := CompileActivity(a, 1)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrInvalid mentioning %q", err, tc.want)
			}
		})
	}
}

func TestParseActivityStrict(t *testing.T) {
	for _, raw := range []string{
		`{"id":"a","bogus":1}`,
		`{"id":"a"} {"id":"b"}`,
		`{"id":"a","awards":[{"type":"x","min":"1"}]}`,
		`[`,
	} {
		if _, err := ParseActivity([]byte(raw)); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseActivity(%s) err = %v, want ErrInvalid", raw, err)
		}
	}
}

func TestSameAwards(t *testing.T) {
	prev, next := spring(t), spring(t)
	if err := SameAwards(prev, next); err != nil {
		t.Fatal(err)
	}
	next.Awards[2].Currency = "platinum"
	if err := SameAwards(prev, next); !errors.Is(err, ErrInvalid) {
		t.Fatalf("changed currency accepted: %v", err)
	}
}

func TestCatalogCanary(t *testing.T) {
	v1, err := CompileActivity(spring(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	a := spring(t)
	a.Awards[0].Max = 8
	v2, err := CompileActivity(a, 2)
	if err != nil {
		t.Fatal(err)
	}
	c := NewCatalog(7)
	c.Add(v1, v2, []uint64{42})
	p := c.Activity("spring")
	if p.For(42) != v2 || p.For(43) != v1 {
		t.Fatalf("canary user 42 got v%d, others v%d; want v2, v1", p.For(42).Version, p.For(43).Version)
	}
	if c.Award("spring", tokens.StageGray, "coupon-5").Asset != "item:coupon-5off" {
		t.Fatal("catalog award lookup")
	}
	if got := c.Budgets(); len(got) != 30 || got["spring/internal/coin-gold"] != "coin:gold" {
		t.Fatalf("budgets = %v, want 30 with coin assets", got)
	}
}

func TestSeedsValidated(t *testing.T) {
	c := Demo()
	if _, err := Compile(c); err != nil {
		t.Fatal(err)
	}
	c.Activities = append(c.Activities, c.Activities[0])
	if _, err := Compile(c); !errors.Is(err, ErrInvalid) {
		t.Fatalf("duplicate seed accepted: %v", err)
	}
	if _, err := Load("../examples/campaign.json"); err != nil {
		t.Fatalf("examples/campaign.json: %v", err)
	}
}

// TestBusinessLines: the campaign file's business lines are validated,
// their defaults filled in; none is valid; a bad one names the line and
// the field, and the file is refused.
func TestBusinessLines(t *testing.T) {
	write := configWriter(t)
	c, err := Load(write(""))
	if err != nil || len(c.Config.BusinessLines) != 0 {
		t.Fatalf("Load(no lines) = %+v, %v", c, err)
	}
	c, err = Load(write(`,"business_lines":[{"id":"games","pull_url":"http://games.internal/assets","rate":20}]`))
	if err != nil {
		t.Fatal(err)
	}
	if l := c.Config.BusinessLines[0]; l.ID != "games" || l.Burst != 20 || l.Concurrency == 0 || l.WindowMs == 0 || l.TimeoutMs == 0 {
		t.Errorf("line %+v, want its defaults filled in", l)
	}
	for _, tc := range []struct{ lines, want string }{
		{`,"business_lines":[{"id":"games","pull_url":"http://g/a"}]`, `business_lines[0] "games": rate 0`},
		{`,"business_lines":[{"id":"Games","pull_url":"http://g/a","rate":1}]`, "id: want"},
		{`,"business_lines":[{"id":"games","pull_url":"g/a","rate":1}]`, "pull_url"},
		{`,"business_lines":[{"id":"games","pull_url":"http://g/a","rate":1,"rate_limit":2}]`, `unknown field "rate_limit"`},
		{`,"business_lines":[{"id":"games","pull_url":"http://g/a","rate":1},{"id":"games","pull_url":"http://h/a","rate":1}]`, "listed twice"},
	} {
		if _, err := Load(write(tc.lines)); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Load(%s) = %v, want ErrInvalid mentioning %q", tc.lines, err, tc.want)
		}
	}
}

// TestStatementsConfig: the campaign file's revenue split is validated
// (statement.Rule.Validate), and the seed's ¥100 example splits from the
// file as written: host 10%, platform 5%, technical fee 0.6%, merchant
// the rest.
func TestStatementsConfig(t *testing.T) {
	write := configWriter(t)
	c, err := Load(write(`,"statements":{"merchant_splits":{"m1":{"fees":[{"party":"host","rate_ppm":100000},{"party":"platform","rate_ppm":50000},{"party":"technical_fee","rate_ppm":6000}],"residual":"merchant"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	a := &Activity{ID: "newyear", Sponsor: "acme"}
	cfg := c.Config.Statements.StatementConfig([]*Activity{a, {ID: "spring"}})
	if cfg.Sponsors["newyear"] != "acme" || cfg.Sponsors["spring"] != "spring" || cfg.Default != nil {
		t.Errorf("statement config %+v", cfg)
	}
	got, err := cfg.Rules["m1"].Split(10_000)
	if err != nil || len(got) != 4 || got[0] != 1_000 || got[1] != 500 || got[2] != 60 || got[3] != 8_440 {
		t.Errorf("¥100 split by the file's rule = %v, %v; want 1000 500 60 8440", got, err)
	}
	for _, tc := range []struct{ st, want string }{
		{`,"statements":{"default_split":{"fees":[{"party":"host","rate_ppm":1000001}],"residual":"merchant"}}}`, "rate"},
		{`,"statements":{"default_split":{"fees":[{"party":"host","rate_ppm":600000},{"party":"p","rate_ppm":600000}],"residual":"merchant"}}}`, "more than the whole"},
		{`,"statements":{"merchant_splits":{"m1":{"fees":[{"party":"merchant","rate_ppm":1}],"residual":"merchant"}}}}`, "named twice"},
		{`,"statements":{"merchant_splits":{"m/1":{"fees":[],"residual":"merchant"}}}}`, "merchant \"m/1\""},
		{`,"statements":{"default_split":{"fees":[],"residual":""}}}`, "residual"},
		{`,"statements":{"splits":{}}}`, `unknown field "splits"`},
	} {
		if _, err := Load(write(tc.st)); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Load(%s) = %v, want ErrInvalid mentioning %q", tc.st, err, tc.want)
		}
	}
}
