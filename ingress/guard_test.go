package ingress

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"redrain/errcode"
	"redrain/metrics/promexport"
	"redrain/protect"
	"redrain/storage"
)

func setGuard(t *testing.T, g *protect.Guard, s protect.Switches) {
	t.Helper()
	if err := g.Set(&s); err != nil {
		t.Fatal(err)
	}
}

// refusedGrant posts a grant that the guard must refuse and checks the
// answer, its Retry-After (in 1..retryMax seconds), and that the user was
// neither bound nor claimed a limit key in Redis.
func (ts *testServer) refusedGrant(t *testing.T, user string, want errcode.Code, retryMin, retryMax int) {
	t.Helper()
	code, retry, raw := ts.post(t, "/v1/grants", grantBody(1, user))
	var e errorAnswer
	secs, err := strconv.Atoi(retry)
	if err != nil || secs < retryMin || secs > retryMax || json.Unmarshal(raw, &e) != nil || code != want.Status() || e.Code != want {
		t.Fatalf("grant to %s = %d (Retry-After %q) %s, want %d %s with Retry-After %d..%d", user, code, retry, raw,
			want.Status(), want, retryMin, retryMax)
	}
	if got := ts.redisGet(t, storage.BindMarkKey(1, user)); got != "" {
		t.Fatalf("refused grant to %s bound it to act %s", user, got)
	}
}

// claims reads how many users hold a packet claim in the grant path.
func (ts *testServer) claims(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(promexport.Text(ts.srv.Metrics))
	for line := range strings.Lines(b.String()) {
		if v, ok := strings.CutPrefix(line, "redrain_grant_claims "); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatal("no redrain_grant_claims metric")
	return ""
}

func TestGuardRefusesGrants(t *testing.T) {
	g := protect.NewGuard(nil)
	ts := newTestServer(t, g)

	setGuard(t, g, protect.Switches{ShedPercent: 100, RetryAfterSeconds: 7})
	ts.refusedGrant(t, "u1", errcode.CodeShed, 7, 7)

	setGuard(t, g, protect.Switches{ClosedRains: []string{"demo/rain/1"}, RetryAfterSeconds: 4})
	ts.refusedGrant(t, "u1", errcode.CodeRainSwitchedOff, 4, 4)
	setGuard(t, g, protect.Switches{ClosedActivities: []string{"demo"}})
	ts.refusedGrant(t, "u1", errcode.CodeRainSwitchedOff, 1, 1)
	setGuard(t, g, protect.Switches{ClosedRains: []string{"demo/rain/2"}})
	ts.grant(t, 1, "u1") // another rain closed: this one is open

	// Client app 1 may make one grant request every 10 s; the wait left
	// depends on the time between the two requests.
	setGuard(t, g, protect.Switches{ClientRate: 0.1, ClientBurst: 1})
	ts.grant(t, 1, "u2")
	ts.refusedGrant(t, "u3", errcode.CodeRateLimited, 1, 10)

	if n := ts.grants.Issued(); n != 2 {
		t.Fatalf("grants issued = %d, want 2: refused requests spend no budget", n)
	}
	if n := ts.claims(t); n != "2" {
		t.Fatalf("%s users claimed a packet, want the 2 admitted grants'", n)
	}
}

// TestGuardBatch answers a batch item by item: the user's second and
// third requests are over its limit, the others go through, and the
// answer carries the longest Retry-After.
func TestGuardBatch(t *testing.T) {
	g := protect.NewGuard(nil)
	ts := newTestServer(t, g)
	setGuard(t, g, protect.Switches{UserRate: 0.5, UserBurst: 1})
	body := `{"grants":[` + grantBody(1, "x") + `,` + grantBody(1, "x") + `,` + grantBody(1, "y") + `,` + grantBody(1, "x") + `]}`
	code, retry, raw := ts.post(t, "/v1/grants/batch", body)
	if code != http.StatusOK || retry != "2" {
		t.Fatalf("batch = %d (Retry-After %q) %s, want 200 with Retry-After 2", code, retry, raw)
	}
	var got struct {
		Results []struct {
			Code   errcode.Code `json:"code"`
			Status string       `json:"status"`
		} `json:"results"`
	}
	if err := json.Unmarshal(raw, &got); err != nil || len(got.Results) != 4 {
		t.Fatalf("batch answer %s (%v), want 4 results", raw, err)
	}
	want := []struct {
		code   errcode.Code
		status string
	}{{"", "issued"}, {errcode.CodeRateLimited, ""}, {"", "issued"}, {errcode.CodeRateLimited, ""}}
	for i, w := range want {
		if got.Results[i].Code != w.code || got.Results[i].Status != w.status {
			t.Errorf("result %d = %+v, want code %q status %q", i, got.Results[i], w.code, w.status)
		}
	}
	if n := ts.grants.Issued(); n != 2 {
		t.Fatalf("grants issued = %d, want 2", n)
	}
}
