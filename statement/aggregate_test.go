package statement_test

import (
	"errors"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"redrain/statement"
)

const day1 = int64(1_764_979_200_000) // 2025-12-06T00:00:00Z

func seedConfig() *statement.Config {
	return &statement.Config{
		Sponsors: map[string]string{"newyear": "acme"},
		Rules:    map[string]statement.Rule{"m1": seedRule},
	}
}

func days(t *testing.T, g *statement.Aggregator) map[string]*statement.Aggregate {
	t.Helper()
	out := map[string]*statement.Aggregate{}
	for _, d := range g.Days() {
		out[d.Day.String()+" "+d.Party.String()] = d.Agg
		if err := d.Agg.Check(d.Party); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func line(t *testing.T, a *statement.Aggregate, s statement.Section, item, asset string) statement.Line {
	t.Helper()
	if a == nil {
		t.Fatalf("no aggregate for line %s %s", item, asset)
	}
	for _, l := range a.Lines {
		if l.Section == s && l.Item == item && l.Asset == asset {
			return l
		}
	}
	t.Fatalf("no line %v %s %s in %+v", s, item, asset, a.Lines)
	return statement.Line{}
}

// The seed's ¥100 example end to end: a user granted ¥150 by an activity
// spends ¥100 at a merchant split host 10%, platform 5%, technical fee
// 0.6%, and gets ¥10 refunded.
func TestSeedExampleStatements(t *testing.T) {
	g, err := statement.NewAggregator(seedConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []statement.Posting{
		{At: day1 + 1, Kind: "grant", User: 7, Activity: "newyear", Asset: "cash", Amount: 15_000},
		{At: day1 + 2, Kind: "consume", User: 7, Merchant: "m1", Asset: "cash", Amount: -10_000},
	} {
		if err := g.Add(&p); err != nil {
			t.Fatal(err)
		}
	}
	d := days(t, g)
	m := d["2025-12-06 merchant:m1"]
	for _, c := range []struct {
		s      statement.Section
		item   string
		amount int64
	}{{statement.Income, "consume", 10_000}, {statement.Other, "fee:host", -1_000}, {statement.Other, "fee:platform", -500}, {statement.Other, "fee:technical_fee", -60}} {
		if l := line(t, m, c.s, c.item, "cash"); l.Amount != c.amount || l.Count != 1 {
			t.Errorf("merchant line %s = %+v, want %d once", c.item, l, c.amount)
		}
	}
	if tot := m.Totals(); len(tot) != 1 || tot[0].Net != 8_440 || tot[0].Income != 10_000 || tot[0].Other != -1_560 {
		t.Errorf("merchant totals %+v, want income 10000, other -1560, net 8440", tot)
	}
	if l := line(t, d["2025-12-06 user:7"], statement.Expenditure, "consume", "cash"); l.Amount != -10_000 {
		t.Errorf("user consume %+v", l)
	}
	if l := line(t, d["2025-12-06 activity:newyear"], statement.Expenditure, "grant", "cash"); l.Amount != -15_000 {
		t.Errorf("activity grant %+v", l)
	}
	if l := line(t, d["2025-12-06 sponsor:acme"], statement.Expenditure, "grant", "cash"); l.Amount != -15_000 {
		t.Errorf("sponsor grant %+v", l)
	}
	// A refund of ¥10 the next day returns the fees' mirror.
	if err := g.Add(&statement.Posting{At: day1 + 86_400_000, Kind: "refund", User: 7, Merchant: "m1", Asset: "cash", Amount: 1_000}); err != nil {
		t.Fatal(err)
	}
	m2 := days(t, g)["2025-12-07 merchant:m1"]
	if l := line(t, m2, statement.Other, "fee:host", "cash"); l.Amount != 100 {
		t.Errorf("refund's host fee %+v, want +100", l)
	}
	if tot := m2.Totals(); tot[0].Net != -844 {
		t.Errorf("refund day net %+v, want -844", tot)
	}
	st := statement.Statement{Party: statement.Party{Kind: statement.PartyMerchant, ID: "m1"}, Agg: *m}
	st.Period, _ = statement.ParsePeriod("day", "2025-12-06")
	csv := string(st.CSV())
	if !strings.Contains(csv, "merchant:m1,day,2025-12-06,false,other,fee:technical_fee,cash,1,-60,-0.60\r\n") ||
		!strings.Contains(csv, "total,net,cash,4,8440,84.40\r\n") || !strings.HasPrefix(csv, strings.Join(statement.CSVHeader, ",")+"\r\n") {
		t.Errorf("CSV:\n%s", csv)
	}
	js, err := st.JSON()
	if err != nil || !strings.Contains(string(js), `"net":8440,"net_yuan":"84.40"`) {
		t.Errorf("JSON %s %v", js, err)
	}
}

// Random postings: every merchant's day balances (lines against residual
// shares), a month summed from days equals the month folded at once, and
// aggregates survive their encoding.
func TestAggregateRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	cfg := seedConfig()
	cfg.Default = &statement.Rule{Fees: []statement.Share{{Party: "platform", Rate: 33_333}}, Residual: "merchant"}
	byDay, err := statement.NewAggregator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	kinds := []string{"grant", "consume", "refund", "reverse", "expire", "transfer_out", "withdraw_settle"}
	var ps []statement.Posting
	for range 20_000 {
		k := kinds[rng.IntN(len(kinds))]
		p := statement.Posting{At: day1 + rng.Int64N(30*86_400_000), Kind: k, User: rng.Uint64N(50), Asset: []string{"cash", "coin:gold"}[rng.IntN(2)], Amount: rng.Int64N(1_000_000) + 1}
		switch k {
		case "grant":
			p.Activity = []string{"newyear", "spring"}[rng.IntN(2)]
		case "consume", "refund", "reverse":
			p.Merchant = []string{"m1", "m2", "m3"}[rng.IntN(3)]
		case "expire":
			p.Activity = "spring"
		}
		if k != "grant" && k != "refund" && k != "reverse" {
			p.Amount = -p.Amount
		}
		ps = append(ps, p)
		if err := byDay.Add(&p); err != nil {
			t.Fatal(err)
		}
	}
	month := map[string]*statement.Aggregate{}
	for _, d := range byDay.Days() {
		if err := d.Agg.Check(d.Party); err != nil {
			t.Fatal(err)
		}
		back, err := statement.DecodeAggregate(statement.AppendAggregate(nil, d.Agg))
		if err != nil {
			t.Fatal(err)
		}
		k := d.Party.String()
		if month[k] == nil {
			month[k] = &statement.Aggregate{}
		}
		month[k].Merge(back)
	}
	// The same postings folded as if all on one day.
	once, _ := statement.NewAggregator(cfg)
	for _, p := range ps {
		p.At = day1
		if err := once.Add(&p); err != nil {
			t.Fatal(err)
		}
	}
	userNet := map[string]int64{}
	for _, p := range ps {
		userNet["user:"+itoa(p.User)+" "+p.Asset] += p.Amount
	}
	for _, d := range once.Days() {
		k := d.Party.String()
		m := month[k]
		m.Sort()
		if err := m.Check(d.Party); err != nil {
			t.Fatal(err)
		}
		if len(m.Lines) != len(d.Agg.Lines) {
			t.Fatalf("%s: month from days %+v, at once %+v", k, m.Lines, d.Agg.Lines)
		}
		for i := range m.Lines {
			if m.Lines[i] != d.Agg.Lines[i] {
				t.Fatalf("%s: month from days %+v, at once %+v", k, m.Lines[i], d.Agg.Lines[i])
			}
		}
		if d.Party.Kind == statement.PartyUser {
			for _, tot := range d.Agg.Totals() {
				if userNet[k+" "+tot.Asset] != tot.Net {
					t.Fatalf("%s %s: net %d, postings sum %d", k, tot.Asset, tot.Net, userNet[k+" "+tot.Asset])
				}
			}
		}
	}
}

func itoa(u uint64) string {
	b := []byte{}
	for {
		b = append([]byte{byte('0' + u%10)}, b...)
		if u /= 10; u == 0 {
			return string(b)
		}
	}
}

func TestParse(t *testing.T) {
	for _, s := range []string{"user:7", "merchant:m-1", "activity:newyear", "sponsor:acme"} {
		if p, err := statement.ParseParty(s); err != nil || p.String() != s {
			t.Errorf("ParseParty(%q) = %v, %v", s, p, err)
		}
	}
	for _, s := range []string{"", "user:", "user:07", "user:x", "shop:1", "merchant: m", "merchant:a/b", "merchant"} {
		if _, err := statement.ParseParty(s); !errors.Is(err, statement.ErrInput) {
			t.Errorf("ParseParty(%q) = %v, want ErrInput", s, err)
		}
	}
	p, err := statement.ParsePeriod("month", "2024-02")
	if err != nil || p.From.String() != "2024-02-01" || (p.To-1).String() != "2024-02-29" {
		t.Errorf("month 2024-02: %+v %v", p, err)
	}
	p, err = statement.ParsePeriod("year", "2025")
	if err != nil || p.To-p.From != 365 {
		t.Errorf("year 2025: %+v %v", p, err)
	}
	for _, c := range [][2]string{{"day", "2025-13-01"}, {"day", "2025-12"}, {"month", "2025-1"}, {"week", "2025"}, {"year", "1969"}, {"day", "2025-02-30"}} {
		if _, err := statement.ParsePeriod(c[0], c[1]); !errors.Is(err, statement.ErrInput) {
			t.Errorf("ParsePeriod(%q) = %v, want ErrInput", c, err)
		}
	}
	for fen, want := range map[int64]string{0: "0.00", 5: "0.05", -60: "-0.60", 8_440: "84.40", -123_456: "-1234.56"} {
		if got := statement.Yuan(fen); got != want {
			t.Errorf("Yuan(%d) = %q, want %q", fen, got, want)
		}
	}
	if _, err := statement.DecodeAggregate([]byte{1, 5}); err == nil {
		t.Error("truncated aggregate decoded")
	}
}

// Memory is per party-day and line, not per posting: 100,000 postings of
// 5 users at 2 merchants of 1 activity on one day hold 9 aggregates of a
// few lines.
func TestAggregatorBounded(t *testing.T) {
	g, err := statement.NewAggregator(seedConfig())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100_000 {
		p := statement.Posting{At: day1 + int64(i), Kind: "grant", User: uint64(i % 5), Activity: "newyear", Asset: "cash", Amount: 3}
		if i%2 == 1 {
			p = statement.Posting{At: day1 + int64(i), Kind: "consume", User: uint64(i % 5), Merchant: []string{"m1", "m2"}[i%4/2], Asset: "cash", Amount: -1}
		}
		if err := g.Add(&p); err != nil {
			t.Fatal(err)
		}
	}
	if n := g.Len(); n != 5+2+1+1 {
		t.Fatalf("%d aggregates, want 9 (5 users, 2 merchants, an activity, its sponsor)", n)
	}
	for _, d := range g.Days() {
		if len(d.Agg.Lines) > 4 {
			t.Errorf("%s: %d lines", d.Party, len(d.Agg.Lines))
		}
	}
}

// TestAddGrants: grants summed fold as each of them would, and only where
// no user lines are folded.
func TestAddGrants(t *testing.T) {
	cfg := &statement.Config{Sponsors: map[string]string{"newyear": "acme"}}
	each, err := statement.NewAggregator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	summed, _ := statement.NewAggregator(cfg)
	each.NoUsers, summed.NoUsers = true, true
	const at = 1_764_979_200_000
	for _, amount := range []int64{5, 7, 11} {
		if err := each.Add(&statement.Posting{At: at, Kind: statement.KindGrant, User: 1, Activity: "newyear", Asset: "cash", Amount: amount}); err != nil {
			t.Fatal(err)
		}
	}
	if err := summed.AddGrants(at, "newyear", "cash", 23, 3); err != nil {
		t.Fatal(err)
	}
	days := func(g *statement.Aggregator) map[string]statement.Aggregate {
		out := map[string]statement.Aggregate{}
		for _, d := range g.Days() {
			out[d.Day.String()+"/"+d.Party.String()] = *d.Agg
		}
		return out
	}
	if w, g := days(each), days(summed); !reflect.DeepEqual(w, g) || len(g) != 2 {
		t.Errorf("summed %+v, each %+v", g, w)
	}
	withUsers, _ := statement.NewAggregator(cfg)
	for name, err := range map[string]error{
		"with user lines": withUsers.AddGrants(at, "newyear", "cash", 1, 1),
		"no activity":     summed.AddGrants(at, "", "cash", 1, 1),
		"no asset":        summed.AddGrants(at, "newyear", "", 1, 1),
		"no grant":        summed.AddGrants(at, "newyear", "cash", 0, 0),
	} {
		if !errors.Is(err, statement.ErrInput) {
			t.Errorf("AddGrants %s: %v, want ErrInput", name, err)
		}
	}
}
