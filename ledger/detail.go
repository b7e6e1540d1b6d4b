package ledger

import (
	"fmt"
	"slices"
)

// A ledger page (GET /v1/ledger/{act_id}) lists an account's entries newest
// first. An entry's index in booking order never changes (archival moves
// entries into chunks, never renumbers them), so "the entries before index
// N" names the same entries however much is booked meanwhile: that is the
// cursor. With each page come the monthly summaries of every month its
// entries touch: booking keeps them in the account (Account.Months), and
// by the seed system's rule a page touching three or more months reads
// only its first and last month's summaries and computes the ones between
// from its own entries, which hold every entry of those months (booking
// times never decrease in booking order: Book keeps them so).

// Detail limits.
const (
	DetailLimitDefault = 20
	DetailLimitMax     = 100
	// detailScanMax bounds the entries one page examines: a filter that
	// matches few of a heavy user's entries ends a page early, with a
	// cursor, instead of reading every chunk (32 chunks of 32 entries).
	detailScanMax = 1024
)

// DetailQuery asks for one page.
type DetailQuery struct {
	Asset Asset // only entries of this asset; "" for all
	// Before: the page holds entries with indexes below it, the newest of
	// them first; the account's EntryCount for the first page.
	Before uint64
	Limit  int // 1..DetailLimitMax
}

// DetailEntry is an entry and its index in the account's booking order.
type DetailEntry struct {
	Index uint64
	Entry
}

// Detail is one ledger page.
type Detail struct {
	Entries []DetailEntry // newest first
	// More: entries below Next remain (the next page's Before).
	More bool
	Next uint64
	// Months are the summaries of the months the entries touch, newest
	// month first, then by asset; only Asset's with a filter.
	Months []MonthSum
}

// EntryCount is how many entries the account ever booked: the index the
// next booked entry gets.
func (a *Account) EntryCount() uint64 { return a.Archived + uint64(len(a.Entries)) }

// ReadDetail builds the page q asks of a. chunk(n) returns history chunk n
// (entries [n*ChunkEntries, (n+1)*ChunkEntries)); sums answers the monthly
// summaries, at most two calls per page. a's summaries must be loaded
// (MonthsKnown) and q valid (CheckDetailQuery).
func ReadDetail(a *Account, q DetailQuery, chunk func(n uint64) ([]Entry, error), sums Summaries) (*Detail, error) {
	if err := CheckDetailQuery(a, q); err != nil {
		return nil, err
	}
	d := &Detail{}
	var (
		cur     []Entry
		curN    = ^uint64(0)
		scanned int
	)
	i := q.Before
	for i > 0 && len(d.Entries) < q.Limit {
		if scanned == detailScanMax {
			break
		}
		i--
		scanned++
		var e Entry
		if i >= a.Archived {
			e = a.Entries[i-a.Archived]
		} else {
			if n := i / ChunkEntries; n != curN {
				c, err := chunk(n)
				if err != nil {
					return nil, err
				}
				if len(c) != ChunkEntries {
					return nil, fmt.Errorf("%w: act %d: history chunk %d holds %d entries", ErrCorrupt, a.ActID, n, len(c))
				}
				cur, curN = c, n
			}
			e = cur[i%ChunkEntries]
		}
		if q.Asset == "" || e.Asset == q.Asset {
			d.Entries = append(d.Entries, DetailEntry{Index: i, Entry: e})
		}
	}
	d.More, d.Next = i > 0, i
	var err error
	d.Months, err = pageMonths(d.Entries, q.Asset, sums)
	return d, err
}

// CheckDetailQuery refuses a query that a can not answer: a limit out of
// range, or a Before past its entries (a cursor for another account), or
// an account whose summaries are not loaded.
func CheckDetailQuery(a *Account, q DetailQuery) error {
	switch {
	case q.Limit < 1 || q.Limit > DetailLimitMax:
		return fmt.Errorf("%w: limit %d, want 1..%d", ErrInvariant, q.Limit, DetailLimitMax)
	case q.Before > a.EntryCount():
		return fmt.Errorf("%w: entries before %d of act %d, which has %d", ErrInvariant, q.Before, a.ActID, a.EntryCount())
	case !a.MonthsKnown():
		return fmt.Errorf("%w: act %d: its monthly summaries are not loaded", ErrInvariant, a.ActID)
	}
	return nil
}

// pageMonths is the summaries of the months entries (newest first) touch:
// the first and last month's read from sums, every month between computed
// from the entries, which hold all of those months' entries (of asset, or
// of every asset).
func pageMonths(entries []DetailEntry, asset Asset, sums Summaries) ([]MonthSum, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	first, last := MonthOf(entries[0].BookedAt), MonthOf(entries[len(entries)-1].BookedAt)
	read := func(m Month) []MonthSum {
		var out []MonthSum
		for _, s := range sums.Month(m) {
			if asset == "" || s.Asset == asset {
				out = append(out, s)
			}
		}
		return out
	}
	if last > first {
		return nil, fmt.Errorf("%w: entry %d booked in %s, after entry %d in %s", ErrInvariant, entries[len(entries)-1].Index, last, entries[0].Index, first)
	}
	out := read(first)
	if last == first {
		return out, nil
	}
	// The months between, newest first, each sorted by asset.
	var mid []MonthSum
	for i := range entries {
		e := &entries[i]
		m := MonthOf(e.BookedAt)
		if m == first || m == last {
			continue
		}
		if m > first || m < last {
			return nil, fmt.Errorf("%w: entry %d booked in %s, outside the page's months %s..%s", ErrInvariant, e.Index, m, last, first)
		}
		j, ok := slices.BinarySearchFunc(mid, e.Asset, func(s MonthSum, t Asset) int {
			// Months descending, then assets ascending.
			if s.Month != m {
				if s.Month > m {
					return -1
				}
				return 1
			}
			return cmpString(string(s.Asset), string(t))
		})
		if !ok {
			mid = slices.Insert(mid, j, MonthSum{Asset: e.Asset, Month: m})
		}
		// A grant or a move's credit is income; a move's debit is its
		// month's expense.
		if e.Amount >= 0 {
			sum, err := Add(mid[j].Income, e.Amount)
			if err != nil {
				return nil, err
			}
			mid[j].Income = sum
		} else {
			sum, err := Add(mid[j].Expense, -e.Amount)
			if err != nil {
				return nil, err
			}
			mid[j].Expense = sum
		}
	}
	out = append(out, mid...)
	return append(out, read(last)...), nil
}
