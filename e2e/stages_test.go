package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// stagedSpring writes examples/spring.json with only the given stages and
// the internal whitelist replaced by staff-0..staff-{staff-1} of app 1.
func stagedSpring(t *testing.T, dir string, staff int, stages ...string) string {
	t.Helper()
	raw, err := os.ReadFile("../examples/spring.json")
	if err != nil {
		t.Fatal(err)
	}
	var a map[string]any
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Fatal(err)
	}
	var keep []any
	for _, s := range a["stages"].([]any) {
		st := s.(map[string]any)
		for _, want := range stages {
			if st["stage"] != want {
				continue
			}
			if want == "internal" {
				var wl []string
				for i := range staff {
					wl = append(wl, fmt.Sprintf("1:staff-%d", i))
				}
				st["whitelist"] = wl
			}
			keep = append(keep, st)
		}
	}
	a["stages"] = keep
	out, _ := json.Marshal(a)
	path := filepath.Join(dir, strings.Join(stages, "-")+".json")
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// run runs the redrain binary and returns its stdout; it fails the test on
// a non-zero exit.
func run(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("redrain %s: %v\n%s%s", strings.Join(args, " "), err, out.Bytes(), errb.Bytes())
	}
	return out.Bytes()
}

type benchReport struct {
	Offered  int64            `json:"offered"`
	Accepted int64            `json:"accepted"`
	Errors   map[string]int64 `json:"errors"`
	Audit    *struct {
		OK bool `json:"ok"`
	} `json:"audit"`
}

// TestCampaignStages runs `redrain bench` against an activity taken from
// internal to gray to formal by `redrain admin` alone, checks the budget
// figures after every step, and rolls back.
func TestCampaignStages(t *testing.T) {
	n := newNode(t, 1)
	bin, dir := n.bin, filepath.Dir(n.cfg)
	n.start()
	target, adminTarget := "http://"+n.addr, "http://"+n.adminAddr
	admin := func(args ...string) []byte {
		return run(t, bin, append([]string{"admin", "--target", adminTarget}, args...)...)
	}
	version := func(out []byte) string {
		// "spring: version 3"
		f := strings.Fields(string(out))
		if len(f) < 3 || f[1] != "version" {
			t.Fatalf("apply printed %q", out)
		}
		return f[2]
	}
	bench := func(prefix string, users int) benchReport {
		t.Helper()
		out := run(t, bin, "bench", "--target", target, "--admin-target", adminTarget, "--activity", "spring", "--scene", "lobby", "--rain", "1",
			"--users", fmt.Sprint(users), "--user-prefix", prefix, "--duration", "2s", "--conns", "8", "--pipeline", "4",
			"--repeat", "0.2", "--json")
		var r benchReport
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("bench report %s: %v", out, err)
		}
		if r.Audit == nil || !r.Audit.OK {
			t.Errorf("bench %s: audit failed: %s", prefix, out)
		}
		return r
	}
	budgetsOK := func(when string) {
		t.Helper()
		out := admin("budgets", "spring")
		if bytes.Contains(out, []byte("false")) || !bytes.Contains(out, []byte("spring/")) {
			t.Errorf("%s: budget figures do not add up:\n%s", when, out)
		}
	}
	// change runs an admin command that changes the configuration and
	// waits until the node serves it: every change bumps the store's
	// change counter, which the node reports in redrain_config_seq.
	seq := func() int64 { return metricValue(t, n, "redrain_config_seq") }
	// Every command that changes the store goes through change (apply
	// too, though it changes nothing served), or a later change could see
	// the counter move for an earlier one and return too soon.
	change := func(args ...string) []byte {
		t.Helper()
		before := seq()
		out := admin(args...)
		deadline := time.Now().Add(10 * time.Second)
		for seq() <= before {
			if time.Now().After(deadline) {
				t.Fatalf("admin %v not served within 10s", args)
			}
			time.Sleep(20 * time.Millisecond)
		}
		return out
	}

	// 1. Staff only.
	v1 := version(change("apply", stagedSpring(t, dir, 50, "internal")))
	change("publish", "spring", "--version", v1)
	if r := bench("staff-", 50); r.Accepted == 0 || r.Accepted+r.Errors["no_award"] != r.Offered {
		t.Errorf("staff under v1: %+v, want every grant answered", r)
	}
	if r := bench("pub-", 2000); r.Errors["not_eligible"] != r.Offered {
		t.Errorf("public under v1: %+v, want all not_eligible", r)
	}
	budgetsOK("v1")

	// 2. Gray: 5% of everyone.
	v2 := version(change("apply", stagedSpring(t, dir, 50, "internal", "gray")))
	change("publish", "spring", "--version", v2)
	// The bench offers every user once, then repeats only users it was
	// granted to: each refused user counts once in not_eligible.
	gray := bench("pub-", 2000)
	if served := 2000 - gray.Errors["not_eligible"]; served < 20 || served > 200 || gray.Accepted == 0 {
		t.Errorf("public under v2: %+v, want about 5%% of 2000 users served", gray)
	}
	budgetsOK("v2")

	// 3. Formal: everyone.
	v3 := version(change("apply", stagedSpring(t, dir, 50, "internal", "gray", "formal")))
	change("publish", "spring", "--version", v3)
	if r := bench("pub-", 2000); r.Errors["not_eligible"] != 0 || r.Accepted+r.Errors["no_award"] != r.Offered {
		t.Errorf("public under v3: %+v, want every grant answered", r)
	}
	budgetsOK("v3")

	// 4. Roll back to v2: the public outside gray is refused again.
	change("rollback", "spring", "--version", v2)
	if r := bench("pub-", 2000); r.Errors["not_eligible"] != gray.Errors["not_eligible"] {
		t.Errorf("public after rollback: %+v, want the users refused under v2 (%d) refused again", r, gray.Errors["not_eligible"])
	}
	budgetsOK("after rollback")

	// 5. The hot-account comparison runs end to end (its figures are
	// measured, not asserted: see DESIGN.md).
	out := run(t, bin, "bench", "--target", target, "--admin-target", adminTarget, "--compare-hot", "16", "--rounds", "1", "--users", "2000",
		"--duration", "2s", "--conns", "8", "--pipeline", "4")
	if !bytes.Contains(out, []byte("ratio")) {
		t.Errorf("compare-hot printed:\n%s", out)
	}
	t.Logf("%s", out)
}
