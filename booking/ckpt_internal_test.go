package booking

import (
	"context"
	"testing"

	"redrain/ledger"
	"redrain/storage"
	"redrain/storage/storagetest"
)

// TestCheckpointSpreadOverUnits: a checkpoint of more pages than one unit
// carries is written by the units that follow, ckptPagesPerUnit pages
// each; the partition's checkpoint moves only with its last pages, and
// meanwhile (and after) a reader of the store and a new owner find every
// account as the owner holds it.
func TestCheckpointSpreadOverUnits(t *testing.T) {
	kv := storagetest.TiKV(t, "")
	p := ownerOn(t, kv, "first")
	const pages = 3*ckptPagesPerUnit + 5
	var gs []ledger.Grant
	for i := range uint64(pages) {
		gs = append(gs, heavyGrant(i*storage.PageUsers+1, 1)) // one user per page
	}
	bookUnit(t, p, gs)
	p.sinceCkpt = ckptJournals // the next unit starts a checkpoint
	before := p.committed.CkptSeq
	units := 0
	for p.round != nil || units == 0 {
		bookUnit(t, p, []ledger.Grant{heavyGrant(1, uint64(100+units))})
		units++
		if p.round != nil && p.committed.CkptSeq != before {
			t.Fatalf("after %d units, checkpoint moved to %d with %d pages left", units, p.committed.CkptSeq, len(p.round.todo))
		}
		if units > 10 {
			t.Fatal("the checkpoint never ended")
		}
	}
	if units != 4 || p.committed.CkptSeq <= before {
		t.Fatalf("%d units wrote the checkpoint, now at %d (from %d); want 4 units and a later checkpoint", units, p.committed.CkptSeq, before)
	}
	for k, pg := range p.pages {
		if pg.dirtyAt != 0 && pg.dirtyAt <= p.committed.CkptSeq {
			t.Errorf("page %d still dirty at %d, checkpoint at %d", k, pg.dirtyAt, p.committed.CkptSeq)
		}
	}
	ids := p.allIDs()
	var stored map[uint64]*ledger.Account
	err := kv.View(func(txn storage.Txn) error {
		var err error
		stored, err = ReadAccounts(context.Background(), txn, 1, ids)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	second := ownerOn(t, kv, "second")
	for _, id := range ids {
		want := p.account(id)
		for name, got := range map[string]*ledger.Account{"store": stored[id], "new owner": second.account(id)} {
			if got == nil || got.Version != want.Version || got.Balance(ledger.AssetCash) != want.Balance(ledger.AssetCash) || len(got.Entries) != len(want.Entries) {
				t.Fatalf("%s: account %d = %+v, want %+v", name, id, got, want)
			}
		}
	}
}
