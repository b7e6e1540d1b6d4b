package consistency

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"redrain/booking"
	"redrain/closing"
	"redrain/ledger"
	"redrain/statement"
	"redrain/storage"
)

// A statements day is compared as sums per party kind and asset (amount
// and postings counted), never per party: memory is a few lines however
// many users the day touched. Users have no stored statements (theirs
// are read from their account entries, closing.Read), so the sums are
// of activities, sponsors and merchants. A merchant's fee lines are left out (they
// depend on the split rule in force when a journal was folded, which may
// have changed since); its gross lines (consume, refund, reverse) and
// every other party's lines are what the journals alone decide.

type sumKey struct{ kind, asset string }

type sum struct{ amount, count int64 }

// addAgg adds one party's aggregate to sums.
func addAgg(sums map[sumKey]sum, p statement.Party, a *statement.Aggregate) {
	kind, _, _ := strings.Cut(p.String(), ":")
	for _, l := range a.Lines {
		if p.Kind == statement.PartyMerchant && strings.HasPrefix(l.Item, "fee:") {
			continue
		}
		k := sumKey{kind, l.Asset}
		s := sums[k]
		s.amount += l.Amount
		s.count += l.Count
		sums[k] = s
	}
}

// aggDrainAt is how many party-days the comparison's aggregator holds
// before it adds them to the sums.
const aggDrainAt = 1 << 14

// dayDay is the span of day in unix ms.
func daySpan(d statement.Day) (int64, int64) { return d.Start(), (d + 1).Start() }

// journalsOfDay is the seqs [lo, hi] of partition p's journals that may
// have been booked on day (binary search on booking times, which a
// partition's journals hold in order up to closing.Slack); hi < lo when
// none.
func journalsOfDay(ctx context.Context, txn storage.Txn, p int32, head uint64, d statement.Day) (uint64, uint64, error) {
	from, to := daySpan(d)
	at := func(seq uint64) (int64, error) {
		raw, err := txn.Get(ctx, storage.JournalKey(p, seq))
		if err != nil {
			return 0, err
		}
		if raw == nil {
			return 0, fmt.Errorf("%w: partition %d journal %d missing", ledger.ErrCorrupt, p, seq)
		}
		j, err := ledger.DecodeJournal(raw)
		if err != nil {
			return 0, err
		}
		return j.BookedAt, nil
	}
	// first seq whose time is >= t (head+1: none)
	first := func(t int64) (uint64, error) {
		lo, hi := uint64(1), head+1
		for lo < hi {
			mid := lo + (hi-lo)/2
			bt, err := at(mid)
			if err != nil {
				return 0, err
			}
			if bt >= t {
				hi = mid
			} else {
				lo = mid + 1
			}
		}
		return lo, nil
	}
	lo, err := first(from - closing.Slack)
	if err != nil {
		return 0, 0, err
	}
	end, err := first(to + closing.Slack)
	if err != nil {
		return 0, 0, err
	}
	return lo, end - 1, nil
}

// onDay keeps the journals booked on day.
func onDay(d statement.Day) func(*ledger.Journal) bool {
	from, to := daySpan(d)
	return func(j *ledger.Journal) bool { return j.BookedAt >= from && j.BookedAt < to }
}

// postingsOfDay calls fn with the postings of every journal booked on
// day and folded into the statements (up to each watermark's seq).
func (c *Checker) postingsOfDay(ctx context.Context, txn storage.Txn, wms []closing.Watermark, d statement.Day, fn func(*statement.Posting) error) error {
	keep := onDay(d)
	for p := range c.cfg.Parts {
		lo, hi, err := journalsOfDay(ctx, txn, p, wms[p].Seq, d)
		if err != nil {
			return err
		}
		err = booking.JournalsFrom(txn, p, lo, hi, func(j *ledger.Journal) error {
			if !keep(j) {
				return nil
			}
			return closing.Postings(j, fn)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// checkStatements compares day's statements with its journals, when the
// watermarks cover it, and rebuilds a day that differs.
func (c *Checker) checkStatements(ctx context.Context, d statement.Day, repair bool, r *Report) error {
	if c.cfg.Statements == nil {
		return nil
	}
	want, got := map[sumKey]sum{}, map[sumKey]sum{}
	covered := true
	postings := 0
	err := c.cfg.DB.View(func(txn storage.Txn) error {
		clear(want)
		clear(got)
		postings = 0
		wms, err := closing.Watermarks(ctx, txn, c.cfg.Parts)
		if err != nil {
			return err
		}
		_, end := daySpan(d)
		for _, w := range wms {
			covered = covered && w.Covered >= end
		}
		if !covered {
			return nil
		}
		agg, err := statement.NewAggregator(c.cfg.Statements)
		if err != nil {
			return err
		}
		agg.NoUsers = true // users' statements are their entries (closing.Read)
		drain := func() {
			for _, x := range agg.Days() {
				addAgg(want, x.Party, x.Agg)
			}
		}
		err = c.postingsOfDay(ctx, txn, wms, d, func(ps *statement.Posting) error {
			postings++
			if agg.Len() >= aggDrainAt {
				drain()
			}
			return agg.Add(ps)
		})
		if err != nil {
			return err
		}
		drain()
		prefix := dayPrefix(d)
		return storage.ScanTxn(txn, prefix, storage.PrefixEnd(prefix), func(k, v []byte) (bool, error) {
			party, err := statement.ParseParty(string(k[len(prefix):]))
			if err != nil {
				return false, fmt.Errorf("%w: statements key %q: %v", ledger.ErrCorrupt, k, err)
			}
			if party.Kind == statement.PartyUser {
				return true, nil // left by an older folder; a rebuild removes it
			}
			a, err := statement.DecodeAggregate(v)
			if err != nil {
				return false, fmt.Errorf("%w: %s: %v", ledger.ErrCorrupt, k, err)
			}
			addAgg(got, party, a)
			return true, nil
		})
	})
	if err != nil {
		return err
	}
	if !covered {
		r.Uncovered++
		return nil
	}
	r.Days++
	r.Postings += postings
	var found []Mismatch
	keys := slices.SortedFunc(maps.Keys(unionKeys(want, got)), func(a, b sumKey) int {
		return cmp.Or(cmp.Compare(a.kind, b.kind), cmp.Compare(a.asset, b.asset))
	})
	for _, k := range keys {
		w, g := want[k], got[k]
		if w == g {
			continue
		}
		found = append(found, Mismatch{Kind: KindStatement, Day: d.String(), Key: k.kind + " " + k.asset, Amount: g.amount - w.amount,
			Detail: fmt.Sprintf("statements %d in %d postings, journals %d in %d", g.amount, g.count, w.amount, w.count), day: d})
	}
	if repair && !c.cfg.KeepStatements && len(found) > 0 {
		n, err := c.RebuildDay(ctx, d)
		if err != nil {
			r.Mismatches = append(r.Mismatches, found...)
			return fmt.Errorf("consistency: rebuilding statements day %s: %w", d, err)
		}
		for i := range found {
			found[i].Repaired = true
			found[i].Detail += fmt.Sprintf("; day rebuilt from the journals (%d aggregates)", n)
		}
		r.Repaired += len(found)
	}
	r.Mismatches = append(r.Mismatches, found...)
	return nil
}

func unionKeys(a, b map[sumKey]sum) map[sumKey]bool {
	out := make(map[sumKey]bool, len(a)+len(b))
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

func dayPrefix(d statement.Day) []byte {
	k := closing.DayKey(d, statement.Party{Kind: statement.PartyUser, ID: "0"})
	return k[:bytes.LastIndexByte(k, '/')+1]
}

// RebuildDay replaces day's statements by the journals' (a re-fold of
// the day with the rules in force now), in one transaction that rewrites
// the watermarks it read, so a fold that commits meanwhile makes it
// conflict and retry; it returns the aggregates written. The day must be
// covered by every watermark.
func (c *Checker) RebuildDay(ctx context.Context, d statement.Day) (int, error) {
	if c.cfg.Statements == nil {
		return 0, fmt.Errorf("consistency: no statements configuration")
	}
	n := 0
	err := c.cfg.DB.Update(ctx, func(txn storage.Txn) error {
		n = 0
		wmKeys := make([][]byte, c.cfg.Parts)
		for p := range c.cfg.Parts {
			wmKeys[p] = closing.WatermarkKey(p)
		}
		rawWM, err := storage.BatchGet(ctx, txn, wmKeys)
		if err != nil {
			return err
		}
		wms, err := closing.Watermarks(ctx, txn, c.cfg.Parts)
		if err != nil {
			return err
		}
		_, end := daySpan(d)
		for p, w := range wms {
			if w.Covered < end {
				return fmt.Errorf("consistency: day %s is not folded yet in partition %d", d, p)
			}
		}
		agg, err := statement.NewAggregator(c.cfg.Statements)
		if err != nil {
			return err
		}
		agg.NoUsers = true
		if err := c.postingsOfDay(ctx, txn, wms, d, agg.Add); err != nil {
			return err
		}
		prefix := dayPrefix(d)
		var old [][]byte
		err = storage.ScanTxn(txn, prefix, storage.PrefixEnd(prefix), func(k, _ []byte) (bool, error) {
			old = append(old, bytes.Clone(k))
			return true, nil
		})
		if err != nil {
			return err
		}
		for _, k := range old {
			if err := txn.Delete(k); err != nil {
				return err
			}
		}
		for _, x := range agg.Days() {
			if err := x.Agg.Check(x.Party); err != nil {
				return err
			}
			if err := txn.Set(closing.DayKey(x.Day, x.Party), statement.AppendAggregate(nil, x.Agg)); err != nil {
				return err
			}
			n++
		}
		for _, k := range wmKeys {
			if err := txn.Set(k, rawWM[string(k)]); err != nil {
				return err
			}
		}
		return nil
	})
	return n, err
}
