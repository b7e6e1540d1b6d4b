package booking_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sync"
	"testing"

	"redrain/booking"
	"redrain/booking/bookingtest"
	"redrain/ledger"
	"redrain/storage"
)

// grantsFor is one grant of rain to each user.
func grantsFor(f *bookingtest.Fixture, users []uint64, rain uint64, l *ledger.Lease) []ledger.Grant {
	gs := make([]ledger.Grant, len(users))
	for i, u := range users {
		gs[i] = f.Grant(u, rain, l, amountOf(u, rain))
	}
	return gs
}

// freshGrants is one grant of rain to each of n new users.
func freshGrants(f *bookingtest.Fixture, n int, rain uint64, l *ledger.Lease) []ledger.Grant {
	users := make([]uint64, n)
	for i := range users {
		users[i] = f.User()
	}
	return grantsFor(f, users, rain, l)
}

func usersOf(f *bookingtest.Fixture, n int) []uint64 {
	us := make([]uint64, n)
	for i := range us {
		us[i] = f.User()
	}
	return us
}

// bookedOwner is a fixture of one partition with one lease, whose owner
// (its committer running) has booked one record of a grant to each of n
// users.
func bookedOwner(t testing.TB, n int) (*bookingtest.Fixture, *ledger.Lease, []uint64, []ledger.Grant, *booking.Booker, *owner) {
	t.Helper()
	f := newFixture(t, 1, 1_000_000)
	l := f.Lease(f.Budget, 100_000)
	users := usersOf(f, n)
	r0 := grantsFor(f, users, 1, l)
	o := newBooker(t, f, "owner/1", nil)
	oo := startOwner(t, f, o, false, 0)
	oo.feed(0, r0)
	oo.waitBooked()
	return f, l, users, r0, o, oo
}

// TestFencedOwnerWritesNothing: owner A has two units applied but not
// committed when B takes the partition over (a newer epoch). A's commits
// fail fenced: A rolls back, gives the partition up and writes nothing. A
// redeem through A then goes straight into the store, and B books every
// record exactly once.
func TestFencedOwnerWritesNothing(t *testing.T) {
	f := newFixture(t, 1, 1_000_000)
	l := f.Lease(f.Budget, 100_000)
	users := usersOf(f, 20)
	r0, r1 := grantsFor(f, users[:10], 1, l), grantsFor(f, users[10:], 1, l)
	redeem := f.Grant(users[0], 2, nil, 77)

	a := newBooker(t, f, "node-a/1", nil)
	oa := startOwner(t, f, a, true, 0)
	oa.feed(0, r0)
	oa.feed(0, r1)
	if s := partState(t, f, 0); s.Epoch != 1 || s.Owner != "node-a/1" {
		t.Fatalf("state after A took over: %+v", s)
	}

	b := newBooker(t, f, "node-b/1", nil)
	ob := startOwner(t, f, b, false, 0)
	taken := partState(t, f, 0)
	if taken.Epoch != 2 || taken.Owner != "node-b/1" || taken.NextSeq != 1 || taken.Booked != 0 {
		t.Fatalf("state after B took over: %+v", taken)
	}
	before := bookingtest.Snapshot(t, f.KV, "rr/")

	// Now A's committer runs: every unit A applied fails its check.
	oa.startCommits()
	eventually(t, within, "A gives the partition up", func() error {
		if c := a.Claims(); len(c) != 0 {
			return fmt.Errorf("A still claims %v", c)
		}
		return nil
	})
	if err := a.Broken(); err != nil {
		t.Fatalf("fencing broke A: %v", err)
	}
	if got := a.Booked.Load(); got != 0 {
		t.Fatalf("fenced A counted %d grants booked", got)
	}
	if after := bookingtest.Snapshot(t, f.KV, "rr/"); !maps.Equal(after, before) {
		t.Fatalf("the fenced owner wrote to the store (%d keys before, %d after)", len(before), len(after))
	}

	// A redeem through A, which owns nothing now, goes into the store; B
	// gets the records from offset 0, and r0 again after r1.
	wantOutcomes(t, book(t, a, []ledger.Grant{redeem}), booking.BookedNow)
	ob.feed(0, r0)
	ob.feed(0, r1)
	ob.feed(0, r0)
	ob.waitBooked()
	counted(t, "B booked", b.Booked.Load, int64(len(r0)+len(r1)))
	if s := partState(t, f, 0); s.Epoch != taken.Epoch || s.Owner != "node-b/1" || s.Booked != 3 {
		t.Fatalf("state after B booked: %+v", s)
	}
	f.Audit(append(append(slices.Clone(r0), r1...), redeem))
}

// TestOwnerCatchesUpWithWritesElsewhere: while the owner has two units
// applied and not committed, another node (a booker that owns nothing)
// redeems a grant of one of them and a grant whose stream event is in the
// other. The owner's commit finds the journal grown, rolls back, replays
// the foreign journal and applies its records again: the redeemed grants
// are attributed to their leases, nothing is lost or booked twice, and hot
// details per lease (lease 0 included) add up.
func TestOwnerCatchesUpWithWritesElsewhere(t *testing.T) {
	f := newFixture(t, 1, 1_000_000)
	l1, l2 := f.Lease(f.Budget, 100_000), f.Lease(f.Budget, 100_000)
	users := usersOf(f, 20)
	r0, r1 := grantsFor(f, users[:10], 1, l1), grantsFor(f, users[10:], 1, l2)
	asRedeem := func(g ledger.Grant) ledger.Grant {
		g.LeaseID, g.UserID = 0, ""
		return g
	}
	onlyRedeemed := f.Grant(f.User(), 1, nil, 99) // no stream event yet

	o := newBooker(t, f, "owner/1", nil)
	oo := startOwner(t, f, o, true, 0)
	oo.feed(0, r0)
	oo.feed(0, r1)

	e := newBooker(t, f, "elsewhere/1", nil)
	redeems := []ledger.Grant{asRedeem(r0[3]), asRedeem(r1[5]), onlyRedeemed}
	wantOutcomes(t, book(t, e, redeems), booking.BookedNow)
	foreign := partState(t, f, 0)
	if foreign.NextSeq != 2 || foreign.Epoch != 1 {
		t.Fatalf("state after the write elsewhere: %+v, want journal 1 under epoch 1", foreign)
	}

	oo.startCommits()
	oo.waitBooked()
	if err := o.Broken(); err != nil {
		t.Fatalf("Broken() = %v", err)
	}
	counted(t, "owner booked (two were redeemed elsewhere first)", o.Booked.Load, int64(len(r0)+len(r1)-2))
	if o.Batches.Load() == 0 {
		t.Fatal("the owner committed nothing")
	}
	// The owner's journals follow the foreign one; they attribute the two
	// redeemed grants.
	js := journals(t, f, 0, 1)
	if len(js) < 2 || js[0].To != 0 || len(js[0].Ops) != 3 {
		t.Fatalf("journals %+v, want the foreign one first", js)
	}
	attributed := map[string]uint64{}
	for _, j := range js[1:] {
		for _, op := range j.Ops {
			if op.Kind == ledger.OpAttribute {
				attributed[op.Grant.LimitKey()] = op.Grant.LeaseID
			}
		}
	}
	want := map[string]uint64{r0[3].LimitKey(): l1.ID, r1[5].LimitKey(): l2.ID}
	if !maps.Equal(attributed, want) {
		t.Fatalf("owner attributed %v, want %v", attributed, want)
	}
	// Redeem and events again, through the owner: nothing changes.
	wantOutcomes(t, book(t, o, append(redeems[:2:2], r0[3], r1[5])), booking.BookedBefore)
	f.Audit(append(append(slices.Clone(r0), r1...), onlyRedeemed))
	if got := bookingtest.BookedByLease(t, f.KV, f.Budget)[0]; got != (ledger.LeaseUse{LeaseID: 0, Amount: 99, Count: 1}) {
		t.Fatalf("lease 0 holds %+v, want only the grant with no stream event", got)
	}
	// A second write elsewhere while the owner is idle: its next unit
	// catches up too.
	late := f.Grant(users[1], 2, nil, 5)
	wantOutcomes(t, book(t, e, []ledger.Grant{late}), booking.BookedNow)
	lateEvent := late
	lateEvent.LeaseID = l1.ID
	r2 := append(grantsFor(f, users[:5], 3, l1), lateEvent)
	oo.feed(0, r2)
	oo.waitBooked()
	f.Audit(append(append(append(slices.Clone(r0), r1...), onlyRedeemed, lateEvent), r2[:5]...))
}

// accountsEqual compares two sets of accounts by their encodings.
func accountsEqual(t *testing.T, what string, got, want map[uint64]*ledger.Account) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d accounts, want %d", what, len(got), len(want))
	}
	for id, a := range want {
		if g := got[id]; g == nil || string(ledger.MarshalAccount(nil, g)) != string(ledger.MarshalAccount(nil, a)) {
			t.Fatalf("%s: account %d = %+v, want %+v", what, id, g, a)
		}
	}
}

// TestCheckpoints: after more journals than a checkpoint waits for, pages
// hold the partition's accounts; the store (page plus the journal after
// the checkpoint) reads every account as its owner holds it, a scan finds
// the same, and a new owner's take-over loads the same.
func TestCheckpoints(t *testing.T) {
	f := newFixture(t, 1, 10_000_000)
	l := f.Lease(f.Budget, 1_000_000)
	// Users over several pages: every 8th act_id of 8 pages.
	var users []uint64
	for len(users) < 8*storage.PageUsers/8 {
		if u := f.User(); u%8 == 0 {
			users = append(users, u)
		}
	}
	pages := map[uint64]bool{}
	for _, u := range users {
		pages[storage.PageOf(u)] = true
	}
	o := newBooker(t, f, "a/1", nil)
	oo := startOwner(t, f, o, false, 0)
	records := 3*booking.CkptJournals + 5
	var all []ledger.Grant
	for r := range records {
		gs := grantsFor(f, users[r*len(users)/records:(r+1)*len(users)/records], uint64(r%3), l)
		oo.feed(0, gs)
		all = append(all, gs...)
	}
	oo.waitBooked()
	s := partState(t, f, 0)
	if s.CkptSeq < uint64(booking.CkptJournals) {
		t.Fatalf("after %d journals the checkpoint is at %d", s.NextSeq-1, s.CkptSeq)
	}
	checkPages := func(s *ledger.PartState) int {
		t.Helper()
		stored := bookingtest.Snapshot(t, f.KV, string(storage.PagePrefix(0)))
		if len(stored) == 0 {
			t.Fatalf("no page stored after %d journals (checkpoint at %d)", s.NextSeq-1, s.CkptSeq)
		}
		for k, raw := range stored {
			p, err := ledger.DecodePage([]byte(raw))
			if err != nil || p.Seq == 0 || p.Seq > s.CkptSeq || len(p.Accounts) == 0 || !pages[storage.PageOf(p.Accounts[0].ActID)] {
				t.Fatalf("page %s: %+v, %v (checkpoint at %d)", k, p, err, s.CkptSeq)
			}
		}
		return len(stored)
	}
	checkPages(s)

	// The store may show a commit before the owner has taken its result
	// (until then the owner answers the accounts as they were before it).
	var fromOwner map[uint64]*ledger.Account
	eventually(t, within, "the owner's committed accounts", func() error {
		var err error
		if fromOwner, err = o.Accounts(context.Background(), f.Users); err != nil {
			return err
		}
		if len(fromOwner) != len(users) {
			return fmt.Errorf("owner holds %d accounts, want %d", len(fromOwner), len(users))
		}
		return nil
	})
	accountsEqual(t, "store (pages and journal) against owner", f.Accounts(f.Users), fromOwner)
	// Once the owner is idle its timer checkpoints the rest: every page is
	// stored, and pages alone hold the accounts.
	eventually(t, within, "a checkpoint of the whole journal", func() error {
		if s := partState(t, f, 0); s.CkptSeq != s.NextSeq-1 {
			return fmt.Errorf("checkpoint at %d, journal at %d", s.CkptSeq, s.NextSeq-1)
		}
		return nil
	})
	if n := checkPages(partState(t, f, 0)); n != len(pages) {
		t.Fatalf("%d pages stored after a full checkpoint, want %d", n, len(pages))
	}
	accountsEqual(t, "store (pages) against owner", f.Accounts(f.Users), fromOwner)
	scanned := map[uint64]*ledger.Account{}
	err := booking.ScanAccounts(context.Background(), f.KV, func(a *ledger.Account) (bool, error) {
		scanned[a.ActID] = a
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	accountsEqual(t, "scan against owner", scanned, fromOwner)
	clear(scanned)
	err = f.KV.View(func(txn storage.Txn) error {
		parts, err := booking.PartitionsIn(txn)
		if err != nil {
			return err
		}
		for _, p := range parts {
			_, err := booking.ScanPartition(context.Background(), txn, p, func(a *ledger.Account) (bool, error) {
				scanned[a.ActID] = a
				return true, nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	accountsEqual(t, "scan in one snapshot against owner", scanned, fromOwner)

	oo.stop()
	n := newBooker(t, f, "b/1", nil)
	on := startOwner(t, f, n, false, 0)
	fromNew, err := n.Accounts(context.Background(), f.Users)
	if err != nil {
		t.Fatal(err)
	}
	accountsEqual(t, "new owner against old owner", fromNew, fromOwner)
	// The new owner goes on from there.
	more := grantsFor(f, users[:50], 7, l)
	on.feed(0, more)
	on.waitBooked()
	f.Audit(append(all, more...))
}

// TestKeysPerBookedGrant: booking writes a few keys per batch (a journal,
// the partition's state, a hot detail per budget, pages at checkpoints),
// not one per user: batches of 1000 grants over as many users write at
// most 0.05 keys per booked grant.
func TestKeysPerBookedGrant(t *testing.T) {
	const parts, batches, batch = 2, 20, 1000
	f := newFixture(t, parts, 1<<40)
	l := f.Lease(f.Budget, 1<<30)
	o := newBooker(t, f, "a/1", nil)
	oo := startOwner(t, f, o, false, 0, 1)
	var all []ledger.Grant
	for p := range int32(parts) {
		users := make([]uint64, batch)
		for i := range users {
			users[i] = userIn(f, p)
		}
		for r := range batches {
			gs := grantsFor(f, users, uint64(r), l)
			oo.feed(p, gs)
			all = append(all, gs...)
		}
	}
	oo.waitBooked()
	// The counters move just after the commit that the store shows.
	counted(t, "booked", o.Booked.Load, int64(len(all)))
	booked, keys := o.Booked.Load(), o.Keys.Load()
	t.Logf("%d keys for %d grants (%d pages, %d transactions)", keys, booked, o.Pages.Load(), o.Batches.Load())
	if ratio := float64(keys) / float64(booked); keys == 0 || ratio > 0.05 {
		t.Fatalf("%d keys written for %d grants booked: %.4f per grant, want at most 0.05", keys, booked, ratio)
	}
	f.Audit(all)
}

// TestMoneyCheckHoldsPartition: a record whose booking would overflow a
// balance holds the partition: Broken says why, nothing of the record is
// written (not its good grants either), the records before it stay booked,
// and redeems of the partition's users are still booked.
func TestMoneyCheckHoldsPartition(t *testing.T) {
	f, l, users, good, o, oo := bookedOwner(t, 3)
	before, offset := ledgerState(t, f), booked(t, f)[0]

	bad := []ledger.Grant{f.Grant(users[1], 2, l, 5), f.Grant(users[0], 2, l, math.MaxInt64)}
	oo.push(0, ledger.AppendGrantRecord(nil, bad))
	if err := waitBroken(t, o); !errors.Is(err, ledger.ErrOverflow) {
		t.Fatalf("Broken() = %v, want ErrOverflow", err)
	}
	if after := ledgerState(t, f); !maps.Equal(after, before) {
		t.Fatal("the refused record changed the ledger")
	}
	if got := booked(t, f)[0]; got != offset {
		t.Fatalf("booked offset %d after the refused record, want %d", got, offset)
	}
	// The partition waits at the record (until an operator parks it) but
	// goes on booking redeems.
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	redeemed := f.Grant(users[2], 3, nil, 1)
	out, err := o.Book(ctx, []ledger.Grant{redeemed})
	if err != nil {
		t.Fatalf("Book on a partition held at a bad record: %v", err)
	}
	wantOutcomes(t, out, booking.BookedNow)
	f.Audit(append(slices.Clone(good), redeemed))
}

// TestOwnerUnderConcurrentRedeems: while two partitions' owner books a
// stream of records, redeems of the same grants run at once, some through
// the owner and some through a booker that owns nothing (each of those
// makes the owner's next commit catch up). Whatever the interleaving,
// every grant is booked exactly once, under its lease once its stream event
// is booked, and the counters of the two bookers add up to the grants.
func TestOwnerUnderConcurrentRedeems(t *testing.T) {
	const parts, users, rains = 2, 60, 12
	f := newFixture(t, parts, 100_000_000)
	l := f.Lease(f.Budget, 10_000_000)
	byPart := make([][]uint64, parts)
	for p := range int32(parts) {
		for range users {
			byPart[p] = append(byPart[p], userIn(f, p))
		}
	}
	o := newBooker(t, f, "owner/1", nil)
	oo := startOwner(t, f, o, false, 0, 1)
	e := newBooker(t, f, "elsewhere/1", nil)

	var records [][]ledger.Grant // per rain and partition, in feeding order
	var all []ledger.Grant
	for rain := range uint64(rains) {
		for p := range parts {
			gs := grantsFor(f, byPart[p], rain+1, l)
			records = append(records, gs)
			all = append(all, gs...)
		}
	}
	redeemOf := func(g ledger.Grant) ledger.Grant {
		g.LeaseID, g.UserID = 0, ""
		return g
	}
	// Each record races with redeems of a third of its grants, in batches
	// of five, alternately elsewhere and through the owner.
	var wg sync.WaitGroup
	var mu sync.Mutex
	errs := make(chan error, len(records))
	redeemed := []map[byte]int{{}, {}} // outcomes elsewhere, through the owner
	for i, gs := range records {
		w := i % 2
		wg.Go(func() {
			var batch []ledger.Grant
			for j := i % 3; j < len(gs); j += 3 {
				batch = append(batch, redeemOf(gs[j]))
				if len(batch) < 5 && j+3 < len(gs) {
					continue
				}
				out, err := []*booking.Booker{e, o}[w].Book(context.Background(), batch)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				for _, x := range out {
					redeemed[w][x]++
				}
				mu.Unlock()
				batch = batch[:0]
			}
		})
		oo.feed(int32(i%parts), gs)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("redeem: %v", err)
	}
	oo.waitBooked()
	if err := o.Broken(); err != nil {
		t.Fatalf("Broken() = %v", err)
	}
	t.Logf("redeem outcomes elsewhere %v, through the owner %v; owner committed %d transactions",
		redeemed[0], redeemed[1], o.Batches.Load())
	counted(t, "booked by the owner and elsewhere", func() int64 { return o.Booked.Load() + e.Booked.Load() }, int64(len(all)))
	if redeemed[0][booking.BookedNow]+redeemed[1][booking.BookedNow] == 0 {
		t.Fatal("no redeem came before its stream event: the race was not exercised")
	}
	f.Audit(all)
	fromOwner, err := o.Accounts(context.Background(), f.Users)
	if err != nil {
		t.Fatal(err)
	}
	accountsEqual(t, "store against owner", f.Accounts(f.Users), fromOwner)
}

// TestIdleOwnerSeesWritesElsewhere: a redeem and a bind written by other
// nodes while the partition's owner has nothing to book reach the owner's
// memory (which Booker.Accounts answers from, for wallets and token
// status) without waiting for its next record, and its next record books
// on top of them.
func TestIdleOwnerSeesWritesElsewhere(t *testing.T) {
	f, l, users, r0, o, oo := bookedOwner(t, 4)
	// Idle for good: even its checkpoint is written.
	eventually(t, within, "the owner checkpoints its journal", func() error {
		if s := partState(t, f, 0); s.CkptSeq != s.NextSeq-1 {
			return fmt.Errorf("checkpoint at %d, journal at %d", s.CkptSeq, s.NextSeq-1)
		}
		return nil
	})

	e := newBooker(t, f, "elsewhere/1", nil)
	redeem := f.Grant(users[0], 2, nil, 31)
	wantOutcomes(t, book(t, e, []ledger.Grant{redeem}), booking.BookedNow)
	bind := func(actID uint64) bool {
		t.Helper()
		var fresh bool
		err := f.KV.Update(context.Background(), func(txn storage.Txn) error {
			var err error
			fresh, err = booking.BindInTxn(context.Background(), txn, f.Parts, 9, fmt.Sprintf("open-%d", actID), actID)
			return err
		})
		if err != nil {
			t.Fatalf("BindInTxn(%d): %v", actID, err)
		}
		return fresh
	}
	newcomer := f.User()
	if !bind(users[1]) || bind(users[1]) || !bind(newcomer) {
		t.Fatal("BindInTxn: want new, then known, then new")
	}
	ids := []uint64{users[0], users[1], newcomer}
	eventually(t, within, "the owner's accounts show the writes made elsewhere", func() error {
		got, err := o.Accounts(context.Background(), ids)
		if err != nil {
			return err
		}
		if _, ok := got[users[0]].Entry(redeem.LimitKey()); !ok {
			return fmt.Errorf("user %d: redeemed %s missing", users[0], redeem.LimitKey())
		}
		for _, id := range ids[1:] {
			if a := got[id]; a == nil || !slices.Contains(a.Apps, ledger.AppUser{AppID: 9, UserID: fmt.Sprintf("open-%d", id)}) {
				return fmt.Errorf("user %d: bind missing from %+v", id, a)
			}
		}
		return nil
	})
	r1 := grantsFor(f, append(users, newcomer), 3, l)
	oo.feed(0, r1)
	oo.waitBooked()
	fromOwner, err := o.Accounts(context.Background(), f.Users)
	if err != nil {
		t.Fatal(err)
	}
	accountsEqual(t, "store against owner", f.Accounts(f.Users), fromOwner)
	f.Audit(append(append(slices.Clone(r0), r1...), redeem))
}

// TestFencedPartitionLeavesOthersCommitting: units of two partitions wait
// for one shared transaction when another node takes one of the partitions
// over. The fenced partition's units are dropped and the other's commit.
func TestFencedPartitionLeavesOthersCommitting(t *testing.T) {
	f := newFixture(t, 2, 1_000_000)
	l := f.Lease(f.Budget, 100_000)
	var r0, r1 []ledger.Grant
	for range 5 {
		r0 = append(r0, f.Grant(userIn(f, 0), 1, l, 10))
		r1 = append(r1, f.Grant(userIn(f, 1), 1, l, 20))
	}
	a := newBooker(t, f, "node-a/1", nil)
	oa := startOwner(t, f, a, true, 0, 1)
	oa.feed(0, r0)
	oa.feed(1, r1)
	b := newBooker(t, f, "node-b/1", nil)
	ob := startOwner(t, f, b, false, 0)
	oa.startCommits()
	eventually(t, within, "A keeps partition 1 only, booked", func() error {
		if c := a.Claims(); !slices.Equal(c, []int32{1}) {
			return fmt.Errorf("A claims %v", c)
		}
		if got := booked(t, f); got[0] != 0 || got[1] != 1 {
			return fmt.Errorf("booked offsets %v", got)
		}
		return nil
	})
	counted(t, "A booked", a.Booked.Load, int64(len(r1)))
	if s := partState(t, f, 0); s.NextSeq != 1 || s.Owner != "node-b/1" {
		t.Fatalf("partition 0 after A was fenced: %+v", s)
	}
	ob.feed(0, r0)
	ob.waitBooked()
	f.Audit(append(slices.Clone(r0), r1...))
}

// TestCorruptPartitionDoesNotLoad: a page that fails the money checks stops
// the take-over of its partition as a broken invariant.
func TestCorruptPartitionDoesNotLoad(t *testing.T) {
	f := newFixture(t, 1, 1_000_000)
	b := newBooker(t, f, "a/1", nil)
	corruptAccount(t, f, b)
	before := bookingtest.Snapshot(t, f.KV, "rr/")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.Own(ctx, 0, nil)
	}()
	t.Cleanup(func() { cancel(); <-done })
	if err := waitBroken(t, b); !errors.Is(err, ledger.ErrInvariant) {
		t.Fatalf("Broken() = %v, want ErrInvariant", err)
	}
	if c := b.Claims(); len(c) != 0 {
		t.Fatalf("claims %v after a failed take-over", c)
	}
	if after := bookingtest.Snapshot(t, f.KV, "rr/"); !maps.Equal(after, before) {
		t.Fatal("a failed take-over wrote to the store")
	}
}

// TestReadAfterReportedBooked: a read of the owner made when OnBooked
// reports a unit (here from OnBooked itself, before the committer tells
// the partition's goroutine) shows that unit's bookings: a user answered
// "booked" reads what was booked.
func TestReadAfterReportedBooked(t *testing.T) {
	f := newFixture(t, 1, 1_000_000)
	l := f.Lease(f.Budget, 100_000)
	users := usersOf(f, 5)
	o := newBooker(t, f, "owner/1", nil)
	var mu sync.Mutex
	var checked int
	var missing []string
	o.OnBooked(func(ops []ledger.Op) {
		ids := make([]uint64, 0, len(ops))
		for i := range ops {
			ids = append(ids, ops[i].Grant.ActID)
		}
		got, err := o.Accounts(context.Background(), ids)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			missing = append(missing, err.Error())
			return
		}
		for i := range ops {
			g := &ops[i].Grant
			checked++
			if a := got[g.ActID]; a == nil {
				missing = append(missing, fmt.Sprintf("act %d: no account", g.ActID))
			} else if _, ok := a.Entry(g.LimitKey()); !ok {
				missing = append(missing, fmt.Sprintf("act %d: %s not in its account", g.ActID, g.LimitKey()))
			}
		}
	})
	oo := startOwner(t, f, o, false, 0)
	oo.feed(0, grantsFor(f, users, 1, l))
	oo.feed(0, grantsFor(f, users, 2, l))
	oo.waitBooked()
	mu.Lock()
	defer mu.Unlock()
	if checked != 2*len(users) || len(missing) > 0 {
		t.Fatalf("%d bookings read back as reported; missing: %v", checked, missing)
	}
}

// TestOnJournalNamesTheStoresJournals: each journal an owner commits is
// handed to OnJournal with its partition, seq and ops, in order, and they
// are the store's: the same seqs, the same ops.
func TestOnJournalNamesTheStoresJournals(t *testing.T) {
	f := newFixture(t, 1, 1_000_000)
	l := f.Lease(f.Budget, 100_000)
	users := usersOf(f, 5)
	o := newBooker(t, f, "owner/1", nil)
	type got struct {
		part int32
		seq  uint64
		ops  []ledger.Op
	}
	var mu sync.Mutex
	var gotJ []got
	o.OnJournal(func(part int32, seq uint64, _ int64, ops []ledger.Op) {
		mu.Lock()
		defer mu.Unlock()
		gotJ = append(gotJ, got{part, seq, ops})
	})
	oo := startOwner(t, f, o, false, 0)
	for rain := uint64(1); rain <= 3; rain++ {
		oo.feed(0, grantsFor(f, users, rain, l))
	}
	oo.waitBooked()
	mu.Lock()
	defer mu.Unlock()
	var want []*ledger.Journal
	if err := f.KV.View(func(txn storage.Txn) error {
		var dec ledger.TailDecoder
		_, err := booking.JournalsUpTo(txn, 0, 1, 1<<20, &dec, func(j *ledger.Journal) error {
			c := *j
			c.Ops = slices.Clone(j.Ops)
			want = append(want, &c)
			return nil
		})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(gotJ) == 0 || len(gotJ) != len(want) {
		t.Fatalf("OnJournal heard %d journals, the store holds %d", len(gotJ), len(want))
	}
	for i, j := range want {
		g := gotJ[i]
		if g.part != 0 || g.seq != j.Seq || len(g.ops) != len(j.Ops) {
			t.Fatalf("journal %d: heard partition %d seq %d with %d ops, the store's is seq %d with %d", i, g.part, g.seq, len(g.ops), j.Seq, len(j.Ops))
		}
		for k := range j.Ops {
			a, b := &g.ops[k], &j.Ops[k]
			if a.Kind != b.Kind || a.Grant.ActID != b.Grant.ActID || a.Grant.Amount != b.Grant.Amount || a.Grant.Asset != b.Grant.Asset || a.Grant.LimitKey() != b.Grant.LimitKey() {
				t.Fatalf("journal %d op %d: heard %+v, the store holds %+v", j.Seq, k, a.Grant, b.Grant)
			}
		}
	}
}
