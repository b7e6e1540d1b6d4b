package booking_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"redrain/booking"
	"redrain/booking/bookingtest"
	"redrain/ledger"
	"redrain/reconcile"
	"redrain/storage"
	"redrain/storage/storagetest"
)

// runBooker runs b.Run until the test ends or the returned stop is called.
func runBooker(t *testing.T, b *booking.Booker) (stop func()) {
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
			case <-time.After(within):
				t.Error("Run did not return after its context ended")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func saramaClient(t *testing.T, k *storage.Kafka) sarama.Client {
	t.Helper()
	c, err := sarama.NewClient(k.Brokers, storage.SaramaConfig("booking-test"))
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
		if len(gs) == 0 {
			continue
		}
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

// drained reports nil once the store holds every record of the topic
// booked.
func drained(t *testing.T, client sarama.Client, kv *storage.TiKV) error {
	lag, err := booking.LagOf(context.Background(), client, storage.GrantTopic, kv)
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
func allBooked(f *bookingtest.Fixture, grants []ledger.Grant) error {
	ids := make([]uint64, len(grants))
	for i := range grants {
		ids[i] = grants[i].ActID
	}
	accounts := f.Accounts(ids)
	for _, g := range grants {
		a := accounts[g.ActID]
		if a == nil {
			return fmt.Errorf("user %d has no account yet", g.ActID)
		}
		if _, ok := a.Entry(g.LimitKey()); !ok {
			return fmt.Errorf("%s not booked yet", g.LimitKey())
		}
	}
	return nil
}

// TestConsumeExactlyOnceAcrossRestart runs the booking group against the
// embedded broker: a first booker books everything produced and stops; a
// new booker (another owner) then finds every record again (the group's
// offsets were lost), more grants, and duplicates of the first ones. Every
// grant is booked once, the store's booked offsets reach the topic's high
// water marks, and the money audits.
func TestConsumeExactlyOnceAcrossRestart(t *testing.T) {
	const partitions = 4
	k := storagetest.Kafka(t, "", partitions)
	client := saramaClient(t, k)
	f := newFixture(t, partitions, 10_000_000)
	leases := []*ledger.Lease{f.Lease(f.Budget, 1_000_000), f.Lease(f.Budget, 1_000_000)}
	grantsOf := func(users int) []ledger.Grant {
		var gs []ledger.Grant
		for range users {
			u := f.User()
			for rain := uint64(1); rain <= 3; rain++ {
				gs = append(gs, f.Grant(u, rain, leases[u%2], amountOf(u, rain)))
			}
		}
		return gs
	}
	first := grantsOf(60)
	produce(t, k, partitions, first)

	b1 := newBooker(t, f, "node-a/1", k.Brokers)
	stop1 := runBooker(t, b1)
	eventually(t, within, "first booker drains the topic", func() error {
		if err := drained(t, client, f.KV); err != nil {
			return err
		}
		return allBooked(f, first)
	})
	stop1()
	counted(t, "first booker booked", b1.Booked.Load, int64(len(first)))
	if err := b1.Broken(); err != nil {
		t.Fatalf("Broken() = %v", err)
	}
	f.Audit(first)
	stopped := map[int32]*ledger.PartState{}
	for p := range int32(partitions) {
		stopped[p] = partState(t, f, p)
	}

	// A restart that lost the group's offsets (they commit lazily): every
	// record comes again, and only the store's booked offset stops it
	// being booked twice.
	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "delete the booking group's offsets", func() error {
		return admin.DeleteConsumerGroup(booking.Group)
	})
	// Then more grants, and the issuers send every first grant again.
	more := grantsOf(40)
	produce(t, k, partitions, append(append([]ledger.Grant{}, more...), first...))

	b2 := newBooker(t, f, "node-b/1", k.Brokers)
	runBooker(t, b2)
	eventually(t, within, "new booker drains the topic", func() error {
		if err := drained(t, client, f.KV); err != nil {
			return err
		}
		return allBooked(f, more)
	})
	counted(t, "new booker booked (the new grants only)", b2.Booked.Load, int64(len(more)))
	if err := b2.Broken(); err != nil {
		t.Fatalf("Broken() = %v", err)
	}
	hwm, err := booking.HighWaterMarks(client, storage.GrantTopic)
	if err != nil {
		t.Fatal(err)
	}
	if got := booked(t, f); !maps.Equal(got, hwm) {
		t.Fatalf("booked offsets %v, want the high water marks %v", got, hwm)
	}
	for p := range int32(partitions) {
		if s := partState(t, f, p); s.Owner != "node-b/1" || s.Epoch <= stopped[p].Epoch {
			t.Fatalf("partition %d state %+v after the new owner, want owner node-b/1 past epoch %d", p, s, stopped[p].Epoch)
		}
		// The new owner skipped the records below the booked offset it
		// found: none of its journals books one of them again.
		for _, j := range journals(t, f, p, stopped[p].NextSeq) {
			if j.From < stopped[p].Booked {
				t.Fatalf("partition %d journal %d books offsets [%d, %d), below the booked offset %d it found",
					p, j.Seq, j.From, j.To, stopped[p].Booked)
			}
		}
	}
	f.Audit(append(first, more...))
}

// sendRaw appends records as they are, one per value, to partition 0.
func sendRaw(t *testing.T, k *storage.Kafka, values ...[]byte) {
	t.Helper()
	cfg := storage.SaramaConfig("booking-test-raw")
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

// waitBroken waits until booking stops and returns why.
func waitBroken(t *testing.T, b *booking.Booker) error {
	t.Helper()
	eventually(t, within, "booking stops", func() error {
		if b.Broken() == nil {
			return errors.New("Broken() = nil")
		}
		return nil
	})
	return b.Broken()
}

// TestConsumeStopsOnUndecodableRecord: a record that cannot be decoded
// stops its partition; the records before it are booked, the ones after it
// are not, and the store's booked offset stops at it. Parked by an
// operator (a decodable record is refused), it is skipped within a tick:
// the records after it are booked, the booker is whole again, and the
// parked record keeps its bytes, who parked it and why.
func TestConsumeStopsOnUndecodableRecord(t *testing.T) {
	k := storagetest.Kafka(t, "", 1)
	f := newFixture(t, 1, 1_000_000)
	l := f.Lease(f.Budget, 100_000)
	before := []ledger.Grant{f.Grant(f.User(), 1, l, 11), f.Grant(f.User(), 1, l, 12)}
	after := []ledger.Grant{f.Grant(f.User(), 1, l, 13)}
	bad := ledger.AppendGrantRecord(nil, after)
	bad = bad[:len(bad)-1] // truncated
	if _, err := ledger.DecodeGrantRecord(nil, bad); err == nil {
		t.Fatal("the truncated record decodes")
	}
	// One produce request: the booker most likely fetches all three at once.
	sendRaw(t, k, ledger.AppendGrantRecord(nil, before), bad, ledger.AppendGrantRecord(nil, after))

	b := newBooker(t, f, "a", k.Brokers)
	runBooker(t, b)
	if err := waitBroken(t, b); !errors.Is(err, ledger.ErrCorrupt) {
		t.Fatalf("Broken() = %v, want ErrCorrupt", err)
	}
	eventually(t, within, "records before the broken one booked", func() error { return allBooked(f, before) })
	if a := f.Account(after[0].ActID); a != nil {
		t.Fatalf("a grant after the broken record was booked: %+v", a)
	}
	if got := booked(t, f)[0]; got != 1 {
		t.Fatalf("booked offset %d, want 1 (the broken record at 1 is not)", got)
	}
	f.Audit(before)

	ctx := context.Background()
	good := booking.Parked{Partition: 0, Offset: 0, By: "ops", Value: ledger.AppendGrantRecord(nil, before)}
	if _, err := booking.Park(ctx, f.KV, good); !errors.Is(err, booking.ErrNotPoisoned) {
		t.Fatalf("Park of a decodable record = %v, want ErrNotPoisoned", err)
	}
	park := booking.Parked{Partition: 0, Offset: 1, By: "ops", At: 1_800_000_000_000, Reason: "truncated by a test", Value: bad}
	if created, err := booking.Park(ctx, f.KV, park); err != nil || !created {
		t.Fatalf("Park = %v, %v", created, err)
	}
	if created, err := booking.Park(ctx, f.KV, park); err != nil || created {
		t.Fatalf("Park again = %v, %v; want kept, not created", created, err)
	}
	eventually(t, within, "the record after the parked one booked", func() error {
		if got := booked(t, f)[0]; got != 3 {
			return fmt.Errorf("booked offset %d, want 3", got)
		}
		return allBooked(f, after)
	})
	if err := b.Broken(); err != nil {
		t.Fatalf("Broken() after parking = %v, want nil", err)
	}
	list, err := booking.ParkedRecords(ctx, f.KV)
	if err != nil || len(list) != 1 || list[0].Offset != 1 || list[0].By != "ops" || list[0].Reason != park.Reason ||
		!bytes.Equal(list[0].Value, bad) || list[0].Error == "" {
		t.Fatalf("ParkedRecords = %+v, %v", list, err)
	}
	if r, err := reconcile.Run(ctx, f.KV); err != nil || len(r.Parked) != 1 || r.Parked[0].Offset != 1 || r.Parked[0].Reason != park.Reason {
		t.Fatalf("the audit's parked records = %+v, %v", r, err)
	}
	f.Audit(append(slices.Clone(before), after...))
}

// TestConsumeHoldsARecordThatBreaksAMoneyCheck: a decodable record whose
// booking would break a money invariant (a balance overflow) holds its
// partition like an undecodable one: the records before it are booked,
// nothing of it is, and once an operator parks it (which a decodable
// record allows only while its partition waits at it) the records after
// it are booked. The audit lists it with its amount.
func TestConsumeHoldsARecordThatBreaksAMoneyCheck(t *testing.T) {
	k := storagetest.Kafka(t, "", 1)
	f := newFixture(t, 1, 1_000_000)
	l := f.Lease(f.Budget, 100_000)
	u := f.User()
	first := f.Grant(u, 1, l, 10)
	before := f.Grant(f.User(), 1, l, 7)
	huge := f.Grant(u, 2, l, math.MaxInt64)
	later := f.Grant(f.User(), 1, l, 5)
	b := newBooker(t, f, "a", k.Brokers)
	wantOutcomes(t, book(t, b, []ledger.Grant{first}), booking.BookedNow)
	hugeRec := ledger.AppendGrantRecord(nil, []ledger.Grant{huge})
	// One produce request: the booker most likely takes all three as one
	// unit, and books the one before the bad record on its own.
	sendRaw(t, k, ledger.AppendGrantRecord(nil, []ledger.Grant{before}), hugeRec, ledger.AppendGrantRecord(nil, []ledger.Grant{later}))

	ctx := context.Background()
	early := booking.Parked{Partition: 0, Offset: 1, By: "ops", Reason: "too early", Value: hugeRec}
	if _, err := booking.Park(ctx, f.KV, early); !errors.Is(err, booking.ErrNotPoisoned) {
		t.Fatalf("Park of a decodable record booking does not wait at = %v, want ErrNotPoisoned", err)
	}
	runBooker(t, b)
	if err := waitBroken(t, b); !errors.Is(err, ledger.ErrOverflow) || !strings.Contains(err.Error(), "offset 1") {
		t.Fatalf("Broken() = %v, want ErrOverflow at offset 1", err)
	}
	eventually(t, within, "the record before the bad one booked", func() error { return allBooked(f, []ledger.Grant{first, before}) })
	if a := f.Account(later.ActID); a != nil {
		t.Fatalf("a grant after the bad record was booked: %+v", a)
	}
	if got := booked(t, f)[0]; got != 1 {
		t.Fatalf("booked offset %d, want 1 (the bad record at 1 is not)", got)
	}
	f.Audit([]ledger.Grant{first, before})

	park := booking.Parked{Partition: 0, Offset: 1, By: "ops", At: 1_800_000_000_000, Reason: "overflows an account", Value: hugeRec}
	var created bool
	eventually(t, within, "the record parked", func() error {
		var err error
		created, err = booking.Park(ctx, f.KV, park) // once the owner recorded that it waits at it
		return err
	})
	if !created {
		t.Fatal("Park did not create the park record")
	}
	eventually(t, within, "the record after the parked one booked", func() error {
		if got := booked(t, f)[0]; got != 3 {
			return fmt.Errorf("booked offset %d, want 3", got)
		}
		return allBooked(f, []ledger.Grant{later})
	})
	if err := b.Broken(); err != nil {
		t.Fatalf("Broken() after parking = %v, want nil", err)
	}
	if a := f.Account(u); a == nil || a.Balance(huge.Asset) != first.Amount {
		t.Fatalf("the parked grant reached its account: %+v", a)
	}
	list, err := booking.ParkedRecords(ctx, f.KV)
	if err != nil || len(list) != 1 || list[0].Offset != 1 || list[0].Grants != 1 || list[0].Amount != math.MaxInt64 ||
		!strings.Contains(list[0].Error, "overflow") {
		t.Fatalf("ParkedRecords = %+v, %v", list, err)
	}
	if r, err := reconcile.Run(ctx, f.KV); err != nil || len(r.Parked) != 1 || r.Parked[0].Amount != math.MaxInt64 {
		t.Fatalf("the audit's parked records = %+v, %v", r, err)
	}
	f.Audit([]ledger.Grant{first, before, later})
}

// TestRebalanceBetweenBookers: two nodes' bookers in the booking group
// while grants keep coming: a second booker joins (partitions move to it,
// taken over from the first) and the first one leaves (the second takes
// its partitions over). Every grant is booked once, and the two bookers'
// counts add up to the grants.
func TestRebalanceBetweenBookers(t *testing.T) {
	const partitions = 4
	k := storagetest.Kafka(t, "", partitions)
	client := saramaClient(t, k)
	f := newFixture(t, partitions, 100_000_000)
	l := f.Lease(f.Budget, 10_000_000)
	var all []ledger.Grant
	step := func(what string, users int, rain uint64) {
		t.Helper()
		gs := freshGrants(f, users, rain, l)
		produce(t, k, partitions, gs)
		all = append(all, gs...)
		eventually(t, 2*within, what, func() error {
			if err := drained(t, client, f.KV); err != nil {
				return err
			}
			return allBooked(f, all)
		})
	}
	b1 := newBooker(t, f, "node-a/1", k.Brokers)
	if b1.Joined() {
		t.Fatal("a booker that never ran says it joined the group")
	}
	stop1 := runBooker(t, b1)
	step("the first booker books", 40, 1)
	if !b1.Joined() {
		t.Fatal("a booker that booked says it has not joined the group")
	}

	b2 := newBooker(t, f, "node-b/1", k.Brokers)
	runBooker(t, b2)
	eventually(t, 2*within, "the second booker gets partitions", func() error {
		if len(b2.Claims()) == 0 || !b2.Joined() {
			return fmt.Errorf("b2 claims %v, joined %v", b2.Claims(), b2.Joined())
		}
		return nil
	})
	step("both book", 40, 2)
	stop1()
	step("the second booker books everything", 40, 3)
	if len(b2.Claims()) != partitions {
		t.Fatalf("b2 claims %v after b1 left", b2.Claims())
	}
	for _, b := range []*booking.Booker{b1, b2} {
		if err := b.Broken(); err != nil {
			t.Fatalf("Broken() = %v", err)
		}
	}
	counted(t, "bookers booked", func() int64 { return b1.Booked.Load() + b2.Booked.Load() }, int64(len(all)))
	f.Audit(all)
}

// TestTopicOffsetsOneRequestPerBroker: the offsets asked of each broker in
// one request (the lag's newest and oldest) are those sarama's GetOffset
// gives one partition at a time, with records deleted below a
// partition's start.
func TestTopicOffsetsOneRequestPerBroker(t *testing.T) {
	const partitions = 4
	k := storagetest.Kafka(t, "", partitions)
	client := saramaClient(t, k)
	f := newFixture(t, partitions, 10_000_000)
	l := f.Lease(f.Budget, 1_000_000)
	gs := freshGrants(f, 40, 1, l)
	produce(t, k, partitions, gs)
	produce(t, k, partitions, gs[:10]) // more records in some partitions
	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.DeleteRecords(storage.GrantTopic, map[int32]int64{1: 1}); err != nil {
		t.Fatalf("DeleteRecords: %v", err)
	}
	parts := []int32{0, 1, 2, 3}
	for _, at := range []int64{sarama.OffsetNewest, sarama.OffsetOldest} {
		got, err := booking.TopicOffsets(client, storage.GrantTopic, parts, at)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range parts {
			want, err := client.GetOffset(storage.GrantTopic, p, at)
			if err != nil {
				t.Fatal(err)
			}
			if got[p] != want {
				t.Errorf("offset %d of partition %d = %d, GetOffset says %d", at, p, got[p], want)
			}
		}
		if at == sarama.OffsetOldest && got[1] != 1 {
			t.Errorf("oldest offset of partition 1 = %d after deleting below 1", got[1])
		}
		if at == sarama.OffsetNewest && got[0]+got[1]+got[2]+got[3] < 5 {
			t.Errorf("newest offsets %v: too few records", got)
		}
	}
	if _, err := booking.TopicOffsets(client, "no-such-topic", []int32{0}, sarama.OffsetNewest); !errors.Is(err, storage.ErrUnavailable) {
		t.Errorf("offsets of a missing topic: %v, want ErrUnavailable", err)
	}
}
