package actors_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"redrain/actors"
	"redrain/cluster"
	"redrain/ledger"
	"redrain/metrics"
	"redrain/storage"
	"redrain/storage/storagetest"
	"redrain/tokens"
)

// env is shared by every test of the binary: one TiKV test cluster and one
// cluster member hosting the grains (starting a member costs about a
// second). Tests stay apart by using their own act_ids, budget ids and
// asset, so the money of one test never mixes with another's.
var env struct {
	log     *slog.Logger
	tikv    *storage.TiKV
	member  *cluster.Member
	budgets *actors.Budgets
}

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	env.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	dir, err := os.MkdirTemp("", "actors-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	env.tikv, err = storage.OpenTiKV(nil, dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer env.tikv.Close()
	env.member, err = cluster.Start(cluster.Config{Name: "actors-test",
		Kinds: actors.Kinds(env.log, env.tikv, time.Now, nil), Logger: env.log})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer env.member.Stop()
	env.budgets = actors.NewBudgets(env.member.Cluster, env.tikv)
	return m.Run()
}

// testSeq numbers fixtures; actSeq hands out act_ids no two tests share.
var testSeq, actSeq atomic.Uint64

// fixture is one test's slice of the shared store: its own asset, budgets
// and users.
type fixture struct {
	t      testing.TB
	asset  ledger.Asset
	budget string // the first budget; grants use it unless told otherwise
	totals map[string]int64
	users  []uint64
}

func newFixture(t testing.TB, total int64) *fixture {
	t.Helper()
	n := testSeq.Add(1)
	f := &fixture{t: t, asset: ledger.CoinAsset(fmt.Sprintf("asset%d", n)), totals: map[string]int64{}}
	f.budget = f.addBudget(total)
	return f
}

// addBudget creates one more budget of the fixture's asset.
func (f *fixture) addBudget(total int64) string {
	f.t.Helper()
	id := fmt.Sprintf("budget%d-%d", testSeq.Load(), len(f.totals))
	created, err := actors.EnsureBudget(context.Background(), env.tikv,
		&ledger.Budget{ID: id, Asset: f.asset, Total: total})
	if err != nil || !created {
		f.t.Fatalf("EnsureBudget(%s) = %v, %v, want created", id, created, err)
	}
	f.totals[id] = total
	return id
}

// lease takes a lease of want from a budget through its grain.
func (f *fixture) lease(budgetID string, want int64) *ledger.Lease {
	f.t.Helper()
	l, err := env.budgets.TakeLease(budgetID, want, "test-node", 1)
	if err != nil || l == nil {
		f.t.Fatalf("TakeLease(%s, %d) = %v, %v", budgetID, want, l, err)
	}
	return l
}

// user allocates a fresh act_id.
func (f *fixture) user() uint64 {
	id := 1<<20 + actSeq.Add(1)
	f.users = append(f.users, id)
	return id
}

// grant is a grant of the fixture's asset from its first budget.
func (f *fixture) grant(actID, rain uint64, lease *ledger.Lease, amount int64) ledger.Grant {
	g := ledger.Grant{
		AppID: 7, ActID: actID, UserID: fmt.Sprintf("user-%d", actID),
		ActivityID: "activity", SceneID: "scene", RainID: rain, Stage: tokens.StageFormal,
		AwardType: "cash", Asset: f.asset, Amount: amount,
		BudgetID: f.budget, OpenTime: 1_700_000_000_000, IssuedAt: 1_700_000_000_123,
	}
	if lease != nil {
		g.BudgetID, g.LeaseID = lease.BudgetID, lease.ID
	}
	return g
}

// newBooker builds a booker on the shared member with its own redis-server.
func newBooker(t testing.TB, brokers []string, partitions int32) (*actors.Booker, *redis.Client) {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: storagetest.Redis(t)})
	t.Cleanup(func() { _ = rc.Close() })
	return newBookerWith(t, rc, brokers, partitions), rc
}

// newBookerWith builds a booker that marks into rc.
func newBookerWith(t testing.TB, rc *redis.Client, brokers []string, partitions int32) *actors.Booker {
	t.Helper()
	p := storage.NewPipeliner(rc, 2)
	t.Cleanup(p.Close)
	b := actors.NewBooker(actors.BookerConfig{Log: env.log, TiKV: env.tikv, Redis: p,
		Brokers: brokers, Partitions: partitions, Metrics: &metrics.Registry{}, Clock: time.Now})
	b.Attach(env.member.Cluster)
	return b
}

// book books grants and fails the test on an error.
func book(t testing.TB, b *actors.Booker, grants []ledger.Grant) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := b.Book(ctx, grants)
	if err != nil {
		t.Fatalf("Book(%d grants): %v", len(grants), err)
	}
	if len(out) != len(grants) {
		t.Fatalf("Book(%d grants) gave %d outcomes", len(grants), len(out))
	}
	return out
}

// wantOutcomes checks every outcome is want.
func wantOutcomes(t *testing.T, out []byte, want byte) {
	t.Helper()
	for i, o := range out {
		if o != want {
			t.Fatalf("outcome[%d] = %d, want %d (outcomes %v)", i, o, want, out)
		}
	}
}

// get reads one key in a fresh snapshot; nil when missing.
func get(t testing.TB, key []byte) []byte {
	t.Helper()
	txn, err := env.tikv.Store.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Rollback()
	v, err := storage.Get(context.Background(), txn, key)
	if err != nil {
		t.Fatalf("get %q: %v", key, err)
	}
	return v
}

// put writes one key unconditionally (a writer behind the grains' back).
func put(t testing.TB, key, value []byte) {
	t.Helper()
	txn, err := env.tikv.Store.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if err := txn.Set(key, value); err != nil {
		t.Fatal(err)
	}
	if err := txn.Commit(context.Background()); err != nil {
		t.Fatalf("put %q: %v", key, err)
	}
}

// account reads and decodes a user's account; nil when it has none.
func account(t testing.TB, actID uint64) *ledger.Account {
	t.Helper()
	raw := get(t, storage.AccountKey(actID))
	if raw == nil {
		return nil
	}
	a, err := ledger.UnmarshalAccount(raw)
	if err != nil {
		t.Fatalf("account %d: %v", actID, err)
	}
	return a
}

// rawAccounts snapshots the encoded accounts of users.
func rawAccounts(t testing.TB, users []uint64) map[uint64]string {
	t.Helper()
	out := make(map[uint64]string, len(users))
	for _, u := range users {
		out[u] = string(get(t, storage.AccountKey(u)))
	}
	return out
}

// hotDetails counts a budget's unfolded hot details.
func hotDetails(t testing.TB, budgetID string) int {
	t.Helper()
	n := 0
	p := storage.HotPrefix(budgetID)
	err := env.tikv.Scan(context.Background(), p, storage.PrefixEnd(p), func(_, _ []byte) (bool, error) {
		n++
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func bookedByLease(t testing.TB, budgetID string) map[uint64]ledger.LeaseUse {
	t.Helper()
	m, err := actors.BookedByLease(context.Background(), env.tikv, budgetID)
	if err != nil {
		t.Fatalf("BookedByLease(%s): %v", budgetID, err)
	}
	return m
}

func budget(t testing.TB, id string) *ledger.Budget {
	t.Helper()
	raw := get(t, storage.BudgetKey(id))
	if raw == nil {
		t.Fatalf("budget %s missing", id)
	}
	b, err := ledger.UnmarshalBudget(raw)
	if err != nil {
		t.Fatalf("budget %s: %v", id, err)
	}
	return b
}

// audit checks the fixture's money against the grants the test expects to
// be booked (one per limit key, the first one offered): every account
// decodes and holds exactly its expected entries, balances equal the sum of
// entries, booked-per-lease equals the grants per lease, and funding, the
// budgets' unbooked part and the users sum to zero in the fixture's asset.
func (f *fixture) audit(expected []ledger.Grant) {
	t := f.t
	t.Helper()
	byUser := map[uint64]map[string]ledger.Grant{}
	type leaseKey struct {
		budget string
		lease  uint64
	}
	perLease := map[leaseKey]ledger.LeaseUse{}
	for _, g := range expected {
		if byUser[g.ActID] == nil {
			byUser[g.ActID] = map[string]ledger.Grant{}
		}
		if _, dup := byUser[g.ActID][g.LimitKey()]; dup {
			t.Fatalf("audit: expected grants repeat limit key %s", g.LimitKey())
		}
		byUser[g.ActID][g.LimitKey()] = g
		u := perLease[leaseKey{g.BudgetID, g.LeaseID}]
		u.Amount += g.Amount
		u.Count++
		perLease[leaseKey{g.BudgetID, g.LeaseID}] = u
	}
	var users int64
	for _, actID := range f.users {
		a := account(t, actID)
		want := byUser[actID]
		if a == nil {
			if len(want) > 0 {
				t.Fatalf("audit: user %d has no account, want %d entries", actID, len(want))
			}
			continue
		}
		if a.ActID != actID {
			t.Fatalf("audit: account of %d says act %d", actID, a.ActID)
		}
		if len(a.Entries) != len(want) {
			t.Fatalf("audit: user %d has %d entries, want %d", actID, len(a.Entries), len(want))
		}
		var sum int64
		for _, e := range a.Entries {
			g, ok := want[e.LimitKey]
			if !ok {
				t.Fatalf("audit: user %d has unexpected entry %+v", actID, e)
			}
			if e.Amount != g.Amount || e.AwardType != g.AwardType || e.Asset != g.Asset ||
				e.LeaseID != g.LeaseID || e.OutTradeNo != g.OutTradeNo() {
				t.Fatalf("audit: user %d entry %+v, want grant %+v", actID, e, g)
			}
			if e.Asset == f.asset {
				sum += e.Amount
			}
		}
		if got := a.Balance(f.asset); got != sum {
			t.Fatalf("audit: user %d balance %d, entries sum to %d", actID, got, sum)
		}
		users += sum
	}
	var booked int64
	for id, total := range f.totals {
		byLease := bookedByLease(t, id)
		for lease, use := range byLease {
			want := perLease[leaseKey{id, lease}]
			if use.Amount != want.Amount || use.Count != want.Count {
				t.Fatalf("audit: budget %s lease %d booked %d in %d grants, want %d in %d",
					id, lease, use.Amount, use.Count, want.Amount, want.Count)
			}
			booked += use.Amount
		}
		for k, want := range perLease {
			if k.budget == id && byLease[k.lease] != (ledger.LeaseUse{LeaseID: k.lease, Amount: want.Amount, Count: want.Count}) {
				t.Fatalf("audit: budget %s lease %d booked %+v, want %+v", id, k.lease, byLease[k.lease], want)
			}
		}
		bud := budget(t, id)
		if bud.Total != total || bud.Asset != f.asset {
			t.Fatalf("audit: budget %s = %+v, want total %d of %s", id, bud, total, f.asset)
		}
		booked -= total // the budget account holds total - booked; summed below
	}
	fundRaw := get(t, storage.FundKey(string(f.asset)))
	if len(fundRaw) != 8 {
		t.Fatalf("audit: funding of %s = %x", f.asset, fundRaw)
	}
	funding := int64(binary.BigEndian.Uint64(fundRaw))
	// booked now holds -(Σ budget accounts) = Σ booked - Σ total.
	if sum := funding - booked + users; sum != 0 {
		t.Fatalf("audit: funding %d + budgets %d + users %d = %d, want 0", funding, -booked, users, sum)
	}
}

// eventually polls cond until it returns nil, failing the test with its last
// error after within.
func eventually(t *testing.T, within time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, within, err)
		}
		<-tick.C
	}
}
