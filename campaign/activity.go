package campaign

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"sort"
	"strconv"
	"strings"
	"time"

	"redrain/ledger"
	"redrain/tokens"
)

// Activity is a parent activity as operators write it: its rains, the
// awards it can give, and its child activities (stages), each with its own
// whitelist and budgets. One Activity is one version of the configuration.
type Activity struct {
	ID string `json:"id"`
	// Sponsor is who pays for the activity: its statements are summed
	// into the sponsor's (redrain statements --party sponsor:ID). Default:
	// the activity itself.
	Sponsor string  `json:"sponsor,omitempty"`
	Rains   []Rain  `json:"rains"`
	Awards  []Award `json:"awards"`
	Stages  []Stage `json:"stages"`
}

// Rain is a time window of an activity in a scene.
type Rain struct {
	SceneID string `json:"scene_id"`
	RainID  uint64 `json:"rain_id"`
	// Start and End bound the window (RFC 3339); with AlwaysOpen the rain
	// is open at any time and Start is still sealed as the token's open time.
	Start      time.Time `json:"start"`
	End        time.Time `json:"end"`
	AlwaysOpen bool      `json:"always_open,omitempty"`
}

// Award kinds: how an award books.
const (
	KindMoney = ledger.KindMoney // cash in fen; asset "cash"
	KindCoin  = ledger.KindCoin  // a fungible virtual currency; asset "coin:{currency}"
	KindItem  = ledger.KindItem  // a counted item by template (coupon, card); asset "item:{template}"
)

// Award is a kind of packet an activity gives. Its budget is set per stage.
type Award struct {
	Type     string `json:"type"`
	Kind     string `json:"kind"`               // money (default), coin or item
	Currency string `json:"currency,omitempty"` // coin only
	Template string `json:"template,omitempty"` // item only
	// Min and Max bound the draw in the kind's unit (fen, coins, items).
	Min    int64  `json:"min"`
	Max    int64  `json:"max"`
	Weight uint32 `json:"weight,omitempty"` // relative chance; default 1
	// Thresholds change the draw once a share of the budget is spent: the
	// one with the largest Spent not above the spent share applies.
	Thresholds []Threshold `json:"thresholds,omitempty"`
	// Fallback is what a user gets when this award's budget cannot pay: ""
	// answers budget_exhausted, "none" answers "no award" (the user's packet
	// for the rain is used up), any other value names an award of the same
	// stage to grant instead.
	Fallback string `json:"fallback,omitempty"`
}

// MaxAmount is the largest amount the award can draw: its range's or a
// threshold's maximum.
func (a *Award) MaxAmount() int64 {
	m := a.Max
	for _, t := range a.Thresholds {
		m = max(m, t.Max)
	}
	return m
}

// Threshold is a draw range that applies from Spent percent of the budget.
type Threshold struct {
	Spent int   `json:"spent_percent"` // 1..99
	Min   int64 `json:"min"`
	Max   int64 `json:"max"`
}

// Stage is a child activity.
type Stage struct {
	Stage string `json:"stage"` // internal, gray or formal
	// Whitelist holds "app_id:user_id" entries. The admin API resolves them
	// to unified act_ids when a version is stored (ActIDs); stage choice
	// uses act_ids only, so a user bound in two apps lands in one stage.
	Whitelist []string `json:"whitelist,omitempty"`
	ActIDs    []uint64 `json:"act_ids,omitempty"`
	// Percent (gray only) admits this share of all users, by a stable hash
	// of act_id; two decimals are kept.
	Percent float64 `json:"percent,omitempty"`
	// Budgets is the total per award type, in the award's unit. An award
	// without a budget here is not offered in this stage.
	Budgets map[string]int64 `json:"budgets"`
}

// FallbackNone is the Fallback value that answers "no award".
const FallbackNone = "none"

// BudgetID names the budget of an award in a child activity.
func BudgetID(activityID string, stage tokens.Stage, awardType string) string {
	return activityID + "/" + stage.String() + "/" + awardType
}

// AssetOf is the booking asset of an award: one per kind and currency or
// template, so that double entry balances per kind of value.
func (w *Award) AssetOf() ledger.Asset {
	switch w.Kind {
	case KindCoin:
		return ledger.CoinAsset(w.Currency)
	case KindItem:
		return ledger.ItemAsset(w.Template)
	default:
		return ledger.AssetCash
	}
}

// SponsorOf is the activity's sponsor: Sponsor, or the activity itself.
func (a *Activity) SponsorOf() string {
	if a.Sponsor != "" {
		return a.Sponsor
	}
	return a.ID
}

// ParseActivity decodes one activity strictly: unknown fields, trailing
// data and a missing id are errors.
func ParseActivity(raw []byte) (*Activity, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var a Activity
	if err := dec.Decode(&a); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the activity", ErrInvalid)
	}
	return &a, nil
}

// Version is one compiled version of a parent activity: immutable, safe
// for concurrent use.
type Version struct {
	ID      string
	Version uint64
	Spec    *Activity
	rains   map[rainKey]*Rain
	// children by tokens.Stage; nil where the stage is not configured.
	children [3]*Child
}

type rainKey struct {
	scene string
	rain  uint64
}

// Child is a stage of a version: the awards it offers, with their budgets.
type Child struct {
	Version     *Version
	Stage       tokens.Stage
	Awards      []*ChildAward
	byType      map[string]*ChildAward
	weightTotal uint64
	actIDs      map[uint64]struct{}
	grayBP      uint32 // basis points of all users admitted (gray)
}

// ChildAward is an award as one stage offers it.
type ChildAward struct {
	*Award
	Asset    ledger.Asset
	BudgetID string
	Total    int64
	// FallbackTo is the award granted when this one's budget cannot pay;
	// nil with NoAward false answers budget_exhausted.
	FallbackTo *ChildAward
	NoAward    bool
}

// Rain returns the version's rain, or nil.
func (v *Version) Rain(sceneID string, rainID uint64) *Rain {
	return v.rains[rainKey{sceneID, rainID}]
}

// Child returns the version's child for stage, or nil.
func (v *Version) Child(s tokens.Stage) *Child {
	if int(s) >= len(v.children) {
		return nil
	}
	return v.children[s]
}

// Children lists the configured children.
func (v *Version) Children() []*Child {
	var out []*Child
	for _, c := range v.children {
		if c != nil {
			out = append(out, c)
		}
	}
	return out
}

// ChildFor chooses the stage a user lands in: the internal whitelist, then
// the gray whitelist or percentage, then formal. nil: the user is in no
// configured stage.
func (v *Version) ChildFor(actID uint64) *Child {
	if c := v.children[tokens.StageInternal]; c != nil {
		if _, ok := c.actIDs[actID]; ok {
			return c
		}
	}
	if c := v.children[tokens.StageGray]; c != nil {
		if _, ok := c.actIDs[actID]; ok || grayBucket(v.ID, actID) < c.grayBP {
			return c
		}
	}
	return v.children[tokens.StageFormal]
}

// grayBucket places a user in one of 10000 buckets, stable per activity.
func grayBucket(activityID string, actID uint64) uint32 {
	h := fnv.New64a()
	h.Write([]byte(activityID))
	var b [8]byte
	for i := range b {
		b[i] = byte(actID >> (8 * i))
	}
	h.Write(b[:])
	return uint32(h.Sum64() % 10000)
}

// Open reports whether the rain accepts grants at now.
func (r *Rain) Open(now time.Time) bool {
	if r.AlwaysOpen {
		return true
	}
	return !now.Before(r.Start) && now.Before(r.End)
}

// PickAward chooses an award by weight from seed.
func (c *Child) PickAward(seed uint64) *ChildAward {
	if w := c.OnlyAward(); w != nil {
		return w
	}
	x := uint64(ledger.Draw(seed^0x5bd1e995, 0, int64(c.weightTotal-1)))
	for _, w := range c.Awards {
		if x < uint64(w.Weight) {
			return w
		}
		x -= uint64(w.Weight)
	}
	return c.Awards[len(c.Awards)-1]
}

// OnlyAward returns the child's award when it has one, which PickAward
// picks whatever the seed (so a caller can skip deriving one), or nil.
func (c *Child) OnlyAward() *ChildAward {
	if len(c.Awards) == 1 {
		return c.Awards[0]
	}
	return nil
}

// Award returns the child's award of type t, or nil.
func (c *Child) Award(t string) *ChildAward { return c.byType[t] }

// Range is the draw range with spentBP basis points of the budget spent.
func (w *ChildAward) Range(spentBP int64) (lo, hi int64) {
	lo, hi = w.Min, w.Max
	for _, t := range w.Thresholds { // sorted by Spent
		if int64(t.Spent)*100 <= spentBP {
			lo, hi = t.Min, t.Max
		}
	}
	return lo, hi
}

// MaxAmount is the largest amount one grant of w can take.
func (w *ChildAward) MaxAmount() int64 {
	m := w.Max
	for _, t := range w.Thresholds {
		m = max(m, t.Max)
	}
	return m
}

// CompileActivity validates a and indexes it as version v.
func CompileActivity(a *Activity, v uint64) (*Version, error) {
	bad := func(format string, args ...any) (*Version, error) {
		return nil, fmt.Errorf("%w: activity %q: "+format, append([]any{ErrInvalid, a.ID}, args...)...)
	}
	if !validID(a.ID) {
		return bad("id: want 1-64 characters of [A-Za-z0-9.-]")
	}
	if a.Sponsor != "" && !validID(a.Sponsor) {
		return bad("sponsor: want 1-64 characters of [A-Za-z0-9.-]")
	}
	if len(a.Rains) == 0 || len(a.Awards) == 0 || len(a.Stages) == 0 {
		return bad("needs at least one rain, one award and one stage")
	}
	out := &Version{ID: a.ID, Version: v, Spec: a, rains: make(map[rainKey]*Rain)}
	for j := range a.Rains {
		r := &a.Rains[j]
		if !validID(r.SceneID) || r.RainID == 0 {
			return bad("rains[%d]: want a scene_id and a rain_id >= 1", j)
		}
		if !r.AlwaysOpen && !r.End.After(r.Start) {
			return bad("rain %s/%d: end must be after start (or always_open)", r.SceneID, r.RainID)
		}
		k := rainKey{r.SceneID, r.RainID}
		if out.rains[k] != nil {
			return bad("rain %s/%d defined twice", r.SceneID, r.RainID)
		}
		out.rains[k] = r
	}
	awards := map[string]*Award{}
	for j := range a.Awards {
		w := &a.Awards[j]
		if err := checkAward(w); err != nil {
			return bad("awards[%d]: %v", j, err)
		}
		if awards[w.Type] != nil {
			return bad("award %q defined twice", w.Type)
		}
		awards[w.Type] = w
	}
	for j := range a.Stages {
		s := &a.Stages[j]
		stage, err := tokens.ParseStage(s.Stage)
		if err != nil {
			return bad("stages[%d]: stage %q: want internal, gray or formal", j, s.Stage)
		}
		if out.children[stage] != nil {
			return bad("stage %s defined twice", stage)
		}
		c, err := compileChild(out, stage, s, awards)
		if err != nil {
			return bad("stage %s: %v", stage, err)
		}
		out.children[stage] = c
	}
	return out, nil
}

func checkAward(w *Award) error {
	if !validID(w.Type) || w.Type == FallbackNone {
		return fmt.Errorf("type %q: want 1-64 characters of [A-Za-z0-9.-], not %q", w.Type, FallbackNone)
	}
	switch w.Kind {
	case "":
		w.Kind = KindMoney
		fallthrough
	case KindMoney:
		if w.Currency != "" || w.Template != "" {
			return fmt.Errorf("award %q: money takes no currency or template", w.Type)
		}
	case KindCoin:
		if !validID(w.Currency) || w.Template != "" {
			return fmt.Errorf("award %q: a coin award needs a currency (and no template)", w.Type)
		}
	case KindItem:
		if !validID(w.Template) || w.Currency != "" {
			return fmt.Errorf("award %q: an item award needs a template (and no currency)", w.Type)
		}
	default:
		return fmt.Errorf("award %q: kind %q: want money, coin or item", w.Type, w.Kind)
	}
	if w.Weight == 0 {
		w.Weight = 1
	}
	limit := int64(1) << 40 // 11 billion yuan in fen: far above any packet
	if w.Kind == KindItem {
		limit = ledger.ItemsPerGrantMax
	}
	checkRange := func(what string, lo, hi int64) error {
		if lo < 1 || hi < lo || hi > limit {
			return fmt.Errorf("award %q %s: want 1 <= min <= max <= %d", w.Type, what, limit)
		}
		return nil
	}
	if err := checkRange("", w.Min, w.Max); err != nil {
		return err
	}
	sort.SliceStable(w.Thresholds, func(i, j int) bool { return w.Thresholds[i].Spent < w.Thresholds[j].Spent })
	for i, t := range w.Thresholds {
		if t.Spent < 1 || t.Spent > 99 || (i > 0 && w.Thresholds[i-1].Spent == t.Spent) {
			return fmt.Errorf("award %q threshold %d: spent_percent must be 1..99 and distinct", w.Type, i)
		}
		if err := checkRange("threshold "+strconv.Itoa(t.Spent)+"%", t.Min, t.Max); err != nil {
			return err
		}
	}
	return nil
}

func compileChild(v *Version, stage tokens.Stage, s *Stage, awards map[string]*Award) (*Child, error) {
	c := &Child{Version: v, Stage: stage, byType: map[string]*ChildAward{}, actIDs: map[uint64]struct{}{}}
	if len(s.Budgets) == 0 {
		return nil, fmt.Errorf("no budgets")
	}
	if s.Percent < 0 || s.Percent > 100 || (s.Percent != 0 && stage != tokens.StageGray) {
		return nil, fmt.Errorf("percent %v: only the gray stage takes one, 0..100", s.Percent)
	}
	c.grayBP = uint32(s.Percent*100 + 0.5)
	if stage == tokens.StageFormal && (len(s.Whitelist) > 0 || len(s.ActIDs) > 0) {
		return nil, fmt.Errorf("formal takes every user: no whitelist")
	}
	if len(s.Whitelist) > 0 && len(s.ActIDs) == 0 {
		return nil, fmt.Errorf("whitelist not resolved to act_ids (store it through the admin API)")
	}
	for _, e := range s.Whitelist {
		if _, _, err := ParseIdentity(e); err != nil {
			return nil, err
		}
	}
	for _, id := range s.ActIDs {
		if id == 0 {
			return nil, fmt.Errorf("act_id 0")
		}
		c.actIDs[id] = struct{}{}
	}
	if stage != tokens.StageFormal && len(c.actIDs) == 0 && c.grayBP == 0 {
		return nil, fmt.Errorf("admits nobody: give a whitelist (or a gray percent)")
	}
	// Awards in the activity's order, so that draws do not depend on map order.
	for i := range v.Spec.Awards {
		w := &v.Spec.Awards[i]
		total, ok := s.Budgets[w.Type]
		if !ok {
			continue
		}
		if total < 0 {
			return nil, fmt.Errorf("award %q: budget %d < 0", w.Type, total)
		}
		ca := &ChildAward{Award: w, Asset: w.AssetOf(), BudgetID: BudgetID(v.ID, stage, w.Type), Total: total}
		c.Awards = append(c.Awards, ca)
		c.byType[w.Type] = ca
		c.weightTotal += uint64(w.Weight)
	}
	for t := range s.Budgets {
		if awards[t] == nil {
			return nil, fmt.Errorf("budget for unknown award %q", t)
		}
	}
	for _, ca := range c.Awards {
		switch f := ca.Fallback; {
		case f == "":
		case f == FallbackNone:
			ca.NoAward = true
		case c.byType[f] == nil:
			return nil, fmt.Errorf("award %q: fallback %q is not offered in this stage", ca.Type, f)
		default:
			ca.FallbackTo = c.byType[f]
		}
	}
	// A fallback chain must end: no award reached again.
	for _, ca := range c.Awards {
		seen := map[*ChildAward]bool{}
		for w := ca; w != nil; w = w.FallbackTo {
			if seen[w] {
				return nil, fmt.Errorf("award %q: fallbacks form a cycle", ca.Type)
			}
			seen[w] = true
		}
	}
	return c, nil
}

// ParseIdentity reads an "app_id:user_id" whitelist entry.
func ParseIdentity(s string) (app uint32, user string, err error) {
	a, u, ok := strings.Cut(s, ":")
	n, perr := strconv.ParseUint(a, 10, 32)
	if !ok || perr != nil || u == "" || len(u) > 128 {
		return 0, "", fmt.Errorf("%w: whitelist entry %q: want app_id:user_id", ErrInvalid, s)
	}
	return uint32(n), u, nil
}

// SameAwards reports the first award type whose booking (kind, currency or
// template) differs between two versions: an award keeps its asset for
// life, so tokens of an older version book into what they were issued as.
func SameAwards(prev, next *Activity) error {
	old := map[string]*Award{}
	for i := range prev.Awards {
		old[prev.Awards[i].Type] = &prev.Awards[i]
	}
	for i := range next.Awards {
		w := &next.Awards[i]
		if o := old[w.Type]; o != nil && o.AssetOf() != w.AssetOf() {
			return fmt.Errorf("%w: award %q books into %s in earlier versions, not %s", ErrInvalid, w.Type, o.AssetOf(), w.AssetOf())
		}
	}
	return nil
}
