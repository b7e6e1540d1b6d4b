package node_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"redrain/booking"
	"redrain/ledger"
	"redrain/storage"
	"redrain/storage/storagetest"
	"redrain/tokens"
)

// TestReclaimGoneLease: a lease of a node that never returns is reclaimed
// once it has expired for ledger.LeaseReclaimGrace: the grant its holder
// wrote before the expiry is booked and counted, the lease closes at
// exactly that (the rest goes back to the budget), and a grant the holder
// wrote afterwards (a paused process waking up) is refused by booking,
// reported in the metrics and in reconcile, and credits no one. The
// audit holds throughout.
func TestReclaimGoneLease(t *testing.T) {
	ctx := context.Background()
	n := startNode(t, t.TempDir(), storagetest.Redis(t))
	grantOf(t, n, 1, "warm") // the demo budget exists and is served
	kv, parts := n.Store(), n.Partitions()

	// The gone node's lease: it stopped renewing a while ago, and expires
	// for good (reclaimable) in about three seconds.
	var gone ledger.Lease
	err := kv.Update(ctx, func(txn storage.Txn) error {
		raw, err := storage.Get(ctx, txn, storage.BudgetKey(demoBudget))
		if err != nil {
			return err
		}
		bud, err := ledger.UnmarshalBudget(raw)
		if err != nil {
			return err
		}
		l := bud.TakeLease(1_000, "n-gone", 1)
		if l == nil {
			return fmt.Errorf("budget %+v cannot lease", bud)
		}
		l.Expires = time.Now().Add(3*time.Second - ledger.LeaseReclaimGrace).UnixMilli()
		gone = *l
		bud.Version++
		if err := txn.Set(storage.BudgetKey(demoBudget), ledger.MarshalBudget(nil, bud)); err != nil {
			return err
		}
		return txn.Set(storage.LeaseKey(demoBudget, l.ID), ledger.MarshalLease(nil, l))
	})
	if err != nil {
		t.Fatal(err)
	}
	// What the gone node wrote (and answered) before its lease expired.
	act1, act2 := uint64(1<<40+11), uint64(1<<40+12)
	produce := func(act uint64, user string, amount int64) (int32, int64) {
		t.Helper()
		g := ledger.Grant{AppID: 1, ActID: act, UserID: user, ActivityID: "demo", SceneID: "rain", RainID: 1,
			Stage: tokens.StageFormal, AwardType: "cash", Asset: ledger.AssetCash, Amount: amount, BudgetID: demoBudget,
			LeaseID: gone.ID, OpenTime: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli(), IssuedAt: time.Now().UnixMilli()}
		p := grantProducer(t, n)
		defer p.Close()
		part := storage.PartitionOf(act, parts)
		_, off, err := p.SendMessage(&sarama.ProducerMessage{Topic: storage.GrantTopic, Partition: part,
			Value: sarama.ByteEncoder(ledger.AppendGrantRecord(nil, []ledger.Grant{g}))})
		if err != nil {
			t.Fatal(err)
		}
		return part, off
	}
	produce(act1, "gone-1", 77)

	// Reclaimed: closed at what was booked under it.
	var closed *ledger.Lease
	for deadline := time.Now().Add(60 * time.Second); ; {
		err := kv.View(func(txn storage.Txn) error {
			raw, err := storage.Get(ctx, txn, storage.LeaseKey(demoBudget, gone.ID))
			if err == nil {
				closed, err = ledger.UnmarshalLease(raw)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if closed.Closed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lease %+v not reclaimed within 60s", closed)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if closed.Issued != 77 || closed.IssuedCount != 1 {
		t.Fatalf("reclaimed lease = %+v, want closed at the one grant booked under it (77)", closed)
	}

	// The holder wakes up and writes another grant under it: refused.
	part, off := produce(act2, "gone-2", 55)
	for deadline := time.Now().Add(30 * time.Second); ; {
		booked, err := booking.Booked(ctx, kv, parts)
		if err != nil {
			t.Fatal(err)
		}
		if booked[part] > off {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("partition %d booked to %d, not past the late record at %d", part, booked[part], off)
		}
		time.Sleep(100 * time.Millisecond)
	}
	r := audit(t, n) // fails the test if any invariant broke
	var found bool
	for _, f := range r.Fenced {
		if f.Partition == part && f.Offset == off && f.Grants == 1 && f.Amount == 55 {
			found = true
		}
	}
	if !found {
		t.Fatalf("reconcile's refused grants %+v, want partition %d offset %d: 1 grant of 55", r.Fenced, part, off)
	}
	if code, body := get(t, n, fmt.Sprintf("/v1/wallet/%d", act1)); code != http.StatusOK || !strings.Contains(string(body), `"balance":77`) {
		t.Fatalf("wallet of the grant booked before the expiry = %d %s, want 77", code, body)
	}
	_, metrics := get(t, n, "/metrics")
	for _, want := range []string{"\nredrain_booking_fenced_grants_total 1\n", "\nredrain_leases_reclaimed_total 1\n"} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %q", strings.TrimSpace(want))
		}
	}
}
