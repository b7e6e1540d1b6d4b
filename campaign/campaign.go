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
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"redrain/lines"
	"redrain/statement"
	"redrain/tokens"
)

// ErrInvalid wraps every validation failure of a config.
var ErrInvalid = errors.New("campaign: invalid config")

// Config is the node's campaign file (JSON): the settings every activity
// shares, and seed activities. Activities live in the configuration store,
// versioned; a seed is stored and published as version 1 when the store
// has no activity of that id yet, so a node on embedded defaults serves at
// once.
type Config struct {
	Activities []Activity `json:"activities"`
	// TokenKeys are "ID:HEX" secrets (at least 32 bytes); every key opens
	// tokens, ActiveTokenKey seals new ones.
	TokenKeys      []string `json:"token_keys"`
	ActiveTokenKey uint16   `json:"active_token_key"`
	// DrawSalt keys the deterministic amount draw.
	DrawSalt string `json:"draw_salt"`
	// AdminKeys are "ID:HEX" secrets that sign admin requests; none means
	// the public development key (the node warns).
	AdminKeys []string `json:"admin_keys,omitempty"`
	// AppKeys are "APP:HEX" (or "APP.LABEL:HEX") secrets with which client
	// apps sign /v1 requests, the key id naming the app it signs for
	// (adminauth: app keys); none means unsigned requests for any app
	// (embedded demo only: a node on real backends refuses to start).
	AppKeys []string `json:"app_keys,omitempty"`
	// BusinessLines are the other business lines whose users' assets the
	// wallet shows (package lines: id, pull URL, rate, burst, concurrency,
	// dedupe window, timeout); none is valid. Compile fills in their
	// defaults.
	BusinessLines []lines.Line `json:"business_lines,omitempty"`
	// Statements configures the merchants' statements: the revenue split.
	Statements Statements `json:"statements,omitzero"`
	// Validity says how long coins (per currency) and items (per
	// template) stay valid, keyed by asset ("coin:gold", "item:rose"): an
	// asset without one never expires (package expiry sweeps the rest).
	Validity map[string]Validity `json:"validity,omitempty"`
}

// Statements is the statements' configuration: the revenue split of a
// merchant's consumptions, per merchant or by default (none: a merchant
// keeps its whole gross).
type Statements struct {
	DefaultSplit   *SplitRule           `json:"default_split,omitempty"`
	MerchantSplits map[string]SplitRule `json:"merchant_splits,omitempty"`
}

// SplitRule is a revenue split as the campaign file writes it: fee
// parties with rates in parts per million (0.6% is 6000) and the residual
// party (the merchant) that gets the rest.
type SplitRule struct {
	Fees     []SplitFee `json:"fees"`
	Residual string     `json:"residual"`
}

// SplitFee is one fee party of a SplitRule.
type SplitFee struct {
	Party   string `json:"party"`
	RatePPM int64  `json:"rate_ppm"`
}

// Rule is r as package statement applies it.
func (r *SplitRule) Rule() statement.Rule {
	out := statement.Rule{Residual: r.Residual}
	for _, f := range r.Fees {
		out.Fees = append(out.Fees, statement.Share{Party: f.Party, Rate: f.RatePPM})
	}
	return out
}

// StatementConfig is the statements' configuration with sponsors taken
// from activities (each activity's SponsorOf).
func (s *Statements) StatementConfig(activities []*Activity) *statement.Config {
	out := &statement.Config{Sponsors: map[string]string{}, Rules: map[string]statement.Rule{}}
	for _, a := range activities {
		out.Sponsors[a.ID] = a.SponsorOf()
	}
	for m, r := range s.MerchantSplits {
		out.Rules[m] = r.Rule()
	}
	if s.DefaultSplit != nil {
		r := s.DefaultSplit.Rule()
		out.Default = &r
	}
	return out
}

// validate checks every rule (statement.Rule.Validate) and merchant id.
func (s *Statements) validate() error {
	for _, m := range slices.Sorted(maps.Keys(s.MerchantSplits)) {
		if !validID(m) {
			return fmt.Errorf("statements: merchant_splits: merchant %q: want 1-64 characters of [A-Za-z0-9.-]", m)
		}
	}
	if err := s.StatementConfig(nil).Validate(); err != nil {
		return fmt.Errorf("statements: %w", err)
	}
	return nil
}

// Demo is the built-in campaign: activity "demo", scene "rain", rain 1,
// always open, one formal cash award of 1..200 fen from a budget of 10^12
// fen. Its token key is public and for development only.
func Demo() *Config {
	return &Config{
		Activities:     []Activity{DemoActivity()},
		TokenKeys:      []string{"1:" + demoKeyHex},
		ActiveTokenKey: 1,
		DrawSalt:       "demo",
	}
}

// DemoActivity is the demo campaign's activity.
func DemoActivity() Activity {
	return Activity{
		ID:     "demo",
		Rains:  []Rain{{SceneID: "rain", RainID: 1, AlwaysOpen: true, Start: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}},
		Awards: []Award{{Type: "cash", Kind: KindMoney, Min: 1, Max: 200}},
		Stages: []Stage{{Stage: "formal", Budgets: map[string]int64{"cash": 1_000_000_000_000}}},
	}
}

// demoKeyHex is the development token key of the demo campaign. It is
// public: never use it for a real campaign.
const demoKeyHex = "7265647261696e2d64656d6f2d6b65792d6e6f742d666f722d70726f64756374696f6e"

// publicTokenSecrets are token key secrets anyone can read: the demo
// campaign's and those of the files in examples/ (a test keeps them in
// step). Whoever holds a token key can seal tokens that redeem books.
var publicTokenSecrets = []string{
	demoKeyHex,
	"5e1f0c9a7d3b2a6e8f4c1d0b9a8e7f6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a", // examples/campaign.json, key 2
	"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", // examples/campaign.json, key 1
}

// PublicTokenKeys returns the entries of c.TokenKeys whose secret is
// public (publicTokenSecrets), as "key ID" descriptions. A node on real
// backends refuses to start with any.
func (c *Config) PublicTokenKeys() []string {
	var out []string
	for i, s := range c.TokenKeys {
		id, secret, _ := strings.Cut(s, ":")
		for _, pub := range publicTokenSecrets {
			if strings.EqualFold(secret, pub) {
				out = append(out, fmt.Sprintf("token_keys[%d] (id %s)", i, id))
				break
			}
		}
	}
	return out
}

// Load reads and validates a config file; unknown fields are errors.
func Load(path string) (*Campaign, error) { return LoadWithKeys(path, "") }

// Keys are the campaign's secrets in a file of their own (`serve --keys`,
// e.g. a Kubernetes Secret beside a ConfigMap of activities): the fields
// of Config that are keys, with the same JSON names. A field given here
// must be absent from the config file.
type Keys struct {
	TokenKeys      []string `json:"token_keys,omitempty"`
	ActiveTokenKey uint16   `json:"active_token_key,omitempty"`
	DrawSalt       string   `json:"draw_salt,omitempty"`
	AdminKeys      []string `json:"admin_keys,omitempty"`
	AppKeys        []string `json:"app_keys,omitempty"`
}

// LoadWithKeys reads the config file at path and, unless keysPath is
// empty, the Keys file at keysPath (no other fields), merges the keys into
// the config (MergeKeys) and validates the result.
func LoadWithKeys(path, keysPath string) (*Campaign, error) {
	var c Config
	if err := decodeFile(path, &c); err != nil {
		return nil, err
	}
	if keysPath != "" {
		var k Keys
		if err := decodeFile(keysPath, &k); err != nil {
			return nil, err
		}
		if err := c.MergeKeys(&k); err != nil {
			return nil, fmt.Errorf("%w: %s and %s: %v", ErrInvalid, path, keysPath, err)
		}
	}
	return Compile(&c)
}

// MergeKeys sets c's secrets from k; a field set in both is an error.
func (c *Config) MergeKeys(k *Keys) error {
	var both []string
	if len(k.TokenKeys) > 0 {
		if len(c.TokenKeys) > 0 {
			both = append(both, "token_keys")
		}
		c.TokenKeys = k.TokenKeys
	}
	if k.ActiveTokenKey != 0 {
		if c.ActiveTokenKey != 0 {
			both = append(both, "active_token_key")
		}
		c.ActiveTokenKey = k.ActiveTokenKey
	}
	if k.DrawSalt != "" {
		if c.DrawSalt != "" {
			both = append(both, "draw_salt")
		}
		c.DrawSalt = k.DrawSalt
	}
	if len(k.AdminKeys) > 0 {
		if len(c.AdminKeys) > 0 {
			both = append(both, "admin_keys")
		}
		c.AdminKeys = k.AdminKeys
	}
	if len(k.AppKeys) > 0 {
		if len(c.AppKeys) > 0 {
			both = append(both, "app_keys")
		}
		c.AppKeys = k.AppKeys
	}
	if len(both) > 0 {
		return fmt.Errorf("%s in both the config and the keys file", strings.Join(both, ", "))
	}
	return nil
}

// decodeFile decodes the JSON file at path into v; unknown fields are
// errors.
func decodeFile(path string, v any) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("campaign: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalid, path, err)
	}
	return nil
}

// Campaign is a validated node config: the token key ring, the draw salt
// and the seed activities.
type Campaign struct {
	Config *Config
	Ring   *tokens.Ring
	// Seeds are the file's activities, validated; whitelists in seeds must
	// be resolved by the node before they are stored (see Version.Spec).
	Seeds []*Activity
}

// Compile validates c.
func Compile(c *Config) (*Campaign, error) {
	bad := func(format string, args ...any) (*Campaign, error) {
		return nil, fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
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
	if err := lines.Validate(c.BusinessLines); err != nil {
		return bad("%v", err)
	}
	if err := c.Statements.validate(); err != nil {
		return bad("%v", err)
	}
	if err := validateValidity(c.Validity); err != nil {
		return bad("%v", err)
	}
	out := &Campaign{Config: c, Ring: ring}
	seen := map[string]bool{}
	for i := range c.Activities {
		a := &c.Activities[i]
		if seen[a.ID] {
			return bad("activity %q defined twice", a.ID)
		}
		seen[a.ID] = true
		// Validate a copy: compiling fills defaults in, and whitelists are
		// resolved later.
		cp := cloneActivity(a)
		for j := range cp.Stages {
			if len(cp.Stages[j].Whitelist) > 0 && len(cp.Stages[j].ActIDs) == 0 {
				cp.Stages[j].ActIDs = []uint64{1}
			}
		}
		if _, err := CompileActivity(cp, 0); err != nil {
			return nil, err
		}
		out.Seeds = append(out.Seeds, a)
	}
	return out, nil
}

// cloneActivity deep-copies a through JSON (activities are small and
// copied only on configuration changes).
func cloneActivity(a *Activity) *Activity {
	raw, err := json.Marshal(a)
	if err != nil {
		panic(err) // only plain data: cannot fail
	}
	var out Activity
	if err := json.Unmarshal(raw, &out); err != nil {
		panic(err)
	}
	return &out
}

func validID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		// No '_': it separates the parts of idempotency and limit keys,
		// which hold activity ids, scene ids and award types unescaped.
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}
