// Package expiry expires coins and items past their validity (issue 13,
// item 2): a sweep reads the accounts of users who hold coins or items,
// computes per account and asset with a validity what is still unspent of
// the credits older than the cutoff (ledger.Account.Expirable: first-in
// first-out from the monthly summaries, no history read), and books one
// expire move per (account, asset, cutoff month) through the booking path
// in batches. The move's key names the cutoff, so a sweep run again, on
// any node or after a restart, books nothing twice; its Ref names the
// cutoff too, so the ledger checks the amount against the account when it
// applies it (a spend in between makes it MoveRefused, and the next sweep
// takes what is left).
//
// Where the expired pieces go: an item that exactly one budget grants
// (campaign.ItemSources) returns to that budget's account budget/{id};
// anything else (coins, which can be bought, and items of several
// budgets) goes to expired/{asset}.
//
// The package is fed by its caller: it reads accounts and books moves
// through Booker, and its candidates come from the caller (the holders
// set of coins and items).
package expiry

import (
	"context"
	"fmt"
	"iter"
	"maps"
	"slices"

	"redrain/ledger"
)

// Booker reads accounts and books moves: booking.Booker.
type Booker interface {
	Accounts(ctx context.Context, ids []uint64) (map[uint64]*ledger.Account, error)
	Move(ctx context.Context, moves []ledger.Move) ([]ledger.MoveResult, error)
}

// Defaults of a Sweeper's batches.
const (
	// ReadBatch accounts are read in one Accounts call.
	ReadBatch = 1024
	// MoveBatch moves are booked in one Move call (booking.MovesMax).
	MoveBatch = 4096
)

// Sweeper books the expiry of what is past its validity.
type Sweeper struct {
	Booker Booker
	// Rules are the validity in months per asset (campaign
	// Config.ValidityRules); an asset without one never expires.
	Rules map[ledger.Asset]int
	// Sources name the budget an item returns to (campaign.ItemSources).
	Sources map[ledger.Asset]string
	// ReadBatch and MoveBatch bound the calls (0: the defaults).
	ReadBatch, MoveBatch int

	assets []ledger.Asset // Rules' assets sorted, set by the first Plan
}

// Report is what a sweep did.
type Report struct {
	// Month is the month the sweep ran in (YYYY-MM); its cutoffs are it
	// less each asset's validity.
	Month string `json:"month"`
	// Accounts read; Unknown of them without monthly summaries (records
	// from before they were kept, archived entries not yet loaded),
	// skipped.
	Accounts int `json:"accounts"`
	Unknown  int `json:"unknown"`
	// Moves booked now, repeated (booked by an earlier sweep of the same
	// cutoff) and refused (the account changed since it was read: the
	// next sweep takes what is left).
	Applied  int `json:"applied"`
	Repeated int `json:"repeated"`
	Refused  int `json:"refused"`
	// Expired is what the moves booked now took, per counter account and
	// asset ("budget/{id}" or "expired/{asset}" → asset → amount).
	Expired map[string]map[ledger.Asset]int64 `json:"expired"`
}

// Plan returns the expiry moves of account a in month now: one per asset
// with a validity whose expirable amount is positive, in asset order.
// Rules must not change after the first Plan.
func (s *Sweeper) Plan(dst []ledger.Move, a *ledger.Account, now ledger.Month) []ledger.Move {
	if len(s.assets) != len(s.Rules) {
		s.assets = slices.Sorted(maps.Keys(s.Rules))
	}
	for _, asset := range s.assets {
		if a.Balance(asset) <= 0 {
			continue
		}
		cutoff := ledger.ExpiryCutoff(now, s.Rules[asset])
		n := a.Expirable(asset, cutoff)
		if n <= 0 {
			continue
		}
		counter := "expired/" + string(asset)
		if id, ok := s.Sources[asset]; ok {
			counter = ledger.BudgetAccount(id)
		}
		dst = append(dst, ledger.Move{ActID: a.ActID, Kind: ledger.MoveExpire, Key: ledger.ExpireKey(asset, cutoff),
			Legs: []ledger.Leg{{Asset: asset, Amount: -n}}, Counter: counter, Ref: ledger.ExpireRef(cutoff)})
	}
	return dst
}

// Sweep expires what the accounts of ids hold past its validity in the
// month of now (unix ms, UTC): ReadBatch accounts per read, MoveBatch
// moves per booking call, so memory is one read's accounts and one
// booking call's moves whatever ids holds. An error stops it; what it
// booked stays booked and the same sweep again books the rest (repeats
// change nothing).
func (s *Sweeper) Sweep(ctx context.Context, ids iter.Seq[uint64], now int64) (Report, error) {
	month := ledger.MonthOf(now)
	r := Report{Month: month.String(), Expired: map[string]map[ledger.Asset]int64{}}
	rb, mb := s.ReadBatch, s.MoveBatch
	if rb <= 0 {
		rb = ReadBatch
	}
	if mb <= 0 {
		mb = MoveBatch
	}
	var moves []ledger.Move
	flush := func() error {
		for i := 0; i < len(moves); i += mb {
			if err := s.book(ctx, moves[i:min(i+mb, len(moves))], &r); err != nil {
				return err
			}
		}
		moves = moves[:0]
		return nil
	}
	chunk := make([]uint64, 0, rb)
	read := func() error {
		accs, err := s.Booker.Accounts(ctx, chunk)
		if err != nil {
			return fmt.Errorf("expiry: read accounts: %w", err)
		}
		for _, id := range chunk {
			a := accs[id]
			if a == nil {
				continue
			}
			r.Accounts++
			if !a.MonthsKnown() {
				r.Unknown++
				continue
			}
			moves = s.Plan(moves, a, month)
		}
		chunk = chunk[:0]
		// Full batches now, the rest with the next read's.
		for len(moves) >= mb {
			if err := s.book(ctx, moves[:mb], &r); err != nil {
				return err
			}
			moves = append(moves[:0], moves[mb:]...)
		}
		return nil
	}
	for id := range ids {
		if chunk = append(chunk, id); len(chunk) == rb {
			if err := read(); err != nil {
				return r, err
			}
		}
	}
	if len(chunk) > 0 {
		if err := read(); err != nil {
			return r, err
		}
	}
	return r, flush()
}

// book books moves and counts their results in r.
func (s *Sweeper) book(ctx context.Context, moves []ledger.Move, r *Report) error {
	res, err := s.Booker.Move(ctx, moves)
	if err != nil {
		return fmt.Errorf("expiry: book %d moves: %w", len(moves), err)
	}
	for i, x := range res {
		m := &moves[i]
		switch x {
		case ledger.MoveApplied:
			r.Applied++
			if r.Expired[m.Counter] == nil {
				r.Expired[m.Counter] = map[ledger.Asset]int64{}
			}
			r.Expired[m.Counter][m.Legs[0].Asset] -= m.Legs[0].Amount
		case ledger.MoveRepeated, ledger.MoveKeyReused:
			// Booked before under the same key: this cutoff is done.
			r.Repeated++
		default:
			r.Refused++
		}
	}
	return nil
}
