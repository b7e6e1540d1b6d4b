package bench

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"redrain/adminauth"
)

// fakeWallets is a node as the wallet reads see it: a batch grant hands
// out act_ids from next on and books at once (amount 10 + the user's
// number); a wallet read answers a holder's balance (from the "store" the
// first time, then the "cache"), an empty wallet from the "holders" layer
// below allocEnd, else 404. Once lieAfter wallet reads were answered (0:
// never), every later one lies: a holder shows one fen more, an empty user
// a balance.
type fakeWallets struct {
	admin    *adminauth.Verifier
	apps     *adminauth.Verifier // nil: unsigned requests
	allocEnd uint64
	lieAfter int64
	// Once forbidAfter wallet reads were answered (0: never), every later
	// one is answered 403 forbidden.
	forbidAfter int64

	mu      sync.Mutex
	next    uint64
	holders map[uint64]int64
	readOf  map[uint64]int64 // reads per holder
	reads   int64
	sources map[string]int64
	signed  int64
	cpu     float64
}

func newFakeWallets(t *testing.T, next, allocEnd uint64) (*fakeWallets, string) {
	f := &fakeWallets{
		admin: &adminauth.Verifier{Keys: map[string]adminauth.Key{"dev": adminauth.MustParseKey(adminauth.DevKey)},
			Nonces: &adminauth.MemoryNonces{}},
		allocEnd: allocEnd, next: next,
		holders: map[uint64]int64{}, readOf: map[uint64]int64{}, sources: map[string]int64{},
	}
	return f, serveFake(t, f.handle)
}

func (f *fakeWallets) handle(ctx *fasthttp.RequestCtx) {
	verifier := f.apps
	if bytes.HasPrefix(ctx.Path(), []byte("/admin/")) {
		verifier = f.admin
	}
	if verifier != nil {
		if _, err := verifier.Verify(ctx, ctx.Method(), ctx.URI().PathOriginal(), ctx.URI().QueryString(),
			ctx.Request.Header.Peek, ctx.PostBody()); err != nil {
			writeJSON(ctx, 401, map[string]string{"code": "unauthorized", "message": err.Error()})
			return
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if verifier == f.apps && f.apps != nil {
		f.signed++
	}
	switch path := string(ctx.Path()); {
	case path == "/admin/v1/stats":
		f.cpu += 0.5
		writeJSON(ctx, 200, map[string]any{"ready": true, "booking_lag": 0, "cpu_seconds": f.cpu})
	case path == "/v1/grants/batch" && ctx.IsPost():
		var req struct {
			Grants []fakeGrant `json:"grants"`
		}
		if err := decodeStrict(ctx.PostBody(), &req); err != nil {
			writeJSON(ctx, 400, map[string]string{"code": "malformed_request", "message": err.Error()})
			return
		}
		var results []any
		for _, g := range req.Grants {
			n, _ := strconv.Atoi(g.UserID[strings.LastIndexByte(g.UserID, '-')+1:])
			act := f.next
			f.next++
			f.holders[act] = int64(10 + n)
			results = append(results, map[string]any{"token": "t", "act_id": act, "amount": 10 + n, "status": "issued"})
		}
		writeJSON(ctx, 200, map[string]any{"results": results})
	case strings.HasPrefix(path, "/v1/wallet/") && ctx.IsGet():
		act, _ := strconv.ParseUint(path[len("/v1/wallet/"):], 10, 64)
		amount, holder := f.holders[act]
		if !holder && act >= f.allocEnd {
			writeJSON(ctx, 404, map[string]string{"code": "not_found", "message": "no account"})
			return
		}
		f.reads++
		if f.forbidAfter > 0 && f.reads > f.forbidAfter {
			writeJSON(ctx, 403, map[string]string{"code": "forbidden", "message": "act_id holds no user of app 1"})
			return
		}
		lie := f.lieAfter > 0 && f.reads > f.lieAfter
		source := "holders"
		balances := `[]`
		if holder {
			source = "cache"
			if f.readOf[act]++; f.readOf[act] == 1 {
				source = "store"
			}
			if lie {
				amount++
			}
			balances = fmt.Sprintf(`[{"asset":"cash","kind":"money","balance":%d}]`, amount)
		} else if lie {
			balances = `[{"asset":"cash","kind":"money","balance":5}]`
		}
		f.sources[source]++
		ctx.Response.Header.Set("X-Redrain-Wallet-Source", source)
		ctx.SetContentType("application/json")
		ctx.SetBodyString(fmt.Sprintf(`{"act_id":%d,"balances":%s,"slots":[],"presentation_version":0,"stale":false}`, act, balances))
	default:
		writeJSON(ctx, 404, map[string]string{"code": "not_found", "message": path})
	}
}

func walletTestConfig(url string, holders int, ratio float64) WalletConfig {
	return WalletConfig{Run: Config{Targets: []string{url}, Duration: 300 * time.Millisecond, Conns: 2, Pipeline: 2,
		UserPrefix: "t-", DrainTimeout: 5 * time.Second, ReadyTimeout: 5 * time.Second}, Holders: holders, EmptyRatio: ratio}
}

func TestReadWallets(t *testing.T) {
	f, url := newFakeWallets(t, 101, actBlock+1)
	f.apps = newAppVerifier(t, testAppKey)
	cfg := walletTestConfig(url, 40, 0.9)
	cfg.Run.AppKey = testAppKey
	rep, err := ReadWallets(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if rep.HolderMin != 101 || rep.HolderMax != 140 || rep.EmptyFrom != 141 || rep.EmptyTo != 140+40*9 {
		t.Errorf("holders %d..%d, empty %d..%d; want 101..140 and 141..%d", rep.HolderMin, rep.HolderMax, rep.EmptyFrom, rep.EmptyTo, 140+40*9)
	}
	if rep.Reads == 0 || rep.Verified != rep.Reads || rep.Sent != rep.Reads || rep.HolderReads+rep.EmptyReads != rep.Sent {
		t.Errorf("sent %d reads %d verified %d holders %d empty %d", rep.Sent, rep.Reads, rep.Verified, rep.HolderReads, rep.EmptyReads)
	}
	if rep.Statuses["200"] != rep.Reads || len(rep.Errors) != 0 || rep.Mismatches != 0 {
		t.Errorf("statuses %v errors %v mismatches %d", rep.Statuses, rep.Errors, rep.Mismatches)
	}
	// The fake counts the set-up's reads too: 20 sampled holders, the
	// last, and three empty ids.
	setup := map[string]int64{"store": 21, "holders": 3}
	for source, n := range f.sources {
		if got := rep.Sources[source] + setup[source]; got != n {
			t.Errorf("source %s: %d in the report and %d in the set-up, the node answered %d", source, rep.Sources[source], setup[source], n)
		}
	}
	if rep.Sources["holders"] != rep.EmptyReads {
		t.Errorf("%d empty reads, %d answered by the holders layer", rep.EmptyReads, rep.Sources["holders"])
	}
	if f.signed != f.reads+1 { // and the grant batch
		t.Errorf("%d requests signed, want the %d reads and the grants", f.signed, f.reads)
	}
	if rep.NodeCPUSeconds <= 0 || rep.CPUPerRead <= 0 {
		t.Errorf("node cpu %v, per read %v", rep.NodeCPUSeconds, rep.CPUPerRead)
	}
	var text strings.Builder
	rep.WriteText(&text)
	for _, want := range []string{"reads/s", "sources      ", "holders=", "per read"} {
		if want == "reads/s" {
			want = fmt.Sprintf("reads        %d (", rep.Reads)
		}
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
	}
}

func TestReadWalletsHoldersOnly(t *testing.T) {
	_, url := newFakeWallets(t, 1, actBlock+1)
	rep, err := ReadWallets(context.Background(), walletTestConfig(url, 5, -1))
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
	if rep.EmptyReads != 0 || rep.EmptyTo != 0 || rep.HolderReads != rep.Sent || rep.Sources["holders"] != 0 {
		t.Errorf("holders only: %+v", rep)
	}
}

func TestReadWalletsMismatch(t *testing.T) {
	f, url := newFakeWallets(t, 1, actBlock+1)
	f.lieAfter = 21 + 3 // the set-up's reads, see TestReadWallets
	rep, err := ReadWallets(context.Background(), walletTestConfig(url, 40, 0.5))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Reads == 0 {
		t.Skip("no read in the window")
	}
	if rep.Mismatches != rep.Reads || rep.Verified != 0 || rep.Errors["mismatch"] != rep.Reads {
		t.Errorf("%d reads, %d mismatches, %d verified, errors %v", rep.Reads, rep.Mismatches, rep.Verified, rep.Errors)
	}
	err = rep.Err()
	if err == nil || !strings.Contains(err.Error(), "showed another wallet") || !strings.Contains(rep.MismatchFirst, "act_id ") {
		t.Errorf("Err() = %v, first mismatch %q", err, rep.MismatchFirst)
	}
}

func TestReadWalletsRefused(t *testing.T) {
	f, url := newFakeWallets(t, 1, actBlock+1)
	f.forbidAfter = 21 + 3 // the set-up's reads, see TestReadWallets
	cfg := walletTestConfig(url, 40, 0.5)
	cfg.Run.Duration = time.Minute // ended by the refusal
	rep, err := ReadWallets(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Duration >= time.Minute || rep.Errors["forbidden"] == 0 {
		t.Errorf("duration %v, errors %v: want the window ended by the first 403", rep.Duration, rep.Errors)
	}
	if err := rep.Err(); err == nil || !strings.Contains(err.Error(), "wallet reads refused") {
		t.Errorf("Err() = %v", err)
	}
}

func TestReadWalletsNotHandedOut(t *testing.T) {
	_, url := newFakeWallets(t, 1, 41) // nothing after the 40 holders was handed out
	_, err := ReadWallets(context.Background(), walletTestConfig(url, 40, 0.99))
	if err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), "never handed out") {
		t.Fatalf("ReadWallets = %v, want the 404 explained", err)
	}
}

func TestReadWalletsSetupFails(t *testing.T) {
	f, url := newFakeWallets(t, 1, actBlock+1)
	f.apps = newAppVerifier(t, testAppKey)
	_, err := ReadWallets(context.Background(), walletTestConfig(url, 3, 0.5)) // unsigned
	if err == nil || !strings.Contains(err.Error(), "status 401") || !strings.Contains(err.Error(), "--app-key") {
		t.Fatalf("unsigned: ReadWallets = %v", err)
	}
}

func TestEmptyRange(t *testing.T) {
	for _, tc := range []struct {
		max         uint64
		holders     int
		ratio       float64
		from, count uint64
	}{
		{650, 650, 0.99, 651, 64350},
		{65000, 650, 0.99, 65001, 536},
		{65537, 10, 0.5, 65538, 10},
		{70000, 650, 0.99, 70001, 131072 - 70000},
		{1, 1, 0.75, 2, 3},
		{65536, 10, 0.5, 0, 0},
	} {
		from, count, err := emptyRange(tc.max, tc.holders, tc.ratio)
		if from != tc.from || count != tc.count || (err != nil) != (tc.count == 0) {
			t.Errorf("emptyRange(%d, %d, %v) = %d, %d, %v; want %d, %d", tc.max, tc.holders, tc.ratio, from, count, err, tc.from, tc.count)
		}
	}
}

func TestParseWalletBalances(t *testing.T) {
	for _, tc := range []struct {
		body string
		want []int64 // nil: not ok
	}{
		{`{"act_id":7,"balances":[],"stale":false}`, []int64{}},
		{` { "balances" : [ { "asset" : "cash", "balance" : 88 } , {"balance":-3,"kind":"x"} ] } `, []int64{88, -3}},
		{`{"lines":[{"balances":[1]}],"balances":[{"asset":"a]\"","balance":1}],"slots":[{"x":"}"}]}`, []int64{1}},
		{`{"balances":[{"asset":"cash"}]}`, nil},
		{`{"balances":[{"balance":1.5}]}`, nil},
		{`{"balances":[{"balance":"1"}]}`, nil},
		{`{"balances":{}}`, nil},
		{`{"act_id":7}`, nil},
		{`{"balances":[]`, nil},
		{`{"balances":[]} x`, nil},
		{`[]`, nil},
		{``, nil},
	} {
		got, ok := parseWalletBalances([]byte(tc.body), []int64{9})
		if ok != (tc.want != nil) || (ok && fmt.Sprint(got) != fmt.Sprint(tc.want)) {
			t.Errorf("parseWalletBalances(%s) = %v, %v; want %v", tc.body, got, ok, tc.want)
		}
	}
}

func FuzzParseWalletBalances(f *testing.F) {
	f.Add([]byte(`{"balances":[{"asset":"cash","balance":88}],"slots":[]}`))
	f.Add([]byte(`{"balances":[{"balance":1},{"balance":2}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		parseWalletBalances(body, nil) // must not panic
	})
}

func TestCheckWallet(t *testing.T) {
	for _, tc := range []struct {
		balances []int64
		want     int64
		ok       bool
	}{
		{nil, -1, true},
		{[]int64{5}, -1, false},
		{[]int64{88}, 88, true},
		{[]int64{89}, 88, false},
		{nil, 88, false},
		{[]int64{88, 1}, 88, false},
	} {
		if got := checkWallet(tc.balances, tc.want); (got == "") != tc.ok {
			t.Errorf("checkWallet(%v, %d) = %q, want ok %v", tc.balances, tc.want, got, tc.ok)
		}
	}
}

func TestWalletConfigValidate(t *testing.T) {
	base := walletTestConfig("http://127.0.0.1:1", 0, 0)
	c, _, err := base.withDefaults()
	if err != nil || c.Holders != DefaultWalletHolders || c.EmptyRatio != DefaultEmptyRatio {
		t.Fatalf("defaults: %+v, %v", c, err)
	}
	for name, mod := range map[string]func(*WalletConfig){
		"ratio 1":   func(c *WalletConfig) { c.EmptyRatio = 1 },
		"holders":   func(c *WalletConfig) { c.Holders = WalletHoldersMax + 1 },
		"rate":      func(c *WalletConfig) { c.Run.Rate = 10 },
		"batch":     func(c *WalletConfig) { c.Run.Batch = 10 },
		"audit":     func(c *WalletConfig) { c.Run.Audit = true },
		"no target": func(c *WalletConfig) { c.Run.Targets = nil },
	} {
		c := base
		mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate() = nil", name)
		}
	}
}
