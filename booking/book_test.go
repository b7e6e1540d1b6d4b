package booking_test

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

	"redrain/booking"
	"redrain/booking/bookingtest"
	"redrain/ledger"
	"redrain/storage"
)

// eachPath runs a test of Book by both of its paths: straight into the
// store (this node owns no partition: bookElsewhere), and through this
// node's owner of every partition.
func eachPath(t *testing.T, test func(t *testing.T, own func(*bookingtest.Fixture, *booking.Booker))) {
	t.Run("elsewhere", func(t *testing.T) {
		test(t, func(*bookingtest.Fixture, *booking.Booker) {})
	})
	t.Run("owner", func(t *testing.T) {
		test(t, func(f *bookingtest.Fixture, b *booking.Booker) {
			parts := make([]int32, f.Parts)
			for p := range parts {
				parts[p] = int32(p)
			}
			startOwner(t, f, b, false, parts...)
		})
	})
}

// onPath is a fixture of parts partitions with one lease, and a booker
// that books by the path own sets up.
func onPath(t *testing.T, own func(*bookingtest.Fixture, *booking.Booker), parts int32, total int64) (*bookingtest.Fixture, *ledger.Lease, *booking.Booker) {
	t.Helper()
	f := newFixture(t, parts, total)
	l := f.Lease(f.Budget, total/10)
	b := newBooker(t, f, "a", nil)
	own(f, b)
	return f, l, b
}

// TestBookExactlyOnce: a batch books once; its redelivery books nothing and
// leaves journals, hot details and accounts as they were.
func TestBookExactlyOnce(t *testing.T) {
	eachPath(t, func(t *testing.T, own func(*bookingtest.Fixture, *booking.Booker)) {
		f, l, b := onPath(t, own, 4, 10_000_000)
		leases := []*ledger.Lease{l, f.Lease(f.Budget, 1_000_000)}
		var batch []ledger.Grant
		for range 40 {
			u := f.User()
			for rain := uint64(1); rain <= 4; rain++ {
				batch = append(batch, f.Grant(u, rain, leases[rain%2], amountOf(u, rain)))
			}
		}

		wantOutcomes(t, book(t, b, batch), booking.BookedNow)
		if got := b.Booked.Load(); got != int64(len(batch)) {
			t.Fatalf("Booked = %d, want %d", got, len(batch))
		}
		f.Audit(batch)
		before := ledgerState(t, f)

		// Redelivery: the same batch, and the same batch split and reordered.
		wantOutcomes(t, book(t, b, batch), booking.BookedBefore)
		rev := slices.Clone(batch)
		slices.Reverse(rev)
		wantOutcomes(t, book(t, b, rev[:70]), booking.BookedBefore)
		wantOutcomes(t, book(t, b, rev[70:]), booking.BookedBefore)

		if got := b.Booked.Load(); got != int64(len(batch)) {
			t.Fatalf("after redelivery Booked = %d, want %d", got, len(batch))
		}
		// A redelivered batch writes no journal and no hot detail at all,
		// not even an empty one.
		if after := ledgerState(t, f); !maps.Equal(after, before) {
			t.Fatalf("redelivery changed the ledger: %d keys before, %d after", len(before), len(after))
		}
		f.Audit(batch)
	})
}

// TestBookDuplicatesInOneBatch: the same grant twice in a batch books once;
// two grants of one limit key with different awards book only the first,
// within a batch and across batches.
func TestBookDuplicatesInOneBatch(t *testing.T) {
	eachPath(t, func(t *testing.T, own func(*bookingtest.Fixture, *booking.Booker)) {
		f, l, b := onPath(t, own, 2, 1_000_000)

		u1, u2, u3 := f.User(), f.User(), f.User()
		same := f.Grant(u1, 1, l, 120)
		first := f.Grant(u2, 1, l, 300)
		other := first
		other.AwardType, other.Amount = "coupon", 999
		later := f.Grant(u3, 1, l, 50)
		laterOther := later
		laterOther.AwardType, laterOther.Amount = "coupon", 51

		out := book(t, b, []ledger.Grant{same, first, same, other, later})
		want := []byte{booking.BookedNow, booking.BookedNow, booking.BookedBefore, booking.BookedBefore, booking.BookedNow}
		if string(out) != string(want) {
			t.Fatalf("outcomes = %v, want %v", out, want)
		}
		if out := book(t, b, []ledger.Grant{laterOther}); out[0] != booking.BookedBefore {
			t.Fatalf("later grant of a booked limit key: outcome %d, want BookedBefore", out[0])
		}
		if got := b.Booked.Load(); got != 3 {
			t.Fatalf("Booked = %d, want 3", got)
		}
		f.Audit([]ledger.Grant{same, first, later})
		if e, _ := f.Account(u2).Entry(first.LimitKey()); e.AwardType != "cash" || e.Amount != 300 {
			t.Fatalf("entry of limit key %s = %+v, want the first award", first.LimitKey(), e)
		}
	})
}

// TestAccountsEqualPostings books several batches over two budgets and
// checks the money after each.
func TestAccountsEqualPostings(t *testing.T) {
	eachPath(t, func(t *testing.T, own func(*bookingtest.Fixture, *booking.Booker)) {
		f, l, b := onPath(t, own, 3, 5_000_000)
		second := f.AddBudget(3_000_000)
		leases := []*ledger.Lease{l, f.Lease(f.Budget, 400_000), f.Lease(second, 400_000), f.Lease(second, 100)}
		users := make([]uint64, 25)
		for i := range users {
			users[i] = f.User()
		}
		var booked []ledger.Grant
		for round := range 4 {
			var batch []ledger.Grant
			for i, u := range users {
				rain := uint64(round*3 + i%3)
				l := leases[(i+round)%len(leases)]
				batch = append(batch, f.Grant(u, rain, l, amountOf(u, rain)))
			}
			// Half the previous round again: redelivery mixed with new grants.
			if n := len(booked); n > 0 {
				batch = append(batch, booked[n-len(users)/2:]...)
			}
			out := book(t, b, batch)
			wantOutcomes(t, out[:len(users)], booking.BookedNow)
			wantOutcomes(t, out[len(users):], booking.BookedBefore)
			booked = append(booked, batch[:len(users)]...)
			f.Audit(booked)
		}
	})
}

// TestConcurrentBookOverlappingUsers: Book on several goroutines with
// overlapping batches (the same users, often the same grants); write
// conflicts are retried and each limit key is booked exactly once.
func TestConcurrentBookOverlappingUsers(t *testing.T) {
	eachPath(t, func(t *testing.T, own func(*bookingtest.Fixture, *booking.Booker)) {
		f, l, b := onPath(t, own, 4, 10_000_000)
		users := make([]uint64, 12)
		for i := range users {
			users[i] = f.User()
		}
		var all []ledger.Grant
		for _, u := range users {
			for rain := uint64(1); rain <= 6; rain++ {
				all = append(all, f.Grant(u, rain, l, amountOf(u, rain)))
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
				case booking.BookedNow:
					now[g.LimitKey()]++
				case booking.BookedBefore:
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
		t.Logf("%d grants booked in %d transactions", len(booked), b.Batches.Load())
		f.Audit(booked)
	})
}

// TestRedeemAttribution: redeem books under lease 0; the stream event then
// moves the entry and the hot amount to its real lease; both again are
// duplicates.
func TestRedeemAttribution(t *testing.T) {
	eachPath(t, func(t *testing.T, own func(*bookingtest.Fixture, *booking.Booker)) {
		f, l, b := onPath(t, own, 2, 1_000_000)
		u := f.User()
		event := f.Grant(u, 1, l, 250)
		redeem := event
		redeem.LeaseID, redeem.UserID = 0, "" // the token names neither

		wantOutcomes(t, book(t, b, []ledger.Grant{redeem}), booking.BookedNow)
		if e, _ := f.Account(u).Entry(event.LimitKey()); e.LeaseID != 0 || e.Amount != 250 {
			t.Fatalf("entry after redeem = %+v, want lease 0", e)
		}
		if got := bookingtest.BookedByLease(t, f.KV, f.Budget); got[0] != (ledger.LeaseUse{LeaseID: 0, Amount: 250, Count: 1}) || got[l.ID].Amount != 0 {
			t.Fatalf("BookedByLease after redeem = %v", got)
		}
		if apps := f.Account(u).Apps; len(apps) != 0 {
			t.Fatalf("binding recorded by a redeem that does not know the user: %v", apps)
		}

		wantOutcomes(t, book(t, b, []ledger.Grant{event}), booking.BookedAttrib)
		if e, _ := f.Account(u).Entry(event.LimitKey()); e.LeaseID != l.ID {
			t.Fatalf("entry after the stream event = %+v, want lease %d", e, l.ID)
		}
		if got := bookingtest.BookedByLease(t, f.KV, f.Budget); got[l.ID] != (ledger.LeaseUse{LeaseID: l.ID, Amount: 250, Count: 1}) ||
			got[0].Amount != 0 || got[0].Count != 0 {
			t.Fatalf("BookedByLease after attribution = %v", got)
		}
		if apps := f.Account(u).Apps; !slices.Equal(apps, []ledger.AppUser{{AppID: event.AppID, UserID: event.UserID}}) {
			t.Fatalf("bindings after attribution = %v, want the event's app user", apps)
		}
		// The event again, and a late redeem, change nothing.
		wantOutcomes(t, book(t, b, []ledger.Grant{event}), booking.BookedBefore)
		wantOutcomes(t, book(t, b, []ledger.Grant{redeem}), booking.BookedBefore)
		// An event whose amount differs from the redeemed entry is not attributed.
		u2 := f.User()
		r2 := f.Grant(u2, 1, nil, 40)
		e2 := f.Grant(u2, 1, l, 41)
		wantOutcomes(t, book(t, b, []ledger.Grant{r2}), booking.BookedNow)
		wantOutcomes(t, book(t, b, []ledger.Grant{e2}), booking.BookedBefore)
		// Redeem and event in one batch: booked, then attributed.
		u3 := f.User()
		e3 := f.Grant(u3, 1, l, 60)
		r3 := e3
		r3.LeaseID = 0
		if out := book(t, b, []ledger.Grant{r3, e3}); out[0] != booking.BookedNow || out[1] != booking.BookedAttrib {
			t.Fatalf("redeem and event in one batch: outcomes %v", out)
		}
		f.Audit([]ledger.Grant{event, r2, e3})
	})
}

// legacyRecord encodes grants as a version 1 record, as the code wrote
// them before keys named the activity: no key-format byte per grant.
func legacyRecord(gs []ledger.Grant) []byte {
	b := []byte{1}
	b = binary.AppendUvarint(b, uint64(len(gs)))
	for i := range gs {
		b = append(b, ledger.AppendGrant(nil, &gs[i])[1:]...) // drop the key-format byte
	}
	return b
}

// TestBookLegacyGrants: grants from before keys named the activity, as
// their version 1 records decode, book under their legacy limit keys (the
// journal keeps the key format), once: a redelivery after the upgrade is a
// duplicate, an event after a redeem of its version 1 token is an
// attribution, and a batch may mix both key formats.
func TestBookLegacyGrants(t *testing.T) {
	eachPath(t, func(t *testing.T, own func(*bookingtest.Fixture, *booking.Booker)) {
		f, l, b := onPath(t, own, 2, 1_000_000)
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
		u1, u2 := f.User(), f.User()
		old1, old2 := f.Grant(u1, 1, l, 120), f.Grant(u2, 1, l, 130)
		legacy := decode(legacyRecord([]ledger.Grant{old1, old2}))

		wantOutcomes(t, book(t, b, legacy[:1]), booking.BookedNow)
		key := legacy[0].LimitKey()
		if want := fmt.Sprintf("%d_scene_1_formal", u1); key != want {
			t.Fatalf("legacy limit key = %q, want %q", key, want)
		}
		if e, ok := f.Account(u1).Entry(key); !ok || e.Amount != 120 || e.TradeNo() != legacy[0].OutTradeNo() {
			t.Fatalf("entry %s = %+v, %v, want the legacy packet", key, e, ok)
		}
		// Redelivered after the upgrade, together with the rest of its record.
		if out := book(t, b, legacy); out[0] != booking.BookedBefore || out[1] != booking.BookedNow {
			t.Fatalf("redelivered legacy record: outcomes %v, want [BookedBefore BookedNow]", out)
		}
		wantOutcomes(t, book(t, b, decode(legacyRecord([]ledger.Grant{old1, old2}))), booking.BookedBefore)

		// A version 1 token redeemed after the upgrade, then its version 1
		// event; in the same batches, grants under the new keys.
		u3 := f.User()
		old3 := f.Grant(u3, 2, l, 60)
		redeem := old3
		redeem.Legacy, redeem.LeaseID, redeem.UserID = true, 0, ""
		now1 := f.Grant(u1, 3, l, 70)
		if out := book(t, b, []ledger.Grant{redeem, now1}); out[0] != booking.BookedNow || out[1] != booking.BookedNow {
			t.Fatalf("legacy redeem and a current grant: outcomes %v", out)
		}
		now2 := f.Grant(u2, 3, l, 80)
		if out := book(t, b, append(decode(legacyRecord([]ledger.Grant{old3})), now2)); out[0] != booking.BookedAttrib || out[1] != booking.BookedNow {
			t.Fatalf("legacy event after its redeem and a current grant: outcomes %v, want [BookedAttrib BookedNow]", out)
		}
		if e, _ := f.Account(u3).Entry(fmt.Sprintf("%d_scene_2_formal", u3)); e.LeaseID != l.ID || e.Amount != 60 {
			t.Fatalf("legacy entry after attribution = %+v, want lease %d", e, l.ID)
		}
		if n := len(f.Account(u1).Entries); n != 2 {
			t.Fatalf("user %d holds %d entries, want 2 (one legacy, one current)", u1, n)
		}
		event3 := old3
		event3.Legacy = true
		f.Audit([]ledger.Grant{legacy[0], legacy[1], event3, now1, now2})
	})
}

// TestBookStopsOnCorruptAccount: a stored account that fails the money
// checks, or a grant that would overflow a balance, is a broken invariant,
// reported as such at once, not retried; nothing of it is written.
func TestBookStopsOnCorruptAccount(t *testing.T) {
	f := newFixture(t, 1, 1_000_000)
	b := newBooker(t, f, "a", nil)
	u, l := corruptAccount(t, f, b)
	before := bookingtest.Snapshot(t, f.KV, "rr/")
	_, err := b.Book(context.Background(), []ledger.Grant{f.Grant(u, 2, l, 10)})
	if !errors.Is(err, ledger.ErrInvariant) {
		t.Fatalf("Book onto a corrupt account: %v, want ErrInvariant", err)
	}
	if after := bookingtest.Snapshot(t, f.KV, "rr/"); !maps.Equal(after, before) {
		t.Fatal("a Book refused for a corrupt account wrote to the store")
	}

	// A balance that would overflow is refused the same way.
	f2 := newFixture(t, 1, 1_000_000)
	b2 := newBooker(t, f2, "a", nil)
	l2 := f2.Lease(f2.Budget, 100_000)
	u2 := f2.User()
	first := f2.Grant(u2, 1, l2, 10)
	wantOutcomes(t, book(t, b2, []ledger.Grant{first}), booking.BookedNow)
	before = bookingtest.Snapshot(t, f2.KV, "rr/")
	_, err = b2.Book(context.Background(), []ledger.Grant{f2.Grant(u2, 3, l2, 5), f2.Grant(u2, 2, l2, math.MaxInt64)})
	if !errors.Is(err, ledger.ErrOverflow) {
		t.Fatalf("Book overflowing a balance: %v, want ErrOverflow", err)
	}
	if after := bookingtest.Snapshot(t, f2.KV, "rr/"); !maps.Equal(after, before) {
		t.Fatal("a Book refused for an overflow wrote to the store")
	}
	f2.Audit([]ledger.Grant{first})
}

// corruptAccount books a grant to a new user of partition 0 through b, then
// writes the user's page with a balance that no longer equals its entries.
func corruptAccount(t *testing.T, f *bookingtest.Fixture, b *booking.Booker) (uint64, *ledger.Lease) {
	t.Helper()
	l := f.Lease(f.Budget, 100_000)
	u := userIn(f, 0)
	wantOutcomes(t, book(t, b, []ledger.Grant{f.Grant(u, 1, l, 10)}), booking.BookedNow)
	acct := f.Account(u)
	acct.Balances[0].Amount++
	page := ledger.Page{Seq: partState(t, f, 0).NextSeq - 1, Accounts: []*ledger.Account{acct}}
	bookingtest.Put(t, f.KV, storage.PageKey(0, storage.PageOf(u)), ledger.AppendPage(nil, &page))
	return u, l
}
