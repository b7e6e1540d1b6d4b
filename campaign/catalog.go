package campaign

import (
	"time"

	"redrain/ledger"
	"redrain/tokens"
)

// Catalog is what a node serves: for each parent activity, the version
// published to all and, during a gray release of the configuration, the
// version published to a whitelist of users. It is immutable: a publish
// builds a new catalog and swaps it in whole.
type Catalog struct {
	Seq        uint64 // the configuration store's change counter it was built from
	activities map[string]*Published
}

// Published is a parent activity's served versions.
type Published struct {
	Live *Version // nil until a version is published to all
	// Canary is served to the act_ids in canaryUsers instead of Live.
	Canary      *Version
	canaryUsers map[uint64]struct{}
}

// NewCatalog builds an empty catalog at seq.
func NewCatalog(seq uint64) *Catalog {
	return &Catalog{Seq: seq, activities: map[string]*Published{}}
}

// Add publishes live (may be nil) and a canary version for users.
func (c *Catalog) Add(live, canary *Version, canaryUsers []uint64) {
	p := &Published{Live: live, Canary: canary, canaryUsers: map[uint64]struct{}{}}
	for _, id := range canaryUsers {
		p.canaryUsers[id] = struct{}{}
	}
	id := ""
	if live != nil {
		id = live.ID
	} else if canary != nil {
		id = canary.ID
	}
	c.activities[id] = p
}

// Activity returns the published parent activity id, or nil.
func (c *Catalog) Activity(id string) *Published { return c.activities[id] }

// IDs lists the published activities.
func (c *Catalog) IDs() []string {
	out := make([]string, 0, len(c.activities))
	for id := range c.activities {
		out = append(out, id)
	}
	return out
}

// For returns the version actID is served; nil if none is published to it.
func (p *Published) For(actID uint64) *Version {
	if p.Canary != nil {
		if _, ok := p.canaryUsers[actID]; ok {
			return p.Canary
		}
	}
	return p.Live
}

// RainState reports whether any served version has the rain, and whether
// one has it open at now: what can be refused before a user is known.
func (p *Published) RainState(sceneID string, rainID uint64, now time.Time) (known, open bool) {
	// Not Versions: its slice escapes, and this runs once per grant.
	for _, v := range [...]*Version{p.Live, p.Canary} {
		if v == nil {
			continue
		}
		if r := v.Rain(sceneID, rainID); r != nil {
			known = true
			open = open || r.Open(now)
		}
	}
	return known, open
}

// Versions lists the served versions (live first).
func (p *Published) Versions() []*Version {
	var out []*Version
	if p.Live != nil {
		out = append(out, p.Live)
	}
	if p.Canary != nil {
		out = append(out, p.Canary)
	}
	return out
}

// Award finds how a child awards type t in any served version: what an
// already issued token of that award books into.
func (c *Catalog) Award(activity string, stage tokens.Stage, t string) *ChildAward {
	p := c.activities[activity]
	if p == nil {
		return nil
	}
	for _, v := range p.Versions() {
		if ch := v.Child(stage); ch != nil {
			if w := ch.Award(t); w != nil {
				return w
			}
		}
	}
	return nil
}

// AwardMax returns the largest amount that any served version's award t
// of the activity's stage can draw (Award.MaxAmount); false when no served
// version offers it.
func (c *Catalog) AwardMax(activity string, stage tokens.Stage, t string) (int64, bool) {
	p := c.activities[activity]
	if p == nil {
		return 0, false
	}
	var m int64
	found := false
	for _, v := range p.Versions() {
		if ch := v.Child(stage); ch != nil {
			if w := ch.Award(t); w != nil {
				m, found = max(m, w.MaxAmount()), true
			}
		}
	}
	return m, found
}

// Budgets lists every budget the served versions draw from, with the
// asset it holds.
func (c *Catalog) Budgets() map[string]ledger.Asset {
	out := map[string]ledger.Asset{}
	for _, p := range c.activities {
		for _, v := range p.Versions() {
			for _, ch := range v.Children() {
				for _, w := range ch.Awards {
					out[w.BudgetID] = w.Asset
				}
			}
		}
	}
	return out
}

// SeedCatalog serves the campaign file's activities as version 1 each,
// without a configuration store: for programs that embed a grant path, and
// tests. Seeds with whitelists need them resolved first (Stage.ActIDs).
func (c *Campaign) SeedCatalog() (*Catalog, error) {
	cat := NewCatalog(0)
	for _, a := range c.Seeds {
		v, err := CompileActivity(cloneActivity(a), 1)
		if err != nil {
			return nil, err
		}
		cat.Add(v, nil, nil)
	}
	return cat, nil
}
