package e2e

import (
	"bufio"
	"encoding/json"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMixedBench is issue 13's "done when": a node paying out through
// `redrain paytest` (a separate process, as a fresh clone runs it) takes
// 10 s of grants, spending and withdrawals mixed (`redrain bench --mix`),
// every answer a normal one (insufficient funds is one, a 5xx is not);
// booking drains, the live audit passes, and after a clean stop the
// offline audit (`redrain reconcile`) and the consistency check
// (`redrain reconcile --consistency`) pass too.
func TestMixedBench(t *testing.T) {
	n := newNode(t, 10)
	bin := n.bin
	pay := exec.Command(bin, "paytest", "--addr", "127.0.0.1:0", "--log-level", "warn")
	stdout, err := pay.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := pay.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pay.Process.Kill(); _ = pay.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	flag := strings.TrimSpace(line)
	if err != nil || !strings.HasPrefix(flag, "--payout-channel=test=http://127.0.0.1:") {
		t.Fatalf("redrain paytest printed %q (%v), want --payout-channel=test=http://127.0.0.1:PORT", line, err)
	}

	n.args = []string{flag}
	n.start()

	cmd := exec.Command(bin, "bench", "--target", "http://"+n.addr, "--admin-target", "http://"+n.adminAddr,
		"--activity", "e2e", "--mix", "grants=60,spend=25,withdraw=15", "--rains", "10", "--users", "400", "--workers", "8",
		"--duration", "10s", "--json")
	out, err := cmd.Output()
	var rep struct {
		Requests int64 `json:"requests"`
		Ops      []struct {
			Op         string           `json:"op"`
			Sent       int64            `json:"sent"`
			Outcomes   map[string]int64 `json:"outcomes"`
			Unexpected int64            `json:"unexpected"`
		} `json:"ops"`
		Audit *struct {
			OK bool `json:"ok"`
		} `json:"audit"`
		Problems []string `json:"problems"`
	}
	if jerr := json.Unmarshal(out, &rep); err != nil || jerr != nil {
		t.Fatalf("redrain bench --mix: %v %v\n%s", err, jerr, out)
	}
	if rep.Audit == nil || !rep.Audit.OK || len(rep.Problems) > 0 {
		t.Errorf("mixed run: audit %+v, problems %q", rep.Audit, rep.Problems)
	}
	for _, o := range rep.Ops {
		t.Logf("%-9s %6d %v", o.Op, o.Sent, o.Outcomes)
		ok := o.Outcomes["200"] + o.Outcomes["200 settled"]
		if o.Sent == 0 || ok == 0 || o.Unexpected > 0 {
			t.Errorf("%s: sent %d, %d succeeded, %d unexpected: %v", o.Op, o.Sent, ok, o.Unexpected, o.Outcomes)
		}
	}

	// Stop cleanly, then the offline audit must pass.
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitExit(t, n)
	start := time.Now()
	out, err = exec.Command(bin, "reconcile", "--data-dir", n.dir).CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "redrain reconcile: OK") {
		t.Fatalf("reconcile after the mixed run: %v\n%s", err, out)
	}
	t.Logf("reconcile OK in %v", time.Since(start).Round(time.Millisecond))
	// And the consistency check: every grant the topic issued in its
	// account (the embedded broker read back from the data dir), every
	// transfer whole, the statements of the days covered equal to the
	// journals.
	out, err = exec.Command(bin, "reconcile", "--data-dir", n.dir, "--consistency").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "consistency: OK") {
		t.Fatalf("reconcile --consistency after the mixed run: %v\n%s", err, out)
	}
	t.Logf("%s", out[strings.Index(string(out), "  consistency:"):])
}
