package node_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"strconv"
	"testing"

	"redrain/adminauth"
	"redrain/storage/storagetest"
)

// exampleActivity returns the body of the activity named id in the
// campaign file examples/campaign.json.
func exampleActivity(t *testing.T, id string) json.RawMessage {
	t.Helper()
	raw, err := os.ReadFile("../examples/campaign.json")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Activities []json.RawMessage `json:"activities"`
	}
	if err := json.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	for _, a := range file.Activities {
		var head struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(a, &head); err != nil {
			t.Fatal(err)
		}
		if head.ID == id {
			return a
		}
	}
	t.Fatalf("examples/campaign.json has no activity %q", id)
	return nil
}

// TestTwoActivitiesOneRain: newyear (examples/campaign.json) and spring
// (examples/spring.json) both have rain 1 in scene lobby. Scene and rain
// ids are unique only within an activity, so a user granted in both gets
// two packets (two trade numbers), both booked into one wallet, and each
// repeat answers its own activity's packet.
func TestTwoActivitiesOneRain(t *testing.T) {
	n := startNode(t, t.TempDir(), storagetest.Redis(t))
	c := adminClient(t, n)
	ctx := context.Background()
	for _, a := range []adminauth.ActivityDoc{
		{ID: "newyear", Body: exampleActivity(t, "newyear")},
		{ID: "spring", Body: springStages(t, "formal")},
	} {
		applied, err := c.PutActivity(ctx, a)
		if err != nil {
			t.Fatalf("put %s: %v", a.ID, err)
		}
		if _, err := c.Publish(ctx, a.ID, applied.Version, nil); err != nil {
			t.Fatalf("publish %s: %v", a.ID, err)
		}
		awaitServed(t, n)
	}

	type packets struct{ newyear, spring stagedAnswer }
	granted := map[string]packets{}
	var issued int
	for _, u := range users("two-", 12) {
		var p packets
		for _, act := range []struct {
			id  string
			out *stagedAnswer
		}{{"newyear", &p.newyear}, {"spring", &p.spring}} {
			code, g := grantAs(t, n, 1, u, act.id, "lobby", 1)
			if code != http.StatusOK || g.Status != "issued" || g.Token == "" || g.OutTradeNo == "" {
				t.Fatalf("%s's %s grant = %d %+v, want a new packet", u, act.id, code, g)
			}
			*act.out = g
			issued++
		}
		if p.newyear.ActID != p.spring.ActID {
			t.Fatalf("%s: act_ids %d and %d, want one account", u, p.newyear.ActID, p.spring.ActID)
		}
		if p.newyear.OutTradeNo == p.spring.OutTradeNo || p.newyear.Token == p.spring.Token {
			t.Fatalf("%s: newyear and spring answered the same packet %s", u, p.newyear.OutTradeNo)
		}
		granted[u] = p
	}
	// A repeat in either activity is that activity's packet again.
	for u, p := range granted {
		for _, want := range []struct {
			id string
			g  stagedAnswer
		}{{"newyear", p.newyear}, {"spring", p.spring}} {
			_, g := grantAs(t, n, 1, u, want.id, "lobby", 1)
			if g.OutTradeNo != want.g.OutTradeNo || g.Amount != want.g.Amount || g.AwardType != want.g.AwardType {
				t.Errorf("%s's repeated %s grant = %+v, want %+v", u, want.id, g, want.g)
			}
		}
	}
	waitBooked(t, n, int64(issued))

	// Both packets of every user are booked into the one wallet.
	var req struct {
		Tokens []string `json:"tokens"`
	}
	for _, p := range granted {
		req.Tokens = append(req.Tokens, p.newyear.Token, p.spring.Token)
	}
	var res struct {
		Results []struct {
			OutTradeNo string `json:"out_trade_no"`
			Status     string `json:"status"`
		} `json:"results"`
	}
	if err := post(n, "/v1/tokens/status", req, &res); err != nil {
		t.Fatal(err)
	}
	for i, r := range res.Results {
		if r.Status != "booked" {
			t.Errorf("token %d (%s): %s, want booked", i, r.OutTradeNo, r.Status)
		}
	}
	for u, p := range granted {
		want := map[string]int64{}
		want[p.newyear.Asset] += p.newyear.Amount
		want[p.spring.Asset] += p.spring.Amount
		code, body := get(t, n, "/v1/wallet/"+strconv.FormatUint(p.newyear.ActID, 10))
		var w struct {
			Balances []struct {
				Asset   string `json:"asset"`
				Balance int64  `json:"balance"`
			} `json:"balances"`
		}
		if code != http.StatusOK || json.Unmarshal(body, &w) != nil {
			t.Fatalf("wallet of %s = %d %s", u, code, body)
		}
		got := map[string]int64{}
		for _, b := range w.Balances {
			got[b.Asset] = b.Balance
		}
		if len(got) != len(want) {
			t.Errorf("wallet of %s = %v, want %v (newyear %+v, spring %+v)", u, got, want, p.newyear, p.spring)
			continue
		}
		for asset, v := range want {
			if got[asset] != v {
				t.Errorf("wallet of %s = %v, want %v (newyear %+v, spring %+v)", u, got, want, p.newyear, p.spring)
				break
			}
		}
	}
	r := audit(t, n)
	if r.Entries < issued {
		t.Errorf("audit counted %d bookings, want at least the %d packets of this test", r.Entries, issued)
	}
}
