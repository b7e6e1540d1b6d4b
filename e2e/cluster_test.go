package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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

// rig is three nodes on the shared development stack with a rain to grant.
type rig struct {
	t     *testing.T
	dir   string
	bin   string
	st    *stack
	nodes []*node
	jobs  []string
	ans   *answered
}

func newRig(t *testing.T, users, rains int) *rig {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	r := &rig{t: t, dir: t.TempDir(), bin: binary(t), ans: newAnswered()}
	if os.Getenv("REDRAIN_E2E_KEEP") != "" { // keep the logs and data for a post-mortem
		dir, err := os.MkdirTemp("", "redrain-e2e-keep-")
		if err != nil {
			t.Fatal(err)
		}
		r.dir = dir
		t.Logf("keeping the rig's data and logs in %s", dir)
	}
	cfg := filepath.Join(r.dir, "campaign.json")
	if err := os.WriteFile(cfg, []byte(campaignJSON(rains)), 0o644); err != nil {
		t.Fatal(err)
	}
	r.st = startStack(t, r.bin, filepath.Join(r.dir, "dev"))
	membership := []string{freeAddr(t), freeAddr(t), freeAddr(t)}
	r.nodes = make([]*node, 3)
	for i := range r.nodes {
		var seeds []string
		for j, m := range membership {
			if j != i {
				seeds = append(seeds, m)
			}
		}
		r.nodes[i] = &node{t: t, bin: r.bin, dir: filepath.Join(r.dir, fmt.Sprintf("n%d", i)), cfg: cfg,
			logPath: filepath.Join(r.dir, fmt.Sprintf("n%d.log", i)),
			args:    append(append([]string{}, r.st.flags...), "--cluster-addr", membership[i], "--cluster-seeds", strings.Join(seeds, ","))}
	}
	t.Cleanup(func() {
		for _, n := range r.nodes {
			if n.cmd != nil && n.cmd.Process != nil && n.cmd.ProcessState == nil {
				_ = n.cmd.Process.Signal(syscall.SIGCONT)
				_ = n.cmd.Process.Kill()
			}
			if t.Failed() {
				t.Logf("%s log tail:\n%s", n.dir, tail(n.logPath))
			}
		}
	})
	for _, n := range r.nodes {
		n.start()
	}
	for rain := 1; rain <= rains; rain++ {
		for u := range users {
			r.jobs = append(r.jobs, fmt.Sprintf("u-%d/%d", u, rain))
		}
	}
	return r
}

// grantUntil drives every job over the three nodes in the background and
// returns once frac of them are answered, with a channel closed when all are.
func (r *rig) grantUntil(frac float64) (done chan struct{}) {
	done = make(chan struct{})
	var stop atomic.Bool
	go func() { drive(r.t, r.nodes, r.jobs, r.ans, &stop); close(done) }()
	for r.ans.count() < int(float64(len(r.jobs))*frac) {
		time.Sleep(20 * time.Millisecond)
	}
	return done
}

// lastAnswered returns up to n of the latest answered tokens and when.
func (r *rig) lastAnswered(n int) ([]string, []time.Time) {
	r.ans.mu.Lock()
	defer r.ans.mu.Unlock()
	k := len(r.ans.tokens)
	return append([]string(nil), r.ans.tokens[max(0, k-n):]...), append([]time.Time(nil), r.ans.at[max(0, k-n):]...)
}

// bookedWithin polls until every token is booked and returns the longest
// time from its answer to its booking as seen by the poll.
func (r *rig) bookedWithin(via *node, toks []string, at []time.Time) time.Duration {
	booked := map[string]time.Duration{}
	deadline := time.Now().Add(3 * time.Minute)
	for len(booked) < len(toks) && time.Now().Before(deadline) {
		for i, res := range tokenCall(r.t, via, "status", toks) {
			if _, seen := booked[toks[i]]; !seen && res.Status == "booked" {
				booked[toks[i]] = time.Since(at[i])
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(booked) < len(toks) {
		r.t.Errorf("%d of %d grants answered around the failure were not booked within 3 minutes", len(toks)-len(booked), len(toks))
	}
	var worst time.Duration
	for _, d := range booked {
		worst = max(worst, d)
	}
	return worst
}

// sameOnEveryNode asks every node again for n of the answered grants: each
// node answers the packet first answered, booked, whether it owns the
// user's shard or forwards the grant to the node that does.
func (r *rig) sameOnEveryNode(n int) {
	t := r.t
	r.ans.mu.Lock()
	keys := slices.Sorted(maps.Keys(r.ans.byKey))
	first := maps.Clone(r.ans.byKey)
	r.ans.mu.Unlock()
	bad := 0
	for _, key := range keys[:min(n, len(keys))] {
		user, rain, _ := strings.Cut(key, "/")
		var rn int
		fmt.Sscan(rain, &rn)
		for i, nd := range r.nodes {
			var g grantResp
			code, last := 0, ""
			for try := 0; try < 50; try++ {
				c, body, err := post(nd.url("/v1/grants"), grantBody(user, "e2e", rn))
				last = string(body)
				if err == nil && json.Unmarshal(body, &g) == nil && c != 503 {
					code = c
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if want := first[key]; code != 200 || g.Token != want.Token || g.Amount != want.Amount || g.Status != "booked" {
				t.Errorf("grant %s again through node %d: %d %s, want the booked packet %+v", key, i, code, last, want)
				if bad++; bad == 10 {
					return
				}
			}
		}
	}
}

// report logs the grant failures seen and how long they lasted.
func (r *rig) report(what string, failedAt time.Time, bookingDelay time.Duration) {
	r.ans.mu.Lock()
	defer r.ans.mu.Unlock()
	window, first := time.Duration(0), time.Duration(0)
	if r.ans.errs > 0 {
		window, first = r.ans.errLast.Sub(r.ans.errFirst), r.ans.errFirst.Sub(failedAt)
	}
	r.t.Logf("unavailability after %s: %d grant requests failed %v and were retried elsewhere, over %v starting %v after it; "+
		"the slowest answered request took %v; grants answered just before it were booked within %v",
		what, r.ans.errs, r.ans.errCodes, window.Round(time.Millisecond), first.Round(time.Millisecond), r.ans.slowest.Round(time.Millisecond),
		bookingDelay.Round(time.Millisecond))
}

// verify waits for every job and for booking, checks every answered token
// is booked and the cluster view lists three ready nodes, stops the nodes
// cleanly and audits the shared store through PD.
func (r *rig) verify(done chan struct{}) {
	t := r.t
	<-done
	if r.ans.count() != len(r.jobs) {
		t.Fatalf("%d of %d grants answered", r.ans.count(), len(r.jobs))
	}
	waitDrained(t, r.nodes[0])
	if bad := allBooked(t, r.nodes[2], r.ans); len(bad) > 0 {
		t.Errorf("%d answered tokens not booked after draining, e.g. %v", len(bad), bad[:min(5, len(bad))])
	}
	// Node 2 books only some partitions: the others' token statuses were
	// read through their owners.
	if n := metricValue(t, r.nodes[2], "redrain_booking_owner_reads_total"); n == 0 {
		t.Errorf("node 2 read no token status through another node")
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var view struct {
			Nodes []struct {
				ID    string
				Ready bool
			}
		}
		if resp, err := adminGet(r.nodes[0].adminURL("/admin/v1/cluster")); err == nil {
			_ = json.NewDecoder(resp.Body).Decode(&view)
			resp.Body.Close()
		}
		ready := 0
		for _, n := range view.Nodes {
			if n.Ready {
				ready++
			}
		}
		if ready == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("cluster view lists %d ready nodes, want 3: %+v", ready, view.Nodes)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	r.sameOnEveryNode(300)
	for _, n := range r.nodes {
		_ = n.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, n := range r.nodes {
		waitExit(t, n)
	}
	out, err := exec.Command(r.bin, "reconcile", "--pd", flagValue(r.st.flags, "pd"), "--json").Output()
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
	if rep.Entries < len(r.jobs) {
		t.Errorf("store holds %d bookings, want at least the %d answered", rep.Entries, len(r.jobs))
	}
	for _, b := range rep.Budgets {
		if b.LeasedOpen != 0 || b.Issued != b.Booked {
			t.Errorf("budget %s after clean stops: open leases %d, issued %d, booked %d", b.ID, b.LeasedOpen, b.Issued, b.Booked)
		}
	}
}

// TestClusterNodeDeath kills one of three nodes with -9 mid-rain and
// restarts it on its data dir and addresses: every grant answered with a
// token is booked exactly once and the audit passes.
func TestClusterNodeDeath(t *testing.T) {
	r := newRig(t, 8000, 3)
	done := r.grantUntil(1.0 / 3)
	toks, at := r.lastAnswered(300)
	victim := r.nodes[1]
	killedAt := time.Now()
	if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	delay := r.bookedWithin(r.nodes[0], toks, at)
	victim.start()
	t.Logf("the killed node was serving again %v after the kill", time.Since(killedAt).Round(time.Millisecond))
	<-done // every grant answered, so the report covers them all
	r.report("killing a node with -9", killedAt, delay)
	r.verify(done)
}

// TestClusterNodePause stops one node with SIGSTOP for longer than the
// membership and consumer-group timeouts, then resumes it: the paused node's
// stale grains and booking session can neither overwrite nor double-book.
func TestClusterNodePause(t *testing.T) {
	r := newRig(t, 8000, 3)
	done := r.grantUntil(1.0 / 3)
	toks, at := r.lastAnswered(300)
	victim := r.nodes[1]
	pausedAt := time.Now()
	if err := victim.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Logf("paused %s with %d of %d grants answered", victim.dir, r.ans.count(), len(r.jobs))
	delay := r.bookedWithin(r.nodes[0], toks, at)
	// Longer than the booking group's 10 s session timeout and the
	// membership TTL, counted from the pause.
	for time.Since(pausedAt) < 15*time.Second {
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("resuming it with %d of %d grants answered", r.ans.count(), len(r.jobs))
	if err := victim.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	<-done
	r.report("pausing a node for 15 s", pausedAt, delay)
	r.verify(done)
}

// TestClusterStackRestart kills everything with -9 mid-rain (the three
// nodes and the development stack) and starts it all again on the same
// data: nothing acknowledged is lost.
func TestClusterStackRestart(t *testing.T) {
	r := newRig(t, 8000, 3)
	done := r.grantUntil(1.0 / 3)
	toks, at := r.lastAnswered(300)
	crashedAt := time.Now()
	for _, n := range r.nodes {
		_ = n.cmd.Process.Signal(syscall.SIGKILL)
	}
	_ = r.st.cmd.Process.Signal(syscall.SIGKILL)
	_ = r.st.cmd.Wait()
	for _, n := range r.nodes {
		waitExit(t, n)
	}
	r.st = startStack(t, r.bin, filepath.Join(r.dir, "dev"))
	for _, n := range r.nodes {
		n.start()
	}
	t.Logf("whole stack serving again %v after the crash", time.Since(crashedAt).Round(time.Millisecond))
	delay := r.bookedWithin(r.nodes[0], toks, at)
	<-done
	r.report("crashing the whole stack", crashedAt, delay)
	r.verify(done)
}
