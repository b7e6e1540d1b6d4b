package node_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"redrain/campaign"
	"redrain/ledger"
	"redrain/reconcile"
	"redrain/storage"
	"redrain/storage/storagetest"
	"redrain/tokens"
)

// usersPerTest is how many distinct users a recovery test grants to.
const usersPerTest = 200

var demoBudget = campaign.BudgetID("demo", tokens.StageFormal, "cash")

func redisClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func limitKey(actID uint64) string {
	return tokens.LimitKey(actID, "demo", "rain", 1, tokens.StageFormal)
}

// openStore opens the embedded TiKV of a stopped node's data dir; the
// caller closes it before the next node starts on dir.
func openStore(t *testing.T, dir string) *storage.TiKV {
	t.Helper()
	kv, err := storage.OpenTiKV(nil, dir)
	if err != nil {
		t.Fatalf("open the store of %s: %v", dir, err)
	}
	return kv
}

func requireAuditOK(t *testing.T, kv *storage.TiKV) *reconcile.Report {
	t.Helper()
	r, err := reconcile.Run(context.Background(), kv)
	if err != nil {
		t.Fatalf("reconcile.Run: %v", err)
	}
	if !r.OK {
		var b strings.Builder
		r.WriteText(&b)
		t.Fatalf("reconcile found violations:\n%s", b.String())
	}
	return r
}

// TestRecovery runs one data dir through three lives against a real
// redis-server:
//  1. grants to usersPerTest users, booked, clean stop;
//  2. Redis loses everything (FLUSHALL): the node rebuilds bindings from
//     TiKV before it is ready, and every repeated grant
//     answers the identical packet without spending budget;
//  3. the store is left as a crash would leave it (leases of an earlier
//     incarnation still open, one with grants booked under it, one empty,
//     plus one of another node): the node closes its own with issued =
//     booked and leaves the other node's alone.
func TestRecovery(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	addr := storagetest.Redis(t)
	rdb := redisClient(t, addr)
	users := make([]string, usersPerTest)
	for i := range users {
		users[i] = fmt.Sprintf("u-%03d", i)
	}

	// Life 1: grant, book, stop cleanly.
	n1 := startNode(t, dir, addr)
	first := grantAll(t, n1, users)
	seenAct := map[uint64]string{}
	for i, g := range first {
		if g.Status != "issued" || g.Token == "" || g.AwardType != "cash" || g.Amount < 1 || g.Amount > 200 {
			t.Fatalf("first grant to %s = %+v, want a new cash packet of 1-200 fen", users[i], g)
		}
		if prev, dup := seenAct[g.ActID]; dup {
			t.Fatalf("users %s and %s share act_id %d", prev, users[i], g.ActID)
		}
		seenAct[g.ActID] = users[i]
	}
	waitBooked(t, n1, usersPerTest)
	nodeID := n1.ID
	stopNode(t, n1)

	// Redis loses its data.
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatalf("FLUSHALL: %v", err)
	}

	// Life 2: Redis is rebuilt from TiKV before the node is ready.
	n2 := startNode(t, dir, addr)
	if n2.ID != nodeID {
		t.Fatalf("node id after restart = %s, want %s (from %s)", n2.ID, nodeID, filepath.Join(dir, "node-id"))
	}
	if err := rdb.Get(ctx, storage.RedisEpochKey).Err(); err != nil {
		t.Fatalf("GET %s after rebuild: %v", storage.RedisEpochKey, err)
	}
	pipe := rdb.Pipeline()
	binds := make([]*redis.StringCmd, len(users))
	for i, u := range users {
		binds[i] = pipe.Get(ctx, storage.BindMarkKey(1, u))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		t.Fatalf("read the rebuilt index: %v", err)
	}
	for i, u := range users {
		if got, want := binds[i].Val(), strconv.FormatUint(first[i].ActID, 10); got != want {
			t.Errorf("after rebuild %s = %q (%v), want %q", storage.BindMarkKey(1, u), got, binds[i].Err(), want)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	again := grantAll(t, n2, users)
	for i, g := range again {
		want := first[i]
		want.Status = "booked"
		if g != want {
			t.Errorf("repeated grant to %s = %+v, want %+v", users[i], g, want)
		}
	}
	if s := getStats(t, n2); s.GrantsIssued != 0 {
		t.Errorf("after repeating every grant: stats = %+v, want grants_issued 0 (no budget spent)", s)
	}
	toks := make([]string, len(first))
	for i, g := range first {
		toks[i] = g.Token
	}
	var status struct {
		Results []struct {
			OutTradeNo string `json:"out_trade_no"`
			Status     string `json:"status"`
			ActID      uint64 `json:"act_id"`
			Amount     int64  `json:"amount"`
		} `json:"results"`
	}
	if err := post(n2, "/v1/tokens/status", map[string]any{"tokens": toks}, &status); err != nil {
		t.Fatal(err)
	}
	if len(status.Results) != len(toks) {
		t.Fatalf("token status answered %d results for %d tokens", len(status.Results), len(toks))
	}
	for i, r := range status.Results {
		if r.Status != "booked" || r.OutTradeNo != first[i].OutTradeNo || r.ActID != first[i].ActID || r.Amount != first[i].Amount {
			t.Errorf("status of %s's token = %+v, want booked %s act %d amount %d", users[i], r, first[i].OutTradeNo, first[i].ActID, first[i].Amount)
		}
	}
	audit(t, n2)
	stopNode(t, n2)

	// Between lives: make the store look as if life 1 had crashed (its
	// lease still open, everything under it booked) and as if it had also
	// taken an empty lease; add a lease of a node that never comes back.
	raw, err := os.ReadFile(filepath.Join(dir, "node-id"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(raw)); got != nodeID {
		t.Fatalf("node-id file = %q, want %q", got, nodeID)
	}
	const foreignOwner = "n-gone"
	kv := openStore(t, dir)
	requireAuditOK(t, kv)
	var reopened, empty, foreign ledger.Lease
	err = kv.Update(ctx, func(txn storage.Txn) error {
		rawBudget, err := storage.Get(ctx, txn, storage.BudgetKey(demoBudget))
		if err != nil {
			return err
		}
		bud, err := ledger.UnmarshalBudget(rawBudget)
		if err != nil {
			return err
		}
		var leases []*ledger.Lease
		p := storage.LeasePrefix(demoBudget)
		if err := storage.ScanTxn(txn, p, storage.PrefixEnd(p), func(_, v []byte) (bool, error) {
			l, err := ledger.UnmarshalLease(v)
			leases = append(leases, l)
			return err == nil, err
		}); err != nil {
			return err
		}
		var crashed *ledger.Lease
		for _, l := range leases {
			if !l.Closed {
				return fmt.Errorf("lease %d still open after a clean stop: %+v", l.ID, l)
			}
			if l.Owner == nodeID && l.IssuedCount > 0 && (crashed == nil || l.IssuedCount > crashed.IssuedCount) {
				crashed = l
			}
		}
		if crashed == nil {
			return fmt.Errorf("no closed lease of %s with grants among %d leases", nodeID, len(leases))
		}
		reopened = *crashed
		// Undo the close: the unspent part goes back out on the lease,
		// which expired long ago (its holder died).
		bud.Returned -= crashed.Amount - crashed.Issued
		crashed.Closed, crashed.Issued, crashed.IssuedCount = false, 0, 0
		crashed.Expires = time.Now().Add(-ledger.LeaseReclaimGrace - time.Minute).UnixMilli()
		// Incarnation 1 is older than any real process start.
		e := bud.TakeLease(10_000, nodeID, 1)
		f := bud.TakeLease(7_000, foreignOwner, 1)
		if e == nil || f == nil {
			return fmt.Errorf("budget %+v cannot lease", bud)
		}
		empty, foreign = *e, *f
		// Fold the older half of the unfolded details (the node folds as it
		// runs, so some may be folded already): recovery must count what
		// was folded into the lease and what was not.
		var details []*ledger.HotDetail
		var keys [][]byte
		hp := storage.HotPrefix(demoBudget)
		if err := storage.ScanTxn(txn, hp, storage.PrefixEnd(hp), func(k, v []byte) (bool, error) {
			h, err := ledger.UnmarshalHotDetail(v)
			keys, details = append(keys, append([]byte(nil), k...)), append(details, h)
			return err == nil, err
		}); err != nil {
			return err
		}
		byID := map[uint64]*ledger.Lease{}
		for _, l := range leases {
			byID[l.ID] = l
		}
		half := len(details) / 2
		if _, err := bud.Fold(details[:half], byID); err != nil {
			return err
		}
		for _, k := range keys[:half] {
			if err := txn.Delete(k); err != nil {
				return err
			}
		}
		bud.Version++
		if err := bud.Check(); err != nil {
			return err
		}
		for _, l := range append(leases, e, f) {
			if err := txn.Set(storage.LeaseKey(demoBudget, l.ID), ledger.MarshalLease(nil, l)); err != nil {
				return err
			}
		}
		return txn.Set(storage.BudgetKey(demoBudget), ledger.MarshalBudget(nil, bud))
	})
	if err != nil {
		t.Fatalf("leave open leases behind: %v", err)
	}
	// A crash leaves a consistent store: open leases are allowed.
	if r := requireAuditOK(t, kv); r.Budgets[0].OpenLeases != 3 {
		t.Fatalf("after reopening: budget %+v, want 3 open leases", r.Budgets[0])
	}
	if err := kv.Close(); err != nil {
		t.Fatal(err)
	}

	// Life 3: the earlier incarnation's lease without expiry is closed
	// before ready, its expired one reclaimed soon after (with a fence).
	n3 := startNode(t, dir, addr)
	for deadline := time.Now().Add(60 * time.Second); ; {
		r := audit(t, n3)
		if len(r.Budgets) != 1 {
			t.Fatalf("audit budgets = %+v, want the demo budget only", r.Budgets)
		}
		b := r.Budgets[0]
		if b.OpenLeases == 1 && b.LeasedOpen == foreign.Amount {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after recovery budget = %+v, want only %s's lease of %d open", b, foreignOwner, foreign.Amount)
		}
		time.Sleep(500 * time.Millisecond)
	}
	stopNode(t, n3)

	kv = openStore(t, dir)
	defer kv.Close()
	requireAuditOK(t, kv)
	got := map[uint64]*ledger.Lease{}
	p := storage.LeasePrefix(demoBudget)
	if err := kv.Scan(ctx, p, storage.PrefixEnd(p), func(_, v []byte) (bool, error) {
		l, err := ledger.UnmarshalLease(v)
		if err == nil {
			got[l.ID] = l
		}
		return err == nil, err
	}); err != nil {
		t.Fatal(err)
	}
	if l := got[reopened.ID]; l == nil || !l.Closed || l.Issued != reopened.Issued || l.IssuedCount != reopened.IssuedCount {
		t.Errorf("orphan lease with grants after recovery = %+v, want closed with issued %d in %d grants", l, reopened.Issued, reopened.IssuedCount)
	}
	if l := got[empty.ID]; l == nil || !l.Closed || l.Issued != 0 || l.IssuedCount != 0 {
		t.Errorf("empty orphan lease after recovery = %+v, want closed with issued 0", l)
	}
	if l := got[foreign.ID]; l == nil || l.Closed {
		t.Errorf("lease of %s after recovery = %+v, want it left open (not this node's)", foreignOwner, l)
	}
}

// TestForeignRedis starts a node on a new store against a Redis that holds
// another store's index: the node deletes every rr:* key before it serves,
// leaves other keys alone, and grants from scratch.
func TestForeignRedis(t *testing.T) {
	ctx := context.Background()
	addr := storagetest.Redis(t)
	rdb := redisClient(t, addr)
	const ghost = "u-ghost"
	stale := map[string]string{
		storage.RedisEpochKey: "0123456789abcdef",
		// Limit and booked marks as nodes wrote them before shards were
		// owned.
		"rr:l:" + limitKey(777):       "i:cash:5",
		"rr:k:" + limitKey(777):       "b:cash:5",
		"rr:k:" + limitKey(1):         "b:cash:9",
		storage.BindMarkKey(1, ghost): "777",
		"rr:l:42_demo_rain_1_gray":    "p",
	}
	for k, v := range stale {
		if err := rdb.Set(ctx, k, v, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	const bystander = "someone-else:key"
	if err := rdb.Set(ctx, bystander, "keep", 0).Err(); err != nil {
		t.Fatal(err)
	}

	n := startNode(t, t.TempDir(), addr)
	for k, v := range stale {
		got, err := rdb.Get(ctx, k).Result()
		if k == storage.RedisEpochKey {
			if err != nil || got == v || got == "" {
				t.Errorf("%s = %q (%v), want the new store's epoch, not the stale %q", k, got, err, v)
			}
			continue
		}
		if !errors.Is(err, redis.Nil) {
			t.Errorf("stale %s = %q (%v), want it deleted", k, got, err)
		}
	}
	if got, err := rdb.Get(ctx, bystander).Result(); err != nil || got != "keep" {
		t.Errorf("%s = %q (%v), want it untouched", bystander, got, err)
	}

	got := grantAll(t, n, []string{ghost, "u-new"})
	for i, g := range got {
		if g.Status != "issued" || g.ActID == 777 || g.Amount < 1 {
			t.Errorf("grant %d on a fresh store = %+v, want a new packet under a fresh act_id", i, g)
		}
	}
	waitBooked(t, n, 2)
	audit(t, n)
}

// TestIndexLostWhileServing: Redis loses everything (FLUSHALL) while a
// ready node serves; the node sees its epoch key gone, rebuilds the
// binding index from the store without a restart (the epoch key back,
// every booked user's binding restored, redrain_redis_index_lost back to
// 0), and a repeated grant answers the identical packet.
func TestIndexLostWhileServing(t *testing.T) {
	ctx := context.Background()
	addr := storagetest.Redis(t)
	rdb := redisClient(t, addr)
	n := startNode(t, t.TempDir(), addr)
	_, first := grantAs(t, n, 1, "lost-1", "demo", "rain", 1)
	if first.Token == "" {
		t.Fatalf("grant = %+v", first)
	}
	waitDrained(t, n)
	epoch := rdb.Get(ctx, storage.RedisEpochKey).Val()
	if epoch == "" {
		t.Fatal("no epoch key after recovery")
	}
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for rdb.Get(ctx, storage.RedisEpochKey).Val() != epoch {
		if time.Now().After(deadline) {
			t.Fatal("the epoch key was not rebuilt within 30 s of the flush")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := rdb.Get(ctx, storage.BindMarkKey(1, "lost-1")).Val(); got != strconv.FormatUint(first.ActID, 10) {
		t.Fatalf("binding of lost-1 after the rebuild = %q, want %d", got, first.ActID)
	}
	if _, body := get(t, n, "/metrics"); !strings.Contains(string(body), "redrain_redis_index_lost 0\n") {
		t.Fatalf("redrain_redis_index_lost is not 0 after the rebuild")
	}
	if _, again := grantAs(t, n, 1, "lost-1", "demo", "rain", 1); again.Token != first.Token || again.ActID != first.ActID {
		t.Fatalf("the repeat after the rebuild = %+v, want %+v", again, first)
	}
}
