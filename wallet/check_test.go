package wallet_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"redrain/booking"
	"redrain/booking/bookingtest"
	"redrain/ledger"
	"redrain/metrics"
	"redrain/storage"
	"redrain/storage/storagetest"
	"redrain/wallet"
)

// storeSeqs is each partition's last journal seq in the store.
func (r *rig) storeSeqs() []uint64 {
	r.t.Helper()
	var seqs []uint64
	err := r.f.KV.View(func(txn storage.Txn) error {
		var err error
		seqs, err = booking.JournalSeqs(r.ctx, txn, parts)
		return err
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return seqs
}

// settled waits until every partition's watermark in Redis reached the
// store's last journal: every tombstone is written.
func (r *rig) settled() {
	r.t.Helper()
	r.caughtUp()
	want := r.storeSeqs()
	bookingtest.Eventually(r.t, 30*time.Second, "watermarks at the store's journals", func() error {
		for p, seq := range want {
			if seq == 0 {
				continue
			}
			got, err := r.rdb.Get(r.ctx, "rr:wseq:"+strconv.Itoa(p)).Uint64()
			if err != nil || got < seq {
				return fmt.Errorf("partition %d: watermark %d (%v), journal %d", p, got, err, seq)
			}
		}
		return nil
	})
}

func (r *rig) raw(act uint64) string {
	r.t.Helper()
	v, err := r.rdb.Get(r.ctx, wallet.CacheKey(act)).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		r.t.Fatal(err)
	}
	return v
}

func (r *rig) set(act uint64, v string) {
	r.t.Helper()
	if err := r.rdb.Set(r.ctx, wallet.CacheKey(act), v, time.Hour).Err(); err != nil {
		r.t.Fatal(err)
	}
}

func redisClient(t *testing.T) *redis.Client {
	rdb := redis.NewClient(&redis.Options{Addr: storagetest.Redis(t)})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// TestContinuousCheckRepairsDrift: a summary read before a booking is put
// back over the booking's tombstone (a lost tombstone), so reads answer
// the old balance from Redis; the continuous check, when the booking's
// poll comes due, finds it and replaces it with the store's summary.
func TestContinuousCheckRepairsDrift(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	r := newRig(t, redisClient(t), wallet.Config{Clock: clock, CheckDelay: 5 * time.Second, Metrics: &metrics.Registry{}})
	a, b := r.f.User(), r.f.User()
	r.allocate(b + 1)
	r.book(a, 100)
	r.run()
	r.settled()
	if s := r.read(a); balanceOf(s, r.f.Asset) != 100 {
		t.Fatalf("first read: %+v", s)
	}
	stale := r.raw(a)
	if stale == "" || stale[len(stale)-1] == ':' {
		t.Fatalf("after a read Redis holds %q, want a summary", stale)
	}
	r.book(a, 50)
	r.book(b, 7) // a consistent account checked beside it
	r.settled()
	r.set(a, stale) // the tombstone lost: the old summary is back
	if s := r.read(a); s.Source != wallet.SourceCache || balanceOf(s, r.f.Asset) != 100 {
		t.Fatalf("read with the drift in Redis: %+v, want the stale 100 from Redis", s)
	}
	if checked, drifted, _ := r.w.CheckCounts(); checked != 0 || drifted != 0 {
		t.Fatalf("checks before the delay passed: checked %d drifted %d", checked, drifted)
	}
	mu.Lock()
	now = now.Add(5 * time.Second)
	mu.Unlock()
	bookingtest.Eventually(t, 30*time.Second, "drift repaired and both checked", func() error {
		// a's and b's bookings may come due in different polls' checks
		if checked, drifted, repaired := r.w.CheckCounts(); repaired < 1 || checked < 2 {
			return fmt.Errorf("checked %d, drifted %d, repaired %d", checked, drifted, repaired)
		}
		return nil
	})
	if checked, drifted, repaired := r.w.CheckCounts(); drifted != 1 || repaired != 1 || checked < 2 {
		t.Fatalf("checked %d, drifted %d, repaired %d; want 1 drifted and repaired among at least 2", checked, drifted, repaired)
	}
	if s := r.read(a); s.Source != wallet.SourceCache || balanceOf(s, r.f.Asset) != 150 {
		t.Fatalf("read after the repair: %+v, want 150 from Redis", s)
	}
	if s := r.read(b); balanceOf(s, r.f.Asset) != 7 {
		t.Fatalf("read of the consistent account: %+v", s)
	}
}

// TestCheckFindsExactlyTheDrift: among users whose keys are missing, hold
// tombstones, consistent summaries or summaries newer than the store's
// read, the check of the users changed in a window finds exactly the ones
// that drifted (a summary put back over a tombstone, a wrong summary at
// the store's seq, an unreadable one), changes nothing without repair,
// repairs them with it, and a second run finds nothing.
func TestCheckFindsExactlyTheDrift(t *testing.T) {
	start := time.Now()
	r := newRig(t, redisClient(t), wallet.Config{CheckDelay: -1})
	users := r.users(240)
	want := map[uint64]int64{}
	book := func(u uint64, n int64) { r.book(u, n); want[u] += n }
	// users[:40]: booked before the Feed ran: no key.
	for _, u := range users[:40] {
		book(u, 10)
	}
	r.run()
	// users[40:120]: booked, read (a summary), booked again (a tombstone).
	// users[120:200]: booked, then read (a consistent summary).
	for _, u := range users[40:200] {
		book(u, 20)
	}
	r.settled()
	for _, u := range users[40:120] {
		r.read(u)
	}
	stale := map[uint64]string{}
	for _, u := range users[40:120] {
		stale[u] = r.raw(u)
		book(u, 5)
	}
	r.settled()
	for _, u := range users[120:200] {
		if s := r.read(u); s.Source != wallet.SourceStore {
			t.Fatalf("act %d read from %s, want the store (filling Redis)", u, s.Source)
		}
	}
	// users[200:240]: a summary newer than the store's read (a seq from
	// the future, whatever it holds): not judged.
	for _, u := range users[200:240] {
		book(u, 30)
	}
	r.settled()
	for _, u := range users[200:240] {
		r.set(u, "99999999:{}")
	}
	// The drift.
	seqs := r.storeSeqs()
	var drifted []uint64
	for _, u := range users[40:44] { // the tombstone lost
		r.set(u, stale[u])
		drifted = append(drifted, u)
	}
	for _, u := range users[120:123] { // wrong at the store's own seq
		wrong, err := wallet.EncodeSummary(wallet.Summary{ActID: u, Balances: []ledger.Balance{{Asset: r.f.Asset, Amount: want[u] + 1}}})
		if err != nil {
			t.Fatal(err)
		}
		r.set(u, strconv.FormatUint(seqs[storage.PartitionOf(u, parts)], 10)+":"+string(wrong))
		drifted = append(drifted, u)
	}
	u := users[123] // unreadable
	r.set(u, strconv.FormatUint(seqs[storage.PartitionOf(u, parts)], 10)+":{not json")
	drifted = append(drifted, u)
	slices.Sort(drifted)
	before := map[uint64]string{}
	for _, u := range users {
		before[u] = r.raw(u)
	}

	cfg := wallet.CheckConfig{TiKV: r.f.KV, Redis: r.rdb, Parts: parts}
	since, until := start.Add(-time.Minute), time.Now().Add(time.Minute)
	check := func(repair bool) wallet.Report {
		t.Helper()
		cfg.Repair = repair
		rep, err := wallet.Check(r.ctx, cfg, since, until)
		if err != nil {
			t.Fatalf("Check(repair %v): %v", repair, err)
		}
		return rep
	}
	actsOf := func(rep wallet.Report) []uint64 {
		var acts []uint64
		for _, d := range rep.Drift {
			acts = append(acts, d.ActID)
		}
		slices.Sort(acts)
		return acts
	}

	rep := check(false)
	if rep.Checked != len(users) || rep.Missing != 40 || rep.Tombstones != 76 || rep.Summaries != 124 || rep.Newer != 40 || rep.Unsettled != 0 {
		t.Fatalf("check: %+v; want 240 checked: 40 missing, 76 tombstones, 124 summaries (40 newer)", rep)
	}
	if rep.Drifted != len(drifted) || !slices.Equal(actsOf(rep), drifted) || rep.Repaired != 0 || rep.OK() {
		t.Fatalf("check without repair: drifted %d %v, repaired %d, ok %v; want %v", rep.Drifted, actsOf(rep), rep.Repaired, rep.OK(), drifted)
	}
	for _, u := range users {
		if got := r.raw(u); got != before[u] {
			t.Fatalf("a check without repair changed act %d's key: %q, was %q", u, got, before[u])
		}
	}

	rep = check(true)
	if rep.Drifted != len(drifted) || rep.Repaired != len(drifted) || !rep.OK() {
		t.Fatalf("check with repair: %+v", rep)
	}
	for _, u := range drifted {
		if s := r.read(u); s.Source != wallet.SourceCache || balanceOf(s, r.f.Asset) != want[u] {
			t.Fatalf("act %d after the repair: %+v, want %d from Redis", u, s, want[u])
		}
	}
	if rep = check(true); rep.Drifted != 0 || rep.Checked != len(users) {
		t.Fatalf("second check with repair: %+v, want no drift", rep)
	}
	rep, err := wallet.CheckAll(r.ctx, cfg)
	if err != nil || rep.Drifted != 0 || rep.Checked != 200 || rep.Newer != 40 {
		t.Fatalf("CheckAll: %+v, %v; want 200 keys, 40 newer, no drift", rep, err)
	}
	// A summary put back over a tombstone while the watermark of its
	// partition is below the store's read: the Feed may still write the
	// tombstone, so it is unsettled, not drift, and left alone.
	u = users[41]
	p := storage.PartitionOf(u, parts)
	if err := r.rdb.Set(r.ctx, "rr:wseq:"+strconv.Itoa(int(p)), seqs[p]-1, 0).Err(); err != nil {
		t.Fatal(err)
	}
	r.set(u, stale[u])
	if rep = check(true); rep.Drifted != 0 || rep.Unsettled != 1 || rep.Repaired != 0 || r.raw(u) != stale[u] {
		t.Fatalf("check with the watermark behind: %+v, key %q; want 1 unsettled, left alone", rep, r.raw(u))
	}
	if err := r.rdb.Set(r.ctx, "rr:wseq:"+strconv.Itoa(int(p)), seqs[p], 0).Err(); err != nil {
		t.Fatal(err)
	}
	if rep = check(true); rep.Drifted != 1 || rep.Repaired != 1 || rep.Unsettled != 0 {
		t.Fatalf("check with the watermark back: %+v; want 1 drifted and repaired", rep)
	}
	// A window before every booking: nothing to check.
	if rep, err := wallet.Check(r.ctx, cfg, start.Add(-48*time.Hour), start.Add(-24*time.Hour)); err != nil || rep.Checked != 0 || rep.Journals != 0 {
		t.Fatalf("Check of a window before the bookings: %+v, %v", rep, err)
	}
	// Bad input changes nothing.
	r.set(users[40], stale[users[40]])
	if _, err := wallet.Check(r.ctx, cfg, until, since); !errors.Is(err, wallet.ErrWindow) {
		t.Fatalf("Check of a reversed window: %v, want ErrWindow", err)
	}
	bad := cfg
	bad.Parts = parts - 1
	if _, err := wallet.Check(r.ctx, bad, since, until); !errors.Is(err, wallet.ErrPartitions) {
		t.Fatalf("Check with %d partitions: %v, want ErrPartitions", bad.Parts, err)
	}
	bad.Parts = parts + 3
	if _, err := wallet.CheckAll(r.ctx, bad); !errors.Is(err, wallet.ErrPartitions) {
		t.Fatalf("CheckAll with %d partitions: %v, want ErrPartitions", bad.Parts, err)
	}
	if got := r.raw(users[40]); got != stale[users[40]] {
		t.Fatalf("a refused check changed a key: %q", got)
	}
}

// TestDailyCheckRepairsDrift: two nodes run RunDaily on one store and
// Redis; when their clock passes midnight plus the margin, one of them
// (the claim's holder) checks the users changed the day before and
// repairs the drifted one, the other checks nothing, and the day's claim
// says done. The continuous check is off.
func TestDailyCheckRepairsDrift(t *testing.T) {
	booked := time.Now()
	midnight := booked.UTC().Truncate(24 * time.Hour).Add(24 * time.Hour)
	var mu sync.Mutex
	now := midnight.Add(-time.Hour)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	cfg := wallet.Config{Clock: clock, CheckDelay: -1, Metrics: &metrics.Registry{}}
	r := newRig(t, redisClient(t), cfg)
	cfg.TiKV, cfg.Parts, cfg.Redis, cfg.Log, cfg.Metrics = r.f.KV, parts, r.rdb, quiet, &metrics.Registry{}
	other := wallet.New(cfg)
	a, b := r.f.User(), r.f.User()
	r.allocate(b + 1)
	r.run()
	r.book(a, 40)
	r.book(b, 60)
	r.settled()
	r.read(a)
	stale := r.raw(a)
	r.book(a, 2)
	r.settled()
	r.set(a, stale)
	nodes := []*wallet.Wallets{r.w, other}
	var wg sync.WaitGroup
	for _, w := range nodes {
		wg.Add(1)
		go func() { defer wg.Done(); w.RunDaily(r.ctx, 10*time.Minute) }()
	}
	t.Cleanup(func() { r.cancel(); wg.Wait() })
	bookingtest.Eventually(t, 30*time.Second, "daily checks scheduled", func() error {
		for i, w := range nodes {
			if got, want := w.DailyNext(), midnight.Add(10*time.Minute).Unix(); got != want {
				return fmt.Errorf("node %d: next daily check at %d, want %d", i, got, want)
			}
		}
		return nil
	})
	mu.Lock()
	now = midnight.Add(10 * time.Minute)
	mu.Unlock()
	key := wallet.DailyKey(midnight.Add(-time.Hour))
	bookingtest.Eventually(t, 30*time.Second, "daily check done", func() error {
		if v := r.rdb.Get(r.ctx, key).Val(); v != "done" {
			return fmt.Errorf("%s holds %q", key, v)
		}
		return nil
	})
	var counts [][3]int64
	for _, w := range nodes {
		checked, drifted, repaired := w.CheckCountsOf("daily")
		counts = append(counts, [3]int64{checked, drifted, repaired})
	}
	if one, none := [3]int64{2, 1, 1}, [3]int64{}; !(counts[0] == one && counts[1] == none || counts[0] == none && counts[1] == one) {
		t.Fatalf("daily counts (checked, drifted, repaired) per node: %v; want one node at %v and the other at %v", counts, one, none)
	}
	if s := r.read(a); s.Source != wallet.SourceCache || balanceOf(s, r.f.Asset) != 42 {
		t.Fatalf("read after the daily repair: %+v, want 42 from Redis", s)
	}
}

func TestNextDaily(t *testing.T) {
	day := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		now, at, since time.Time
	}{
		{day.Add(3 * time.Minute), day.Add(10 * time.Minute), day.Add(-24 * time.Hour)},
		{day.Add(10 * time.Minute), day.Add(24*time.Hour + 10*time.Minute), day},
		{day.Add(23 * time.Hour), day.Add(24*time.Hour + 10*time.Minute), day},
		{day.Add(-time.Nanosecond).In(time.FixedZone("CST", 8*3600)), day.Add(10 * time.Minute), day.Add(-24 * time.Hour)},
	} {
		at, since, until := wallet.NextDaily(c.now, 10*time.Minute)
		if !at.Equal(c.at) || !since.Equal(c.since) || !until.Equal(c.since.Add(24*time.Hour)) {
			t.Errorf("NextDaily(%v, 10m) = %v, %v, %v; want %v, %v, %v", c.now, at, since, until, c.at, c.since, c.since.Add(24*time.Hour))
		}
	}
}

// TestRepairComparesAndSets: a repair lands only over the value the check
// read; a key changed since (a tombstone, a fill, another repair) or gone
// is left as it is.
func TestRepairComparesAndSets(t *testing.T) {
	rdb := redisClient(t)
	ctx := context.Background()
	s := wallet.Summary{ActID: 5, Balances: []ledger.Balance{{Asset: ledger.AssetCash, Amount: 7}}}
	read := `3:{"b":[{"s":"cash","n":6}]}`
	for _, c := range []struct {
		now  string // the key's value at the repair ("": none)
		want bool
	}{
		{read, true},
		{"4:", false},                           // a tombstone landed since
		{`4:{"b":[{"s":"cash","n":7}]}`, false}, // a fill landed since
		{"", false},                             // expired
	} {
		rdb.Del(ctx, wallet.CacheKey(5))
		if c.now != "" {
			rdb.Set(ctx, wallet.CacheKey(5), c.now, time.Minute)
		}
		landed, err := wallet.Repair(ctx, rdb, s, 4, read)
		got := rdb.Get(ctx, wallet.CacheKey(5)).Val()
		want := c.now
		if c.want {
			want = `4:{"b":[{"s":"cash","n":7}]}`
		}
		if err != nil || landed != c.want || got != want {
			t.Errorf("repair over %q: landed %v (%v), key %q; want %v, %q", c.now, landed, err, got, c.want, want)
		}
	}
}
