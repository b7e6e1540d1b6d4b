package wallet

import (
	"slices"
	"testing"

	"redrain/ledger"
)

// TestTapHoldsRuns: a partition's journals come out from a seq on while
// consecutive; one not after the last starts the partition's run again;
// past tapMax the oldest go; a journal with a move, or of a partition the
// node does not have, is not held.
func TestTapHoldsRuns(t *testing.T) {
	w := New(Config{Parts: 4})
	book := []ledger.Op{{Kind: ledger.OpBook, Grant: ledger.Grant{ActID: 1}}}
	for seq := uint64(5); seq <= 9; seq++ {
		w.Journal(1, seq, book)
	}
	w.Journal(1, 11, book) // a gap at 10
	w.Journal(2, 3, book)
	w.Journal(2, 3, book) // again: not after the last
	w.Journal(2, 4, []ledger.Op{book[0], ledger.MoveOp(&ledger.Move{ActID: 1})})
	w.Journal(4, 1, book)  // no such partition
	w.Journal(-1, 1, book) // nor this
	tt := w.tap.take()
	got := func(p int32, from uint64, max int) (out []uint64) {
		for _, j := range tt.run(p, from, max) {
			out = append(out, j.seq)
		}
		return out
	}
	for _, c := range []struct {
		p    int32
		from uint64
		max  int
		want []uint64
	}{
		{1, 5, 100, []uint64{5, 6, 7, 8, 9}},
		{1, 7, 100, []uint64{7, 8, 9}},
		{1, 7, 2, []uint64{7, 8}},
		{1, 4, 100, nil}, // 4 is not held
		{1, 10, 100, nil},
		{1, 11, 100, []uint64{11}},
		{2, 3, 100, []uint64{3}}, // held once; 4 has a move
		{0, 1, 100, nil},
		{3, 1, 100, nil},
	} {
		if g := got(c.p, c.from, c.max); !slices.Equal(g, c.want) {
			t.Errorf("run(%d, %d, %d) = %v, want %v", c.p, c.from, c.max, g, c.want)
		}
	}
	if len(tt) != 2 {
		t.Errorf("the tap held partitions %v", tt)
	}
	if again := w.tap.take(); len(again) != 0 {
		t.Errorf("a second take found %v", again)
	}
	for seq := range uint64(tapMax + 10) {
		w.Journal(0, seq+1, book)
	}
	tt = w.tap.take()
	if g := tt.run(0, 11, 1<<20); len(g) != tapMax || g[0].seq != 11 {
		t.Errorf("after %d journals the tap holds %d from %d, want %d from 11", tapMax+10, len(g), g[0].seq, tapMax)
	}
	if g := tt.run(0, 10, 1<<20); len(g) != 0 {
		t.Errorf("the tap still holds journal 10 of %d", tapMax+10)
	}
	// Bounded by ops too: journals of a quarter of tapOpsMax each, the
	// tap keeps the last four; one larger than the bound is not kept.
	big := make([]ledger.Op, tapOpsMax/4)
	for seq := uint64(1); seq <= 6; seq++ {
		w.Journal(3, seq, big)
	}
	tt = w.tap.take()
	if g := tt.run(3, 3, 1<<20); len(g) != 4 || g[0].seq != 3 {
		t.Errorf("journals of %d ops: the tap holds %d from %v, want 4 from 3", len(big), len(g), g)
	}
	w.Journal(3, 7, make([]ledger.Op, tapOpsMax+1))
	if tt = w.tap.take(); len(tt.run(3, 7, 1<<20)) != 0 {
		t.Error("the tap holds a journal of more ops than its bound")
	}
}
