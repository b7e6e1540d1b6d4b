package campaign

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"redrain/adminauth"
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

// TestKubernetesExampleLoads: the campaign file of the Kubernetes example,
// its key placeholders filled with keys, loads.
func TestKubernetesExampleLoads(t *testing.T) {
	raw, err := os.ReadFile("../deploy/kubernetes/redrain.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	start := strings.Index(text, "campaign.json: |\n")
	if start < 0 {
		t.Fatal("no campaign.json in the Kubernetes example")
	}
	var body []string
	for _, line := range strings.Split(text[start+len("campaign.json: |\n"):], "\n") {
		if !strings.HasPrefix(line, "    ") {
			break
		}
		body = append(body, line[4:])
	}
	file := regexp.MustCompile(`REPLACE-[A-Za-z0-9-]*`).ReplaceAllString(strings.Join(body, "\n"), strings.Repeat("c3", 32))
	path := filepath.Join(t.TempDir(), "campaign.json")
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatalf("the Kubernetes example's campaign file: %v\n%s", err, file)
	}
	if len(c.Config.AdminKeys) == 0 || len(c.Config.AppKeys) == 0 || len(c.Config.PublicTokenKeys()) != 0 {
		t.Fatalf("the Kubernetes example has admin keys %v, app keys %v and public token keys %v", c.Config.AdminKeys, c.Config.AppKeys, c.Config.PublicTokenKeys())
	}
	if _, err := adminauth.ParseAppKeys(c.Config.AppKeys); err != nil {
		t.Fatalf("the Kubernetes example's app keys: %v", err)
	}
}
