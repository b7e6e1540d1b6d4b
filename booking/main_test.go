package booking_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"redrain/booking"
	"redrain/booking/bookingtest"
	"redrain/ledger"
	"redrain/metrics"
	"redrain/storage"
	"redrain/storage/storagetest"
)

var testLog = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

// Each test has its own store: a partition's state (its epoch, journal and
// booked offset) is per store, and an offset booked by one test's broker
// means nothing on another's.
func newFixture(t testing.TB, parts int32, total int64) *bookingtest.Fixture {
	t.Helper()
	return bookingtest.New(t, storagetest.TiKV(t, ""), parts, total)
}

// newBooker builds a booker of the fixture's store; it books straight into
// the store until it owns partitions.
func newBooker(t testing.TB, f *bookingtest.Fixture, name string, brokers []string) *booking.Booker {
	t.Helper()
	return booking.New(booking.Config{Log: testLog, TiKV: f.KV,
		Brokers: brokers, Partitions: f.Parts, Metrics: &metrics.Registry{}, Clock: time.Now, Owner: name})
}

var (
	book         = bookingtest.Book
	wantOutcomes = bookingtest.WantOutcomes
	amountOf     = bookingtest.AmountOf
	eventually   = bookingtest.Eventually
)

// within bounds every wait for booking to reach a state.
const within = 45 * time.Second

// owner drives a booker's partitions by hand: it feeds each partition's
// goroutine grant records at consecutive offsets, as a consumer group
// claim would.
type owner struct {
	t      testing.TB
	f      *bookingtest.Fixture
	b      *booking.Booker
	ctx    context.Context
	cancel context.CancelFunc
	msgs   map[int32]chan *sarama.ConsumerMessage
	next   map[int32]int64 // next offset to feed, per partition
	wg     sync.WaitGroup
	commit sync.Once
}

// startOwner makes b own the given partitions. Its committer runs at once
// unless paused; then startCommits starts it.
func startOwner(t testing.TB, f *bookingtest.Fixture, b *booking.Booker, paused bool, parts ...int32) *owner {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	o := &owner{t: t, f: f, b: b, ctx: ctx, cancel: cancel, msgs: map[int32]chan *sarama.ConsumerMessage{}, next: map[int32]int64{}}
	t.Cleanup(o.stop)
	booked := booked(t, f)
	for _, p := range parts {
		msgs := make(chan *sarama.ConsumerMessage)
		o.msgs[p], o.next[p] = msgs, booked[p]
		o.wg.Go(func() { b.Own(ctx, p, msgs) })
	}
	if !paused {
		o.startCommits()
	}
	eventually(t, within, "partitions taken over", func() error {
		if got := b.Claims(); !slices.Equal(got, slices.Sorted(slices.Values(parts))) {
			return fmt.Errorf("claims %v, want %v", got, parts)
		}
		return nil
	})
	return o
}

func (o *owner) startCommits() {
	o.commit.Do(func() { o.wg.Go(func() { o.b.CommitLoop(o.ctx) }) })
}

// stop ends the booker's ownership and waits for its goroutines.
func (o *owner) stop() {
	o.cancel()
	o.wg.Wait()
}

// push hands part's goroutine one record; it returns the record's offset.
func (o *owner) push(part int32, value []byte) int64 {
	o.t.Helper()
	off := o.next[part]
	m := &sarama.ConsumerMessage{Topic: storage.GrantTopic, Partition: part, Offset: off, Value: value}
	select {
	case o.msgs[part] <- m:
	case <-time.After(within):
		o.t.Fatalf("partition %d did not take offset %d within %v", part, off, within)
	}
	o.next[part]++
	return off
}

// feedRaw pushes one record and waits until part's goroutine has handled
// it.
func (o *owner) feedRaw(part int32, value []byte) int64 {
	o.t.Helper()
	off := o.push(part, value)
	o.sync(part)
	return off
}

// feed hands part's goroutine one record of grants.
func (o *owner) feed(part int32, grants []ledger.Grant) int64 {
	o.t.Helper()
	return o.feedRaw(part, ledger.AppendGrantRecord(nil, grants))
}

// sync waits until part's goroutine handled what it was given.
func (o *owner) sync(part int32) {
	o.t.Helper()
	ctx, cancel := context.WithTimeout(o.ctx, within)
	defer cancel()
	if !o.b.Sync(ctx, part) {
		o.t.Fatalf("partition %d is not owned, or did not answer within %v", part, within)
	}
}

// waitBooked waits until the store holds every fed record of each
// partition booked, and the owner (while it owns the partition) has
// settled those commits: the store commits before the committer tells
// the partition's goroutine, so a read of the owner in between still
// answers the accounts before them.
func (o *owner) waitBooked() {
	o.t.Helper()
	eventually(o.t, within, "fed records booked", func() error {
		got := booked(o.t, o.f)
		for p, n := range o.next {
			if got[p] != n {
				return fmt.Errorf("partition %d booked up to %d, fed %d", p, got[p], n)
			}
		}
		return nil
	})
	eventually(o.t, within, "the owner settled its commits", func() error {
		for p := range o.next {
			if owned, settled := o.b.Settled(o.ctx, p, partState(o.t, o.f, p)); owned && !settled {
				return fmt.Errorf("partition %d: the owner is behind the store", p)
			}
		}
		return nil
	})
}

// booked returns the store's booked offset per partition.
func booked(t testing.TB, f *bookingtest.Fixture) map[int32]int64 {
	t.Helper()
	m, err := booking.Booked(context.Background(), f.KV, f.Parts)
	if err != nil {
		t.Fatalf("Booked: %v", err)
	}
	return m
}

// partState reads a partition's state.
func partState(t testing.TB, f *bookingtest.Fixture, part int32) *ledger.PartState {
	t.Helper()
	raw := bookingtest.Get(t, f.KV, storage.PartKey(part))
	if raw == nil {
		return &ledger.PartState{NextSeq: 1}
	}
	s, err := ledger.DecodePartState(raw)
	if err != nil {
		t.Fatalf("partition %d state: %v", part, err)
	}
	return s
}

// ledgerState is what booking changes when it books: the journals, the
// hot details of the fixture's budget and the fixture's accounts (encoded),
// but not pages or checkpoint marks, which an owner may write at any time.
func ledgerState(t testing.TB, f *bookingtest.Fixture) map[string]string {
	t.Helper()
	out := bookingtest.Snapshot(t, f.KV, "rr/jrnl/")
	for k, v := range bookingtest.Snapshot(t, f.KV, string(storage.HotPrefix(f.Budget))) {
		out[k] = v
	}
	for id, a := range f.Accounts(f.Users) {
		out[fmt.Sprintf("account %d", id)] = string(ledger.MarshalAccount(nil, a))
	}
	return out
}

// userIn allocates users until one belongs to partition part.
func userIn(f *bookingtest.Fixture, part int32) uint64 {
	for {
		if u := f.User(); storage.PartitionOf(u, f.Parts) == part {
			return u
		}
	}
}

// journals decodes a partition's journals from seq from on.
func journals(t testing.TB, f *bookingtest.Fixture, part int32, from uint64) []*ledger.Journal {
	t.Helper()
	var out []*ledger.Journal
	start, end := storage.JournalKey(part, from), storage.PrefixEnd(storage.JournalPrefix(part))
	err := f.KV.Scan(context.Background(), start, end, func(_, raw []byte) (bool, error) {
		j, err := ledger.DecodeJournal(raw)
		out = append(out, j)
		return err == nil, err
	})
	if err != nil {
		t.Fatalf("partition %d journals: %v", part, err)
	}
	return out
}

// counted waits until count() reaches want: a booker counts what it booked
// just after the commit that the store already shows.
func counted(t testing.TB, what string, count func() int64, want int64) {
	t.Helper()
	eventually(t, within, what, func() error {
		if got := count(); got != want {
			return fmt.Errorf("%s: %d, want %d", what, got, want)
		}
		return nil
	})
}
