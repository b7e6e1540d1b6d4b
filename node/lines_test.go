package node_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"redrain/campaign"
	"redrain/lines"
	"redrain/node"
	"redrain/storage/storagetest"
)

// testLine is a business line for node tests: a real HTTP server that
// answers every user's assets and counts the requests per user.
type testLine struct {
	srv *httptest.Server
	mu  sync.Mutex
	hit map[string]int
}

func newTestLine(t *testing.T) *testLine {
	l := &testLine{hit: map[string]int{}}
	l.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user := r.URL.Query().Get("user_id")
		l.mu.Lock()
		l.hit[user]++
		l.mu.Unlock()
		fmt.Fprintf(w, `{"assets":[{"id":"gold","name":"Gold","amount":%d}]}`, len(user))
	}))
	t.Cleanup(l.srv.Close)
	return l
}

func (l *testLine) hits(user string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.hit[user]
}

// withLine configures the business line "games" at url.
func withLine(url string) func(c *campaign.Config) {
	return func(c *campaign.Config) {
		c.BusinessLines = []lines.Line{{ID: "games", PullURL: url, Rate: 100, WindowMs: 60_000}}
	}
}

func notify(t *testing.T, n *node.Node, app uint32, user string) (int, string) {
	t.Helper()
	body := fmt.Sprintf(`{"line":"games","app_id":%d,"user_id":%q}`, app, user)
	resp, err := httpClient.Post("http://"+n.Addr()+"/v1/sync/notify", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(raw)
}

// waitSnapshot polls the node's snapshots of user until cond holds.
func waitSnapshot(t *testing.T, n *node.Node, app uint32, user string, what string, cond func([]lines.Snapshot) bool) []lines.Snapshot {
	t.Helper()
	deadline := time.Now().Add(readyWithin)
	for {
		snaps, err := n.Lines().Snapshots(context.Background(), app, user)
		if err != nil {
			t.Fatal(err)
		}
		if cond(snaps) {
			return snaps
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: snapshots of %d/%s %+v after %v", what, app, user, snaps, readyWithin)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSyncThroughNode: a notice to a node's route is queued on the sync
// topic (202), consumed by the node's group and pulled from the line; the
// snapshot is the line's. An operator switching the line off (the
// switches document, through the admin API) stops the pulls and marks the
// snapshots stale.
func TestSyncThroughNode(t *testing.T) {
	line := newTestLine(t)
	n := startNodeWith(t, t.TempDir(), storagetest.Redis(t), configFileWith(t, withLine(line.srv.URL)))
	if code, body := notify(t, n, 1, "u-1"); code != http.StatusAccepted {
		t.Fatalf("notify: %d %s, want 202", code, body)
	}
	snaps := waitSnapshot(t, n, 1, "u-1", "pulled", func(s []lines.Snapshot) bool { return len(s) == 1 })
	if s := snaps[0]; s.Line != "games" || s.Stale || !s.Pushed || len(s.Assets) != 1 || s.Assets[0].Amount != int64(len("u-1")) {
		t.Errorf("snapshot %+v, want the line's assets, pushed, not stale", s)
	}
	// The wallet shows the line's snapshot of the account's user, and of
	// a user the request names.
	act := grantAll(t, n, []string{"u-1"})[0].ActID
	for _, path := range []string{"/v1/wallet/" + strconv.FormatUint(act, 10), "/v1/wallet/" + strconv.FormatUint(act, 10) + "?app_id=1&user_id=u-1"} {
		deadline := time.Now().Add(readyWithin)
		for {
			code, body := get(t, n, path)
			if code == http.StatusOK && strings.Contains(string(body), `"lines":[{"app_id":1,"user_id":"u-1","line":"games","assets":[{"id":"gold","name":"Gold","amount":3}]`) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET %s = %d %s, want the line's snapshot of u-1", path, code, body)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, q := range []string{"?app_id=2&user_id=u-1", "?app_id=1", "?app_id=x&user_id=u-1"} {
		if code, body := get(t, n, "/v1/wallet/"+strconv.FormatUint(act, 10)+q); code != http.StatusBadRequest {
			t.Errorf("wallet%s signed by app 1 = %d %s, want 400", q, code, body)
		}
	}
	if code, body := notify(t, n, 1, "u-1"); code != http.StatusAccepted {
		t.Fatalf("second notify: %d %s", code, body)
	}

	c := adminClient(t, n)
	if _, err := c.SetSwitches(context.Background(), []byte(`{"lines_off":["games"]}`)); err != nil {
		t.Fatal(err)
	}
	awaitServed(t, n)
	if code, body := notify(t, n, 1, "u-2"); code != http.StatusAccepted {
		t.Fatalf("notify while off: %d %s, want 202 (queued, then skipped)", code, body)
	}
	deadline := time.Now().Add(readyWithin)
	for n.Lines().Stats("games").SkippedOff == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("notice for an off line not skipped: %+v", n.Lines().Stats("games"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if h := line.hits("u-2"); h != 0 {
		t.Errorf("an off line was pulled %d times", h)
	}
	if h := line.hits("u-1"); h != 1 {
		t.Errorf("two notices within the window: %d pulls, want 1", h)
	}
	waitSnapshot(t, n, 1, "u-1", "stale while off", func(s []lines.Snapshot) bool { return len(s) == 1 && s[0].Stale })
	if _, err := c.SetSwitches(context.Background(), []byte(`{"lines_off":["Games"]}`)); err == nil {
		t.Error("switches with a malformed line id accepted")
	}
}
