// Package e2e runs redrain as its users do: a real `redrain serve` process
// on embedded backends, driven over HTTP, killed with -9 mid-rain and
// restarted, then audited with `redrain reconcile`.
package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestNodeEndToEnd(t *testing.T) {
	n := newNode(t, *rainsFlag)
	bin := n.bin
	n.start()

	// Bad input gets a clear error and changes nothing.
	for _, c := range []struct {
		body string
		code int
		want string
	}{
		{`{"app_id":1,"user_id":"x","activity_id":"nope","scene_id":"rain","rain_id":1}`, 404, "unknown_activity"},
		{`{"app_id":1,"user_id":"x","activity_id":"e2e","scene_id":"rain","rain_id":999}`, 404, "unknown_rain"},
		{`{"app_id":1,"user_id":"x","activity_id":"closed","scene_id":"rain","rain_id":1}`, 409, "rain_closed"},
		{`{"app_id":1,"user_id":"x"`, 400, "malformed_request"},
		{`{"app_id":1,"user_id":"x","activity_id":"e2e","scene_id":"rain","rain_id":1,"extra":1}`, 400, "malformed_request"},
		{`{"app_id":"1","user_id":"x","activity_id":"e2e","scene_id":"rain","rain_id":1}`, 400, "malformed_request"},
		{`{"app_id":1,"user_id":"` + strings.Repeat("x", 70<<10) + `","activity_id":"e2e","scene_id":"rain","rain_id":1}`, 413, "request_too_large"},
	} {
		code, b, err := post(n.url("/v1/grants"), c.body)
		if err != nil || code != c.code || !bytes.Contains(b, []byte(`"code":"`+c.want+`"`)) {
			t.Errorf("POST /v1/grants %.60s: %d %s (%v), want %d %s", c.body, code, b, err, c.code, c.want)
		}
	}

	// The small budget: exactly 50 packets of 100 fen, then budget_exhausted.
	small := 0
	for i := range 60 {
		code, b, err := post(n.url("/v1/grants"), grantBody(fmt.Sprintf("s-%d", i), "small", 1))
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case code == 200:
			small++
		case code == 409 && bytes.Contains(b, []byte("budget_exhausted")):
		default:
			t.Fatalf("small grant: %d %s", code, b)
		}
	}
	if small != smallBudget/100 {
		t.Errorf("small budget gave %d packets of 100 fen, want %d", small, smallBudget/100)
	}

	var jobs []string
	for r := 1; r <= *rainsFlag; r++ {
		for u := range *usersFlag {
			jobs = append(jobs, fmt.Sprintf("u-%d/%d", u, r))
		}
	}
	ans := newAnswered()

	// Phase 1: grant until about 40% are answered, then kill -9 mid-rain.
	var stop atomic.Bool
	done := make(chan int64)
	go func() { drive(t, []*node{n}, jobs, ans, &stop); done <- 0 }()
	for {
		ans.mu.Lock()
		got := len(ans.byKey)
		ans.mu.Unlock()
		if got >= len(jobs)*2/5 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Redeem some fresh tokens before booking sees them, and present
	// tampered tokens: they are refused and change nothing.
	ans.mu.Lock()
	fresh := append([]string(nil), ans.tokens[len(ans.tokens)-50:]...)
	ans.mu.Unlock()
	for i, r := range tokenCall(t, n, "redeem", append(fresh, tamper(fresh[0]), fresh[1][:20], "garbage")) {
		switch {
		case i < len(fresh) && r.Status != "booked":
			t.Errorf("redeem of a fresh token: %+v", r)
		case i >= len(fresh) && r.Status != "invalid":
			t.Errorf("redeem of a bad token: %+v", r)
		}
	}
	if err := n.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	stop.Store(true)
	<-done
	ans.mu.Lock()
	beforeKill := len(ans.byKey)
	ans.mu.Unlock()
	t.Logf("killed the node with -9 after %d grants answered", beforeKill)

	// Phase 2: restart on the same data; every token answered before the
	// kill is still valid, repeats get the identical token, the rest goes on.
	n.start()
	sample := ans.tokens[:1000]
	for i, r := range tokenCall(t, n, "status", sample) {
		if r.Status != "issued" && r.Status != "booked" {
			t.Errorf("token answered before the kill: %+v", r)
		}
		_ = i
	}
	stop.Store(false)
	drive(t, []*node{n}, jobs, ans, &stop) // every job again: finished ones are repeats
	if len(ans.byKey) != len(jobs) {
		t.Fatalf("%d of %d grants answered", len(ans.byKey), len(jobs))
	}
	waitDrained(t, n)

	// Every answered token is booked; tampered ones are invalid everywhere.
	if bad := allBooked(t, n, ans); len(bad) > 0 {
		t.Errorf("%d answered tokens not booked after draining, e.g. %v", len(bad), bad[:min(5, len(bad))])
	}
	for _, r := range tokenCall(t, n, "status", []string{tamper(ans.tokens[7]), tamper(ans.tokens[8])}) {
		if r.Status != "invalid" {
			t.Errorf("tampered token: %+v", r)
		}
	}

	// Wallets equal the sum of each user's answered packets.
	want := map[uint64]int64{}
	for _, g := range ans.byKey {
		want[g.ActID] += g.Amount
	}
	checked := 0
	for act, sum := range want {
		if checked >= 2000 {
			break
		}
		checked++
		resp, err := appGet(n.url(fmt.Sprintf("/v1/wallet/%d", act)))
		if err != nil {
			t.Fatal(err)
		}
		var w struct {
			Balances []struct {
				Asset   string `json:"asset"`
				Balance int64  `json:"balance"`
			} `json:"balances"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&w)
		resp.Body.Close()
		if len(w.Balances) != 1 || w.Balances[0].Balance != sum {
			t.Errorf("wallet %d = %+v, want cash %d", act, w.Balances, sum)
		}
	}

	// Stop cleanly (leases return), then the offline audit must pass.
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitExit(t, n)
	out, err := exec.Command(bin, "reconcile", "--data-dir", n.dir, "--json").Output()
	if err != nil {
		t.Fatalf("reconcile: %v\n%s", err, out)
	}
	var rep struct {
		OK      bool
		Entries int
		Budgets []struct {
			ID          string
			Total       int64
			Remaining   int64
			Issued      int64
			Booked      int64
			BookedCount int64 `json:"booked_count"`
			LeasedOpen  int64 `json:"leased_open"`
		}
		PendingAttribution int `json:"pending_attribution"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("reconcile output %s: %v", out, err)
	}
	var answeredSum int64
	for _, g := range ans.byKey {
		answeredSum += g.Amount
	}
	for _, b := range rep.Budgets {
		t.Logf("budget %s: total %d remaining %d issued %d booked %d in %d grants, open leases %d",
			b.ID, b.Total, b.Remaining, b.Issued, b.Booked, b.BookedCount, b.LeasedOpen)
		switch b.ID {
		case "e2e/cash":
			// Grants in flight at the kill may have been acknowledged by
			// Kafka without an answer: booked, never lost.
			if b.Booked < answeredSum || b.BookedCount < int64(len(jobs)) {
				t.Errorf("e2e budget booked %d in %d grants; answered %d in %d", b.Booked, b.BookedCount, answeredSum, len(jobs))
			}
		case "small/cash":
			if b.Booked != smallBudget {
				t.Errorf("small budget booked %d, want %d", b.Booked, smallBudget)
			}
		}
		if b.LeasedOpen != 0 || b.Issued != b.Booked {
			t.Errorf("budget %s after a clean stop: open leases %d, issued %d, booked %d", b.ID, b.LeasedOpen, b.Issued, b.Booked)
		}
	}
	if !rep.OK || rep.PendingAttribution != 0 {
		t.Errorf("reconcile: ok=%v pending=%d\n%s", rep.OK, rep.PendingAttribution, out)
	}
}

func waitExit(t *testing.T, n *node) {
	deadline := time.Now().Add(60 * time.Second)
	for n.cmd.ProcessState == nil {
		if time.Now().After(deadline) {
			t.Fatalf("node did not exit within 60s of SIGTERM")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
