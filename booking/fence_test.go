package booking_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"redrain/booking"
	"redrain/booking/bookingtest"
	"redrain/ledger"
	"redrain/storage"
)

// TestFenceLease: an owner fences a lease from the larger of the offset
// asked and its own next offset (grants it booked already stay booked),
// keeps the fence in the partition's state, and from there refuses the
// lease's grants (kept in the store, counted), booking everything else in
// the same records; a second fence of the lease answers the first; a new
// owner holds the fence too; a node that does not book the partition
// answers ErrNotOwned.
func TestFenceLease(t *testing.T) {
	ctx := context.Background()
	f, l, users, r0, a, oa := bookedOwner(t, 4) // offset 0: a grant to each user under l
	other := f.Lease(f.Budget, 100_000)
	if _, err := newBooker(t, f, "idle/1", nil).Fence(ctx, 0, ledger.Fence{BudgetID: f.Budget, LeaseID: l.ID}); !errors.Is(err, booking.ErrNotOwned) {
		t.Fatalf("Fence on a node that books nothing = %v, want ErrNotOwned", err)
	}
	// Asked from offset 0, but offset 0 is booked: the fence starts at 1.
	held, err := a.Fence(ctx, 0, ledger.Fence{BudgetID: f.Budget, LeaseID: l.ID, From: 0, At: 5})
	if err != nil || held.From != 1 {
		t.Fatalf("Fence = %+v, %v; want it from offset 1", held, err)
	}
	if s := partState(t, f, 0); !slices.Equal(s.Fences, []ledger.Fence{held}) {
		t.Fatalf("partition state %+v, want the fence", s)
	}
	if again, err := a.Fence(ctx, 0, ledger.Fence{BudgetID: f.Budget, LeaseID: l.ID, From: 9}); err != nil || again != held {
		t.Fatalf("second Fence = %+v, %v; want the first %+v", again, err, held)
	}
	// A record with a grant under the fenced lease and one under another.
	late := f.Grant(users[0], 2, l, 30)
	fine := f.Grant(users[1], 2, other, 40)
	off := oa.feed(0, []ledger.Grant{late, fine})
	oa.waitBooked()
	refusedKey := storage.FencedKey(0, off)
	raw := getKey(t, f, refusedKey)
	if gs, err := ledger.DecodeGrantRecord(nil, raw); err != nil || len(gs) != 1 || gs[0] != late {
		t.Fatalf("refused record %x = %+v, %v; want the late grant", raw, gs, err)
	}
	// A new owner keeps the fence.
	oa.stop()
	b := newBooker(t, f, "owner/2", nil)
	ob := startOwner(t, f, b, false, 0)
	late2 := f.Grant(users[2], 3, l, 31)
	off2 := ob.feed(0, []ledger.Grant{late2})
	ob.waitBooked()
	if getKey(t, f, storage.FencedKey(0, off2)) == nil {
		t.Fatal("the new owner booked a grant under the fenced lease")
	}
	f.Audit(append(slices.Clone(r0), fine))
}

func getKey(t *testing.T, f *bookingtest.Fixture, key []byte) []byte {
	t.Helper()
	return bookingtest.Get(t, f.KV, key)
}
