package wallet_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"redrain/booking"
	"redrain/booking/bookingtest"
	"redrain/holders"
	"redrain/ledger"
	"redrain/metrics"
	"redrain/storage"
	"redrain/storage/storagetest"
	"redrain/wallet"
)

const parts = 4

var quiet = slog.New(slog.DiscardHandler)

// rig is a store with a booker that books straight into it (no owner: as a
// redeem on a node that owns no partition does), Redis and the read side.
type rig struct {
	t      *testing.T
	f      *bookingtest.Fixture
	b      *booking.Booker
	rdb    *redis.Client
	w      *wallet.Wallets
	ctx    context.Context
	cancel context.CancelFunc
	// before is how many journals the store held when the Feed started:
	// the build holds them, the Feed applies only the later ones.
	before uint64
}

func newRig(t *testing.T, rdb *redis.Client, cfg wallet.Config) *rig {
	t.Helper()
	kv := storagetest.TiKV(t, "")
	f := bookingtest.New(t, kv, parts, 1<<50)
	b := booking.New(booking.Config{Log: quiet, TiKV: kv, Partitions: parts, Metrics: &metrics.Registry{}, Clock: time.Now, Owner: "test"})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cfg.TiKV, cfg.Parts, cfg.Redis, cfg.Log = kv, parts, rdb, quiet
	if cfg.Poll == 0 {
		cfg.Poll = 10 * time.Millisecond
	}
	r := &rig{t: t, f: f, b: b, rdb: rdb, ctx: ctx, cancel: cancel}
	r.w = wallet.New(cfg)
	return r
}

// run starts the Feed and waits for the holders set's first build.
func (r *rig) run() {
	r.before = r.journals()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); r.w.Run(r.ctx) }()
	r.t.Cleanup(func() { r.cancel(); wg.Wait() })
	bookingtest.Eventually(r.t, 30*time.Second, "holders built", func() error {
		if !r.w.Built() {
			return errors.New("not yet")
		}
		return nil
	})
}

// users makes n users, their act_ids handed out.
func (r *rig) users(n int) []uint64 {
	users := make([]uint64, n)
	for i := range users {
		users[i] = r.f.User()
	}
	r.allocate(users[n-1] + 1)
	return users
}

// allocate marks act_ids below next as handed out.
func (r *rig) allocate(next uint64) {
	bookingtest.Put(r.t, r.f.KV, storage.ActAllocKey, storage.ActIDValue(next))
}

// book books one grant of amount to act, at a fresh rain.
func (r *rig) book(act uint64, amount int64) {
	r.t.Helper()
	g := r.f.Grant(act, uint64(rand.Int64N(1<<40)), r.f.Lease(r.f.Budget, amount), amount)
	bookingtest.WantOutcomes(r.t, bookingtest.Book(r.t, r.b, []ledger.Grant{g}), booking.BookedNow)
}

// caughtUp waits until the Feed applied every journal in the store.
func (r *rig) caughtUp() {
	r.t.Helper()
	bookingtest.Eventually(r.t, 30*time.Second, "feed caught up", func() error {
		total := r.journals()
		if uint64(r.w.Applied())+r.before < total {
			return fmt.Errorf("applied %d of %d journals", r.w.Applied(), total)
		}
		return nil
	})
}

// tombstonesTaken waits until Redis is trusted and has taken every
// tombstone, so reads ask it (reads of users it has not taken one for skip
// Redis).
func (r *rig) tombstonesTaken() {
	r.t.Helper()
	bookingtest.Eventually(r.t, 30*time.Second, "tombstones taken", func() error {
		if n := r.w.Pendings(); !r.w.CacheReady() || n != 0 {
			return fmt.Errorf("cache ready %v, %d users pending", r.w.CacheReady(), n)
		}
		return nil
	})
}

// journals counts the journals in the store.
func (r *rig) journals() uint64 {
	r.t.Helper()
	var total uint64
	err := r.f.KV.View(func(txn storage.Txn) error {
		seqs, err := booking.JournalSeqs(r.ctx, txn, parts)
		for _, s := range seqs {
			total += s
		}
		return err
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return total
}

func (r *rig) read(act uint64) wallet.Summary {
	r.t.Helper()
	s, err := r.w.Read(r.ctx, act)
	if err != nil {
		r.t.Fatalf("Read(%d): %v", act, err)
	}
	return s
}

func balanceOf(s wallet.Summary, a ledger.Asset) int64 {
	for _, b := range s.Balances {
		if b.Asset == a {
			return b.Amount
		}
	}
	return 0
}

// TestLayersAnswerExactly books random grants while reading random users,
// with the Feed running against a real redis-server: once the Feed has
// applied every journal, every read equals the store's balances, a user
// who holds nothing is answered by the holders layer alone and a holder by
// Redis after its first read.
func TestLayersAnswerExactly(t *testing.T) {
	r := newRig(t, redisClient(t), wallet.Config{})
	users := r.users(200)
	want := map[uint64]int64{}
	// Some hold something before the read side starts: the build finds them.
	for _, u := range users[:40] {
		amount := bookingtest.AmountOf(u, 1)
		r.book(u, amount)
		want[u] += amount
	}
	r.run()
	check := func(round int) {
		t.Helper()
		r.caughtUp()
		for _, u := range users {
			s := r.read(u)
			if got := balanceOf(s, r.f.Asset); got != want[u] {
				t.Fatalf("round %d: act %d: balance %d from %s, want %d", round, u, got, s.Source, want[u])
			}
			if want[u] == 0 && s.Source != wallet.SourceHolders {
				t.Fatalf("round %d: act %d holds nothing but was answered by %s", round, u, s.Source)
			}
			if want[u] != 0 && s.Source == wallet.SourceHolders {
				t.Fatalf("round %d: act %d holds %d but the holders layer answered", round, u, want[u])
			}
			if s.Stale {
				t.Fatalf("round %d: act %d answered stale with every backend up", round, u)
			}
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 6 {
		for range 60 {
			u := users[rng.IntN(len(users))]
			// Reads between bookings fill Redis with summaries that the
			// next booking must supersede.
			r.read(u)
			amount := 1 + rng.Int64N(500)
			r.book(u, amount)
			want[u] += amount
		}
		check(round)
	}
	// A holder read twice: the second read is Redis's.
	u := users[0]
	r.read(u)
	if s := r.read(u); s.Source != wallet.SourceCache {
		t.Fatalf("a holder's second read came from %s, want cache", s.Source)
	}
	if got := r.w.Holders().Any(users[0]); got != holders.Yes {
		t.Fatalf("holders.Any(holder) = %v", got)
	}
	// An act_id never handed out.
	if _, err := r.w.Read(r.ctx, users[len(users)-1]+10); !errors.Is(err, wallet.ErrNotFound) {
		t.Fatalf("Read(beyond the allocation) = %v, want ErrNotFound", err)
	}
}

// TestCacheKeepsTheHigherSeq races fills, fences and tombstones in every
// order on both Redis servers the node runs against: a summary read before
// a change never replaces the change's tombstone nor lands past its fence,
// a tombstone never replaces a summary that already reflects its change,
// and no tombstone is written where no summary is.
func TestCacheKeepsTheHigherSeq(t *testing.T) {
	mini := miniredis.RunT(t)
	for name, addr := range map[string]string{"redis-server": storagetest.Redis(t), "miniredis": mini.Addr()} {
		t.Run(name, func(t *testing.T) {
			rdb := redis.NewClient(&redis.Options{Addr: addr})
			t.Cleanup(func() { _ = rdb.Close() })
			ctx := context.Background()
			s := wallet.Summary{ActID: 9, Balances: []ledger.Balance{{Asset: ledger.AssetCash, Amount: 5}}}
			steps := []struct {
				op   string // fill, drop or fence
				seq  uint64
				want string // what the key holds: "" none, "N:" a tombstone, "N:{" a summary
			}{
				{"fill", 5, ""},    // no fence yet: refused
				{"fence", 0, ""},   // the Feed's first fence
				{"fill", 5, "5:{"}, // lands
				{"fence", 7, "5:{"},
				{"drop", 7, "7:"},  // a change at 7: tombstone over the older summary
				{"fill", 6, "7:"},  // read before the change: below the fence, refused
				{"fill", 7, "7:{"}, // read that includes it: lands
				{"drop", 3, "7:{"}, // an older change seen late: no effect
				{"drop", 7, "7:{"}, // the same change again: the summary stays
				{"fence", 8, "7:{"},
				{"drop", 8, "8:"},  // a newer change
				{"fill", 9, "9:{"}, // a newer read
			}
			for i, st := range steps {
				var err error
				switch st.op {
				case "fill":
					err = wallet.Fill(ctx, rdb, s, st.seq, time.Minute)
				case "drop":
					err = wallet.Drop(ctx, rdb, map[uint64]uint64{9: st.seq, 10: st.seq}, time.Minute)
				case "fence":
					err = wallet.Fence(ctx, rdb, st.seq)
				}
				if err != nil {
					t.Fatalf("step %d %s %d: %v", i, st.op, st.seq, err)
				}
				got, err := rdb.Get(ctx, wallet.CacheKey(9)).Result()
				if errors.Is(err, redis.Nil) {
					got, err = "", nil
				}
				if err != nil {
					t.Fatal(err)
				}
				ok := got == st.want || strings.HasSuffix(st.want, "{") && strings.HasPrefix(got, st.want)
				if !ok {
					t.Fatalf("step %d (%s at %d): key holds %q, want %q", i, st.op, st.seq, got, st.want)
				}
				if n, err := rdb.Exists(ctx, wallet.CacheKey(10)).Result(); err != nil || n != 0 {
					t.Fatalf("step %d: a tombstone was written where no summary was (%d, %v)", i, n, err)
				}
			}
		})
	}
}

// TestRedisDownPendingBound: users whose tombstones Redis has not taken
// skip it, and once the Feed found Redis down their reads reach the store
// at the same bound as the others, then the node's copy.
func TestRedisDownPendingBound(t *testing.T) {
	mini := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mini.Addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = rdb.Close() })
	now := time.Unix(1_700_000_000, 0)
	r := newRig(t, rdb, wallet.Config{StoreRate: 2, Clock: func() time.Time { return now }})
	a, b := r.f.User(), r.f.User()
	r.allocate(b + 1)
	r.book(a, 100)
	r.book(b, 100)
	r.run()
	r.caughtUp()
	r.tombstonesTaken()
	mini.Close()
	r.book(a, 50)
	r.book(b, 50)
	r.caughtUp()
	bookingtest.Eventually(t, 30*time.Second, "the Feed finds Redis down", func() error {
		if n := r.w.Pendings(); n == 0 || !r.w.RedisDown() {
			return fmt.Errorf("%d users pending, Redis down %v", n, r.w.RedisDown())
		}
		return nil
	})
	for i, u := range []uint64{a, b} {
		if s := r.read(u); s.Source != wallet.SourceStore || s.Stale || balanceOf(s, r.f.Asset) != 150 {
			t.Fatalf("read %d of a pending user: %+v, want from the store", i, s)
		}
	}
	if s := r.read(a); s.Source != wallet.SourceFallback || !s.Stale || balanceOf(s, r.f.Asset) != 150 {
		t.Fatalf("read of a pending user past the bound: %+v, want the copy, stale", s)
	}
}

// TestRedisDownStoreDown: with Redis down, reads go to the store at most
// StoreRate a second and then to the node's copy, marked stale, or fail;
// with the store down too, the copy answers stale; a user never read
// fails unavailable.
func TestRedisDownStoreDown(t *testing.T) {
	mini := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mini.Addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = rdb.Close() })
	now := time.Unix(1_700_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	r := newRig(t, rdb, wallet.Config{StoreRate: 2, Clock: clock})
	a, b, c := r.f.User(), r.f.User(), r.f.User()
	r.allocate(c + 1)
	for _, u := range []uint64{a, b, c} {
		r.book(u, 100)
	}
	r.run()
	r.caughtUp()
	if s := r.read(a); s.Source != wallet.SourceStore || balanceOf(s, r.f.Asset) != 100 {
		t.Fatalf("first read of a: %+v", s)
	}
	r.tombstonesTaken()
	mini.Close()
	// The bucket holds 2 tokens: two store reads, then the copy.
	for i, u := range []uint64{b, a} {
		if s := r.read(u); s.Source != wallet.SourceStore || s.Stale || balanceOf(s, r.f.Asset) != 100 {
			t.Fatalf("read %d with Redis down: %+v, want from the store", i, s)
		}
	}
	if s := r.read(a); s.Source != wallet.SourceFallback || !s.Stale || balanceOf(s, r.f.Asset) != 100 {
		t.Fatalf("read past the store's bound: %+v, want the copy, stale", s)
	}
	if _, err := r.w.Read(r.ctx, c); !errors.Is(err, wallet.ErrUnavailable) {
		t.Fatalf("read of a user never read, past the bound: %v, want ErrUnavailable", err)
	}
	mu.Lock()
	now = now.Add(time.Second) // two tokens again
	mu.Unlock()
	if s := r.read(c); s.Source != wallet.SourceStore || balanceOf(s, r.f.Asset) != 100 {
		t.Fatalf("read after the bucket refilled: %+v", s)
	}
	// The store down too: the copy, stale.
	if err := r.f.KV.Close(); err != nil {
		t.Fatal(err)
	}
	if s := r.read(b); s.Source != wallet.SourceFallback || !s.Stale || balanceOf(s, r.f.Asset) != 100 {
		t.Fatalf("read with both down: %+v, want the copy, stale", s)
	}
}
