package consistency

import (
	"context"

	"redrain/booking"
	"redrain/statement"
	"redrain/storage"
)

// Day checks UTC day d: the journals booked that day in every partition
// against their records and transfers' receivers, the day's statements
// against the journals (once the watermarks cover it), and the open
// withdrawals; with repair, it repairs what it found.
func (c *Checker) Day(ctx context.Context, d statement.Day, repair bool) (*Report, error) {
	return c.Days(ctx, d, d+1, repair)
}

// Days checks every day of [from, to) as Day does, into one report.
func (c *Checker) Days(ctx context.Context, from, to statement.Day, repair bool) (*Report, error) {
	r := &Report{From: from.Start(), To: to.Start()}
	defer c.release()
	for d := from; d < to; d++ {
		if err := c.day(ctx, d, repair, r); err != nil {
			return r, err
		}
	}
	return r, c.checkWithdrawals(ctx, r)
}

func (c *Checker) day(ctx context.Context, d statement.Day, repair bool, r *Report) error {
	type rng struct{ lo, hi uint64 }
	ranges := make([]rng, c.cfg.Parts)
	err := c.cfg.DB.View(func(txn storage.Txn) error {
		heads, err := booking.JournalSeqs(ctx, txn, c.cfg.Parts)
		if err != nil {
			return err
		}
		for p := range c.cfg.Parts {
			lo, hi, err := journalsOfDay(ctx, txn, p, heads[p], d)
			if err != nil {
				return err
			}
			ranges[p] = rng{lo, hi}
		}
		return nil
	})
	if err != nil {
		return err
	}
	keep := onDay(d)
	for p := range c.cfg.Parts {
		if _, err := c.checkJournals(ctx, p, ranges[p].lo, ranges[p].hi, keep, 0, repair, r); err != nil {
			return err
		}
	}
	return c.checkStatements(ctx, d, repair, r)
}

// Journals checks partition p's journals numbered from through to that
// were booked at least Grace ago (the continuous check: a transfer's
// receiver has had its chance) and returns the seq of the last one
// checked; the rest wait for the next call.
func (c *Checker) Journals(ctx context.Context, p int32, from, to uint64, repair bool) (uint64, *Report, error) {
	r := &Report{}
	defer c.release()
	done, err := c.checkJournals(ctx, p, from, to, nil, c.cfg.Now().Add(-c.cfg.Grace).UnixMilli(), repair, r)
	return done, r, err
}

// release ends a check's reads of the stream.
func (c *Checker) release() {
	if c.cfg.Stream != nil {
		c.cfg.Stream.Release()
	}
}
