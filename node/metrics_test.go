package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"redrain/storage/storagetest"
)

// promtool is Prometheus's own checker (Debian's prometheus package;
// make test-deps installs it).
func promtool(t *testing.T, args ...string) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: make test-deps installs it (Debian package prometheus)")
	}
	out, err := exec.Command(path, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestMetricsPassPromtool: a node's /metrics, after grants, booking and an
// audit, passes `promtool check metrics` (types, names, format), carries
// the Go runtime's, the process's and the TiKV client's series, one
// series per budget and per partition and the audit's result; every
// series the Grafana dashboard and the alert rules name is among them.
func TestMetricsPassPromtool(t *testing.T) {
	n := startNode(t, t.TempDir(), storagetest.Redis(t))
	users := make([]string, 50)
	for i := range users {
		users[i] = fmt.Sprintf("metrics-user-%d", i)
	}
	grantAll(t, n, users)
	waitBooked(t, n, int64(len(users)))
	if code, body := get(t, n, "/admin/v1/audit"); code != 200 || !bytes.Contains(body, []byte(`"consistency":{"continuous":{`)) {
		t.Fatalf("audit: %d %s", code, body)
	}
	// The consistency check over the journals booked: every grant read
	// back from the topic, found in its account.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if r, err := n.ConsistencyToday(ctx); err != nil || r.Grants != len(users) || len(r.Mismatches) != 0 || r.Records == 0 {
		t.Fatalf("consistency: %v %+v", err, r)
	}
	code, body := get(t, n, "/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	if out, err := promtoolCheckMetrics(t, body); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
	// The TiKV client's series parse; promtool's lint finds their names
	// (client-go's) unidiomatic, which is why they are apart.
	code, tikv := get(t, n, "/metrics/tikv")
	if code != 200 || !bytes.Contains(tikv, []byte("# TYPE tikv_client_go_txn_cmd_duration_seconds histogram\n")) {
		t.Fatalf("/metrics/tikv: %d %.500s", code, tikv)
	}
	if out, err := promtoolCheckMetrics(t, tikv); err != nil {
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 3 {
			t.Fatalf("promtool check metrics of /metrics/tikv: %v\n%s", err, out)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if !strings.HasPrefix(strings.TrimSpace(line), "tikv_client_go_") {
				t.Errorf("promtool on /metrics/tikv: %s", line)
			}
		}
	}
	text := string(body)
	for _, want := range []string{
		"# TYPE process_cpu_seconds_total counter\n",
		"# TYPE go_goroutines gauge\n",
		"# TYPE redrain_grants_total counter\n",
		`redrain_budget_total_minor_units{asset="cash",budget="demo/formal/cash"}`,
		`redrain_budget_consistent{asset="cash",budget="demo/formal/cash"} 1`,
		`redrain_booking_partition_lag_records{partition="0"} 0`,
		`redrain_audit_check_ok{check="budget_conservation"} 1`,
		`redrain_consistency_mismatches_total{kind="grant_unbooked"} 0`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q in\n%s", want, grepLines(text, "redrain_budget_"))
		}
	}
	// Issued and booked add up: the demo's budgets issued what was booked.
	if issued, booked := seriesSum(text, "redrain_budget_issued_minor_units"), seriesSum(text, "redrain_budget_booked_minor_units"); issued == 0 || issued != booked {
		t.Errorf("budgets issued %v, booked %v", issued, booked)
	}

	served := map[string]bool{}
	for _, line := range strings.Split(text+string(tikv), "\n") {
		if name, ok := strings.CutPrefix(line, "# TYPE "); ok {
			f := strings.Fields(name)
			served[f[0]] = true
			if f[1] == "histogram" || f[1] == "summary" {
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					served[f[0]+s] = true
				}
			}
		}
	}
	for _, file := range []string{"../deploy/grafana/redrain.json", "../deploy/prometheus/alerts.yml"} {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(file, ".json") && !json.Valid(raw) {
			t.Errorf("%s is not valid JSON", file)
		}
		names := regexp.MustCompile(`\b(redrain|process|go|tikv_client_go)_[a-z0-9_]+`).FindAll(raw, -1)
		if len(names) == 0 {
			t.Errorf("%s names no series", file)
		}
		for _, name := range names {
			if !served[string(name)] {
				t.Errorf("%s names %s, which the node does not serve", file, name)
			}
		}
	}
}

// promtoolCheckMetrics runs `promtool check metrics` over an exposition.
func promtoolCheckMetrics(t *testing.T, body []byte) ([]byte, error) {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: make test-deps installs it (Debian package prometheus)")
	}
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	return cmd.CombinedOutput()
}

// seriesSum adds the values of every series of name in a text exposition.
func seriesSum(text, name string) float64 {
	var sum float64
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, name+"{"); ok {
			var v float64
			if i := strings.LastIndexByte(rest, ' '); i >= 0 {
				fmt.Sscan(rest[i+1:], &v)
			}
			sum += v
		}
	}
	return sum
}

// TestAlertRules: the alert rules pass `promtool check rules`, their unit
// tests (`promtool test rules`: series in, alerts out) pass, and so does
// the example Prometheus configuration (`promtool check config`).
func TestAlertRules(t *testing.T) {
	promtool(t, "check", "rules", "../deploy/prometheus/alerts.yml")
	promtool(t, "check", "config", "../deploy/prometheus/prometheus.yml")
	out := promtool(t, "test", "rules", "../deploy/prometheus/alerts_test.yml")
	if !bytes.Contains([]byte(out), []byte("SUCCESS")) {
		t.Errorf("promtool test rules:\n%s", out)
	}
}

// grepLines returns the lines of text that contain s.
func grepLines(text, s string) string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
