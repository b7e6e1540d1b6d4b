package node_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"redrain/adminauth"
	"redrain/campaign"
	"redrain/configstore"
	"redrain/node"
	"redrain/storage/storagetest"
	"redrain/tokens"
)

// adminClient signs with the test nodes' admin key.
func adminClient(t *testing.T, n *node.Node) *adminauth.Client {
	t.Helper()
	return &adminauth.Client{Target: "http://" + n.AdminAddr(), Signer: adminSigner, HTTP: httpClient}
}

// springStages is examples/spring.json with only the given stages.
func springStages(t *testing.T, stages ...string) json.RawMessage {
	t.Helper()
	raw, err := os.ReadFile("../examples/spring.json")
	if err != nil {
		t.Fatal(err)
	}
	var a map[string]any
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Fatal(err)
	}
	var keep []any
	for _, s := range a["stages"].([]any) {
		for _, want := range stages {
			if s.(map[string]any)["stage"] == want {
				keep = append(keep, s)
			}
		}
	}
	a["stages"] = keep
	// More always-open rains, so that each step of a test has fresh limits.
	for r := 2; r <= 6; r++ {
		a["rains"] = append(a["rains"].([]any), map[string]any{"scene_id": "lobby", "rain_id": r, "always_open": true, "start": "2027-02-01T00:00:00Z"})
	}
	out, _ := json.Marshal(a)
	return out
}

type stagedAnswer struct {
	ActID      uint64 `json:"act_id"`
	AwardType  string `json:"award_type"`
	Asset      string `json:"asset"`
	Amount     int64  `json:"amount"`
	Stage      string `json:"stage"`
	Status     string `json:"status"`
	Token      string `json:"token"`
	OutTradeNo string `json:"out_trade_no"`
	Code       string `json:"code"`
}

// waitDrained waits until every grant the node issued is booked.
func waitDrained(t *testing.T, n *node.Node) {
	t.Helper()
	s := getStats(t, n)
	waitBooked(t, n, s.GrantsIssued)
}

// configSeq reads the configuration change counter the node serves.
func configSeq(t *testing.T, n *node.Node) int64 {
	t.Helper()
	_, body := get(t, n, "/metrics")
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "redrain_config_seq "); ok {
			seq, err := strconv.ParseFloat(v, 64) // large values come as 1.5e+06
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return int64(seq)
		}
	}
	t.Fatal("no redrain_config_seq in /metrics")
	return 0
}

// awaitSeq waits until the node serves configuration change seq.
// awaitServed waits until the node serves every configuration change the
// store holds now (its change counter read from the store, not from the
// node, which may not have served an earlier change yet).
func awaitServed(t *testing.T, n *node.Node) {
	t.Helper()
	seq, err := configstore.New(n.Store(), time.Now).Seq(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	awaitSeq(t, n, int64(seq))
}

func awaitSeq(t *testing.T, n *node.Node, seq int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for configSeq(t, n) < seq {
		if time.Now().After(deadline) {
			t.Fatalf("configuration change %d not served within 10s", seq)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// grantAs sends one grant and returns the answer, error answers included.
func grantAs(t *testing.T, n *node.Node, app uint32, user, activity, scene string, rain uint64) (int, stagedAnswer) {
	t.Helper()
	body := fmt.Sprintf(`{"app_id":%d,"user_id":%q,"activity_id":%q,"scene_id":%q,"rain_id":%d}`, app, user, activity, scene, rain)
	resp, err := httpClient.Post("http://"+n.Addr()+"/v1/grants", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var g stagedAnswer
	if err := json.NewDecoder(resp.Body).Decode(&g); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, g
}

// stageCounts grants once to each of users and counts answers by stage
// (or by error code).
func stageCounts(t *testing.T, n *node.Node, users []string, rain uint64) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, u := range users {
		code, g := grantAs(t, n, 1, u, "spring", "lobby", rain)
		switch {
		case code == http.StatusOK:
			out[g.Stage]++
		default:
			out[g.Code]++
		}
	}
	return out
}

func users(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return out
}

// budgetsAddUp fails the test unless every budget of spring reports figures
// that add up.
func budgetsAddUp(t *testing.T, c *adminauth.Client, when string) int {
	t.Helper()
	raw, err := c.Budgets(context.Background(), "spring")
	if err != nil {
		t.Fatalf("%s: budgets: %v", when, err)
	}
	var out struct {
		Budgets []struct {
			ID       string   `json:"id"`
			OK       bool     `json:"ok"`
			Problems []string `json:"problems"`
		} `json:"budgets"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s: budgets %s: %v", when, raw, err)
	}
	for _, b := range out.Budgets {
		if !b.OK {
			t.Errorf("%s: budget %s does not add up: %v", when, b.ID, b.Problems)
		}
	}
	return len(out.Budgets)
}

// TestStagesByPublishing takes an activity from internal to formal by
// publishing configuration only, with a gray release of one version to a
// whitelist first, then rolls back.
func TestStagesByPublishing(t *testing.T) {
	n := startNode(t, t.TempDir(), storagetest.Redis(t))
	c := adminClient(t, n)
	ctx := context.Background()
	put := func(body json.RawMessage) int64 {
		t.Helper()
		a, err := c.PutActivity(ctx, adminauth.ActivityDoc{ID: "spring", Body: body})
		if err != nil {
			t.Fatalf("put: %v", err)
		}
		return a.Version
	}
	publish := func(v int64, whitelist []string) {
		t.Helper()
		if _, err := c.Publish(ctx, "spring", v, whitelist); err != nil {
			t.Fatalf("publish %d: %v", v, err)
		}
	}
	// Nodes pick a publish up within configPollEvery; a test polls.
	await := func(what string, user string, rain uint64, want func(int, stagedAnswer) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			code, g := grantAs(t, n, 1, user, "spring", "lobby", rain)
			if want(code, g) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s got %d %+v", what, user, code, g)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	public := users("user-", 400)
	// publishAndWait publishes and waits until the node serves it.
	publishAndWait := func(v int64, whitelist []string) {
		t.Helper()
		publish(v, whitelist)
		awaitServed(t, n)
	}

	// Version 1: staff only.
	v1 := put(springStages(t, "internal"))
	publishAndWait(v1, nil)
	await("v1 live", "staff-1", 1, func(code int, g stagedAnswer) bool { return code == 200 && g.Stage == "internal" })
	if got := stageCounts(t, n, []string{"staff-2"}, 1); got["internal"] != 1 {
		t.Errorf("staff-2 under v1: %v, want internal", got)
	}
	if got := stageCounts(t, n, public[:50], 1); got["not_eligible"] != 50 {
		t.Errorf("public under v1: %v, want all not_eligible", got)
	}
	budgetsAddUp(t, c, "v1")

	// Version 2 adds gray (5% and a whitelist), first to one canary user.
	v2 := put(springStages(t, "internal", "gray"))
	publishAndWait(v2, []string{"1:vip-1"})
	await("v2 canary", "vip-1", 1, func(code int, g stagedAnswer) bool { return code == 200 && g.Stage == "gray" })
	if got := stageCounts(t, n, public[:50], 2); got["not_eligible"] != 50 {
		t.Errorf("public while v2 is a canary: %v, want all not_eligible", got)
	}
	publishAndWait(v2, nil)
	gray := stageCounts(t, n, public, 3)
	if gray["gray"] == 0 || gray["gray"] > len(public)/10 || gray["gray"]+gray["not_eligible"] != len(public) {
		t.Errorf("public under v2: %v, want about 5%% gray and the rest not_eligible", gray)
	}
	budgetsAddUp(t, c, "v2")

	// Version 3: formal for everyone else.
	v3 := put(springStages(t, "internal", "gray", "formal"))
	publishAndWait(v3, nil)
	await("v3 live", "user-formal-probe", 4, func(code int, g stagedAnswer) bool { return code == 200 && g.Stage == "formal" })
	formal := stageCounts(t, n, public, 4)
	if formal["gray"] != gray["gray"] || formal["formal"] != len(public)-gray["gray"] {
		t.Errorf("public under v3: %v, want %d gray (as under v2) and the rest formal", formal, gray["gray"])
	}
	var v3Tokens []string
	for _, u := range public[:20] {
		if _, g := grantAs(t, n, 1, u, "spring", "lobby", 4); g.Token != "" {
			v3Tokens = append(v3Tokens, g.Token)
		}
	}
	if len(v3Tokens) == 0 {
		t.Fatal("no token under version 3")
	}
	if got := budgetsAddUp(t, c, "v3"); got != 30 {
		t.Errorf("budgets of spring = %d, want 30 (3 stages x 10 awards)", got)
	}

	// Rollback to version 2: formal users are refused again.
	if _, err := c.Rollback(ctx, "spring", v2); err != nil {
		t.Fatal(err)
	}
	awaitServed(t, n)
	back := stageCounts(t, n, public, 5)
	if back["gray"] != gray["gray"] || back["not_eligible"] != len(public)-gray["gray"] {
		t.Errorf("public after rollback: %v, want as under v2: %v", back, gray)
	}
	// Packets granted under version 3 stand: their tokens still verify and
	// book (a repeat of the grant itself is refused: the user is in no
	// stage now).
	var req struct {
		Tokens []string `json:"tokens"`
	}
	req.Tokens = append(req.Tokens, v3Tokens...)
	var res struct {
		Results []struct {
			Status string `json:"status"`
		} `json:"results"`
	}
	if err := post(n, "/v1/tokens/status", req, &res); err != nil {
		t.Fatal(err)
	}
	for i, r := range res.Results {
		if r.Status != "issued" && r.Status != "booked" {
			t.Errorf("token %d of version 3 after rollback: %s", i, r.Status)
		}
	}
	// Only version 3 (stored, no longer served) offers formal awards: it
	// bounds a formal token's amount. Sealed with the node's token key, as
	// whoever stole it could: spring's cash draws at most 888 fen.
	ring, err := campaign.Compile(&campaign.Config{TokenKeys: []string{testTokenKey}, ActiveTokenKey: 1})
	if err != nil {
		t.Fatal(err)
	}
	forged := func(amount int64) string {
		c := tokens.Claims{AppID: 1, ActID: 1 << 40, ActivityID: "spring", SceneID: "lobby", RainID: 4,
			AwardType: "cash", Stage: tokens.StageFormal, Amount: amount}
		return string(ring.Ring.Seal(nil, &c))
	}
	req.Tokens = []string{forged(888), forged(889)}
	if err := post(n, "/v1/tokens/status", req, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Results) != 2 || res.Results[0].Status != "issued" || res.Results[1].Status != "invalid" {
		t.Errorf("formal cash tokens of 888 and 889 fen after rollback: %+v, want issued and invalid", res.Results)
	}
	waitDrained(t, n)
	budgetsAddUp(t, c, "after rollback")
	audit(t, n)
}

// TestFallbacksAndThresholds exhausts a small award into its fallback and
// then into "no award", and shows a threshold shrinking the draw.
func TestFallbacksAndThresholds(t *testing.T) {
	n := startNode(t, t.TempDir(), storagetest.Redis(t))
	c := adminClient(t, n)
	ctx := context.Background()
	body := json.RawMessage(`{"id":"tiny","rains":[{"scene_id":"s","rain_id":1,"always_open":true,"start":"2026-01-01T00:00:00Z"}],
	 "awards":[{"type":"big","kind":"money","min":100,"max":100,"fallback":"gold"},
	           {"type":"gold","kind":"coin","currency":"gold","min":1,"max":1,"weight":0,"fallback":"none"}],
	 "stages":[{"stage":"formal","budgets":{"big":1000,"gold":5}}]}`)
	a, err := c.PutActivity(ctx, adminauth.ActivityDoc{ID: "tiny", Body: body})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Publish(ctx, "tiny", a.Version, nil); err != nil {
		t.Fatal(err)
	}
	awaitServed(t, n)
	got := map[string]int{}
	var sum int64
	for i := 0; i < 60; i++ {
		code, g := grantAs(t, n, 1, fmt.Sprintf("t-%d", i), "tiny", "s", 1)
		if code != 200 {
			t.Fatalf("grant %d: %d %+v", i, code, g)
		}
		got[g.AwardType]++
		if g.AwardType == "big" {
			sum += g.Amount
		}
	}
	// Both awards draw at weight 1: half of the first users may draw gold
	// directly, so only the totals are fixed: 10 big packets, 5 gold, and
	// everyone else no award.
	if got["big"] != 10 || got["gold"] != 5 || got["none"] != 45 || sum != 1000 {
		t.Errorf("awards = %v (cash %d), want 10 big (1000 fen), 5 gold, 45 none", got, sum)
	}
	// A repeat of a no-award answer is the same answer and spends nothing.
	_, g := grantAs(t, n, 1, "t-59", "tiny", "s", 1)
	if g.Status != "no_award" {
		t.Errorf("repeat of a no-award grant: %+v", g)
	}

	// Thresholds: 10 fen until half the budget is leased out, then 1 fen.
	body = json.RawMessage(`{"id":"thr","rains":[{"scene_id":"s","rain_id":1,"always_open":true,"start":"2026-01-01T00:00:00Z"}],
	 "awards":[{"type":"cash","min":10,"max":10,"thresholds":[{"spent_percent":50,"min":1,"max":1}]}],
	 "stages":[{"stage":"formal","budgets":{"cash":2000}}]}`)
	if a, err = c.PutActivity(ctx, adminauth.ActivityDoc{ID: "thr", Body: body}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Publish(ctx, "thr", a.Version, nil); err != nil {
		t.Fatal(err)
	}
	awaitServed(t, n)
	var amounts []int64
	for i := 0; len(amounts) < 300; i++ {
		code, g := grantAs(t, n, 1, fmt.Sprintf("h-%d", i), "thr", "s", 1)
		if code != 200 {
			break // exhausted
		}
		amounts = append(amounts, g.Amount)
	}
	tens, ones := 0, 0
	for i, a := range amounts {
		switch {
		case a == 10 && ones == 0:
			tens++
		case a == 1:
			ones++
		default:
			t.Fatalf("amount %d at grant %d after %d one-fen grants: want 10s, then only 1s", a, i, ones)
		}
	}
	if tens < 50 || tens > 150 || ones == 0 {
		t.Errorf("threshold: %d grants of 10 fen then %d of 1 fen; want the switch near half of 2000 fen", tens, ones)
	}
	waitDrained(t, n)
	audit(t, n)
}

// TestAdminRefusesBadRequests: unsigned, altered, expired and replayed
// admin requests get 401 and change nothing.
func TestAdminRefusesBadRequests(t *testing.T) {
	n := startNode(t, t.TempDir(), storagetest.Redis(t))
	c := adminClient(t, n)
	ctx := context.Background()
	before, err := c.Activity(ctx, "demo", 0)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"version":1}`)
	send := func(method, path string, body []byte, edit func(h http.Header)) (int, string) {
		t.Helper()
		h, err := c.Signer.Headers(method, path, "", body)
		if err != nil {
			t.Fatal(err)
		}
		edit(h)
		req, _ := http.NewRequest(method, urlOf(n, path), strings.NewReader(string(body)))
		req.Header = h
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e struct{ Code, Message string }
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return resp.StatusCode, e.Code + ": " + e.Message
	}
	path := "/admin/v1/activities/demo/rollback"
	for _, tc := range []struct {
		name string
		edit func(h http.Header)
	}{
		{"unsigned", func(h http.Header) { h.Del("X-Redrain-Signature") }},
		{"no key", func(h http.Header) { h.Del("X-Redrain-Key") }},
		{"unknown key", func(h http.Header) { h.Set("X-Redrain-Key", "other") }},
		{"altered signature", func(h http.Header) { h.Set("X-Redrain-Signature", strings.Repeat("0", 64)) }},
		{"expired", func(h http.Header) {
			h.Set("X-Redrain-Timestamp", fmt.Sprint(time.Now().Add(-time.Hour).UnixMilli()))
		}},
		{"from the future", func(h http.Header) {
			h.Set("X-Redrain-Timestamp", fmt.Sprint(time.Now().Add(time.Hour).UnixMilli()))
		}},
		{"other nonce", func(h http.Header) { h.Set("X-Redrain-Nonce", strings.Repeat("a", 32)) }},
	} {
		if code, msg := send("POST", path, body, tc.edit); code != 401 {
			t.Errorf("%s: %d %s, want 401", tc.name, code, msg)
		}
	}
	// Altered body and path under a valid signature.
	h, _ := c.Signer.Headers("POST", path, "", body)
	for _, alt := range []struct{ path, body string }{
		{path, `{"version":2}`},
		{"/admin/v1/activities/demo/publish", string(body)},
	} {
		req, _ := http.NewRequest("POST", urlOf(n, alt.path), strings.NewReader(alt.body))
		req.Header = h.Clone()
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("altered %s %s: %d, want 401", alt.path, alt.body, resp.StatusCode)
		}
	}
	// A replay of a request that was accepted once.
	h, _ = c.Signer.Headers("GET", "/admin/v1/stats", "", nil)
	for i, want := range []int{200, 401} {
		req, _ := http.NewRequest("GET", urlOf(n, "/admin/v1/stats"), nil)
		req.Header = h.Clone()
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("stats request sent %d times: %d, want %d", i+1, resp.StatusCode, want)
		}
	}
	after, err := c.Activity(ctx, "demo", 0)
	if err != nil {
		t.Fatal(err)
	}
	if string(before) != string(after) {
		t.Errorf("refused requests changed the activity:\n%s\n%s", before, after)
	}
	// A signed request with a bad body is refused with its own code.
	var apiErr *adminauth.APIError
	_, err = c.PutActivity(ctx, adminauth.ActivityDoc{ID: "demo", Body: json.RawMessage(`{"id":"demo","rains":[]}`)})
	if !errors.As(err, &apiErr) || apiErr.Code != "invalid_config" {
		t.Errorf("invalid activity: %v, want invalid_config", err)
	}
	// An award keeps its asset for life: demo's cash cannot become coins.
	_, err = c.PutActivity(ctx, adminauth.ActivityDoc{ID: "demo", Body: json.RawMessage(`{"id":"demo",
	 "rains":[{"scene_id":"rain","rain_id":1,"always_open":true,"start":"2026-01-01T00:00:00Z"}],
	 "awards":[{"type":"cash","kind":"coin","currency":"gold","min":1,"max":2}],
	 "stages":[{"stage":"formal","budgets":{"cash":10}}]}`)})
	if !errors.As(err, &apiErr) || apiErr.Code != "invalid_config" || !strings.Contains(apiErr.Message, "books into cash") {
		t.Errorf("award changing its asset: %v, want invalid_config", err)
	}
	// Unknown versions and activities are not found, and change nothing.
	if _, err := c.Publish(ctx, "demo", 99, nil); !errors.As(err, &apiErr) || apiErr.Code != "not_found" {
		t.Errorf("publish of an unknown version: %v, want not_found", err)
	}
	if _, err := c.Rollback(ctx, "nope", 1); !errors.As(err, &apiErr) || apiErr.Code != "not_found" {
		t.Errorf("rollback of an unknown activity: %v, want not_found", err)
	}
	if after, _ := c.Activity(ctx, "demo", 0); string(after) != string(before) {
		t.Errorf("refused changes altered the activity:\n%s\n%s", before, after)
	}
}

// TestSwitchesThroughAdmin: an operator closes a rain and then sheds all
// load through the admin API; every node applies it from the store, the
// refusals carry Retry-After and show in the metrics.
func TestSwitchesThroughAdmin(t *testing.T) {
	n := startNode(t, t.TempDir(), storagetest.Redis(t))
	c := adminClient(t, n)
	ctx := context.Background()
	set := func(body string) {
		t.Helper()
		if _, err := c.SetSwitches(ctx, []byte(body)); err != nil {
			t.Fatalf("switches %s: %v", body, err)
		}
		awaitServed(t, n)
	}
	grant := func(user string) (int, string, string) {
		t.Helper()
		body := fmt.Sprintf(`{"app_id":1,"user_id":%q,"activity_id":"demo","scene_id":"rain","rain_id":1}`, user)
		resp, err := httpClient.Post("http://"+n.Addr()+"/v1/grants", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e struct{ Code string }
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return resp.StatusCode, e.Code, resp.Header.Get("Retry-After")
	}
	if code, _, _ := grant("s-0"); code != 200 {
		t.Fatalf("grant before any switch: %d", code)
	}
	set(`{"closed_rains":["demo/rain/1"],"retry_after_seconds":7}`)
	if code, e, ra := grant("s-1"); code != 503 || e != "rain_switched_off" || ra != "7" {
		t.Errorf("closed rain: %d %s Retry-After %q, want 503 rain_switched_off 7", code, e, ra)
	}
	set(`{"shed_percent":100,"retry_after_seconds":3}`)
	if code, e, ra := grant("s-2"); code != 503 || e != "shed" || ra != "3" {
		t.Errorf("shed: %d %s Retry-After %q, want 503 shed 3", code, e, ra)
	}
	// A refused switches document is invalid_config and changes nothing.
	var apiErr *adminauth.APIError
	if _, err := c.SetSwitches(ctx, []byte(`{"shed_percent":101}`)); !errors.As(err, &apiErr) || apiErr.Code != "invalid_config" {
		t.Errorf("shed 101%%: %v, want invalid_config", err)
	}
	set(`{}`)
	if code, _, _ := grant("s-3"); code != 200 {
		t.Errorf("grant after the switches were cleared: %d", code)
	}
	_, metrics := get(t, n, "/metrics")
	for _, m := range []string{"redrain_shed_total 1", "redrain_switch_closed_total 1"} {
		if !strings.Contains(string(metrics), m) {
			t.Errorf("metrics lack %q", m)
		}
	}
}
