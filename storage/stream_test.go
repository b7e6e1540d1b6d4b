package storage_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"redrain/ledger"
	"redrain/storage"
	"redrain/storage/storagetest"
	"redrain/tokens"
)

// testGrant is a grant with every field set, distinct per act_id.
func testGrant(actID uint64) ledger.Grant {
	return ledger.Grant{
		AppID:      uint32(actID%7 + 1),
		ActID:      actID,
		UserID:     fmt.Sprintf("user/%d", actID),
		ActivityID: "demo",
		SceneID:    "rain",
		RainID:     actID%3 + 1,
		Stage:      tokens.Stage(actID % 3),
		AwardType:  "cash",
		Asset:      "CNY",
		Amount:     int64(actID%200 + 1),
		BudgetID:   "demo.cash",
		LeaseID:    actID%5 + 1,
		OpenTime:   1_800_000_000_000,
		IssuedAt:   1_800_000_000_000 + int64(actID),
	}
}

// checkExactlyOnce checks that the records hold every grant of want exactly
// once, unchanged, each in the partition PartitionOf names.
func checkExactlyOnce(t *testing.T, records []storagetest.GrantRecord, want map[uint64]ledger.Grant, partitions int32) {
	t.Helper()
	seen := make(map[uint64]int, len(want))
	for _, r := range records {
		for _, g := range r.Grants {
			seen[g.ActID]++
			w, ok := want[g.ActID]
			if !ok {
				t.Errorf("partition %d offset %d: grant of act_id %d was never written", r.Partition, r.Offset, g.ActID)
				continue
			}
			if g != w {
				t.Errorf("grant of act_id %d read back as %+v, want %+v", g.ActID, g, w)
			}
			if p := storage.PartitionOf(g.ActID, partitions); r.Partition != p {
				t.Errorf("grant of act_id %d in partition %d, want PartitionOf = %d", g.ActID, r.Partition, p)
			}
		}
	}
	for id := range want {
		if seen[id] != 1 {
			t.Errorf("grant of act_id %d appears %d times, want once", id, seen[id])
		}
	}
}

func TestGrantWriterConcurrent(t *testing.T) {
	const partitions = 8
	const writers, perWriter = 64, 60
	k := storagetest.Kafka(t, "", partitions)
	w, err := storage.NewGrantWriter(k.Brokers, partitions)
	if err != nil {
		t.Fatal(err)
	}
	want := make(map[uint64]ledger.Grant, writers*perWriter)
	for id := uint64(1); id <= writers*perWriter; id++ {
		want[id] = testGrant(id)
	}
	var wg sync.WaitGroup
	for wr := range writers {
		wg.Go(func() {
			for i := range perWriter {
				// Dense act_ids, interleaved over the writers.
				g := testGrant(uint64(i*writers + wr + 1))
				if err := appendOne(w, g); err != nil {
					t.Errorf("Write(act_id %d) = %v", g.ActID, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	g := testGrant(1)
	if err := appendOne(w, g); !errors.Is(err, storage.ErrStreamClosed) {
		t.Errorf("Append after Close = %v, want ErrStreamClosed", err)
	}
	if t.Failed() {
		return
	}

	records := storagetest.ReadGrantTopic(t, k.Brokers, partitions)
	checkExactlyOnce(t, records, want, partitions)
	t.Run("kcat", func(t *testing.T) { checkWithKcat(t, k.Brokers[0], partitions, records) })
}

// checkWithKcat reads the topic with librdkafka's kcat, a client that
// shares no code with sarama or the broker.
func checkWithKcat(t *testing.T, broker string, partitions int32, records []storagetest.GrantRecord) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Skip("kcat not on PATH (make test installs it)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, kcat, "-b", broker, "-L", "-t", storage.GrantTopic)
	cmd.Stderr = &stderr
	meta, err := cmd.Output()
	if err != nil {
		t.Fatalf("kcat -L: %v\n%s", err, stderr.String())
	}
	m := regexp.MustCompile(`topic "` + regexp.QuoteMeta(storage.GrantTopic) + `" with (\d+) partitions`).FindSubmatch(meta)
	if m == nil {
		t.Fatalf("kcat -L does not list topic %s:\n%s", storage.GrantTopic, meta)
	}
	if n, _ := strconv.Atoi(string(m[1])); n != int(partitions) {
		t.Errorf("kcat -L: topic %s with %d partitions, want %d", storage.GrantTopic, n, partitions)
	}
	if n := len(regexp.MustCompile(`(?m)^\s+partition \d+, leader`).FindAll(meta, -1)); n != int(partitions) {
		t.Errorf("kcat -L lists %d partitions, want %d:\n%s", n, partitions, meta)
	}

	stderr.Reset()
	cmd = exec.CommandContext(ctx, kcat, "-b", broker, "-C", "-t", storage.GrantTopic, "-e", "-q", "-f", `%p %o %k\n`)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kcat -C: %v\n%s", err, stderr.String())
	}
	type at struct {
		p int32
		o int64
	}
	seen := make(map[at]int)
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 {
			t.Fatalf("kcat -C line %q, want \"partition offset key\"", sc.Text())
		}
		if f[2] != f[0] {
			t.Errorf("kcat -C line %q: key %s, want the shard %s", sc.Text(), f[2], f[0])
		}
		p, err1 := strconv.ParseInt(f[0], 10, 32)
		o, err2 := strconv.ParseInt(f[1], 10, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("kcat -C line %q", sc.Text())
		}
		seen[at{int32(p), o}]++
	}
	if len(seen) != len(records) {
		t.Errorf("kcat -C read %d distinct records, sarama %d", len(seen), len(records))
	}
	for _, r := range records {
		if seen[at{r.Partition, r.Offset}] != 1 {
			t.Errorf("kcat -C saw partition %d offset %d %d times, want once", r.Partition, r.Offset, seen[at{r.Partition, r.Offset}])
		}
	}
}

// TestKafkaEmbeddedPersists restarts the embedded broker on the same data
// dir: the topic and every acknowledged record are still there, and opening
// it again (the topic exists) is not an error.
func TestKafkaEmbeddedPersists(t *testing.T) {
	const partitions = 4
	dir := t.TempDir()
	k := storagetest.Kafka(t, dir, partitions)
	w, err := storage.NewGrantWriter(k.Brokers, partitions)
	if err != nil {
		t.Fatal(err)
	}
	want := make(map[uint64]ledger.Grant)
	var wg sync.WaitGroup
	for wr := range 8 {
		wg.Go(func() {
			for i := range 25 {
				g := testGrant(uint64(1000 + i*8 + wr))
				if err := appendOne(w, g); err != nil {
					t.Errorf("Write(act_id %d) = %v", g.ActID, err)
				}
			}
		})
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	for id := uint64(1000); id < 1000+8*25; id++ {
		want[id] = testGrant(id)
	}
	before := storagetest.ReadGrantTopic(t, k.Brokers, partitions)
	checkExactlyOnce(t, before, want, partitions)
	k.Close()

	k2, err := storage.OpenKafka(nil, dir, partitions)
	if err != nil {
		t.Fatalf("OpenKafka on the existing dir: %v", err)
	}
	defer k2.Close()
	if !k2.Embedded() {
		t.Error("OpenKafka(nil, dir).Embedded() = false")
	}
	after := storagetest.ReadGrantTopic(t, k2.Brokers, partitions)
	checkExactlyOnce(t, after, want, partitions)
	if len(after) != len(before) {
		t.Errorf("%d records after the restart, %d before", len(after), len(before))
	}

	// The restarted broker takes new records after the old ones.
	w2, err := storage.NewGrantWriter(k2.Brokers, partitions)
	if err != nil {
		t.Fatal(err)
	}
	g := testGrant(5000)
	if err := appendOne(w2, g); err != nil {
		t.Fatal(err)
	}
	if err := w2.Close(); err != nil {
		t.Fatal(err)
	}
	want[5000] = g
	checkExactlyOnce(t, storagetest.ReadGrantTopic(t, k2.Brokers, partitions), want, partitions)
}

func TestOpenKafkaUnreachable(t *testing.T) {
	k, err := storage.OpenKafka([]string{"127.0.0.1:1"}, t.TempDir(), 1)
	if err == nil {
		k.Close()
		t.Fatal("OpenKafka(127.0.0.1:1) succeeded")
	}
	if !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("OpenKafka(127.0.0.1:1) = %v, want ErrUnavailable", err)
	}
}

// appendOne writes one grant as its own record.
func appendOne(w *storage.GrantWriter, g ledger.Grant) error {
	_, err := w.Append(w.Partition(g.ActID), []ledger.Grant{g})
	return err
}

// TestGrantWriterAppendBatch writes one shard's batch larger than a record
// holds: it splits into the fewest records, each keyed by its shard, and
// every grant lands once.
func TestGrantWriterAppendBatch(t *testing.T) {
	const partitions = 2
	k := storagetest.Kafka(t, "", partitions)
	w, err := storage.NewGrantWriter(k.Brokers, partitions)
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint64]ledger.Grant{}
	var batch []ledger.Grant
	for id := uint64(1); len(batch) < ledger.GrantsPerRecordMax+10; id++ {
		if w.Partition(id) == 1 {
			g := testGrant(id)
			batch = append(batch, g)
			want[id] = g
		}
	}
	n, err := w.Append(1, batch)
	if err != nil || n != 2 {
		t.Fatalf("Append(%d grants) = %d records, %v; want 2, nil", len(batch), n, err)
	}
	if _, err := w.Append(partitions, batch[:1]); err == nil {
		t.Errorf("Append to partition %d of %d succeeded", partitions, partitions)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Append(1, batch[:1]); !errors.Is(err, storage.ErrStreamClosed) {
		t.Errorf("Append after Close = %v, want ErrStreamClosed", err)
	}
	records := storagetest.ReadGrantTopic(t, k.Brokers, partitions)
	checkExactlyOnce(t, records, want, partitions)
}

// TestGrantWriterLostAnswer: the broker appends a request but its answer
// never reaches the writer (held past the read timeout); the writer sends
// the batch again with its sequence numbers and the broker appends it
// once. A batch that fails for good (every attempt swallowed) is an error
// that is not ErrStreamClosed, and the next Append lands under a new
// producer id.
func TestGrantWriterLostAnswer(t *testing.T) {
	const partitions = 2
	k := storagetest.Kafka(t, "", partitions)
	kc := k.EmbeddedCluster()
	timing := storage.WriterTiming{Ack: 100 * time.Millisecond, Net: 100 * time.Millisecond, Retries: 2, Backoff: 10 * time.Millisecond}
	w, err := storage.NewGrantWriterTimed(k.Brokers, partitions, timing)
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint64]ledger.Grant{}
	first := testGrant(1)
	if err := appendOne(w, first); err != nil {
		t.Fatal(err)
	}
	want[first.ActID] = first

	var held, swallow atomic.Int32
	held.Store(1)
	kc.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		kc.KeepControl()
		if swallow.Load() > 0 {
			return nil, nil, true // no answer, nothing appended
		}
		if held.Add(-1) == 0 {
			// Appended, but answered after the writer stopped reading.
			kc.SleepControl(func() { time.Sleep(timing.Net + timing.Ack + 200*time.Millisecond) })
		}
		return nil, nil, false
	})
	retried := testGrant(2)
	if err := appendOne(w, retried); err != nil {
		t.Fatalf("Append with its first answer lost = %v, want the retry acknowledged", err)
	}
	want[retried.ActID] = retried

	swallow.Store(1)
	lost := testGrant(3)
	if err := appendOne(w, lost); err == nil || errors.Is(err, storage.ErrStreamClosed) || !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("Append with every attempt swallowed = %v, want ErrUnavailable", err)
	}
	swallow.Store(0)
	after := testGrant(3 + uint64(partitions)) // often the same partition
	for _, g := range []ledger.Grant{after, testGrant(4)} {
		if err := appendOne(w, g); err != nil {
			t.Fatalf("Append after a failed batch = %v", err)
		}
		want[g.ActID] = g
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	checkExactlyOnce(t, storagetest.ReadGrantTopic(t, k.Brokers, partitions), want, partitions)
}

// TestGrantWriterBrokerRestart: the broker stops and starts again on its
// log at the same address. While it is away an append fails, and one that
// could not reach it says nothing was sent (ErrNotSent); once it is back
// the writer's appends land (a new connection, a new producer id).
func TestGrantWriterBrokerRestart(t *testing.T) {
	const partitions = 4
	dir := t.TempDir()
	k := storagetest.Kafka(t, dir, partitions)
	_, portText, _ := strings.Cut(k.Brokers[0], ":")
	port, err := strconv.Atoi(portText)
	if err != nil {
		t.Fatal(err)
	}
	timing := storage.WriterTiming{Ack: 200 * time.Millisecond, Net: 200 * time.Millisecond, Retries: 2, Backoff: 50 * time.Millisecond}
	w, err := storage.NewGrantWriterTimed(k.Brokers, partitions, timing)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	want := map[uint64]ledger.Grant{}
	for id := uint64(1); id <= 8; id++ {
		g := testGrant(id)
		if err := appendOne(w, g); err != nil {
			t.Fatal(err)
		}
		want[id] = g
	}
	k.Close()
	// The first append after the stop may have been written to the old
	// connection before it failed; the next finds no broker to dial.
	if err := appendOne(w, testGrant(50)); err == nil || errors.Is(err, storage.ErrStreamClosed) {
		t.Fatalf("Append with the broker stopped = %v, want a failure", err)
	}
	for id := uint64(51); id <= 55; id++ {
		if err := appendOne(w, testGrant(id)); !errors.Is(err, storage.ErrNotSent) || !errors.Is(err, storage.ErrUnavailable) {
			t.Fatalf("Append with no broker to dial = %v, want ErrNotSent", err)
		}
	}
	k2, err := storage.StartBroker(dir, port, partitions)
	if err != nil {
		t.Fatal(err)
	}
	defer k2.Close()
	for id := uint64(101); id <= 108; id++ {
		g := testGrant(id)
		if err := appendOne(w, g); err != nil {
			t.Fatalf("Append of act_id %d after the restart = %v", id, err)
		}
		want[id] = g
	}
	checkExactlyOnce(t, storagetest.ReadGrantTopic(t, k2.Brokers, partitions), want, partitions)
}
