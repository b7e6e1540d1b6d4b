package actors_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"redrain/actors"
	"redrain/ledger"
	"redrain/storage"
	"redrain/storage/storagetest"
)

// drainWithin bounds how long booking may take to catch up with the topic
// (a consumer group join on the embedded broker included).
const drainWithin = 45 * time.Second

// runBooker runs b.Run until the test ends or the returned stop is called.
func runBooker(t *testing.T, b *actors.Booker) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Error("Run did not return after its context ended")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func saramaClient(t *testing.T, k *storage.Kafka) sarama.Client {
	t.Helper()
	c, err := sarama.NewClient(k.Brokers, storage.SaramaConfig("actors-test"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// produce writes grants through the grant path's writer, a record per
// shard, the shards at once.
func produce(t *testing.T, k *storage.Kafka, partitions int32, grants []ledger.Grant) {
	t.Helper()
	w, err := storage.NewGrantWriter(k.Brokers, partitions)
	if err != nil {
		t.Fatal(err)
	}
	byShard := make([][]ledger.Grant, partitions)
	for _, g := range grants {
		p := w.Partition(g.ActID)
		byShard[p] = append(byShard[p], g)
	}
	errs := make(chan error, partitions)
	var wg sync.WaitGroup
	for p, gs := range byShard {
		wg.Go(func() {
			_, err := w.Append(int32(p), gs)
			errs <- err
		})
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("GrantWriter.Append: %v", err)
		}
	}
}

// drained reports nil once the booking group has committed every record.
func drained(client sarama.Client) error {
	lag, err := actors.LagOf(client)
	if err != nil {
		return err
	}
	for p, n := range lag {
		if n != 0 {
			return fmt.Errorf("partition %d lags %d records (lag %v)", p, n, lag)
		}
	}
	return nil
}

// allBooked reports nil once every grant's limit key is in its account.
func allBooked(t *testing.T, grants []ledger.Grant) error {
	for _, g := range grants {
		a := account(t, g.ActID)
		if a == nil {
			return fmt.Errorf("user %d has no account yet", g.ActID)
		}
		if _, ok := a.Entry(g.LimitKey()); !ok {
			return fmt.Errorf("%s not booked yet", g.LimitKey())
		}
	}
	return nil
}

// TestConsumeExactlyOnce runs the booking group against the embedded broker:
// everything produced is booked once, through a restart that redelivers
// every record and through duplicate events.
func TestConsumeExactlyOnce(t *testing.T) {
	const partitions = 4
	k := storagetest.Kafka(t, "", partitions)
	client := saramaClient(t, k)
	f := newFixture(t, 10_000_000)
	leases := []*ledger.Lease{f.lease(f.budget, 1_000_000), f.lease(f.budget, 1_000_000)}
	var grants []ledger.Grant
	for range 60 {
		u := f.user()
		for rain := uint64(1); rain <= 3; rain++ {
			grants = append(grants, f.grant(u, rain, leases[u%2], amountOf(u, rain)))
		}
	}
	produce(t, k, partitions, grants)

	b1, rc := newBooker(t, k.Brokers, partitions)
	stop1 := runBooker(t, b1)
	eventually(t, drainWithin, "first booker drains the topic", func() error {
		if err := drained(client); err != nil {
			return err
		}
		return allBooked(t, grants)
	})
	if got := b1.Booked.Load(); got != int64(len(grants)) {
		t.Fatalf("first booker booked %d, want %d", got, len(grants))
	}
	f.audit(grants)
	accounts := rawAccounts(t, f.users)
	hot := hotDetails(t, f.budget)
	stop1()
	if err := b1.Broken(); err != nil {
		t.Fatalf("Broken() = %v", err)
	}

	// A restart that lost its commits (a crash after booking, before the
	// offsets were committed): every record comes again.
	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "delete the booking group's offsets", func() error {
		return admin.DeleteConsumerGroup(actors.BookingGroup)
	})
	if err := drained(client); err == nil {
		t.Fatal("lag is 0 after the group's offsets were deleted")
	}
	b2 := newBookerWith(t, rc, k.Brokers, partitions)
	runBooker(t, b2)
	eventually(t, drainWithin, "restarted booker drains the topic again", func() error { return drained(client) })

	// And the issuers send every grant a second time.
	produce(t, k, partitions, grants)
	eventually(t, drainWithin, "restarted booker drains the duplicates", func() error { return drained(client) })

	if got := b2.Booked.Load(); got != 0 {
		t.Fatalf("restarted booker booked %d grants again, want 0", got)
	}
	if b2.Batches.Load() == 0 {
		t.Fatal("restarted booker committed no batch: the redelivery was not exercised")
	}
	if after := rawAccounts(t, f.users); !maps.Equal(after, accounts) {
		t.Fatal("redelivered and duplicate records changed account records")
	}
	if got := hotDetails(t, f.budget); got != hot {
		t.Fatalf("hot details %d after redelivery, want %d", got, hot)
	}
	f.audit(grants)
}

// sendRaw appends records as they are, one per value, to partition 0.
func sendRaw(t *testing.T, k *storage.Kafka, values ...[]byte) {
	t.Helper()
	cfg := storage.SaramaConfig("actors-test-raw")
	cfg.Producer.Return.Successes = true
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	p, err := sarama.NewSyncProducer(k.Brokers, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	msgs := make([]*sarama.ProducerMessage, len(values))
	for i, v := range values {
		msgs[i] = &sarama.ProducerMessage{Topic: storage.GrantTopic, Partition: 0, Value: sarama.ByteEncoder(v)}
	}
	if err := p.SendMessages(msgs); err != nil {
		t.Fatal(err)
	}
}

// TestConsumeStopsOnUndecodableRecord: a record that cannot be decoded
// stops its partition; the records before it are booked, the ones after it
// are not, and its offset is not committed.
func TestConsumeStopsOnUndecodableRecord(t *testing.T) {
	k := storagetest.Kafka(t, "", 1)
	client := saramaClient(t, k)
	f := newFixture(t, 1_000_000)
	l := f.lease(f.budget, 100_000)
	before := []ledger.Grant{f.grant(f.user(), 1, l, 11), f.grant(f.user(), 1, l, 12)}
	after := []ledger.Grant{f.grant(f.user(), 1, l, 13)}
	bad := ledger.AppendGrantRecord(nil, after)
	bad = bad[:len(bad)-1] // truncated
	if _, err := ledger.DecodeGrantRecord(nil, bad); err == nil {
		t.Fatal("the truncated record decodes")
	}
	// One produce request: the booker most likely fetches all three at once.
	sendRaw(t, k, ledger.AppendGrantRecord(nil, before), bad, ledger.AppendGrantRecord(nil, after))

	b, _ := newBooker(t, k.Brokers, 1)
	runBooker(t, b)
	eventually(t, drainWithin, "booking stops", func() error {
		if b.Broken() == nil {
			return errors.New("Broken() = nil")
		}
		return nil
	})
	if err := b.Broken(); !errors.Is(err, ledger.ErrCorrupt) {
		t.Fatalf("Broken() = %v, want ErrCorrupt", err)
	}
	if err := allBooked(t, before); err != nil {
		t.Fatalf("records before the broken one: %v", err)
	}
	if a := account(t, after[0].ActID); a != nil {
		t.Fatalf("a grant after the broken record was booked: %+v", a)
	}
	committed, err := actors.Committed(client)
	if err != nil {
		t.Fatal(err)
	}
	if committed[0] != 1 {
		t.Fatalf("committed offset %d, want 1 (the broken record at 1 is not)", committed[0])
	}
	f.audit(before)
}

// TestConsumeStopsOnMoneyInvariant: a decodable record whose booking would
// break a money invariant (a balance overflow) stops its partition instead
// of being retried forever.
func TestConsumeStopsOnMoneyInvariant(t *testing.T) {
	k := storagetest.Kafka(t, "", 1)
	f := newFixture(t, 1_000_000)
	l := f.lease(f.budget, 100_000)
	u := f.user()
	first := f.grant(u, 1, l, 10)
	huge := f.grant(u, 2, l, math.MaxInt64)
	later := f.grant(f.user(), 1, l, 5)
	b, _ := newBooker(t, k.Brokers, 1)
	wantOutcomes(t, book(t, b, []ledger.Grant{first}), actors.BookedNow)
	sendRaw(t, k, ledger.AppendGrantRecord(nil, []ledger.Grant{huge}), ledger.AppendGrantRecord(nil, []ledger.Grant{later}))

	runBooker(t, b)
	eventually(t, drainWithin, "booking stops", func() error {
		if b.Broken() == nil {
			return errors.New("Broken() = nil")
		}
		return nil
	})
	if err := b.Broken(); !errors.Is(err, ledger.ErrOverflow) {
		t.Fatalf("Broken() = %v, want ErrOverflow", err)
	}
	if a := account(t, later.ActID); a != nil {
		t.Fatalf("a grant after the broken record was booked: %+v", a)
	}
	f.audit([]ledger.Grant{first})
}
