package booking_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"redrain/booking"
	"redrain/ledger"
)

// ownersOf reaches bookers by owner name, in process, as the node's
// remoting does; it counts the reads each answered.
type ownersOf struct {
	mu     sync.Mutex
	byName map[string]*booking.Booker
	asked  map[string]int
}

func (o *ownersOf) Read(ctx context.Context, owner string, req []byte) ([]byte, error) {
	o.mu.Lock()
	b := o.byName[owner]
	o.asked[owner]++
	o.mu.Unlock()
	if b == nil {
		return nil, errors.New("no such node")
	}
	return b.ServeRead(ctx, req), nil
}

func (o *ownersOf) count(owner string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.asked[owner]
}

// TestReadThroughTheOwner: a node that owns no partition reads accounts
// from the partition's owner, never older than the store as it read it:
// the owner's answer equals the store's; after a redeem written by the
// reader straight into the store, the read shows it (the owner answers
// only once it caught up, or the reader reads the store); when the owner
// is unreachable or no longer owns the partition, the store answers.
func TestReadThroughTheOwner(t *testing.T) {
	f, _, users, r0, o, oo := bookedOwner(t, 6)
	r := newBooker(t, f, "reader/1", nil)
	owners := &ownersOf{byName: map[string]*booking.Booker{"owner/1": o}, asked: map[string]int{}}
	r.ReadThrough(owners)
	ctx := context.Background()

	got, err := r.Accounts(ctx, users)
	if err != nil {
		t.Fatal(err)
	}
	accountsEqual(t, "through the owner against the store", f.Accounts(users), got)
	if owners.count("owner/1") != 1 || r.OwnerReads.Load() != 1 || r.OwnerReadsMissed.Load() != 0 {
		t.Fatalf("asked the owner %d times, %d reads answered, %d missed; want one answered",
			owners.count("owner/1"), r.OwnerReads.Load(), r.OwnerReadsMissed.Load())
	}

	redeem := f.Grant(users[0], 2, nil, 41)
	wantOutcomes(t, book(t, r, []ledger.Grant{redeem}), booking.BookedNow)
	got, err = r.Accounts(ctx, users[:1])
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := got[users[0]].Entry(redeem.LimitKey()); !ok {
		t.Fatalf("user %d read right after its redeem lacks it", users[0])
	}
	if n := r.OwnerReads.Load() + r.OwnerReadsMissed.Load(); n != 2 {
		t.Fatalf("%d reads through the owner, want 2", n)
	}

	// The owner unreachable: the store answers.
	owners.mu.Lock()
	delete(owners.byName, "owner/1")
	owners.mu.Unlock()
	missed := r.OwnerReadsMissed.Load()
	got, err = r.Accounts(ctx, users)
	if err != nil {
		t.Fatal(err)
	}
	accountsEqual(t, "store fallback", f.Accounts(users), got)
	if r.OwnerReadsMissed.Load() != missed+1 {
		t.Fatal("a read the owner could not answer was not counted missed")
	}

	// The name reaches a node that does not own the partition: it answers
	// not-owner, and the store answers.
	owners.mu.Lock()
	owners.byName["owner/1"] = newBooker(t, f, "stranger/1", nil)
	owners.mu.Unlock()
	got, err = r.Accounts(ctx, users)
	if err != nil {
		t.Fatal(err)
	}
	accountsEqual(t, "store after a not-owner answer", f.Accounts(users), got)
	if r.OwnerReadsMissed.Load() != missed+2 {
		t.Fatal("a not-owner answer was not counted missed")
	}
	missed++

	// Reachable again but owning nothing (it stopped): the store answers.
	owners.mu.Lock()
	owners.byName["owner/1"] = o
	owners.mu.Unlock()
	oo.stop()
	asked := owners.count("owner/1")
	got, err = r.Accounts(ctx, users)
	if err != nil {
		t.Fatal(err)
	}
	accountsEqual(t, "store after the owner stopped", f.Accounts(users), got)
	// A clean stop releases the partition: then the reader does not ask.
	if ask := owners.count("owner/1") - asked; int64(ask) != r.OwnerReadsMissed.Load()-(missed+1) || r.OwnerReads.Load() > 2 {
		t.Fatalf("after the owner stopped: asked %d times, %d answered, %d missed", ask, r.OwnerReads.Load(), r.OwnerReadsMissed.Load()-missed-1)
	}
	f.Audit(append(r0, redeem))
}

// BenchmarkReadThrough reads one user's account on a node that does not
// own its partition, from the store (the partition's page and the journals
// after its checkpoint) against through the owner (in process here: the
// remoting between nodes is not counted), after rounds records of grants
// to every user, booked but not all checkpointed.
func BenchmarkReadThrough(b *testing.B) {
	const users, rounds = 1000, 20
	f, l, us, _, o, oo := bookedOwner(b, users)
	for rain := uint64(2); rain <= rounds; rain++ {
		oo.feed(0, grantsFor(f, us, rain, l))
	}
	oo.waitBooked()
	for _, through := range []bool{false, true} {
		name := "store"
		r := newBooker(b, f, "reader/1", nil)
		if through {
			name = "owner"
			r.ReadThrough(&ownersOf{byName: map[string]*booking.Booker{"owner/1": o}, asked: map[string]int{}})
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			ctx := context.Background()
			i := 0
			for b.Loop() {
				id := us[i%len(us)]
				i++
				got, err := r.Accounts(ctx, []uint64{id})
				if err != nil || got[id] == nil {
					b.Fatalf("Accounts(%d) = %v, %v", id, got[id], err)
				}
			}
		})
	}
}
