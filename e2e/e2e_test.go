// Package e2e runs redrain as its users do: a real `redrain serve` process
// on embedded backends, driven over HTTP, killed with -9 mid-rain and
// restarted, then audited with `redrain reconcile`.
package e2e

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var (
	usersFlag = flag.Int("e2e.users", 12000, "distinct users")
	rainsFlag = flag.Int("e2e.rains", 10, "rains per user (grants = users x rains)")
)

const (
	workers     = 64
	smallBudget = 5000 // fen; award fixed at 100 fen: exactly 50 packets
)

// campaignJSON has a large activity with many rains and a small one whose
// budget runs out.
func campaignJSON(rains int) string {
	var rs []string
	for i := 1; i <= rains; i++ {
		rs = append(rs, fmt.Sprintf(`{"scene_id":"rain","rain_id":%d,"always_open":true,"start":"2026-02-10T12:00:00Z"}`, i))
	}
	return fmt.Sprintf(`{
  "activities": [
    {"id": "e2e", "rains": [%s],
     "awards": [{"type": "cash", "budget": 100000000000, "min": 1, "max": 500}]},
    {"id": "small", "rains": [{"scene_id":"rain","rain_id":1,"always_open":true,"start":"2026-02-10T12:00:00Z"}],
     "awards": [{"type": "cash", "budget": %d, "min": 100, "max": 100}]},
    {"id": "closed", "rains": [{"scene_id":"rain","rain_id":1,"start":"2020-01-01T00:00:00Z","end":"2020-01-01T00:01:00Z"}],
     "awards": [{"type": "cash", "budget": 1000, "min": 1, "max": 10}]}
  ],
  "token_keys": ["1:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"],
  "active_token_key": 1,
  "draw_salt": "e2e"
}`, strings.Join(rs, ","), smallBudget)
}

type node struct {
	t       *testing.T
	bin     string
	dir     string
	cfg     string
	addr    string
	cmd     *exec.Cmd
	logPath string
}

func (n *node) start() {
	n.t.Helper()
	n.addr = freeAddr(n.t)
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		n.t.Fatal(err)
	}
	n.cmd = exec.Command(n.bin, "serve", "--data-dir", n.dir, "--http", n.addr, "--config", n.cfg, "--log-level", "warn")
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	if err := n.cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	go func() { _ = n.cmd.Wait(); logf.Close() }()
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := http.Get("http://" + n.addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("node not ready within 90s; log:\n%s", tail(n.logPath))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (n *node) url(p string) string { return "http://" + n.addr + p }

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 8000 {
		b = b[len(b)-8000:]
	}
	return string(b)
}

type grantResp struct {
	Token      string `json:"token"`
	OutTradeNo string `json:"out_trade_no"`
	ActID      uint64 `json:"act_id"`
	AwardType  string `json:"award_type"`
	Amount     int64  `json:"amount"`
	Status     string `json:"status"`
	Code       string `json:"code"`
}

var client = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers * 2}}

func post(url string, body string) (int, []byte, error) {
	resp, err := client.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func grantBody(user string, activity string, rain int) string {
	return fmt.Sprintf(`{"app_id":1,"user_id":%q,"activity_id":%q,"scene_id":"rain","rain_id":%d}`, user, activity, rain)
}

type answered struct {
	mu     sync.Mutex
	byKey  map[string]grantResp // user/rain → first answer
	tokens []string
}

func (a *answered) record(t *testing.T, key string, g grantResp) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if prev, ok := a.byKey[key]; ok {
		if prev.Token != g.Token || prev.Amount != g.Amount || prev.ActID != g.ActID {
			t.Errorf("repeat grant %s changed: first %+v, now %+v", key, prev, g)
		}
		return
	}
	a.byKey[key] = g
	a.tokens = append(a.tokens, g.Token)
}

// drive sends grants for jobs [from, to) with workers; every 10th job is
// also repeated at once. It stops early (without failing) when stop is set
// and reports how many jobs it finished.
func drive(t *testing.T, n *node, jobs []string, ans *answered, stop *atomic.Bool) (transportErrs int64) {
	var next atomic.Int64
	var errs atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				i := next.Add(1) - 1
				if i >= int64(len(jobs)) {
					return
				}
				user, rain, _ := strings.Cut(jobs[i], "/")
				var r int
				fmt.Sscan(rain, &r)
				reps := 1
				if i%10 == 0 {
					reps = 2
				}
				for range reps {
					code, body, err := post(n.url("/v1/grants"), grantBody(user, "e2e", r))
					if err != nil {
						errs.Add(1)
						continue
					}
					var g grantResp
					if err := json.Unmarshal(body, &g); err != nil {
						t.Errorf("grant answer %q: %v", body, err)
						continue
					}
					if code != 200 {
						if code == 503 || g.Code == "grant_in_progress" {
							errs.Add(1)
							continue
						}
						t.Errorf("grant %s: %d %s", jobs[i], code, body)
						continue
					}
					if g.Status != "issued" && g.Status != "booked" {
						t.Errorf("grant %s: status %q", jobs[i], g.Status)
					}
					ans.record(t, jobs[i], g)
				}
			}
		}()
	}
	wg.Wait()
	return errs.Load()
}

type tokenResult struct {
	OutTradeNo string `json:"out_trade_no"`
	Status     string `json:"status"`
	ActID      uint64 `json:"act_id"`
	Amount     int64  `json:"amount"`
	Error      string `json:"error"`
}

func tokenCall(t *testing.T, n *node, op string, toks []string) []tokenResult {
	t.Helper()
	body, _ := json.Marshal(map[string][]string{"tokens": toks})
	code, b, err := post(n.url("/v1/tokens/"+op), string(body))
	if err != nil || code != 200 {
		t.Fatalf("tokens/%s: %d %s %v", op, code, b, err)
	}
	var res struct{ Results []tokenResult }
	if err := json.Unmarshal(b, &res); err != nil || len(res.Results) != len(toks) {
		t.Fatalf("tokens/%s answer %s: %v", op, b, err)
	}
	return res.Results
}

func stats(t *testing.T, n *node) (lag int64) {
	resp, err := http.Get(n.url("/admin/v1/stats"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s struct {
		BookingLag int64 `json:"booking_lag"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	return s.BookingLag
}

func waitDrained(t *testing.T, n *node) {
	deadline := time.Now().Add(5 * time.Minute)
	for stats(t, n) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("booking did not drain in 5 minutes; log:\n%s", tail(n.logPath))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func tamper(tok string) string {
	b := []byte(tok)
	i := len(b) / 2
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

func TestNodeEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "redrain")
	build := exec.Command("go", "build", "-o", bin, "../cmd/redrain")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cfg := filepath.Join(dir, "campaign.json")
	if err := os.WriteFile(cfg, []byte(campaignJSON(*rainsFlag)), 0o644); err != nil {
		t.Fatal(err)
	}
	n := &node{t: t, bin: bin, dir: filepath.Join(dir, "data"), cfg: cfg, logPath: filepath.Join(dir, "node.log")}
	t.Cleanup(func() {
		if n.cmd != nil && n.cmd.Process != nil {
			_ = n.cmd.Process.Kill()
		}
		if t.Failed() {
			t.Logf("node log tail:\n%s", tail(n.logPath))
		}
	})
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
	ans := &answered{byKey: map[string]grantResp{}}

	// Phase 1: grant until about 40% are answered, then kill -9 mid-rain.
	var stop atomic.Bool
	done := make(chan int64)
	go func() { done <- drive(t, n, jobs, ans, &stop) }()
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
	drive(t, n, jobs, ans, &stop) // every job again: finished ones are repeats
	if len(ans.byKey) != len(jobs) {
		t.Fatalf("%d of %d grants answered", len(ans.byKey), len(jobs))
	}
	waitDrained(t, n)

	// Every answered token is booked; tampered ones are invalid everywhere.
	var bad []string
	for i := 0; i < len(ans.tokens); i += 1000 {
		end := min(i+1000, len(ans.tokens))
		for j, r := range tokenCall(t, n, "status", ans.tokens[i:end]) {
			if r.Status != "booked" {
				bad = append(bad, fmt.Sprintf("%s: %+v", ans.tokens[i+j][:16], r))
			}
		}
	}
	if len(bad) > 0 {
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
		resp, err := http.Get(n.url(fmt.Sprintf("/v1/wallet/%d", act)))
		if err != nil {
			t.Fatal(err)
		}
		var w struct {
			Balances []struct {
				AwardType string `json:"award_type"`
				Balance   int64  `json:"balance"`
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
