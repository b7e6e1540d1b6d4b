package actors_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"redrain/actors"
	"redrain/booking"
	"redrain/ledger"
	"redrain/storage"
	"redrain/storage/storagetest"
)

// newFolder builds a Folder on the shared member that caches into its own
// redis-server.
func newFolder(t *testing.T) (*actors.Folder, *redis.Client, *storage.Pipeliner) {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: storagetest.Redis(t)})
	t.Cleanup(func() { _ = rc.Close() })
	p := storage.NewPipeliner(rc, 2)
	t.Cleanup(p.Close)
	return &actors.Folder{Budgets: env.budgets, Redis: p, Log: env.log, Every: 10 * time.Millisecond, Clock: time.Now}, rc, p
}

// view reads a budget's view and fails the test on an error or a broken
// identity.
func view(t *testing.T, p *storage.Pipeliner, id string, issued map[uint64]actors.LeaseIssued) *actors.BudgetView {
	t.Helper()
	v, err := actors.ReadBudgetView(context.Background(), env.tikv, p, id, issued)
	if err != nil {
		t.Fatalf("ReadBudgetView(%s): %v", id, err)
	}
	if !v.OK || len(v.Problems) != 0 {
		t.Fatalf("ReadBudgetView(%s): problems %q in %+v", id, v.Problems, v)
	}
	return v
}

// figures are a view's money figures, comparable in one go.
type figures struct {
	total, available, leased, returned, outstanding int64
	openLeases                                      int
	openAmount, issued, booked, inFlight, unspent   int64
	unattributed, ledger, actual                    int64
	unfolded                                        int
}

func figuresOf(v *actors.BudgetView) figures {
	return figures{v.Total, v.Available, v.Leased, v.Returned, v.Outstanding, v.OpenLeases, v.OpenAmount,
		v.Issued, v.Booked, v.InFlight, v.Unspent, v.Unattributed, v.Ledger, v.Actual, v.UnfoldedDetails}
}

func sumOf(grants ...ledger.Grant) int64 {
	var s int64
	for _, g := range grants {
		s += g.Amount
	}
	return s
}

// TestFoldAndBudgetView books, redeems, folds and closes leases on one
// budget and checks at every step that booked-per-lease, the fixture's
// money and every figure of the budget view add up, and that folding moves
// the ledger view without changing the actual balance.
func TestFoldAndBudgetView(t *testing.T) {
	const total = 1_000_000
	f := newFixture(t, total)
	b := newBooker(t)
	folder, rc, pipe := newFolder(t)
	ctx := context.Background()
	la, lb := f.Lease(f.Budget, 100_000), f.Lease(f.Budget, 50_000)

	v := view(t, pipe, f.Budget, nil)
	want := figures{total: total, available: total - 150_000, leased: 150_000, outstanding: 150_000, openLeases: 2,
		openAmount: 150_000, unspent: 150_000, ledger: total, actual: total}
	if got := figuresOf(v); got != want || v.Cached != nil || v.ID != f.Budget || v.Asset != string(f.Asset) {
		t.Fatalf("fresh view %+v (cached %v), want %+v", got, v.Cached, want)
	}

	// Three batches: three details.
	var booked []ledger.Grant
	for batch := range 3 {
		var gs []ledger.Grant
		for range 5 {
			u := f.User()
			gs = append(gs, f.Grant(u, 1, la, amountOf(u, 1)), f.Grant(u, 2, lb, amountOf(u, 2)))
		}
		wantOutcomes(t, book(t, b, gs), booking.BookedNow)
		booked = append(booked, gs...)
		f.Audit(booked)
		_ = batch
	}
	var onA, onB []ledger.Grant
	for _, g := range booked {
		if g.LeaseID == la.ID {
			onA = append(onA, g)
		} else {
			onB = append(onB, g)
		}
	}
	bookedA, bookedB := sumOf(onA...), sumOf(onB...)
	// Lease A's holder acknowledged 500 more than was booked (in Kafka);
	// lease B's reports nothing (its booked figure counts).
	reports := map[uint64]actors.LeaseIssued{la.ID: {Amount: bookedA + 500, Count: int64(len(onA)) + 2}}
	v = view(t, pipe, f.Budget, reports)
	want.issued, want.booked, want.inFlight = bookedA+bookedB+500, bookedA+bookedB, 500
	want.unspent = 150_000 - want.issued
	want.actual, want.unfolded = total-want.booked, 3
	if got := figuresOf(v); got != want {
		t.Fatalf("view after booking %+v, want %+v", got, want)
	}

	// Fold: the ledger view catches up with the actual balance, which the
	// cache now holds; booked per lease is unchanged.
	byLease := bookedByLease(t, f.Budget)
	fold, err := folder.FoldAll(ctx, f.Budget)
	if err != nil || fold.Details != 3 || fold.Amount != want.booked || fold.Count != int64(len(booked)) {
		t.Fatalf("FoldAll = %+v, %v, want 3 details of %d in %d grants", fold, err, want.booked, len(booked))
	}
	if got := bookedByLease(t, f.Budget); fmt.Sprint(got) != fmt.Sprint(byLease) {
		t.Fatalf("BookedByLease after the fold = %v, want %v", got, byLease)
	}
	if n := hotDetails(t, f.Budget); n != 0 {
		t.Fatalf("%d details left after the fold", n)
	}
	f.Audit(booked)
	v = view(t, pipe, f.Budget, reports)
	want.ledger, want.unfolded = want.actual, 0
	if got := figuresOf(v); got != want {
		t.Fatalf("view after the fold %+v, want %+v", got, want)
	}
	if v.Cached == nil || v.Cached.Actual != want.actual || v.Cached.AgeMs < 0 {
		t.Fatalf("cached view %+v, want actual %d", v.Cached, want.actual)
	}
	raw, err := rc.Get(ctx, actors.HotCacheKey(f.Budget)).Result()
	if err != nil || !strings.HasPrefix(raw, strconv.FormatInt(want.actual, 10)+":") {
		t.Fatalf("redis %s = %q, %v", actors.HotCacheKey(f.Budget), raw, err)
	}
	if bud := budget(t, f.Budget); bud.Folded != want.booked || bud.FoldedCount != int64(len(booked)) {
		t.Fatalf("budget after the fold %+v", bud)
	}

	// A redeem books under lease 0 and is folded there; its stream event
	// then moves it to lease A, folded on its own.
	u := f.User()
	event := f.Grant(u, 1, la, 333)
	redeem := event
	redeem.LeaseID, redeem.UserID = 0, ""
	wantOutcomes(t, book(t, b, []ledger.Grant{redeem}), booking.BookedNow)
	reports[la.ID] = actors.LeaseIssued{Amount: bookedA + 500 + 333}
	v = view(t, pipe, f.Budget, reports)
	want.booked += 333
	want.issued += 333 // reported by A's holder
	want.unspent -= 333
	want.unattributed, want.actual, want.unfolded = 333, want.actual-333, 1
	if got := figuresOf(v); got != want {
		t.Fatalf("view after a redeem %+v, want %+v", got, want)
	}
	if _, err := folder.FoldAll(ctx, f.Budget); err != nil {
		t.Fatal(err)
	}
	want.ledger, want.unfolded = want.actual, 0
	if got := figuresOf(view(t, pipe, f.Budget, reports)); got != want {
		t.Fatalf("view after folding a redeem %+v, want %+v", got, want)
	}
	if bud := budget(t, f.Budget); bud.FoldedUnattributed != 333 || bud.FoldedUnattributedCount != 1 {
		t.Fatalf("budget after folding a redeem %+v, want 333 unattributed", bud)
	}
	// Without the holder's report, the redeemed grant still counts as
	// issued: every booked grant was.
	if got := view(t, pipe, f.Budget, nil); got.Issued != want.booked || got.InFlight != 0 {
		t.Fatalf("view without reports: issued %d, in flight %d, want %d, 0", got.Issued, got.InFlight, want.booked)
	}
	wantOutcomes(t, book(t, b, []ledger.Grant{event}), booking.BookedAttrib)
	booked = append(booked, event)
	if _, err := folder.FoldAll(ctx, f.Budget); err != nil {
		t.Fatal(err)
	}
	want.unattributed = 0
	if got := figuresOf(view(t, pipe, f.Budget, reports)); got != want {
		t.Fatalf("view after folding the attribution %+v, want %+v", got, want)
	}
	onA = append(onA, event)
	bookedA += 333
	if l := lease(t, f.Budget, la.ID); l.Booked != bookedA || l.BookedCount != int64(len(onA)) {
		t.Fatalf("lease A after folds %+v, want booked %d in %d", l, bookedA, len(onA))
	}
	f.Audit(booked)

	// Closing with less issued than folds booked under the lease is refused.
	if err := env.budgets.CloseLease(f.Budget, la.ID, bookedA-1, int64(len(onA))); !errors.Is(err, ledger.ErrInvariant) {
		t.Fatalf("CloseLease under booked = %v, want ErrInvariant", err)
	}
	// Lease B closes with issued = booked (as recovery closes): its rest
	// returns; lease A closes with its 500 in flight counted issued.
	if err := env.budgets.CloseLease(f.Budget, lb.ID, bookedB, int64(len(onB))); err != nil {
		t.Fatal(err)
	}
	if err := env.budgets.CloseLease(f.Budget, la.ID, bookedA+500, int64(len(onA))+2); err != nil {
		t.Fatal(err)
	}
	v = view(t, pipe, f.Budget, nil)
	want = figures{total: total, available: total - bookedA - 500 - bookedB, leased: 150_000,
		returned: 150_000 - bookedA - 500 - bookedB, outstanding: bookedA + 500 + bookedB,
		issued: bookedA + 500 + bookedB, booked: bookedA + bookedB, inFlight: 500,
		ledger: total - bookedA - bookedB, actual: total - bookedA - bookedB}
	if got := figuresOf(v); got != want {
		t.Fatalf("view after closing both leases %+v, want %+v", got, want)
	}
	f.Audit(booked)
}

func lease(t *testing.T, budgetID string, id uint64) *ledger.Lease {
	t.Helper()
	l, err := ledger.UnmarshalLease(get(t, storage.LeaseKey(budgetID, id)))
	if err != nil {
		t.Fatalf("lease %s/%d: %v", budgetID, id, err)
	}
	return l
}

// TestFoldBatches: a backlog larger than one fold transaction folds in
// bounded steps, each reporting whether more remain.
func TestFoldBatches(t *testing.T) {
	const details = 300 // more than one fold's bound (256)
	f := newFixture(t, 1_000_000)
	l := f.Lease(f.Budget, 10_000)
	// Details written behind booking's back (no accounts): only the fold's
	// arithmetic is checked here, not the fixture's money.
	for i := range details {
		h := &ledger.HotDetail{BudgetID: f.Budget, Amount: 2, Count: 1, Leases: []ledger.LeaseUse{{LeaseID: l.ID, Amount: 2, Count: 1}}}
		put(t, storage.HotKey(f.Budget, uint64(1000+i), 0), ledger.MarshalHotDetail(nil, h))
	}
	first, err := env.budgets.Fold(f.Budget)
	if err != nil || first.Details != 256 || !first.More || first.Amount != 512 || first.Folded != 512 {
		t.Fatalf("first Fold = %+v, %v, want 256 details and more", first, err)
	}
	second, err := env.budgets.Fold(f.Budget)
	if err != nil || second.Details != details-256 || second.More || second.Folded != 2*details || second.Total != 1_000_000 {
		t.Fatalf("second Fold = %+v, %v, want %d details and no more", second, err, details-256)
	}
	empty, err := env.budgets.Fold(f.Budget)
	if err != nil || empty.Details != 0 || empty.More || empty.Folded != 2*details {
		t.Fatalf("Fold of nothing = %+v, %v", empty, err)
	}
	if got := lease(t, f.Budget, l.ID); got.Booked != 2*details || got.BookedCount != details {
		t.Fatalf("lease after folds %+v, want booked %d", got, 2*details)
	}
	if n := hotDetails(t, f.Budget); n != 0 {
		t.Fatalf("%d details left", n)
	}
	// A detail that books more under the lease than it holds stops the
	// fold with a broken invariant and changes nothing.
	h := &ledger.HotDetail{BudgetID: f.Budget, Amount: 10_000, Count: 1, Leases: []ledger.LeaseUse{{LeaseID: l.ID, Amount: 10_000, Count: 1}}}
	put(t, storage.HotKey(f.Budget, 5000, 0), ledger.MarshalHotDetail(nil, h))
	before := get(t, storage.BudgetKey(f.Budget))
	if _, err := env.budgets.Fold(f.Budget); !errors.Is(err, ledger.ErrInvariant) {
		t.Fatalf("Fold over the lease's amount = %v, want ErrInvariant", err)
	}
	if string(get(t, storage.BudgetKey(f.Budget))) != string(before) || hotDetails(t, f.Budget) != 1 {
		t.Fatal("a refused fold changed the budget or deleted the detail")
	}
}

// TestFoldersOnSeveralNodes: folders running at once (as on several nodes)
// while booking goes on fold every detail exactly once.
func TestFoldersOnSeveralNodes(t *testing.T) {
	f := newFixture(t, 10_000_000)
	second := f.AddBudget(10_000_000)
	la, lb := f.Lease(f.Budget, 1_000_000), f.Lease(second, 1_000_000)
	b := newBooker(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var pipes []*storage.Pipeliner
	for range 3 {
		fo, _, p := newFolder(t)
		pipes = append(pipes, p)
		wg.Go(func() { fo.Run(ctx, func() []string { return []string{f.Budget, second} }) })
	}
	var booked []ledger.Grant
	for range 20 {
		var gs []ledger.Grant
		for range 4 {
			u := f.User()
			g := f.Grant(u, 1, la, amountOf(u, 1))
			g2 := f.Grant(u, 2, lb, amountOf(u, 2))
			gs = append(gs, g, g2)
		}
		wantOutcomes(t, book(t, b, gs), booking.BookedNow)
		booked = append(booked, gs...)
	}
	eventually(t, 30*time.Second, "folders fold every detail", func() error {
		for _, id := range []string{f.Budget, second} {
			if n := hotDetails(t, id); n != 0 {
				return fmt.Errorf("budget %s: %d details unfolded", id, n)
			}
			v, err := actors.ReadBudgetView(ctx, env.tikv, pipes[0], id, nil)
			if err != nil {
				return err
			}
			if v.Cached == nil || v.Cached.Actual != v.Actual {
				return fmt.Errorf("budget %s: cached %+v, actual %d", id, v.Cached, v.Actual)
			}
		}
		return nil
	})
	cancel()
	wg.Wait()
	f.Audit(booked)
	for _, id := range []string{f.Budget, second} {
		v := view(t, pipes[0], id, nil)
		if v.Ledger != v.Actual || v.Booked != v.Issued || v.Total-v.Booked != v.Actual {
			t.Fatalf("budget %s after folding: %+v", id, v)
		}
	}
	views, err := actors.ReadBudgetViews(context.Background(), env.tikv, pipes[1], strings.TrimSuffix(f.Budget, "0"), nil)
	if err != nil || len(views) != 2 || views[0].ID != f.Budget || views[1].ID != second || !views[0].OK || !views[1].OK {
		t.Fatalf("ReadBudgetViews(%q) = %+v, %v, want both budgets, ok", strings.TrimSuffix(f.Budget, "0"), views, err)
	}
}

// TestBudgetViewProblems: a view says which identity a store breaks.
func TestBudgetViewProblems(t *testing.T) {
	f := newFixture(t, 100_000)
	l := f.Lease(f.Budget, 10_000)
	ctx := context.Background()
	if _, err := actors.ReadBudgetView(ctx, env.tikv, nil, "no/such-budget", nil); !errors.Is(err, actors.ErrNoBudget) {
		t.Fatalf("ReadBudgetView of a missing budget = %v, want ErrNoBudget", err)
	}
	problems := func(issued map[uint64]actors.LeaseIssued) []string {
		t.Helper()
		v, err := actors.ReadBudgetView(ctx, env.tikv, nil, f.Budget, issued)
		if err != nil {
			t.Fatal(err)
		}
		if v.OK != (len(v.Problems) == 0) {
			t.Fatalf("view ok %v with problems %q", v.OK, v.Problems)
		}
		return v.Problems
	}
	// A holder reporting more than its lease holds.
	if p := problems(map[uint64]actors.LeaseIssued{l.ID: {Amount: 10_001}}); len(p) != 2 ||
		!strings.Contains(p[0], "open lease 1: issued 10001") || !strings.Contains(p[1], "unspent -1 < 0") {
		t.Fatalf("problems of an over-reported lease = %q", p)
	}
	// A lease record that lost what a fold booked under it: the ledger's
	// sums no longer add up lease by lease.
	put(t, storage.HotKey(f.Budget, 1, 0), ledger.MarshalHotDetail(nil, &ledger.HotDetail{BudgetID: f.Budget, Amount: 70, Count: 1,
		Leases: []ledger.LeaseUse{{LeaseID: l.ID, Amount: 70, Count: 1}}}))
	if _, err := env.budgets.Fold(f.Budget); err != nil {
		t.Fatal(err)
	}
	tampered := lease(t, f.Budget, l.ID)
	tampered.Booked, tampered.BookedCount = 0, 0
	put(t, storage.LeaseKey(f.Budget, l.ID), ledger.MarshalLease(nil, tampered))
	// Issued, counted from what leases booked, falls short of booked too.
	if p := problems(nil); len(p) != 2 || !strings.Contains(p[0], "in flight -70 with in flight < 0") ||
		!strings.Contains(p[1], "actual 99930 != total 100000 - booked 0 lease by lease") {
		t.Fatalf("problems of a lease that lost its folded booking = %q", p)
	}
}
