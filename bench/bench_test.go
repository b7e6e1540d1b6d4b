package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"redrain/adminauth"
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
		slot := p.take()
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

func TestPacerLate(t *testing.T) {
	p := newPacer(1000)
	for range 3 {
		p.take()
	}
	// A caller late by seconds (a stall) still gets the next slot of the
	// schedule, long past: nothing is dropped, and its latency will count
	// from there.
	if got, want := p.take(), 3*time.Millisecond; got != want {
		t.Fatalf("take after a stall = %v, want %v", got, want)
	}
	// The slots of the first 10 ms not taken yet.
	if got := p.untaken(10 * time.Millisecond); got != 6 {
		t.Errorf("untaken(10ms) = %d, want 6 (slots 4..9 ms)", got)
	}
	if got := p.untaken(4*time.Millisecond + 1); got != 1 {
		t.Errorf("untaken(4.000001ms) = %d, want 1", got)
	}
	if got := p.untaken(3 * time.Millisecond); got != 0 {
		t.Errorf("untaken(3ms) = %d, want 0: slots 0..3 ms are taken", got)
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
				slots[c] = append(slots[c], p.take())
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
		rate float64
		want time.Duration
	}{
		{1, time.Second},
		{3000.0 / 7, 2333333 * time.Nanosecond}, // A batch run: Rate 3000, Batch 7.
		{3, 333333333 * time.Nanosecond},
		{7, 142857143 * time.Nanosecond},
		{3000000000, 1},
	} {
		if got := newPacer(tc.rate).interval; got != tc.want {
			t.Errorf("newPacer(%v).interval = %v, want %v", tc.rate, got, tc.want)
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
		{"admin targets", ok(Config{AdminTargets: []string{"http://127.0.0.1:8081"}}), ""},
		{"admin targets not one per target", ok(Config{AdminTargets: []string{"http://127.0.0.1:8081", "http://127.0.0.1:8082"}}), "2 admin targets for 1 targets"},
		{"admin target path", ok(Config{AdminTargets: []string{"http://127.0.0.1:8081/admin"}}), "admin target"},
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
		{"admin key", ok(Config{AdminKey: "dev:00"}), "admin key"},
		{"app key", ok(Config{AppKey: testAppKey}), ""},
		{"app key with label", ok(Config{AppID: 7, AppKey: testAppKey7}), ""},
		{"app key short", ok(Config{AppKey: "1:00"}), "bench: app key: adminauth: invalid key"},
		{"app key names no app", ok(Config{AppKey: "ops:" + strings.Repeat("00", 32)}), `id "ops" does not name an app`},
		{"app key zero app", ok(Config{AppKey: "0:" + strings.Repeat("00", 32)}), `id "0" does not name an app`},
		{"app key other app", ok(Config{AppKey: testAppKey7}), "signs for app 7, but the grants are for app_id 1"},
		{"app key other app than AppID", ok(Config{AppID: 7, AppKey: testAppKey}), "pass --app 1, or a key of app 7"},
		{"scene too long", ok(Config{SceneID: strings.Repeat("s", 65)}), "scene id"},
		{"user prefix too long", ok(Config{UserPrefix: strings.Repeat("u", 60), Users: 100000}), "user prefix"},
		{"user prefix not utf-8", ok(Config{UserPrefix: "\xff"}), "user prefix"},
		{"batch of one", ok(Config{Batch: 1, Users: 10}), ""}, // Single grants may have more in flight than users.
		{"batch", ok(Config{Batch: 100, Users: 102400}), ""},
		{"batch max", ok(Config{Batch: BatchMax, Conns: 2, Pipeline: 5}), ""},
		{"batch negative", ok(Config{Batch: -1}), "batch is -1, want 0..1000"},
		{"batch too large", ok(Config{Batch: BatchMax + 1, Users: UsersMax}), "batch is 1001, want 0..1000"},
		{"batch users in flight", ok(Config{Batch: 10}), "1×64×16×10 = 10240 grants in flight, more than the 10000 users"},
		{"batch users in flight over targets", Config{Targets: []string{"http://a:1", "http://b:2"}, Batch: 2, Conns: 10, Pipeline: 10, Users: 399},
			"2×10×10×2 = 400 grants in flight"},
		{"batch body too large", ok(Config{Batch: BatchMax, Conns: 1, Pipeline: 1, ActivityID: strings.Repeat("<", 64),
			SceneID: strings.Repeat("&", 64), UserPrefix: strings.Repeat(">", 40)}), "bytes long, want at most 1048576"},
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
	if c.Batch != 1 {
		t.Errorf("default batch %d, want 1 (single grants)", c.Batch)
	}
	if c.AdminKey != adminauth.DevKey {
		t.Errorf("default admin key %q, want the development key", c.AdminKey)
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
		checkFields(t, body, &fields, m)
	})
}

// checkFields fails t when f does not hold the string members status, code
// and token of m, the object that encoding/json read from body.
func checkFields(t *testing.T, body []byte, f *grantFields, m map[string]any) {
	t.Helper()
	for name, got := range map[string][]byte{"status": f.status, "code": f.code, "token": f.token} {
		want, isString := m[name].(string)
		if isString != (got != nil) || string(got) != want {
			t.Fatalf("%q: %s = %q (present %v), encoding/json has %q (string %v)",
				body, name, got, got != nil, want, isString)
		}
	}
}

func TestParseBatchResults(t *testing.T) {
	const itemsMax = 3
	for _, tc := range []struct {
		body string
		want []string // status/code/token of each item, "-" when absent; nil when not ok.
	}{
		{`{"results":[{"token":"t1","out_trade_no":"o","act_id":7,"award_type":"cash","amount":88,"status":"issued"},` +
			`{"code":"budget_exhausted","message":"budget \"status\":\"issued\" is spent"},{"status":"booked","token":"t\u0033"}]}`,
			[]string{"issued/-/t1", "-/budget_exhausted/-", "booked/-/t3"}},
		{` { "other" : [ {"results":[]} ], "results" : [ { } ] , "code":"x"} `, []string{"-/-/-"}},
		{`{"results":[]}`, []string{}},
		{`{"results":[{"status":{"code":"nested"}},{"a":[1,"]}"],"token":""}]}`, []string{"-/-/-", "-/-/"}},
		{`{"results":[1],"results":[{"code":"last wins"}]}`, []string{"-/last wins/-"}},
		{`{"r\u0065sults":[{"status":"booked"}]}`, []string{"booked/-/-"}},
		{`{"results":[{"status":"issued"}],"results":null}`, nil},
		{`{"results":[{},{},{},{}]}`, nil}, // More than itemsMax.
		{`{"results":[{},2]}`, nil},
		{`{"results":[{}]`, nil},
		{`{"results":[{},]}`, nil},
		{`{"results":[{}]}x`, nil},
		{`{"results":{"status":"issued"}}`, nil},
		{`{"code":"unavailable","message":"node is recovering"}`, nil},
		{`[{"status":"issued"}]`, nil},
		{``, nil},
	} {
		show := func(b []byte) string {
			if b == nil {
				return "-"
			}
			return string(b)
		}
		items, ok := parseBatchResults([]byte(tc.body), make([]grantFields, 2), itemsMax)
		var got []string
		if ok {
			got = []string{}
			for _, f := range items {
				got = append(got, show(f.status)+"/"+show(f.code)+"/"+show(f.token))
			}
		}
		if ok != (tc.want != nil) || !slices.Equal(got, tc.want) || (!ok && len(items) != 0) {
			t.Errorf("parseBatchResults(%s) = %q (%d items), %v; want %q", tc.body, got, len(items), ok, tc.want)
		}
	}
}

// FuzzParseBatchResults checks that on any valid JSON object the scanner
// finds the same array of objects under "results" that encoding/json
// finds, and the same fields in each, or finds none when encoding/json
// finds anything else there.
func FuzzParseBatchResults(f *testing.F) {
	for _, s := range []string{
		`{"results":[{"token":"t","status":"issued","act_id":7},{"code":"budget_exhausted","message":"m"}]}`,
		`{"results":[]}`,
		`{"results":[1],"results":[{"status":"booked"}]}`,
		`{"results":{"status":"issued"}}`,
		`{"code":"unavailable","message":"node is recovering"}`,
		`{"x":[{"results":[{}]}],"r\u0065sults":[{"token":"\u0074","x":{"status":"no"}},{}]}`,
		`{"results":[{},{},{},{},{}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		const itemsMax = 4
		items, ok := parseBatchResults(body, make([]grantFields, 1), itemsMax)
		if !ok && len(items) != 0 {
			t.Fatalf("parseBatchResults(%q) = %d items, false", body, len(items))
		}
		var m map[string]any
		if json.Unmarshal(body, &m) != nil || m == nil {
			return // Not an object: the scanner may say anything but must not panic.
		}
		results, want := m["results"].([]any)
		want = want && len(results) <= itemsMax
		for _, r := range results {
			_, isObject := r.(map[string]any)
			want = want && isObject
		}
		if ok != want {
			t.Fatalf("parseBatchResults(%q) = %v, encoding/json has results %v", body, ok, m["results"])
		}
		if !ok {
			return
		}
		if len(items) != len(results) {
			t.Fatalf("parseBatchResults(%q) = %d items, encoding/json has %d", body, len(items), len(results))
		}
		for i := range items {
			checkFields(t, body, &items[i], results[i].(map[string]any))
		}
	})
}

func BenchmarkParseGrantFields(b *testing.B) {
	body := []byte(`{"token":"AQABAAAAAAAAAAEAAAAAAAAAAQ0ekZ2lZ3n0Yw1Xz9X8cQ","out_trade_no":"850d2f1b6a9c4e3f",` +
		`"act_id":7,"award_type":"cash","amount":88,"status":"issued"}`)
	var f grantFields
	b.ReportAllocs()
	for b.Loop() {
		if !parseGrantFields(body, &f) {
			b.Fatal("parseGrantFields = false")
		}
	}
}

// BenchmarkParseBatchResults reads a batch of 100 answers; divide by 100
// to compare with BenchmarkParseGrantFields.
func BenchmarkParseBatchResults(b *testing.B) {
	body := []byte(`{"results":[`)
	for i := range 100 {
		if i > 0 {
			body = append(body, ',')
		}
		if i%10 == 9 {
			body = append(body, `{"code":"budget_exhausted","message":"the award's budget cannot pay this packet"}`...)
			continue
		}
		body = fmt.Appendf(body, `{"token":"AQABAAAAAAAAAAEAAAAAAAAAAQ0ekZ2lZ3n0Yw1Xz9X%03d","out_trade_no":"850d2f1b6a9c4e3f",`+
			`"act_id":7,"award_type":"cash","amount":88,"status":"issued"}`, i)
	}
	body = append(body, "]}"...)
	items := make([]grantFields, 0, 100)
	b.ReportAllocs()
	for b.Loop() {
		var ok bool
		if items, ok = parseBatchResults(body, items, 100); !ok || len(items) != 100 {
			b.Fatalf("parseBatchResults = %d items, %v", len(items), ok)
		}
	}
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

func TestUsersPickDistinct(t *testing.T) {
	const count, batch, grantedMax = 100, 8, 5
	u := newUsers(count, rand.New(rand.NewPCG(9, 10)))
	rng := rand.New(rand.NewPCG(11, 12))
	seen := map[uint32]struct{}{}
	var offers []offer
	offered := map[uint32]bool{} // Users offered a new grant.
	granted := map[uint32]bool{}
	check := func(offers []offer) {
		t.Helper()
		inBatch := map[uint32]bool{}
		for _, o := range offers {
			switch {
			case inBatch[o.user]:
				t.Fatalf("batch %v holds user %d twice", offers, o.user)
			case o.repeat && !granted[o.user]:
				t.Fatalf("batch %v repeats user %d, who was not granted", offers, o.user)
			case !o.repeat && offered[o.user]:
				t.Fatalf("batch %v offers user %d a new grant again", offers, o.user)
			}
			inBatch[o.user] = true
			if !o.repeat {
				offered[o.user] = true
			}
		}
	}
	// The first pass: repeats go to the few users granted, a batch never
	// holds one twice, and it is full while there are new users to offer.
	for len(offered) < count {
		before := len(offered)
		offers = u.pickDistinct(rng, 0.5, batch, offers, seen)
		check(offers)
		if len(offers) != batch && before+batch <= count {
			t.Fatalf("batch of %d during the first pass, want %d", len(offers), batch)
		}
		for _, o := range offers {
			if !o.repeat && len(granted) < grantedMax {
				u.grant(o.user, uint64(o.user)<<1|1)
				granted[o.user] = true
			}
		}
	}
	// After it, there are fewer users to repeat than a batch holds: the
	// batch is cut short rather than hold one twice or spin.
	for range 100 {
		offers = u.pickDistinct(rng, 0.5, batch, offers, seen)
		check(offers)
		if len(offers) < 1 || len(offers) > grantedMax {
			t.Fatalf("batch of %d from %d granted users, want 1..%d", len(offers), grantedMax, grantedMax)
		}
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
		{"a target without stats (the ceiling)", progressLine{elapsed: time.Second, seconds: 1, offered: 900,
			accepted: 900, noStats: true, booked: -1, lag: -1, p99: 37 * time.Microsecond},
			"t=1s offered=900/s accepted=900/s p99=37µs errors=0"},
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
// budget_exhausted, and every failEvery-th with a 503 without a JSON body
// (in a batch, an "unavailable" item). The failBatch-th batch request fails
// as a whole with a 503 and an error object, and the badBatch-th is
// answered 200 with one item whatever it held; neither changes anything.
// Booking happens when a node's stats are read: half the pending grants
// (rounded up) are booked and credited to that node, unless stuck is set.
type fakeCluster struct {
	prefix      string
	rejectEvery int
	failEvery   int
	failBatch   int64
	badBatch    int64
	stuck       bool
	ready       bool
	statsFail   int                  // The next statsFail stats requests fail with a 503.
	onGrant     func(requests int64) // Called after each grant request, outside the lock.
	// admin verifies the admin requests, with the development key.
	admin *adminauth.Verifier
	// apps, when not nil, verifies the grant requests as a node with app
	// keys does (see newAppVerifier): one that does not verify (unsigned,
	// altered, replayed) is answered 401 unauthorized and counted in
	// unauthorized, one that does in signed; a grant for another app than
	// the signer's is answered 403 forbidden (in a batch, a forbidden
	// item), and so is every grant when forbidAll is set (a node that
	// takes the key for another app).
	apps      *adminauth.Verifier
	forbidAll bool

	mu       sync.Mutex
	tokens   map[string]string
	booked   map[string]bool
	pending  []string
	newUsers int
	issued   int64
	nodes    []*fakeNode
	// Requests seen (single or batch), grants in them, and how the grants
	// were answered.
	requests, grants, ok, repeats, repeatsBooked, rejected, failed, malformed int64
	// Batch requests seen, the grants of those that failed as a whole or
	// were answered badly, the smallest and largest batch, and how often a
	// batch held a user twice.
	batches, failedWhole, badWhole, batchMin, batchMax, usersTwice int64
	// Grant requests that verified, that did not (never counted in
	// requests), and grants answered forbidden.
	signed, unauthorized, forbidden int64
}

// Test app keys: two of app 1 (the second with the same id as the first
// and another secret) and one of app 7.
const (
	testAppKey      = "1:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	testAppKeyWrong = "1:abababababababababababababababababababababababababababababababab"
	testAppKey7     = "7.2027:ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100"
)

// newAppVerifier returns the verifier of a node whose app_keys are keys,
// set up as a node sets up its own.
func newAppVerifier(t *testing.T, keys ...string) *adminauth.Verifier {
	t.Helper()
	parsed, err := adminauth.ParseAppKeys(keys)
	if err != nil {
		t.Fatal(err)
	}
	return &adminauth.Verifier{Keys: parsed, Nonces: adminauth.NewHashNonces(2 * time.Minute), Window: adminauth.AppWindowDefault}
}

type fakeNode struct {
	c      *fakeCluster
	issued int64   // New grants this node answered; under c.mu.
	booked int64   // Under c.mu.
	cpu    float64 // CPU seconds, a quarter more at each stats read; under c.mu.
	// slow counts the grants booked in the second bucket of the node's
	// issue-to-booked histogram (bounds 0.1 s and 1 s): every fourth stats
	// read books into it, the others into the first; under c.mu.
	slow, reads int64
}

// fakeGrant is a grant request, or one item of a batch.
type fakeGrant struct {
	AppID      uint32 `json:"app_id"`
	UserID     string `json:"user_id"`
	ActivityID string `json:"activity_id"`
	SceneID    string `json:"scene_id"`
	RainID     uint64 `json:"rain_id"`
}

func newFakeCluster(t *testing.T, nodes int) (*fakeCluster, []string) {
	c := &fakeCluster{
		prefix:      "t-",
		rejectEvery: 7,
		failEvery:   50,
		ready:       true,
		tokens:      map[string]string{},
		booked:      map[string]bool{},
		admin: &adminauth.Verifier{Keys: map[string]adminauth.Key{"dev": adminauth.MustParseKey(adminauth.DevKey)},
			Nonces: &adminauth.MemoryNonces{}},
	}
	var urls []string
	for range nodes {
		n := &fakeNode{c: c}
		c.nodes = append(c.nodes, n)
		urls = append(urls, serveFake(t, n.handle))
	}
	return c, urls
}

// serveFake serves handler on a loopback port until the test ends, and
// returns its base URL.
func serveFake(t *testing.T, handler fasthttp.RequestHandler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fasthttp.Server{Handler: handler}
	go s.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.ShutdownWithContext(ctx)
	})
	return "http://" + ln.Addr().String()
}

func writeJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	b, _ := json.Marshal(v)
	ctx.SetBody(b)
}

func (n *fakeNode) handle(ctx *fasthttp.RequestCtx) {
	if bytes.HasPrefix(ctx.Path(), []byte("/admin/")) {
		_, err := n.c.admin.Verify(ctx, ctx.Method(), ctx.URI().PathOriginal(), ctx.URI().QueryString(),
			ctx.Request.Header.Peek, ctx.PostBody())
		if err != nil {
			writeJSON(ctx, 401, map[string]string{"code": "unauthorized", "message": err.Error()})
			return
		}
	}
	var app uint32 // The signer's app; 0 when the node has no app keys.
	if bytes.HasPrefix(ctx.Path(), []byte("/v1/")) && n.c.apps != nil {
		keyID, err := n.c.apps.Verify(ctx, ctx.Method(), ctx.URI().PathOriginal(), ctx.URI().QueryString(),
			ctx.Request.Header.Peek, ctx.PostBody())
		n.c.mu.Lock()
		if err != nil {
			n.c.unauthorized++
		} else {
			n.c.signed++
		}
		n.c.mu.Unlock()
		if err != nil {
			writeJSON(ctx, 401, map[string]string{"code": "unauthorized", "message": err.Error()})
			return
		}
		app, _ = adminauth.AppOfKey(keyID)
	}
	switch path := string(ctx.Path()); {
	case path == "/v1/grants" && ctx.IsPost():
		n.grant(ctx, app)
	case path == "/v1/grants/batch" && ctx.IsPost():
		n.grantBatch(ctx, app)
	case path == "/admin/v1/stats" && ctx.IsGet():
		n.stats(ctx)
	case path == "/admin/v1/audit" && ctx.IsGet():
		n.audit(ctx)
	default:
		writeJSON(ctx, 404, map[string]string{"code": "not_found", "message": path})
	}
}

// decodeStrict decodes body into v as the node would: no unknown fields.
func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// forbiddenLocked reports whether the node refuses g, signed by app (0:
// the node has no app keys), as for another app; it counts it.
func (c *fakeCluster) forbiddenLocked(g fakeGrant, app uint32) bool {
	if app == 0 || (!c.forbidAll && g.AppID == app) {
		return false
	}
	c.forbidden++
	return true
}

func forbiddenAnswer(g fakeGrant, app uint32) map[string]string {
	return map[string]string{"code": "forbidden",
		"message": fmt.Sprintf("app_id %d: this request is signed by app %d, which acts only for its own users", g.AppID, app)}
}

func (n *fakeNode) grant(ctx *fasthttp.RequestCtx, app uint32) {
	c := n.c
	var req fakeGrant
	err := decodeStrict(ctx.PostBody(), &req)
	c.mu.Lock()
	c.requests++
	c.grants++
	requests := c.requests
	issued := c.issued
	var status int
	var answer any
	if err == nil && c.forbiddenLocked(req, app) {
		status, answer = 403, forbiddenAnswer(req, app)
	} else {
		status, answer = c.grantLocked(req, err, requests)
	}
	n.issued += c.issued - issued
	c.mu.Unlock()
	if answer == nil {
		ctx.SetStatusCode(status)
		ctx.SetBodyString("backend down")
	} else {
		writeJSON(ctx, status, answer)
	}
	if c.onGrant != nil {
		c.onGrant(requests)
	}
}

func (n *fakeNode) grantBatch(ctx *fasthttp.RequestCtx, app uint32) {
	c := n.c
	var req struct {
		Grants []fakeGrant `json:"grants"`
	}
	err := decodeStrict(ctx.PostBody(), &req)
	c.mu.Lock()
	c.requests++
	c.batches++
	size := int64(len(req.Grants))
	c.grants += size
	requests := c.requests
	issued := c.issued
	var status int
	var answer any
	switch {
	case err != nil || size == 0 || size > BatchMax:
		c.malformed++
		status, answer = 400, map[string]string{"code": "malformed_request", "message": fmt.Sprint(err)}
	case c.batches == c.failBatch:
		c.failedWhole += size
		status, answer = 503, map[string]string{"code": "unavailable", "message": "node is recovering"}
	case c.batches == c.badBatch:
		c.badWhole += size
		status, answer = 200, map[string]any{"results": []any{map[string]any{"token": "x", "status": "issued"}}}
	default:
		if c.batchMin == 0 || size < c.batchMin {
			c.batchMin = size
		}
		c.batchMax = max(c.batchMax, size)
		results := make([]any, len(req.Grants))
		users := map[string]bool{}
		for i, g := range req.Grants {
			if users[g.UserID] {
				c.usersTwice++
			}
			users[g.UserID] = true
			if c.forbiddenLocked(g, app) {
				results[i] = forbiddenAnswer(g, app)
				continue
			}
			_, item := c.grantLocked(g, nil, requests)
			if item == nil {
				item = map[string]string{"code": "unavailable", "message": "backend down"}
			}
			results[i] = item
		}
		status, answer = 200, map[string]any{"results": results}
	}
	n.issued += c.issued - issued
	c.mu.Unlock()
	writeJSON(ctx, status, answer)
	if c.onGrant != nil {
		c.onGrant(requests)
	}
}

// grantLocked answers one grant whose decoding failed with err, under
// c.mu: a status and a JSON answer, or nil for a 503 without a JSON body.
func (c *fakeCluster) grantLocked(req fakeGrant, err error, requests int64) (status int, answer any) {
	switch token, granted := c.tokens[req.UserID]; {
	case err != nil || req.AppID != 1 || req.ActivityID != "demo" || req.SceneID != "rain" || req.RainID != 1 ||
		!strings.HasPrefix(req.UserID, c.prefix):
		c.malformed++
		return 400, map[string]string{"code": "malformed_request", "message": fmt.Sprintf("%v %+v", err, req)}
	case granted:
		c.ok++
		c.repeats++
		status := "issued"
		if c.booked[req.UserID] {
			status = "booked"
			c.repeatsBooked++
		}
		return 200, map[string]any{"token": token, "out_trade_no": "o-" + req.UserID, "act_id": 7,
			"award_type": "cash", "amount": 88, "status": status}
	}
	c.newUsers++
	switch {
	case c.newUsers%c.failEvery == 0:
		c.failed++
		return 503, nil
	case c.newUsers%c.rejectEvery == 0:
		c.rejected++
		return 409, map[string]string{"code": "budget_exhausted", "message": `budget "status":"issued" is exhausted`}
	}
	c.ok++
	c.issued++
	token := fmt.Sprintf("tok-%s-%d", req.UserID, requests)
	c.tokens[req.UserID] = token
	c.pending = append(c.pending, req.UserID)
	// Fields in another order than the contract's example, on purpose.
	return 200, map[string]any{"status": "issued", "amount": 88, "token": token,
		"act_id": 7, "award_type": "cash", "out_trade_no": "o-" + req.UserID}
}

func (n *fakeNode) stats(ctx *fasthttp.RequestCtx) {
	c := n.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.statsFail > 0 {
		c.statsFail--
		writeJSON(ctx, 503, map[string]string{"code": "unavailable", "message": "busy"})
		return
	}
	if !c.stuck {
		k := (len(c.pending) + 1) / 2
		for _, user := range c.pending[:k] {
			c.booked[user] = true
		}
		c.pending = c.pending[k:]
		n.booked += int64(k)
		if n.reads++; n.reads%4 == 0 {
			n.slow += int64(k)
		}
	}
	n.cpu += 0.25
	writeJSON(ctx, 200, map[string]any{"grants_issued": n.issued, "grants_booked": n.booked,
		"booking_lag": len(c.pending), "ready": c.ready, "cpu_seconds": n.cpu,
		"issue_to_booked_seconds": map[string]any{"bounds": []float64{0.1, 1},
			"cumulative": []int64{n.booked - n.slow, n.booked, n.booked}}})
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

	if rep.Offered != c.requests || rep.Batch != 1 || c.batches != 0 {
		t.Errorf("offered %d in requests of %d, but the nodes saw %d requests (%d batches)",
			rep.Offered, rep.Batch, c.requests, c.batches)
	}
	// The pacer hands out Rate slots a second and no more; this bound
	// holds however slow the machine is.
	if limit := int64(cfg.Rate) + 1; rep.Offered > limit || rep.Offered == 0 {
		t.Errorf("offered %d in 1s at 3000/s, want 1..%d", rep.Offered, limit)
	}
	checkCounts(t, c, rep, map[string]int64{"budget_exhausted": c.rejected, "http_503": c.failed})
	line := regexp.MustCompile(`^t=\d+s offered=\d+/s accepted=\d+/s booked=(\d+|\?)/s lag=(\d+|\?) p99=\S+ errors=\d+$`)
	for _, l := range strings.Split(strings.TrimSpace(progress.String()), "\n") {
		if l != "" && !line.MatchString(l) {
			t.Errorf("progress line %q does not match %v", l, line)
		}
	}

	var text bytes.Buffer
	rep.WriteText(&text)
	for _, want := range []string{"offered      ", "budget_exhausted=", "latency      p50=", "audit        ok", "issued_equals_booked",
		"during the send window: ", "issue→booked p50=", `budget_exhausted: "budget \"status\":\"issued\" is exhausted"`} {
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
		back.LatencyP99 != rep.LatencyP99 || back.Audit == nil || back.Errors["budget_exhausted"] != c.rejected ||
		back.ErrorMessages["budget_exhausted"] != `budget "status":"issued" is exhausted` || back.ErrorMessages["http_503"] != "" ||
		back.IssueToBooked == nil || *back.IssueToBooked != *rep.IssueToBooked || back.BookedInWindow != rep.BookedInWindow {
		t.Errorf("WriteJSON round trip: %v, %+v\n%s", err, back, js.String())
	}
	t.Logf("report:\n%s", text.String())
}

func TestRunBatch(t *testing.T) {
	c, urls := newFakeCluster(t, 2)
	c.failBatch, c.badBatch = 5, 8
	cfg := Config{
		Targets:      urls,
		Users:        2000,
		Duration:     time.Second,
		Rate:         20000,
		Conns:        2,
		Pipeline:     4,
		Batch:        10,
		RepeatRatio:  0.2,
		UserPrefix:   c.prefix,
		DrainTimeout: 10 * time.Second,
		Audit:        true,
		Seed:         1,
	}
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()

	if rep.Offered != c.grants || rep.Batch != cfg.Batch || c.batches != c.requests {
		t.Errorf("offered %d grants in requests of %d, but the nodes saw %d grants in %d requests (%d batches)",
			rep.Offered, rep.Batch, c.grants, c.requests, c.batches)
	}
	// Requests are paced at Rate/Batch a second.
	reqRate := float64(cfg.Rate) / float64(cfg.Batch)
	if limit := int64(reqRate) + 1; c.batches > limit || c.batches < 10 {
		t.Errorf("%d batch requests in 1s at %v/s, want 10..%d", c.batches, reqRate, limit)
	}
	// With Users well above the grants in flight there are always enough
	// distinct users to fill a batch, and never one twice in it.
	if c.batchMin != int64(cfg.Batch) || c.batchMax != int64(cfg.Batch) || c.grants != c.batches*int64(cfg.Batch) || c.usersTwice != 0 {
		t.Errorf("batches of %d..%d grants (%d grants in %d batches), %d users twice in a batch; want all of %d, none twice",
			c.batchMin, c.batchMax, c.grants, c.batches, c.usersTwice, cfg.Batch)
	}
	if c.failedWhole != int64(cfg.Batch) || c.badWhole != int64(cfg.Batch) {
		t.Errorf("the nodes failed %d and garbled %d grants of whole batches, want %d each", c.failedWhole, c.badWhole, cfg.Batch)
	}
	checkCounts(t, c, rep, map[string]int64{"budget_exhausted": c.rejected, "unavailable": c.failed + c.failedWhole,
		"bad_response": c.badWhole})

	var text bytes.Buffer
	rep.WriteText(&text)
	// An item's message or a whole batch's, whichever a worker met first.
	if m := rep.ErrorMessages["unavailable"]; m != "backend down" && m != "node is recovering" {
		t.Errorf("the message kept for unavailable: %q", m)
	}
	for _, want := range []string{"latency (per request of 10 grants) p50=", "unavailable=", "bad_response=10"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("WriteText lacks %q:\n%s", want, text.String())
		}
	}
	t.Logf("report:\n%s", text.String())
}

// checkCounts checks what rep counted against what c answered (under
// c.mu): every grant offered ends up accepted or in errors, errors by code
// are wantErrors (zeros left out), repeats and new grants match, every new
// grant was booked and the audit passed.
func checkCounts(t *testing.T, c *fakeCluster, rep *Report, wantErrors map[string]int64) {
	t.Helper()
	if got := rep.Accepted + sumErrors(rep.Errors); got != rep.Offered {
		t.Errorf("accepted %d + errors %v = %d, want offered %d", rep.Accepted, rep.Errors, got, rep.Offered)
	}
	maps.DeleteFunc(wantErrors, func(_ string, n int64) bool { return n == 0 })
	if c.rejected == 0 || c.malformed != 0 || !maps.Equal(rep.Errors, wantErrors) {
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
	// The nodes' histograms hold only the grants of this run, so the
	// report's percentiles are those of the buckets summed over nodes.
	var slow int64
	for _, n := range c.nodes {
		slow += n.slow
	}
	want := quantilesOf(&buckets{Bounds: []float64{0.1, 1}, Cumulative: []int64{c.issued - slow, c.issued, c.issued}})
	if q := rep.IssueToBooked; q == nil || want == nil || *q != *want || q.Count != c.issued {
		t.Errorf("issue to booked %+v, want %+v over the %d grants issued", q, want, c.issued)
	}
	if rep.IssuedInWindow != c.issued || rep.BookedInWindow <= 0 || rep.BookedInWindow > c.issued ||
		rep.BookedInWindowShare != float64(rep.BookedInWindow)/float64(c.issued) {
		t.Errorf("booked %d of %d issued in the window (%v), the nodes issued %d",
			rep.BookedInWindow, rep.IssuedInWindow, rep.BookedInWindowShare, c.issued)
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
	if rep.OfferedPerSec <= 0 || rep.BookedPerSec <= 0 || rep.Duration < time.Second {
		t.Errorf("offered %v/s booked %v/s over %v", rep.OfferedPerSec, rep.BookedPerSec, rep.Duration)
	}
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

// TestRunWrongAdminKey: stats refused for the key end the wait for ready
// at once (the ready timeout here is far longer than the test's context),
// naming the refusal and what to change.
func TestRunWrongAdminKey(t *testing.T) {
	c, urls := newFakeCluster(t, 1)
	other := "dev:" + strings.Repeat("ab", 32)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := Run(ctx, Config{Targets: urls, AdminKey: other, ReadyTimeout: time.Hour})
	if err == nil || !strings.Contains(err.Error(), "status 401") || !strings.Contains(err.Error(), "bad_signature") ||
		!strings.Contains(err.Error(), "--admin-key") || ctx.Err() != nil || rep != nil {
		t.Errorf("Run with another key = %v, %v; want the stats refused as bad_signature at once", rep, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.requests != 0 {
		t.Errorf("%d grant requests sent though the stats were refused", c.requests)
	}
}

// TestRunAdminRoutesElsewhere: a target whose admin routes answer 404 (a
// node with an operations listener, reached on its API address) ends the
// wait at once with the hint to pass --admin-target.
func TestRunAdminRoutesElsewhere(t *testing.T) {
	_, urls := newFakeCluster(t, 1)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"code":"not_found","message":"no route on the API listener"}`))
	}))
	defer api.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := Run(ctx, Config{Targets: urls, AdminTargets: []string{api.URL}, ReadyTimeout: time.Hour})
	if err == nil || !strings.Contains(err.Error(), "status 404") || !strings.Contains(err.Error(), "--admin-target") || ctx.Err() != nil || rep != nil {
		t.Errorf("Run with admin routes elsewhere = %v, %v; want the 404 and the hint at once", rep, err)
	}
}

// TestRunSigned: against nodes that take only signed grant requests, each
// refused unless it verifies with a fresh nonce, a run with the app key
// gets every request through, single and batch.
func TestRunSigned(t *testing.T) {
	for _, batch := range []int{1, 10} {
		t.Run(fmt.Sprintf("batch=%d", batch), func(t *testing.T) {
			c, urls := newFakeCluster(t, 2)
			c.apps = newAppVerifier(t, testAppKey, testAppKey7)
			rep, err := Run(context.Background(), Config{Targets: urls, Users: 2000, Duration: time.Second,
				Rate: 4000, Conns: 2, Pipeline: 4, Batch: batch, RepeatRatio: 0.2, UserPrefix: c.prefix,
				DrainTimeout: 10 * time.Second, Audit: true, Seed: 1, AppKey: testAppKey})
			if err != nil {
				t.Fatal(err)
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.signed == 0 || c.signed != c.requests || c.unauthorized != 0 || c.forbidden != 0 || rep.Requests != c.requests {
				t.Errorf("the nodes verified %d of %d requests (%d refused unauthorized, %d grants forbidden), the bench sent %d",
					c.signed, c.requests, c.unauthorized, c.forbidden, rep.Requests)
			}
			wantErrors := map[string]int64{"budget_exhausted": c.rejected, "http_503": c.failed}
			if batch > 1 {
				wantErrors = map[string]int64{"budget_exhausted": c.rejected, "unavailable": c.failed}
			}
			checkCounts(t, c, rep, wantErrors)
		})
	}
}

// TestRunRefused: a node that refuses the grant requests, 401 or 403,
// ends the send window at once (the run's duration is an hour), with the
// answer and what to change; nothing is drained or audited.
func TestRunRefused(t *testing.T) {
	for _, tc := range []struct {
		name      string
		key       string
		batch     int
		forbidAll bool
		code      string // The refused grants' error code.
		want      []string
	}{
		{name: "unsigned", code: "unauthorized",
			want: []string{"/v1/grants: status 401", "unsigned", "takes only signed grant requests", "--app-key or $REDRAIN_APP_KEY"}},
		{name: "unsigned batch", batch: 10, code: "unauthorized",
			want: []string{"/v1/grants/batch: status 401", "unsigned", "--app-key or $REDRAIN_APP_KEY"}},
		{name: "wrong secret", key: testAppKeyWrong, code: "unauthorized",
			want: []string{"status 401", "bad_signature", `refused the signature of app key "1"`, "--app-key or $REDRAIN_APP_KEY"}},
		{name: "forbidden", key: testAppKey, forbidAll: true, code: "forbidden",
			want: []string{"status 403", "signed by app 1", "does not let this app key (--app-key or $REDRAIN_APP_KEY) grant for app_id 1", "--app"}},
		{name: "forbidden items", key: testAppKey, batch: 10, forbidAll: true, code: "forbidden",
			want: []string{"/v1/grants/batch: status 200", `"code":"forbidden"`, "grant for app_id 1", "--app"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, urls := newFakeCluster(t, 1)
			c.apps = newAppVerifier(t, testAppKey)
			c.forbidAll = tc.forbidAll
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			rep, err := Run(ctx, Config{Targets: urls, Users: 2000, Duration: time.Hour, Conns: 2, Pipeline: 4, Batch: tc.batch,
				UserPrefix: c.prefix, Audit: true, AppKey: tc.key})
			if err != nil {
				t.Fatal(err)
			}
			if ctx.Err() != nil || rep.Duration > 30*time.Second {
				t.Fatalf("the run went on for %v after the first refusal", rep.Duration)
			}
			runErr := rep.Err()
			for _, want := range tc.want {
				if runErr == nil || !strings.Contains(runErr.Error(), want) {
					t.Errorf("Err() = %v, want it to contain %q", runErr, want)
				}
			}
			if len(rep.Problems) != 1 || rep.Drained || rep.Audit != nil {
				t.Errorf("problems %q, drained %v, audit %v; want the refusal only, neither drained nor audited", rep.Problems, rep.Drained, rep.Audit)
			}
			if rep.Offered == 0 || rep.Accepted != 0 || rep.Errors[tc.code] != rep.Offered {
				t.Errorf("offered %d, accepted %d, errors %v; want all refused as %s", rep.Offered, rep.Accepted, rep.Errors, tc.code)
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.issued != 0 {
				t.Errorf("the node issued %d grants", c.issued)
			}
		})
	}
}

// TestRunAppKeyInvalid: a key that cannot sign for the run's app fails the
// run before anything is sent.
func TestRunAppKeyInvalid(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  string
		want string
	}{
		{"other app", testAppKey7, `app key "7.2027" signs for app 7, but the grants are for app_id 1`},
		{"names no app", "ops:" + strings.Repeat("ab", 32), `id "ops" does not name an app`},
		{"short secret", "1:abab", "secret has 2 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, urls := newFakeCluster(t, 1)
			c.apps = newAppVerifier(t, testAppKey, testAppKey7)
			rep, err := Run(context.Background(), Config{Targets: urls, AppKey: tc.key})
			if err == nil || !strings.Contains(err.Error(), tc.want) || rep != nil {
				t.Errorf("Run = %v, %v; want an error containing %q", rep, err, tc.want)
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.signed+c.unauthorized != 0 {
				t.Errorf("%d grant requests sent", c.signed+c.unauthorized)
			}
		})
	}
}

// TestAwaitServedSigned: the probe of CompareHot signs each of its tries
// anew (the node here refuses a replayed nonce, and serves the activity
// from the third try on), and ends at once when it is refused unsigned.
func TestAwaitServedSigned(t *testing.T) {
	v := newAppVerifier(t, testAppKey)
	var mu sync.Mutex
	var tries int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body bytes.Buffer
		_, _ = body.ReadFrom(r.Body)
		w.Header().Set("Content-Type", "application/json")
		if _, err := v.Verify(r.Context(), []byte(r.Method), []byte(r.URL.EscapedPath()), []byte(r.URL.RawQuery),
			func(n string) []byte { return []byte(r.Header.Get(n)) }, body.Bytes()); err != nil {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintf(w, `{"code":"unauthorized","message":%q}`, err.Error())
			return
		}
		mu.Lock()
		tries++
		n := tries
		mu.Unlock()
		if n < 3 {
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"code":"unknown_activity","message":"not yet"}`))
			return
		}
		_, _ = w.Write([]byte(`{"token":"t","status":"issued"}`))
	}))
	defer srv.Close()
	signer, err := (&Config{AppID: 1, AppKey: testAppKey}).appSigner()
	if err != nil {
		t.Fatal(err)
	}
	err = awaitServed(context.Background(), srv.URL, 1, HotOneActivity, signer)
	mu.Lock()
	n := tries
	mu.Unlock()
	if err != nil || n != 3 {
		t.Errorf("awaitServed signed = %v after %d verified tries, want nil after 3", err, n)
	}
	start := time.Now()
	err = awaitServed(context.Background(), srv.URL, 1, HotOneActivity, nil)
	if err == nil || !strings.Contains(err.Error(), "status 401") || !strings.Contains(err.Error(), "--app-key or $REDRAIN_APP_KEY") ||
		time.Since(start) > 10*time.Second {
		t.Errorf("awaitServed unsigned = %v after %v, want the 401 and the hint at once", err, time.Since(start))
	}
}

// TestCompareCeilingRefused: a node phase whose requests are refused ends
// the comparison there, with the hint.
func TestCompareCeilingRefused(t *testing.T) {
	c, urls := newFakeCluster(t, 1)
	c.apps = newAppVerifier(t, testAppKey)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := CompareCeiling(ctx, CeilingConfig{Rounds: 3, Run: Config{Targets: urls, Users: 2000, Duration: 300 * time.Millisecond,
		Conns: 2, Pipeline: 4, UserPrefix: c.prefix, Audit: true}})
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.Err(); err == nil || !strings.Contains(err.Error(), "round 1 node: grant requests refused") ||
		!strings.Contains(err.Error(), "--app-key or $REDRAIN_APP_KEY") || len(rep.Rounds) != 1 || rep.Drained || rep.Audit != nil {
		t.Errorf("Err() = %v with %d rounds, drained %v, audit %v; want the refusal after round 1, no drain", err, len(rep.Rounds), rep.Drained, rep.Audit)
	}
}

func TestRunInvalid(t *testing.T) {
	if rep, err := Run(context.Background(), Config{}); err == nil || rep != nil {
		t.Errorf("Run(Config{}) = %v, %v; want an error", rep, err)
	}
}

func TestCountGrants(t *testing.T) {
	for _, tc := range []struct {
		body string
		want int
	}{
		{`{"grants":[{"user_id":"a"}]}`, 1},
		{`{"grants":[{"user_id":"a"},{"user_id":"b"},{"user_id":"c"}]}`, 3},
		{`{"grants":[]}`, 0},
		{`{"grants":[{"user_id":"{[x"},{"user_id":"q\\"},{"user_id":"e\"{"}]}`, 3},
		{`{"grants":[{"nested":{"a":[{}]}},{}]}`, 2},
		{`{}`, 0},
	} {
		if got := countGrants([]byte(tc.body)); got != tc.want {
			t.Errorf("countGrants(%s) = %d, want %d", tc.body, got, tc.want)
		}
	}
}

// TestCeilingAnswers checks that the ceiling answers both grant routes in
// the shape the bench parses as accepted grants, and refuses the rest.
func TestCeilingAnswers(t *testing.T) {
	c, err := startCeiling()
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	client := &fasthttp.Client{}
	do := func(method, path, body string) (int, []byte) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.Header.SetMethod(method)
		req.SetRequestURI(c.target.base + path)
		req.SetBodyString(body)
		if err := client.DoTimeout(req, resp, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode(), bytes.Clone(resp.Body())
	}

	status, body := do("POST", "/v1/grants", `{"app_id":1,"user_id":"u-1","activity_id":"demo","scene_id":"rain","rain_id":1}`)
	var f grantFields
	if status != 200 || !parseGrantFields(body, &f) || string(f.status) != "issued" || len(f.token) != ceilingTokenLen {
		t.Errorf("POST /v1/grants = %d %s, want 200 and an issued grant with a token of %d bytes", status, body, ceilingTokenLen)
	}
	var answer map[string]any
	if err := json.Unmarshal(body, &answer); err != nil || len(answer) != 8 {
		t.Errorf("the grant answer %s is not a node's 8 members: %v", body, err)
	}

	grant := `{"app_id":1,"user_id":"u-{1}","activity_id":"demo","scene_id":"rain","rain_id":1}`
	status, body = do("POST", "/v1/grants/batch", `{"grants":[`+grant+","+grant+","+grant+`]}`)
	items, ok := parseBatchResults(body, nil, BatchMax)
	if status != 200 || !ok || len(items) != 3 {
		t.Fatalf("POST /v1/grants/batch of 3 = %d %s, want 200 and 3 results", status, body)
	}
	for i, it := range items {
		if string(it.status) != "issued" || len(it.token) == 0 || it.code != nil {
			t.Errorf("batch item %d is %q %q %q, want an issued grant", i, it.status, it.token, it.code)
		}
	}

	for _, tc := range []struct {
		method, path, body string
		status             int
	}{
		{"POST", "/v1/grants/batch", `{"grants":[]}`, 400},
		{"GET", "/v1/grants", "", 405},
		{"GET", "/admin/v1/stats", "", 405},
		{"POST", "/v1/tokens/redeem", `{}`, 404},
	} {
		status, body := do(tc.method, tc.path, tc.body)
		if status != tc.status || !parseGrantFields(body, &f) || len(f.code) == 0 {
			t.Errorf("%s %s = %d %s, want %d with an error code", tc.method, tc.path, status, body, tc.status)
		}
	}
}

// TestCompareCeiling runs a short comparison against a fake node, with
// single grants and with batches: both phases must accept grants, the
// ceiling all it was offered and none of them at the node, and each round
// must have its ratio.
func TestCompareCeiling(t *testing.T) {
	for _, batch := range []int{1, 10} {
		t.Run(fmt.Sprintf("batch=%d", batch), func(t *testing.T) {
			c, urls := newFakeCluster(t, 1)
			var progress bytes.Buffer
			cfg := CeilingConfig{Rounds: 2, Run: Config{
				Targets:      urls,
				Users:        2000,
				Duration:     300 * time.Millisecond,
				Conns:        2,
				Pipeline:     4,
				Batch:        batch,
				RepeatRatio:  0.2,
				UserPrefix:   c.prefix,
				DrainTimeout: 10 * time.Second,
				Audit:        true,
				Seed:         1,
				Progress:     &progress,
			}}
			if batch > 1 {
				// Signed: the node checks every request, the ceiling none.
				c.apps = newAppVerifier(t, testAppKey)
				cfg.Run.AppKey = testAppKey
			}
			rep, err := CompareCeiling(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			c.mu.Lock()
			defer c.mu.Unlock()

			if c.apps != nil && (c.signed == 0 || c.signed != c.requests || c.unauthorized != 0) {
				t.Errorf("the node verified %d of %d requests, refused %d", c.signed, c.requests, c.unauthorized)
			}
			if len(rep.Rounds) != 2 {
				t.Fatalf("%d rounds, want 2", len(rep.Rounds))
			}
			var nodeRequests, nodeGrants int64
			for i, cr := range rep.Rounds {
				ceil, node := cr.Ceiling, cr.Node
				if ceil.Accepted == 0 || ceil.Accepted != ceil.Offered || len(ceil.Errors) != 0 || ceil.Batch != batch {
					t.Errorf("round %d: the ceiling accepted %d of %d grants (errors %v) in requests of %d, want all of them, in requests of %d",
						i+1, ceil.Accepted, ceil.Offered, ceil.Errors, ceil.Batch, batch)
				}
				if node.Accepted == 0 || node.Accepted+sumErrors(node.Errors) != node.Offered {
					t.Errorf("round %d: the node accepted %d + errors %v, offered %d; want some accepted, all counted",
						i+1, node.Accepted, node.Errors, node.Offered)
				}
				if ceil.Requests == 0 || ceil.RequestsPerSec <= 0 || node.Requests == 0 ||
					ceil.LatencyP50 <= 0 || ceil.LatencyMax < ceil.LatencyP99 || node.LatencyP50 <= 0 {
					t.Errorf("round %d: requests %d (%v/s) and %d, latencies %v..%v and %v",
						i+1, ceil.Requests, ceil.RequestsPerSec, node.Requests, ceil.LatencyP50, ceil.LatencyMax, node.LatencyP50)
				}
				if want := node.AcceptedPerSec / ceil.AcceptedPerSec; cr.Ratio <= 0 || math.Abs(cr.Ratio-want) > 1e-9 {
					t.Errorf("round %d: ratio %v, want node %v/s over ceiling %v/s = %v",
						i+1, cr.Ratio, node.AcceptedPerSec, ceil.AcceptedPerSec, want)
				}
				if node.TokenMismatches != 0 || ceil.TokenMismatches != 0 || ceil.Repeats == 0 {
					t.Errorf("round %d: token mismatches %d and %d, ceiling repeats %d", i+1,
						node.TokenMismatches, ceil.TokenMismatches, ceil.Repeats)
				}
				// The fake node's CPU grows by a quarter second at each
				// stats read: one before and one after every phase.
				wantPer := time.Duration(0.25 / float64(node.Accepted) * 1e9)
				if node.SendCPUSeconds != 0.25 || node.CPUPerAccepted != wantPer || ceil.NodeCPUSeconds != 0.25 ||
					ceil.SendCPUSeconds != 0 || node.BookedTotal <= 0 {
					t.Errorf("round %d: node cpu %vs, %v per accepted grant (want 0.25s, %v), %vs during the ceiling (want 0.25), "+
						"ceiling cpu %vs (want none), booked %d in the phase", i+1, node.SendCPUSeconds, node.CPUPerAccepted, wantPer,
						ceil.NodeCPUSeconds, ceil.SendCPUSeconds, node.BookedTotal)
				}
				nodeRequests += node.Requests
				nodeGrants += node.Offered
			}
			// Every request the fake node saw came from a node phase.
			if c.requests != nodeRequests || c.grants != nodeGrants || c.malformed != 0 {
				t.Errorf("the fake node saw %d requests of %d grants (%d malformed), the node phases sent %d of %d",
					c.requests, c.grants, c.malformed, nodeRequests, nodeGrants)
			}
			mean := (rep.Rounds[0].Ratio + rep.Rounds[1].Ratio) / 2
			if math.Abs(rep.RatioMean-mean) > 1e-9 || rep.CeilingAcceptedPerSec <= 0 || rep.NodeAcceptedPerSec <= 0 {
				t.Errorf("mean ratio %v, want %v; mean rates %v and %v", rep.RatioMean, mean,
					rep.CeilingAcceptedPerSec, rep.NodeAcceptedPerSec)
			}
			if !rep.Drained || rep.BookedTotal != c.issued || rep.BookedPerSec <= 0 || rep.Audit == nil || !rep.Audit.OK || rep.Err() != nil {
				t.Errorf("drained %v, booked %d of %d issued (%v/s), audit %+v, Err() = %v",
					rep.Drained, rep.BookedTotal, c.issued, rep.BookedPerSec, rep.Audit, rep.Err())
			}
			for _, want := range []string{"round 1: ceiling\n", "round 1: node\n", "round 2: ceiling\n", "round 2: node\n"} {
				if !strings.Contains(progress.String(), want) {
					t.Errorf("progress lacks %q:\n%s", want, progress.String())
				}
			}

			var text bytes.Buffer
			rep.WriteText(&text)
			for _, want := range []string{"round 1 ceiling", "round 2 node", "grants/s", "requests/s", "p99=",
				"round 1 ratio   node/ceiling ", "mean            ceiling", "per accepted grant", "audit           ok"} {
				if !strings.Contains(text.String(), want) {
					t.Errorf("WriteText lacks %q:\n%s", want, text.String())
				}
			}
			var js bytes.Buffer
			if err := rep.WriteJSON(&js); err != nil {
				t.Fatal(err)
			}
			var back CeilingReport
			if err := json.Unmarshal(js.Bytes(), &back); err != nil || len(back.Rounds) != 2 ||
				back.Rounds[1].Ratio != rep.Rounds[1].Ratio || back.Rounds[0].Node.RequestsPerSec != rep.Rounds[0].Node.RequestsPerSec ||
				back.RatioMean != rep.RatioMean || back.Audit == nil {
				t.Errorf("WriteJSON round trip: %v, %+v\n%s", err, back, js.String())
			}
			t.Logf("report:\n%s", text.String())
		})
	}
}

func TestCompareCeilingInvalid(t *testing.T) {
	if rep, err := CompareCeiling(context.Background(), CeilingConfig{Rounds: -1, Run: Config{Targets: []string{"http://127.0.0.1:1"}}}); err == nil || rep != nil {
		t.Errorf("CompareCeiling with rounds -1 = %v, %v; want an error", rep, err)
	}
	if rep, err := CompareCeiling(context.Background(), CeilingConfig{}); err == nil || rep != nil {
		t.Errorf("CompareCeiling(CeilingConfig{}) = %v, %v; want an error", rep, err)
	}
}

// TestFillSendCPUPerGrant: the send window's node figures are differences
// of the stats read before and after it, summed over targets, divided by
// what they count per.
func TestFillSendCPUPerGrant(t *testing.T) {
	base := []nodeStats{{CPUSeconds: 1, GrantsIssued: 100, GrantsBooked: 50, GrantRecords: 10, Allocs: 1000, AllocBytes: 1 << 20},
		{CPUSeconds: 2, GrantsIssued: 0, GrantsBooked: 0, GrantRecords: 0, Allocs: 0}}
	after := []nodeStats{{CPUSeconds: 1.5, GrantsIssued: 400, GrantsBooked: 350, GrantRecords: 13, Allocs: 5000, AllocBytes: 1<<20 + 600_000},
		{CPUSeconds: 2.5, GrantsIssued: 300, GrantsBooked: 240, GrantRecords: 3, Allocs: 4000, AllocBytes: 200_000}}
	rep := Report{Accepted: 800}
	fillSendCPU(&rep, base, after, make([]error, 2))
	if rep.SendCPUSeconds != 1 || rep.CPUPerAccepted != 1250*time.Microsecond {
		t.Errorf("cpu %v, %v per grant; want 1s, 1.25ms", rep.SendCPUSeconds, rep.CPUPerAccepted)
	}
	if rep.GrantsPerRecord != 100 || rep.AllocsPerAccepted != 10 || rep.AllocBytesPerAccepted != 1000 {
		t.Errorf("grants per record %v, allocs per grant %v (%v bytes); want 100, 10 (1000)",
			rep.GrantsPerRecord, rep.AllocsPerAccepted, rep.AllocBytesPerAccepted)
	}
	if rep.IssuedInWindow != 600 || rep.BookedInWindow != 540 || rep.BookedInWindowShare != 0.9 {
		t.Errorf("booked %d of %d issued in the window (%v), want 540 of 600 (0.9)",
			rep.BookedInWindow, rep.IssuedInWindow, rep.BookedInWindowShare)
	}
}

// TestBucketsQuantile: percentiles interpolate linearly within the bucket
// that holds them, the first bucket starting at 0; one in the +Inf bucket
// is the highest bound and says so.
func TestBucketsQuantile(t *testing.T) {
	bounds := []float64{0.1, 0.5, 1}
	for _, tc := range []struct {
		cumulative []int64
		q          float64
		want       float64
		beyond, ok bool
	}{
		{[]int64{100, 100, 100, 100}, 0.5, 0.05, false, true},
		{[]int64{100, 100, 100, 100}, 0.99, 0.099, false, true},
		{[]int64{100, 100, 100, 100}, 1, 0.1, false, true},
		{[]int64{0, 100, 100, 100}, 0.5, 0.3, false, true},
		{[]int64{50, 50, 100, 100}, 0.5, 0.1, false, true},   // The rank is the first bucket's whole count.
		{[]int64{50, 50, 100, 100}, 0.75, 0.75, false, true}, // Halfway into (0.5, 1], the second bucket empty.
		{[]int64{90, 98, 98, 100}, 0.99, 1, true, true},
		{[]int64{0, 0, 0, 0}, 0.5, 0, false, false},
	} {
		b := &buckets{Bounds: bounds, Cumulative: tc.cumulative}
		got, beyond, ok := b.quantile(tc.q)
		if math.Abs(got-tc.want) > 1e-9 || beyond != tc.beyond || ok != tc.ok {
			t.Errorf("quantile(%v) of %v = %v, %v, %v; want %v, %v, %v",
				tc.q, tc.cumulative, got, beyond, ok, tc.want, tc.beyond, tc.ok)
		}
	}
	q := quantilesOf(&buckets{Bounds: bounds, Cumulative: []int64{0, 0, 1, 3}})
	if want := (Quantiles{Count: 3, P50: time.Second, P99: time.Second, P50Beyond: true, P99Beyond: true}); q == nil || *q != want {
		t.Errorf("quantilesOf beyond the bounds = %+v, want %+v", q, want)
	}
	if s := q.String(); s != "p50=>1s p99=>1s over 3 grants" {
		t.Errorf("String() = %q", s)
	}
}

// TestBucketsSince: the run's histogram is each target's growth from its
// baseline, summed; a target that restarted counts from zero, and
// targets without a histogram or with other bounds give none.
func TestBucketsSince(t *testing.T) {
	bounds := []float64{0.1, 1}
	h := func(c ...int64) *buckets { return &buckets{Bounds: bounds, Cumulative: c} }
	got := bucketsSince([]*buckets{h(1, 2, 3), h(10, 20, 30)}, []*buckets{h(5, 7, 9), h(2, 3, 4)})
	if want := h(4+2, 5+3, 6+4); got == nil || !slices.Equal(got.Cumulative, want.Cumulative) || !slices.Equal(got.Bounds, bounds) {
		t.Errorf("bucketsSince = %+v, want %+v", got, want)
	}
	other := &buckets{Bounds: []float64{0.2, 1}, Cumulative: []int64{1, 2, 3}}
	for _, tc := range []struct {
		name       string
		base, last []*buckets
	}{
		{"no histogram", []*buckets{nil}, []*buckets{nil}},
		{"not at the baseline", []*buckets{nil}, []*buckets{h(1, 2, 3)}},
		{"malformed", []*buckets{h(1, 2)}, []*buckets{h(1, 2)}},
		{"bounds changed", []*buckets{h(1, 2, 3)}, []*buckets{other}},
		{"bounds differ between targets", []*buckets{h(1, 2, 3), other}, []*buckets{h(1, 2, 3), other}},
	} {
		if got := bucketsSince(tc.base, tc.last); got != nil {
			t.Errorf("%s: bucketsSince = %+v, want nil", tc.name, got)
		}
	}
}

// TestStatsAfterWindow: the stats that close a send window are read again
// while a target fails to answer them, a bounded number of times.
func TestStatsAfterWindow(t *testing.T) {
	c, urls := newFakeCluster(t, 1)
	targets := []target{}
	for _, u := range urls {
		tg, err := parseTarget(u)
		if err != nil {
			t.Fatal(err)
		}
		targets = append(targets, tg)
	}
	adm := newAdmin(targets, adminauth.MustParseKey(adminauth.DevKey))
	for _, tc := range []struct {
		fail int
		ok   bool
	}{{0, true}, {statsAfterWindowTries - 1, true}, {statsAfterWindowTries, false}} {
		c.mu.Lock()
		c.statsFail = tc.fail
		c.mu.Unlock()
		_, errs := statsAfterWindow(context.Background(), adm)
		if ok := errors.Join(errs...) == nil; ok != tc.ok {
			t.Errorf("after %d failed reads: errors %v, want ok %v", tc.fail, errs, tc.ok)
		}
	}
}
