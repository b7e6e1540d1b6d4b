package campaign_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"redrain/campaign"
)

// A keys file (serve --keys) fills the campaign file's secrets; a secret in
// both, or anything but secrets in the keys file, is refused.
func TestLoadWithKeys(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const activities = `{"activities": [{"id": "a", "rains": [{"scene_id": "rain", "rain_id": 1, "always_open": true, "start": "2027-01-01T00:00:00Z"}],
	  "awards": [{"type": "cash", "kind": "money", "min": 1, "max": 10}], "stages": [{"stage": "formal", "budgets": {"cash": 1000}}]}]`
	config := write("campaign.json", activities+"}")
	keys := write("keys.json", `{"token_keys": ["3:`+strings.Repeat("ab", 32)+`"], "active_token_key": 3, "draw_salt": "s",
	  "admin_keys": ["ops:`+strings.Repeat("cd", 32)+`"], "app_keys": ["1:`+strings.Repeat("ef", 32)+`"]}`)
	c, err := campaign.LoadWithKeys(config, keys)
	if err != nil {
		t.Fatal(err)
	}
	if c.Config.ActiveTokenKey != 3 || c.Config.DrawSalt != "s" || len(c.Config.AdminKeys) != 1 || len(c.Config.AppKeys) != 1 || len(c.Seeds) != 1 {
		t.Fatalf("merged config %+v", c.Config)
	}
	if _, err := campaign.Load(config); !errors.Is(err, campaign.ErrInvalid) {
		t.Errorf("the campaign without its keys loaded: %v", err)
	}
	both := write("both.json", activities+`, "draw_salt": "t"}`)
	if _, err := campaign.LoadWithKeys(both, keys); err == nil || !strings.Contains(err.Error(), "draw_salt in both") {
		t.Errorf("draw_salt in both files: %v", err)
	}
	extra := write("extra.json", `{"token_keys": ["3:`+strings.Repeat("ab", 32)+`"], "activities": []}`)
	if _, err := campaign.LoadWithKeys(config, extra); !errors.Is(err, campaign.ErrInvalid) {
		t.Errorf("activities in the keys file: %v", err)
	}
}
