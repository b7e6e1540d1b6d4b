package booking

import (
	"context"
	"slices"
	"testing"
	"time"

	"redrain/ledger"
	"redrain/metrics"
	"redrain/storage"
	"redrain/storage/storagetest"
)

// TestFrozenPages: a page freezes (only its bytes stay) once every change
// of it is committed and it went a whole sweep interval untouched, before
// its checkpoint too, which then writes the bytes it froze with (nothing
// encoded again); a page with an uncommitted change never freezes; any
// access thaws it whole; a repeat into a frozen page books nothing and a
// new grant or a new user books; a page holding an account with archived
// entries never freezes; the store and a new owner hold every account as
// the partition does.
func TestFrozenPages(t *testing.T) {
	kv := storagetest.TiKV(t, "")
	p := ownerOn(t, kv, "first")
	p.b.sweepEvery = 0 // the test sweeps
	const pu = storage.PageUsers
	users := []uint64{1, 2, pu + 1, pu + 2, 2*pu + 1}
	var gs []ledger.Grant
	for _, id := range users {
		gs = append(gs, heavyGrant(id, 1))
	}
	// Applied and sent, not settled: its pages hold uncommitted accounts.
	ctx := context.Background()
	u := p.newUnit()
	u.grants = gs
	if err := p.send(ctx, u); err != nil {
		t.Fatal(err)
	}
	p.sweep()
	p.sweep()
	if p.hot() != len(users) || p.b.Frozen.Load() != 0 {
		t.Fatalf("pages with uncommitted accounts froze: %d accounts in memory, %d pages frozen", p.hot(), p.b.Frozen.Load())
	}
	settleNext(t, p)
	// Committed, not checkpointed, untouched for a sweep: frozen.
	if n := p.sweep(); n != 3 || p.hot() != 0 {
		t.Fatalf("after the commit a sweep froze %d pages, %d accounts left in memory; want 3 and none", n, p.hot())
	}
	for _, k := range []uint64{0, 1, 2} {
		if pg := p.pages[k]; pg.dirtyAt == 0 || pg.frozen == nil {
			t.Fatalf("page %d frozen before its checkpoint: dirty at %d, bytes %v", k, pg.dirtyAt, pg.frozen != nil)
		}
	}
	frozen1 := p.pages[1].frozen

	// The next unit carries the checkpoint of every dirty page: page 0,
	// which it thaws and changes, encoded; pages 1 and 2 as they froze.
	// Once it commits, each page is clean and keeps what it wrote.
	p.sinceCkpt = ckptJournals
	bookUnit(t, p, []ledger.Grant{heavyGrant(3, 1)})
	for _, k := range []uint64{0, 1, 2} {
		if pg := p.pages[k]; pg.dirtyAt != 0 || pg.frozen == nil {
			t.Fatalf("page %d after its checkpoint: dirty at %d, bytes kept %v", k, pg.dirtyAt, pg.frozen != nil)
		}
	}
	if !p.pages[1].cold || !p.pages[2].cold || p.pages[0].cold || &p.pages[1].frozen[0] != &frozen1[0] {
		t.Fatalf("after the checkpoint: cold pages 0 %v, 1 %v, 2 %v; page 1's bytes kept as they froze: %v",
			p.pages[0].cold, p.pages[1].cold, p.pages[2].cold, &p.pages[1].frozen[0] == &frozen1[0])
	}
	// Page 0 was touched by the last unit.
	if n := p.sweep(); n != 0 {
		t.Fatalf("the first sweep froze %d pages; want none", n)
	}
	if n := p.sweep(); n != 1 || p.hot() != 0 || len(p.hotPages) != 0 {
		t.Fatalf("the second sweep froze %d pages, %d accounts left in memory, %d pages left to sweep; want 1 and none", n, p.hot(), len(p.hotPages))
	}

	// A read thaws the page it needs, only that one.
	r := &readReq{ids: []uint64{pu + 1}, out: map[uint64]*ledger.Account{}, done: make(chan struct{})}
	p.read(r)
	if a := r.out[pu+1]; a == nil || a.Balance(ledger.AssetCash) != 1 || a.Version != 1 || len(a.Entries) != 1 {
		t.Fatalf("account read from a frozen page: %+v", a)
	}
	if p.hot() != 2 || p.pages[1].cold || !p.pages[0].cold || !p.pages[2].cold || p.b.Thawed.Load() != 2 {
		t.Fatalf("after one read: %d accounts in memory, %d pages thawed", p.hot(), p.b.Thawed.Load())
	}
	if !slices.Equal(p.hotPages, []uint64{1}) {
		t.Fatalf("pages to sweep after one read: %v, want the thawed page 1", p.hotPages)
	}

	// Bookings into frozen pages.
	if out := bookUnit(t, p, []ledger.Grant{heavyGrant(2*pu+1, 1), heavyGrant(2*pu+1, 2), heavyGrant(4, 1)}); !slices.Equal(out, []byte{BookedBefore, BookedNow, BookedNow}) {
		t.Fatalf("a repeat, a new packet and a new user in frozen pages: outcomes %v", out)
	}
	if a := p.account(2*pu + 1); a.Balance(ledger.AssetCash) != 3 || a.Version != 2 {
		t.Fatalf("account after a second packet: %+v", a)
	}
	if ids := p.pages[0].ids; !slices.Equal(ids, []uint64{1, 2, 3, 4}) {
		t.Fatalf("page 0 lists %v", ids)
	}

	// A page holding an account with archived entries stays hot.
	heavy := uint64(3*pu + 1)
	for from := uint64(1); from <= 80; from += 10 {
		gs = gs[:0]
		for rain := from; rain < from+10; rain++ {
			gs = append(gs, heavyGrant(heavy, rain))
		}
		bookUnit(t, p, gs)
	}
	if a := p.account(heavy); a.Archived == 0 {
		t.Fatal("no entry archived")
	}
	p.sinceCkpt = ckptJournals
	bookUnit(t, p, []ledger.Grant{heavyGrant(5, 1)})
	p.sweep()
	p.sweep()
	if !p.pages[0].cold || !p.pages[1].cold || !p.pages[2].cold || p.pages[3].cold {
		t.Fatalf("cold pages: 0 %v, 1 %v, 2 %v, 3 %v; want the first three", p.pages[0].cold, p.pages[1].cold, p.pages[2].cold, p.pages[3].cold)
	}

	// The store and a new owner agree with the partition.
	var ids []uint64
	for _, k := range []uint64{0, 1, 2, 3} {
		ids = append(ids, p.pages[k].ids...)
	}
	var stored map[uint64]*ledger.Account
	if err := kv.View(func(txn storage.Txn) error {
		var err error
		stored, err = ReadAccounts(context.Background(), txn, 1, ids)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	second := ownerOn(t, kv, "second")
	for _, id := range ids {
		want := p.account(id)
		for name, got := range map[string]*ledger.Account{"store": stored[id], "new owner": second.account(id)} {
			if got == nil || got.Version != want.Version || got.Balance(ledger.AssetCash) != want.Balance(ledger.AssetCash) ||
				got.Archived != want.Archived || len(got.Entries) != len(want.Entries) {
				t.Fatalf("%s: account %d = %+v, want %+v", name, id, got, want)
			}
		}
	}
}

// hot counts the accounts the partition holds decoded.
func (p *part) hot() int {
	n := 0
	for _, pg := range p.pages {
		n += len(pg.accts)
	}
	return n
}

// allIDs lists the act_id of every account the partition holds, in order.
func (p *part) allIDs() []uint64 {
	var ids []uint64
	for _, pg := range p.pages {
		ids = append(ids, pg.ids...)
	}
	slices.Sort(ids)
	return ids
}

// TestPagesSweptUnderLoad: a partition whose commits keep settling sweeps
// between its loop's ticks, once sweepEvery has passed since its last
// sweep, so a page left alone freezes without waiting for a tick; within
// sweepEvery it does not sweep again.
func TestPagesSweptUnderLoad(t *testing.T) {
	kv := storagetest.TiKV(t, "")
	p := ownerOn(t, kv, "first")
	const pu = storage.PageUsers
	p.b.sweepEvery = time.Nanosecond
	bookUnit(t, p, []ledger.Grant{heavyGrant(1, 1)})    // its settle sweeps: page 0 was just touched
	bookUnit(t, p, []ledger.Grant{heavyGrant(pu+1, 1)}) // page 0 untouched since that sweep
	if !p.pages[0].cold || p.pages[1].cold {
		t.Fatalf("after two settles: page 0 cold %v, page 1 cold %v; want page 0 only", p.pages[0].cold, p.pages[1].cold)
	}
	p.b.sweepEvery = time.Hour
	bookUnit(t, p, []ledger.Grant{heavyGrant(2*pu+1, 1)})
	bookUnit(t, p, []ledger.Grant{heavyGrant(3*pu+1, 1)})
	if p.pages[1].cold || p.pages[2].cold {
		t.Fatal("a settle swept within sweepEvery of the last sweep")
	}
}

// BenchmarkSweep: one sweep of a partition holding 100,000 frozen pages
// (~100M users over eight partitions) and 16 hot ones, untouched: what a
// partition under load pays four times a second.
//
//	go test ./booking -run '^$' -bench Sweep -benchtime 2000x
func BenchmarkSweep(b *testing.B) {
	p := &part{b: &Booker{Frozen: new(metrics.Counter)}, pages: map[uint64]*pageMem{}}
	p.committed.NextSeq = 1 // journal 0 committed
	for k := range uint64(100_000) {
		p.pages[k] = &pageMem{ids: []uint64{k * storage.PageUsers}, cold: true, frozen: []byte{0}}
	}
	for k := uint64(100_000); k < 100_016; k++ {
		pg, _, _ := p.locate(k*storage.PageUsers, true)
		pg.ids, pg.accts, pg.dirtyAt = []uint64{k * storage.PageUsers}, []*ledger.Account{nil}, 1 // an uncommitted change: never freezable
	}
	b.ResetTimer()
	for range b.N {
		p.sweep()
	}
}
