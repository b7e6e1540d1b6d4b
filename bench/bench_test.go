package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func TestHistogramBuckets(t *testing.T) {
	check := func(v uint64) {
		i := histIndex(v)
		if i < 0 || i >= histBucketCount {
			t.Fatalf("histIndex(%d) = %d, want 0..%d", v, i, histBucketCount-1)
		}
		lower, width := histBounds(i)
		if v < lower || v >= lower+width {
			t.Fatalf("histIndex(%d) = %d, whose bucket is [%d, %d)", v, i, lower, lower+width)
		}
		if width > 1 && width*histSubCount > lower {
			t.Fatalf("bucket %d is [%d, +%d), wider than 1/%d of its lower bound", i, lower, width, histSubCount)
		}
	}
	for v := range uint64(1 << 14) {
		check(v)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		check(rng.Uint64N(histValueMax + 1))
	}
	check(histValueMax)
	if got := histIndex(histValueMax); got != histBucketCount-1 {
		t.Errorf("histIndex(histValueMax) = %d, want the last bucket %d", got, histBucketCount-1)
	}
	// Buckets tile the value range: each starts where the previous ended.
	for i := 1; i < histBucketCount; i++ {
		prevLower, prevWidth := histBounds(i - 1)
		if lower, _ := histBounds(i); lower != prevLower+prevWidth {
			t.Fatalf("bucket %d starts at %d, want %d", i, lower, prevLower+prevWidth)
		}
	}
}

func TestHistogramQuantiles(t *testing.T) {
	exponential := func() []uint64 {
		rng := rand.New(rand.NewPCG(3, 4))
		vs := make([]uint64, 200000)
		for i := range vs {
			vs[i] = uint64(rng.ExpFloat64() * 2000) // A mean of 2ms in µs.
		}
		return vs
	}
	uniform := func() []uint64 {
		vs := make([]uint64, 100000)
		for i := range vs {
			vs[i] = uint64(i + 1)
		}
		return vs
	}
	clamped := func() []uint64 { return []uint64{5, 7, 1 << 40} }
	for _, tc := range []struct {
		name   string
		values []uint64
	}{
		{"uniform", uniform()},
		{"exponential", exponential()},
		{"clamped", clamped()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h histogram
			for _, v := range tc.values {
				h.record(v)
			}
			var s histSnapshot
			s.add(&h)
			sorted := slices.Clone(tc.values)
			slices.Sort(sorted)
			if s.total != uint64(len(sorted)) || s.max != sorted[len(sorted)-1] {
				t.Fatalf("total %d max %d, want %d and %d", s.total, s.max, len(sorted), sorted[len(sorted)-1])
			}
			for _, q := range []float64{0, 0.1, 0.5, 0.9, 0.99, 0.999, 1} {
				rank := max(int(math.Ceil(q*float64(len(sorted)))), 1)
				want := min(sorted[rank-1], histValueMax)
				got := s.quantile(q)
				// Precision: half a bucket, 1/(2·histSubCount) of the value.
				if diff := math.Abs(float64(got) - float64(want)); diff > float64(want)/(2*histSubCount)+0.5 {
					t.Errorf("quantile(%v) = %d, want %d within 1/%d", q, got, want, 2*histSubCount)
				}
			}
		})
	}
}

func TestHistogramSince(t *testing.T) {
	var h histogram
	for v := range uint64(1000) {
		h.record(v)
	}
	var before histSnapshot
	before.add(&h)
	for range 1000 {
		h.record(50000)
	}
	var after histSnapshot
	after.add(&h)
	d := after.since(&before)
	if d.total != 1000 {
		t.Fatalf("since: total = %d, want 1000", d.total)
	}
	if got := d.quantile(0.5); math.Abs(float64(got)-50000) > 50000.0/(2*histSubCount) {
		t.Errorf("since: quantile(0.5) = %d, want 50000", got)
	}
	if got := new(histSnapshot).quantile(0.99); got != 0 {
		t.Errorf("empty: quantile(0.99) = %d, want 0", got)
	}
}

func TestPacerSpacing(t *testing.T) {
	p := newPacer(1000)
	if p.interval != time.Millisecond {
		t.Fatalf("newPacer(1000).interval = %v, want 1ms", p.interval)
	}
	// Callers that are early all get the next slot, one interval apart, so
	// a second holds exactly Rate slots.
	var inSecond int
	for k := 0; ; k++ {
		slot := p.take(0)
		if want := time.Duration(k) * time.Millisecond; slot != want {
			t.Fatalf("take #%d = %v, want %v", k, slot, want)
		}
		if slot >= time.Second {
			break
		}
		inSecond++
	}
	if inSecond != 1000 {
		t.Errorf("%d slots in the first second, want 1000", inSecond)
	}
}

func TestPacerLag(t *testing.T) {
	p := newPacer(1000)
	for range 3 {
		p.take(0)
	}
	// A caller arriving after a stall gets a slot at most pacerLagMax old:
	// the missed slots are dropped, not sent in a burst.
	now := 5 * time.Second
	if got, want := p.take(now), now-pacerLagMax; got != want {
		t.Fatalf("take(%v) after a stall = %v, want %v", now, got, want)
	}
	// The slots up to now go at once, then the pace resumes.
	var immediate int
	for p.take(now) <= now {
		immediate++
	}
	if want := int(pacerLagMax / time.Millisecond); immediate != want {
		t.Errorf("%d slots sent at once after the stall, want %d", immediate, want)
	}
}

func TestPacerConcurrent(t *testing.T) {
	p := newPacer(50000)
	const callers, takes = 8, 2000
	slots := make([][]time.Duration, callers)
	var wg sync.WaitGroup
	for c := range callers {
		wg.Go(func() {
			for range takes {
				slots[c] = append(slots[c], p.take(0))
			}
		})
	}
	wg.Wait()
	all := slices.Concat(slots...)
	slices.Sort(all)
	for k, slot := range all {
		if want := time.Duration(k) * p.interval; slot != want {
			t.Fatalf("slot %d = %v, want %v: slots lost or given twice", k, slot, want)
		}
	}
}

func TestPacerRounding(t *testing.T) {
	for _, tc := range []struct {
		rate int
		want time.Duration
	}{
		{1, time.Second},
		{3, 333333333 * time.Nanosecond},
		{7, 142857143 * time.Nanosecond},
		{3000000000, 1},
	} {
		if got := newPacer(tc.rate).interval; got != tc.want {
			t.Errorf("newPacer(%d).interval = %v, want %v", tc.rate, got, tc.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	ok := func(c Config) Config {
		c.Targets = []string{"http://127.0.0.1:8080"}
		return c
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // A part of the error; "" for none.
	}{
		{"defaults", ok(Config{}), ""},
		{"https without port", Config{Targets: []string{"https://node.example/"}}, ""},
		{"no targets", Config{}, "no targets"},
		{"scheme", Config{Targets: []string{"ftp://127.0.0.1:8080"}}, "http:// or https://"},
		{"no scheme", Config{Targets: []string{"127.0.0.1:8080"}}, "target"},
		{"no host", Config{Targets: []string{"http://:8080"}}, "no host"},
		{"path", Config{Targets: []string{"http://127.0.0.1:8080/v1"}}, "without a path"},
		{"query", Config{Targets: []string{"http://127.0.0.1:8080?x=1"}}, "without user, query"},
		{"port", Config{Targets: []string{"http://127.0.0.1:99999"}}, "out of range"},
		{"second target bad", Config{Targets: []string{"http://a:1", "http//b:2"}}, `"http//b:2"`},
		{"users negative", ok(Config{Users: -1}), "users is -1"},
		{"users too many", ok(Config{Users: UsersMax + 1}), "users is"},
		{"duration negative", ok(Config{Duration: -time.Second}), "duration"},
		{"rate negative", ok(Config{Rate: -5}), "rate is -5/s"},
		{"conns negative", ok(Config{Conns: -1}), "conns"},
		{"pipeline negative", ok(Config{Pipeline: -1}), "pipeline"},
		{"too many in flight", ok(Config{Conns: 1024, Pipeline: 1024}), "requests in flight"},
		{"repeat ratio", ok(Config{RepeatRatio: 1.5}), "repeat ratio"},
		{"repeat ratio NaN", ok(Config{RepeatRatio: math.NaN()}), "repeat ratio"},
		{"drain timeout", ok(Config{DrainTimeout: -1}), "drain timeout"},
		{"ready timeout", ok(Config{ReadyTimeout: -1}), "ready timeout"},
		{"request timeout", ok(Config{RequestTimeout: -1}), "request timeout"},
		{"activity control", ok(Config{ActivityID: "de\nmo"}), "activity id"},
		{"scene too long", ok(Config{SceneID: strings.Repeat("s", 65)}), "scene id"},
		{"user prefix too long", ok(Config{UserPrefix: strings.Repeat("u", 60), Users: 100000}), "user prefix"},
		{"user prefix not utf-8", ok(Config{UserPrefix: "\xff"}), "user prefix"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Validate() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	c, targets, err := Config{Targets: []string{"http://127.0.0.1:8080/", "https://node"}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.Users != DefaultUsers || c.Duration != DefaultDuration || c.Conns != DefaultConns ||
		c.Pipeline != DefaultPipeline || c.RepeatRatio != DefaultRepeatRatio || c.AppID != 1 ||
		c.ActivityID != "demo" || c.SceneID != "rain" || c.RainID != 1 || c.DrainTimeout != DefaultDrainTimeout {
		t.Errorf("withDefaults() = %+v, want the defaults", c)
	}
	if !regexp.MustCompile(`^bench-[0-9a-f]{6}-$`).MatchString(c.UserPrefix) {
		t.Errorf("default user prefix %q, want bench-<6 hex>-", c.UserPrefix)
	}
	want := []target{
		{base: "http://127.0.0.1:8080", addr: "127.0.0.1:8080"},
		{base: "https://node:443", addr: "node:443", isTLS: true},
	}
	if !slices.Equal(targets, want) {
		t.Errorf("targets = %+v, want %+v", targets, want)
	}
	if c, _, _ := (Config{Targets: []string{"http://a"}, RepeatRatio: -1}).withDefaults(); c.RepeatRatio != 0 {
		t.Errorf("RepeatRatio -1 became %v, want 0 (no repeats)", c.RepeatRatio)
	}
}

func TestParseGrantFields(t *testing.T) {
	for _, tc := range []struct {
		body                string
		ok                  bool
		status, code, token string // "<nil>" when absent.
	}{
		{`{"token":"t1","out_trade_no":"o","act_id":7,"award_type":"cash","amount":88,"status":"issued"}`, true, "issued", "<nil>", "t1"},
		{` { "status" : "booked" , "token":"a\"b" } `, true, "booked", "<nil>", `a"b`},
		{`{"code":"budget_exhausted","message":"budget \"status\":\"issued\" is spent"}`, true, "<nil>", "budget_exhausted", "<nil>"},
		{`{"message":"{\"code\":\"x\"}","nested":{"status":"no","a":[1,"]",{"token":"no"}]},"code":"rain_closed"}`, true, "<nil>", "rain_closed", "<nil>"},
		{`{"status":"issued","status":"booked"}`, true, "booked", "<nil>", "<nil>"},
		{`{"status":"issued","status":1}`, true, "<nil>", "<nil>", "<nil>"},
		{`{"st\u0061tus":"\u0069ssued"}`, true, "issued", "<nil>", "<nil>"},
		{`{"status":""}`, true, "", "<nil>", "<nil>"},
		{`{}`, true, "<nil>", "<nil>", "<nil>"},
		{`{"a":null,"b":true,"c":-1.5e3,"status":"issued"}`, true, "issued", "<nil>", "<nil>"},
		{``, false, "<nil>", "<nil>", "<nil>"},
		{`[]`, false, "<nil>", "<nil>", "<nil>"},
		{`{"status":"issued"`, false, "<nil>", "<nil>", "<nil>"},
		{`{"status":"issued"}x`, false, "<nil>", "<nil>", "<nil>"},
		{`{"status":}`, false, "<nil>", "<nil>", "<nil>"},
		{`service unavailable`, false, "<nil>", "<nil>", "<nil>"},
	} {
		var f grantFields
		ok := parseGrantFields([]byte(tc.body), &f)
		show := func(b []byte) string {
			if b == nil {
				return "<nil>"
			}
			return string(b)
		}
		if ok != tc.ok || (ok && (show(f.status) != tc.status || show(f.code) != tc.code || show(f.token) != tc.token)) {
			t.Errorf("parseGrantFields(%s) = %v status %s code %s token %s, want %v %s %s %s",
				tc.body, ok, show(f.status), show(f.code), show(f.token), tc.ok, tc.status, tc.code, tc.token)
		}
	}
}

// FuzzParseGrantFields checks that on any valid JSON object the scanner
// finds what encoding/json finds.
func FuzzParseGrantFields(f *testing.F) {
	for _, s := range []string{
		`{"token":"t","status":"issued","act_id":7}`,
		`{"code":"budget_exhausted","message":"a \"b\" \u00e9"}`,
		`{"x":{"status":"no"},"status":"\ud83d\ude00"}`,
		`{"code":"\xff"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var fields grantFields
		ok := parseGrantFields(body, &fields)
		var m map[string]any
		if json.Unmarshal(body, &m) != nil || m == nil {
			return // Not an object: the scanner may say anything but must not panic.
		}
		if !ok {
			t.Fatalf("parseGrantFields(%q) = false on a valid object", body)
		}
		for name, got := range map[string][]byte{"status": fields.status, "code": fields.code, "token": fields.token} {
			want, isString := m[name].(string)
			if isString != (got != nil) || string(got) != want {
				t.Fatalf("parseGrantFields(%q): %s = %q (present %v), encoding/json has %q (string %v)",
					body, name, got, got != nil, want, isString)
			}
		}
	})
}

func TestUsersPick(t *testing.T) {
	const count = 100
	u := newUsers(count, rand.New(rand.NewPCG(5, 6)))
	rng := rand.New(rand.NewPCG(7, 8))
	// With nobody granted there is nothing to repeat: the first picks
	// follow the shuffled first pass.
	var first []uint32
	for range 10 {
		user, repeat := u.pick(rng, 1)
		if repeat {
			t.Fatalf("pick with no grant yet returned a repeat of %d", user)
		}
		first = append(first, user)
	}
	if !slices.Equal(first, u.order[:10]) {
		t.Fatalf("first picks %v, want the first pass %v", first, u.order[:10])
	}
	if slices.IsSorted(u.order) {
		t.Errorf("first pass %v is not shuffled", u.order)
	}
	// Grant half of them; repeats must only go to those.
	granted := map[uint32]bool{}
	for _, user := range first[:5] {
		if !u.grant(user, uint64(user)<<1|1) {
			t.Fatalf("grant(%d) = false for a new user", user)
		}
		granted[user] = true
	}
	if u.grant(first[0], 3) {
		t.Fatalf("grant(%d) twice = true", first[0])
	}
	seen := map[uint32]bool{}
	var repeats int
	for range 10000 {
		user, repeat := u.pick(rng, 0.3)
		if repeat {
			repeats++
			if !granted[user] {
				t.Fatalf("repeat of %d, who was not granted", user)
			}
			continue
		}
		if seen[user] || slices.Contains(first, user) {
			t.Fatalf("new grant for %d twice", user)
		}
		seen[user] = true
	}
	if len(seen) != count-10 {
		t.Errorf("first pass offered %d more users, want %d", len(seen), count-10)
	}
	// After the first pass, every pick is a repeat.
	if repeats < 10000-(count-10) {
		t.Errorf("%d repeats of 10000 picks, want all but the %d new ones", repeats, count-10)
	}
	if !u.tokenMatches(first[1], uint64(first[1])<<1|1) || u.tokenMatches(first[1], 5) {
		t.Errorf("tokenMatches does not compare with the first grant's token")
	}
}

func TestProgressLine(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    progressLine
		want string
	}{
		{"all known", progressLine{elapsed: 3*time.Second + 2*time.Millisecond, seconds: 1, offered: 12034,
			accepted: 11900, booked: 11000, lag: 900, p99: 4123 * time.Microsecond, failed: 0},
			"t=3s offered=12034/s accepted=11900/s booked=11000/s lag=900 p99=4.1ms errors=0"},
		{"stats unknown, no responses, a slow tick", progressLine{elapsed: 12 * time.Second, seconds: 2, offered: 10,
			accepted: 4, booked: -1, lag: -1, p99: -1, failed: 7},
			"t=12s offered=5/s accepted=2/s booked=?/s lag=? p99=- errors=7"},
	} {
		if got := tc.p.String(); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestFormatLatency(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{4123 * time.Microsecond, "4.1ms"},
		{412 * time.Microsecond, "410µs"},
		{37 * time.Microsecond, "37µs"},
		{1500 * time.Millisecond, "1.5s"},
		{0, "0s"},
	} {
		if got := formatLatency(tc.d); got != tc.want {
			t.Errorf("formatLatency(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

// fakeCluster imitates the nodes' HTTP API over shared state: grants are
// idempotent per user, every rejectEvery-th new user is refused with
// budget_exhausted, and every failEvery-th with a 503 without a JSON body.
// Booking happens when a node's stats are read: half the pending grants
// (rounded up) are booked and credited to that node, unless stuck is set.
type fakeCluster struct {
	prefix      string
	rejectEvery int
	failEvery   int
	stuck       bool
	ready       bool
	onGrant     func(requests int64) // Called after each grant request, outside the lock.

	mu       sync.Mutex
	tokens   map[string]string
	booked   map[string]bool
	pending  []string
	newUsers int
	issued   int64
	nodes    []*fakeNode
	// Requests seen, and how they were answered.
	requests, ok, repeats, repeatsBooked, rejected, failed, malformed int64
}

type fakeNode struct {
	c      *fakeCluster
	booked int64 // Under c.mu.
}

func newFakeCluster(t *testing.T, nodes int) (*fakeCluster, []string) {
	c := &fakeCluster{
		prefix:      "t-",
		rejectEvery: 7,
		failEvery:   50,
		ready:       true,
		tokens:      map[string]string{},
		booked:      map[string]bool{},
	}
	var urls []string
	for range nodes {
		n := &fakeNode{c: c}
		c.nodes = append(c.nodes, n)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s := &fasthttp.Server{Handler: n.handle}
		go s.Serve(ln)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			s.ShutdownWithContext(ctx)
		})
		urls = append(urls, "http://"+ln.Addr().String())
	}
	return c, urls
}

func writeJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	b, _ := json.Marshal(v)
	ctx.SetBody(b)
}

func (n *fakeNode) handle(ctx *fasthttp.RequestCtx) {
	switch path := string(ctx.Path()); {
	case path == "/v1/grants" && ctx.IsPost():
		n.grant(ctx)
	case path == "/admin/v1/stats" && ctx.IsGet():
		n.stats(ctx)
	case path == "/admin/v1/audit" && ctx.IsGet():
		n.audit(ctx)
	default:
		writeJSON(ctx, 404, map[string]string{"code": "not_found", "message": path})
	}
}

func (n *fakeNode) grant(ctx *fasthttp.RequestCtx) {
	c := n.c
	var req struct {
		AppID      uint32 `json:"app_id"`
		UserID     string `json:"user_id"`
		ActivityID string `json:"activity_id"`
		SceneID    string `json:"scene_id"`
		RainID     uint64 `json:"rain_id"`
	}
	dec := json.NewDecoder(bytes.NewReader(ctx.PostBody()))
	dec.DisallowUnknownFields()
	err := dec.Decode(&req)
	c.mu.Lock()
	c.requests++
	requests := c.requests
	switch token, granted := c.tokens[req.UserID]; {
	case err != nil || req.AppID != 1 || req.ActivityID != "demo" || req.SceneID != "rain" || req.RainID != 1 ||
		!strings.HasPrefix(req.UserID, c.prefix):
		c.malformed++
		writeJSON(ctx, 400, map[string]string{"code": "malformed_request", "message": fmt.Sprintf("%v %+v", err, req)})
	case granted:
		c.ok++
		c.repeats++
		status := "issued"
		if c.booked[req.UserID] {
			status = "booked"
			c.repeatsBooked++
		}
		writeJSON(ctx, 200, map[string]any{"token": token, "out_trade_no": "o-" + req.UserID, "act_id": 7,
			"award_type": "cash", "amount": 88, "status": status})
	default:
		c.newUsers++
		switch {
		case c.newUsers%c.failEvery == 0:
			c.failed++
			ctx.SetStatusCode(503)
			ctx.SetBodyString("backend down")
		case c.newUsers%c.rejectEvery == 0:
			c.rejected++
			writeJSON(ctx, 409, map[string]string{"code": "budget_exhausted",
				"message": `budget "status":"issued" is exhausted`})
		default:
			c.ok++
			c.issued++
			token := fmt.Sprintf("tok-%s-%d", req.UserID, requests)
			c.tokens[req.UserID] = token
			c.pending = append(c.pending, req.UserID)
			// Fields in another order than the contract's example, on purpose.
			writeJSON(ctx, 200, map[string]any{"status": "issued", "amount": 88, "token": token,
				"act_id": 7, "award_type": "cash", "out_trade_no": "o-" + req.UserID})
		}
	}
	c.mu.Unlock()
	if c.onGrant != nil {
		c.onGrant(requests)
	}
}

func (n *fakeNode) stats(ctx *fasthttp.RequestCtx) {
	c := n.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.stuck {
		k := (len(c.pending) + 1) / 2
		for _, user := range c.pending[:k] {
			c.booked[user] = true
		}
		c.pending = c.pending[k:]
		n.booked += int64(k)
	}
	writeJSON(ctx, 200, map[string]any{"grants_issued": c.issued, "grants_booked": n.booked,
		"booking_lag": len(c.pending), "ready": c.ready})
}

func (n *fakeNode) audit(ctx *fasthttp.RequestCtx) {
	c := n.c
	c.mu.Lock()
	defer c.mu.Unlock()
	var booked int64
	for _, node := range c.nodes {
		booked += node.booked
	}
	ok := booked == c.issued
	writeJSON(ctx, 200, map[string]any{"ok": ok, "checks": []map[string]any{
		{"name": "no_overspend", "ok": true, "detail": "spent within budget"},
		{"name": "issued_equals_booked", "ok": ok, "detail": fmt.Sprintf("issued %d, booked %d", c.issued, booked)},
	}})
}

func sumErrors(errs map[string]int64) int64 {
	var n int64
	for _, v := range errs {
		n += v
	}
	return n
}

func TestRun(t *testing.T) {
	c, urls := newFakeCluster(t, 2)
	var progress bytes.Buffer
	cfg := Config{
		Targets:      urls,
		Users:        1000,
		Duration:     time.Second,
		Rate:         3000,
		Conns:        4,
		Pipeline:     4,
		RepeatRatio:  0.2,
		UserPrefix:   c.prefix,
		DrainTimeout: 10 * time.Second,
		Audit:        true,
		Seed:         1,
		Progress:     &progress,
	}
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()

	if got := rep.Accepted + sumErrors(rep.Errors); got != rep.Offered {
		t.Errorf("accepted %d + errors %v = %d, want offered %d", rep.Accepted, rep.Errors, got, rep.Offered)
	}
	if rep.Offered != c.requests {
		t.Errorf("offered %d, but the nodes saw %d requests", rep.Offered, c.requests)
	}
	// The pacer hands out no more than Rate slots a second, plus the lag
	// it may catch up on; this bound holds however slow the machine is.
	if limit := int64(cfg.Rate) + int64(pacerLagMax.Seconds()*float64(cfg.Rate)) + 1; rep.Offered > limit || rep.Offered == 0 {
		t.Errorf("offered %d in 1s at 3000/s, want 1..%d", rep.Offered, limit)
	}
	wantErrors := map[string]int64{}
	if c.rejected > 0 {
		wantErrors["budget_exhausted"] = c.rejected
	}
	if c.failed > 0 {
		wantErrors["http_503"] = c.failed
	}
	if c.rejected == 0 || c.malformed != 0 || fmt.Sprint(rep.Errors) != fmt.Sprint(wantErrors) {
		t.Errorf("errors %v, want %v (malformed requests: %d)", rep.Errors, wantErrors, c.malformed)
	}
	if rep.Accepted != c.ok || rep.Repeats != c.repeats || rep.RepeatsBooked != c.repeatsBooked {
		t.Errorf("accepted %d repeats %d (booked %d), the nodes answered %d and %d (booked %d)",
			rep.Accepted, rep.Repeats, rep.RepeatsBooked, c.ok, c.repeats, c.repeatsBooked)
	}
	if rep.Repeats == 0 || rep.TokenMismatches != 0 {
		t.Errorf("repeats %d token mismatches %d, want some repeats and no mismatch", rep.Repeats, rep.TokenMismatches)
	}
	if rep.Accepted-rep.Repeats != c.issued || rep.BookedTotal != c.issued {
		t.Errorf("new grants %d booked %d, the nodes issued %d", rep.Accepted-rep.Repeats, rep.BookedTotal, c.issued)
	}
	if !rep.Drained || rep.DrainTime <= 0 || len(rep.Problems) != 0 || rep.Err() != nil {
		t.Errorf("drained %v after %v, problems %q, Err() = %v", rep.Drained, rep.DrainTime, rep.Problems, rep.Err())
	}
	if a := rep.Audit; a == nil || !a.OK || len(a.Checks) != 2 || a.Checks[0] != (AuditCheck{"no_overspend", true, "spent within budget"}) ||
		a.Checks[1].Name != "issued_equals_booked" || !a.Checks[1].OK {
		t.Errorf("audit %+v, want both checks passed", rep.Audit)
	}
	if !(0 < rep.LatencyP50 && rep.LatencyP50 <= rep.LatencyP99 && rep.LatencyP99 <= rep.LatencyP999 &&
		rep.LatencyP999 <= rep.LatencyMax) {
		t.Errorf("latency p50 %v p99 %v p99.9 %v max %v, want positive and ordered",
			rep.LatencyP50, rep.LatencyP99, rep.LatencyP999, rep.LatencyMax)
	}
	if rep.OfferedPerSec <= 0 || rep.BookedPerSec <= 0 || rep.Duration < cfg.Duration {
		t.Errorf("offered %v/s booked %v/s over %v", rep.OfferedPerSec, rep.BookedPerSec, rep.Duration)
	}
	line := regexp.MustCompile(`^t=\d+s offered=\d+/s accepted=\d+/s booked=(\d+|\?)/s lag=(\d+|\?) p99=\S+ errors=\d+$`)
	for _, l := range strings.Split(strings.TrimSpace(progress.String()), "\n") {
		if l != "" && !line.MatchString(l) {
			t.Errorf("progress line %q does not match %v", l, line)
		}
	}

	var text bytes.Buffer
	rep.WriteText(&text)
	for _, want := range []string{"offered      ", "budget_exhausted=", "audit        ok", "issued_equals_booked"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("WriteText lacks %q:\n%s", want, text.String())
		}
	}
	var js bytes.Buffer
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || back.Offered != rep.Offered ||
		back.LatencyP99 != rep.LatencyP99 || back.Audit == nil || back.Errors["budget_exhausted"] != c.rejected {
		t.Errorf("WriteJSON round trip: %v, %+v\n%s", err, back, js.String())
	}
	t.Logf("report:\n%s", text.String())
}

func TestRunCanceled(t *testing.T) {
	c, urls := newFakeCluster(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.onGrant = func(requests int64) {
		if requests == 300 {
			cancel()
		}
	}
	rep, err := Run(ctx, Config{Targets: urls, Duration: time.Hour, Conns: 2, Pipeline: 4,
		UserPrefix: c.prefix, Audit: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := rep.Accepted + sumErrors(rep.Errors); got != rep.Offered || rep.Offered < 300 {
		t.Errorf("accepted %d + errors %v = %d, want offered %d >= 300", rep.Accepted, rep.Errors, got, rep.Offered)
	}
	if len(rep.Problems) != 1 || !strings.Contains(rep.Problems[0], "canceled") || rep.Audit != nil || rep.Err() == nil {
		t.Errorf("problems %q, audit %v, Err() = %v; want canceled, no audit, an error", rep.Problems, rep.Audit, rep.Err())
	}
}

func TestRunDrainTimeout(t *testing.T) {
	c, urls := newFakeCluster(t, 1)
	c.stuck = true
	rep, err := Run(context.Background(), Config{Targets: urls, Duration: 200 * time.Millisecond, Rate: 500,
		Conns: 1, Pipeline: 2, UserPrefix: c.prefix, DrainTimeout: 400 * time.Millisecond, Audit: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Drained || rep.DrainTime < 400*time.Millisecond || rep.Audit != nil || rep.BookedTotal != 0 {
		t.Errorf("drained %v after %v, audit %v, booked %d; want a timeout, no audit, nothing booked",
			rep.Drained, rep.DrainTime, rep.Audit, rep.BookedTotal)
	}
	text := strings.Join(rep.Problems, "\n")
	if !strings.Contains(text, "did not drain within 400ms") || !strings.Contains(text, "booking_lag") ||
		!strings.Contains(text, "audit not run") || rep.Err() == nil {
		t.Errorf("problems %q, Err() = %v; want the drain timeout and the skipped audit", rep.Problems, rep.Err())
	}
}

func TestRunNotReady(t *testing.T) {
	c, urls := newFakeCluster(t, 1)
	c.ready = false
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	ln.Close()
	rep, err := Run(context.Background(), Config{Targets: []string{urls[0], down}, ReadyTimeout: 300 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), urls[0]+" is not ready") || !strings.Contains(err.Error(), down) || rep != nil {
		t.Errorf("Run = %v, %v; want an error naming both targets", rep, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.requests != 0 {
		t.Errorf("%d grant requests sent to targets that are not ready", c.requests)
	}
}

func TestRunInvalid(t *testing.T) {
	if rep, err := Run(context.Background(), Config{}); err == nil || rep != nil {
		t.Errorf("Run(Config{}) = %v, %v; want an error", rep, err)
	}
}
