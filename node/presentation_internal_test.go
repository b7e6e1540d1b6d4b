package node

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"redrain/configstore"
	"redrain/presentation"
	"redrain/storage/storagetest"
)

// downSource is the configuration store as a node's watcher reads it,
// unreachable on demand.
type downSource struct {
	store *configstore.Store
	down  atomic.Bool
	polls atomic.Int64
}

var errStoreDown = errors.New("store down (test)")

func (s *downSource) Seq(ctx context.Context) (uint64, error) {
	s.polls.Add(1)
	if s.down.Load() {
		return 0, errStoreDown
	}
	return s.store.Seq(ctx)
}

func (s *downSource) Snapshot(ctx context.Context) (*configstore.Snapshot, error) {
	if s.down.Load() {
		return nil, errStoreDown
	}
	return s.store.Snapshot(ctx)
}

// TestPresentationRidesOutStoreOutage: a node's presentation comes from
// the watcher's snapshots (presentationOf, as applyConfig compiles it);
// while the store is down the last good copy serves, though the store
// moved on; a node restarting meanwhile serves the cache file's copy,
// canary included, and the store's once it answers.
func TestPresentationRidesOutStoreOutage(t *testing.T) {
	ctx := context.Background()
	docs := configstore.New(storagetest.TiKV(t, ""), nil).Documents()
	put := func(name string) uint64 {
		t.Helper()
		v, err := docs.Put(ctx, presentation.DocumentID, []byte(`{"slots":[{"id":"a","asset":"cash","name":"`+name+`"}]}`), "test", "")
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	publish := func(v uint64, canary []uint64) {
		t.Helper()
		var c *configstore.Canary
		if canary != nil {
			c = &configstore.Canary{ActIDs: canary}
		}
		if _, err := docs.Publish(ctx, presentation.DocumentID, v, c, "test"); err != nil {
			t.Fatal(err)
		}
	}
	v1, v2, v3 := put("one"), put("two"), put("three")
	publish(v1, nil)
	publish(v2, []uint64{7})

	src := &downSource{store: docs}
	cache := filepath.Join(t.TempDir(), "config-cache.json")
	start := func() (*presentation.Presentation, *configstore.Watcher) {
		t.Helper()
		p := &presentation.Presentation{}
		w := &configstore.Watcher{Source: src, Every: time.Millisecond, CacheFile: cache,
			Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
			Apply: func(snap *configstore.Snapshot) error {
				live, canary, users, err := presentationOf(snap)
				if err == nil {
					p.Set(live, canary, users)
				}
				return err
			}}
		if err := w.Start(ctx); err != nil {
			t.Fatal(err)
		}
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { w.Run(runCtx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
		return p, w
	}
	// serves checks the versions act_ids 7 (the canary's) and 8 get.
	serves := func(what string, p *presentation.Presentation, want7, want8 uint64) {
		t.Helper()
		for act, want := range map[uint64]uint64{7: want7, 8: want8} {
			if _, v := p.For(act); v != want {
				t.Errorf("%s: act_id %d is served version %d, want %d", what, act, v, want)
			}
		}
	}
	await := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 10s", what)
			}
			time.Sleep(time.Millisecond)
		}
	}

	p, w := start()
	serves("from the store", p, v2, v1)

	// The store goes down and moves on meanwhile: polls fail, the last
	// good copy serves.
	src.down.Store(true)
	publish(v3, nil)
	polls := src.polls.Load()
	await("polls during the outage", func() bool { return src.polls.Load() > polls+5 && w.Status().LastError != "" })
	serves("store down", p, v2, v1)

	// A node restarting now serves its cache file's copy.
	p2, w2 := start()
	if st := w2.Status(); st.Source != configstore.SourceCache {
		t.Errorf("restart with the store down: source %q, want cache", st.Source)
	}
	serves("restarted from the cache", p2, v2, v1)

	// The store answers again: both serve what it holds now.
	src.down.Store(false)
	for _, pw := range []*presentation.Presentation{p, p2} {
		await("the store's newest", func() bool {
			_, v7 := pw.For(7)
			_, v8 := pw.For(8)
			return v7 == v3 && v8 == v3
		})
	}
	await("the restarted node's source", func() bool {
		st := w2.Status()
		return st.Source == configstore.SourceStore && st.LastError == ""
	})
}
