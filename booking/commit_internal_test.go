package booking

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"redrain/ledger"
	"redrain/metrics"
	"redrain/storage"
	"redrain/storage/storagetest"
	"redrain/tokens"
)

// TestOwnCommitThatLandedIsNotFencing: a unit's transaction committed, but
// its commit answered an error (an undetermined result: the reply was
// lost), so the committer's retry found the journal grown and failed the
// unit as moved. Catching up then finds the booked offset moved under the
// owner's own epoch, which only the owner's own writes do: it adopts them
// and keeps the partition, instead of giving it up as fenced (the consumer
// group would not hand it to anyone before the next rebalance).
func TestOwnCommitThatLandedIsNotFencing(t *testing.T) {
	ctx := context.Background()
	b, p := soleOwner(t)
	grants := func(rain uint64) []ledger.Grant {
		var gs []ledger.Grant
		for u := uint64(1); u <= 3; u++ {
			gs = append(gs, testGrant(u, rain))
		}
		return gs
	}
	u := p.newUnit()
	u.grants, u.from, u.to = grants(1), 0, 1
	if err := p.send(ctx, u); err != nil {
		t.Fatal(err)
	}
	<-b.commits[0]
	// It lands; its answer is lost; the retry's check fails it as moved.
	if err := b.tikv.Update(ctx, func(txn storage.Txn) error { _, err := writeUnits(txn, []*unit{u}); return err }); err != nil {
		t.Fatal(err)
	}
	if err := p.settle(ctx, nil, result{u: u, err: errMoved}); err != nil {
		t.Fatalf("settling a moved unit whose own commit landed: %v, want the partition kept", err)
	}
	if p.committed.NextSeq != 2 || p.committed.Booked != 1 || len(p.pending) != 0 {
		t.Fatalf("after catching up: committed %+v, %d pending", p.committed, len(p.pending))
	}
	for id := uint64(1); id <= 3; id++ {
		if a := p.account(id); a == nil || a.Balance(ledger.AssetCash) != 10 || a.Version != 1 {
			t.Fatalf("account %d after catching up: %+v", id, a)
		}
	}
	// The partition goes on booking.
	u2 := p.newUnit()
	u2.grants, u2.from, u2.to = grants(2), 1, 2
	if err := p.send(ctx, u2); err != nil {
		t.Fatal(err)
	}
	b.commit(ctx, []*unit{<-b.commits[0]}, map[*part]uint64{})
	if err := p.settle(ctx, nil, <-p.results); err != nil {
		t.Fatal(err)
	}
	if p.committed.NextSeq != 3 || p.committed.Booked != 2 {
		t.Fatalf("after the next unit: committed %+v", p.committed)
	}
}

// TestCommitterNeverWaitsOnAPartition: the committer answers a partition
// while the partition's goroutine may be blocked sending it units (the
// channel full of other partitions' units), so answering must never block:
// the results of the worst case fit, three units in flight (two and a
// timed checkpoint) failed by a write elsewhere, one read, and the three
// sent again committed before the other two failures are read.
func TestCommitterNeverWaitsOnAPartition(t *testing.T) {
	ctx := context.Background()
	b, p := soleOwner(t)
	var inFlight []*unit
	for i := range int64(pipelineDepth + 1) {
		u := p.newUnit()
		u.grants, u.from, u.to = []ledger.Grant{testGrant(uint64(i+1), 1)}, i, i+1
		if err := p.send(ctx, u); err != nil {
			t.Fatal(err)
		}
		inFlight = append(inFlight, <-b.commits[0])
	}
	elsewhere := []ledger.Grant{testGrant(9, 1)}
	elsewhere[0].LeaseID = 0
	if _, err := b.bookElsewhere(ctx, 0, elsewhere); err != nil {
		t.Fatal(err)
	}
	failed := map[*part]uint64{}
	b.commit(ctx, inFlight, failed)
	resent := make(chan []*unit)
	go func() {
		var again []*unit
		for range inFlight {
			again = append(again, <-b.commits[0])
		}
		resent <- again
	}()
	if err := p.settle(ctx, nil, <-p.results); err != nil { // the first failure: caught up, sent again
		t.Fatal(err)
	}
	again := <-resent
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.commit(ctx, again, failed)
	}()
	select {
	case <-done:
	case <-time.After(45 * time.Second):
		close(p.gone) // lets the committer go
		<-done
		t.Fatalf("the committer waited on the partition's results (capacity %d)", cap(p.results))
	}
	// The partition reads what was answered: two stale failures, then its
	// units committed.
	for range len(inFlight) - 1 + len(again) {
		if err := p.settle(ctx, nil, <-p.results); err != nil {
			t.Fatal(err)
		}
	}
	if p.committed.Booked != int64(len(inFlight)) || len(p.pending) != 0 {
		t.Fatalf("committed %+v with %d pending, want every unit committed", p.committed, len(p.pending))
	}
}

// soleOwner is a booker of one partition on its own store that has taken
// the partition over; the test drives the partition by hand.
func soleOwner(t *testing.T) (*Booker, *part) {
	t.Helper()
	b := New(Config{Log: slog.New(slog.DiscardHandler), TiKV: storagetest.TiKV(t, ""), Partitions: 1,
		Metrics: &metrics.Registry{}, Clock: time.Now, Owner: "a/1"})
	p, err := b.takeOver(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	p.gone = make(chan struct{})
	return b, p
}

// testGrant is a grant of 10 cash to act under lease 1.
func testGrant(act, rain uint64) ledger.Grant {
	return ledger.Grant{AppID: 7, ActID: act, UserID: fmt.Sprint(act), ActivityID: "a", SceneID: "s", RainID: rain,
		Stage: tokens.StageFormal, AwardType: "cash", Asset: ledger.AssetCash, Amount: 10, BudgetID: "b", LeaseID: 1}
}
