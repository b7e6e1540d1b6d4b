package configstore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// flakySource is a Store that fails on demand and counts its calls.
type flakySource struct {
	store     *Store
	down      atomic.Bool
	seqs      atomic.Int64
	snapshots atomic.Int64
}

var errDown = errors.New("store down (test)")

func (f *flakySource) Seq(ctx context.Context) (uint64, error) {
	f.seqs.Add(1)
	if f.down.Load() {
		return 0, errDown
	}
	return f.store.Seq(ctx)
}

func (f *flakySource) Snapshot(ctx context.Context) (*Snapshot, error) {
	f.snapshots.Add(1)
	if f.down.Load() {
		return nil, errDown
	}
	return f.store.Snapshot(ctx)
}

// node is what a node does with snapshots: it refuses any body holding
// "bad" and otherwise serves the live body of activity "act".
type node struct {
	mu      sync.Mutex
	applies int
	serving string
	pickups []time.Duration
}

func (n *node) apply(snap *Snapshot) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.applies++
	serving := ""
	for _, a := range snap.Activities {
		for _, v := range []*Version{a.Live, a.Canary} {
			if v != nil && bytes.Contains(v.Body, []byte("bad")) {
				return errors.New("cannot compile a bad body")
			}
		}
		if a.Head.Activity == "act" && a.Live != nil {
			serving = string(a.Live.Body)
		}
	}
	n.serving = serving
	return nil
}

func (n *node) state() (applies int, serving string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.applies, n.serving
}

func (n *node) pickup(d time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.pickups = append(n.pickups, d)
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// waitUntil polls cond every few milliseconds and fails the test if it
// does not hold within ten seconds.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for !cond() {
		select {
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// watchSetup is a store with activity "act" at version 1 live, a flaky
// source over it, and a watcher for a node, not started.
func watchSetup(t *testing.T) (*Store, *flakySource, *node, *Watcher) {
	t.Helper()
	s, _ := newTestStore(t)
	mustPut(t, s, "act", `{"v":1}`)
	if _, err := s.Publish(context.Background(), "act", 1, nil, "a"); err != nil {
		t.Fatal(err)
	}
	src := &flakySource{store: s}
	n := &node{}
	w := &Watcher{
		Source:    src,
		Every:     time.Millisecond,
		CacheFile: filepath.Join(t.TempDir(), "config-cache.json"),
		Apply:     n.apply,
		OnPickup:  n.pickup,
		Log:       quietLog(),
	}
	return s, src, n, w
}

// run starts w.Run until the test ends.
func run(t *testing.T, w *Watcher) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func TestWatcherAppliesPublish(t *testing.T) {
	s, _, n, w := watchSetup(t)
	ctx := context.Background()
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if st := w.Status(); st.Seq != 2 || st.Source != SourceStore || st.LastError != "" {
		t.Fatalf("after Start: %+v; want seq 2 from the store", st)
	}
	if _, serving := n.state(); serving != `{"v":1}` {
		t.Fatalf("serving %s after Start, want v1", serving)
	}
	run(t, w)
	mustPut(t, s, "act", `{"v":2}`)
	h, err := s.Publish(ctx, "act", 2, nil, "a")
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the publish to be applied", func() bool { return w.Status().Seq == 4 })
	if _, serving := n.state(); serving != `{"v":2}` {
		t.Errorf("serving %s after publish, want v2", serving)
	}
	st := w.Status()
	if want := st.AppliedAt.Sub(h.Newest()); st.LastPickup != want {
		t.Errorf("LastPickup = %v, want AppliedAt - publish time = %v", st.LastPickup, want)
	}
	n.mu.Lock()
	last := n.pickups[len(n.pickups)-1]
	n.mu.Unlock()
	if last != st.LastPickup {
		t.Errorf("OnPickup got %v, Status says %v", last, st.LastPickup)
	}
	// The cache holds what is served.
	cached, err := readCache(w.CacheFile)
	if err != nil || cached.Seq != 4 || string(cached.Activities[0].Live.Body) != `{"v":2}` {
		t.Errorf("cache = seq %d, %v; want seq 4 serving v2", cached.Seq, err)
	}
	entries, _ := os.ReadDir(filepath.Dir(w.CacheFile))
	if len(entries) != 1 {
		t.Errorf("cache dir holds %d files, want only the cache (no temporaries)", len(entries))
	}
}

func TestWatcherSkipsWhenSeqUnchanged(t *testing.T) {
	_, src, n, w := watchSetup(t)
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	snapshots := src.snapshots.Load()
	seqs := src.seqs.Load()
	run(t, w)
	waitUntil(t, "ten polls", func() bool { return src.seqs.Load() >= seqs+10 })
	if applies, _ := n.state(); applies != 1 {
		t.Errorf("Apply called %d times with seq unchanged, want once (Start)", applies)
	}
	if got := src.snapshots.Load(); got != snapshots {
		t.Errorf("Snapshot read %d more times with seq unchanged, want 0", got-snapshots)
	}
}

func TestWatcherKeepsConfigWhenApplyFails(t *testing.T) {
	s, src, n, w := watchSetup(t)
	ctx := context.Background()
	mustPut(t, s, "act", `{"v":"bad"}`) // seq 3; nothing serves it yet
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	run(t, w)
	if _, err := s.Publish(ctx, "act", 2, nil, "a"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the rejection", func() bool { return w.Status().LastError != "" })
	st := w.Status()
	if st.Seq != 3 || !strings.Contains(st.LastError, "cannot compile") {
		t.Errorf("after a rejected snapshot: %+v; want seq 3 kept and the apply error", st)
	}
	if _, serving := n.state(); serving != `{"v":1}` {
		t.Errorf("serving %s, want v1 kept", serving)
	}
	// The rejected seq is not read again and again.
	applies, _ := n.state()
	snapshots, seqs := src.snapshots.Load(), src.seqs.Load()
	waitUntil(t, "ten polls", func() bool { return src.seqs.Load() >= seqs+10 })
	if a, _ := n.state(); a != applies || src.snapshots.Load() != snapshots {
		t.Errorf("rejected seq read again: %d applies, %d snapshots; want %d, %d",
			a, src.snapshots.Load(), applies, snapshots)
	}
	cached, err := readCache(w.CacheFile)
	if err != nil || cached.Seq != 3 {
		t.Errorf("cache = %v, %v; want seq 3 (the rejected snapshot is not cached)", cached, err)
	}

	// A good publish is picked up and clears the error.
	if _, err := s.Rollback(ctx, "act", 1, "a"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the rollback", func() bool { return w.Status().Seq == 5 })
	if st := w.Status(); st.LastError != "" {
		t.Errorf("LastError = %q after a good snapshot, want empty", st.LastError)
	}
}

func TestWatcherStartsFromCache(t *testing.T) {
	s, src, _, w := watchSetup(t)
	ctx := context.Background()
	if err := w.Start(ctx); err != nil { // writes the cache
		t.Fatal(err)
	}

	// A second node starts while the store is down.
	src.down.Store(true)
	n2 := &node{}
	w2 := &Watcher{Source: src, Every: time.Millisecond, CacheFile: w.CacheFile, Apply: n2.apply, Log: quietLog()}
	if err := w2.Start(ctx); err != nil {
		t.Fatalf("Start with the store down and a cache: %v", err)
	}
	st := w2.Status()
	if st.Source != SourceCache || st.Seq != 2 || !strings.Contains(st.LastError, errDown.Error()) {
		t.Errorf("started from cache: %+v; want source cache, seq 2, the store's error", st)
	}
	if _, serving := n2.state(); serving != `{"v":1}` {
		t.Errorf("serving %s from cache, want v1", serving)
	}

	// The store comes back with a newer config.
	mustPut(t, s, "act", `{"v":2}`)
	if _, err := s.Publish(ctx, "act", 2, nil, "a"); err != nil {
		t.Fatal(err)
	}
	run(t, w2)
	src.down.Store(false)
	waitUntil(t, "the store's config", func() bool { return w2.Status().Source == SourceStore })
	if st := w2.Status(); st.Seq != 4 || st.LastError != "" {
		t.Errorf("after the store came back: %+v; want seq 4, no error", st)
	}
	if _, serving := n2.state(); serving != `{"v":2}` {
		t.Errorf("serving %s, want v2", serving)
	}
}

func TestWatcherStartFails(t *testing.T) {
	_, src, n, w := watchSetup(t)
	ctx := context.Background()
	src.down.Store(true)
	if err := w.Start(ctx); !errors.Is(err, errDown) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Start with the store down and no cache file = %v; want both causes", err)
	}
	if err := os.WriteFile(w.CacheFile, []byte(`{"seq":3,"activities":[{"head":{"activity":"act"`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := w.Start(ctx); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Start with a torn cache file = %v, want ErrCorrupt", err)
	}
	w.CacheFile = ""
	if err := w.Start(ctx); !errors.Is(err, errDown) {
		t.Errorf("Start with the store down and no cache configured = %v, want the store's error", err)
	}
	if applies, _ := n.state(); applies != 0 {
		t.Errorf("Apply called %d times, want 0", applies)
	}
	if st := w.Status(); st.Source != "" || st.Seq != 0 {
		t.Errorf("status after failed starts: %+v", st)
	}
}

func TestWatcherRidesOutStoreOutage(t *testing.T) {
	s, src, n, w := watchSetup(t)
	ctx := context.Background()
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	run(t, w)
	src.down.Store(true)
	waitUntil(t, "the outage to show", func() bool { return w.Status().LastError != "" })
	mustPut(t, s, "act", `{"v":2}`)
	if _, err := s.Publish(ctx, "act", 2, nil, "a"); err != nil {
		t.Fatal(err)
	}
	seqs := src.seqs.Load()
	waitUntil(t, "ten polls", func() bool { return src.seqs.Load() >= seqs+10 })
	st := w.Status()
	if st.Seq != 2 || st.Source != SourceStore || !strings.Contains(st.LastError, errDown.Error()) {
		t.Errorf("during the outage: %+v; want seq 2 kept and the store's error", st)
	}
	if applies, serving := n.state(); applies != 1 || serving != `{"v":1}` {
		t.Errorf("during the outage: %d applies serving %s; want 1, v1", applies, serving)
	}
	src.down.Store(false)
	waitUntil(t, "recovery", func() bool { return w.Status().Seq == 4 })
	if st := w.Status(); st.LastError != "" {
		t.Errorf("LastError = %q after recovery", st.LastError)
	}
	if _, serving := n.state(); serving != `{"v":2}` {
		t.Errorf("serving %s after recovery, want v2", serving)
	}
}

// TestChangedNewest covers the pickup time: only activities whose newest
// event moved count, switches count, and a first snapshot has none.
func TestChangedNewest(t *testing.T) {
	at := func(s int) time.Time { return time.Date(2026, 1, 1, 0, 0, s, 0, time.UTC) }
	act := func(id string, s ...int) ActivitySnapshot {
		h := &Head{Activity: id}
		for _, x := range s {
			h.History = append(h.History, Event{At: at(x)})
		}
		return ActivitySnapshot{Head: h}
	}
	prev := &Snapshot{Activities: []ActivitySnapshot{act("a", 1, 50), act("b", 2)}, SwitchesAt: at(3)}
	for _, c := range []struct {
		name string
		prev *Snapshot
		next *Snapshot
		want time.Time
	}{
		{"first snapshot", nil, prev, time.Time{}},
		{"nothing new", prev, prev, time.Time{}},
		{"b moved, a newer but unchanged", prev, &Snapshot{Activities: []ActivitySnapshot{act("a", 1, 50), act("b", 2, 10)}, SwitchesAt: at(3)}, at(10)},
		{"new activity", prev, &Snapshot{Activities: []ActivitySnapshot{act("a", 1, 50), act("b", 2), act("c", 7)}, SwitchesAt: at(3)}, at(7)},
		{"switches", prev, &Snapshot{Activities: prev.Activities, SwitchesAt: at(9)}, at(9)},
		{"new document of an activity's id", prev, &Snapshot{Activities: prev.Activities, Documents: []ActivitySnapshot{act("a", 4)}, SwitchesAt: at(3)}, at(4)},
	} {
		if got := changedNewest(c.prev, c.next); !got.Equal(c.want) {
			t.Errorf("changedNewest(%s) = %v, want %v", c.name, got, c.want)
		}
	}
}

// TestCacheKeepsDocuments: the documents ride the cache file like the
// activities, and a cached document whose served versions do not match
// its head is refused.
func TestCacheKeepsDocuments(t *testing.T) {
	s, _, _, w := watchSetup(t)
	ctx := context.Background()
	d := s.Documents()
	mustPut(t, d, "presentation", `{"slots":1}`)
	mustPut(t, d, "presentation", `{"slots":2}`)
	if _, err := d.Publish(ctx, "presentation", 1, nil, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Publish(ctx, "presentation", 2, &Canary{ActIDs: []uint64{9}}, "a"); err != nil {
		t.Fatal(err)
	}
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	cached, err := readCache(w.CacheFile)
	if err != nil {
		t.Fatal(err)
	}
	doc := cached.Document("presentation")
	if doc == nil || doc.Live == nil || doc.Canary == nil || string(doc.Live.Body) != `{"slots":1}` || string(doc.Canary.Body) != `{"slots":2}` {
		t.Fatalf("cached document = %+v, want live v1 and canary v2", doc)
	}
	doc.Canary = nil
	if err := writeCache(w.CacheFile, cached); err != nil {
		t.Fatal(err)
	}
	if _, err := readCache(w.CacheFile); !errors.Is(err, ErrCorrupt) {
		t.Errorf("cache with a document missing its canary version: %v, want ErrCorrupt", err)
	}
}
