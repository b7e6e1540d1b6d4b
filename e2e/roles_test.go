package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// rolesAssets is the booking asset of each award of rolesCampaign, by the
// award_type a grant answers.
var rolesAssets = map[string]string{"cash": "cash", "coin-gold": "coin:gold", "coupon": "item:coupon-5off"}

// rolesCampaign is campaignJSON's activity "e2e" (the one drive grants)
// with an award of each asset family: cash (money), gold coins and a
// coupon (an item), so that wallets hold several assets.
func rolesCampaign(rains int) string {
	var rs []string
	for i := 1; i <= rains; i++ {
		rs = append(rs, fmt.Sprintf(`{"scene_id":"rain","rain_id":%d,"always_open":true,"start":"2026-02-10T12:00:00Z"}`, i))
	}
	return fmt.Sprintf(`{
  "activities": [
    {"id": "e2e", "rains": [%s],
     "awards": [{"type": "cash", "min": 1, "max": 500, "weight": 2},
                {"type": "coin-gold", "kind": "coin", "currency": "gold", "min": 10, "max": 100},
                {"type": "coupon", "kind": "item", "template": "coupon-5off", "min": 1, "max": 3}],
     "stages": [{"stage": "formal", "budgets": {"cash": 100000000000, "coin-gold": 1000000000, "coupon": 1000000}}]}
  ],
  "token_keys": ["1:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"],
  "active_token_key": 1,
  "draw_salt": "e2e",
  "admin_keys": [%q],
  "app_keys": [%q]
}`, strings.Join(rs, ","), testAdminKey, testAppKey)
}

// walletAnswer is GET /v1/wallet/{act_id}'s answer, with its status,
// source header and body (for messages).
type walletAnswer struct {
	code   int
	source string
	body   string
	err    error
	ActID  uint64 `json:"act_id"`
	// Balances as answered.
	Balances []struct {
		Asset   string `json:"asset"`
		Kind    string `json:"kind"`
		Balance int64  `json:"balance"`
	} `json:"balances"`
	Stale bool `json:"stale"`
}

func readWallet(n *node, act uint64) walletAnswer {
	var w walletAnswer
	resp, err := appGet(n.url(fmt.Sprintf("/v1/wallet/%d", act)))
	if err != nil {
		w.err = err
		return w
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	w.code, w.source, w.body, w.err = resp.StatusCode, resp.Header.Get("X-Redrain-Wallet-Source"), string(b), err
	if err == nil && w.code == 200 {
		w.err = json.Unmarshal(b, &w)
	}
	return w
}

// kindOf is the kind the wallet names for an asset.
func kindOf(asset string) string {
	switch {
	case asset == "cash":
		return "money"
	case strings.HasPrefix(asset, "coin:"):
		return "coin"
	case strings.HasPrefix(asset, "item:"):
		return "item"
	}
	return "?"
}

// mismatch says how w differs from a 200 answer for act with exactly
// want's balances, each named of its asset's kind; "" if it does not.
func (w walletAnswer) mismatch(act uint64, want map[string]int64) string {
	if w.err != nil || w.code != 200 {
		return fmt.Sprintf("answered %d %q (err %v)", w.code, w.body, w.err)
	}
	got := map[string]int64{}
	for _, b := range w.Balances {
		if b.Kind != kindOf(b.Asset) {
			return fmt.Sprintf("asset %s named of kind %q, want %q: %s", b.Asset, b.Kind, kindOf(b.Asset), w.body)
		}
		if _, dup := got[b.Asset]; dup {
			return fmt.Sprintf("asset %s listed twice: %s", b.Asset, w.body)
		}
		got[b.Asset] = b.Balance
	}
	if w.ActID != act || !maps.Equal(got, want) {
		return fmt.Sprintf("want %v, got %v (act_id %d, source %q, stale %v)", want, got, w.ActID, w.source, w.Stale)
	}
	return ""
}

// wallets is what every checked account should hold: the sums of its
// answered grants per asset, and whose it is.
type wallets struct {
	want map[uint64]map[string]int64
	who  map[uint64]string // act_id -> user (for messages)
	acts []uint64          // sorted
}

// expectedWallets sums the answered grants per account and asset; empty
// is an allocated act_id never granted, which must answer no balance.
func expectedWallets(t *testing.T, ans *answered, empty uint64) *wallets {
	t.Helper()
	ws := &wallets{want: map[uint64]map[string]int64{}, who: map[uint64]string{}}
	actOf := map[string]uint64{}
	ans.mu.Lock()
	defer ans.mu.Unlock()
	for key, g := range ans.byKey {
		user, _, _ := strings.Cut(key, "/")
		if prev, ok := actOf[user]; ok && prev != g.ActID {
			t.Fatalf("user %s answered act_ids %d and %d", user, prev, g.ActID)
		}
		actOf[user] = g.ActID
		asset, ok := rolesAssets[g.AwardType]
		if !ok {
			t.Fatalf("grant %s answered award_type %q, not one of the campaign's", key, g.AwardType)
		}
		if ws.want[g.ActID] == nil {
			ws.want[g.ActID] = map[string]int64{}
		}
		ws.want[g.ActID][asset] += g.Amount
		ws.who[g.ActID] = user
	}
	if empty != 0 {
		if _, taken := ws.want[empty]; taken {
			t.Fatalf("act_id %d, meant never granted, was granted to %s", empty, ws.who[empty])
		}
		ws.want[empty], ws.who[empty] = map[string]int64{}, "(never granted)"
	}
	ws.acts = slices.Sorted(maps.Keys(ws.want))
	return ws
}

// readAll reads every account of ws through n with 8 readers and returns
// the answers by act_id.
func (ws *wallets) readAll(n *node) map[uint64]walletAnswer {
	out := make(map[uint64]walletAnswer, len(ws.acts))
	var mu sync.Mutex
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(len(ws.acts)) {
					return
				}
				act := ws.acts[i]
				w := readWallet(n, act)
				mu.Lock()
				out[act] = w
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

// bad lists (sorted, at most 10) the accounts whose answer in got is not
// what ws wants, and counts them.
func (ws *wallets) bad(got map[uint64]walletAnswer) (int, []string) {
	var out []string
	n := 0
	for _, act := range ws.acts {
		if m := got[act].mismatch(act, ws.want[act]); m != "" {
			if n++; n <= 10 {
				out = append(out, fmt.Sprintf("user %s (act_id %d): %s", ws.who[act], act, m))
			}
		}
	}
	return n, out
}

// sources counts the answers by the layer that answered and staleness.
func sources(got map[uint64]walletAnswer) map[string]int {
	c := map[string]int{}
	for _, w := range got {
		k := w.source
		if w.Stale {
			k += "(stale)"
		}
		c[k]++
	}
	return c
}

// awaitWallets reads every account of ws through n until each answers
// what ws wants (the read side learns of bookings by polling the store),
// and returns "" or, after within, the accounts that still differ.
func (ws *wallets) awaitWallets(t *testing.T, n *node, what string, within time.Duration) string {
	t.Helper()
	start := time.Now()
	for rounds := 1; ; rounds++ {
		got := ws.readAll(n)
		nbad, bad := ws.bad(got)
		if nbad == 0 {
			t.Logf("%s: all %d wallets right through the read node after %v (%d rounds; answered by %v)",
				what, len(ws.acts), time.Since(start).Round(time.Millisecond), rounds, sources(got))
			return ""
		}
		if time.Since(start) > within {
			return fmt.Sprintf("%s: %d of %d wallets still wrong through the read node after %v (answered by %v), e.g.:\n%s",
				what, nbad, len(ws.acts), within, sources(got), strings.Join(bad, "\n"))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// dropSummaries removes every wallet summary (rr:w:*) from the stack's
// Redis and returns how many it removed.
func dropSummaries(t *testing.T, st *stack) int {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: flagValue(st.flags, "redis")})
	defer c.Close()
	ctx := context.Background()
	keys, err := c.Keys(ctx, "rr:w:*").Result()
	if err == nil && len(keys) > 0 {
		err = c.Del(ctx, keys...).Err()
	}
	if err != nil {
		t.Fatalf("removing the wallet summaries from Redis: %v", err)
	}
	return len(keys)
}

// roleStats reads the counters of the write node's GET /admin/v1/stats.
type roleStats struct {
	Issued int64 `json:"grants_issued"`
	Booked int64 `json:"grants_booked"`
	Lag    int64 `json:"booking_lag"`
}

// awaitBooked waits until n has booked every grant it issued and its
// booking lag is 0.
func awaitBooked(t *testing.T, n *node, what string) roleStats {
	t.Helper()
	var s roleStats
	deadline := time.Now().Add(2 * time.Minute)
	for {
		s = roleStats{}
		if resp, err := adminGet(n.adminURL("/admin/v1/stats")); err == nil {
			_ = json.NewDecoder(resp.Body).Decode(&s)
			resp.Body.Close()
		}
		if s.Issued > 0 && s.Lag == 0 && s.Booked == s.Issued {
			t.Logf("%s: the write node booked all %d grants it issued", what, s.Issued)
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: booking not drained within 2 minutes: %+v; log:\n%s", what, s, tail(n.logPath))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// wrongSide checks that n answers the path of the other side 404
// not_found naming its own role.
func wrongSide(t *testing.T, n *node, method, path, role string) {
	t.Helper()
	var code int
	var body []byte
	var err error
	if method == "POST" {
		code, body, err = post(n.url(path), grantBody("u-0", "e2e", 1))
	} else {
		resp, gerr := appGet(n.url(path))
		if err = gerr; err == nil {
			code = resp.StatusCode
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
	}
	if err != nil || code != 404 || !strings.Contains(string(body), `"code":"not_found"`) || !strings.Contains(string(body), "--role "+role) {
		t.Errorf("%s %s on the %s node: %d %s (%v), want 404 not_found naming --role %s", method, path, role, code, body, err, role)
	}
}

// outage is what readThrough saw: full rounds (every account read while
// the fault lasted), reads, answers by layer, wrong answers and some of
// them, and the accounts answered stale at least once.
type outage struct {
	rounds, reads int
	sources       map[string]int
	wrong         int
	examples      []string
	staleSeen     map[uint64]bool
}

// readThrough reads every account of ws through n, round after round,
// until stop is set, checking each answer with check (a message when
// wrong).
func (ws *wallets) readThrough(n *node, stop *atomic.Bool, check func(act uint64, w walletAnswer) string) *outage {
	o := &outage{sources: map[string]int{}, staleSeen: map[uint64]bool{}}
	for !stop.Load() {
		got := ws.readAll(n)
		o.reads += len(got)
		complete := !stop.Load() // a round ended by stop may have read after the fault ended
		for _, act := range ws.acts {
			w := got[act]
			k := w.source
			if w.Stale {
				k += "(stale)"
				o.staleSeen[act] = true
			}
			o.sources[k]++
			if m := check(act, w); m != "" {
				if o.wrong++; len(o.examples) < 10 {
					o.examples = append(o.examples, fmt.Sprintf("user %s (act_id %d): %s", ws.who[act], act, m))
				}
			}
		}
		if complete {
			o.rounds++
		}
		time.Sleep(50 * time.Millisecond)
	}
	return o
}

// TestRoles runs a write node (--role write) and a read node (--role
// read) on one development stack and kills each side in turn (issue 12,
// item 1). Each node answers the other side's routes 404; the wallets the
// read node serves are the sums of the grants the write node answered,
// per user and asset (cash, coins, an item), once booked; while the read
// node is dead (SIGKILL) the write node grants and books on; the read node
// started again serves every wallet as booked, new users' too; while the
// write node is dead (SIGKILL) and the broker down for 20 s, the read node
// serves every wallet, exact, throughout; and while the store is down for
// 10 s it answers from Redis, marked stale, and fresh again once the store
// is back.
func TestRoles(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	began := time.Now()
	step := func(format string, args ...any) {
		t.Helper()
		t.Logf("[%5.1fs] "+format, append([]any{time.Since(began).Seconds()}, args...)...)
	}
	dir := t.TempDir()
	if os.Getenv("REDRAIN_E2E_KEEP") != "" {
		d, err := os.MkdirTemp("", "redrain-e2e-keep-")
		if err != nil {
			t.Fatal(err)
		}
		dir = d
		t.Logf("keeping the test's data and logs in %s", dir)
	}
	bin := binary(t)
	const rains = 4
	cfg := filepath.Join(dir, "campaign.json")
	if err := os.WriteFile(cfg, []byte(rolesCampaign(rains)), 0o644); err != nil {
		t.Fatal(err)
	}
	st := startStack(t, bin, filepath.Join(dir, "dev"))
	mk := func(name, role string) *node {
		return &node{t: t, bin: bin, dir: filepath.Join(dir, name), cfg: cfg, logPath: filepath.Join(dir, name+".log"),
			args: append(append([]string{}, st.flags...), "--role", role)}
	}
	w, r := mk("write", "write"), mk("read", "read")
	t.Cleanup(func() {
		for _, n := range []*node{w, r} {
			if n.cmd != nil && n.cmd.Process != nil && n.cmd.ProcessState == nil {
				_ = n.cmd.Process.Kill()
			}
			if t.Failed() {
				t.Logf("%s log tail:\n%s", n.dir, tail(n.logPath))
			}
		}
	})
	w.start()
	r.start()
	step("stack, write node %s and read node %s serving", w.addr, r.addr)

	// 1. Each node serves its side only.
	wrongSide(t, w, "GET", "/v1/wallet/1", "write")
	wrongSide(t, r, "POST", "/v1/grants", "read")
	wrongSide(t, r, "POST", "/v1/grants/batch", "read")

	// 2. Grants through the write node, booked; every wallet through the
	// read node is the sum of its user's answered grants.
	const users, more = 300, 100
	var jobs []string
	for rain := 1; rain <= 3; rain++ {
		for u := range users {
			jobs = append(jobs, fmt.Sprintf("u-%d/%d", u, rain))
		}
	}
	ans := newAnswered()
	var noStop atomic.Bool // drive runs every job to its answer
	drive(t, []*node{w}, jobs, ans, &noStop)
	if ans.count() != len(jobs) {
		t.Fatalf("%d of %d grants answered", ans.count(), len(jobs))
	}
	step("%d grants of %d users answered by the write node (%d requests refused and retried: %v)", ans.count(), users, ans.errs, ans.errCodes)
	awaitBooked(t, w, "after the first grants")
	// act_ids come in blocks of 65,536 from the store: one well past the
	// users' but in the write node's block was handed out, never granted.
	var maxAct uint64
	for _, g := range ans.byKey {
		maxAct = max(maxAct, g.ActID)
	}
	empty := maxAct + 1000
	ws := expectedWallets(t, ans, empty)
	if msg := ws.awaitWallets(t, r, "after booking drained", 30*time.Second); msg != "" {
		t.Fatal(msg)
	}
	if got := readWallet(r, empty); got.source != "holders" {
		t.Logf("note: the never-granted act_id %d was answered by %q, not the holders layer", empty, got.source)
	}
	if got := readWallet(r, 5_000_000); got.code != 404 || !strings.Contains(got.body, `"code":"not_found"`) {
		t.Errorf("wallet of act_id 5000000, never handed out, through the read node: %d %s, want 404 not_found", got.code, got.body)
	}
	step("wallets of %d users and of a never-granted act_id right through the read node", users)

	// 3. The read side killed: the write side grants and books on.
	if err := r.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitExit(t, r)
	step("read node killed with SIGKILL")
	ans.resetErrors()
	jobs = jobs[:0]
	for u := range users + more {
		jobs = append(jobs, fmt.Sprintf("u-%d/4", u)) // one more rain for the users, the first for 100 new ones
	}
	for u := users; u < users+more; u++ {
		jobs = append(jobs, fmt.Sprintf("u-%d/1", u))
	}
	before := ans.count()
	drive(t, []*node{w}, jobs, ans, &noStop)
	if got := ans.count() - before; got != len(jobs) {
		t.Fatalf("with the read node dead, %d of %d more grants answered", got, len(jobs))
	}
	step("with the read node dead, %d more grants answered (%d requests refused and retried: %v)", len(jobs), ans.errs, ans.errCodes)
	s := awaitBooked(t, w, "with the read node dead")
	if bad := allBooked(t, w, ans); len(bad) > 0 {
		t.Errorf("%d answered tokens not booked with the read node dead, e.g. %v", len(bad), bad[:min(5, len(bad))])
	}
	step("booking drained with the read node dead: %d grants issued and booked in all", s.Issued)

	// 4. The read node started again on its flags: every wallet, new
	// users' too, as booked.
	r.start()
	step("read node started again")
	ws = expectedWallets(t, ans, empty)
	if msg := ws.awaitWallets(t, r, "the read node restarted", 30*time.Second); msg != "" {
		// Redis kept the summaries the read node filled before it was
		// killed; the restarted feed must write the tombstones of the
		// bookings made while it was dead (it resumes from rr:wseq). If
		// it did not, say so, then go on without the summaries so that
		// the later steps still show what they show.
		t.Error(msg)
		step("removed %d wallet summaries from Redis to go on", dropSummaries(t, st))
		if msg := ws.awaitWallets(t, r, "the read node restarted, Redis's summaries removed", 30*time.Second); msg != "" {
			t.Fatal(msg)
		}
	}
	step("wallets of %d users right through the restarted read node", users+more)

	// 5. The write side killed and the broker down: the read node serves
	// every wallet, exact, throughout.
	if err := w.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitExit(t, w)
	step("write node killed with SIGKILL; stopping the broker for 20 s")
	exact := func(act uint64, got walletAnswer) string { return got.mismatch(act, ws.want[act]) }
	var stop atomic.Bool
	res := make(chan *outage, 1)
	go func() { res <- ws.readThrough(r, &stop, exact) }()
	st.restartPart(t, "broker", 20*time.Second)
	stop.Store(true)
	o := <-res
	step("broker back; during the outage the read node answered %d wallet reads in %d full rounds of %d accounts, by %v; %d wrong",
		o.reads, o.rounds, len(ws.acts), o.sources, o.wrong)
	if o.wrong > 0 {
		t.Errorf("with the write node dead and the broker down, %d wallet reads wrong, e.g.:\n%s", o.wrong, strings.Join(o.examples, "\n"))
	}
	if o.rounds == 0 {
		t.Errorf("no full round of wallet reads during the broker's outage")
	}

	// 6. The store down: the read node answers from Redis (or its own
	// copy), marked stale, then fresh again once the store is back.
	step("stopping the store (PD and TiKV) for 10 s")
	stop.Store(false)
	go func() {
		res <- ws.readThrough(r, &stop, func(act uint64, got walletAnswer) string {
			if m := got.mismatch(act, ws.want[act]); m != "" {
				return m
			}
			// Stale answers come from what the node held before the
			// outage: Redis, its own copy, or the holders layer (a user
			// who held nothing when the feed last read the store).
			if got.Stale && got.source == "store" {
				return fmt.Sprintf("answered stale from %q", got.source)
			}
			return ""
		})
	}()
	st.restartPart(t, "tikv", 10*time.Second)
	stop.Store(true)
	o = <-res
	step("store back; during the outage the read node answered %d wallet reads in %d full rounds, by %v; %d wrong",
		o.reads, o.rounds, o.sources, o.wrong)
	if o.wrong > 0 {
		t.Errorf("with the store down, %d wallet reads wrong, e.g.:\n%s", o.wrong, strings.Join(o.examples, "\n"))
	}
	var neverStale []string
	for _, act := range ws.acts {
		if len(ws.want[act]) > 0 && !o.staleSeen[act] {
			neverStale = append(neverStale, fmt.Sprintf("%s (act_id %d)", ws.who[act], act))
		}
	}
	if len(neverStale) > 0 {
		t.Errorf("with the store down for 10 s, %d users were never answered stale, e.g. %v", len(neverStale), neverStale[:min(10, len(neverStale))])
	}
	start := time.Now()
	for {
		got := ws.readAll(r)
		nbad, bad := ws.bad(got)
		var stale []string
		for _, act := range ws.acts {
			if got[act].Stale {
				stale = append(stale, fmt.Sprintf("%s (act_id %d, source %s)", ws.who[act], act, got[act].source))
			}
		}
		if nbad == 0 && len(stale) == 0 {
			step("every wallet fresh and right again %v after the store came back (answered by %v)", time.Since(start).Round(time.Millisecond), sources(got))
			break
		}
		if time.Since(start) > 60*time.Second {
			t.Fatalf("60 s after the store came back, %d wallets wrong (%v) and %d stale (e.g. %v)", nbad, bad, len(stale), stale[:min(10, len(stale))])
		}
		time.Sleep(200 * time.Millisecond)
	}
}
