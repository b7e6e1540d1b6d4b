package e2e

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"redrain/adminauth"
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
     "awards": [{"type": "cash", "min": 1, "max": 500}],
     "stages": [{"stage": "formal", "budgets": {"cash": 100000000000}}]},
    {"id": "small", "rains": [{"scene_id":"rain","rain_id":1,"always_open":true,"start":"2026-02-10T12:00:00Z"}],
     "awards": [{"type": "cash", "min": 100, "max": 100}],
     "stages": [{"stage": "formal", "budgets": {"cash": %d}}]},
    {"id": "closed", "rains": [{"scene_id":"rain","rain_id":1,"start":"2020-01-01T00:00:00Z","end":"2020-01-01T00:01:00Z"}],
     "awards": [{"type": "cash", "min": 1, "max": 10}],
     "stages": [{"stage": "formal", "budgets": {"cash": 1000}}]}
  ],
  "token_keys": ["1:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"],
  "active_token_key": 1,
  "draw_salt": "e2e",
  "admin_keys": [%q],
  "app_keys": [%q]
}`, strings.Join(rs, ","), smallBudget, testAdminKey, testAppKey)
}

// testAdminKey is the admin key of the nodes these tests start (a node on
// real backends refuses to start without one of its own). The commands
// the tests run (admin, bench) sign with it through $REDRAIN_ADMIN_KEY,
// which init sets for them.
const testAdminKey = "e2e:7a1c3e5f70929b4d6f81a3c5e7092b4d6f81a3c5e70921b4d6f8a1c3e5f70929"

// testAppKey is the key of app 1, the app of every grant these tests
// make; they sign with it (appSigner), bench through $REDRAIN_APP_KEY.
const testAppKey = "1:3e5f70929b4d6f81a3c5e7092b4d6f81a3c5e70921b4d6f8a1c3e5f709297a1c"

func init() {
	os.Setenv("REDRAIN_ADMIN_KEY", testAdminKey)
	os.Setenv("REDRAIN_APP_KEY", testAppKey)
}

type node struct {
	t    *testing.T
	bin  string
	dir  string
	cfg  string
	args []string // more serve flags (backends, cluster)
	addr string   // HTTP; chosen on first start, kept across restarts
	// adminAddr is the operations listener (--admin-http), likewise.
	adminAddr string
	cmd       *exec.Cmd
	logPath   string
}

func (n *node) start() {
	n.t.Helper()
	if n.addr == "" {
		n.addr, n.adminAddr = freeAddr(n.t), freeAddr(n.t)
	}
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		n.t.Fatal(err)
	}
	n.cmd = exec.Command(n.bin, append([]string{"serve", "--data-dir", n.dir, "--http", n.addr, "--admin-http", n.adminAddr, "--config", n.cfg, "--log-level", "warn"}, n.args...)...)
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

// adminURL is p on the node's operations listener (admin API, /metrics).
func (n *node) adminURL(p string) string { return "http://" + n.adminAddr + p }

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// freeAddr picks a free loopback port below 32768 (higher fixed ports
// collide with client sockets on this machine) for a server that must keep
// its address across restarts.
// A port handed out is never handed out again in this run: it is free
// now, but its server may not have bound it yet.
func freeAddr(t *testing.T) string {
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 200 {
		port := 20000 + rand.IntN(12767)
		if portsGiven[port] {
			continue
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		if l, err := net.Listen("tcp", addr); err == nil {
			l.Close()
			portsGiven[port] = true
			return addr
		}
	}
	t.Fatal("no free loopback port below 32768")
	return ""
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

// adminSigner signs the admin requests with the test nodes' admin key.
var adminSigner = &adminauth.Signer{Key: adminauth.MustParseKey(testAdminKey)}

// adminGet sends a signed GET of an admin route through client.
func adminGet(url string) (*http.Response, error) { return signedGet(adminSigner, url) }

// signedGet sends a GET signed by s through client.
func signedGet(s *adminauth.Signer, url string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if err := s.Sign(req, nil); err != nil {
		return nil, err
	}
	return client.Do(req)
}

// appSigner signs the /v1 requests of these tests as app 1.
var appSigner = &adminauth.Signer{Key: adminauth.MustParseKey(testAppKey)}

// appGet sends a GET of a /v1 route signed as app 1.
func appGet(url string) (*http.Response, error) { return signedGet(appSigner, url) }

// post sends body to a /v1 route, signed as app 1.
func post(url string, body string) (int, []byte, error) {
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if err := appSigner.Sign(req, []byte(body)); err != nil {
		return 0, nil, err
	}
	resp, err := client.Do(req)
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
	at     []time.Time // when each of tokens was answered
	// errFirst and errLast bound the grant requests that failed (transport
	// errors, 503s): the window in which grants were unavailable somewhere.
	errFirst, errLast time.Time
	errs              int
	errCodes          map[string]int // by code ("transport" for connection errors)
	// slowest is the longest a request took that was answered with a
	// token (a paused node's requests hang until it resumes).
	slowest time.Duration
}

func newAnswered() *answered {
	return &answered{byKey: map[string]grantResp{}, errCodes: map[string]int{}}
}

func (a *answered) record(t *testing.T, key string, g grantResp, took time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.slowest = max(a.slowest, took)
	if prev, ok := a.byKey[key]; ok {
		if prev.Token != g.Token || prev.Amount != g.Amount || prev.ActID != g.ActID {
			t.Errorf("repeat grant %s changed: first %+v, now %+v", key, prev, g)
		}
		return
	}
	a.byKey[key] = g
	a.tokens = append(a.tokens, g.Token)
	a.at = append(a.at, time.Now())
}

func (a *answered) failed(code string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.errCodes[code]++
	now := time.Now()
	if a.errs == 0 {
		a.errFirst = now
	}
	a.errLast = now
	a.errs++
}

// resetErrors forgets the failures seen so far (before a fault, the
// cluster's start), so that those after it are counted alone.
func (a *answered) resetErrors() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.errs, a.errFirst, a.errLast = 0, time.Time{}, time.Time{}
	clear(a.errCodes)
}

func (a *answered) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.byKey)
}

// drive sends grants for jobs with workers spread over nodes; every 10th
// job is also repeated at once. A request that fails (a dead node, a 503)
// moves its worker to the next node and is sent again, so every job ends
// answered unless stop is set.
func drive(t *testing.T, nodes []*node, jobs []string, ans *answered, stop *atomic.Bool) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			at := w % len(nodes)
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
				for rep := 0; rep < reps && !stop.Load(); {
					sent := time.Now()
					code, body, err := post(nodes[at].url("/v1/grants"), grantBody(user, "e2e", r))
					var g grantResp
					if err == nil {
						if err = json.Unmarshal(body, &g); err != nil {
							t.Errorf("grant answer %q: %v", body, err)
							break
						}
					}
					if err != nil || code == 503 || g.Code == "grant_in_progress" {
						if err != nil {
							ans.failed("transport")
						} else {
							ans.failed(g.Code)
						}
						at = (at + 1) % len(nodes)
						time.Sleep(20 * time.Millisecond) // pace retries against a dead node
						continue
					}
					rep++
					if code != 200 {
						t.Errorf("grant %s: %d %s", jobs[i], code, body)
						continue
					}
					if g.Status != "issued" && g.Status != "booked" {
						t.Errorf("grant %s: status %q", jobs[i], g.Status)
					}
					ans.record(t, jobs[i], g, time.Since(sent))
				}
			}
		}()
	}
	wg.Wait()
}

// allBooked checks every answered token's status through n and returns
// the ones that are not booked.
func allBooked(t *testing.T, n *node, ans *answered) []string {
	var bad []string
	for i := 0; i < len(ans.tokens); i += 1000 {
		end := min(i+1000, len(ans.tokens))
		for j, r := range tokenCall(t, n, "status", ans.tokens[i:end]) {
			if r.Status != "booked" {
				bad = append(bad, fmt.Sprintf("%s: %+v", ans.tokens[i+j][:16], r))
			}
		}
	}
	return bad
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

// metricValue reads an unlabelled series of n's /metrics.
func metricValue(t *testing.T, n *node, name string) int64 {
	t.Helper()
	resp, err := http.Get(n.adminURL("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			// The exposition writes large values as floats (1.5e+06).
			x, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return int64(x)
		}
	}
	t.Fatalf("no %s in /metrics", name)
	return 0
}

func stats(t *testing.T, n *node) (lag int64) {
	resp, err := adminGet(n.adminURL("/admin/v1/stats"))
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

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds cmd/redrain once per test run.
func binary(t *testing.T) string {
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "redrain-e2e-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "redrain")
		if out, err := exec.Command("go", "build", "-o", binPath, "../cmd/redrain").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// newNode returns a node (not started) of the campaign campaignJSON(rains)
// with args for serve, in a directory of the test's, killed when the test
// ends (its log's tail printed when it failed). Short mode skips the test.
func newNode(t *testing.T, rains int, args ...string) *node {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "campaign.json")
	if err := os.WriteFile(cfg, []byte(campaignJSON(rains)), 0o644); err != nil {
		t.Fatal(err)
	}
	n := &node{t: t, bin: binary(t), dir: filepath.Join(dir, "data"), cfg: cfg, logPath: filepath.Join(dir, "node.log"), args: args}
	t.Cleanup(func() {
		if n.cmd != nil && n.cmd.Process != nil {
			_ = n.cmd.Process.Kill()
		}
		if t.Failed() {
			t.Logf("node log tail:\n%s", tail(n.logPath))
		}
	})
	return n
}
