package consistency

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"redrain/booking"
	"redrain/ledger"
	"redrain/storage"
)

// batch is a run of one partition's journals checked together: at most
// about Window grants, so a day of journals is checked in bounded memory
// (one batch's records, grants and transfers at a time).
type batch struct {
	p        int32
	journals int
	ops      int
	// spans are the stream journals' offsets [from, to) and the grants
	// they booked from the stream (lease 0, a redeem awaiting its record,
	// excepted), in journal order.
	spans []span
	// outs are the senders' moves of transfers and gifts, with their
	// booking times; ins the receivers'.
	outs, ins []sent
}

type span struct {
	from, to int64
	booked   map[string]*ledger.Grant // limit key -> the grant booked
}

type sent struct {
	at int64
	m  *ledger.Move
}

func (b *batch) add(j *ledger.Journal) {
	b.journals++
	b.ops += len(j.Ops)
	var sp *span
	if j.To > j.From {
		b.spans = append(b.spans, span{from: j.From, to: j.To, booked: map[string]*ledger.Grant{}})
		sp = &b.spans[len(b.spans)-1]
	}
	for i := range j.Ops {
		op := &j.Ops[i]
		switch op.Kind {
		case ledger.OpBook:
			if sp != nil && op.Grant.LeaseID != 0 {
				g := op.Grant
				sp.booked[g.LimitKey()] = &g
			}
		case ledger.OpMove:
			switch m := op.Move; {
			case m == nil:
			case m.Kind == ledger.MoveTransferOut || m.Kind == ledger.MoveGiftOut:
				b.outs = append(b.outs, sent{at: j.BookedAt, m: m})
			case m.Kind == ledger.MoveTransferIn || m.Kind == ledger.MoveGiftIn:
				b.ins = append(b.ins, sent{at: j.BookedAt, m: m})
			}
		}
	}
}

// checkJournals checks partition p's journals numbered from through to
// whose booking time keep accepts (nil: all), batch by batch, stopping
// before the first journal booked after until (0: no bound). It returns
// the seq of the last journal it passed.
func (c *Checker) checkJournals(ctx context.Context, p int32, from, to uint64, keep func(*ledger.Journal) bool, until int64, repair bool, r *Report) (uint64, error) {
	for from <= to {
		b := &batch{p: p}
		next := from
		graceEnd := c.cfg.Now().Add(-c.cfg.Grace).UnixMilli()
		err := c.cfg.DB.View(func(txn storage.Txn) error {
			return booking.JournalsFrom(txn, p, from, to, func(j *ledger.Journal) error {
				if b.ops >= c.cfg.Window || (until != 0 && j.BookedAt > until) {
					return errBatchFull
				}
				next = j.Seq + 1
				if keep == nil || keep(j) {
					b.add(j)
				}
				return nil
			})
		})
		if err != nil && !errors.Is(err, errBatchFull) {
			return from - 1, err
		}
		r.Journals += b.journals
		if err := c.checkStream(ctx, b, repair, r); err != nil {
			return from - 1, err
		}
		if err := c.checkTransfers(ctx, b, graceEnd, repair, r); err != nil {
			return from - 1, err
		}
		if next == from {
			break
		}
		from = next
	}
	return from - 1, nil
}

var errBatchFull = errors.New("consistency: batch full")

// checkStream compares the batch's stream journals with their records.
func (c *Checker) checkStream(ctx context.Context, b *batch, repair bool, r *Report) error {
	if c.cfg.Stream == nil || len(b.spans) == 0 {
		return nil
	}
	// The spans of consecutive journals are adjacent: read each run of
	// adjacent spans as one range.
	type rec struct {
		offset int64
		grants []ledger.Grant
		bad    error
		span   *span
	}
	var recs []rec
	for i := 0; i < len(b.spans); {
		j := i
		for j+1 < len(b.spans) && b.spans[j+1].from == b.spans[j].to {
			j++
		}
		k := i
		err := c.cfg.Stream.Records(ctx, b.p, b.spans[i].from, b.spans[j].to, func(offset int64, value []byte) error {
			for k < j && offset >= b.spans[k].to {
				k++
			}
			gs, err := ledger.DecodeGrantRecord(nil, value)
			recs = append(recs, rec{offset: offset, grants: gs, bad: err, span: &b.spans[k]})
			return nil
		})
		if err != nil {
			return fmt.Errorf("consistency: partition %d offsets [%d, %d): %w", b.p, b.spans[i].from, b.spans[j].to, err)
		}
		i = j + 1
	}
	r.Records += len(recs)
	// Fenced and parked records of the batch, and the accounts its
	// grants credit, from one snapshot taken after the journals'.
	keys := make([][]byte, 0, 2*len(recs))
	acts := map[uint64]bool{}
	for _, x := range recs {
		keys = append(keys, storage.FencedKey(b.p, x.offset), storage.ParkedKey(b.p, x.offset))
		for i := range x.grants {
			acts[x.grants[i].ActID] = true
		}
	}
	var aside map[string][]byte
	var accounts map[uint64]*ledger.Account
	err := c.cfg.DB.View(func(txn storage.Txn) error {
		var err error
		if aside, err = storage.BatchGet(ctx, txn, keys); err != nil {
			return err
		}
		accounts, err = booking.ReadAccounts(ctx, txn, c.cfg.Parts, slices.Collect(maps.Keys(acts)))
		return err
	})
	if err != nil {
		return err
	}
	var unbooked []Mismatch
	for _, x := range recs {
		if _, parked := aside[string(storage.ParkedKey(b.p, x.offset))]; parked {
			continue
		}
		if x.bad != nil {
			r.add(Mismatch{Kind: KindUnbooked, Partition: b.p, Offset: x.offset, Key: "record",
				Detail: fmt.Sprintf("booking passed a record that does not decode and is not parked: %v", x.bad)})
			continue
		}
		fenced := map[string]bool{}
		if raw, ok := aside[string(storage.FencedKey(b.p, x.offset))]; ok {
			gs, err := ledger.DecodeGrantRecord(nil, raw)
			if err != nil {
				return fmt.Errorf("%w: fenced record %d/%d: %v", ledger.ErrCorrupt, b.p, x.offset, err)
			}
			for i := range gs {
				fenced[gs[i].LimitKey()] = true
			}
		}
		for i := range x.grants {
			g := &x.grants[i]
			r.Grants++
			key := g.LimitKey()
			delete(x.span.booked, key)
			if fenced[key] {
				continue
			}
			if a := accounts[g.ActID]; a != nil {
				ok, err := a.Booked(key)
				if err != nil {
					return err
				}
				if ok {
					continue
				}
			}
			unbooked = append(unbooked, Mismatch{Kind: KindUnbooked, Partition: b.p, Offset: x.offset, ActID: g.ActID, Key: key,
				Amount: g.Amount, Detail: "issued in a record booking passed; in no account, not fenced, not parked", grant: g})
		}
	}
	for i := range b.spans {
		sp := &b.spans[i]
		for _, key := range slices.Sorted(maps.Keys(sp.booked)) {
			g := sp.booked[key]
			r.add(Mismatch{Kind: KindUnissued, Partition: b.p, Offset: sp.from, ActID: g.ActID, Key: key, Amount: g.Amount,
				Detail: fmt.Sprintf("booked from offsets [%d, %d), issued by none of their records", sp.from, sp.to)})
		}
	}
	if repair && c.cfg.Booker != nil && len(unbooked) > 0 {
		grants := make([]ledger.Grant, len(unbooked))
		for i := range unbooked {
			grants[i] = *unbooked[i].grant
		}
		out, err := c.cfg.Booker.Book(ctx, grants)
		if err != nil {
			r.Mismatches = append(r.Mismatches, unbooked...)
			return fmt.Errorf("consistency: booking %d grants issued and not booked: %w", len(grants), err)
		}
		for i, o := range out {
			unbooked[i].Repaired = true
			unbooked[i].Detail += "; booked (outcome " + strconv.Itoa(int(o)) + ")"
			r.Repaired++
		}
	}
	r.Mismatches = append(r.Mismatches, unbooked...)
	return nil
}
