package configstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"redrain/storage"
	"redrain/storage/storagetest"
)

// testClock is a deterministic clock: every reading is one second later.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock() *testClock {
	return &testClock{t: time.Date(2026, 1, 28, 20, 0, 0, 0, time.UTC)}
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

func newTestStore(t *testing.T) (*Store, *storage.TiKV) {
	t.Helper()
	kv := storagetest.TiKV(t, "")
	return New(kv, newTestClock().Now), kv
}

// raw reads key in its own transaction; nil when missing.
func raw(t *testing.T, kv *storage.TiKV, key []byte) []byte {
	t.Helper()
	var v []byte
	txn, release, err := kv.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	v, err = storage.Get(context.Background(), txn, key)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func mustPut(t *testing.T, s *Store, activity, body string) uint64 {
	t.Helper()
	v, err := s.Put(context.Background(), activity, []byte(body), "admin-1", "note "+body)
	if err != nil {
		t.Fatalf("Put(%s, %s): %v", activity, body, err)
	}
	return v
}

func mustSeq(t *testing.T, s *Store) uint64 {
	t.Helper()
	seq, err := s.Seq(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

func actions(h *Head) string {
	var out []string
	for _, e := range h.History {
		out = append(out, fmt.Sprintf("%s:%d", e.Action, e.Version))
	}
	return strings.Join(out, " ")
}

func TestPutListsVersionsWithExactBodies(t *testing.T) {
	s, _ := newTestStore(t)
	ctx := context.Background()
	marshaled, _ := json.Marshal(map[string]any{"rains": []int{1, 2}, "name": "<red & rain>"})
	bodies := []struct{ in, want string }{
		{string(marshaled), string(marshaled)}, // what campaign gives: kept to the byte
		{"{\n  \"a\": [1, 2],\n  \"b\": \"x<y\"\n}\n", `{"a":[1,2],"b":"x\u003cy"}`},
		{`  "just a string"  `, `"just a string"`},
	}
	for i, b := range bodies {
		v, err := s.Put(ctx, "act-1", []byte(b.in), "admin-1", fmt.Sprintf("v%d", i+1))
		if err != nil || v != uint64(i+1) {
			t.Fatalf("Put #%d = %d, %v; want %d, nil", i+1, v, err, i+1)
		}
	}
	infos, err := s.Versions(ctx, "act-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != len(bodies) {
		t.Fatalf("Versions = %d entries, want %d", len(infos), len(bodies))
	}
	for i, b := range bodies {
		info := infos[i]
		if info.Activity != "act-1" || info.Version != uint64(i+1) || info.By != "admin-1" ||
			info.Note != fmt.Sprintf("v%d", i+1) || info.BodyBytes != len(b.want) || info.CreatedAt.IsZero() {
			t.Errorf("Versions[%d] = %+v", i, info)
		}
		got, err := s.Version(ctx, "act-1", uint64(i+1))
		if err != nil {
			t.Fatal(err)
		}
		if string(got.Body) != b.want {
			t.Errorf("Version(%d).Body = %s, want %s", i+1, got.Body, b.want)
		}
		if !got.CreatedAt.Equal(info.CreatedAt) {
			t.Errorf("Version(%d).CreatedAt = %v, Versions says %v", i+1, got.CreatedAt, info.CreatedAt)
		}
	}
	h, err := s.Head(ctx, "act-1")
	if err != nil {
		t.Fatal(err)
	}
	if h.Latest != 3 || h.Live != 0 || h.Canary != nil || actions(h) != "put:1 put:2 put:3" {
		t.Errorf("Head = latest %d live %d canary %v history %q; want 3, 0, nil, three puts",
			h.Latest, h.Live, h.Canary, actions(h))
	}
	if seq := mustSeq(t, s); seq != 3 {
		t.Errorf("Seq = %d after three puts, want 3", seq)
	}
	if _, err := s.Version(ctx, "act-1", 4); !errors.Is(err, ErrNotFound) {
		t.Errorf("Version(4) error = %v, want ErrNotFound", err)
	}
	if _, err := s.Versions(ctx, "act-2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Versions(unknown) error = %v, want ErrNotFound", err)
	}
	if _, err := s.Head(ctx, "act-2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Head(unknown) error = %v, want ErrNotFound", err)
	}
}

func TestPutRejectsBadInput(t *testing.T) {
	s, kv := newTestStore(t)
	ctx := context.Background()
	mustPut(t, s, "act", `{"v":1}`)
	head := raw(t, kv, storage.CfgHeadKey("act"))
	huge := `"` + strings.Repeat("x", bodyBytesMax) + `"`
	for _, c := range []struct {
		name, activity, body, by, note string
	}{
		{"empty activity", "", `{}`, "a", ""},
		{"slash in activity", "a/b", `{}`, "a", ""},
		{"activity too long", strings.Repeat("a", activityBytesMax+1), `{}`, "a", ""},
		{"non-ascii activity", "活动", `{}`, "a", ""},
		{"empty body", "act", ``, "a", ""},
		{"not json", "act", `{"v":`, "a", ""},
		{"two values", "act", `1 2`, "a", ""},
		{"body too large", "act", huge, "a", ""},
		{"no author", "act", `{}`, "", ""},
		{"note too long", "act", `{}`, "a", strings.Repeat("n", noteBytesMax+1)},
	} {
		t.Run(c.name, func(t *testing.T) {
			v, err := s.Put(ctx, c.activity, []byte(c.body), c.by, c.note)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Put = %d, %v; want ErrInvalid", v, err)
			}
		})
	}
	if seq := mustSeq(t, s); seq != 1 {
		t.Errorf("Seq = %d after rejected puts, want 1", seq)
	}
	if got := raw(t, kv, storage.CfgHeadKey("act")); !bytes.Equal(got, head) {
		t.Errorf("head changed by rejected puts:\n%s\n%s", head, got)
	}
	if heads, err := s.List(ctx); err != nil || len(heads) != 1 {
		t.Errorf("List = %d heads, %v; want only act", len(heads), err)
	}
}

func TestPublishCanaryThenAll(t *testing.T) {
	s, _ := newTestStore(t)
	ctx := context.Background()
	mustPut(t, s, "act", `{"v":1}`)
	mustPut(t, s, "act", `{"v":2}`)

	h, err := s.Publish(ctx, "act", 1, nil, "admin-1")
	if err != nil || h.Live != 1 || h.Canary != nil {
		t.Fatalf("Publish(1) = %+v, %v; want live 1", h, err)
	}
	canary := &Canary{Whitelist: []string{"app1:u1", "app1:u2"}, ActIDs: []uint64{7, 9}}
	h, err = s.Publish(ctx, "act", 2, canary, "admin-2")
	if err != nil {
		t.Fatal(err)
	}
	want := &Canary{Version: 2, Whitelist: []string{"app1:u1", "app1:u2"}, ActIDs: []uint64{7, 9}}
	if h.Live != 1 || h.Canary == nil || !slices.Equal(h.Canary.ActIDs, want.ActIDs) ||
		!slices.Equal(h.Canary.Whitelist, want.Whitelist) || h.Canary.Version != 2 {
		t.Fatalf("Publish(2, canary) head = live %d canary %+v; want live 1 canary %+v", h.Live, h.Canary, want)
	}
	canary.ActIDs[0] = 99 // the store holds its own copy
	snap, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a := snap.Activities[0]
	if string(a.Live.Body) != `{"v":1}` || string(a.Canary.Body) != `{"v":2}` || a.Head.Canary.ActIDs[0] != 7 {
		t.Fatalf("Snapshot serves live %s canary %s to %v; want v1, v2 to [7 9]", a.Live.Body, a.Canary.Body, a.Head.Canary.ActIDs)
	}

	h, err = s.Publish(ctx, "act", 2, nil, "admin-1")
	if err != nil || h.Live != 2 || h.Canary != nil {
		t.Fatalf("Publish(2) = %+v, %v; want live 2, canary cleared", h, err)
	}
	if got, want := actions(h), "put:1 put:2 publish:1 publish_canary:2 publish:2"; got != want {
		t.Errorf("history = %q, want %q", got, want)
	}
	for i := 1; i < len(h.History); i++ {
		if !h.History[i].At.After(h.History[i-1].At) {
			t.Errorf("history[%d].At = %v, not after %v", i, h.History[i].At, h.History[i-1].At)
		}
	}
	if h.History[3].By != "admin-2" {
		t.Errorf("publish_canary by %q, want admin-2", h.History[3].By)
	}
	stored, err := s.Head(ctx, "act")
	if err != nil {
		t.Fatal(err)
	}
	if actions(stored) != actions(h) || stored.Live != h.Live || stored.Canary != nil {
		t.Errorf("Head = %+v, Publish returned %+v", stored, h)
	}
	if seq := mustSeq(t, s); seq != 5 {
		t.Errorf("Seq = %d after 2 puts and 3 publishes, want 5", seq)
	}
}

func TestRollback(t *testing.T) {
	s, _ := newTestStore(t)
	ctx := context.Background()
	for i := 1; i <= 3; i++ {
		mustPut(t, s, "act", fmt.Sprintf(`{"v":%d}`, i))
	}
	if _, err := s.Publish(ctx, "act", 3, nil, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Publish(ctx, "act", 2, &Canary{ActIDs: []uint64{1}}, "a"); err != nil {
		t.Fatal(err)
	}
	h, err := s.Rollback(ctx, "act", 1, "ops")
	if err != nil || h.Live != 1 || h.Canary != nil {
		t.Fatalf("Rollback(1) = %+v, %v; want live 1, canary cleared", h, err)
	}
	// Any existing version other than the live one, newer ones included.
	h, err = s.Rollback(ctx, "act", 3, "ops")
	if err != nil || h.Live != 3 {
		t.Fatalf("Rollback(3) = %+v, %v; want live 3", h, err)
	}
	if got, want := actions(h), "put:1 put:2 put:3 publish:3 publish_canary:2 rollback:1 rollback:3"; got != want {
		t.Errorf("history = %q, want %q", got, want)
	}
	snap, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if a := snap.Activities[0]; string(a.Live.Body) != `{"v":3}` || a.Canary != nil {
		t.Errorf("Snapshot after rollback serves %s, canary %v; want v3 only", a.Live.Body, a.Canary)
	}
}

// TestFailedMutationsChangeNothing checks every rejected publish and
// rollback leaves the head byte-identical and seq where it was.
func TestFailedMutationsChangeNothing(t *testing.T) {
	s, kv := newTestStore(t)
	ctx := context.Background()
	mustPut(t, s, "act", `{"v":1}`)
	mustPut(t, s, "act", `{"v":2}`)
	if _, err := s.Publish(ctx, "act", 1, nil, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Publish(ctx, "act", 2, &Canary{ActIDs: []uint64{5}}, "a"); err != nil {
		t.Fatal(err)
	}
	head, seq := raw(t, kv, storage.CfgHeadKey("act")), mustSeq(t, s)
	tooMany := make([]uint64, canaryActIDsMax+1)
	for _, c := range []struct {
		name string
		op   func() error
		want error
	}{
		{"publish unknown activity", func() error { _, err := s.Publish(ctx, "nope", 1, nil, "a"); return err }, ErrNotFound},
		{"publish version 0", func() error { _, err := s.Publish(ctx, "act", 0, nil, "a"); return err }, ErrNotFound},
		{"publish version 3", func() error { _, err := s.Publish(ctx, "act", 3, nil, "a"); return err }, ErrNotFound},
		{"canary of version 3", func() error { _, err := s.Publish(ctx, "act", 3, &Canary{ActIDs: []uint64{1}}, "a"); return err }, ErrNotFound},
		{"canary without act ids", func() error {
			_, err := s.Publish(ctx, "act", 2, &Canary{Whitelist: []string{"app:u"}}, "a")
			return err
		}, ErrInvalid},
		{"canary naming another version", func() error {
			_, err := s.Publish(ctx, "act", 2, &Canary{Version: 1, ActIDs: []uint64{1}}, "a")
			return err
		}, ErrInvalid},
		{"canary too large", func() error { _, err := s.Publish(ctx, "act", 2, &Canary{ActIDs: tooMany}, "a"); return err }, ErrInvalid},
		{"publish without author", func() error { _, err := s.Publish(ctx, "act", 2, nil, ""); return err }, ErrInvalid},
		{"rollback to live", func() error { _, err := s.Rollback(ctx, "act", 1, "a"); return err }, ErrInvalid},
		{"rollback to unknown", func() error { _, err := s.Rollback(ctx, "act", 9, "a"); return err }, ErrNotFound},
		{"rollback unknown activity", func() error { _, err := s.Rollback(ctx, "nope", 1, "a"); return err }, ErrNotFound},
		{"rollback bad activity", func() error { _, err := s.Rollback(ctx, "a/b", 1, "a"); return err }, ErrInvalid},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := c.op(); !errors.Is(err, c.want) {
				t.Fatalf("error = %v, want %v", err, c.want)
			}
			if got := raw(t, kv, storage.CfgHeadKey("act")); !bytes.Equal(got, head) {
				t.Errorf("head changed:\n%s\n%s", head, got)
			}
			if got := mustSeq(t, s); got != seq {
				t.Errorf("seq = %d, want %d", got, seq)
			}
		})
	}
	if raw(t, kv, storage.CfgHeadKey("nope")) != nil {
		t.Error("a failed publish created a head")
	}
}

// TestConcurrentMutations runs publishes, rollbacks and puts from several
// goroutines at once: each success bumps seq exactly once and shows in its
// activity's history, and every head stays consistent.
func TestConcurrentMutations(t *testing.T) {
	s, _ := newTestStore(t)
	ctx := context.Background()
	activities := []string{"a", "b"}
	for _, a := range activities {
		for i := 1; i <= 4; i++ {
			mustPut(t, s, a, fmt.Sprintf(`{"v":%d}`, i))
		}
	}
	before := mustSeq(t, s)
	const workers, opsEach = 6, 8
	var mu sync.Mutex
	succeeded := map[string]int{}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for range opsEach {
				a := activities[rng.IntN(len(activities))]
				v := uint64(1 + rng.IntN(4))
				var err error
				switch rng.IntN(4) {
				case 0:
					_, err = s.Publish(ctx, a, v, nil, fmt.Sprintf("w%d", w))
				case 1:
					_, err = s.Publish(ctx, a, v, &Canary{ActIDs: []uint64{uint64(w)}}, fmt.Sprintf("w%d", w))
				case 2:
					_, err = s.Rollback(ctx, a, v, fmt.Sprintf("w%d", w))
				case 3:
					_, err = s.Put(ctx, a, []byte(`{"w":1}`), fmt.Sprintf("w%d", w), "")
				}
				if errors.Is(err, ErrInvalid) {
					continue // a rollback to the live version
				}
				if err != nil {
					t.Errorf("worker %d: %v", w, err)
					return
				}
				mu.Lock()
				succeeded[a]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	total := 0
	for _, a := range activities {
		h, err := s.Head(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		total += succeeded[a]
		if got, want := len(h.History), 4+succeeded[a]; got != want {
			t.Errorf("%s: %d history events, want %d (4 puts + %d successes)", a, got, want, succeeded[a])
		}
		puts := 0
		for _, e := range h.History {
			if e.Action == ActionPut {
				puts++
			}
		}
		if h.Latest != uint64(puts) {
			t.Errorf("%s: latest %d, %d put events", a, h.Latest, puts)
		}
		infos, err := s.Versions(ctx, a)
		if err != nil || uint64(len(infos)) != h.Latest {
			t.Errorf("%s: Versions = %d, %v; want %d", a, len(infos), err, h.Latest)
		}
	}
	if after := mustSeq(t, s); after != before+uint64(total) {
		t.Errorf("seq went %d -> %d over %d successful mutations", before, after, total)
	}
}

func TestSnapshotHoldsExactlyLiveAndCanary(t *testing.T) {
	s, _ := newTestStore(t)
	ctx := context.Background()
	// Ids chosen so that their keys interleave: "a-" < "a.b" < "a/" < "a0".
	for _, a := range []string{"a", "a0", "a.b", "a-", "idle"} {
		for i := 1; i <= 3; i++ {
			mustPut(t, s, a, fmt.Sprintf(`{"%s":%d}`, a, i))
		}
	}
	for _, p := range []struct {
		activity string
		v        uint64
		canary   bool
	}{{"a", 2, false}, {"a", 3, true}, {"a0", 1, false}, {"a.b", 3, true}, {"a-", 3, false}} {
		var c *Canary
		if p.canary {
			c = &Canary{ActIDs: []uint64{42}}
		}
		if _, err := s.Publish(ctx, p.activity, p.v, c, "a"); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutSwitches(ctx, []byte(`{"grants": "on"}`), "ops"); err != nil {
		t.Fatal(err)
	}
	snap, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if seq := mustSeq(t, s); snap.Seq != seq {
		t.Errorf("Snapshot.Seq = %d, Seq = %d", snap.Seq, seq)
	}
	var got []string
	for _, a := range snap.Activities {
		line := a.Head.Activity
		if a.Live != nil {
			line += " live=" + string(a.Live.Body)
		}
		if a.Canary != nil {
			line += " canary=" + string(a.Canary.Body)
		}
		got = append(got, line)
	}
	want := []string{
		`a live={"a":2} canary={"a":3}`,
		`a- live={"a-":3}`,
		`a.b canary={"a.b":3}`,
		`a0 live={"a0":1}`,
		`idle`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("Snapshot =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if string(snap.Switches) != `{"grants":"on"}` || snap.SwitchesAt.IsZero() {
		t.Errorf("Snapshot.Switches = %s at %v", snap.Switches, snap.SwitchesAt)
	}
	heads, err := s.List(ctx)
	if err != nil || len(heads) != len(want) {
		t.Fatalf("List = %d heads, %v; want %d", len(heads), err, len(want))
	}
	for i, h := range heads {
		if h.Activity != snap.Activities[i].Head.Activity {
			t.Errorf("List[%d] = %s, Snapshot has %s", i, h.Activity, snap.Activities[i].Head.Activity)
		}
	}
}

func TestSwitches(t *testing.T) {
	s, _ := newTestStore(t)
	ctx := context.Background()
	if _, err := s.Switches(ctx); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Switches before any put: %v, want ErrNotFound", err)
	}
	if err := s.PutSwitches(ctx, []byte(`{"x":`), "ops"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("PutSwitches(bad json) = %v, want ErrInvalid", err)
	}
	if err := s.PutSwitches(ctx, []byte(`{}`), ""); !errors.Is(err, ErrInvalid) {
		t.Fatalf("PutSwitches(no author) = %v, want ErrInvalid", err)
	}
	if seq := mustSeq(t, s); seq != 0 {
		t.Fatalf("seq = %d after rejected switches, want 0", seq)
	}
	for i, body := range []string{`{"booking": true}`, `{"booking":false}`} {
		if err := s.PutSwitches(ctx, []byte(body), "ops"); err != nil {
			t.Fatal(err)
		}
		got, err := s.Switches(ctx)
		if want, _ := canonical([]byte(body)); err != nil || !bytes.Equal(got, want) {
			t.Errorf("Switches = %s, %v; want %s", got, err, want)
		}
		if seq := mustSeq(t, s); seq != uint64(i+1) {
			t.Errorf("seq = %d after %d switches, want %d", seq, i+1, i+1)
		}
	}
}

// TestRestartReadsEverythingBack closes the embedded store and opens it on
// the same dir: heads, versions, switches and seq are all there, and
// versions continue where they were.
func TestRestartReadsEverythingBack(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	kv, err := storage.OpenTiKV(nil, dir)
	if err != nil {
		t.Fatal(err)
	}
	s := New(kv, newTestClock().Now)
	mustPut(t, s, "act", `{"v":1}`)
	mustPut(t, s, "act", `{"v":2}`)
	if _, err := s.Publish(ctx, "act", 1, nil, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Publish(ctx, "act", 2, &Canary{Whitelist: []string{"app:u"}, ActIDs: []uint64{3}}, "a"); err != nil {
		t.Fatal(err)
	}
	if err := s.PutSwitches(ctx, []byte(`{"on":true}`), "ops"); err != nil {
		t.Fatal(err)
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Close(); err != nil {
		t.Fatal(err)
	}

	kv2, err := storage.OpenTiKV(nil, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer kv2.Close()
	s2 := New(kv2, newTestClock().Now)
	after, err := s2.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	after.ReadAt = before.ReadAt
	b1, _ := json.Marshal(before)
	b2, _ := json.Marshal(after)
	if !bytes.Equal(b1, b2) {
		t.Fatalf("snapshot after restart differs:\n%s\n%s", b1, b2)
	}
	if v := mustPut(t, s2, "act", `{"v":3}`); v != 3 {
		t.Errorf("Put after restart = version %d, want 3", v)
	}
	if seq := mustSeq(t, s2); seq != before.Seq+1 {
		t.Errorf("seq after restart and a put = %d, want %d", seq, before.Seq+1)
	}
}

// TestCorruptHeadChangesNothing plants a head that breaks an invariant:
// reads report ErrCorrupt and mutations refuse to build on it.
func TestCorruptHeadChangesNothing(t *testing.T) {
	s, kv := newTestStore(t)
	ctx := context.Background()
	mustPut(t, s, "act", `{"v":1}`)
	bad := []byte(`{"activity":"act","latest":1,"live":2,"history":[]}`)
	err := kv.Update(ctx, func(txn storage.Txn) error { return txn.Set(storage.CfgHeadKey("act"), bad) })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Head(ctx, "act"); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Head = %v, want ErrCorrupt", err)
	}
	if _, err := s.Snapshot(ctx); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Snapshot = %v, want ErrCorrupt", err)
	}
	if _, err := s.Put(ctx, "act", []byte(`{}`), "a", ""); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Put = %v, want ErrCorrupt", err)
	}
	if _, err := s.Publish(ctx, "act", 1, nil, "a"); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Publish = %v, want ErrCorrupt", err)
	}
	if got := raw(t, kv, storage.CfgHeadKey("act")); !bytes.Equal(got, bad) {
		t.Errorf("head = %s, want it untouched", got)
	}
	if seq := mustSeq(t, s); seq != 1 {
		t.Errorf("seq = %d, want 1", seq)
	}
}

func TestHistoryKeepsTheLastEvents(t *testing.T) {
	h := &Head{Activity: "act", Latest: 1}
	for i := range historyMax + 7 {
		h.record(Event{Action: ActionPublish, Version: uint64(i)})
	}
	if len(h.History) != historyMax || h.History[0].Version != 7 || h.History[historyMax-1].Version != historyMax+6 {
		t.Errorf("history after %d events = %d events, %d..%d; want %d, 7..%d",
			historyMax+7, len(h.History), h.History[0].Version, h.History[len(h.History)-1].Version, historyMax, historyMax+6)
	}
	if err := h.check("act"); err != nil {
		t.Error(err)
	}
}

// TestDocumentsApart: the documents' space has the activities' versions,
// canaries and rollbacks under keys of its own; an activity and a
// document of the same id never meet, and every mutation of either bumps
// the one seq.
func TestDocumentsApart(t *testing.T) {
	s, kv := newTestStore(t)
	d := s.Documents()
	ctx := context.Background()
	mustPut(t, s, "p", `{"activity":1}`)
	if _, err := s.Publish(ctx, "p", 1, nil, "a"); err != nil {
		t.Fatal(err)
	}
	seq := mustSeq(t, s)
	for i := 1; i <= 3; i++ {
		mustPut(t, d, "p", fmt.Sprintf(`{"doc":%d}`, i))
	}
	if _, err := d.Publish(ctx, "p", 1, nil, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Publish(ctx, "p", 3, &Canary{Whitelist: []string{"1:u"}, ActIDs: []uint64{7}}, "a"); err != nil {
		t.Fatal(err)
	}
	if got := mustSeq(t, d); got != seq+5 {
		t.Errorf("seq after 5 document mutations = %d, want %d", got, seq+5)
	}
	if raw(t, kv, storage.CfgVersionKeyIn(storage.CfgDocumentPrefix, "p", 3)) == nil || raw(t, kv, storage.CfgVersionKey("p", 2)) != nil {
		t.Error("document versions are not under rr/cfg/doc/ alone")
	}
	// Each space lists and shows only its own.
	for _, c := range []struct {
		st     *Store
		latest uint64
		live   uint64
	}{{s, 1, 1}, {d, 3, 1}} {
		heads, err := c.st.List(ctx)
		if err != nil || len(heads) != 1 || heads[0].Latest != c.latest || heads[0].Live != c.live {
			t.Errorf("List (%s) = %+v, %v; want one head latest %d live %d", c.st.space.noun, heads, err, c.latest, c.live)
		}
		infos, err := c.st.Versions(ctx, "p")
		if err != nil || uint64(len(infos)) != c.latest {
			t.Errorf("Versions (%s) = %d, %v; want %d", c.st.space.noun, len(infos), err, c.latest)
		}
	}
	if v, err := d.Version(ctx, "p", 2); err != nil || string(v.Body) != `{"doc":2}` {
		t.Errorf("document version 2 = %+v, %v", v, err)
	}
	if _, err := s.Version(ctx, "p", 2); !errors.Is(err, ErrNotFound) {
		t.Errorf("activity version 2 = %v, want ErrNotFound", err)
	}
	if _, err := d.Head(ctx, "q"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "document") {
		t.Errorf("head of an unknown document = %v, want ErrNotFound naming a document", err)
	}
	// A rollback in one space leaves the other as it was.
	if _, err := d.Rollback(ctx, "p", 2, "a"); err != nil {
		t.Fatal(err)
	}
	snap, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Activities) != 1 || string(snap.Activities[0].Live.Body) != `{"activity":1}` {
		t.Errorf("snapshot activities = %+v", snap.Activities)
	}
	doc := snap.Document("p")
	if len(snap.Documents) != 1 || doc == nil || string(doc.Live.Body) != `{"doc":2}` || doc.Canary != nil || doc.Head.Canary != nil {
		t.Errorf("snapshot documents = %+v, want p live v2 and no canary after the rollback", snap.Documents)
	}
	if snap.Document("q") != nil {
		t.Error("Snapshot.Document of an unknown id is not nil")
	}
	// While a canary stands the snapshot carries both bodies.
	if _, err := d.Publish(ctx, "p", 3, &Canary{ActIDs: []uint64{7}}, "a"); err != nil {
		t.Fatal(err)
	}
	if snap, err = d.Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	if doc := snap.Document("p"); doc == nil || string(doc.Live.Body) != `{"doc":2}` || string(doc.Canary.Body) != `{"doc":3}` ||
		!slices.Equal(doc.Head.Canary.ActIDs, []uint64{7}) {
		t.Errorf("snapshot document during a canary = %+v", doc)
	}
}
