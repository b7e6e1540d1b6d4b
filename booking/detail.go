package booking

import (
	"context"
	"errors"

	"redrain/ledger"
	"redrain/storage"
)

// detailChunksAhead is how many history chunks a ledger page reads in one
// batch: a page of up to 100 entries spans at most 5, so an unfiltered
// page of any size is one round trip.
const detailChunksAhead = 5

// errChunksNeeded ends a page read without a snapshot that reaches the
// history chunks.
var errChunksNeeded = errors.New("history chunks needed")

// Detail reads one ledger page of a (an account as Booker.Accounts answers
// it): its recent entries from a, older ones from its history chunks, read
// in one snapshot of tikv, detailChunksAhead at a time; the monthly
// summaries from sums (nil: a's own). An account whose summaries are not
// loaded (read from a node that predates them) gets them from its chunks
// first, on a copy.
func Detail(ctx context.Context, tikv *storage.TiKV, a *ledger.Account, q ledger.DetailQuery, sums ledger.Summaries) (*ledger.Detail, error) {
	if a.MonthsKnown() && q.Before <= a.EntryCount() && q.Before >= a.Archived {
		// Most pages (every page of most users) are recent entries only:
		// no snapshot unless one reaches the chunks.
		s := sums
		if s == nil {
			s = a
		}
		d, err := ledger.ReadDetail(a, q, func(uint64) ([]ledger.Entry, error) { return nil, errChunksNeeded }, s)
		if !errors.Is(err, errChunksNeeded) {
			return d, err
		}
	}
	var d *ledger.Detail
	err := tikv.View(func(txn storage.Txn) error {
		if !a.MonthsKnown() {
			archived, err := Archived(ctx, txn, a)
			if err != nil {
				return err
			}
			a = a.Clone()
			if err := a.SetArchivedKeys(archived); err != nil {
				return err
			}
		}
		if sums == nil {
			sums = a
		}
		var (
			have     []ledger.Entry
			from, to uint64 // have holds chunks [from, to)
		)
		chunk := func(n uint64) ([]ledger.Entry, error) {
			if n < from || n >= to {
				to, from = n+1, n+1-min(n+1, detailChunksAhead)
				var err error
				if have, err = readChunks(ctx, txn, a.ActID, from, to); err != nil {
					return nil, err
				}
			}
			i := (n - from) * ledger.ChunkEntries
			return have[i : i+ledger.ChunkEntries], nil
		}
		var err error
		d, err = ledger.ReadDetail(a, q, chunk, sums)
		return err
	})
	return d, err
}
