package actors_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"redrain/actors"
	"redrain/ledger"
	"redrain/storage"
)

// amountOf spreads amounts over 1..500 fen, reproducibly.
func amountOf(actID, rain uint64) int64 { return int64(1 + (actID*31+rain*17)%500) }

// TestBookExactlyOnce: a batch books once; its redelivery books nothing and
// leaves every byte of the store as it was.
func TestBookExactlyOnce(t *testing.T) {
	f := newFixture(t, 10_000_000)
	leases := []*ledger.Lease{f.lease(f.budget, 1_000_000), f.lease(f.budget, 1_000_000)}
	var batch []ledger.Grant
	for range 40 {
		u := f.user()
		for rain := uint64(1); rain <= 4; rain++ {
			batch = append(batch, f.grant(u, rain, leases[rain%2], amountOf(u, rain)))
		}
	}
	b, _ := newBooker(t, nil, 0)

	wantOutcomes(t, book(t, b, batch), actors.BookedNow)
	if got := b.Booked.Load(); got != int64(len(batch)) {
		t.Fatalf("Booked = %d, want %d", got, len(batch))
	}
	f.audit(batch)
	accounts := rawAccounts(t, f.users)
	hot := hotDetails(t, f.budget)
	byLease := bookedByLease(t, f.budget)

	// Redelivery: the same batch, and the same batch split and reordered.
	wantOutcomes(t, book(t, b, batch), actors.BookedBefore)
	rev := make([]ledger.Grant, len(batch))
	for i := range batch {
		rev[len(batch)-1-i] = batch[i]
	}
	wantOutcomes(t, book(t, b, rev[:70]), actors.BookedBefore)
	wantOutcomes(t, book(t, b, rev[70:]), actors.BookedBefore)

	if got := b.Booked.Load(); got != int64(len(batch)) {
		t.Fatalf("after redelivery Booked = %d, want %d", got, len(batch))
	}
	if after := rawAccounts(t, f.users); !maps.Equal(after, accounts) {
		t.Fatal("redelivery changed account records")
	}
	// A redelivered batch writes no hot detail at all, not even an empty one.
	if got := hotDetails(t, f.budget); got != hot {
		t.Fatalf("hot details %d after redelivery, want %d", got, hot)
	}
	if got := bookedByLease(t, f.budget); !maps.Equal(got, byLease) {
		t.Fatalf("BookedByLease after redelivery = %v, want %v", got, byLease)
	}
	f.audit(batch)
}

// TestBookDuplicatesInOneBatch: the same grant twice in a batch books once;
// two grants of one limit key with different awards book only the first,
// within a batch and across batches.
func TestBookDuplicatesInOneBatch(t *testing.T) {
	f := newFixture(t, 1_000_000)
	l := f.lease(f.budget, 100_000)
	b, _ := newBooker(t, nil, 0)

	u1, u2, u3 := f.user(), f.user(), f.user()
	same := f.grant(u1, 1, l, 120)
	first := f.grant(u2, 1, l, 300)
	other := first
	other.AwardType, other.Amount = "coupon", 999
	later := f.grant(u3, 1, l, 50)
	laterOther := later
	laterOther.AwardType, laterOther.Amount = "coupon", 51

	out := book(t, b, []ledger.Grant{same, first, same, other, later})
	want := []byte{actors.BookedNow, actors.BookedNow, actors.BookedBefore, actors.BookedBefore, actors.BookedNow}
	if string(out) != string(want) {
		t.Fatalf("outcomes = %v, want %v", out, want)
	}
	if out := book(t, b, []ledger.Grant{laterOther}); out[0] != actors.BookedBefore {
		t.Fatalf("later grant of a booked limit key: outcome %d, want BookedBefore", out[0])
	}
	if got := b.Booked.Load(); got != 3 {
		t.Fatalf("Booked = %d, want 3", got)
	}
	f.audit([]ledger.Grant{same, first, later})
	if e, _ := account(t, u2).Entry(first.LimitKey()); e.AwardType != "cash" || e.Amount != 300 {
		t.Fatalf("entry of limit key %s = %+v, want the first award", first.LimitKey(), e)
	}
}

// TestBookedMarksInRedis: booked grants leave `b:{award}:{amount}` under
// their limit key in a real redis-server; duplicates do not overwrite it.
func TestBookedMarksInRedis(t *testing.T) {
	f := newFixture(t, 1_000_000)
	l := f.lease(f.budget, 100_000)
	b, rc := newBooker(t, nil, 0)
	ctx := context.Background()

	var batch []ledger.Grant
	for range 10 {
		u := f.user()
		batch = append(batch, f.grant(u, 1, l, amountOf(u, 1)), f.grant(u, 2, l, amountOf(u, 2)))
	}
	dup := batch[0]
	dup.AwardType, dup.Amount = "coupon", 7
	wantOutcomes(t, book(t, b, batch), actors.BookedNow)
	book(t, b, []ledger.Grant{dup})
	for _, g := range batch {
		v, err := rc.Get(ctx, storage.BookedMarkKey(g.LimitKey())).Result()
		if err != nil {
			t.Fatalf("GET %s: %v", storage.BookedMarkKey(g.LimitKey()), err)
		}
		if want := storage.MarkValue(storage.MarkBooked, g.AwardType, g.Amount, g.AppID); v != want {
			t.Fatalf("GET %s = %q, want %q", storage.BookedMarkKey(g.LimitKey()), v, want)
		}
	}
	never := f.grant(f.user(), 1, l, 5)
	if err := rc.Get(ctx, storage.BookedMarkKey(never.LimitKey())).Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("GET mark of a grant never booked: %v, want redis.Nil", err)
	}
}

// TestAccountsEqualPostings books several batches over two budgets and
// checks the money after each.
func TestAccountsEqualPostings(t *testing.T) {
	f := newFixture(t, 5_000_000)
	second := f.addBudget(3_000_000)
	leases := []*ledger.Lease{
		f.lease(f.budget, 400_000), f.lease(f.budget, 400_000),
		f.lease(second, 400_000), f.lease(second, 100),
	}
	b, _ := newBooker(t, nil, 0)
	users := make([]uint64, 25)
	for i := range users {
		users[i] = f.user()
	}
	var booked []ledger.Grant
	for round := range 4 {
		var batch []ledger.Grant
		for i, u := range users {
			rain := uint64(round*3 + i%3)
			l := leases[(i+round)%len(leases)]
			batch = append(batch, f.grant(u, rain, l, amountOf(u, rain)))
		}
		// Half the previous round again: redelivery mixed with new grants.
		if n := len(booked); n > 0 {
			batch = append(batch, booked[n-len(users)/2:]...)
		}
		out := book(t, b, batch)
		for i := range users {
			if out[i] != actors.BookedNow {
				t.Fatalf("round %d: outcome[%d] = %d, want BookedNow", round, i, out[i])
			}
		}
		wantOutcomes(t, out[len(users):], actors.BookedBefore)
		booked = append(booked, batch[:len(users)]...)
		f.audit(booked)
	}
}

// TestStaleGrainAdoptsStore: a user's record changed behind its grain's
// back (another writer, a paused member) is what the next booking builds
// on; nothing the other writer booked is lost.
func TestStaleGrainAdoptsStore(t *testing.T) {
	f := newFixture(t, 1_000_000)
	l := f.lease(f.budget, 100_000)
	b, _ := newBooker(t, nil, 0)
	u := f.user()
	a, bb, c := f.grant(u, 1, l, 100), f.grant(u, 2, l, 20), f.grant(u, 3, l, 3)

	wantOutcomes(t, book(t, b, []ledger.Grant{a}), actors.BookedNow)
	// The grain now caches version 1 with A. Write version 2 with B directly.
	acct := account(t, u)
	next := acct.Clone()
	if ok, err := next.Book(&bb, 1); !ok || err != nil {
		t.Fatalf("Book B on the side: %v, %v", ok, err)
	}
	next.Version++
	put(t, storage.AccountKey(u), ledger.MarshalAccount(nil, next))
	// Keep the hot account exact too, as a second booker would.
	h := &ledger.HotDetail{}
	if err := h.Add(&bb); err != nil {
		t.Fatal(err)
	}
	put(t, storage.HotKey(f.budget, 1, 0), ledger.MarshalHotDetail(nil, h))

	wantOutcomes(t, book(t, b, []ledger.Grant{c}), actors.BookedNow)
	got := account(t, u)
	if got.Version != 3 {
		t.Fatalf("version = %d, want 3", got.Version)
	}
	f.audit([]ledger.Grant{a, bb, c})
	// The grain must not hold B as unbooked either: B again is a duplicate.
	wantOutcomes(t, book(t, b, []ledger.Grant{bb, a, c}), actors.BookedBefore)

	// A second booker on the same cluster shares the grains: booking D there
	// and E here keeps both.
	b2, _ := newBooker(t, nil, 0)
	d, e := f.grant(u, 4, l, 4), f.grant(u, 5, l, 5)
	wantOutcomes(t, book(t, b2, []ledger.Grant{d}), actors.BookedNow)
	if out := book(t, b, []ledger.Grant{e, d}); out[0] != actors.BookedNow || out[1] != actors.BookedBefore {
		t.Fatalf("E and D through the first booker: outcomes %v, want [BookedNow BookedBefore]", out)
	}
	f.audit([]ledger.Grant{a, bb, c, d, e})
}

// TestConcurrentBookOverlappingUsers: bookers on several goroutines book
// overlapping batches (the same users, often the same grants); write
// conflicts are retried and each limit key is booked exactly once.
func TestConcurrentBookOverlappingUsers(t *testing.T) {
	f := newFixture(t, 10_000_000)
	l := f.lease(f.budget, 1_000_000)
	b, _ := newBooker(t, nil, 0)
	users := make([]uint64, 12)
	for i := range users {
		users[i] = f.user()
	}
	var all []ledger.Grant
	for _, u := range users {
		for rain := uint64(1); rain <= 6; rain++ {
			all = append(all, f.grant(u, rain, l, amountOf(u, rain)))
		}
	}
	const workers, rounds = 8, 6
	type result struct {
		grants []ledger.Grant
		out    []byte
		err    error
	}
	results := make(chan result, workers*rounds)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for r := range rounds {
				// Each worker takes an overlapping window of the grants.
				start := (w*7 + r*11) % len(all)
				var batch []ledger.Grant
				for i := range 24 {
					batch = append(batch, all[(start+i*3)%len(all)])
				}
				out, err := b.Book(context.Background(), batch)
				results <- result{batch, out, err}
			}
		})
	}
	wg.Wait()
	close(results)
	now := map[string]int{}
	offered := map[string]ledger.Grant{}
	for r := range results {
		if r.err != nil {
			t.Fatalf("concurrent Book: %v", r.err)
		}
		for i, g := range r.grants {
			offered[g.LimitKey()] = g
			switch r.out[i] {
			case actors.BookedNow:
				now[g.LimitKey()]++
			case actors.BookedBefore:
			default:
				t.Fatalf("outcome %d for %s", r.out[i], g.LimitKey())
			}
		}
	}
	var booked []ledger.Grant
	for k, g := range offered {
		if now[k] != 1 {
			t.Fatalf("limit key %s booked %d times, want 1", k, now[k])
		}
		booked = append(booked, g)
	}
	if got := b.Booked.Load(); got != int64(len(booked)) {
		t.Fatalf("Booked = %d, want %d", got, len(booked))
	}
	t.Logf("%d grants booked in %d batches, %d conflicts retried", len(booked), b.Batches.Load(), b.Conflicts.Load())
	f.audit(booked)
}

// TestRedeemAttribution: redeem books under lease 0; the stream event then
// moves the entry and the hot amount to its real lease; both again are
// duplicates.
func TestRedeemAttribution(t *testing.T) {
	f := newFixture(t, 1_000_000)
	l := f.lease(f.budget, 100_000)
	b, rc := newBooker(t, nil, 0)
	u := f.user()
	event := f.grant(u, 1, l, 250)
	redeem := event
	redeem.LeaseID, redeem.UserID = 0, "" // the token names neither

	wantOutcomes(t, book(t, b, []ledger.Grant{redeem}), actors.BookedNow)
	if e, _ := account(t, u).Entry(event.LimitKey()); e.LeaseID != 0 || e.Amount != 250 {
		t.Fatalf("entry after redeem = %+v, want lease 0", e)
	}
	if got := bookedByLease(t, f.budget); got[0] != (ledger.LeaseUse{LeaseID: 0, Amount: 250, Count: 1}) || got[l.ID].Amount != 0 {
		t.Fatalf("BookedByLease after redeem = %v", got)
	}
	if apps := account(t, u).Apps; len(apps) != 0 {
		t.Fatalf("binding recorded by a redeem that does not know the user: %v", apps)
	}

	wantOutcomes(t, book(t, b, []ledger.Grant{event}), actors.BookedAttrib)
	if e, _ := account(t, u).Entry(event.LimitKey()); e.LeaseID != l.ID {
		t.Fatalf("entry after the stream event = %+v, want lease %d", e, l.ID)
	}
	if got := bookedByLease(t, f.budget); got[l.ID] != (ledger.LeaseUse{LeaseID: l.ID, Amount: 250, Count: 1}) ||
		got[0].Amount != 0 || got[0].Count != 0 {
		t.Fatalf("BookedByLease after attribution = %v", got)
	}
	if apps := account(t, u).Apps; !slices.Equal(apps, []ledger.AppUser{{AppID: event.AppID, UserID: event.UserID}}) {
		t.Fatalf("bindings after attribution = %v, want the event's app user", apps)
	}
	if v, err := rc.Get(context.Background(), storage.BookedMarkKey(event.LimitKey())).Result(); err != nil || v != storage.MarkValue(storage.MarkBooked, "cash", 250, event.AppID) {
		t.Fatalf("booked mark = %q, %v", v, err)
	}
	// The event again, and a late redeem, change nothing.
	wantOutcomes(t, book(t, b, []ledger.Grant{event}), actors.BookedBefore)
	wantOutcomes(t, book(t, b, []ledger.Grant{redeem}), actors.BookedBefore)
	// An event whose amount differs from the redeemed entry is not attributed.
	u2 := f.user()
	r2 := f.grant(u2, 1, nil, 40)
	e2 := f.grant(u2, 1, l, 41)
	wantOutcomes(t, book(t, b, []ledger.Grant{r2}), actors.BookedNow)
	wantOutcomes(t, book(t, b, []ledger.Grant{e2}), actors.BookedBefore)
	// Redeem and event in one batch: booked, then attributed.
	u3 := f.user()
	e3 := f.grant(u3, 1, l, 60)
	r3 := e3
	r3.LeaseID = 0
	if out := book(t, b, []ledger.Grant{r3, e3}); out[0] != actors.BookedNow || out[1] != actors.BookedAttrib {
		t.Fatalf("redeem and event in one batch: outcomes %v", out)
	}
	f.audit([]ledger.Grant{event, r2, e3})
}

// legacyRecord encodes grants as a version 1 record, as the code wrote
// them before keys named the activity: no key-format byte per grant.
func legacyRecord(t *testing.T, gs []ledger.Grant) []byte {
	t.Helper()
	b := []byte{1}
	b = binary.AppendUvarint(b, uint64(len(gs)))
	for i := range gs {
		b = append(b, ledger.AppendGrant(nil, &gs[i])[1:]...) // drop the key-format byte
	}
	return b
}

// TestBookLegacyGrants: grants from before keys named the activity, as
// their version 1 records decode, book under their legacy limit keys
// through the grains (whose prepare messages carry the key format), once:
// a redelivery after the upgrade is a duplicate, an event after a redeem
// of its version 1 token is an attribution, and a batch may mix both key
// formats.
func TestBookLegacyGrants(t *testing.T) {
	f := newFixture(t, 1_000_000)
	l := f.lease(f.budget, 100_000)
	b, rc := newBooker(t, nil, 0)
	decode := func(raw []byte) []ledger.Grant {
		t.Helper()
		gs, err := ledger.DecodeGrantRecord(nil, raw)
		if err != nil {
			t.Fatalf("DecodeGrantRecord(version 1): %v", err)
		}
		for _, g := range gs {
			if !g.Legacy {
				t.Fatalf("grant of a version 1 record decoded as %+v, want Legacy", g)
			}
		}
		return gs
	}
	u1, u2 := f.user(), f.user()
	old1, old2 := f.grant(u1, 1, l, 120), f.grant(u2, 1, l, 130)
	legacy := decode(legacyRecord(t, []ledger.Grant{old1, old2}))

	// Booked before the upgrade (by the code of version 1: same limit key).
	wantOutcomes(t, book(t, b, legacy[:1]), actors.BookedNow)
	key := legacy[0].LimitKey()
	if want := fmt.Sprintf("%d_scene_1_formal", u1); key != want {
		t.Fatalf("legacy limit key = %q, want %q", key, want)
	}
	if e, ok := account(t, u1).Entry(key); !ok || e.Amount != 120 || e.OutTradeNo != legacy[0].OutTradeNo() {
		t.Fatalf("entry %s = %+v, %v, want the legacy packet", key, e, ok)
	}
	if v, err := rc.Get(context.Background(), storage.BookedMarkKey(key)).Result(); err != nil || v != storage.MarkValue(storage.MarkBooked, "cash", 120, legacy[0].AppID) {
		t.Fatalf("booked mark %s = %q, %v", key, v, err)
	}
	// Redelivered after the upgrade, together with the rest of its record.
	if out := book(t, b, legacy); out[0] != actors.BookedBefore || out[1] != actors.BookedNow {
		t.Fatalf("redelivered legacy record: outcomes %v, want [BookedBefore BookedNow]", out)
	}
	wantOutcomes(t, book(t, b, decode(legacyRecord(t, []ledger.Grant{old1, old2}))), actors.BookedBefore)

	// A version 1 token redeemed after the upgrade, then its version 1
	// event; in the same batches, grants under the new keys.
	u3 := f.user()
	old3 := f.grant(u3, 2, l, 60)
	redeem := old3
	redeem.Legacy, redeem.LeaseID, redeem.UserID = true, 0, ""
	now1 := f.grant(u1, 3, l, 70)
	if out := book(t, b, []ledger.Grant{redeem, now1}); out[0] != actors.BookedNow || out[1] != actors.BookedNow {
		t.Fatalf("legacy redeem and a current grant: outcomes %v", out)
	}
	now2 := f.grant(u2, 3, l, 80)
	if out := book(t, b, append(decode(legacyRecord(t, []ledger.Grant{old3})), now2)); out[0] != actors.BookedAttrib || out[1] != actors.BookedNow {
		t.Fatalf("legacy event after its redeem and a current grant: outcomes %v, want [BookedAttrib BookedNow]", out)
	}
	if e, _ := account(t, u3).Entry(fmt.Sprintf("%d_scene_2_formal", u3)); e.LeaseID != l.ID || e.Amount != 60 {
		t.Fatalf("legacy entry after attribution = %+v, want lease %d", e, l.ID)
	}
	if n := len(account(t, u1).Entries); n != 2 {
		t.Fatalf("user %d holds %d entries, want 2 (one legacy, one current)", u1, n)
	}
	event3 := old3
	event3.Legacy = true
	f.audit([]ledger.Grant{legacy[0], legacy[1], event3, now1, now2})
}

// TestBookStopsOnCorruptAccount: a record that fails the money checks is a
// broken invariant, reported as such at once, not retried as a grain
// failure.
func TestBookStopsOnCorruptAccount(t *testing.T) {
	f := newFixture(t, 1_000_000)
	l := f.lease(f.budget, 100_000)
	b, _ := newBooker(t, nil, 0)
	u := f.user()
	wantOutcomes(t, book(t, b, []ledger.Grant{f.grant(u, 1, l, 10)}), actors.BookedNow)
	acct := account(t, u)
	acct.Balances[0].Amount++ // balance no longer equals its entries
	acct.Version++
	put(t, storage.AccountKey(u), ledger.MarshalAccount(nil, acct))

	_, err := b.Book(context.Background(), []ledger.Grant{f.grant(u, 2, l, 10)})
	if !errors.Is(err, ledger.ErrInvariant) {
		t.Fatalf("Book onto a corrupt account: %v, want ErrInvariant", err)
	}
	if n := b.Conflicts.Load(); n != 0 {
		t.Fatalf("a broken invariant was retried %d times", n)
	}

	// A balance that would overflow is refused the same way.
	u2 := f.user()
	wantOutcomes(t, book(t, b, []ledger.Grant{f.grant(u2, 1, l, 10)}), actors.BookedNow)
	_, err = b.Book(context.Background(), []ledger.Grant{f.grant(u2, 2, l, math.MaxInt64)})
	if !errors.Is(err, ledger.ErrOverflow) {
		t.Fatalf("Book overflowing a balance: %v, want ErrOverflow", err)
	}
	if n := b.Conflicts.Load(); n != 0 {
		t.Fatalf("an overflow was retried %d times", n)
	}
}
