package lines_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"redrain/lines"
	"redrain/storage"
	"redrain/storage/storagetest"
)

// waitWithin bounds every wait of these tests for the pipeline (Kafka,
// the consumer group's first join, pulls) to reach a state.
const waitWithin = 60 * time.Second

// line is a business line served by a real HTTP test server: it records
// every request and answers as its handler says.
type line struct {
	srv      *httptest.Server
	mu       sync.Mutex
	requests []request
	inFlight atomic.Int64
	maxIn    atomic.Int64
	answer   func(n int, user string) (status int, body string) // n: the request's number from 0
	block    chan struct{}                                      // when set, requests wait for it or their cancel
}

type request struct {
	at   time.Time
	user string
}

func newLine(t testing.TB, answer func(n int, user string) (int, string)) *line {
	l := &line{answer: answer}
	l.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		in := l.inFlight.Add(1)
		defer l.inFlight.Add(-1)
		for {
			m := l.maxIn.Load()
			if in <= m || l.maxIn.CompareAndSwap(m, in) {
				break
			}
		}
		user := r.URL.Query().Get("user_id")
		if r.URL.Query().Get("app_id") == "" || user == "" {
			http.Error(w, "no app_id or user_id", http.StatusBadRequest)
			return
		}
		l.mu.Lock()
		n := len(l.requests)
		l.requests = append(l.requests, request{time.Now(), user})
		l.mu.Unlock()
		if l.block != nil {
			select {
			case <-l.block:
			case <-r.Context().Done():
				return
			}
		}
		status, body := l.answer(n, user)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(l.srv.Close)
	return l
}

func (l *line) requestsOf(user string) []request {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []request
	for _, r := range l.requests {
		if user == "" || r.user == user {
			out = append(out, r)
		}
	}
	return out
}

func assets(user string, amount int64) string {
	return fmt.Sprintf(`{"assets":[{"id":"gold","name":"Gold of %s","amount":%d}]}`, user, amount)
}

func ok(_ int, user string) (int, string) { return 200, assets(user, 7) }

// rig is a Syncer on the embedded broker and TiKV test cluster.
type rig struct {
	s    *lines.Syncer
	kv   *storage.TiKV
	now  atomic.Int64 // unix ns the Syncer's clock reads; 0: the real clock
	stop context.CancelFunc
}

func newRig(t *testing.T, ls ...lines.Line) *rig {
	t.Helper()
	kf := storagetest.Kafka(t, "", 1)
	if err := kf.EnsureTopic(lines.Topic, 4); err != nil {
		t.Fatal(err)
	}
	r := &rig{kv: storagetest.TiKV(t, "")}
	s, err := lines.New(lines.Config{Lines: ls, Brokers: kf.Brokers, TiKV: r.kv, Backoff: 20 * time.Millisecond,
		Clock: func() time.Time {
			if ns := r.now.Load(); ns != 0 {
				return time.Unix(0, ns)
			}
			return time.Now()
		}})
	if err != nil {
		t.Fatal(err)
	}
	r.s = s
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	r.stop = func() { cancel(); <-done; s.Close() }
	t.Cleanup(r.stop)
	return r
}

func lineOf(id, url string) lines.Line {
	return lines.Line{ID: id, PullURL: url, Rate: 1000, Burst: 100, Concurrency: 4, WindowMs: 60_000, TimeoutMs: 2000}
}

func (r *rig) notify(t *testing.T, line string, app uint32, user string) {
	t.Helper()
	if err := r.s.Notify(lines.Notice{Line: line, App: app, User: user}); err != nil {
		t.Fatalf("Notify(%s, %d, %s): %v", line, app, user, err)
	}
}

// waitStats polls line's counters until cond holds.
func (r *rig) waitStats(t *testing.T, line string, what string, cond func(lines.LineStats) bool) lines.LineStats {
	t.Helper()
	deadline := time.Now().Add(waitWithin)
	for {
		st := r.s.Stats(line)
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("line %s: %s not reached within %v: %+v", line, what, waitWithin, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (r *rig) snapshot(t *testing.T, app uint32, user, line string) (lines.Snapshot, bool) {
	t.Helper()
	snaps, err := r.s.Snapshots(context.Background(), app, user)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range snaps {
		if s.Line == line {
			return s, true
		}
	}
	return lines.Snapshot{}, false
}

// TestRetriesThenSuccess: a line that answers 500 twice, then the assets:
// two retries, each after a longer backoff, then the snapshot.
func TestRetriesThenSuccess(t *testing.T) {
	l := newLine(t, func(n int, user string) (int, string) {
		if n < 2 {
			return 500, `{"error":"down"}`
		}
		return ok(n, user)
	})
	r := newRig(t, lineOf("games", l.srv.URL))
	r.notify(t, "games", 1, "u1")
	st := r.waitStats(t, "games", "one pull", func(s lines.LineStats) bool { return s.Pulled == 1 })
	if st.Retried != 2 || st.Failed != 0 {
		t.Errorf("stats %+v, want 2 retries and no failure", st)
	}
	reqs := l.requestsOf("u1")
	if len(reqs) != 3 {
		t.Fatalf("the line saw %d requests, want 3", len(reqs))
	}
	// Backoff is 20 ms, then 40 ms (each plus up to half as jitter).
	if g := reqs[1].at.Sub(reqs[0].at); g < 20*time.Millisecond {
		t.Errorf("first retry %v after the first try, want at least the 20ms backoff", g)
	}
	if g := reqs[2].at.Sub(reqs[1].at); g < 40*time.Millisecond {
		t.Errorf("second retry %v after the first retry, want at least the doubled 40ms backoff", g)
	}
	s, found := r.snapshot(t, 1, "u1", "games")
	if !found || s.Stale || !s.Pushed || s.PulledAt.IsZero() || len(s.Assets) != 1 || s.Assets[0] != (lines.Asset{ID: "gold", Name: "Gold of u1", Amount: 7}) {
		t.Errorf("snapshot %+v (found %v), want the line's assets, pushed, not stale", s, found)
	}
}

// TestAllAttemptsFailKeepLast: once a line fails every attempt, the failure
// is counted and the last good snapshot is still served, marked stale.
func TestAllAttemptsFailKeepLast(t *testing.T) {
	var failing atomic.Bool
	l := newLine(t, func(n int, user string) (int, string) {
		if failing.Load() {
			return 503, "unavailable"
		}
		return ok(n, user)
	})
	ln := lineOf("games", l.srv.URL)
	r := newRig(t, ln)
	r.notify(t, "games", 1, "u1")
	r.waitStats(t, "games", "first pull", func(s lines.LineStats) bool { return s.Pulled == 1 })
	good, _ := r.snapshot(t, 1, "u1", "games")
	failing.Store(true)
	r.now.Store(time.Now().Add(ln.Window()).UnixNano()) // past the window
	r.notify(t, "games", 1, "u1")
	st := r.waitStats(t, "games", "a failed pull", func(s lines.LineStats) bool { return s.Failed == 1 })
	if st.Pulled != 1 || st.Retried != 2 {
		t.Errorf("stats %+v, want 1 pull, 2 retries", st)
	}
	if n := len(l.requestsOf("u1")); n != 1+lines.AttemptsMax {
		t.Errorf("the line saw %d requests, want %d", n, 1+lines.AttemptsMax)
	}
	// The failure is counted once its record is written.
	s, _ := r.snapshot(t, 1, "u1", "games")
	if !s.Stale || !slices.Equal(s.Assets, good.Assets) || !s.PulledAt.Equal(good.PulledAt) {
		t.Errorf("after the failure: %+v, want the last good %+v marked stale", s, good)
	}
}

// TestStall: a line that answers later than its timeout fails each of the
// attempts on the timeout; the user's snapshot says it is stale.
func TestStall(t *testing.T) {
	l := newLine(t, ok)
	l.block = make(chan struct{}) // never closed: every request stalls
	ln := lineOf("games", l.srv.URL)
	ln.TimeoutMs = 50
	r := newRig(t, ln)
	r.notify(t, "games", 1, "u1")
	st := r.waitStats(t, "games", "a failed pull", func(s lines.LineStats) bool { return s.Failed == 1 })
	if st.Pulled != 0 || st.Retried != lines.AttemptsMax-1 {
		t.Errorf("stats %+v, want no pull and %d retries", st, lines.AttemptsMax-1)
	}
	if n := len(l.requestsOf("u1")); n != lines.AttemptsMax {
		t.Errorf("the line saw %d requests, want %d", n, lines.AttemptsMax)
	}
	s, found := r.snapshot(t, 1, "u1", "games")
	if !found || !s.Stale || len(s.Assets) != 0 || !s.PulledAt.IsZero() || !s.Pushed {
		t.Errorf("snapshot %+v (found %v), want a stale one with no assets, pushed", s, found)
	}
	if raw, err := json.Marshal(s); err != nil || string(raw) != `{"line":"games","assets":[],"pushed":true,"stale":true}` {
		t.Errorf("snapshot as JSON: %s, %v", raw, err)
	}
}

// TestFlood: a burst of notices for many users is pulled within the line's
// rate (never more than burst + rate·T + its concurrency in any window of
// T at the server) and concurrency; many notices for one user within the
// window make one pull.
func TestFlood(t *testing.T) {
	l := newLine(t, ok)
	ln := lineOf("shop", l.srv.URL)
	ln.Rate, ln.Burst, ln.Concurrency = 40, 4, 3
	r := newRig(t, ln)
	const users = 100
	var wg sync.WaitGroup
	for i := range users {
		wg.Go(func() { r.notify(t, "shop", 2, fmt.Sprintf("f%03d", i)) })
	}
	const repeats = 30
	for range repeats {
		wg.Go(func() { r.notify(t, "shop", 2, "hot") })
	}
	wg.Wait()
	st := r.waitStats(t, "shop", "every user pulled once", func(s lines.LineStats) bool {
		return s.Pulled == users+1 && s.Deduped == repeats-1
	})
	if st.RateLimited == 0 || st.Failed != 0 || st.Dropped != 0 {
		t.Errorf("stats %+v: want pulls that waited for the rate, no failure, nothing dropped", st)
	}
	if n := len(l.requestsOf("hot")); n != 1 {
		t.Errorf("%d notices for one user within the window: %d pulls, want 1", repeats, n)
	}
	if m := l.maxIn.Load(); m > int64(ln.Concurrency) {
		t.Errorf("%d pulls in flight at once, want at most %d", m, ln.Concurrency)
	}
	reqs := l.requestsOf("")
	const window = time.Second
	limit := ln.Burst + int(ln.Rate*window.Seconds()) + ln.Concurrency
	for i := range reqs {
		n := 0
		for _, q := range reqs[i:] {
			if q.at.Sub(reqs[i].at) < window {
				n++
			}
		}
		if n > limit {
			t.Fatalf("%d requests within %v from request %d, more than %d (burst %d + rate %g/s + concurrency %d)",
				n, window, i, limit, ln.Burst, ln.Rate, ln.Concurrency)
		}
	}
}

// TestSwitchOff: an operator switching a line off stops its pulls (notices
// counted and skipped) and marks its snapshots stale; switched on again it
// is pulled.
func TestSwitchOff(t *testing.T) {
	l := newLine(t, ok)
	r := newRig(t, lineOf("games", l.srv.URL))
	r.notify(t, "games", 1, "u1")
	r.waitStats(t, "games", "first pull", func(s lines.LineStats) bool { return s.Pulled == 1 })
	r.s.SetOff([]string{"games", "not-here"})
	r.notify(t, "games", 1, "u2")
	r.notify(t, "games", 1, "u3")
	r.waitStats(t, "games", "notices skipped", func(s lines.LineStats) bool { return s.SkippedOff == 2 })
	if n := len(l.requestsOf("")); n != 1 {
		t.Errorf("the line saw %d requests while off, want only the first pull", n)
	}
	if s, _ := r.snapshot(t, 1, "u1", "games"); !s.Stale || len(s.Assets) != 1 {
		t.Errorf("snapshot of an off line %+v, want its assets marked stale", s)
	}
	r.s.Entered(1, "u1")
	r.s.SetOff(nil)
	r.notify(t, "games", 1, "u4")
	r.waitStats(t, "games", "pull after on", func(s lines.LineStats) bool { return s.Pulled == 2 })
	if s, _ := r.snapshot(t, 1, "u1", "games"); s.Stale {
		t.Errorf("snapshot once on again %+v, want not stale", s)
	}
}

// TestEnteredPushPull: a wallet entry pulls again the lines that pushed for
// the user before, once their window is over, and no other line.
func TestEnteredPushPull(t *testing.T) {
	var amount atomic.Int64
	la := newLine(t, func(_ int, user string) (int, string) { return 200, assets(user, amount.Add(1)) })
	lb := newLine(t, ok)
	a, b := lineOf("games", la.srv.URL), lineOf("shop", lb.srv.URL)
	r := newRig(t, a, b)
	base := time.Now()
	r.now.Store(base.UnixNano())
	r.notify(t, "games", 1, "u1")
	r.notify(t, "shop", 1, "other")
	r.waitStats(t, "games", "pushed pull", func(s lines.LineStats) bool { return s.Pulled == 1 })
	r.waitStats(t, "shop", "pushed pull", func(s lines.LineStats) bool { return s.Pulled == 1 })

	r.s.Entered(1, "u1") // within the window: nothing
	r.waitStats(t, "games", "entry deduped", func(s lines.LineStats) bool { return s.Deduped == 1 })
	r.now.Store(base.Add(a.Window()).UnixNano())
	r.s.Entered(1, "u1")
	r.s.Entered(1, "nobody")
	r.waitStats(t, "games", "pull on entry", func(s lines.LineStats) bool { return s.Pulled == 2 })
	if n := len(lb.requestsOf("u1")); n != 0 {
		t.Errorf("a line that never pushed for the user was pulled %d times on entry", n)
	}
	s, _ := r.snapshot(t, 1, "u1", "games")
	if len(s.Assets) != 1 || s.Assets[0].Amount != 2 || !s.Pushed || !s.PulledAt.Equal(time.Unix(0, r.now.Load()).Truncate(time.Millisecond)) {
		t.Errorf("snapshot after entry %+v, want the second pull's assets (amount 2), still pushed", s)
	}
}

// TestLatestOnly: each pull replaces the stored snapshot; one key per
// (line, user) is all the store holds.
func TestLatestOnly(t *testing.T) {
	l := newLine(t, func(n int, user string) (int, string) {
		if n == 0 {
			return 200, `{"assets":[{"id":"gold","name":"Gold","amount":1},{"id":"gem","name":"Gem","amount":3}]}`
		}
		return 200, `{"assets":[{"id":"gold","name":"Gold","amount":5}]}`
	})
	ln := lineOf("games", l.srv.URL)
	r := newRig(t, ln)
	base := time.Now()
	r.now.Store(base.UnixNano())
	r.notify(t, "games", 3, "u/1") // a '/' in a user id fits the key
	r.waitStats(t, "games", "first pull", func(s lines.LineStats) bool { return s.Pulled == 1 })
	r.now.Store(base.Add(ln.Window()).UnixNano())
	r.notify(t, "games", 3, "u/1")
	r.waitStats(t, "games", "second pull", func(s lines.LineStats) bool { return s.Pulled == 2 })
	s, _ := r.snapshot(t, 3, "u/1", "games")
	if want := []lines.Asset{{ID: "gold", Name: "Gold", Amount: 5}}; !slices.Equal(s.Assets, want) {
		t.Errorf("assets %+v, want only the latest %+v", s.Assets, want)
	}
	var keys []string
	err := r.kv.Scan(context.Background(), []byte("rr/line/"), storage.PrefixEnd([]byte("rr/line/")), func(k, _ []byte) (bool, error) {
		keys = append(keys, string(k))
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{string(lines.Key("games", 3, "u/1"))}; !slices.Equal(keys, want) {
		t.Errorf("stored keys %q, want %q", keys, want)
	}
	if got := string(lines.Key("games", 3, "u/1")); got != "rr/line/games/00000003/u/1" {
		t.Errorf("Key = %q", got)
	}
}

// TestNotifyRefused: an unknown line or a notice without a user queues
// nothing.
func TestNotifyRefused(t *testing.T) {
	l := newLine(t, ok)
	r := newRig(t, lineOf("games", l.srv.URL))
	for _, n := range []lines.Notice{{Line: "nope", App: 1, User: "u"}, {Line: "games", App: 0, User: "u"},
		{Line: "games", App: 1}, {Line: "games", App: 1, User: strings.Repeat("x", 65)}} {
		err := r.s.Notify(n)
		if err == nil || (!errors.Is(err, lines.ErrUnknownLine) && !errors.Is(err, lines.ErrNotice)) {
			t.Errorf("Notify(%+v) = %v, want a refusal", n, err)
		}
	}
	r.notify(t, "games", 1, "u")
	r.waitStats(t, "games", "the good notice's pull", func(s lines.LineStats) bool { return s.Pulled == 1 })
	if n := len(l.requestsOf("")); n != 1 {
		t.Errorf("the line saw %d requests, want 1", n)
	}
}

// TestSwitchOffMidRetry: a line switched off while a pull of it waits to
// retry is not asked again, and the pull is neither a failure nor a
// snapshot.
func TestSwitchOffMidRetry(t *testing.T) {
	var r *rig
	l := newLine(t, func(int, string) (int, string) {
		r.s.SetOff([]string{"games"}) // the operator, while the first attempt is answered
		return 503, "down"
	})
	r = newRig(t, lineOf("games", l.srv.URL))
	r.notify(t, "games", 1, "u1")
	st := r.waitStats(t, "games", "the pull stopped by the switch", func(s lines.LineStats) bool { return s.SkippedOff == 1 })
	if st.Failed != 0 || st.Pulled != 0 || st.Retried != 0 {
		t.Errorf("stats %+v, want the pull stopped before its retry: no retry, failure or pull", st)
	}
	if n := len(l.requestsOf("u1")); n != 1 {
		t.Errorf("the line saw %d requests, want 1", n)
	}
	if _, found := r.snapshot(t, 1, "u1", "games"); found {
		t.Error("a pull stopped by the switch stored a snapshot")
	}
}
