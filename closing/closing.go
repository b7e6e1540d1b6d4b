// Package closing produces the statements (issue 13, item 4) from the
// booking stream: it folds partitions' journals into durable per-party,
// per-UTC-day aggregates in the store, exactly once, and reads a party's
// statement of a day, month or year as the sum of its days.
//
// Users are the exception: their statement is read from their account's
// entries (the ledger's own record of every grant and move leg, in
// booking order), folded by the same rule at read time, so the folder
// writes a few aggregates per fold (activities, sponsors, merchants)
// instead of one per user and day touched (one per grant in a rain). A
// user's statement so matches the user's ledger pages to the entry: a
// posting's day is its entry's booking time, which booking never lets
// go back within an account (Account.Book), where the other parties'
// days are their journals' booking times.
//
// Exactly once: each partition has a watermark (rr/stmt/wm/{pppp}), the
// seq of the last journal folded; one fold reads the watermarks, the
// journals past them and the day aggregates they touch, and writes the
// merged aggregates with the advanced watermarks in one optimistic
// transaction. A fold that fails or loses a conflict wrote nothing; a
// restart resumes from the watermarks.
//
// A day is closed (T+1) once every partition is folded past it: its
// watermark's covered time (the booking time of the last journal folded,
// or the time of a fold that found no journal left, less Slack) is past
// the day's end.
//
// It never writes accounts or journals, and decides no money: the rules
// are package statement's.
package closing

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"redrain/booking"
	"redrain/ledger"
	"redrain/statement"
	"redrain/storage"
)

// Keys of the statements in the store.
const (
	wmPrefix  = "rr/stmt/wm/"
	dayPrefix = "rr/stmt/day/"
)

// WatermarkKey is partition p's watermark: the last journal folded and
// the time it covers.
func WatermarkKey(p int32) []byte { return fmt.Appendf(nil, wmPrefix+"%04x", p) }

// DayKey is a party's aggregate of one UTC day.
func DayKey(d statement.Day, p statement.Party) []byte {
	return []byte(dayPrefix + d.String() + "/" + p.String())
}

// Slack is how long after a journal's booking time it may still commit
// (clocks of the booking nodes, a batch in flight): a partition found
// caught up at time t covers t - Slack.
const Slack int64 = 60_000

// Watermark is how far a partition is folded.
type Watermark struct {
	Seq     uint64 // the last journal folded (0: none)
	Covered int64  // unix ms: no journal still to fold was booked before it
}

func (w Watermark) append(dst []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, w.Seq)
	return binary.BigEndian.AppendUint64(dst, uint64(w.Covered))
}

func watermarkOf(raw []byte) (Watermark, error) {
	if raw == nil {
		return Watermark{}, nil
	}
	if len(raw) != 16 {
		return Watermark{}, fmt.Errorf("%w: statement watermark of %d bytes", ledger.ErrCorrupt, len(raw))
	}
	return Watermark{Seq: binary.BigEndian.Uint64(raw), Covered: int64(binary.BigEndian.Uint64(raw[8:]))}, nil
}

// grantActivity is the activity a grant's posting names: its own, or for a
// grant from before grants named one, its budget's.
func grantActivity(g *ledger.Grant) string {
	if g.ActivityID != "" {
		return g.ActivityID
	}
	act, _, _ := strings.Cut(g.BudgetID, "/")
	return act
}

// Postings calls fn with the postings of one journal's ops: a grant
// booked, each leg of a move. Attributions and binds move no money.
func Postings(j *ledger.Journal, fn func(*statement.Posting) error) error {
	var p statement.Posting
	for i := range j.Ops {
		op := &j.Ops[i]
		switch op.Kind {
		case ledger.OpBook:
			g := &op.Grant
			p = statement.Posting{At: j.BookedAt, Kind: statement.KindGrant, User: g.ActID, Activity: grantActivity(g), Asset: string(g.Asset), Amount: g.Amount}
			if err := fn(&p); err != nil {
				return err
			}
		case ledger.OpMove:
			m := op.Move
			if m == nil || m.Kind.String() == "" {
				return fmt.Errorf("%w: journal %d op %d: a move without a known kind", ledger.ErrCorrupt, j.Seq, i)
			}
			var merchant, activity string
			if id, ok := strings.CutPrefix(m.Counter, "merchant/"); ok {
				merchant = id
			} else if id, ok := strings.CutPrefix(m.Counter, "budget/"); ok {
				activity, _, _ = strings.Cut(id, "/")
			}
			for _, l := range m.Legs {
				p = statement.Posting{At: j.BookedAt, Kind: m.Kind.String(), User: m.ActID, Activity: activity,
					Merchant: merchant, Asset: string(l.Asset), Amount: l.Amount}
				if err := fn(&p); err != nil {
					return fmt.Errorf("journal %d op %d: %w", j.Seq, i, err)
				}
			}
		}
	}
	return nil
}

// Folder folds the journals of Parts partitions into the store.
type Folder struct {
	DB     *storage.TiKV
	Parts  int32
	Config *statement.Config
	// MaxOps bounds one fold's transaction: it stops taking journals once
	// it has folded this many ops (a journal is folded whole).
	MaxOps int
	// Now is the clock (unix ms).
	Now func() int64
	// Tap, when set, holds this node's committed journals summed: a fold
	// takes those instead of reading them from the store (tap.go).
	Tap *Tap
}

// Progress is what one Fold did.
type Progress struct {
	Journals, Ops int
	Days          int  // party-day aggregates written
	CaughtUp      bool // every partition's journals were folded
}

// Fold folds, in one transaction, the journals past each partition's
// watermark (up to MaxOps ops) and advances the watermarks.
func (f *Folder) Fold(ctx context.Context) (Progress, error) {
	var pr Progress
	// Settled: the next fold reads back the aggregates and watermarks
	// this one writes; it must not meet their locks.
	err := f.DB.UpdateSettled(ctx, func(txn storage.Txn) error {
		pr = Progress{CaughtUp: true}
		now := f.Now()
		agg, err := statement.NewAggregator(f.Config)
		if err != nil {
			return err
		}
		agg.NoUsers = true // read from their accounts (Read)
		heads, err := booking.JournalSeqs(ctx, txn, f.Parts)
		if err != nil {
			return err
		}
		wms, err := Watermarks(ctx, txn, f.Parts)
		if err != nil {
			return err
		}
		changed := make([]bool, f.Parts)
		for p := range f.Parts {
			w := &wms[p]
			seq0 := w.Seq
			if w.Seq > heads[p] {
				return fmt.Errorf("%w: partition %d folded to journal %d, its journal ends at %d", ledger.ErrCorrupt, p, w.Seq, heads[p])
			}
			if err := f.foldPart(txn, p, heads[p], w, agg, &pr); err != nil {
				return err
			}
			changed[p] = w.Seq != seq0
			if w.Seq == heads[p] {
				if c := now - Slack; c > w.Covered {
					w.Covered, changed[p] = c, true
				}
			} else {
				pr.CaughtUp = false
			}
		}
		days := agg.Days()
		keys := make([][]byte, len(days))
		for i, d := range days {
			keys[i] = DayKey(d.Day, d.Party)
		}
		old, err := storage.BatchGet(ctx, txn, keys)
		if err != nil {
			return err
		}
		var buf []byte
		for i, d := range days {
			if raw, ok := old[string(keys[i])]; ok {
				prev, err := statement.DecodeAggregate(raw)
				if err != nil {
					return fmt.Errorf("%w: %s: %v", ledger.ErrCorrupt, keys[i], err)
				}
				prev.Merge(d.Agg)
				prev.Sort()
				d.Agg = prev
			}
			if err := d.Agg.Check(d.Party); err != nil {
				return err
			}
			buf = statement.AppendAggregate(buf[:0], d.Agg)
			if err := txn.Set(keys[i], append([]byte(nil), buf...)); err != nil {
				return err
			}
		}
		pr.Days = len(days)
		for p := range f.Parts {
			if changed[p] {
				if err := txn.Set(WatermarkKey(p), wms[p].append(nil)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	return pr, err
}

// foldPart folds partition p's journals past w up to seq to into agg,
// advancing w, until pr counts MaxOps ops: those the tap holds as they
// come, and each run of the others from the store, up to the next one the
// tap holds.
func (f *Folder) foldPart(txn storage.Txn, p int32, to uint64, w *Watermark, agg *statement.Aggregator, pr *Progress) error {
	for w.Seq < to && pr.Ops < f.MaxOps {
		for _, j := range f.Tap.run(p, w.Seq+1, to) {
			if pr.Ops >= f.MaxOps {
				return nil
			}
			for _, g := range j.grants {
				if err := agg.AddGrants(j.bookedAt, g.activity, g.asset, g.amount, g.count); err != nil {
					return fmt.Errorf("partition %d journal %d: %w", p, j.seq, err)
				}
			}
			pr.Journals++
			pr.Ops += j.ops
			w.Seq = j.seq
			w.Covered = max(w.Covered, j.bookedAt-Slack)
		}
		if w.Seq >= to || pr.Ops >= f.MaxOps {
			return nil
		}
		err := booking.JournalsFrom(txn, p, w.Seq+1, f.Tap.before(p, w.Seq+1, to), func(j *ledger.Journal) error {
			if pr.Ops >= f.MaxOps {
				return errFull
			}
			if err := Postings(j, agg.Add); err != nil {
				return fmt.Errorf("partition %d: %w", p, err)
			}
			pr.Journals++
			pr.Ops += len(j.Ops)
			w.Seq = j.Seq
			w.Covered = max(w.Covered, j.BookedAt-Slack)
			return nil
		})
		if errors.Is(err, errFull) {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// dayLines adds party's stored day aggregates of period to agg.
func dayLines(ctx context.Context, txn storage.Txn, party statement.Party, period statement.Period, agg *statement.Aggregate) error {
	keys := make([][]byte, 0, period.To-period.From)
	for d := period.From; d < period.To; d++ {
		keys = append(keys, DayKey(d, party))
	}
	raw, err := storage.BatchGet(ctx, txn, keys)
	if err != nil {
		return err
	}
	for _, k := range keys {
		v, ok := raw[string(k)]
		if !ok {
			continue
		}
		a, err := statement.DecodeAggregate(v)
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ledger.ErrCorrupt, k, err)
		}
		agg.Merge(a)
	}
	return nil
}

// userLines adds the lines of a user's entries booked in period to agg:
// the account as the store holds it (pages and the journal past them),
// its history chunks only when the period reaches back past its recent
// entries (booking times never decrease within an account).
func userLines(ctx context.Context, txn storage.Txn, parts int32, party statement.Party, period statement.Period, agg *statement.Aggregate) error {
	act, err := strconv.ParseUint(party.ID, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: party %s: %v", statement.ErrInput, party, err)
	}
	accounts, err := booking.ReadAccounts(ctx, txn, parts, []uint64{act})
	if err != nil {
		return err
	}
	a := accounts[act]
	if a == nil {
		return nil
	}
	from, to := period.From.Start(), period.To.Start()
	entries := a.Entries
	if a.Archived > 0 && (len(entries) == 0 || entries[0].BookedAt >= from) {
		archived, err := booking.Archived(ctx, txn, a)
		if err != nil {
			return err
		}
		entries = append(archived, entries...)
	}
	for i := range entries {
		if e := &entries[i]; e.BookedAt >= from && e.BookedAt < to {
			p := entryPosting(act, e)
			agg.AddUser(&p)
		}
	}
	return nil
}

// entryPosting is the posting of a user's entry: a grant booked or one
// leg of a move, as Postings makes it of the journal op that booked it
// (on the entry's booking time).
func entryPosting(act uint64, e *ledger.Entry) statement.Posting {
	kind := statement.KindGrant
	if e.Move != nil {
		kind = e.Move.Kind.String()
	}
	return statement.Posting{At: e.BookedAt, Kind: kind, User: act, Asset: string(e.Asset), Amount: e.Amount}
}

// errFull stops a partition's journals once a fold holds MaxOps ops.
var errFull = errors.New("closing: fold full")

// FoldAll folds until every partition is caught up, one transaction per
// MaxOps ops.
func (f *Folder) FoldAll(ctx context.Context) (Progress, error) {
	var all Progress
	for {
		pr, err := f.Fold(ctx)
		all.Journals += pr.Journals
		all.Ops += pr.Ops
		all.Days += pr.Days
		if err != nil || pr.CaughtUp {
			all.CaughtUp = pr.CaughtUp
			return all, err
		}
		if err := ctx.Err(); err != nil {
			return all, err
		}
	}
}

// Watermarks reads every partition's watermark in txn.
func Watermarks(ctx context.Context, txn storage.Txn, parts int32) ([]Watermark, error) {
	keys := make([][]byte, parts)
	for p := range parts {
		keys[p] = WatermarkKey(p)
	}
	raw, err := storage.BatchGet(ctx, txn, keys)
	if err != nil {
		return nil, err
	}
	out := make([]Watermark, parts)
	for p := range parts {
		if out[p], err = watermarkOf(raw[string(keys[p])]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Read is party's statement of period as the store holds it: the sum of
// its days, checked, and closed when every partition is folded past the
// period's end.
func Read(ctx context.Context, db *storage.TiKV, parts int32, party statement.Party, period statement.Period) (*statement.Statement, error) {
	st := &statement.Statement{Party: party, Period: period}
	err := db.View(func(txn storage.Txn) error {
		var err error
		if party.Kind == statement.PartyUser {
			err = userLines(ctx, txn, parts, party, period, &st.Agg)
		} else {
			err = dayLines(ctx, txn, party, period, &st.Agg)
		}
		if err != nil {
			return err
		}
		wms, err := Watermarks(ctx, txn, parts)
		if err != nil {
			return err
		}
		st.Closed = true
		for _, w := range wms {
			st.Closed = st.Closed && w.Covered >= period.To.Start()
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	st.Agg.Sort()
	if err := st.Agg.Check(party); err != nil {
		return nil, fmt.Errorf("%w: %v", ledger.ErrInvariant, err)
	}
	return st, nil
}
