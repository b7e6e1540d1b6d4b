package consistency

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"redrain/booking"
	"redrain/ledger"
	"redrain/spend"
	"redrain/storage"
	"redrain/withdraw"
)

// receiverMove is the move that completes out, a transfer's or gift's
// sender move: the one the spending service books on the receiver's
// account (spend.Moves), so a repair and a repeat of the request book it
// at most once between them.
func receiverMove(out *ledger.Move) (ledger.Move, error) {
	to, err := strconv.ParseUint(out.Ref, 10, 64)
	if err != nil {
		return ledger.Move{}, fmt.Errorf("%w: move %q names no receiver (ref %q)", ledger.ErrCorrupt, out.Key, out.Ref)
	}
	kind := ledger.MoveTransferIn
	if out.Kind == ledger.MoveGiftOut {
		kind = ledger.MoveGiftIn
	}
	legs := make([]ledger.Leg, len(out.Legs))
	for i, l := range out.Legs {
		legs[i] = ledger.Leg{Asset: l.Asset, Amount: -l.Amount}
	}
	return ledger.Move{ActID: to, Kind: kind, Key: spend.InKey(out.Key, out.ActID), AppID: out.AppID,
		Legs: legs, Counter: out.Counter, Ref: strconv.FormatUint(out.ActID, 10)}, nil
}

// senderOf is the sender's account and move key of in, a transfer's or
// gift's receiver move (spend.InKey: "{key}<{from}").
func senderOf(in *ledger.Move) (uint64, string, error) {
	from, err := strconv.ParseUint(in.Ref, 10, 64)
	key, ok := strings.CutSuffix(in.Key, "<"+in.Ref)
	if err != nil || !ok {
		return 0, "", fmt.Errorf("%w: receiver's move %q names no sender (ref %q)", ledger.ErrCorrupt, in.Key, in.Ref)
	}
	return from, key, nil
}

// checkTransfers looks, for each sender's move of the batch booked before
// graceEnd, for its receiver's move, and books the missing ones; and for
// each receiver's move, for its sender's (booked first: one missing is
// money that came from nowhere, listed).
func (c *Checker) checkTransfers(ctx context.Context, b *batch, graceEnd int64, repair bool, r *Report) error {
	var ins []ledger.Move
	var outs []*ledger.Move
	acts := map[uint64]bool{}
	for _, s := range b.ins {
		from, _, err := senderOf(s.m)
		if err != nil {
			return err
		}
		acts[from] = true
	}
	for _, s := range b.outs {
		if s.at > graceEnd {
			continue
		}
		in, err := receiverMove(s.m)
		if err != nil {
			return err
		}
		ins, outs = append(ins, in), append(outs, s.m)
		acts[in.ActID] = true
	}
	if len(acts) == 0 {
		return nil
	}
	r.Transfers += len(ins)
	var accounts map[uint64]*ledger.Account
	err := c.cfg.DB.View(func(txn storage.Txn) error {
		var err error
		accounts, err = booking.ReadAccounts(ctx, txn, c.cfg.Parts, slices.Collect(maps.Keys(acts)))
		return err
	})
	if err != nil {
		return err
	}
	var missing []ledger.Move
	var found []Mismatch
	for _, s := range b.ins {
		from, key, _ := senderOf(s.m)
		if a := accounts[from]; a != nil {
			ok, err := a.Booked(ledger.MoveEntryKey(key, 0))
			if err != nil {
				return err
			}
			if ok {
				continue
			}
		}
		var amount int64
		for _, l := range s.m.Legs {
			amount += l.Amount
		}
		r.add(Mismatch{Kind: KindTransfer, Partition: b.p, ActID: from, Key: s.m.Counter, Amount: amount,
			Detail: fmt.Sprintf("the receiver %d's move %q is booked, the sender's move %q is not (never repaired)", s.m.ActID, s.m.Key, key)})
	}
	for i := range ins {
		in := &ins[i]
		if a := accounts[in.ActID]; a != nil {
			ok, err := a.Booked(ledger.MoveEntryKey(in.Key, 0))
			if err != nil {
				return err
			}
			if ok {
				continue
			}
		}
		var amount int64
		for _, l := range in.Legs {
			amount += l.Amount
		}
		missing = append(missing, *in)
		found = append(found, Mismatch{Kind: KindTransfer, Partition: b.p, ActID: outs[i].ActID, Key: in.Counter, Amount: amount,
			Detail: fmt.Sprintf("the sender's move %q is booked, the receiver %d's move %q is not", outs[i].Key, in.ActID, in.Key), move: in})
	}
	if repair && c.cfg.Booker != nil && len(missing) > 0 {
		res, err := c.cfg.Booker.Move(ctx, missing)
		if err != nil {
			r.Mismatches = append(r.Mismatches, found...)
			return fmt.Errorf("consistency: completing %d transfers: %w", len(missing), err)
		}
		for i, x := range res {
			switch x {
			case ledger.MoveApplied, ledger.MoveRepeated:
				found[i].Repaired = true
				found[i].Detail += "; the receiver's move booked"
				r.Repaired++
			default:
				found[i].Detail += fmt.Sprintf("; the receiver's move was not booked (result %d)", x)
			}
		}
	}
	r.Mismatches = append(r.Mismatches, found...)
	return nil
}

// withdrawalsMax bounds the open withdrawals one check reads.
const withdrawalsMax = 100_000

// checkWithdrawals lists the withdrawals held (or paying) for longer than
// the bound: their hold is money in transit that neither settled nor
// went back. The withdrawal's recovery loop finishes them; nothing here
// repairs them.
func (c *Checker) checkWithdrawals(ctx context.Context, r *Report) error {
	recs, err := withdraw.OpenRecords(ctx, c.cfg.DB, withdrawalsMax)
	if err != nil {
		return err
	}
	r.Withdrawals += len(recs)
	bound := c.cfg.Now().Add(-c.cfg.WithdrawBound).UnixMilli()
	for _, w := range recs {
		if w.State.Final() || w.HeldAt == 0 || w.HeldAt > bound {
			continue
		}
		r.add(Mismatch{Kind: KindWithdrawal, Partition: storage.PartitionOf(w.ActID, c.cfg.Parts), ActID: w.ActID, Key: w.ID, Amount: w.Amount,
			Detail: fmt.Sprintf("%s since %s, not finished after %s (attempts %d, last error %q)", w.State,
				time.UnixMilli(w.HeldAt).UTC().Format(time.RFC3339), c.cfg.WithdrawBound, w.Attempts, w.LastError)})
	}
	return nil
}
