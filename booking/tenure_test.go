package booking_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"redrain/booking"
	"redrain/metrics"
)

// sessionLog records what booking told the grant path.
type sessionLog struct {
	mu     sync.Mutex
	owned  map[int32]time.Time
	lost   map[int32]bool
	tenure map[int32]*booking.Tenure
}

func newSessionLog() *sessionLog {
	return &sessionLog{owned: map[int32]time.Time{}, lost: map[int32]bool{}, tenure: map[int32]*booking.Tenure{}}
}

func (s *sessionLog) Owned(t *booking.Tenure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.owned[t.Partition], s.tenure[t.Partition] = time.Now(), t
}

func (s *sessionLog) Lost(t *booking.Tenure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t.Valid() {
		panic("Lost with a valid tenure")
	}
	s.lost[t.Partition] = true
}

func (s *sessionLog) get(p int32) (time.Time, *booking.Tenure, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.owned[p], s.tenure[p], s.lost[p]
}

// TestTenureAndRelease follows a partition through three owners: the
// first takes a partition nobody owned and is told at once; it gives it up
// cleanly (released), so the second is told at once too; the second is
// fenced by a third without releasing, and the third waits UncleanWait
// before it is told. A tenure is valid only while its owner holds it.
func TestTenureAndRelease(t *testing.T) {
	f := newFixture(t, 1, 1_000_000)
	const wait = 1500 * time.Millisecond
	run := func(name string) (*booking.Booker, *sessionLog, context.CancelFunc, chan struct{}) {
		b := booking.New(booking.Config{Log: testLog, TiKV: f.KV, Partitions: f.Parts, Metrics: &metrics.Registry{},
			Clock: time.Now, Owner: name, UncleanWait: wait})
		s := newSessionLog()
		b.Watch(s)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); b.Own(ctx, 0, make(chan *sarama.ConsumerMessage)) }()
		go b.CommitLoop(ctx)
		t.Cleanup(func() { cancel(); <-done })
		return b, s, cancel, done
	}
	told := func(s *sessionLog, within time.Duration) (time.Duration, *booking.Tenure) {
		t.Helper()
		start := time.Now()
		for time.Since(start) < within {
			if at, ten, _ := s.get(0); !at.IsZero() {
				return at.Sub(start), ten
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("not told the partition is owned within %v", within)
		return 0, nil
	}

	_, s1, stop1, done1 := run("a")
	if d, ten := told(s1, 5*time.Second); d > wait/2 || !ten.Valid() {
		t.Fatalf("first owner of a new partition told after %v (valid %v), want at once", d, ten.Valid())
	}
	stop1()
	<-done1
	if _, ten, lost := s1.get(0); !lost || ten.Valid() {
		t.Errorf("after the session ended: lost %v, tenure valid %v; want lost and invalid", lost, ten.Valid())
	}

	_, s2, _, done2 := run("b")
	d2, ten2 := told(s2, 5*time.Second)
	if d2 > wait/2 {
		t.Errorf("owner after a clean release told after %v, want at once", d2)
	}
	// A third owner fences the second, which never released.
	_, s3, _, _ := run("c")
	d3, ten3 := told(s3, 10*time.Second)
	if d3 < wait-200*time.Millisecond {
		t.Errorf("owner after an unclean takeover told after %v, want at least %v", d3, wait)
	}
	<-done2 // fenced: its goroutine gives the partition up
	if _, _, lost := s2.get(0); !lost || ten2.Valid() {
		t.Errorf("fenced owner: lost %v, tenure valid %v; want lost and invalid", lost, ten2.Valid())
	}
	if !ten3.Valid() {
		t.Error("the current owner's tenure is not valid")
	}
}
