package consistency_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"redrain/booking"
	"redrain/booking/bookingtest"
	"redrain/closing"
	"redrain/consistency"
	"redrain/ledger"
	"redrain/metrics"
	"redrain/statement"
	"redrain/storage"
	"redrain/storage/storagetest"
)

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
