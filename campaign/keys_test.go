package campaign

import (
	"strings"
	"testing"
)

// TestExampleKeysArePublic: every token key of the example campaign files
// (published with the source) is known as public, as is the demo
// campaign's, and a key of one's own is not.
func TestExampleKeysArePublic(t *testing.T) {
	c, err := Load("../examples/campaign.json")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Config.PublicTokenKeys(); len(got) != len(c.Config.TokenKeys) {
		t.Fatalf("examples/campaign.json: public %v of %d token keys, want all", got, len(c.Config.TokenKeys))
	}
	if got := Demo().PublicTokenKeys(); len(got) != 1 {
		t.Fatalf("demo campaign: public %v, want its one key", got)
	}
	own := &Config{TokenKeys: []string{"7:" + strings.Repeat("ab", 32)}}
	if got := own.PublicTokenKeys(); len(got) != 0 {
		t.Fatalf("a key of one's own reported public: %v", got)
	}
}
