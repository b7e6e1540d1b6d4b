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

// ownerOn takes partition 0 over for a new booker on kv, with its committer
// running until the test ends; the test plays the partition's goroutine.
func ownerOn(t *testing.T, kv *storage.TiKV, name string) *part {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	b := New(Config{Log: slog.New(slog.DiscardHandler), TiKV: kv, Partitions: 1, Metrics: &metrics.Registry{}, Clock: time.Now, Owner: name})
	for _, ch := range b.commits {
		go b.commitLoop(ctx, ch)
	}
	p, err := b.takeOver(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	p.gone = make(chan struct{})
	t.Cleanup(func() { close(p.gone) })
	return p
}

// bookUnit applies grants as one unit and waits for its commit.
func bookUnit(t *testing.T, p *part, grants []ledger.Grant) []byte {
	t.Helper()
	ctx := context.Background()
	u := p.newUnit()
	u.grants = grants
	if err := p.send(ctx, u); err != nil {
		t.Fatal(err)
	}
	for len(p.pending) > 0 {
		settleNext(t, p)
	}
	return u.outcomes
}

// settleNext waits for the committer's next answer and settles it.
func settleNext(t *testing.T, p *part) {
	t.Helper()
	select {
	case r := <-p.results:
		if err := p.settle(context.Background(), nil, r); err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no commit within 30 s")
	}
}

func heavyGrant(act, rain uint64) ledger.Grant {
	return ledger.Grant{AppID: 1, ActID: act, UserID: fmt.Sprint("u", act), ActivityID: "demo", SceneID: "rain",
		RainID: rain, Stage: tokens.StageFormal, AwardType: "cash", Asset: ledger.AssetCash, Amount: int64(rain),
		BudgetID: "demo/formal/cash", LeaseID: 1, OpenTime: 1, IssuedAt: 2}
}

// TestHistoryAcrossOwners books 200 packets into one user, in units of 10:
// the oldest are archived into history chunks written with the bookings
// that archived them. A new owner's takeover (and a reader of the store)
// after a checkpoint finds the same account, knows every archived limit key
// (a repeat of the first rain books nothing) and reads the history in
// booking order.
func TestHistoryAcrossOwners(t *testing.T) {
	kv := storagetest.TiKV(t, "")
	const act = 7
	first := ownerOn(t, kv, "first")
	var total int64
	for from := uint64(1); from <= 200; from += 10 {
		var gs []ledger.Grant
		for rain := from; rain < from+10; rain++ {
			gs = append(gs, heavyGrant(act, rain))
			total += int64(rain)
		}
		if from == 191 {
			first.sinceCkpt = ckptJournals // the last unit checkpoints its page
		}
		for i, o := range bookUnit(t, first, gs) {
			if o != BookedNow {
				t.Fatalf("rain %d: outcome %d", from+uint64(i), o)
			}
		}
	}
	a := first.account(act)
	if a.Archived == 0 || a.Archived+uint64(len(a.Entries)) != 200 {
		t.Fatalf("archived %d, recent %d; want some archived, 200 in all", a.Archived, len(a.Entries))
	}

	if first.committed.CkptSeq != first.committed.NextSeq-1 {
		t.Fatalf("state %+v: the last unit did not checkpoint", first.committed)
	}

	// The new owner loads the page, then the archived keys from the chunks.
	second := ownerOn(t, kv, "second") // fences the first
	b := second.account(act)
	if b == nil {
		t.Fatal("the new owner has no account")
	}
	if b.Archived != a.Archived || b.Balance(ledger.AssetCash) != total || !b.ArchivedKeysLoaded() {
		t.Fatalf("new owner's account: %d archived, balance %d, keys loaded %v; want %d, %d, true",
			b.Archived, b.Balance(ledger.AssetCash), b.ArchivedKeysLoaded(), a.Archived, total)
	}
	if out := bookUnit(t, second, []ledger.Grant{heavyGrant(act, 1), heavyGrant(act, 201)}); out[0] != BookedBefore || out[1] != BookedNow {
		t.Fatalf("repeat of an archived rain and a new one: outcomes %v, want [%d %d]", out, BookedBefore, BookedNow)
	}
	err := kv.View(func(txn storage.Txn) error {
		got, err := ReadAccounts(context.Background(), txn, 1, []uint64{act})
		if err != nil {
			return err
		}
		r := got[act]
		if r == nil || r.Balance(ledger.AssetCash) != total+201 {
			return fmt.Errorf("reader's account %+v, want balance %d", r, total+201)
		}
		archived, err := Archived(context.Background(), txn, r)
		if err != nil {
			return err
		}
		for i, e := range append(archived, r.Entries...) {
			g := heavyGrant(act, uint64(i)+1)
			if want := g.LimitKey(); e.LimitKey != want {
				return fmt.Errorf("entry %d is %s, want %s", i, e.LimitKey, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
