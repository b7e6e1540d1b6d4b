package closing

import (
	"slices"
	"sync"

	"redrain/booking"
	"redrain/ledger"
)

// Tap holds what this node's booking committed, summed for the folder, so
// that a fold does not read back from the store and decode the journals
// the same process just wrote (at 250,000 grants/s the folds' scans were
// ~3% of a node's CPU). Each journal is kept as its grants summed per
// activity and asset (a few sums where the journal holds thousands of
// grants), with its seq, booking time and op count; a fold takes the
// tapped journals that follow on from a partition's watermark and reads
// the store for the rest: journals written elsewhere, one the tap dropped
// or left out (a move, a grant the fold would refuse), those after a gap.
// A tap that held nothing would cost only speed. Safe for concurrent use.
type Tap struct {
	mu    sync.Mutex
	parts map[int32][]tapped
}

// tapMax bounds the journals the tap holds per partition between two folds
// (a fold that stalls must not keep the node's journals in memory); past
// it the oldest go, and the fold reads them from the store. At 250,000
// grants/s a partition commits ~60 journals a second, folded every 10 s.
const tapMax = 4096

// tapped is one journal as the folder folds it.
type tapped struct {
	seq      uint64
	bookedAt int64
	ops      int // the journal's ops, all kinds: what Folder.MaxOps counts
	grants   []grantSum
}

// grantSum is the grants of one activity and asset in a journal.
type grantSum struct {
	activity, asset string
	amount, count   int64
}

// Journal is told of journal seq of partition p, booked at bookedAt with
// ops, once it is committed (booking.Booker.OnJournal), in the order the
// partition committed them. A journal with a move, or with a grant that
// Postings would give no activity or asset, is left to the store: the
// fold reads it and reports what is wrong with it as it always did. One
// out of order leaves a gap the fold reads from the store.
func (t *Tap) Journal(p int32, seq uint64, bookedAt int64, ops []ledger.Op) {
	j := tapped{seq: seq, bookedAt: bookedAt, ops: len(ops)}
	for i := range ops {
		op := &ops[i]
		switch op.Kind {
		case ledger.OpBook:
		case ledger.OpMove:
			return
		default:
			continue // attributions and binds post nothing
		}
		g := &op.Grant
		act := grantActivity(g)
		if act == "" || g.Asset == "" {
			return
		}
		j.add(act, string(g.Asset), g.Amount)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.parts == nil {
		t.parts = map[int32][]tapped{}
	}
	q := booking.AppendTapped(t.parts[p], func(j *tapped) uint64 { return j.seq }, j)
	if len(q) > tapMax {
		q = append(q[:0], q[len(q)-tapMax:]...)
	}
	t.parts[p] = q
}

// add counts one grant: a journal's grants mostly share one activity and
// asset, so the last sum is tried first.
func (j *tapped) add(activity, asset string, amount int64) {
	for i := len(j.grants) - 1; i >= 0; i-- {
		if s := &j.grants[i]; s.activity == activity && s.asset == asset {
			s.amount += amount
			s.count++
			return
		}
	}
	j.grants = append(j.grants, grantSum{activity: activity, asset: asset, amount: amount, count: 1})
}

// run returns partition p's tapped journals from seq from on, consecutive,
// none past to, and forgets those before from (folded). A nil tap holds
// none.
func (t *Tap) run(p int32, from, to uint64) []tapped {
	if t == nil || from > to {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	q := t.parts[p]
	drop := 0
	for drop < len(q) && q[drop].seq < from {
		drop++
	}
	if drop > 0 {
		q = append(q[:0], q[drop:]...)
		t.parts[p] = q
	}
	n := 0
	for n < len(q) && q[n].seq == from+uint64(n) && q[n].seq <= to {
		n++
	}
	return slices.Clone(q[:n]) // Journal moves the queue's entries
}

// before returns the seq before the first journal of p the tap holds
// after from, or to when it holds none up to to: where a run of journals
// read from the store ends.
func (t *Tap) before(p int32, from, to uint64) uint64 {
	if t == nil {
		return to
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, j := range t.parts[p] {
		if j.seq > from {
			return min(j.seq-1, to)
		}
	}
	return to
}
