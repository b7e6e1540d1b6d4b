package booking

import (
	"fmt"
	"slices"
	"time"

	"redrain/ledger"
	"redrain/storage"
)

// An owner keeps every account of its partitions, in pages
// (storage.PageUsers act_ids of the partition, part.pages), but not every
// one as a *ledger.Account: a page
// that nothing touched for a sweep interval and that holds no change the
// store lacks is frozen, kept as its encoded bytes (ledger.AppendPage: ~50
// bytes an account with one entry, no pointer for the collector to mark)
// instead of a dozen objects an account. The first access to a frozen
// page thaws it whole. Accounts are what a node under load holds most of,
// and marking them was the collector's largest share of its CPU.
//
// A page is in one of these states (pageMem):
//   - hot: its accounts are in accts; frozen, when not nil, is its
//     encoding as its accounts are now (the checkpoint just written, or
//     the bytes it was thawed from), so freezing it again encodes nothing;
//   - cold: accts is nil, frozen holds its accounts.
//
// A change of one of its accounts makes the page dirty (markDirty) and
// drops its bytes. A page freezes only once every journal that changed it
// is committed (dirtyAt at most the committed seq), so no uncommitted
// account is ever frozen, and no pending unit holds an account of a
// frozen page (a unit's prev holds only the accounts it changed, whose
// pages are dirty at its seq). A page may freeze before its checkpoint:
// the checkpoint then writes its frozen bytes, which say the seq they
// reflect (a journal at or below it is not replayed into the page), and
// no journal after that seq changed it (a change thaws it first). So in a
// burst of new users a page freezes a sweep or two after it filled (a
// partition under load sweeps every sweepEvery), not after the next
// checkpoint (every 5 s): the accounts the collector marks are a half
// second of a burst's instead of ~6 s.

// account returns the account of id as the partition holds it now (nil:
// none), thawing its page if it is frozen.
func (p *part) account(id uint64) *ledger.Account {
	if pg, i, found := p.locate(id, false); found {
		return pg.accts[i]
	}
	return nil
}

// locate returns id's page, marked in use and thawed if it was frozen,
// with where id is in its act_ids or would be inserted, and whether it is
// there. With create, a page that does not exist is made empty (listed
// hot); without, locate returns a nil page. Every lookup of an account by
// its act_id goes through it: one probe of the map of pages, one search.
func (p *part) locate(id uint64, create bool) (pg *pageMem, i int, found bool) {
	k := storage.PageOf(id)
	pg = p.pages[k]
	if pg == nil {
		if !create {
			return nil, 0, false
		}
		pg = &pageMem{}
		p.pages[k] = pg
		p.listHot(k, pg)
	}
	pg.seen = true // a page a unit just made is in use too, not only one it looked up
	if pg.cold {
		p.thaw(k, pg)
	}
	i, found = slices.BinarySearch(pg.ids, id)
	return pg, i, found
}

// insert puts account a of id at i in pg, where locate said it goes.
func (pg *pageMem) insert(i int, id uint64, a *ledger.Account) {
	pg.ids = slices.Insert(pg.ids, i, id)
	pg.accts = slices.Insert(pg.accts, i, a)
}

// thaw decodes a cold page's accounts back into accts. Its bytes are
// the partition's own encoding, so a failure is a bug: it panics, which
// stops the partition like a broken money invariant (part.run).
func (p *part) thaw(k uint64, pg *pageMem) {
	page, err := ledger.DecodePage(pg.frozen)
	if err == nil && len(page.Accounts) != len(pg.ids) {
		err = fmt.Errorf("%d accounts, the page lists %d", len(page.Accounts), len(pg.ids))
	}
	for i := 0; err == nil && i < len(page.Accounts); i++ {
		if a := page.Accounts[i]; a.ActID != pg.ids[i] {
			err = fmt.Errorf("account %d where %d was due", a.ActID, pg.ids[i])
		}
	}
	if err != nil {
		panic(fmt.Sprintf("booking: partition %d: thawing page %d: %v", p.id, k, err))
	}
	pg.accts, pg.cold = page.Accounts, false
	p.listHot(k, pg)
	p.b.Thawed.Inc()
}

// listHot puts page k, made or thawed just now, on the list of hot pages
// that sweep visits (once).
func (p *part) listHot(k uint64, pg *pageMem) {
	if !pg.listed {
		pg.listed = true
		p.hotPages = append(p.hotPages, k)
	}
}

// markDirty records that journal seq changed an account of page k: the
// page's bytes no longer hold it.
func (p *part) markDirty(k, seq uint64) {
	pg := p.pages[k]
	pg.dirtyAt = seq
	pg.frozen = nil
}

// written keeps the bytes a committed checkpoint wrote of page k (as its
// accounts were at the unit's seq), if the page is still clean.
func (p *part) written(k uint64, value []byte) {
	if pg := p.pages[k]; pg != nil && pg.dirtyAt == 0 && !pg.cold {
		pg.frozen = value
	}
}

// sweepEvery is how often a partition under load sweeps (after a commit
// settles; an idle one sweeps on its loop's tick, every ckptEvery/4): a
// page freezes 0.25-0.5 s after it was last touched, so in a burst of new
// users the accounts the collector marks are those of the last half
// second, not of the last 1.25-2.5 s.
const sweepEvery = 250 * time.Millisecond

// sweep freezes every hot page whose changes are committed, untouched
// since the last sweep and freezable, and reports how many it froze. It
// visits the hot pages only (listHot), not every page of the partition:
// under load it runs four times a second, and a partition of millions of
// users has thousands of cold pages.
func (p *part) sweep() int {
	p.lastSweep = monoNow()
	n := 0
	committed := p.committed.NextSeq - 1
	kept := p.hotPages[:0]
	for _, k := range p.hotPages {
		pg := p.pages[k]
		seen := pg.seen
		pg.seen = false
		if seen || pg.dirtyAt > committed || len(pg.ids) == 0 || !p.freeze(pg) {
			kept = append(kept, k)
			continue
		}
		pg.listed = false
		n++
	}
	clear(p.hotPages[len(kept):])
	p.hotPages = kept
	if n > 0 {
		p.b.Frozen.Add(int64(n))
	}
	return n
}

// freeze drops a committed page's accounts, encoding them first unless
// its bytes are kept. A page holding an account with archived entries stays
// hot: the hashes of their limit keys are in memory
// only (loaded from the history chunks), not in the page.
func (p *part) freeze(pg *pageMem) bool {
	for _, a := range pg.accts {
		if a.Archived != 0 {
			return false
		}
	}
	if pg.frozen == nil {
		page := ledger.Page{Seq: p.committed.NextSeq - 1, Accounts: pg.accts}
		pg.frozen = ledger.AppendPage(make([]byte, 0, accountBytes*len(pg.ids)+16), &page)
	}
	pg.accts, pg.cold = nil, true
	pg.newAccts = ledger.AccountChunk{} // its accounts' chunks go with them
	return true
}
