package reconcile_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"redrain/storage"
)

var raceEnabled bool

// buildCLI builds cmd/redrain into the test's temporary directory.
func buildCLI(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go tool to build cmd/redrain: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "redrain")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command(goTool, append(args, "../cmd/redrain")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build cmd/redrain: %v\n%s", err, out)
	}
	return bin
}

// runCLI runs the command and returns its exit code, stdout and stderr.
func runCLI(t *testing.T, bin string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, stdout.String(), stderr.String()
	case errors.As(err, &exit):
		return exit.ExitCode(), stdout.String(), stderr.String()
	}
	t.Fatalf("run %s %v: %v", bin, args, err)
	return 0, "", ""
}

// withStore opens the embedded store of dir, lets fn write it and closes
// it: the command opens the same files and needs them released.
func withStore(t *testing.T, dir string, fn func(kv *storage.TiKV)) {
	t.Helper()
	kv, err := storage.OpenTiKV(nil, dir)
	if err != nil {
		t.Fatalf("open the store in %s: %v", dir, err)
	}
	defer func() {
		if err := kv.Close(); err != nil {
			t.Fatalf("close the store: %v", err)
		}
	}()
	fn(kv)
}

// TestCommand runs `redrain reconcile --data-dir` on a stopped store: exit
// 0 and an OK report while healthy; exit 1 and the report once a lease's
// issued no longer matches what was booked under it.
func TestCommand(t *testing.T) {
	t.Parallel()
	bin := buildCLI(t)
	dir := t.TempDir()
	withStore(t, dir, func(kv *storage.TiKV) { writeHealthy(t, kv) })

	code, stdout, stderr := runCLI(t, bin, "reconcile", "--data-dir", dir, "--json")
	var report struct {
		OK     bool `json:"ok"`
		Checks []struct {
			Name string `json:"name"`
			OK   bool   `json:"ok"`
		} `json:"checks"`
		Accounts int `json:"accounts"`
	}
	if code != 0 {
		t.Fatalf("reconcile --json on a healthy store: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if err := json.Unmarshal([]byte(stdout), &report); err != nil || !report.OK || len(report.Checks) != len(allChecks) || report.Accounts != usersCount {
		t.Fatalf("reconcile --json on a healthy store printed (%v):\n%s", err, stdout)
	}

	withStore(t, dir, func(kv *storage.TiKV) {
		update(t, kv, func(txn storage.Txn) error {
			ctx := t.Context()
			b, l := getBudget(ctx, t, txn), getLease(ctx, t, txn, closedLease)
			l.Issued -= 10
			b.Returned += 10
			return putAll(txn, b, l)
		})
	})

	code, stdout, stderr = runCLI(t, bin, "reconcile", "--data-dir", dir)
	if code != 1 {
		t.Errorf("reconcile on a corrupted store: exit %d, want 1\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, want := range []string{"redrain reconcile: VIOLATIONS FOUND", "[FAIL] " + conservation, "issued 140 (5 grants) but booked 150 (5 grants)"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("reconcile on a corrupted store printed no %q:\n%s", want, stdout)
		}
	}

	code, stdout, _ = runCLI(t, bin, "reconcile", "--data-dir", dir, "--json")
	report.OK = true
	if err := json.Unmarshal([]byte(stdout), &report); code != 1 || err != nil || report.OK {
		t.Errorf("reconcile --json on a corrupted store: exit %d, ok=%v (%v):\n%s", code, report.OK, err, stdout)
	}
}
