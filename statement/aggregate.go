package statement

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Statements are folded from postings (a grant credited, one leg of a move)
// into aggregates per party and UTC day: per line (section, item, asset) a
// signed amount and a count. Months and years are sums of days. Memory is
// per party-day and line, never per posting.
//
// Sign rule: a line's amount is its effect on the party (income positive,
// expenditure negative), so a statement's net per asset is the sum of its
// lines. Merchants' balance rule: every consumption, refund and reversal
// is split by the merchant's rule when it is folded (each posting split
// exactly, then summed), so per asset
//
//	consume + refund + reverse (the merchant's gross) = Σ fee shares + net
//
// where the fee lines hold the negated shares and net, the merchant's
// residual share, is also summed apart from the lines (Aggregate.Residual);
// Check compares the two.

// PartyKind is whose statement it is.
type PartyKind uint8

// Kinds of party.
const (
	PartyActivity PartyKind = iota + 1 // an activity: the packets its budgets paid, expiry returned to them
	PartySponsor                       // a sponsor: the sum of its activities
	PartyUser                          // a user (act_id): everything that changed the user's account
	PartyMerchant                      // a merchant: consumptions, refunds and reversals, split
)

var partyKinds = [...]string{PartyActivity: "activity", PartySponsor: "sponsor", PartyUser: "user", PartyMerchant: "merchant"}

// Party names a statement's holder: kind:ID.
type Party struct {
	Kind PartyKind
	ID   string
}

func (p Party) String() string { return partyKinds[p.Kind] + ":" + p.ID }

// ErrInput wraps every period, party or posting refused.
var ErrInput = errors.New("statement: bad input")

// ParseParty parses activity:ID, sponsor:ID, user:ACT (a decimal act_id)
// or merchant:ID.
func ParseParty(s string) (Party, error) {
	kind, id, ok := strings.Cut(s, ":")
	if ok && id != "" && len(id) <= partyMax && strings.TrimSpace(id) == id && !strings.ContainsAny(id, "/\n\r") {
		for k, n := range partyKinds {
			if n == "" || n != kind {
				continue
			}
			if PartyKind(k) == PartyUser {
				act, err := strconv.ParseUint(id, 10, 64)
				if err != nil || strconv.FormatUint(act, 10) != id {
					break
				}
			}
			return Party{Kind: PartyKind(k), ID: id}, nil
		}
	}
	return Party{}, fmt.Errorf("%w: party %q: want activity:ID, sponsor:ID, user:ACT_ID or merchant:ID", ErrInput, s)
}

// Section is a line's place in a statement.
type Section uint8

// Sections.
const (
	Income      Section = iota + 1 // what the party received
	Other                          // fees and commissions, refunds, reversals, expiry returns, internal holds
	Expenditure                    // what the party paid out
)

var sectionNames = [...]string{Income: "income", Other: "other", Expenditure: "expenditure"}

func (s Section) String() string { return sectionNames[s] }

// Line is one line of a statement: a signed amount (fen for money, the
// asset's unit otherwise) and how many postings it sums.
type Line struct {
	Section Section
	Item    string // a grant, a move kind, fee:{party}
	Asset   string
	Amount  int64
	Count   int64
}

// Posting is one input of the statements: a grant credited or one leg of
// a move, as the user's side of it (signed).
type Posting struct {
	At   int64  // unix ms of its booking
	Kind string // "grant" or a move kind's name (consume, refund, ...)
	User uint64 // the user's act_id
	// Activity is a grant's activity, or the activity an expiry returned
	// to; "" otherwise.
	Activity string
	// Merchant is the merchant of a consumption, refund or reversal.
	Merchant string
	Asset    string
	Amount   int64
}

// Kinds of posting with a rule here beyond the user's own line.
const (
	KindGrant   = "grant"
	KindConsume = "consume"
	KindRefund  = "refund"
	KindReverse = "reverse"
	KindExpire  = "expire"
)

// ItemExpiryReturn is an activity's line for the expired share that
// returned to its budgets.
const ItemExpiryReturn = "expiry_return"

// FeeItem is a merchant's line of a fee party's share.
func FeeItem(party string) string { return "fee:" + party }

// Config is what folding needs of the configuration.
type Config struct {
	// Sponsors maps an activity to its sponsor; an activity not in it is
	// its own sponsor.
	Sponsors map[string]string
	// Rules are the revenue split per merchant; Default, when set, splits
	// the others. A merchant with neither keeps its whole gross.
	Rules   map[string]Rule
	Default *Rule
}

// Validate checks every rule.
func (c *Config) Validate() error {
	for _, m := range slices.Sorted(mapsKeys(c.Rules)) {
		if err := c.Rules[m].Validate(); err != nil {
			return fmt.Errorf("merchant %q: %w", m, err)
		}
	}
	if c.Default != nil {
		if err := c.Default.Validate(); err != nil {
			return fmt.Errorf("default rule: %w", err)
		}
	}
	return nil
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// Aggregate is one party's statement of one day (or, summed, of a
// period).
type Aggregate struct {
	Lines []Line // sorted by section, item and asset
	// Residual is, per asset, the merchant's residual share summed split
	// by split (merchants only): the net computed apart from the lines.
	Residual []AssetAmount
}

// AssetAmount is an amount of one asset.
type AssetAmount struct {
	Asset  string
	Amount int64
}

// AddUser folds p into a as the line of the user it credits or debits
// (the user's side of a posting: a grant, one leg of a move).
func (a *Aggregate) AddUser(p *Posting) {
	a.add(userSection(p.Kind, p.Amount), p.Kind, p.Asset, p.Amount, 1)
}

// add adds amount to the line (section, item, asset), counting n postings.
func (a *Aggregate) add(s Section, item, asset string, amount, n int64) {
	for i := range a.Lines {
		l := &a.Lines[i]
		if l.Section == s && l.Item == item && l.Asset == asset {
			l.Amount += amount
			l.Count += n
			return
		}
	}
	a.Lines = append(a.Lines, Line{Section: s, Item: item, Asset: asset, Amount: amount, Count: n})
}

func (a *Aggregate) addResidual(asset string, amount int64) {
	for i := range a.Residual {
		if a.Residual[i].Asset == asset {
			a.Residual[i].Amount += amount
			return
		}
	}
	a.Residual = append(a.Residual, AssetAmount{Asset: asset, Amount: amount})
}

// Merge adds b's lines and residuals to a.
func (a *Aggregate) Merge(b *Aggregate) {
	for _, l := range b.Lines {
		a.add(l.Section, l.Item, l.Asset, l.Amount, l.Count)
	}
	for _, r := range b.Residual {
		a.addResidual(r.Asset, r.Amount)
	}
}

// Sort puts the lines and residuals in their order.
func (a *Aggregate) Sort() {
	slices.SortFunc(a.Lines, func(x, y Line) int {
		return cmp.Or(cmp.Compare(x.Section, y.Section), cmp.Compare(x.Item, y.Item), cmp.Compare(x.Asset, y.Asset))
	})
	slices.SortFunc(a.Residual, func(x, y AssetAmount) int { return cmp.Compare(x.Asset, y.Asset) })
}

// Totals are a statement's sums per asset.
type Totals struct {
	Asset                           string
	Income, Other, Expenditure, Net int64
}

// Totals sums the lines per asset, in asset order.
func (a *Aggregate) Totals() []Totals {
	var out []Totals
	for _, l := range a.Lines {
		i := slices.IndexFunc(out, func(t Totals) bool { return t.Asset == l.Asset })
		if i < 0 {
			out = append(out, Totals{Asset: l.Asset})
			i = len(out) - 1
		}
		t := &out[i]
		switch l.Section {
		case Income:
			t.Income += l.Amount
		case Other:
			t.Other += l.Amount
		case Expenditure:
			t.Expenditure += l.Amount
		}
		t.Net += l.Amount
	}
	slices.SortFunc(out, func(x, y Totals) int { return cmp.Compare(x.Asset, y.Asset) })
	return out
}

// Check verifies a merchant's balance rule: per asset, the lines' net
// (gross less the fee shares) equals the residual shares summed split by
// split. Other parties have no residual and pass.
func (a *Aggregate) Check(p Party) error {
	if p.Kind != PartyMerchant {
		return nil
	}
	net := map[string]int64{}
	for _, t := range a.Totals() {
		net[t.Asset] = t.Net
	}
	res := map[string]int64{}
	for _, r := range a.Residual {
		res[r.Asset] = r.Amount
	}
	for asset, n := range net {
		if res[asset] != n {
			return fmt.Errorf("statement: %s %s: lines net %d, residual shares sum %d", p, asset, n, res[asset])
		}
	}
	for asset, r := range res {
		if _, ok := net[asset]; !ok && r != 0 {
			return fmt.Errorf("statement: %s %s: no lines, residual shares sum %d", p, asset, r)
		}
	}
	return nil
}

// Day is a UTC day counted from 1970-01-01 (day 0).
type Day int32

// DayOf is the UTC day of a unix ms time.
func DayOf(unixMs int64) Day {
	d := unixMs / msPerDay
	if unixMs%msPerDay < 0 {
		d--
	}
	return Day(d)
}

const msPerDay = 24 * 3600 * 1000

// Start is the day's first unix ms.
func (d Day) Start() int64 { return int64(d) * msPerDay }

// dayKey is an aggregate's place in an Aggregator.
type dayKey struct {
	day  Day
	kind PartyKind
	act  uint64 // users
	id   string // the others
}

// Aggregator folds postings into per party-day aggregates. It is not safe
// for concurrent use; one folds one batch of journals.
type Aggregator struct {
	// NoUsers folds no user lines: the statements folder stores none (a
	// user's statement is read from the user's account entries, AddUser).
	NoUsers bool

	cfg   *Config
	aggs  map[dayKey]*Aggregate
	split []int64 // scratch
	lost  []int64
	// feeItems are the fee lines' items per merchant with a rule, the
	// default rule's under "".
	feeItems map[string][]string
	last     [PartyMerchant + 1]lastAgg
}

// NewAggregator returns an empty aggregator over cfg, which must validate.
func NewAggregator(cfg *Config) (*Aggregator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := 1
	items := map[string][]string{}
	add := func(m string, r *Rule) {
		n = max(n, len(r.Fees)+1)
		for _, f := range r.Fees {
			items[m] = append(items[m], FeeItem(f.Party))
		}
		if items[m] == nil {
			items[m] = []string{}
		}
	}
	for m, r := range cfg.Rules {
		add(m, &r)
	}
	if cfg.Default != nil {
		add("", cfg.Default)
	}
	return &Aggregator{cfg: cfg, aggs: map[dayKey]*Aggregate{}, split: make([]int64, 0, n), lost: make([]int64, 0, n), feeItems: items}, nil
}

func (g *Aggregator) at(k dayKey) *Aggregate {
	// Consecutive postings mostly share an activity, sponsor and merchant:
	// the last aggregate of each kind is compared before the map is asked.
	last := &g.last[k.kind]
	if last.agg != nil && last.key == k {
		return last.agg
	}
	a := g.aggs[k]
	if a == nil {
		a = &Aggregate{}
		g.aggs[k] = a
	}
	*last = lastAgg{k, a}
	return a
}

type lastAgg struct {
	key dayKey
	agg *Aggregate
}

// userSection is where a user's posting of kind goes.
func userSection(kind string, amount int64) Section {
	switch kind {
	case KindGrant, "recharge", "transfer_in", "gift_in":
		return Income
	case KindConsume, "transfer_out", "gift_out", KindExpire, "withdraw_settle", "withdraw_debt":
		return Expenditure
	case KindRefund, KindReverse, "withdraw_hold", "withdraw_reverse":
		return Other
	}
	if amount >= 0 {
		return Income
	}
	return Expenditure
}

// Add folds one posting.
func (g *Aggregator) Add(p *Posting) error {
	if p.Kind == "" || p.Asset == "" {
		return fmt.Errorf("%w: posting without a kind or asset", ErrInput)
	}
	day := DayOf(p.At)
	if !g.NoUsers {
		g.at(dayKey{day: day, kind: PartyUser, act: p.User}).AddUser(p)
	}
	switch p.Kind {
	case KindGrant:
		if p.Activity == "" {
			return fmt.Errorf("%w: grant without an activity", ErrInput)
		}
		g.activity(day, p.Activity, Expenditure, KindGrant, p.Asset, -p.Amount)
	case KindExpire:
		if p.Activity != "" {
			g.activity(day, p.Activity, Other, ItemExpiryReturn, p.Asset, -p.Amount)
		}
	case KindConsume, KindRefund, KindReverse:
		if p.Merchant == "" {
			return fmt.Errorf("%w: %s without a merchant", ErrInput, p.Kind)
		}
		return g.merchant(day, p)
	}
	return nil
}

// AddGrants folds count grants of activity, booked at at, that paid
// amount of asset in all: what Add folds of each of them, summed (the
// statements folder's sums of a journal's grants). Only without user
// lines (NoUsers), which need each grant.
func (g *Aggregator) AddGrants(at int64, activity, asset string, amount, count int64) error {
	switch {
	case !g.NoUsers:
		return fmt.Errorf("%w: grants summed where user lines are folded", ErrInput)
	case activity == "" || asset == "":
		return fmt.Errorf("%w: grants without an activity or asset", ErrInput)
	case count <= 0:
		return fmt.Errorf("%w: %d grants summed", ErrInput, count)
	}
	g.activityN(DayOf(at), activity, Expenditure, KindGrant, asset, -amount, count)
	return nil
}

func (g *Aggregator) activity(day Day, act string, s Section, item, asset string, amount int64) {
	g.activityN(day, act, s, item, asset, amount, 1)
}

// activityN adds n postings of amount in all to the activity's line and
// its sponsor's.
func (g *Aggregator) activityN(day Day, act string, s Section, item, asset string, amount, n int64) {
	g.at(dayKey{day: day, kind: PartyActivity, id: act}).add(s, item, asset, amount, n)
	sp := act
	if v, ok := g.cfg.Sponsors[act]; ok {
		sp = v
	}
	g.at(dayKey{day: day, kind: PartySponsor, id: sp}).add(s, item, asset, amount, n)
}

// merchant folds a consumption, refund or reversal: the merchant's gross
// (the user's side negated) and its split.
func (g *Aggregator) merchant(day Day, p *Posting) error {
	gross := -p.Amount
	a := g.at(dayKey{day: day, kind: PartyMerchant, id: p.Merchant})
	s := Income
	if p.Kind != KindConsume {
		s = Other
	}
	a.add(s, p.Kind, p.Asset, gross, 1)
	rule, ok := g.cfg.Rules[p.Merchant]
	if !ok && g.cfg.Default != nil {
		rule, ok = *g.cfg.Default, true
	}
	if !ok {
		a.addResidual(p.Asset, gross)
		return nil
	}
	shares, err := rule.splitInto(g.split[:0], g.lost[:0], gross)
	if err != nil {
		return err
	}
	g.split = shares
	items := g.feeItems[p.Merchant]
	if items == nil {
		items = g.feeItems[""]
	}
	for i := range rule.Fees {
		a.add(Other, items[i], p.Asset, -shares[i], 1)
	}
	a.addResidual(p.Asset, shares[len(rule.Fees)])
	return nil
}

// DayAggregate is one party's aggregate of one day.
type DayAggregate struct {
	Day   Day
	Party Party
	Agg   *Aggregate
}

// Days returns the aggregates folded, in no order (each one's lines
// sorted), and empties the aggregator.
func (g *Aggregator) Days() []DayAggregate {
	out := make([]DayAggregate, 0, len(g.aggs))
	for k, a := range g.aggs {
		p := Party{Kind: k.kind, ID: k.id}
		if k.kind == PartyUser {
			p.ID = strconv.FormatUint(k.act, 10)
		}
		a.Sort()
		out = append(out, DayAggregate{Day: k.day, Party: p, Agg: a})
	}
	clear(g.aggs)
	g.last = [PartyMerchant + 1]lastAgg{}
	return out
}

// Len is how many party-day aggregates the aggregator holds.
func (g *Aggregator) Len() int { return len(g.aggs) }
