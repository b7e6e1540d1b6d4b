package wallet

import (
	"slices"
	"sync"

	"redrain/booking"
	"redrain/ledger"
)

// The tap: the journals this node's booking commits reach the Feed in
// memory (Journal), so that on a node that books, the Feed does not read
// back and decode from the store what the same process just wrote (on a
// node of role all it read and decoded every journal a second time:
// DESIGN.md, *The Feed*). A poll takes what the tap holds before its
// snapshot begins, applies each partition's tapped journals that follow
// on from where it stands, and scans the store for the rest: journals
// written elsewhere (another node, a redeem straight into the store), a
// journal the tap dropped, those after a gap. A tap that held nothing
// would cost only speed.

// tapMax and tapOpsMax bound the journals, and their ops, the tap holds
// per partition between two polls (a Feed that stalls must not keep a
// burst's grants in memory); past either the oldest go, and the poll reads
// them from the store. A poll of a burst finds a few journals of ~1,000
// ops a partition.
const (
	tapMax    = 256
	tapOpsMax = 1 << 15
)

type tapped struct {
	seq uint64
	ops []ledger.Op
	// held: the holders set took its grants when it was handed over
	// (Journal), so the poll adds none of them again.
	held bool
}

func tappedSeq(j *tapped) uint64 { return j.seq }

type tap struct {
	mu    sync.Mutex
	parts map[int32][]tapped
}

// tapTake is what a poll took from the tap: each partition's journals in
// the order their partition committed them.
type tapTake map[int32][]tapped

// put holds the journal seq of partition p with its ops. A partition's
// committer reports its journals in order; one out of order, or after a
// drop, leaves a gap the poll reads from the store.
func (t *tap) put(p int32, seq uint64, ops []ledger.Op, held bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.parts == nil {
		t.parts = map[int32][]tapped{}
	}
	q := booking.AppendTapped(t.parts[p], tappedSeq, tapped{seq: seq, ops: ops, held: held})
	n := 0 // the ops the partition's journals hold
	for _, j := range q {
		n += len(j.ops)
	}
	drop := 0
	for len(q)-drop > tapMax || n > tapOpsMax && drop < len(q) {
		n -= len(q[drop].ops)
		drop++
	}
	t.parts[p] = slices.Delete(q, 0, drop)
}

// take empties the tap and returns what it held.
func (t *tap) take() tapTake {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := t.parts
	t.parts = nil
	return out
}

// run returns the journals of p from seq from on, consecutive, at most max.
func (tt tapTake) run(p int32, from uint64, max int) []tapped {
	q := tt[p]
	for len(q) > 0 && q[0].seq < from {
		q = q[1:]
	}
	n := 0
	for n < len(q) && n < max && q[n].seq == from+uint64(n) {
		n++
	}
	return q[:n]
}

// Journal is told of a journal this node's booking has just committed, or
// caught up with (seq of partition p, its ops; Booker.OnJournal): its
// grants go to the holders set at once (booked), and the journal to the
// Feed, to apply without reading it from the store. A journal with a move
// is left to the store (the Feed takes a move's legs as the journal holds
// them). The ops must not change after.
func (w *Wallets) Journal(p int32, seq uint64, ops []ledger.Op) {
	held := w.booked(ops)
	if p < 0 || p >= w.cfg.Parts {
		return
	}
	for i := range ops {
		if ops[i].Kind == ledger.OpMove {
			return
		}
	}
	w.tap.put(p, seq, ops, held)
}
