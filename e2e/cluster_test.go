package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// stack is `redrain dev` running as its own process.
type stack struct {
	cmd   *exec.Cmd
	flags []string
}

func startStack(t *testing.T, bin, dir string) *stack {
	t.Helper()
	cmd := exec.Command(bin, "dev", "--data-dir", dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir + "-dev.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			line <- sc.Text()
		}
		close(line)
	}()
	select {
	case l, ok := <-line:
		if !ok {
			t.Fatalf("redrain dev printed no flags; log:\n%s", tail(logf.Name()))
		}
		s := &stack{cmd: cmd, flags: strings.Fields(l)}
		t.Cleanup(func() { s.stop(t) })
		return s
	case <-time.After(60 * time.Second):
		t.Fatalf("redrain dev did not start in 60 s; log:\n%s", tail(logf.Name()))
	}
	return nil
}

func (s *stack) stop(t *testing.T) {
	if s.cmd.ProcessState != nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
}

func flagValue(flags []string, name string) string {
	for _, f := range flags {
		if v, ok := strings.CutPrefix(f, "--"+name+"="); ok {
			return v
		}
	}
	return ""
}

// TestClusterNodeDeath runs three nodes on the shared development stack,
// spreads grants over all three, kills one with -9 mid-rain and restarts it.
// Every grant answered with a token is booked exactly once, the audit
// passes, and the test reports how long grants and bookings were
// unavailable.
func TestClusterNodeDeath(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	const users, rains = 8000, 3
	dir := t.TempDir()
	bin := binary(t)
	cfg := filepath.Join(dir, "campaign.json")
	if err := os.WriteFile(cfg, []byte(campaignJSON(rains)), 0o644); err != nil {
		t.Fatal(err)
	}
	st := startStack(t, bin, filepath.Join(dir, "dev"))
	membership := []string{freeAddr(t), freeAddr(t), freeAddr(t)}
	nodes := make([]*node, 3)
	for i := range nodes {
		var seeds []string
		for j, m := range membership {
			if j != i {
				seeds = append(seeds, m)
			}
		}
		nodes[i] = &node{t: t, bin: bin, dir: filepath.Join(dir, fmt.Sprintf("n%d", i)), cfg: cfg,
			logPath: filepath.Join(dir, fmt.Sprintf("n%d.log", i)),
			args:    append(append([]string{}, st.flags...), "--cluster-addr", membership[i], "--cluster-seeds", strings.Join(seeds, ","))}
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			if n.cmd != nil && n.cmd.Process != nil && n.cmd.ProcessState == nil {
				_ = n.cmd.Process.Kill()
			}
			if t.Failed() {
				t.Logf("%s log tail:\n%s", n.dir, tail(n.logPath))
			}
		}
	})
	for _, n := range nodes {
		n.start()
	}

	var jobs []string
	for r := 1; r <= rains; r++ {
		for u := range users {
			jobs = append(jobs, fmt.Sprintf("u-%d/%d", u, r))
		}
	}
	ans := newAnswered()
	var stop atomic.Bool
	done := make(chan struct{})
	go func() { drive(t, nodes, jobs, ans, &stop); close(done) }()
	for ans.count() < len(jobs)/3 {
		time.Sleep(20 * time.Millisecond)
	}

	// Kill a node mid-rain; grants go on through the other two.
	victim := nodes[1]
	ans.mu.Lock()
	beforeKill := len(ans.tokens)
	sample := append([]string(nil), ans.tokens[max(0, beforeKill-300):]...)
	sampleAt := append([]time.Time(nil), ans.at[max(0, beforeKill-300):]...)
	ans.mu.Unlock()
	killedAt := time.Now()
	if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed %s with -9 after %d grants answered", victim.dir, beforeKill)

	// The last grants answered before the kill: how long until booked?
	bookedBy := map[string]time.Duration{}
	deadline := time.Now().Add(3 * time.Minute)
	for len(bookedBy) < len(sample) && time.Now().Before(deadline) {
		for i, r := range tokenCall(t, nodes[0], "status", sample) {
			if _, seen := bookedBy[sample[i]]; !seen && r.Status == "booked" {
				bookedBy[sample[i]] = time.Since(sampleAt[i])
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	var bookingDelayMax time.Duration
	for _, d := range bookedBy {
		bookingDelayMax = max(bookingDelayMax, d)
	}
	if len(bookedBy) < len(sample) {
		t.Errorf("%d of the %d grants answered just before the kill were not booked within 3 minutes", len(sample)-len(bookedBy), len(sample))
	}

	// Restart the dead node on its data dir and addresses.
	victim.start()
	restartedAt := time.Now()
	<-done
	if ans.count() != len(jobs) {
		t.Fatalf("%d of %d grants answered", ans.count(), len(jobs))
	}
	waitDrained(t, nodes[0])
	if bad := allBooked(t, nodes[2], ans); len(bad) > 0 {
		t.Errorf("%d answered tokens not booked after draining, e.g. %v", len(bad), bad[:min(5, len(bad))])
	}
	var view struct {
		Nodes []struct {
			ID         string
			Ready      bool
			Partitions []int32
		}
	}
	resp, err := client.Get(nodes[0].url("/admin/v1/cluster"))
	if err != nil {
		t.Fatal(err)
	}
	_ = json.NewDecoder(resp.Body).Decode(&view)
	resp.Body.Close()
	if len(view.Nodes) != 3 {
		t.Errorf("cluster view lists %d nodes after the restart, want 3: %+v", len(view.Nodes), view.Nodes)
	}

	ans.mu.Lock()
	grantGap := ans.errLast.Sub(ans.errFirst)
	errs := ans.errs
	ans.mu.Unlock()
	t.Logf("unavailability after the kill: %d grant requests failed (%v) and were retried on another node, over %v (first failure %v after the kill); "+
		"grants answered just before the kill were booked within %v (max of %d); the node was back %v after the kill",
		errs, ans.errCodes, grantGap.Round(time.Millisecond), ans.errFirst.Sub(killedAt).Round(time.Millisecond),
		bookingDelayMax.Round(time.Millisecond), len(bookedBy), restartedAt.Sub(killedAt).Round(time.Millisecond))

	// Stop the nodes cleanly, then audit the shared store through PD.
	for _, n := range nodes {
		_ = n.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, n := range nodes {
		waitExit(t, n)
	}
	out, err := exec.Command(bin, "reconcile", "--pd", flagValue(st.flags, "pd"), "--json").Output()
	if err != nil {
		t.Fatalf("reconcile: %v\n%s", err, out)
	}
	var rep struct {
		OK      bool
		Entries int
		Budgets []struct {
			ID         string
			Issued     int64
			Booked     int64
			LeasedOpen int64 `json:"leased_open"`
		}
	}
	if err := json.Unmarshal(out, &rep); err != nil || !rep.OK {
		t.Fatalf("reconcile ok=%v err=%v\n%s", rep.OK, err, out)
	}
	if rep.Entries < len(jobs) {
		t.Errorf("store holds %d bookings, want at least the %d answered", rep.Entries, len(jobs))
	}
	for _, b := range rep.Budgets {
		if b.LeasedOpen != 0 || b.Issued != b.Booked {
			t.Errorf("budget %s after clean stops: open leases %d, issued %d, booked %d", b.ID, b.LeasedOpen, b.Issued, b.Booked)
		}
	}
}
