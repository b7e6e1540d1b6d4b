package lines_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"redrain/lines"
	"redrain/storage/storagetest"
)

// fastLine is a business line that answers at once, with no limit of its
// own worth the name: what the syncer costs, not the line.
func fastLine(url string) lines.Line {
	return lines.Line{ID: "fast", PullURL: url, Rate: 1e6, Burst: 1_000_000, Concurrency: 16, WindowMs: 60_000, TimeoutMs: 5000}
}

// BenchmarkNotify measures notices a second queued by Notify (what POST
// /v1/sync/notify does after parsing): produced to the embedded broker and
// acknowledged, from 32 senders at once.
func BenchmarkNotify(b *testing.B) {
	l := newLine(b, ok)
	kf := storagetest.Kafka(b, "", 1)
	if err := kf.EnsureTopic(lines.Topic, 8); err != nil {
		b.Fatal(err)
	}
	s, err := lines.New(lines.Config{Lines: []lines.Line{fastLine(l.srv.URL)}, Brokers: kf.Brokers, TiKV: storagetest.TiKV(b, "")})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	notifyAll(b, s, b.N)
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "notices/s")
}

// notifyAll queues n notices of distinct users from 32 senders at once.
func notifyAll(b *testing.B, s *lines.Syncer, n int) {
	var wg sync.WaitGroup
	const senders = 32
	for w := range senders {
		wg.Go(func() {
			for i := w; i < n; i += senders {
				if err := s.Notify(lines.Notice{Line: "fast", App: 1, User: fmt.Sprintf("u%d", i)}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// BenchmarkPull measures pulls a second: b.N notices of distinct users are
// queued first, then a Syncer's consumer group joins and pulls every one
// from a local line that answers at once, storing each snapshot in the
// TiKV test cluster. The time is from the start of Run to the last
// snapshot stored (the group's join included).
func BenchmarkPull(b *testing.B) {
	l := newLine(b, ok)
	kf := storagetest.Kafka(b, "", 1)
	if err := kf.EnsureTopic(lines.Topic, 8); err != nil {
		b.Fatal(err)
	}
	kv := storagetest.TiKV(b, "")
	cfg := lines.Config{Lines: []lines.Line{fastLine(l.srv.URL)}, Brokers: kf.Brokers, TiKV: kv}
	producer, err := lines.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	notifyAll(b, producer, b.N)
	producer.Close()
	s, err := lines.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	go func() { defer close(done); _ = s.Run(ctx) }()
	deadline := start.Add(10 * time.Minute)
	for s.Stats("fast").Pulled < int64(b.N) {
		if st := s.Stats("fast"); st.Failed > 0 || st.Dropped > 0 || time.Now().After(deadline) {
			b.Fatalf("stats %+v, want %d pulled", st, b.N)
		}
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	cancel()
	<-done
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "pulls/s")
}
