package closing_test

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"testing"

	"redrain/closing"
	"redrain/ledger"
	"redrain/statement"
	"redrain/storage"
)

const day1 = int64(1_764_979_200_000) // 2025-12-06T00:00:00Z

var seedRule = statement.Rule{
	Fees:     []statement.Share{{Party: "host", Rate: 100_000}, {Party: "platform", Rate: 50_000}, {Party: "technical_fee", Rate: 6_000}},
	Residual: "merchant",
}

// store holds partitions' journals as booking writes them.
type store struct {
	t    *testing.T
	mem  *storage.MemoryStore
	db   *storage.TiKV
	next map[int32]uint64
	rain uint64
}

func newStore(t *testing.T) *store {
	mem := storage.NewMemoryStore()
	return &store{t: t, mem: mem, db: mem.Client(nil), next: map[int32]uint64{}}
}

// journal commits one journal of grants (act, amount) in partition p,
// which must be the users' (the accounts are read from the journals), and
// returns it.
func (s *store) journal(p int32, at int64, grants ...[2]int64) *ledger.Journal {
	s.t.Helper()
	seq := s.next[p] + 1
	j := &ledger.Journal{Seq: seq, BookedAt: at}
	for _, g := range grants {
		if q := storage.PartitionOf(uint64(g[0]), 2); q != p {
			s.t.Fatalf("act %d is a user of partition %d, not %d", g[0], q, p)
		}
		s.rain++ // each grant its own packet
		gr := ledger.Grant{AppID: 1, ActID: uint64(g[0]), ActivityID: "newyear", SceneID: "lobby", RainID: s.rain, AwardType: "cash",
			Asset: ledger.AssetCash, Amount: g[1], BudgetID: "newyear/formal/cash", LeaseID: 1, IssuedAt: at}
		j.Ops = append(j.Ops, ledger.Op{Kind: ledger.OpBook, Grant: gr})
	}
	err := s.db.Update(context.Background(), func(txn storage.Txn) error {
		if err := txn.Set(storage.JournalKey(p, seq), ledger.AppendJournal(nil, j)); err != nil {
			return err
		}
		return txn.Set(storage.PartKey(p), ledger.AppendPartState(nil, &ledger.PartState{Epoch: 1, NextSeq: seq + 1}))
	})
	if err != nil {
		s.t.Fatal(err)
	}
	s.next[p] = seq
	return j
}

func (s *store) read(db *storage.TiKV, party, kind, date string) *statement.Statement {
	s.t.Helper()
	pa, err := statement.ParseParty(party)
	if err != nil {
		s.t.Fatal(err)
	}
	pe, err := statement.ParsePeriod(kind, date)
	if err != nil {
		s.t.Fatal(err)
	}
	st, err := closing.Read(context.Background(), db, 2, pa, pe)
	if err != nil {
		s.t.Fatal(err)
	}
	return st
}

func net(st *statement.Statement, asset string) (int64, int64) {
	for _, l := range st.Agg.Lines {
		if l.Asset == asset {
			return l.Amount, l.Count
		}
	}
	return 0, 0
}

// Folding is exactly once: re-running folds nothing twice, a small
// MaxOps spreads it over transactions, a commit whose answer was lost is
// not counted again, and a day closes once every partition is past it.
func TestFoldExactlyOnce(t *testing.T) {
	s := newStore(t)
	s.journal(0, day1+1_000, [2]int64{2, 100}, [2]int64{6, 200})
	s.journal(1, day1+2_000, [2]int64{5, 50})
	s.journal(0, day1+86_400_000+5, [2]int64{2, 7}) // the next day
	now := day1 + 3_000
	var lost bool
	faults := func(op storage.KVOp) storage.KVOutcome {
		if op.Kind == storage.KVCommit && lost {
			lost = false
			return storage.KVLost
		}
		return storage.KVOK
	}
	f := &closing.Folder{DB: s.mem.Client(faults), Parts: 2, Config: &statement.Config{Sponsors: map[string]string{"newyear": "acme"}}, MaxOps: 2, Now: func() int64 { return now }}
	lost = true
	if _, err := f.Fold(context.Background()); !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("fold with its answer lost: %v", err)
	}
	pr, err := f.FoldAll(context.Background())
	if err != nil || !pr.CaughtUp {
		t.Fatalf("fold all: %+v %v", pr, err)
	}
	if pr.Journals != 2 { // the lost commit had folded the first
		t.Errorf("folded %d journals after the lost commit, want 2", pr.Journals)
	}
	if pr, err := f.FoldAll(context.Background()); err != nil || pr.Journals != 0 {
		t.Fatalf("second fold: %+v %v", pr, err)
	}
	for _, c := range []struct {
		party, kind, date string
		amount, count     int64
	}{
		{"activity:newyear", "day", "2025-12-06", -350, 3},
		{"sponsor:acme", "day", "2025-12-06", -350, 3},
		{"activity:newyear", "day", "2025-12-07", -7, 1},
		{"activity:newyear", "month", "2025-12", -357, 4},
		{"sponsor:acme", "year", "2025", -357, 4},
		{"user:2", "month", "2025-12", 107, 2},
		{"user:6", "day", "2025-12-07", 0, 0},
		{"user:6", "day", "2025-12-06", 200, 1},
	} {
		st := s.read(s.db, c.party, c.kind, c.date)
		if a, n := net(st, "cash"); a != c.amount || n != c.count {
			t.Errorf("%s %s %s: %d in %d postings, want %d in %d", c.party, c.kind, c.date, a, n, c.amount, c.count)
		}
	}
	if s.read(s.db, "activity:newyear", "day", "2025-12-06").Closed {
		t.Error("day closed before its end")
	}
	// The next day passes: a fold that finds every partition caught up
	// closes the first day.
	now = day1 + 86_400_000 + closing.Slack + 1
	s.journal(1, now, [2]int64{5, 1})
	if _, err := f.FoldAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !s.read(s.db, "activity:newyear", "day", "2025-12-06").Closed {
		t.Error("day not closed after every partition passed it")
	}
	if s.read(s.db, "activity:newyear", "month", "2025-12").Closed {
		t.Error("month closed before its end")
	}
}

// A watermark beyond a partition's journal is corruption, refused.
func TestFoldWatermarkAhead(t *testing.T) {
	s := newStore(t)
	s.journal(0, day1, [2]int64{2, 1})
	if err := s.db.Update(context.Background(), func(txn storage.Txn) error {
		return txn.Set(closing.WatermarkKey(0), make([]byte, 16))
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.db.Update(context.Background(), func(txn storage.Txn) error {
		b := make([]byte, 16)
		b[7] = 9
		return txn.Set(closing.WatermarkKey(1), b)
	}); err != nil {
		t.Fatal(err)
	}
	f := &closing.Folder{DB: s.db, Parts: 2, Config: &statement.Config{}, MaxOps: 10, Now: func() int64 { return day1 }}
	if _, err := f.Fold(context.Background()); !errors.Is(err, ledger.ErrCorrupt) {
		t.Fatalf("fold past a watermark ahead: %v", err)
	}
}

// Moves in in-memory journals (their encoding is booking's): a
// consumption split, its refund, an expiry returned to an activity.
func TestPostingsOfMoves(t *testing.T) {
	j := &ledger.Journal{Seq: 1, BookedAt: day1, Ops: []ledger.Op{
		{Kind: ledger.OpMove, Move: &ledger.Move{ActID: 7, Kind: ledger.MoveConsume, Key: "a", Legs: []ledger.Leg{{Asset: ledger.AssetCash, Amount: -10_000}}, Counter: "merchant/m1"}},
		{Kind: ledger.OpMove, Move: &ledger.Move{ActID: 7, Kind: ledger.MoveRefund, Key: "b", Legs: []ledger.Leg{{Asset: ledger.AssetCash, Amount: 1_000}}, Counter: "merchant/m1", Ref: "a"}},
		{Kind: ledger.OpMove, Move: &ledger.Move{ActID: 7, Kind: ledger.MoveExpire, Key: "c", Legs: []ledger.Leg{{Asset: "coin:gold", Amount: -3}}, Counter: "budget/newyear/formal/gold"}},
		{Kind: ledger.OpMove, Move: &ledger.Move{ActID: 7, Kind: ledger.MoveWithdrawHold, Key: "d", Legs: []ledger.Leg{{Asset: ledger.AssetCash, Amount: -500}, {Asset: ledger.AssetTransit, Amount: 500}}}},
	}}
	g, err := statement.NewAggregator(&statement.Config{Rules: map[string]statement.Rule{"m1": seedRule}})
	if err != nil {
		t.Fatal(err)
	}
	if err := closing.Postings(j, g.Add); err != nil {
		t.Fatal(err)
	}
	got := map[string]*statement.Aggregate{}
	for _, d := range g.Days() {
		if err := d.Agg.Check(d.Party); err != nil {
			t.Fatal(err)
		}
		got[d.Party.String()] = d.Agg
	}
	m := got["merchant:m1"].Totals()
	if len(m) != 1 || m[0].Income != 10_000 || m[0].Net != 8_440-844 {
		t.Errorf("merchant totals %+v, want income 10000, net 7596", m)
	}
	if a := got["activity:newyear"]; a == nil || a.Lines[0] != (statement.Line{Section: statement.Other, Item: statement.ItemExpiryReturn, Asset: "coin:gold", Amount: 3, Count: 1}) {
		t.Errorf("activity %+v", a)
	}
	u := got["user:7"].Totals()
	if len(u) != 3 || u[0] != (statement.Totals{Asset: "cash", Expenditure: -10_000, Other: 500, Net: -9_500}) || u[1].Net != 500 || u[2].Net != -3 {
		t.Errorf("user totals %+v", u)
	}
	bad := &ledger.Journal{Seq: 2, BookedAt: day1, Ops: []ledger.Op{{Kind: ledger.OpMove, Move: &ledger.Move{ActID: 7, Kind: 99}}}}
	if err := closing.Postings(bad, g.Add); !errors.Is(err, ledger.ErrCorrupt) {
		t.Errorf("a move of unknown kind: %v", err)
	}
}

// TestFoldAcrossRestart: on the embedded TiKV, a fold stopped after one
// transaction resumes from its watermarks after the store is closed and
// opened again, and counts each journal once.
func TestFoldAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	db, err := storage.OpenTiKV(nil, dir)
	if err != nil {
		t.Fatal(err)
	}
	s := &store{t: t, db: db, next: map[int32]uint64{}}
	s.journal(0, day1+1, [2]int64{2, 100})
	s.journal(1, day1+2, [2]int64{5, 10})
	s.journal(0, day1+3, [2]int64{2, 1})
	cfg := &statement.Config{}
	f := &closing.Folder{DB: db, Parts: 2, Config: cfg, MaxOps: 1, Now: func() int64 { return day1 + 4 }}
	if pr, err := f.Fold(context.Background()); err != nil || pr.Journals != 1 || pr.CaughtUp {
		t.Fatalf("first fold: %+v %v", pr, err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = storage.OpenTiKV(nil, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s.db = db
	s.journal(1, day1+5, [2]int64{5, 1_000})
	f.DB = db
	if pr, err := f.FoldAll(context.Background()); err != nil || pr.Journals != 3 || !pr.CaughtUp {
		t.Fatalf("fold after the restart: %+v %v", pr, err)
	}
	for party, want := range map[string][2]int64{"activity:newyear": {-1_111, 4}, "user:2": {101, 2}, "user:5": {1_010, 2}} {
		if a, n := net(s.read(db, party, "day", "2025-12-06"), "cash"); a != want[0] || n != want[1] {
			t.Errorf("%s: %d in %d postings, want %d in %d", party, a, n, want[0], want[1])
		}
	}
}

// TestFoldFromTap: a fold takes the journals its tap holds (as booking
// committed them, summed) and reads the rest from the store: the same
// statements as a fold of the store alone, with journals missing from the
// tap, one out of order, one past the partitions' heads and one with an
// attribution; a tapped journal is not read back from the store, and
// neither is one folded before.
func TestFoldFromTap(t *testing.T) {
	cfg := &statement.Config{Sponsors: map[string]string{"newyear": "acme"}}
	var want, got *store
	var tap closing.Tap
	for i, s := range []**store{&want, &got} {
		*s = newStore(t)
		st := *s
		js := []*ledger.Journal{
			st.journal(0, day1+1_000, [2]int64{2, 100}, [2]int64{6, 200}),
			st.journal(1, day1+2_000, [2]int64{5, 50}),
			st.journal(0, day1+3_000, [2]int64{2, 7}),
			st.journal(0, day1+86_400_000+5, [2]int64{6, 9}), // the next day
			st.journal(1, day1+4_000, [2]int64{5, 3}, [2]int64{8, 4}),
		}
		if i == 0 {
			continue
		}
		attr := append(slices.Clone(js[4].Ops), ledger.Op{Kind: ledger.OpAttribute, Grant: js[4].Ops[0].Grant})
		tap.Journal(0, js[0].Seq, js[0].BookedAt, js[0].Ops)
		tap.Journal(1, js[4].Seq, js[4].BookedAt, attr)      // after a gap: partition 1's first from the store, then this
		tap.Journal(0, js[3].Seq, js[3].BookedAt, js[3].Ops) // after a gap too
		tap.Journal(0, js[3].Seq+1, day1, js[0].Ops)         // past the head: never folded
	}
	fw := &closing.Folder{DB: want.db, Parts: 2, Config: cfg, MaxOps: 100, Now: func() int64 { return day1 + 5_000 }}
	fg := &closing.Folder{DB: got.db, Parts: 2, Config: cfg, MaxOps: 100, Now: func() int64 { return day1 + 5_000 }, Tap: &tap}
	for _, f := range []*closing.Folder{fw, fg} {
		if pr, err := f.FoldAll(context.Background()); err != nil || !pr.CaughtUp || pr.Journals != 5 {
			t.Fatalf("fold: %+v %v", pr, err)
		}
	}
	for _, party := range []string{"activity:newyear", "sponsor:acme"} {
		for _, date := range []string{"2025-12-06", "2025-12-07"} {
			w, g := want.read(want.db, party, "day", date), got.read(got.db, party, "day", date)
			if !reflect.DeepEqual(w.Agg, g.Agg) || w.Closed != g.Closed {
				t.Errorf("%s %s from the tap: %+v, from the store: %+v", party, date, g, w)
			}
		}
	}
	if a, n := net(got.read(got.db, "activity:newyear", "day", "2025-12-06"), "cash"); a != -364 || n != 6 {
		t.Errorf("activity:newyear: %d in %d postings, want -364 in 6", a, n)
	}

	// What the tap holds is taken as the journal: a tapped journal that
	// says otherwise, after one the tap lacks, shows it was not read back
	// from the store.
	s := newStore(t)
	var lied closing.Tap
	s.journal(0, day1+500, [2]int64{2, 10})
	j := s.journal(0, day1+1_000, [2]int64{2, 100})
	other := slices.Clone(j.Ops)
	other[0].Grant.Amount = 1
	lied.Journal(0, j.Seq, j.BookedAt, other)
	f := &closing.Folder{DB: s.db, Parts: 2, Config: cfg, MaxOps: 100, Now: func() int64 { return day1 + 5_000 }, Tap: &lied}
	if _, err := f.FoldAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a, n := net(s.read(s.db, "activity:newyear", "day", "2025-12-06"), "cash"); a != -11 || n != 2 {
		t.Errorf("activity:newyear: %d in %d postings, want 10 from the store and the tapped 1: -11 in 2", a, n)
	}
	// Folded once: the tap, told of the journal again, folds nothing more.
	lied.Journal(0, j.Seq, j.BookedAt, other)
	if pr, err := f.FoldAll(context.Background()); err != nil || pr.Journals != 0 {
		t.Fatalf("fold again: %+v %v", pr, err)
	}
}
