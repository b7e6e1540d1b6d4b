package consistency_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"redrain/booking"
	"redrain/booking/bookingtest"
	"redrain/closing"
	"redrain/consistency"
	"redrain/ledger"
	"redrain/metrics"
	"redrain/spend"
	"redrain/statement"
	"redrain/storage"
	"redrain/storage/storagetest"
	"redrain/withdraw"
)

const parts = 2

// world is a store with journals written as booking writes them, the
// grant topic on the embedded broker, a booker that books straight into
// the store (it owns no partition) and the statements folded.
type world struct {
	t      *testing.T
	ctx    context.Context
	db     *storage.TiKV
	f      *bookingtest.Fixture
	b      *booking.Booker
	prod   sarama.SyncProducer
	stream *consistency.KafkaStream
	fold   *closing.Folder
	cfg    *statement.Config
	day    statement.Day
	at     int64 // booking time of the journals written by hand
	next   map[int32]uint64
	c      *consistency.Checker
}

func newWorld(t *testing.T) *world {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	db := storage.NewMemoryStore().Client(nil)
	k := storagetest.Kafka(t, "", parts)
	prod := producer(t, k.Brokers)
	stream, err := consistency.NewKafkaStream(k.Brokers, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stream.Close() })
	day := statement.DayOf(time.Now().UnixMilli()) - 2
	bookedAt := time.UnixMilli(day.Start() + 10*3600_000)
	b := booking.New(booking.Config{Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		TiKV: db, Partitions: parts, Metrics: &metrics.Registry{}, Clock: func() time.Time { return bookedAt }, Owner: "test"})
	cfg := &statement.Config{Default: &statement.Rule{Fees: []statement.Share{{Party: "host", Rate: 100_000}}, Residual: "merchant"}}
	w := &world{t: t, ctx: ctx, db: db, f: bookingtest.New(t, db, parts, 1_000_000), b: b, prod: prod, stream: stream, cfg: cfg,
		fold: &closing.Folder{DB: db, Parts: parts, Config: cfg, MaxOps: 1000, Now: func() int64 { return time.Now().UnixMilli() }},
		day:  day, at: day.Start() + 3600_000, next: map[int32]uint64{}}
	w.c, err = consistency.New(consistency.Config{DB: db, Parts: parts, Stream: stream, Statements: cfg, Booker: b})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// producer writes grant records to the partition each message names,
// closed with the test.
func producer(tb testing.TB, brokers []string) sarama.SyncProducer {
	tb.Helper()
	sc := storage.SaramaConfig("test-producer")
	sc.Producer.Return.Successes = true
	sc.Producer.Partitioner = sarama.NewManualPartitioner
	prod, err := sarama.NewSyncProducer(brokers, sc)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = prod.Close() })
	return prod
}

// user is a new act_id of partition p.
func (w *world) user(p int32) uint64 {
	for {
		if u := w.f.User(); storage.PartitionOf(u, parts) == p {
			return u
		}
	}
}

// record produces a grant record to partition p and returns its offset.
func (w *world) record(p int32, gs ...ledger.Grant) int64 {
	w.t.Helper()
	_, off, err := w.prod.SendMessage(&sarama.ProducerMessage{Topic: storage.GrantTopic, Partition: p,
		Value: sarama.ByteEncoder(ledger.AppendGrantRecord(nil, gs))})
	if err != nil {
		w.t.Fatal(err)
	}
	return off
}

// journal commits partition p's next journal: offsets [from, to) and
// ops, as booking writes it.
func (w *world) journal(p int32, from, to int64, ops ...ledger.Op) uint64 {
	w.t.Helper()
	seq := w.next[p] + 1
	w.put(p, &ledger.Journal{Seq: seq, BookedAt: w.at, From: from, To: to, Ops: ops})
	w.next[p] = seq
	return seq
}

// put writes journal j of partition p (a new one, or over an old one).
func (w *world) put(p int32, j *ledger.Journal) {
	w.t.Helper()
	err := w.db.Update(w.ctx, func(txn storage.Txn) error {
		if err := txn.Set(storage.JournalKey(p, j.Seq), ledger.AppendJournal(nil, j)); err != nil {
			return err
		}
		raw, err := txn.Get(w.ctx, storage.PartKey(p))
		if err != nil {
			return err
		}
		s := &ledger.PartState{Epoch: 1}
		if raw != nil {
			if s, err = ledger.DecodePartState(raw); err != nil {
				return err
			}
		}
		s.NextSeq = max(s.NextSeq, j.Seq+1)
		s.Booked = max(s.Booked, j.To)
		return txn.Set(storage.PartKey(p), ledger.AppendPartState(nil, s))
	})
	if err != nil {
		w.t.Fatal(err)
	}
}

func books(gs ...ledger.Grant) []ledger.Op {
	ops := make([]ledger.Op, len(gs))
	for i := range gs {
		ops[i] = ledger.Op{Kind: ledger.OpBook, Grant: gs[i]}
	}
	return ops
}

func (w *world) check(repair bool) *consistency.Report {
	w.t.Helper()
	r, err := w.c.Day(w.ctx, w.day, repair)
	if err != nil {
		w.t.Fatalf("check: %v", err)
	}
	return r
}

func (w *world) foldAll() {
	w.t.Helper()
	if _, err := w.fold.FoldAll(w.ctx); err != nil {
		w.t.Fatal(err)
	}
}

func wantFound(t *testing.T, r *consistency.Report, kind string, n int, repaired bool) {
	t.Helper()
	if got := r.Count(kind); got != n {
		var b strings.Builder
		r.WriteText(&b)
		t.Fatalf("%s: found %d, want %d\n%s", kind, got, n, b.String())
	}
	for _, m := range r.Mismatches {
		if m.Kind == kind && m.Repaired != repaired {
			t.Fatalf("%s: repaired %v, want %v: %+v", kind, m.Repaired, repaired, m)
		}
	}
}

func wantClean(t *testing.T, r *consistency.Report) {
	t.Helper()
	if len(r.Mismatches) != 0 {
		var b strings.Builder
		r.WriteText(&b)
		t.Fatalf("a clean store found mismatches:\n%s", b.String())
	}
}

// seed books two records of grants (one journal), a consumption and a
// complete transfer, and folds the statements: a clean store.
func (w *world) seed() (u1, u2 uint64, gs []ledger.Grant) {
	w.t.Helper()
	u1, u2 = w.user(0), w.user(0)
	l := w.f.Lease(w.f.Budget, 100_000)
	gs = []ledger.Grant{w.f.Grant(u1, 1, l, 500), w.f.Grant(u2, 1, l, 300), w.f.Grant(u1, 2, l, 200)}
	o0 := w.record(0, gs[0], gs[1])
	o1 := w.record(0, gs[2])
	if o0 != 0 || o1 != 1 {
		w.t.Fatalf("offsets %d, %d", o0, o1)
	}
	w.journal(0, 0, 2, books(gs...)...)
	req := &spend.Request{Op: spend.OpTransfer, AppID: 7, ActID: u1, ToActID: u2, Asset: w.f.Asset, Amount: 50, RequestID: "t-1"}
	if res, err := w.b.Move(w.ctx, spend.Moves(req)); err != nil || res[0] != ledger.MoveApplied || res[1] != ledger.MoveApplied {
		w.t.Fatalf("transfer: %v %v", res, err)
	}
	cons := &spend.Request{Op: spend.OpConsume, AppID: 7, ActID: u2, MerchantID: "m1", Asset: w.f.Asset, Amount: 100, RequestID: "c-1"}
	if res, err := w.b.Move(w.ctx, spend.Moves(cons)); err != nil || res[0] != ledger.MoveApplied {
		w.t.Fatalf("consume: %v %v", res, err)
	}
	w.next[0] = w.headOf(0)
	w.foldAll()
	return u1, u2, gs
}

func (w *world) headOf(p int32) uint64 {
	var seqs []uint64
	err := w.db.View(func(txn storage.Txn) error {
		var err error
		seqs, err = booking.JournalSeqs(w.ctx, txn, parts)
		return err
	})
	if err != nil {
		w.t.Fatal(err)
	}
	return seqs[p]
}

// TestCleanFindsNothing: grants, a consumption, a transfer and their
// statements agree.
func TestCleanFindsNothing(t *testing.T) {
	w := newWorld(t)
	w.seed()
	r := w.check(true)
	wantClean(t, r)
	if r.Grants != 3 || r.Records != 2 || r.Transfers != 1 || r.Days != 1 || r.Postings == 0 {
		t.Fatalf("compared too little: %+v", r)
	}
}

// TestRecordNotBooked: booking passed a record without booking its grant;
// the check finds it, books it through Booker.Book, and once more finds
// nothing (statements folded again).
func TestRecordNotBooked(t *testing.T) {
	w := newWorld(t)
	u1, _, _ := w.seed()
	l := w.f.Lease(w.f.Budget, 1000)
	g := w.f.Grant(u1, 9, l, 77)
	off := w.record(0, g)
	w.journal(0, off, off+1) // passed, booked nothing
	before := w.f.Account(u1).Balance(w.f.Asset)
	r := w.check(false)
	wantFound(t, r, consistency.KindUnbooked, 1, false)
	if len(r.Mismatches) != 1 || r.Mismatches[0].Key != g.LimitKey() || r.Mismatches[0].Amount != 77 {
		t.Fatalf("listed %+v", r.Mismatches)
	}
	wantFound(t, w.check(true), consistency.KindUnbooked, 1, true)
	if got := w.f.Account(u1).Balance(w.f.Asset); got != before+77 {
		t.Fatalf("balance %d after the repair, want %d", got, before+77)
	}
	// Repaired once: again finds nothing, the repair books nothing more.
	w.foldAll()
	wantClean(t, w.check(true))
	if got := w.f.Account(u1).Balance(w.f.Asset); got != before+77 {
		t.Fatalf("balance %d after a second check, want %d", got, before+77)
	}
}

// TestJournalOpDeleted: an entry's op is lost from its journal; the
// account no longer holds the grant its record issued.
func TestJournalOpDeleted(t *testing.T) {
	w := newWorld(t)
	u1, _, gs := w.seed()
	w.put(0, &ledger.Journal{Seq: 1, BookedAt: w.at, From: 0, To: 2, Ops: books(gs[0], gs[1])})
	r := w.check(false)
	wantFound(t, r, consistency.KindUnbooked, 1, false)
	if r.Mismatches[0].ActID != u1 || r.Mismatches[0].Key != gs[2].LimitKey() {
		t.Fatalf("listed %+v", r.Mismatches)
	}
	wantFound(t, w.check(true), consistency.KindUnbooked, 1, true)
	if ok, err := w.f.Account(u1).Booked(gs[2].LimitKey()); err != nil || !ok {
		t.Fatalf("not booked after the repair: %v %v", ok, err)
	}
	w.foldAll()
	wantClean(t, w.check(true))
}

// TestUnissuedListed: a stream journal books a grant none of its records
// issued: listed, never repaired.
func TestUnissuedListed(t *testing.T) {
	w := newWorld(t)
	u1, _, _ := w.seed()
	l := w.f.Lease(w.f.Budget, 1000)
	g, other := w.f.Grant(u1, 11, l, 5), w.f.Grant(u1, 12, l, 6)
	off := w.record(0, g)
	w.journal(0, off, off+1, books(g, other)...)
	r := w.check(true)
	wantFound(t, r, consistency.KindUnissued, 1, false)
	if r.OK() {
		t.Fatal("a report with an open mismatch is OK")
	}
}

// TestStatementChanged: a day aggregate altered is found and rebuilt from
// the journals.
func TestStatementChanged(t *testing.T) {
	w := newWorld(t)
	_, u2, _ := w.seed()
	key := closing.DayKey(w.day, statement.Party{Kind: statement.PartyActivity, ID: "activity"})
	good := bookingtest.Get(t, w.db, key)
	a, err := statement.DecodeAggregate(good)
	if err != nil {
		t.Fatal(err)
	}
	a.Lines[0].Amount += 13
	bookingtest.Put(t, w.db, key, statement.AppendAggregate(nil, a))
	// A user's aggregate left by an older folder is not a statement any
	// more (users' are read from their entries): ignored, then removed
	// by the rebuild.
	legacy := closing.DayKey(w.day, statement.Party{Kind: statement.PartyUser, ID: itoa(u2)})
	bookingtest.Put(t, w.db, legacy, statement.AppendAggregate(nil, &statement.Aggregate{Lines: []statement.Line{{Section: statement.Income, Item: "grant", Asset: string(w.f.Asset), Amount: 1, Count: 1}}}))
	r := w.check(false)
	wantFound(t, r, consistency.KindStatement, 1, false)
	if r.Mismatches[0].Amount != 13 {
		t.Fatalf("listed %+v", r.Mismatches)
	}
	wantFound(t, w.check(true), consistency.KindStatement, 1, true)
	if got := bookingtest.Get(t, w.db, key); string(got) != string(good) {
		t.Fatal("the rebuilt aggregate differs from the fold's")
	}
	if got := bookingtest.Get(t, w.db, legacy); got != nil {
		t.Fatal("the rebuild kept a user's aggregate")
	}
	wantClean(t, w.check(true))
	// Aggregates of a party deleted whole are found too.
	bookingtest.Put(t, w.db, closing.DayKey(w.day, statement.Party{Kind: statement.PartyMerchant, ID: "ghost"}), statement.AppendAggregate(nil,
		&statement.Aggregate{Lines: []statement.Line{{Section: statement.Income, Item: "consume", Asset: string(w.f.Asset), Amount: 9, Count: 1}},
			Residual: []statement.AssetAmount{{Asset: string(w.f.Asset), Amount: 9}}}))
	wantFound(t, w.check(true), consistency.KindStatement, 1, true)
	wantClean(t, w.check(false))
}

// TestTransferHalfDone: the sender's move booked, the receiver's not
// (a crash between the two): found after the grace, completed with the
// spending service's own move, once.
func TestTransferHalfDone(t *testing.T) {
	w := newWorld(t)
	u1, u2, _ := w.seed()
	req := &spend.Request{Op: spend.OpGift, AppID: 7, ActID: u1, ToActID: u2, Asset: w.f.Asset, Amount: 20, RequestID: "g-1"}
	ms := spend.Moves(req)
	if res, err := w.b.Move(w.ctx, ms[:1]); err != nil || res[0] != ledger.MoveApplied {
		t.Fatalf("gift's first half: %v %v", res, err)
	}
	w.foldAll()
	before := w.f.Account(u2).Balance(w.f.Asset)
	r := w.check(false)
	wantFound(t, r, consistency.KindTransfer, 1, false)
	if m := r.Mismatches[0]; m.Key != spend.TransferAccount(u1, spend.Key(7, "g-1")) || m.Amount != 20 {
		t.Fatalf("listed %+v", m)
	}
	wantFound(t, w.check(true), consistency.KindTransfer, 1, true)
	if got := w.f.Account(u2).Balance(w.f.Asset); got != before+20 {
		t.Fatalf("receiver's balance %d, want %d", got, before+20)
	}
	// The request repeated books nothing more: the repair was its move.
	if res, err := w.b.Move(w.ctx, ms); err != nil || res[0] != ledger.MoveRepeated || res[1] != ledger.MoveRepeated {
		t.Fatalf("repeat: %v %v", res, err)
	}
	w.foldAll()
	wantClean(t, w.check(true))
}

// TestWithdrawalHeldTooLong: a withdrawal held past the bound is listed.
func TestWithdrawalHeldTooLong(t *testing.T) {
	w := newWorld(t)
	w.seed()
	old := time.Now().Add(-2 * time.Hour).UnixMilli()
	for i, held := range []int64{old, time.Now().UnixMilli()} {
		rec := withdraw.Record{ID: withdraw.ID(7, "w-"+itoa(uint64(i))), AppID: 7, ActID: 5, Amount: 100, Channel: "bank",
			State: withdraw.StateHeld, CreatedAt: held, HeldAt: held, UpdatedAt: held, Version: 2}
		raw, _ := json.Marshal(rec)
		bookingtest.Put(t, w.db, withdraw.RecordKey(rec.ID), raw)
		bookingtest.Put(t, w.db, withdraw.OpenKey(rec.ID), []byte{1})
	}
	r := w.check(true)
	wantFound(t, r, consistency.KindWithdrawal, 1, false)
	if r.Withdrawals != 2 {
		t.Fatalf("open withdrawals %d, want 2", r.Withdrawals)
	}
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }

// TestServiceContinuousAndDaily: the continuous check takes the journals
// of the partitions the node books from where it gained them and repairs
// them; the T+1 check of a day runs on one node (a lease in the store)
// and is counted.
func TestServiceContinuousAndDaily(t *testing.T) {
	w := newWorld(t)
	u1, _, _ := w.seed()
	reg := &metrics.Registry{}
	svc := consistency.NewService(consistency.ServiceConfig{Checker: w.c, Owned: func() []int32 { return []int32{0, 1} },
		Every: -1, Owner: "n1", Metrics: reg})
	if err := svc.Once(w.ctx); err != nil { // the cursors start at the heads
		t.Fatal(err)
	}
	l := w.f.Lease(w.f.Budget, 1000)
	g := w.f.Grant(u1, 21, l, 33)
	off := w.record(0, g)
	w.journal(0, off, off+1)
	if err := svc.Once(w.ctx); err != nil {
		t.Fatal(err)
	}
	st := svc.Status()
	if st.Continuous.Count(consistency.KindUnbooked) != 1 || st.Continuous.Repaired != 1 || st.Continuous.Grants != 1 {
		t.Fatalf("continuous status %+v", st.Continuous)
	}
	if ok, err := w.f.Account(u1).Booked(g.LimitKey()); err != nil || !ok {
		t.Fatalf("not booked by the continuous check: %v %v", ok, err)
	}
	// Checked once: the next run starts past it.
	if err := svc.Once(w.ctx); err != nil {
		t.Fatal(err)
	}
	if got := svc.Status().Continuous.Grants; got != 1 {
		t.Fatalf("grants checked %d after a run with nothing new, want 1", got)
	}
	w.foldAll()
	other := consistency.NewService(consistency.ServiceConfig{Checker: w.c, Owned: func() []int32 { return nil }, Every: -1, Owner: "n2"})
	svc.Daily(w.ctx, w.day)
	other.Daily(w.ctx, w.day) // done already: returns at once
	if st := svc.Status(); st.Daily == nil || st.Day != w.day.String() || len(st.Daily.Mismatches) != 0 || st.Daily.Grants == 0 {
		t.Fatalf("daily status %+v", st)
	}
	if other.Status().Daily != nil {
		t.Fatal("a second node checked a day already done")
	}
	seen := 0
	for _, smp := range reg.Samples() {
		if (smp.Name == "redrain_consistency_mismatches_total" || smp.Name == "redrain_consistency_repaired_total") &&
			len(smp.Labels) == 1 && smp.Labels[0].Value == consistency.KindUnbooked {
			seen++
			if smp.Value != 1 {
				t.Fatalf("%s = %v, want 1", smp.Name, smp.Value)
			}
		}
	}
	if seen != 2 {
		t.Fatalf("%d series of grant_unbooked, want 2", seen)
	}
}

// TestFencedAndParkedAreNotMissing: a grant refused under a fenced lease
// and a parked record's grants are in no account, and rightly so.
func TestFencedAndParkedAreNotMissing(t *testing.T) {
	w := newWorld(t)
	u1, u2, _ := w.seed()
	l := w.f.Lease(w.f.Budget, 1000)
	fenced, kept := w.f.Grant(u1, 31, l, 7), w.f.Grant(u2, 31, l, 8)
	off := w.record(0, fenced, kept)
	parked := w.record(0, w.f.Grant(u1, 32, l, 9))
	w.journal(0, off, parked+1, books(kept)...)
	bookingtest.Put(t, w.db, storage.FencedKey(0, off), ledger.AppendGrantRecord(nil, []ledger.Grant{fenced}))
	r := w.check(false)
	wantFound(t, r, consistency.KindUnbooked, 1, false) // the parked record's grant, until it is parked
	bookingtest.Put(t, w.db, storage.ParkedKey(0, parked), []byte(`{}`))
	wantClean(t, w.check(true))
}

// TestTransferWithoutSender: a receiver's move whose sender's move is not
// booked is listed, never repaired.
func TestTransferWithoutSender(t *testing.T) {
	w := newWorld(t)
	u1, u2, _ := w.seed()
	req := &spend.Request{Op: spend.OpTransfer, AppID: 7, ActID: u1, ToActID: u2, Asset: w.f.Asset, Amount: 5, RequestID: "t-x"}
	if res, err := w.b.Move(w.ctx, spend.Moves(req)[1:]); err != nil || res[0] != ledger.MoveApplied {
		t.Fatalf("receiver's half: %v %v", res, err)
	}
	r := w.check(true)
	wantFound(t, r, consistency.KindTransfer, 1, false)
	if m := r.Mismatches[0]; m.ActID != u1 || m.Amount != 5 || !strings.Contains(m.Detail, "never repaired") {
		t.Fatalf("listed %+v", m)
	}
}

// BenchmarkCheckDay measures the T+1 check's issued-vs-booked and
// transfers over a day booked by a real booker from the embedded broker
// (its checkpoints and pages as in production): records of 100 grants,
// each grant read from the topic, its account read and its limit key
// looked up; with statements, the day's journals folded again and compared
// with the stored day. grants/s is grants checked per second of the check.
func BenchmarkCheckDay(b *testing.B) {
	const (
		bparts  = 4
		records = 800
		perRec  = 100
	)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	db := storage.NewMemoryStore().Client(nil)
	k := storagetest.Kafka(b, "", bparts)
	f := bookingtest.New(b, db, bparts, 1<<40)
	prod := producer(b, k.Brokers)
	l := f.Lease(f.Budget, 1<<40)
	users := make([][]uint64, bparts)
	for len(users[bparts-1]) < 1000 || len(users[0]) < 1000 || len(users[1]) < 1000 || len(users[2]) < 1000 {
		u := f.User()
		p := storage.PartitionOf(u, bparts)
		users[p] = append(users[p], u)
	}
	for r := range records {
		p := int32(r % bparts)
		gs := make([]ledger.Grant, perRec)
		for i := range gs {
			gs[i] = f.Grant(users[p][(r*perRec+i)%len(users[p])], uint64(r*perRec+i+1), l, 10)
		}
		if _, _, err := prod.SendMessage(&sarama.ProducerMessage{Topic: storage.GrantTopic, Partition: p,
			Value: sarama.ByteEncoder(ledger.AppendGrantRecord(nil, gs))}); err != nil {
			b.Fatal(err)
		}
	}
	bk := booking.New(booking.Config{Log: slog.New(slog.DiscardHandler), TiKV: db, Brokers: k.Brokers, Partitions: bparts,
		Metrics: &metrics.Registry{}, Clock: time.Now, Owner: "bench", LagMax: -1})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = bk.Run(runCtx) }()
	for {
		booked, err := booking.Booked(ctx, db, bparts)
		if err != nil {
			b.Fatal(err)
		}
		n := int64(0)
		for _, o := range booked {
			n += o
		}
		if n == records {
			break
		}
		if ctx.Err() != nil {
			b.Fatalf("booking did not drain: %v", booked)
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	<-done
	stream, err := consistency.NewKafkaStream(k.Brokers, "")
	if err != nil {
		b.Fatal(err)
	}
	defer stream.Close()
	day := statement.DayOf(time.Now().UnixMilli())
	cfg := &statement.Config{}
	// The statements folded as if the day had ended, so that it is covered.
	fold := &closing.Folder{DB: db, Parts: bparts, Config: cfg, MaxOps: 20_000, Now: func() int64 { return (day + 1).Start() + closing.Slack }}
	if _, err := fold.FoldAll(ctx); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name       string
		statements *statement.Config
	}{{"stream", nil}, {"stream+statements", cfg}} {
		b.Run(bc.name, func(b *testing.B) {
			var spent time.Duration
			calls := 0
			c, err := consistency.New(consistency.Config{DB: db, Parts: bparts, Stream: timedStream{stream, &spent, &calls}, Statements: bc.statements})
			if err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			grants := 0
			for range b.N {
				r, err := c.Day(ctx, day, false)
				if err != nil {
					b.Fatal(err)
				}
				if len(r.Mismatches) != 0 || r.Grants != records*perRec || (bc.statements != nil && r.Postings != records*perRec) {
					b.Fatalf("checked %d grants, %d postings, found %+v", r.Grants, r.Postings, r.Mismatches)
				}
				grants += r.Grants
			}
			b.ReportMetric(float64(grants)/time.Since(start).Seconds(), "grants/s")
			b.Logf("stream %v in %d calls of %v", spent, calls, time.Since(start))
		})
	}
}

type timedStream struct {
	s     consistency.Stream
	spent *time.Duration
	calls *int
}

func (t timedStream) Records(ctx context.Context, p int32, from, to int64, fn func(int64, []byte) error) error {
	st := time.Now()
	defer func() { *t.spent += time.Since(st); *t.calls++ }()
	return t.s.Records(ctx, p, from, to, fn)
}

func (t timedStream) Release() { t.s.Release() }
