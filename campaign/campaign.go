// Package campaign holds the configuration of what redrain issues:
// activities, their rains and awards, budgets, the draw salt and token keys.
// It is immutable once loaded; the built-in demo campaign serves `redrain
// serve` when no config file is given.
package campaign

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"redrain/ledger"
	"redrain/tokens"
)

// ErrInvalid wraps every validation failure of a config.
var ErrInvalid = errors.New("campaign: invalid config")

// Config is the file format (JSON).
type Config struct {
	Activities []Activity `json:"activities"`
	// TokenKeys are "ID:HEX" secrets (at least 32 bytes); every key opens
	// tokens, ActiveTokenKey seals new ones.
	TokenKeys      []string `json:"token_keys"`
	ActiveTokenKey uint16   `json:"active_token_key"`
	// DrawSalt keys the deterministic amount draw.
	DrawSalt string `json:"draw_salt"`
}

// Activity is a campaign activity with its rains and awards.
type Activity struct {
	ID     string  `json:"id"`
	Rains  []Rain  `json:"rains"`
	Awards []Award `json:"awards"`
}

// Rain is a time window of an activity in a scene.
type Rain struct {
	SceneID string `json:"scene_id"`
	RainID  uint64 `json:"rain_id"`
	// Start and End bound the window (RFC 3339); with AlwaysOpen the rain
	// is open at any time and Start is still sealed as the token's open time.
	Start      time.Time `json:"start"`
	End        time.Time `json:"end"`
	AlwaysOpen bool      `json:"always_open"`
}

// Award is a kind of packet an activity gives, with its budget.
type Award struct {
	Type   string `json:"type"`   // e.g. "cash"
	Asset  string `json:"asset"`  // what it books into; defaults to "cash" for type cash
	Budget int64  `json:"budget"` // total, in minor units
	Min    int64  `json:"min"`    // the draw's range, minor units
	Max    int64  `json:"max"`
	Weight uint32 `json:"weight"` // relative chance among the activity's awards; default 1
}

// BudgetID names the budget of an award in an activity.
func BudgetID(activityID, awardType string) string { return activityID + "/" + awardType }

// Demo is the built-in campaign: activity "demo", scene "rain", rain 1,
// always open, one cash award of 1..200 fen from a budget of 10^12 fen.
// Its token key is public and for development only.
func Demo() *Config {
	return &Config{
		Activities: []Activity{{
			ID:     "demo",
			Rains:  []Rain{{SceneID: "rain", RainID: 1, AlwaysOpen: true, Start: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}},
			Awards: []Award{{Type: "cash", Budget: 1_000_000_000_000, Min: 1, Max: 200}},
		}},
		TokenKeys:      []string{"1:" + demoKeyHex},
		ActiveTokenKey: 1,
		DrawSalt:       "demo",
	}
}

// demoKeyHex is the development token key of the demo campaign. It is
// public: never use it for a real campaign.
const demoKeyHex = "7265647261696e2d64656d6f2d6b65792d6e6f742d666f722d70726f64756374696f6e"

// Load reads and validates a config file; unknown fields are errors.
func Load(path string) (*Campaign, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("campaign: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, path, err)
	}
	return Compile(&c)
}

// Campaign is a validated, indexed config.
type Campaign struct {
	Config     *Config
	Ring       *tokens.Ring
	activities map[string]*CompiledActivity
}

// CompiledActivity is an activity ready for lookups.
type CompiledActivity struct {
	ID          string
	Awards      []Award
	weightTotal uint64
	rains       map[rainKey]*Rain
}

type rainKey struct {
	scene string
	rain  uint64
}

// Activity returns the activity with id, or nil.
func (c *Campaign) Activity(id string) *CompiledActivity { return c.activities[id] }

// Activities lists every activity.
func (c *Campaign) Activities() []*CompiledActivity {
	out := make([]*CompiledActivity, 0, len(c.activities))
	for _, a := range c.Config.Activities {
		out = append(out, c.activities[a.ID])
	}
	return out
}

// Rain returns the activity's rain, or nil.
func (a *CompiledActivity) Rain(sceneID string, rainID uint64) *Rain {
	return a.rains[rainKey{sceneID, rainID}]
}

// Open reports whether the rain accepts grants at now.
func (r *Rain) Open(now time.Time) bool {
	if r.AlwaysOpen {
		return true
	}
	return !now.Before(r.Start) && now.Before(r.End)
}

// PickAward chooses an award by weight from seed.
func (a *CompiledActivity) PickAward(seed uint64) *Award {
	if len(a.Awards) == 1 {
		return &a.Awards[0]
	}
	x := uint64(ledger.Draw(seed^0x5bd1e995, 0, int64(a.weightTotal-1)))
	for i := range a.Awards {
		w := uint64(a.Awards[i].Weight)
		if x < w {
			return &a.Awards[i]
		}
		x -= w
	}
	return &a.Awards[len(a.Awards)-1]
}

// Compile validates c and indexes it.
func Compile(c *Config) (*Campaign, error) {
	bad := func(format string, args ...any) (*Campaign, error) {
		return nil, fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
	}
	if len(c.Activities) == 0 {
		return bad("no activities")
	}
	if len(c.TokenKeys) == 0 {
		return bad("no token_keys")
	}
	keys := make([]tokens.Key, 0, len(c.TokenKeys))
	for i, s := range c.TokenKeys {
		k, err := tokens.ParseKey(s)
		if err != nil {
			return bad("token_keys[%d]: %v", i, err)
		}
		keys = append(keys, k)
	}
	ring, err := tokens.NewRing(c.ActiveTokenKey, keys...)
	if err != nil {
		return bad("token keys: %v", err)
	}
	out := &Campaign{Config: c, Ring: ring, activities: make(map[string]*CompiledActivity)}
	for i := range c.Activities {
		a := &c.Activities[i]
		if !validID(a.ID) {
			return bad("activities[%d]: id %q: want 1-64 characters of [A-Za-z0-9.-]", i, a.ID)
		}
		if out.activities[a.ID] != nil {
			return bad("activity %q defined twice", a.ID)
		}
		ca := &CompiledActivity{ID: a.ID, rains: make(map[rainKey]*Rain)}
		if len(a.Rains) == 0 || len(a.Awards) == 0 {
			return bad("activity %q: needs at least one rain and one award", a.ID)
		}
		for j := range a.Rains {
			r := &a.Rains[j]
			if !validID(r.SceneID) || r.RainID == 0 {
				return bad("activity %q rains[%d]: want a scene_id and a rain_id >= 1", a.ID, j)
			}
			if !r.AlwaysOpen && !r.End.After(r.Start) {
				return bad("activity %q rain %s/%d: end must be after start (or always_open)", a.ID, r.SceneID, r.RainID)
			}
			k := rainKey{r.SceneID, r.RainID}
			if ca.rains[k] != nil {
				return bad("activity %q rain %s/%d defined twice", a.ID, r.SceneID, r.RainID)
			}
			ca.rains[k] = r
		}
		seen := map[string]bool{}
		for j := range a.Awards {
			w := a.Awards[j]
			if !validID(w.Type) || seen[w.Type] {
				return bad("activity %q awards[%d]: type %q missing, invalid or repeated", a.ID, j, w.Type)
			}
			seen[w.Type] = true
			if w.Asset == "" {
				w.Asset = string(ledger.AssetCash)
			}
			if w.Weight == 0 {
				w.Weight = 1
			}
			if w.Budget < 0 || w.Min < 1 || w.Max < w.Min {
				return bad("activity %q award %q: want budget >= 0 and 1 <= min <= max", a.ID, w.Type)
			}
			ca.weightTotal += uint64(w.Weight)
			ca.Awards = append(ca.Awards, w)
		}
		out.activities[a.ID] = ca
	}
	return out, nil
}

func validID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		// No '_': it separates the parts of idempotency and limit keys.
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}
