package configstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// Source is what a Watcher reads; *Store implements it.
type Source interface {
	Seq(ctx context.Context) (uint64, error)
	Snapshot(ctx context.Context) (*Snapshot, error)
}

// WatchEveryDefault is how often a Watcher polls seq when Every is zero:
// a publish reaches every node within about this long plus one Snapshot.
const WatchEveryDefault = 200 * time.Millisecond

// Where a Watcher's applied configuration came from.
const (
	SourceStore = "store"
	SourceCache = "cache"
)

// Watcher keeps a node's configuration current: it polls the store's seq
// and, when it changed, reads a Snapshot and hands it to Apply. Whenever the
// store is unreachable or Apply rejects a snapshot, the node keeps serving
// what it applied last, and the last good snapshot is kept in CacheFile so
// that a node can start while the store is down.
type Watcher struct {
	Source Source
	// Every is the poll interval; WatchEveryDefault when zero.
	Every time.Duration
	// CacheFile holds the last applied snapshot (JSON, replaced
	// atomically); empty disables the cache.
	CacheFile string
	// Apply compiles and swaps in a snapshot; an error keeps the previous
	// configuration. It is called from Start and Run, never concurrently.
	Apply func(*Snapshot) error
	// OnPickup, when set, receives LastPickup after every applied snapshot
	// that carries a new history event (for a latency histogram).
	OnPickup func(time.Duration)
	Log      *slog.Logger
	Now      func() time.Time

	mu     sync.Mutex
	status WatchStatus
	// Owned by the goroutine in Start and Run:
	applied     *Snapshot // the snapshot serving now
	rejected    uint64    // seq of the last store snapshot Apply rejected,
	hasRejected bool      // not read again until seq moves
}

// WatchStatus is what a Watcher reports to operators.
type WatchStatus struct {
	// Seq is the seq of the applied snapshot.
	Seq uint64 `json:"seq"`
	// Source is SourceStore, or SourceCache while the node serves what
	// CacheFile held at start and the store has not been read since.
	Source    string    `json:"source"`
	AppliedAt time.Time `json:"applied_at"`
	// LastError is the latest failure to poll, read or apply; empty once a
	// poll succeeds and nothing newer is pending.
	LastError string `json:"last_error,omitempty"`
	// CacheError is the latest failure to write CacheFile; empty after a
	// successful write.
	CacheError string `json:"cache_error,omitempty"`
	// LastPickup is AppliedAt minus the newest history event's time among
	// the activities that changed: publish-to-applied latency. It compares
	// this node's clock with the publisher's, so clock skew shows in it.
	LastPickup time.Duration `json:"last_pickup"`
}

// Status returns the watcher's current status.
func (w *Watcher) Status() WatchStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.status
}

// Start loads the first configuration: from the store, or when the store
// fails or Apply rejects its snapshot, from CacheFile (logged as an error:
// the node serves a copy that may be stale). It fails only if neither
// gives a snapshot that Apply accepts.
func (w *Watcher) Start(ctx context.Context) error {
	if w.Source == nil || w.Apply == nil {
		return errors.New("configstore: Watcher needs a Source and an Apply")
	}
	snap, err := w.Source.Snapshot(ctx)
	if err == nil {
		if err = w.apply(snap, SourceStore); err == nil {
			return nil
		}
	} else {
		w.setError("read snapshot: %v", err)
	}
	storeErr := err
	if w.CacheFile == "" {
		return fmt.Errorf("configstore: no configuration: store: %w (no cache file)", storeErr)
	}
	cached, err := readCache(w.CacheFile)
	if err == nil {
		err = w.apply(cached, SourceCache)
	}
	if err != nil {
		return fmt.Errorf("configstore: no configuration: store: %w; cache %s: %w", storeErr, w.CacheFile, err)
	}
	w.log().Error("configstore: serving the cached configuration, the store's could not be used",
		"cache", w.CacheFile, "seq", cached.Seq, "read_at", cached.ReadAt, "store_error", storeErr)
	w.mu.Lock()
	w.status.LastError = "serving the cache: store: " + storeErr.Error()
	w.mu.Unlock()
	return nil
}

// Run polls until ctx is done. Call it after Start returned, never
// concurrently with Start or another Run.
func (w *Watcher) Run(ctx context.Context) {
	every := w.Every
	if every <= 0 {
		every = WatchEveryDefault
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.poll(ctx)
		}
	}
}

// poll is one round of Run: read seq, and read and apply a snapshot when
// seq moved (or when the node serves the cache and the store is back).
func (w *Watcher) poll(ctx context.Context) {
	seq, err := w.Source.Seq(ctx)
	if err != nil {
		w.setError("read seq: %v", err)
		return
	}
	serving := w.Status()
	if serving.Source == SourceStore && seq == serving.Seq {
		w.setError("")
		return
	}
	if w.hasRejected && seq == w.rejected {
		return // LastError still says why; wait for the next change
	}
	snap, err := w.Source.Snapshot(ctx)
	if err != nil {
		w.setError("read snapshot: %v", err)
		return
	}
	_ = w.apply(snap, SourceStore) // apply records its failure in LastError
}

// apply hands snap to Apply and, when accepted, makes it the serving
// snapshot and writes it to the cache (unless it came from there).
func (w *Watcher) apply(snap *Snapshot, source string) error {
	if err := w.Apply(snap); err != nil {
		if source == SourceStore {
			w.rejected, w.hasRejected = snap.Seq, true
		}
		w.setError("apply seq %d from %s: %v", snap.Seq, source, err)
		w.log().Error("configstore: configuration rejected, keeping the previous one",
			"seq", snap.Seq, "source", source, "error", err)
		return err
	}
	now := w.now()
	newest := changedNewest(w.applied, snap)
	w.applied = snap
	if source == SourceStore {
		w.hasRejected = false
	}
	// The cache is written before the status moves, so that a status
	// showing seq N means the cache holds N (or CacheError says why not).
	cacheErr := ""
	if source == SourceStore && w.CacheFile != "" {
		if err := writeCache(w.CacheFile, snap); err != nil {
			cacheErr = err.Error()
			w.log().Warn("configstore: cache not written", "error", err)
		}
	}
	var pickup time.Duration
	if !newest.IsZero() {
		pickup = now.Sub(newest)
		if w.OnPickup != nil {
			w.OnPickup(pickup)
		}
	}
	w.mu.Lock()
	back := w.status.Seq > snap.Seq && source == SourceStore
	w.status.Seq, w.status.Source, w.status.AppliedAt, w.status.LastError = snap.Seq, source, now, ""
	if source == SourceStore {
		w.status.CacheError = cacheErr
	}
	if !newest.IsZero() {
		w.status.LastPickup = pickup
	}
	w.mu.Unlock()
	if back {
		w.log().Warn("configstore: the store's seq went back (restored or replaced store?)", "seq", snap.Seq)
	}
	w.log().Info("configstore: configuration applied", "seq", snap.Seq, "source", source, "pickup", pickup)
	return nil
}

// changedNewest returns the newest history event among the activities and
// documents of next whose newest event is not the one in prev (every mutation but the
// switches adds one), and the switches' time if they changed; zero when
// nothing carries a new time, or for the first snapshot (prev nil), whose
// events may be days old and say nothing of pickup latency.
func changedNewest(prev, next *Snapshot) time.Time {
	if prev == nil {
		return time.Time{}
	}
	// Activities and documents may share an id: keyed by space.
	before := map[string]time.Time{}
	prev.eachHead(func(key string, h *Head) { before[key] = h.Newest() })
	var newest time.Time
	next.eachHead(func(key string, h *Head) {
		if at := h.Newest(); !at.Equal(before[key]) && at.After(newest) {
			newest = at
		}
	})
	if !next.SwitchesAt.Equal(prev.SwitchesAt) && next.SwitchesAt.After(newest) {
		newest = next.SwitchesAt
	}
	return newest
}

// eachHead calls fn with every head of the snapshot, activities' and
// documents', keyed by space and id.
func (snap *Snapshot) eachHead(fn func(key string, h *Head)) {
	for _, a := range snap.Activities {
		fn(activities.noun+"/"+a.Head.Activity, a.Head)
	}
	for _, d := range snap.Documents {
		fn(documents.noun+"/"+d.Head.Activity, d.Head)
	}
}

func (w *Watcher) setError(format string, args ...any) {
	msg := ""
	if format != "" {
		msg = fmt.Sprintf(format, args...)
	}
	w.mu.Lock()
	changed := w.status.LastError != msg
	w.status.LastError = msg
	w.mu.Unlock()
	if changed && msg != "" {
		// Logged when it changes, not on every poll of an outage.
		w.log().Warn("configstore: configuration not updated", "error", msg)
	}
}

func (w *Watcher) log() *slog.Logger {
	if w.Log == nil {
		return slog.Default()
	}
	return w.Log
}

func (w *Watcher) now() time.Time {
	if w.Now == nil {
		return time.Now()
	}
	return w.Now()
}

// writeCache replaces path with snap so that a crash leaves the old file or
// the new one, never a torn one: a temporary file in the same directory is
// written and synced, renamed over path, and the directory synced.
func writeCache(path string, snap *Snapshot) (err error) {
	data, err := json.Marshal(snap)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("configstore: cache: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(f.Name())
			err = fmt.Errorf("configstore: cache %s: %w", path, err)
		}
	}()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// readCache reads a snapshot written by writeCache.
func readCache(path string) (*Snapshot, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	snap := &Snapshot{}
	if err := json.Unmarshal(data, snap); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	for _, a := range append(slices.Clip(snap.Activities), snap.Documents...) {
		if a.Head == nil {
			return nil, fmt.Errorf("%w: activity or document without head", ErrCorrupt)
		}
		if err := a.Head.check(a.Head.Activity); err != nil {
			return nil, err
		}
		if (a.Live == nil) != (a.Head.Live == 0) || (a.Canary == nil) != (a.Head.Canary == nil) {
			return nil, fmt.Errorf("%w: %s: served versions do not match the head", ErrCorrupt, a.Head.Activity)
		}
	}
	return snap, nil
}

var _ Source = (*Store)(nil)
