package node_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"redrain/booking"
	"redrain/grant"
	"redrain/ledger"
	"redrain/storage"
	"redrain/storage/storagetest"
)

// TestOutstandingBookedExactlyOnce: packets issued while booking is held
// (a record it cannot read ahead of them on every partition) are the
// users' outstanding packets; booking them as a withdrawal does (Book,
// lease 0) credits each once, after which none is outstanding and a
// second Book changes nothing; once the held records are parked, booking
// reads the same packets from the stream and only attributes them to
// their leases: one entry per packet, the audit passes.
func TestOutstandingBookedExactlyOnce(t *testing.T) {
	n := startNode(t, t.TempDir(), storagetest.Redis(t))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	p := grantProducer(t, n)
	held := map[int32]int64{}
	for part := range n.Partitions() {
		_, off, err := p.SendMessage(&sarama.ProducerMessage{Topic: storage.GrantTopic, Partition: part, Value: sarama.ByteEncoder("held by a test")})
		if err != nil {
			t.Fatal(err)
		}
		held[part] = off
	}
	p.Close()

	// Straight to the grant path: the API refuses grants while booking is
	// stuck (the node is not ready).
	var reqs []grant.Request
	for u := range 12 {
		reqs = append(reqs, grant.Request{AppID: 1, UserID: fmt.Sprintf("owed-%d", u), ActivityID: "demo", SceneID: "rain", RainID: 1})
	}
	res := make([]grant.Result, len(reqs))
	n.Grants().Admit(reqs, res)
	events := map[uint64]ledger.Grant{}
	var ids []uint64
	for i, r := range res {
		if r.Outcome != grant.Issued {
			t.Fatalf("grant %d = %v (%v), want issued", i, r.Outcome, r.Err)
		}
		events[r.Grant.ActID] = r.Grant
		ids = append(ids, r.Grant.ActID)
	}

	var owed []ledger.Grant
	for _, id := range ids {
		gs, err := n.Grants().Outstanding(ctx, id)
		if err != nil {
			t.Fatalf("Outstanding(%d): %v", id, err)
		}
		want := events[id]
		want.LeaseID, want.IssuedAt, want.UserID = 0, 0, ""
		if len(gs) != 1 || gs[0] != want {
			t.Fatalf("Outstanding(%d) = %+v, want %+v", id, gs, want)
		}
		owed = append(owed, gs...)
	}
	out, err := n.Booker().Book(ctx, owed)
	if err != nil {
		t.Fatalf("Book: %v", err)
	}
	for i, o := range out {
		if o != booking.BookedNow {
			t.Fatalf("Book outcome %d = %d, want booked now", i, o)
		}
	}
	// Booking reports what it booked to the grant path (queued): nothing
	// is outstanding any more.
	deadline := time.Now().Add(10 * time.Second)
	for _, id := range ids {
		for {
			gs, err := n.Grants().Outstanding(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if len(gs) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("act %d: still outstanding after Book: %+v", id, gs)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if out, err := n.Booker().Book(ctx, owed); err != nil {
		t.Fatal(err)
	} else {
		for i, o := range out {
			if o != booking.BookedBefore {
				t.Fatalf("second Book outcome %d = %d, want booked before", i, o)
			}
		}
	}
	checkEntries := func(lease func(g ledger.Grant) uint64) error {
		var accounts map[uint64]*ledger.Account
		err := n.Store().View(func(txn storage.Txn) error {
			var err error
			accounts, err = booking.ReadAccounts(ctx, txn, n.Partitions(), ids)
			return err
		})
		if err != nil {
			return err
		}
		for _, id := range ids {
			a, g := accounts[id], events[id]
			if a == nil || len(a.Entries) != 1 {
				return fmt.Errorf("act %d: account %+v, want one entry", id, a)
			}
			e := a.Entries[0]
			if e.LimitKey != g.LimitKey() || e.TradeNo() != g.OutTradeNo() || e.Amount != g.Amount || e.Asset != g.Asset ||
				e.LeaseID != lease(g) || a.Balance(g.Asset) != g.Amount {
				return fmt.Errorf("act %d: entry %+v balance %d, want %+v under lease %d", id, e, a.Balance(g.Asset), g, lease(g))
			}
		}
		return nil
	}
	if err := checkEntries(func(ledger.Grant) uint64 { return 0 }); err != nil {
		t.Fatalf("after Book: %v", err)
	}

	// The held records parked, booking reads the stream's same packets.
	for part, off := range held {
		body := fmt.Sprintf(`{"partition":%d,"offset":%d,"reason":"held by a test"}`, part, off)
		if code, answer := postPark(t, n, body); code != http.StatusOK {
			t.Fatalf("park partition %d offset %d: %d %s", part, off, code, answer)
		}
	}
	deadline = time.Now().Add(drainWithin)
	for {
		err := checkEntries(func(g ledger.Grant) uint64 { return g.LeaseID })
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the stream: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for {
		if code, _ := get(t, n, "/readyz"); code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("node not ready after the parks")
		}
		time.Sleep(50 * time.Millisecond)
	}
	audit(t, n)
}
