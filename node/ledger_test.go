package node_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"redrain/campaign"
	"redrain/ingress"
	"redrain/node"
	"redrain/storage/storagetest"
)

type ledgerEntry struct {
	Index      uint64 `json:"index"`
	Asset      string `json:"asset"`
	Kind       string `json:"kind"`
	Amount     int64  `json:"amount"`
	AwardType  string `json:"award_type"`
	OutTradeNo string `json:"out_trade_no"`
	BookedAt   int64  `json:"booked_at"`
}

type ledgerMonth struct {
	Month   string `json:"month"`
	Asset   string `json:"asset"`
	Kind    string `json:"kind"`
	Income  int64  `json:"income"`
	Expense int64  `json:"expense"`
}

type ledgerPage struct {
	ActID      uint64        `json:"act_id"`
	Asset      *string       `json:"asset"`
	Entries    []ledgerEntry `json:"entries"`
	Months     []ledgerMonth `json:"months"`
	NextCursor *string       `json:"next_cursor"`
}

// ledgerGet fetches a ledger page and fails unless it is a 200.
func ledgerGet(t *testing.T, n *node.Node, act uint64, query string) ledgerPage {
	t.Helper()
	code, body := get(t, n, fmt.Sprintf("/v1/ledger/%d%s", act, query))
	if code != http.StatusOK {
		t.Fatalf("ledger %d%s = %d %s", act, query, code, body)
	}
	var p ledgerPage
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("ledger %d%s: %v: %s", act, query, err, body)
	}
	return p
}

// ledgerPages follows the cursors from query's first page to the end and
// returns every entry, calling between(i) after page i.
func ledgerPages(t *testing.T, n *node.Node, act uint64, query string, between func(page int)) ([]ledgerEntry, []ledgerPage) {
	t.Helper()
	var all []ledgerEntry
	var pages []ledgerPage
	q := query
	for i := 0; ; i++ {
		p := ledgerGet(t, n, act, q)
		pages = append(pages, p)
		all = append(all, p.Entries...)
		if p.NextCursor == nil {
			return all, pages
		}
		sep := "?"
		if query != "" {
			sep = query + "&"
		}
		q = sep + "cursor=" + *p.NextCursor
		if between != nil {
			between(i)
		}
	}
}

// TestLedgerThroughNode: one user's packets of 90 rains (cash or gold
// coins, drawn), booked by the node, archived into chunks past 64. Paging
// by 4 while 20 more rains are granted and booked between pages lists the
// 90 first entries exactly once, newest first, with their indexes; a
// filter lists only its asset's; each page's months are the month's whole
// income per asset; bad input is a 400 malformed_request naming the
// problem, another app's request a 403 and an unsigned one a 401.
func TestLedgerThroughNode(t *testing.T) {
	const rains, later = 90, 20
	cfg := configFileWith(t, func(c *campaign.Config) {
		a := &c.Activities[0]
		start := a.Rains[0].Start
		a.Rains = nil
		for r := uint64(1); r <= rains+later; r++ {
			a.Rains = append(a.Rains, campaign.Rain{SceneID: "rain", RainID: r, AlwaysOpen: true, Start: start})
		}
		a.Awards = append(a.Awards, campaign.Award{Type: "gold", Kind: campaign.KindCoin, Currency: "gold", Min: 1, Max: 50})
		a.Stages[0].Budgets["gold"] = 1_000_000_000
	})
	dir, redisAddr := t.TempDir(), storagetest.Redis(t)
	n, err := node.Start(node.Config{DataDir: dir, HTTP: "127.0.0.1:0", AdminHTTP: "127.0.0.1:0",
		Redis: redisAddr, ConfigFile: cfg, Log: newTestLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopNode(t, n) })
	waitReady(t, n, true)

	grantRain := func(r uint64) grantAnswer {
		var ans grantAnswer
		g := demoGrant("ledger-user")
		g.RainID = r
		if err := post(n, "/v1/grants", g, &ans); err != nil {
			t.Fatal(err)
		}
		return ans
	}
	var answers []grantAnswer
	for r := uint64(1); r <= rains; r++ {
		answers = append(answers, grantRain(r))
	}
	waitBooked(t, n, rains)
	act := answers[0].ActID
	byTrade := map[string]grantAnswer{}
	for _, a := range answers {
		byTrade[a.OutTradeNo] = a
	}

	// Unfiltered, by 4, booking 20 more packets between pages.
	next := uint64(rains + 1)
	got, pages := ledgerPages(t, n, act, "?limit=4", func(page int) {
		if next <= rains+later {
			grantRain(next)
			waitBooked(t, n, int64(next))
			next++
		}
	})
	if next != rains+later+1 {
		t.Fatalf("only %d packets booked between pages", next-rains-1)
	}
	if len(got) != rains {
		t.Fatalf("pages hold %d entries, want the %d booked at the first page", len(got), rains)
	}
	assets := map[string]bool{}
	for i, e := range got {
		a, ok := byTrade[e.OutTradeNo]
		if e.Index != uint64(rains-1-i) || !ok || a.Amount != e.Amount || a.AwardType != e.AwardType {
			t.Fatalf("entry %d of the pages = %+v, want index %d, a packet granted (%+v)", i, e, rains-1-i, a)
		}
		wantKind := map[string]string{"cash": "money", "gold": "coin"}[e.AwardType]
		if e.Kind != wantKind || (e.AwardType == "gold") != (e.Asset == "coin:gold") {
			t.Fatalf("entry %+v: asset or kind not its award's", e)
		}
		assets[e.Asset] = true
	}
	if len(assets) != 2 {
		t.Fatalf("the draws gave assets %v; the test needs both", assets)
	}
	for _, p := range pages {
		if len(p.Entries) > 4 || p.Asset != nil {
			t.Fatalf("page of %d entries, asset %v", len(p.Entries), p.Asset)
		}
	}

	// Every entry now, to check months and the filters against.
	all, _ := ledgerPages(t, n, act, "?limit=100", nil)
	if len(all) != rains+later || all[0].Index != rains+later-1 {
		t.Fatalf("after the later packets: %d entries, newest index %d", len(all), all[0].Index)
	}
	model := map[string]int64{} // month/asset -> income
	for _, e := range all {
		model[time.UnixMilli(e.BookedAt).UTC().Format("2006-01")+"/"+e.Asset] += e.Amount
	}
	checkMonths := func(p ledgerPage, filter string) {
		t.Helper()
		var want []ledgerMonth
		var touched []string
		for _, e := range p.Entries {
			if m := time.UnixMilli(e.BookedAt).UTC().Format("2006-01"); !slices.Contains(touched, m) {
				touched = append(touched, m)
			}
		}
		for _, m := range touched {
			for _, asset := range []string{"cash", "coin:gold"} {
				if v := model[m+"/"+asset]; v > 0 && (filter == "" || filter == asset) {
					want = append(want, ledgerMonth{Month: m, Asset: asset, Kind: map[string]string{"cash": "money", "coin:gold": "coin"}[asset], Income: v})
				}
			}
		}
		if !slices.Equal(p.Months, want) {
			t.Fatalf("months %+v, want %+v", p.Months, want)
		}
	}
	for _, filter := range []string{"", "cash", "coin:gold"} {
		query := "?limit=9"
		if filter != "" {
			query += "&asset=" + filter
		}
		got, pages := ledgerPages(t, n, act, query, nil)
		var want []ledgerEntry
		for _, e := range all {
			if filter == "" || e.Asset == filter {
				want = append(want, e)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("filter %q: pages hold %d entries, want %d", filter, len(got), len(want))
		}
		for _, p := range pages {
			checkMonths(p, filter)
		}
	}

	// Bad input: each a 400 malformed_request that says what is wrong.
	first := ledgerGet(t, n, act, "?limit=3")
	cur := *first.NextCursor
	gold := ledgerGet(t, n, act, "?limit=3&asset=coin:gold")
	altered := []byte(cur)
	altered[len(altered)-1] ^= 1
	for _, tc := range []struct{ path, says string }{
		{"/v1/ledger/0", "act_id"},
		{"/v1/ledger/abc", "act_id"},
		{"/v1/ledger/-1", "act_id"},
		{"/v1/ledger/99999999999999999999999", "act_id"},
		{fmt.Sprintf("/v1/ledger/%d?limit=0", act), "limit"},
		{fmt.Sprintf("/v1/ledger/%d?limit=101", act), "limit"},
		{fmt.Sprintf("/v1/ledger/%d?limit=x", act), "limit"},
		{fmt.Sprintf("/v1/ledger/%d?limit=07", act), "limit"},
		{fmt.Sprintf("/v1/ledger/%d?limit=3&limit=4", act), "twice"},
		{fmt.Sprintf("/v1/ledger/%d?asset=gold", act), "asset"},
		{fmt.Sprintf("/v1/ledger/%d?asset=coin:", act), "asset"},
		{fmt.Sprintf("/v1/ledger/%d?asset=coin:silver", act), "asset"},
		{fmt.Sprintf("/v1/ledger/%d?cursor=", act), "cursor"},
		{fmt.Sprintf("/v1/ledger/%d?cursor=zzz", act), "cursor"},
		{fmt.Sprintf("/v1/ledger/%d?cursor=%s", act, altered), "cursor"},
		{fmt.Sprintf("/v1/ledger/%d?asset=cash&cursor=%s", act, cur), "cursor"},   // another filter's
		{fmt.Sprintf("/v1/ledger/%d?cursor=%s", act, *gold.NextCursor), "cursor"}, // another filter's
		{fmt.Sprintf("/v1/ledger/%d?cursor=%s", act+1, cur), "cursor"},            // another account's
		{fmt.Sprintf("/v1/ledger/%d?page=2", act), "unknown query parameter"},
	} {
		code, body := get(t, n, tc.path)
		var e struct{ Code, Message string }
		_ = json.Unmarshal(body, &e)
		if code != http.StatusBadRequest || e.Code != "malformed_request" || !strings.Contains(e.Message, tc.says) {
			t.Errorf("GET %s = %d %s, want 400 malformed_request about %q", tc.path, code, body, tc.says)
		}
	}
	// The cursor still works after all that, and says the same.
	if again := ledgerGet(t, n, act, "?limit=3&cursor="+cur); again.Entries[0].Index != first.Entries[2].Index-1 {
		t.Errorf("the cursor's page starts at %d, want %d", again.Entries[0].Index, first.Entries[2].Index-1)
	}

	// App scoping: app 2 holds no user of this account; unsigned is 401.
	req, _ := http.NewRequest(http.MethodGet, urlOf(n, fmt.Sprintf("/v1/ledger/%d", act)), nil)
	req.Header.Set(headerTestApp, "2")
	if resp, err := httpClient.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("ledger as app 2 = %v, %v, want 403", resp, err)
	} else {
		resp.Body.Close()
	}
	resp, err := http.Get(urlOf(n, fmt.Sprintf("/v1/ledger/%d", act)))
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("unsigned ledger = %v, %v, want 401", resp, err)
	} else {
		resp.Body.Close()
	}
	// An id handed out with nothing booked: an empty page, no cursor.
	if p := ledgerGet(t, n, act+1, ""); len(p.Entries) != 0 || len(p.Months) != 0 || p.NextCursor != nil {
		t.Errorf("empty account page %+v", p)
	}

	// A read node on the same store answers the same pages (from the
	// store: it has no booking), and the same errors.
	stopNode(t, n)
	r, err := node.Start(node.Config{DataDir: dir, HTTP: "127.0.0.1:0", AdminHTTP: "127.0.0.1:0", Role: ingress.RoleRead,
		Redis: redisAddr, ConfigFile: cfg, Log: newTestLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopNode(t, r) })
	waitReady(t, r, true)
	if got, _ := ledgerPages(t, r, act, "?limit=100", nil); !slices.Equal(got, all) {
		t.Errorf("the read node's pages hold %d entries, want the %d the node that booked them showed", len(got), len(all))
	}
	if got, _ := ledgerPages(t, r, act, "?limit=7&asset=coin:gold", nil); len(got) == 0 || got[0].Asset != "coin:gold" {
		t.Errorf("the read node's gold pages: %+v", got)
	}
	if code, body := get(t, r, fmt.Sprintf("/v1/ledger/%d?asset=coin:silver", act)); code != http.StatusBadRequest {
		t.Errorf("read node, unknown asset = %d %s, want 400", code, body)
	}
}
