package protect

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"redrain/metrics"
	"redrain/metrics/promexport"
)

var t0 = time.Date(2026, 2, 1, 20, 0, 0, 0, time.UTC)

// TestLimiterBuckets replays requests of one key at given offsets from t0
// against a fresh limiter and checks every answer.
func TestLimiterBuckets(t *testing.T) {
	type step struct {
		at    time.Duration
		ok    bool
		retry time.Duration // wanted when !ok
	}
	tests := []struct {
		name        string
		rate, burst float64
		steps       []step
	}{
		{"burst then empty", 2, 3, []step{
			{0, true, 0}, {0, true, 0}, {0, true, 0}, {0, false, 500 * time.Millisecond},
		}},
		{"refill at rate", 2, 3, []step{
			{0, true, 0}, {0, true, 0}, {0, true, 0},
			{250 * time.Millisecond, false, 250 * time.Millisecond}, // half a token back
			{500 * time.Millisecond, true, 0},
			{500 * time.Millisecond, false, 500 * time.Millisecond},
		}},
		{"refill caps at burst", 1, 2, []step{
			{0, true, 0}, {time.Hour, true, 0}, {time.Hour, true, 0}, {time.Hour, false, time.Second},
		}},
		{"refused request takes nothing", 1, 1, []step{
			{0, true, 0},
			{100 * time.Millisecond, false, 900 * time.Millisecond},
			{200 * time.Millisecond, false, 800 * time.Millisecond},
			{time.Second, true, 0},
		}},
		{"clock stepping back counts as no time", 1, 1, []step{
			{time.Second, true, 0}, {0, false, time.Second}, {1500 * time.Millisecond, false, 500 * time.Millisecond},
			{2 * time.Second, true, 0},
		}},
		{"fractional rate", 0.5, 1, []step{
			{0, true, 0}, {time.Second, false, time.Second}, {2 * time.Second, true, 0},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewLimiter(tt.rate, tt.burst, 100)
			k := Key{App: 1, User: "u"}
			for i, s := range tt.steps {
				ok, retry := l.Allow(k, t0.Add(s.at))
				if ok != s.ok || retry != s.retry {
					t.Fatalf("step %d: Allow(%v at +%v) = %v, %v; want %v, %v", i, k, s.at, ok, retry, s.ok, s.retry)
				}
			}
		})
	}
}

func TestLimiterKeysAreIndependent(t *testing.T) {
	l := NewLimiter(1, 1, 100)
	keys := []Key{{1, "a"}, {1, "b"}, {2, "a"}, {1, ""}, {2, ""}}
	for _, k := range keys {
		if ok, _ := l.Allow(k, t0); !ok {
			t.Fatalf("first Allow(%v) refused", k)
		}
	}
	for _, k := range keys {
		if ok, _ := l.Allow(k, t0); ok {
			t.Fatalf("second Allow(%v) at the same instant admitted with burst 1", k)
		}
	}
}

// TestLimiterBoundedMemory fills a small limiter with more keys than it
// may hold: idle buckets go first and answer as before; past the cap an
// active bucket is evicted, counted, and its key starts full again.
func TestLimiterBoundedMemory(t *testing.T) {
	const keysMax = limiterShards * 4
	l := NewLimiter(1, 1, keysMax) // refill (and idle) time: 1 s
	for i := range 10 * keysMax {
		// Every key is new and a second after the previous one, so every
		// earlier bucket is idle (full again) when room is needed.
		at := t0.Add(time.Duration(i) * time.Second)
		if ok, _ := l.Allow(Key{App: 1, User: fmt.Sprint(i)}, at); !ok {
			t.Fatalf("new key %d refused", i)
		}
		if n := l.Len(); n > keysMax {
			t.Fatalf("after %d keys the limiter holds %d, more than its cap %d", i+1, n, keysMax)
		}
	}
	if n := l.Evictions(); n != 0 {
		t.Fatalf("Evictions() = %d with only idle buckets to drop, want 0", n)
	}
	// Now many new keys within one instant: nothing is idle, so active
	// buckets are evicted to stay under the cap.
	at := t0.Add(time.Hour)
	for i := range 3 * keysMax {
		if ok, _ := l.Allow(Key{App: 2, User: fmt.Sprint(i)}, at); !ok {
			t.Fatalf("new key %d refused at the cap", i)
		}
	}
	if n := l.Len(); n > keysMax {
		t.Fatalf("limiter holds %d keys, more than its cap %d", n, keysMax)
	}
	if n := l.Evictions(); n == 0 {
		t.Fatal("Evictions() = 0 after inserting 3x the cap within one instant")
	}
}

func TestShedIsExact(t *testing.T) {
	for _, p := range []int{0, 1, 7, 33, 50, 99, 100} {
		g := NewGuard(nil)
		if err := g.Set(&Switches{ShedPercent: p, RetryAfterSeconds: 3}); err != nil {
			t.Fatal(err)
		}
		const n = 10_000
		shed := 0
		for i := range n {
			v := g.Admit(1, "u", t0)
			if v.Reason == Shed {
				shed++
				if v.RetryAfter != 3*time.Second {
					t.Fatalf("shed verdict %v, want retry after 3s", v)
				}
			}
			// Any 100 consecutive requests shed exactly p.
			if (i+1)%100 == 0 && shed != (i+1)/100*p {
				t.Fatalf("ShedPercent %d: %d of the first %d requests shed, want %d", p, shed, i+1, (i+1)/100*p)
			}
		}
		if shed != n*p/100 {
			t.Fatalf("ShedPercent %d: %d of %d shed, want %d", p, shed, n, n*p/100)
		}
	}
}

// TestShedConcurrent sheds from many goroutines: the count is still exact.
func TestShedConcurrent(t *testing.T) {
	g := NewGuard(nil)
	if err := g.Set(&Switches{ShedPercent: 30}); err != nil {
		t.Fatal(err)
	}
	const workers, each = 8, 2500
	var mu sync.Mutex
	shed := 0
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			n := 0
			for range each {
				if g.Admit(1, "u", t0).Reason == Shed {
					n++
				}
			}
			mu.Lock()
			shed += n
			mu.Unlock()
		})
	}
	wg.Wait()
	if want := workers * each * 30 / 100; shed != want {
		t.Fatalf("%d of %d shed at 30%%, want %d", shed, workers*each, want)
	}
}

func TestAdmitLimits(t *testing.T) {
	reg := &metrics.Registry{}
	g := NewGuard(reg)
	if v := g.Admit(1, "u", t0); !v.OK() {
		t.Fatalf("no switches: Admit = %v, want admitted", v)
	}
	if err := g.Set(&Switches{UserRate: 1, UserBurst: 2, ClientRate: 10, ClientBurst: 3}); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		user string
		want Reason
	}{
		{"a", Admitted}, {"a", Admitted}, {"a", LimitedUser}, // user a's burst is 2
		{"b", Admitted},      // the client's third token
		{"c", LimitedClient}, // the client is empty; c spent a user token
		{"a", LimitedUser},
	}
	for i, s := range steps {
		v := g.Admit(7, s.user, t0)
		if v.Reason != s.want {
			t.Fatalf("step %d: Admit(7, %q) = %v, want reason %d", i, s.user, v, s.want)
		}
		if !v.OK() && v.RetryAfter <= 0 {
			t.Fatalf("step %d: refused with RetryAfter %v", i, v.RetryAfter)
		}
	}
	// Another app has its own client bucket.
	if v := g.Admit(8, "c", t0); !v.OK() {
		t.Fatalf("app 8: Admit = %v, want admitted", v)
	}
	// The same limits set again keep the buckets; new limits start full.
	if err := g.Set(&Switches{UserRate: 1, UserBurst: 2, ClientRate: 10, ClientBurst: 3, ShedPercent: 0}); err != nil {
		t.Fatal(err)
	}
	if v := g.Admit(7, "a", t0); v.Reason != LimitedUser {
		t.Fatalf("after setting the same limits: Admit = %v, want user still limited", v)
	}
	if err := g.Set(&Switches{UserRate: 1, UserBurst: 5}); err != nil {
		t.Fatal(err)
	}
	if v := g.Admit(7, "a", t0); !v.OK() {
		t.Fatalf("after new limits: Admit = %v, want a full bucket", v)
	}
	var b strings.Builder
	b.WriteString(promexport.Text(reg))
	for _, line := range []string{`redrain_rate_limited_total{scope="user"} 3`, `redrain_rate_limited_total{scope="client"} 1`} {
		if !strings.Contains(b.String(), line+"\n") {
			t.Errorf("metrics lack %q:\n%s", line, b.String())
		}
	}
}

func TestRainOpen(t *testing.T) {
	reg := &metrics.Registry{}
	g := NewGuard(reg)
	var nilGuard *Guard
	if !nilGuard.RainOpen("demo", "rain", 1) || !nilGuard.Admit(1, "u", t0).OK() {
		t.Fatal("a nil guard must admit and leave rains open")
	}
	s := &Switches{ClosedRains: []string{"demo/rain/1", "x/y/12"}, ClosedActivities: []string{"old"}}
	if err := g.Set(s); err != nil {
		t.Fatal(err)
	}
	s.ClosedRains[0] = "demo/rain/2" // the guard holds its own copy
	tests := []struct {
		activity, scene string
		rain            uint64
		open            bool
	}{
		{"demo", "rain", 1, false},
		{"demo", "rain", 2, true},
		{"demo", "other", 1, true},
		{"x", "y", 12, false},
		{"x", "y", 1, true},
		{"old", "any", 99, false},
		{"olde", "any", 99, true},
	}
	for _, tt := range tests {
		if got := g.RainOpen(tt.activity, tt.scene, tt.rain); got != tt.open {
			t.Errorf("RainOpen(%q, %q, %d) = %v, want %v", tt.activity, tt.scene, tt.rain, got, tt.open)
		}
	}
	var b strings.Builder
	b.WriteString(promexport.Text(reg))
	for _, line := range []string{"redrain_switch_closed_total 3", "redrain_closed_rains 2", "redrain_closed_activities 1"} {
		if !strings.Contains(b.String(), line+"\n") {
			t.Errorf("metrics lack %q:\n%s", line, b.String())
		}
	}
	if got := g.Switches().ClosedRains; got[0] != "demo/rain/1" {
		t.Errorf("Switches().ClosedRains = %v, want the list as set", got)
	}
}

func TestParseSwitches(t *testing.T) {
	ok := `{"closed_rains":["demo/rain/1"],"closed_activities":["old"],"shed_percent":10,
		"retry_after_seconds":5,"user_rate":2.5,"user_burst":5,"client_rate":1000,"client_burst":2000,
		"lines_off":["games","shop.v2"]}`
	s, err := ParseSwitches([]byte(ok))
	if err != nil {
		t.Fatalf("ParseSwitches(valid) = %v", err)
	}
	want := Switches{ClosedRains: []string{"demo/rain/1"}, ClosedActivities: []string{"old"}, ShedPercent: 10,
		RetryAfterSeconds: 5, UserRate: 2.5, UserBurst: 5, ClientRate: 1000, ClientBurst: 2000, LinesOff: []string{"games", "shop.v2"}}
	if fmt.Sprint(*s) != fmt.Sprint(want) {
		t.Fatalf("ParseSwitches = %+v, want %+v", *s, want)
	}
	if s, err := ParseSwitches([]byte(" {} ")); err != nil || fmt.Sprint(*s) != fmt.Sprint(Switches{}) {
		t.Fatalf("ParseSwitches({}) = %+v, %v; want the zero switches", s, err)
	}
	tests := []struct {
		name, body, wantInMessage string
	}{
		{"not an object", `[]`, "want a JSON object"},
		{"empty", ``, "want a JSON object"},
		{"unknown field", `{"shed":1}`, `unknown field "shed"`},
		{"field in another case", `{"Shed_Percent":1}`, `unknown field "Shed_Percent"`},
		{"duplicate field", `{"shed_percent":1,"shed_percent":2}`, `duplicate field "shed_percent"`},
		{"null", `{"closed_rains":null}`, `field "closed_rains": null`},
		{"trailing data", `{} {}`, "data after the object"},
		{"wrong type", `{"shed_percent":"5"}`, "shed_percent"},
		{"fraction for an int", `{"shed_percent":1.5}`, "shed_percent"},
		{"shed over 100", `{"shed_percent":101}`, "shed_percent 101"},
		{"shed negative", `{"shed_percent":-1}`, "shed_percent -1"},
		{"retry after too long", `{"retry_after_seconds":3601}`, "retry_after_seconds 3601"},
		{"negative rate", `{"user_rate":-1,"user_burst":1}`, "user_rate -1"},
		{"burst without rate", `{"client_burst":3}`, "client_burst 3 with client_rate 0"},
		{"rate without burst", `{"user_rate":3}`, "user_burst 0"},
		{"burst below one", `{"client_rate":3,"client_burst":0.5}`, "client_burst 0.5"},
		{"rate too high", `{"user_rate":2e9,"user_burst":1}`, "user_rate 2e+09"},
		{"rain without parts", `{"closed_rains":["demo"]}`, `closed_rains[0] "demo"`},
		{"rain id zero", `{"closed_rains":["demo/rain/0"]}`, "rain: want a positive integer"},
		{"rain id leading zero", `{"closed_rains":["demo/rain/01"]}`, "rain: want a positive integer"},
		{"rain id signed", `{"closed_rains":["demo/rain/+1"]}`, "rain: want a positive integer"},
		{"empty scene", `{"closed_rains":["demo//1"]}`, "want an id of 1 to 64 bytes"},
		{"rain listed twice", `{"closed_rains":["a/b/1","a/b/1"]}`, "listed twice"},
		{"control character", `{"closed_activities":["a\u0001"]}`, "control character"},
		{"long activity", `{"closed_activities":["` + strings.Repeat("a", 65) + `"]}`, "want an id of 1 to 64 bytes"},
		{"unterminated", `{"shed_percent":1`, "invalid switches"},
		{"line id upper case", `{"lines_off":["Games"]}`, `lines_off[0] "Games"`},
		{"line id with slash", `{"lines_off":["a/b"]}`, "want a line id"},
		{"empty line id", `{"lines_off":[""]}`, "want a line id"},
		{"long line id", `{"lines_off":["` + strings.Repeat("a", 33) + `"]}`, "want a line id"},
		{"line listed twice", `{"lines_off":["games","games"]}`, "listed twice"},
		{"lines_off null", `{"lines_off":null}`, `field "lines_off": null`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseSwitches([]byte(tt.body))
			if err == nil {
				t.Fatalf("ParseSwitches(%s) = %+v, want an error", tt.body, s)
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.wantInMessage) {
				t.Fatalf("ParseSwitches(%s) = %v, want ErrInvalid mentioning %q", tt.body, err, tt.wantInMessage)
			}
		})
	}
}

// TestSetRefusesInvalid keeps the switches in force when Set is given bad
// ones.
func TestSetRefusesInvalid(t *testing.T) {
	g := NewGuard(nil)
	if err := g.Set(&Switches{ShedPercent: 100}); err != nil {
		t.Fatal(err)
	}
	if err := g.Set(&Switches{ShedPercent: 200}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Set(shed 200) = %v, want ErrInvalid", err)
	}
	if got := g.Switches().ShedPercent; got != 100 {
		t.Fatalf("after a refused Set, ShedPercent = %d, want 100 still", got)
	}
	if err := g.Set(nil); err != nil || !g.Admit(1, "u", t0).OK() {
		t.Fatalf("Set(nil) = %v; want every request admitted after it", err)
	}
}

func BenchmarkLimiterAllow(b *testing.B) {
	l := NewLimiter(1e6, 1e6, UserKeysMax)
	keys := make([]Key, 4096)
	for i := range keys {
		keys[i] = Key{App: 1, User: fmt.Sprintf("user-%06d", i)}
	}
	now := t0
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		l.Allow(keys[i%len(keys)], now)
		i++
	}
}

func BenchmarkGuardAdmit(b *testing.B) {
	g := NewGuard(nil)
	if err := g.Set(&Switches{ShedPercent: 1, UserRate: 1e6, UserBurst: 1e6, ClientRate: 1e9, ClientBurst: 1e9,
		ClosedRains: []string{"demo/rain/2"}}); err != nil {
		b.Fatal(err)
	}
	keys := make([]string, 4096)
	for i := range keys {
		keys[i] = fmt.Sprintf("user-%06d", i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		g.RainOpen("demo", "rain", 1)
		g.Admit(1, keys[i%len(keys)], t0)
		i++
	}
}
