package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"redrain/adminauth"
	"redrain/campaign"
	"redrain/node"
	"redrain/reconcile"
)

// readyWithin bounds how long a node may take from Start to ready: the
// cluster member's start (a fixed protoactor sleep of ~1-2 s), then booking
// the backlog and rebuilding Redis.
const readyWithin = 60 * time.Second

// drainWithin bounds how long booking may take to catch up with the grants
// a test made (a few hundred).
const drainWithin = 60 * time.Second

// testLog routes a node's log into the test's output until the test ends:
// grains and consumers may still log from their goroutines after Stop, and
// t.Log panics once the test has completed.
type testLog struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func newTestLog(t testing.TB) *slog.Logger {
	w := &testLog{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func (w *testLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// startNode starts a node on dir and redis and waits until it is ready.
// The node is stopped when the test ends if the test did not stop it.
func startNode(t *testing.T, dir, redisAddr string) *node.Node {
	t.Helper()
	return startNodeWith(t, dir, redisAddr, configFile(t))
}

// startNodeWith is startNode with the campaign file at config; each of
// configure changes the node's configuration first.
func startNodeWith(t *testing.T, dir, redisAddr, config string, configure ...func(*node.Config)) *node.Node {
	t.Helper()
	cfg := node.Config{DataDir: dir, HTTP: "127.0.0.1:0", AdminHTTP: "127.0.0.1:0", Redis: redisAddr, ConfigFile: config, Log: newTestLog(t)}
	for _, f := range configure {
		f(&cfg)
	}
	n, err := node.Start(cfg)
	if err != nil {
		t.Fatalf("node.Start(%s): %v", dir, err)
	}
	t.Cleanup(func() { stopNode(t, n) })
	deadline := time.Now().Add(readyWithin)
	for {
		code, body := get(t, n, "/readyz")
		if code == http.StatusOK {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("node on %s not ready within %v: %d %s", dir, readyWithin, code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func stopNode(t *testing.T, n *node.Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n.Stop(ctx) // idempotent
}

// testAdminKey and testTokenKey are the keys of the campaign file the test
// nodes load (configFile): secrets of these tests, not the public ones a
// node on a real backend (their redis-server) refuses.
const (
	testAdminKey = "test:5f0dd8a1c3e2b4978a6c1e0f2d3b4a5968778695a4b3c2d1e0f1a2b3c4d5e6f7"
	testTokenKey = "1:8e2c6a4f1b3d5e7092a4c6e8f0b2d4f6a8c0e2f4b6d8fa1c3e5a7c9e1b3d5f70"
)

// configFile writes the demo campaign with the test keys into a file of
// the test's and returns its path.
func configFile(t testing.TB) string { return configFileWith(t, func(*campaign.Config) {}) }

// configFileWith is configFile with the config changed by edit first.
func configFileWith(t testing.TB, edit func(c *campaign.Config)) string {
	t.Helper()
	c := campaign.Demo()
	c.TokenKeys, c.AdminKeys, c.AppKeys = []string{testTokenKey}, []string{testAdminKey}, testAppKeys()
	edit(c)
	raw, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "campaign.json")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// adminSigner signs the admin requests with the test nodes' admin key.
var adminSigner = &adminauth.Signer{Key: adminauth.MustParseKey(testAdminKey)}

// urlOf is path's URL on n: on its operations listener for the admin API,
// /metrics and /debug/, else on its API listener.
func urlOf(n *node.Node, path string) string {
	for _, p := range []string{"/admin/", "/metrics", "/debug/"} {
		if strings.HasPrefix(path, p) {
			return "http://" + n.AdminAddr() + path
		}
	}
	return "http://" + n.Addr() + path
}

func get(t *testing.T, n *node.Node, path string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, urlOf(n, path), nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(path, "/admin/") {
		if err := adminSigner.Sign(req, nil); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read: %v", path, err)
	}
	return resp.StatusCode, body
}

// post sends in as JSON and decodes a 200 answer into out. It returns an
// error (rather than failing) so that it can run on other goroutines.
func post(n *node.Node, path string, in, out any) error {
	raw, err := json.Marshal(in)
	if err != nil {
		return err
	}
	resp, err := httpClient.Post(urlOf(n, path), "application/json", bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("POST %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("POST %s: read: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s %s: %d %s", path, raw, resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("POST %s: decode %s: %w", path, body, err)
	}
	return nil
}

type grantRequest struct {
	AppID      uint32 `json:"app_id"`
	UserID     string `json:"user_id"`
	ActivityID string `json:"activity_id"`
	SceneID    string `json:"scene_id"`
	RainID     uint64 `json:"rain_id"`
}

type grantAnswer struct {
	Token      string `json:"token"`
	OutTradeNo string `json:"out_trade_no"`
	ActID      uint64 `json:"act_id"`
	AwardType  string `json:"award_type"`
	Amount     int64  `json:"amount"`
	Status     string `json:"status"`
}

func demoGrant(user string) grantRequest {
	return grantRequest{AppID: 1, UserID: user, ActivityID: "demo", SceneID: "rain", RainID: 1}
}

// grantAll grants to every user, a few requests at a time, and returns the
// answers in the order of users.
func grantAll(t *testing.T, n *node.Node, users []string) []grantAnswer {
	t.Helper()
	const workers = 8
	out := make([]grantAnswer, len(users))
	errs := make([]error, len(users))
	var wg sync.WaitGroup
	next := make(chan int)
	for range workers {
		wg.Go(func() {
			for i := range next {
				errs[i] = post(n, "/v1/grants", demoGrant(users[i]), &out[i])
			}
		})
	}
	for i := range users {
		next <- i
	}
	close(next)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("grant to %s: %v", users[i], err)
		}
	}
	return out
}

type stats struct {
	GrantsIssued int64 `json:"grants_issued"`
	GrantsBooked int64 `json:"grants_booked"`
	BookingLag   int64 `json:"booking_lag"`
	Ready        bool  `json:"ready"`
}

func getStats(t *testing.T, n *node.Node) stats {
	t.Helper()
	code, body := get(t, n, "/admin/v1/stats")
	var s stats
	if code != http.StatusOK {
		t.Fatalf("GET /admin/v1/stats: %d %s", code, body)
	}
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatalf("GET /admin/v1/stats: %v: %s", err, body)
	}
	return s
}

// waitBooked polls the node's stats until it has booked booked grants and
// no record is left behind.
func waitBooked(t *testing.T, n *node.Node, booked int64) {
	t.Helper()
	deadline := time.Now().Add(drainWithin)
	for {
		s := getStats(t, n)
		if s.BookingLag == 0 && s.GrantsBooked >= booked {
			if s.GrantsBooked > booked {
				t.Fatalf("stats = %+v: booked more than the %d grants made", s, booked)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("booking did not drain within %v: stats = %+v, want %d booked", drainWithin, s, booked)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// audit fetches the node's reconciliation report and fails the test on
// any violation.
func audit(t *testing.T, n *node.Node) *reconcile.Report {
	t.Helper()
	code, body := get(t, n, "/admin/v1/audit")
	if code != http.StatusOK {
		t.Fatalf("GET /admin/v1/audit: %d %s", code, body)
	}
	var r reconcile.Report
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("GET /admin/v1/audit: %v: %s", err, body)
	}
	if !r.OK {
		var b strings.Builder
		r.WriteText(&b)
		t.Fatalf("audit found violations:\n%s", b.String())
	}
	return &r
}
