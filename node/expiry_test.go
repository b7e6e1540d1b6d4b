package node_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"redrain/campaign"
	"redrain/node"
	"redrain/storage/storagetest"
)

// postAdmin sends POST path (no body), signed as the admin, and returns
// the answer.
func postAdmin(t *testing.T, n *node.Node, path string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("POST", urlOf(n, path), nil)
	if err := adminSigner.Sign(req, nil); err != nil {
		t.Fatal(err)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// pastClock is a node clock 70 days behind until offset is set to 0.
func pastClock() (offset *atomic.Int64, clock func() time.Time) {
	offset = new(atomic.Int64)
	offset.Store((70 * 24 * time.Hour).Milliseconds())
	return offset, func() time.Time { return time.Now().Add(-time.Duration(offset.Load()) * time.Millisecond) }
}

// thisMonthsStatement folds the journals and reads party's statement of
// the current month.
func thisMonthsStatement(t *testing.T, n *node.Node, party string) (int, []byte) {
	t.Helper()
	if _, err := n.FoldStatements(t.Context()); err != nil {
		t.Fatal(err)
	}
	return get(t, n, "/admin/v1/statements?period=month&date="+time.Now().UTC().Format("2006-01")+"&party="+party)
}

// TestExpiryThroughBooking: gold recharged 70 days ago, valid one month,
// is expired by POST /admin/v1/expiry/run through the node's Booker, once
// however often the sweep runs; what was recharged this month stays; the
// user's statement shows the expiry.
func TestExpiryThroughBooking(t *testing.T) {
	offset, clock := pastClock()
	cfg := configFileWith(t, func(c *campaign.Config) {
		c.Validity = map[string]campaign.Validity{"coin:gold": {Months: 1}, "item:rose": {Months: 3}}
	})
	n := startNodeWith(t, t.TempDir(), storagetest.Redis(t), cfg, func(c *node.Config) { c.Clock = clock })
	g := grantAll(t, n, []string{"ex-1"})[0]
	waitBooked(t, n, 1)
	recharge := func(id string, amount int64) {
		t.Helper()
		body := map[string]any{"request_id": id, "app_id": 1, "act_id": g.ActID, "amount": amount, "currency": "gold"}
		if code, c := postCode(t, n, "/v1/coins/recharge", body); code != 200 {
			t.Fatalf("recharge = %d %s", code, c)
		}
	}
	recharge("r-old", 70)
	offset.Store(0)
	recharge("r-new", 5)

	code, body := postAdmin(t, n, "/admin/v1/expiry/run")
	var r node.ExpiryReport
	if err := json.Unmarshal(body, &r); code != 200 || err != nil {
		t.Fatalf("expiry run = %d %s (%v)", code, body, err)
	}
	if r.Applied != 1 || r.Expired["expired/coin:gold"]["coin:gold"] != 70 || r.Month != time.Now().UTC().Format("2006-01") {
		t.Fatalf("expiry run %s: want one expiry of the 70 old gold", body)
	}
	code, body = postAdmin(t, n, "/admin/v1/expiry/run")
	if err := json.Unmarshal(body, &r); code != 200 || err != nil || r.Applied != 0 || r.Accounts != 1 {
		t.Fatalf("expiry run again = %d %s: want nothing booked", code, body)
	}
	if code, _ := postAdmin(t, n, "/admin/v1/expiry/run?dry=1"); code != 400 {
		t.Errorf("expiry run with a parameter = %d, want 400", code)
	}
	code, body = get(t, n, "/v1/wallet/"+strconv.FormatUint(g.ActID, 10))
	if code != 200 || !bytes.Contains(body, []byte(`"coin:gold"`)) {
		t.Fatalf("wallet = %d %s", code, body)
	}
	var w struct {
		Balances []struct {
			Asset   string `json:"asset"`
			Balance int64  `json:"balance"`
		} `json:"balances"`
	}
	_ = json.Unmarshal(body, &w)
	gold := int64(-1)
	for _, a := range w.Balances {
		if a.Asset == "coin:gold" {
			gold = a.Balance
		}
	}
	if gold != 5 {
		t.Errorf("wallet after expiry: %s, want 5 gold left", body)
	}
	code, body = thisMonthsStatement(t, n, "user:"+strconv.FormatUint(g.ActID, 10))
	if code != 200 || !bytes.Contains(body, []byte(`"item":"expire","asset":"coin:gold","count":1,"amount":-70`)) {
		t.Errorf("the user's statement = %d %s, want an expire line", code, body)
	}
}

// TestExpiryReturnsToActivity: roses granted 70 days ago from the demo
// activity's one budget of roses, valid one month, expire back to that
// budget: the audit holds (the budget's hot details hold what returned),
// and the activity's statement shows the return.
func TestExpiryReturnsToActivity(t *testing.T) {
	offset, clock := pastClock()
	cfg := configFileWith(t, func(c *campaign.Config) {
		a := &c.Activities[0]
		a.Awards = []campaign.Award{{Type: "rose", Kind: campaign.KindItem, Template: "rose", Min: 2, Max: 2}}
		a.Stages[0].Budgets = map[string]int64{"rose": 1000}
		c.Validity = map[string]campaign.Validity{"item:rose": {Months: 1}}
	})
	n := startNodeWith(t, t.TempDir(), storagetest.Redis(t), cfg, func(c *node.Config) { c.Clock = clock })
	gs := grantAll(t, n, []string{"ro-1", "ro-2", "ro-3"})
	waitBooked(t, n, 3)
	offset.Store(0)

	code, body := postAdmin(t, n, "/admin/v1/expiry/run")
	var r node.ExpiryReport
	if err := json.Unmarshal(body, &r); code != 200 || err != nil {
		t.Fatalf("expiry run = %d %s (%v)", code, body, err)
	}
	if r.Applied != len(gs) || r.Expired["budget/demo/formal/rose"]["item:rose"] != 6 {
		t.Fatalf("expiry run %s: want three expiries of 2 roses back to budget demo/formal/rose", body)
	}
	rep := audit(t, n)
	for _, b := range rep.Budgets {
		if b.ID == "demo/formal/rose" && b.Expired != 6 {
			t.Errorf("audit: budget %s returned %d by expiry, want 6", b.ID, b.Expired)
		}
	}
	code, body = get(t, n, "/admin/v1/budgets/demo/formal/rose")
	var view struct {
		Expired int64 `json:"expired"`
		OK      bool  `json:"ok"`
	}
	if err := json.Unmarshal(body, &view); code != 200 || err != nil || view.Expired != 6 || !view.OK {
		t.Errorf("the budget's view = %d %s, want 6 returned by expiry", code, body)
	}
	code, body = thisMonthsStatement(t, n, "activity:demo")
	if code != 200 || !bytes.Contains(body, []byte(`"item":"expiry_return","asset":"item:rose","count":3,"amount":6`)) {
		t.Errorf("the activity's statement = %d %s, want the return of 6 roses", code, body)
	}
}

// TestExpiryMonthly: with no operator, the node sweeps the partitions it
// owns once the month has turned past the gold's validity.
func TestExpiryMonthly(t *testing.T) {
	offset, clock := pastClock()
	cfg := configFileWith(t, func(c *campaign.Config) {
		c.Validity = map[string]campaign.Validity{"coin:gold": {Months: 1}}
	})
	n := startNodeWith(t, t.TempDir(), storagetest.Redis(t), cfg, func(c *node.Config) {
		c.Clock, c.ExpiryEvery = clock, 50*time.Millisecond
	})
	g := grantAll(t, n, []string{"mo-1"})[0]
	waitBooked(t, n, 1)
	body := map[string]any{"request_id": "r-old", "app_id": 1, "act_id": g.ActID, "amount": 40, "currency": "gold"}
	if code, c := postCode(t, n, "/v1/coins/recharge", body); code != 200 {
		t.Fatalf("recharge = %d %s", code, c)
	}
	offset.Store(0)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		code, b := get(t, n, "/v1/wallet/"+strconv.FormatUint(g.ActID, 10))
		if code == 200 && !bytes.Contains(b, []byte(`"coin:gold"`)) { // a zero balance is not shown
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the monthly sweep did not expire the old gold within 20 s: wallet %d %s", code, b)
		}
	}
	code, b := thisMonthsStatement(t, n, "user:"+strconv.FormatUint(g.ActID, 10))
	if code != 200 || !bytes.Contains(b, []byte(`"item":"expire","asset":"coin:gold","count":1,"amount":-40`)) {
		t.Fatalf("the user's statement = %d %s, want the expiry of 40 gold", code, b)
	}
	// An operator's run after it books nothing.
	code, b = postAdmin(t, n, "/admin/v1/expiry/run")
	var r node.ExpiryReport
	if err := json.Unmarshal(b, &r); code != 200 || err != nil || r.Applied != 0 {
		t.Fatalf("expiry run after the monthly sweep = %d %s", code, b)
	}
}
