package expiry_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"redrain/actors"
	"redrain/booking"
	"redrain/booking/bookingtest"
	"redrain/expiry"
	"redrain/ledger"
	"redrain/metrics"
	"redrain/reconcile"
	"redrain/storage"
	"redrain/storage/storagetest"
)

const (
	gold = ledger.Asset("coin:gold")
	rose = ledger.Asset("item:rose")
	// roseBudget is where expired roses return (the one budget granting them).
	roseBudget = "spring/formal/rose"
)

var testLog = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

// clock is a settable booking clock.
type clock struct{ ms atomic.Int64 }

func (c *clock) now() time.Time { return time.UnixMilli(c.ms.Load()) }
func (c *clock) set(y int, m time.Month, d int) {
	c.ms.Store(time.Date(y, m, d, 12, 0, 0, 0, time.UTC).UnixMilli())
}

func newBooker(f *bookingtest.Fixture, c *clock, name string) *booking.Booker {
	return booking.New(booking.Config{Log: testLog, TiKV: f.KV, Partitions: f.Parts, Metrics: &metrics.Registry{},
		Clock: c.now, Owner: name})
}

// lot is a credit of the model, spent first-in first-out.
type lot struct {
	month ledger.Month
	left  int64
}

// model is every user's lots per asset.
type model map[uint64]map[ledger.Asset][]lot

func (m model) credit(act uint64, a ledger.Asset, month ledger.Month, n int64) {
	if m[act] == nil {
		m[act] = map[ledger.Asset][]lot{}
	}
	m[act][a] = append(m[act][a], lot{month, n})
}

func (m model) debit(act uint64, a ledger.Asset, n int64) {
	lots := m[act][a]
	for i := 0; n > 0; i++ {
		take := min(n, lots[i].left)
		lots[i].left -= take
		n -= take
	}
}

func (m model) balance(act uint64, a ledger.Asset) (n int64) {
	for _, l := range m[act][a] {
		n += l.left
	}
	return n
}

// expire takes from the lots before cutoff what is left of them, and
// returns it.
func (m model) expire(act uint64, a ledger.Asset, cutoff ledger.Month) (n int64) {
	for i := range m[act][a] {
		if l := &m[act][a][i]; l.month < cutoff {
			n += l.left
			l.left = 0
		}
	}
	return n
}

// seed books, over 2025, recharges of gold, roses received and spending
// of both for users users, and keeps the model of it.
func seed(t *testing.T, b *booking.Booker, c *clock, rng *rand.Rand, users []uint64, m model) {
	t.Helper()
	ctx := context.Background()
	for mo := time.January; mo <= time.December; mo++ {
		c.set(2025, mo, 1+rng.IntN(27))
		month := ledger.MonthOf(c.ms.Load())
		var moves []ledger.Move
		for _, u := range users {
			if rng.IntN(3) == 0 {
				continue
			}
			key := fmt.Sprintf("s%d-%d", mo, u)
			switch rng.IntN(4) {
			case 0, 1:
				n := 1 + rng.Int64N(100)
				moves = append(moves, ledger.Move{ActID: u, Kind: ledger.MoveRecharge, Key: key, AppID: 1,
					Legs: []ledger.Leg{{Asset: gold, Amount: n}}, Counter: "recharge/1"})
				m.credit(u, gold, month, n)
			case 2:
				n := 1 + rng.Int64N(5)
				moves = append(moves, ledger.Move{ActID: u, Kind: ledger.MoveGiftIn, Key: key,
					Legs: []ledger.Leg{{Asset: rose, Amount: n}}, Counter: "transfer/" + key})
				m.credit(u, rose, month, n)
			case 3:
				a := []ledger.Asset{gold, rose}[rng.IntN(2)]
				bal := m.balance(u, a)
				if bal == 0 {
					continue
				}
				n := 1 + rng.Int64N(bal)
				moves = append(moves, ledger.Move{ActID: u, Kind: ledger.MoveConsume, Key: key, AppID: 1,
					Legs: []ledger.Leg{{Asset: a, Amount: -n}}, Counter: "merchant/m1"})
				m.debit(u, a, n)
			}
		}
		res, err := b.Move(ctx, moves)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range res {
			if r != ledger.MoveApplied {
				t.Fatalf("seed move %+v: %v", moves[i], r)
			}
		}
	}
}

// check compares every user's balances with the model.
func check(t *testing.T, b *booking.Booker, users []uint64, m model) {
	t.Helper()
	accs, err := b.Accounts(context.Background(), users)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		for _, a := range []ledger.Asset{gold, rose} {
			if got, want := accs[u].Balance(a), m.balance(u, a); got != want {
				t.Fatalf("act %d: %s balance %d, the model's %d", u, a, got, want)
			}
		}
	}
}

// lossy fails the Move call numbered failAt (from 1) after booking it, as
// a node that died before the answer would, and serves reads from before
// the first sweep when stale is set (a node that read before another
// booked).
type lossy struct {
	*booking.Booker
	calls, failAt int
	stale         map[uint64]*ledger.Account
	lost          []ledger.Move // booked, answer lost
}

var errLost = errors.New("answer lost")

func (l *lossy) Move(ctx context.Context, moves []ledger.Move) ([]ledger.MoveResult, error) {
	res, err := l.Booker.Move(ctx, moves)
	if l.calls++; l.calls == l.failAt && err == nil {
		l.lost = append(l.lost, moves...)
		return nil, errLost
	}
	return res, err
}

func (l *lossy) Accounts(ctx context.Context, ids []uint64) (map[uint64]*ledger.Account, error) {
	if l.stale != nil {
		out := map[uint64]*ledger.Account{}
		for _, id := range ids {
			out[id] = l.stale[id]
		}
		return out, nil
	}
	return l.Booker.Accounts(ctx, ids)
}

// TestSweep: a year of seeded recharges, roses and spending, then sweeps
// in March 2026 with gold valid 12 months (credits before 2025-03 expire)
// and roses 1 month (before 2026-02: all of them, back to their budget).
// The first sweep loses an answer mid-way; a sweep on a restarted
// booker from reads taken before the first repeats what was booked and
// books the rest; a third books nothing. Every balance is the model's and
// the report's sums are what the model expired.
func TestSweep(t *testing.T) {
	f := bookingtest.New(t, storagetest.TiKV(t, ""), 4, 1_000_000)
	c := &clock{}
	b := newBooker(f, c, "a")
	rng := rand.New(rand.NewPCG(13, 2))
	users := make([]uint64, 60)
	for i := range users {
		users[i] = uint64(1000 + i)
	}
	m := model{}
	seed(t, b, c, rng, users, m)
	check(t, b, users, m)

	c.set(2026, time.March, 3)
	now := c.ms.Load()
	s := &expiry.Sweeper{Rules: map[ledger.Asset]int{gold: 12, rose: 1}, Sources: map[ledger.Asset]string{rose: roseBudget},
		ReadBatch: 7, MoveBatch: 5}
	before, err := b.Accounts(context.Background(), users)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[ledger.Asset]int64{}
	moves := 0
	for _, u := range users {
		for a, cutoff := range map[ledger.Asset]ledger.Month{gold: ledger.MonthOf(now) - 12, rose: ledger.MonthOf(now) - 1} {
			if n := m.expire(u, a, cutoff); n > 0 {
				counter := "expired/" + string(a)
				if a == rose {
					counter = "budget/" + roseBudget
				}
				if want[counter] == nil {
					want[counter] = map[ledger.Asset]int64{}
				}
				want[counter][a] += n
				moves++
			}
		}
	}
	if moves < 20 {
		t.Fatalf("the seed leaves %d expiries: too few to test", moves)
	}

	first := &lossy{Booker: b, failAt: 3}
	s.Booker = first
	r1, err := s.Sweep(context.Background(), slices.Values(users), now)
	if !errors.Is(err, errLost) || r1.Applied != 10 {
		t.Fatalf("first sweep: %+v, %v; want 10 applied then the answer lost", r1, err)
	}

	// A restarted node, from reads taken before the first sweep.
	b2 := newBooker(f, c, "b")
	s.Booker = &lossy{Booker: b2, stale: before}
	r2, err := s.Sweep(context.Background(), slices.Values(users), now)
	if err != nil {
		t.Fatal(err)
	}
	if r2.Repeated != 15 || r2.Applied != moves-15 || r2.Refused != 0 || r2.Accounts != len(users) {
		t.Fatalf("second sweep %+v: want 15 repeated (three batches of 5 booked) and %d applied", r2, moves-15)
	}
	s.Booker = b2
	r3, err := s.Sweep(context.Background(), slices.Values(users), now)
	if err != nil || r3.Applied+r3.Repeated+r3.Refused != 0 {
		t.Fatalf("third sweep %+v, %v: want nothing", r3, err)
	}
	check(t, b2, users, m)
	got := map[string]map[ledger.Asset]int64{}
	for _, r := range []expiry.Report{r1, r2} {
		for counter, byAsset := range r.Expired {
			if got[counter] == nil {
				got[counter] = map[ledger.Asset]int64{}
			}
			for a, n := range byAsset {
				got[counter][a] += n
			}
		}
	}
	for _, mv := range first.lost {
		got[mv.Counter][mv.Legs[0].Asset] -= mv.Legs[0].Amount
	}
	if !maps.EqualFunc(got, want, maps.Equal) {
		t.Fatalf("expired %v (reported, and the batch whose answer was lost), the model's %v", got, want)
	}
}

// TestSweepReturnsToBudget: coins granted from a budget in January 2025,
// partly spent in June, expire in March 2026 into the budget's account:
// the commits write what returns as hot details, the budget's grain folds
// them into its record (Budget.Expired), and the audit's
// budget_conservation holds before and after the fold, and fails when a
// hot detail is lost.
func TestSweepReturnsToBudget(t *testing.T) {
	f := bookingtest.New(t, storagetest.TiKV(t, ""), 4, 1_000_000)
	c := &clock{}
	b := newBooker(f, c, "a")
	ctx := context.Background()
	budgets := actors.NewLocalBudgets(testLog, f.KV)
	f.TakeLease = func(id string, want int64) (*ledger.Lease, error) { return budgets.TakeLease(id, want, "test", 1) }
	lease := f.Lease(f.Budget, 100_000)
	c.set(2025, time.January, 10)
	var grants []ledger.Grant
	var users []uint64
	for range 30 {
		u := f.User()
		users = append(users, u)
		grants = append(grants, f.Grant(u, 1, lease, 100))
	}
	bookingtest.WantOutcomes(t, bookingtest.Book(t, b, grants), booking.BookedNow)
	c.set(2025, time.June, 10)
	var spend []ledger.Move
	for i, u := range users {
		spend = append(spend, ledger.Move{ActID: u, Kind: ledger.MoveConsume, Key: "c", AppID: 1,
			Legs: []ledger.Leg{{Asset: f.Asset, Amount: -int64(i)}}, Counter: "merchant/m1"})
	}
	spend = spend[1:] // no leg of 0
	if _, err := b.Move(ctx, spend); err != nil {
		t.Fatal(err)
	}
	c.set(2026, time.March, 3)
	s := &expiry.Sweeper{Booker: b, Rules: map[ledger.Asset]int{f.Asset: 12}, Sources: map[ledger.Asset]string{f.Asset: f.Budget}}
	r, err := s.Sweep(ctx, slices.Values(users), c.ms.Load())
	want := int64(30*100 - 29*30/2)
	if err != nil || r.Applied != 30 || r.Expired["budget/"+f.Budget][f.Asset] != want {
		t.Fatalf("sweep %+v, %v; want 30 expiries returning %d", r, err, want)
	}
	audit := func(when string) *reconcile.Budget {
		t.Helper()
		rep, err := reconcile.Run(ctx, f.KV)
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range rep.Checks {
			if !ch.OK {
				t.Fatalf("%s: audit %s: %s %q", when, ch.Name, ch.Detail, ch.Violations)
			}
		}
		for i := range rep.Budgets {
			if rep.Budgets[i].ID == f.Budget {
				return &rep.Budgets[i]
			}
		}
		t.Fatalf("%s: no budget %s in the audit", when, f.Budget)
		return nil
	}
	if br := audit("before the fold"); br.Expired != want {
		t.Fatalf("audit before the fold: budget expired %d, want %d", br.Expired, want)
	}
	for {
		fo, err := budgets.Fold(f.Budget)
		if err != nil {
			t.Fatal(err)
		}
		if !fo.More {
			break
		}
	}
	if got := bookingtest.Budget(t, f.KV, f.Budget); got.Expired != want {
		t.Fatalf("budget record after the fold: expired %d, want %d", got.Expired, want)
	}
	if br := audit("after the fold"); br.Expired != want {
		t.Fatalf("audit after the fold: budget expired %d, want %d", br.Expired, want)
	}
	// A second sweep returns nothing more.
	if r, err := s.Sweep(ctx, slices.Values(users), c.ms.Load()); err != nil || r.Applied != 0 {
		t.Fatalf("second sweep %+v, %v", r, err)
	}
	// An expiry into the budget whose hot detail is lost: the audit sees it.
	bad := bookingtest.Budget(t, f.KV, f.Budget)
	bad.Expired--
	bookingtest.Put(t, f.KV, storage.BudgetKey(f.Budget), ledger.MarshalBudget(nil, bad))
	rep, err := reconcile.Run(ctx, f.KV)
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range rep.Checks {
		if ch.Name == "budget_conservation" && ch.OK {
			t.Fatal("budget_conservation holds with one expired piece missing from the budget")
		}
	}
}

// BenchmarkSweep: accounts swept per second through a Booker that owns
// all 16 partitions (the embedded broker's group, the embedded store):
// reads from the owners' memory, moves applied in their units, each account holding gold recharged in
// January 2025 and half of it spent in June, swept in March 2026 with
// gold valid 12 months: one read per 1,024 accounts, one booking call per
// 4,096 moves. Every account expires (the moves are booked); b.N accounts.
func BenchmarkSweep(b *testing.B) {
	const parts = 16
	f := bookingtest.New(b, storagetest.TiKV(b, ""), parts, 1_000_000)
	k := storagetest.Kafka(b, "", parts)
	c := &clock{}
	bk := booking.New(booking.Config{Log: testLog, TiKV: f.KV, Brokers: k.Brokers, Partitions: parts, Metrics: &metrics.Registry{},
		Clock: c.now, Owner: "a"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- bk.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-done })
	for deadline := time.Now().Add(time.Minute); len(bk.Claims()) < parts; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("the booker owns %d of %d partitions after a minute", len(bk.Claims()), parts)
		}
	}
	ids := make([]uint64, b.N)
	for i := range ids {
		ids[i] = uint64(1 + i)
	}
	for _, step := range []struct {
		month time.Month
		kind  ledger.MoveKind
		n     int64
	}{{time.January, ledger.MoveRecharge, 100}, {time.June, ledger.MoveConsume, -50}} {
		c.set(2025, step.month, 5)
		for chunk := range slices.Chunk(ids, expiry.MoveBatch) {
			moves := make([]ledger.Move, len(chunk))
			for i, id := range chunk {
				moves[i] = ledger.Move{ActID: id, Kind: step.kind, Key: fmt.Sprint("s", step.month), AppID: 1,
					Legs: []ledger.Leg{{Asset: gold, Amount: step.n}}, Counter: "recharge/1"}
				if step.kind == ledger.MoveConsume {
					moves[i].Counter = "merchant/m1"
				}
			}
			if _, err := bk.Move(ctx, moves); err != nil {
				b.Fatal(err)
			}
		}
	}
	c.set(2026, time.March, 3)
	s := &expiry.Sweeper{Booker: bk, Rules: map[ledger.Asset]int{gold: 12}}
	b.ResetTimer()
	r, err := s.Sweep(ctx, slices.Values(ids), c.ms.Load())
	b.StopTimer()
	if err != nil || r.Applied != b.N || r.Expired["expired/coin:gold"][gold] != 50*int64(b.N) {
		b.Fatalf("sweep %+v, %v", r, err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "accounts/s")
}

// BenchmarkPlan: the sweep's arithmetic alone, per account of 24 months
// of summaries in two assets with a validity.
func BenchmarkPlan(b *testing.B) {
	c := &clock{}
	a := &ledger.Account{ActID: 1}
	for mo := range 24 {
		c.set(2024+mo/12, time.Month(mo%12+1), 3)
		for _, asset := range []ledger.Asset{gold, rose} {
			m := ledger.Move{ActID: 1, Kind: ledger.MoveGiftIn, Key: fmt.Sprint(asset, mo), Legs: []ledger.Leg{{Asset: asset, Amount: 10}}, Counter: "transfer/x"}
			if _, _, err := a.ApplyMove(&m, c.ms.Load()); err != nil {
				b.Fatal(err)
			}
		}
	}
	s := &expiry.Sweeper{Rules: map[ledger.Asset]int{gold: 12, rose: 6}}
	now := ledger.MonthOf(c.ms.Load()) + 1
	var moves []ledger.Move
	for b.Loop() {
		moves = s.Plan(moves[:0], a, now)
	}
	if len(moves) != 2 {
		b.Fatalf("%d moves", len(moves))
	}
}
