package actors_test

import (
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"redrain/actors"
	"redrain/booking"
	"redrain/booking/bookingtest"
	"redrain/cluster"
	"redrain/ledger"
	"redrain/metrics"
	"redrain/storage"
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
		Kinds: actors.Kinds(env.log, env.tikv, nil), Logger: env.log})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer env.member.Stop()
	env.budgets = actors.NewBudgets(env.member.Cluster, env.tikv)
	return m.Run()
}

// newFixture is a fixture in the shared store whose leases are taken
// through the budget grains.
func newFixture(t testing.TB, total int64) *bookingtest.Fixture {
	t.Helper()
	f := bookingtest.New(t, env.tikv, bookParts, total)
	f.TakeLease = func(budgetID string, want int64) (*ledger.Lease, error) {
		return env.budgets.TakeLease(budgetID, want, "test-node", 1)
	}
	return f
}

// bookParts is the partition count the tests' bookers spread accounts over:
// one, so that a Book is one transaction and writes one hot detail per
// budget, which the fold tests count.
const bookParts = 1

// newBooker builds a booker that owns no partition: it books straight into
// the store, as redeem does on a node that does not own the partition.
func newBooker(t testing.TB) *booking.Booker {
	t.Helper()
	return booking.New(booking.Config{Log: env.log, TiKV: env.tikv, Partitions: bookParts,
		Metrics: &metrics.Registry{}, Clock: time.Now, Owner: "actors-test"})
}

var (
	book         = bookingtest.Book
	wantOutcomes = bookingtest.WantOutcomes
	amountOf     = bookingtest.AmountOf
	eventually   = bookingtest.Eventually
)

func get(t testing.TB, key []byte) []byte { t.Helper(); return bookingtest.Get(t, env.tikv, key) }
func put(t testing.TB, key, value []byte) { t.Helper(); bookingtest.Put(t, env.tikv, key, value) }
func hotDetails(t testing.TB, budgetID string) int {
	t.Helper()
	return bookingtest.HotDetails(t, env.tikv, budgetID)
}
func budget(t testing.TB, id string) *ledger.Budget {
	t.Helper()
	return bookingtest.Budget(t, env.tikv, id)
}

func bookedByLease(t testing.TB, budgetID string) map[uint64]ledger.LeaseUse {
	t.Helper()
	return bookingtest.BookedByLease(t, env.tikv, budgetID)
}
