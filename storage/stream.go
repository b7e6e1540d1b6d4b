package storage

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"redrain/ledger"
)

// ErrStreamClosed is returned by Append after Close. Nothing was sent: the
// caller may give its reservations back.
var ErrStreamClosed = errors.New("storage: grant stream closed")

// GrantWriter appends grants to the grant topic, a shard's batch to a
// record. The grant path hands it one batch per shard (partition) at a time
// and waits for the acknowledgement; the next batch gathers meanwhile (group
// commit, no timer). Measured while planning: sarama to the embedded broker
// costs ~4-5 µs of CPU per record, so one record per grant would need
// several cores at a million grants a second.
//
// The producer is idempotent (a retried produce request is appended once)
// and every record is keyed by its shard, so `kcat -K` shows whose users a
// record holds. A write has a deadline (WriteDeadline) shorter than any
// claim's time-out on the grant path: once Append returns, the record either
// landed or never will.
type GrantWriter struct {
	producer sarama.AsyncProducer
	topic    string
	parts    int32
	keys     [][]byte // ShardKey of each partition
	wg       sync.WaitGroup

	mu     sync.RWMutex
	closed bool
}

// WriterTiming bounds a produce. One attempt is bounded by the broker's
// ack timeout and the socket timeouts; retries are bounded in count.
type WriterTiming struct {
	Ack     time.Duration // the broker's wait for in-sync replicas
	Net     time.Duration // dial and write; a read waits Net + Ack
	Retries int
	Backoff time.Duration
}

// DefaultWriterTiming is what nodes use: a record may still land up to
// ~24 s after Append started it (WriteDeadline), inside the grant path's
// 30 s claims.
var DefaultWriterTiming = WriterTiming{Ack: 2 * time.Second, Net: 2 * time.Second, Retries: 2, Backoff: 200 * time.Millisecond}

// WriteDeadline bounds how long a record may still land after Append
// started it: every attempt's dial, write and read plus the back-offs.
func (t WriterTiming) WriteDeadline() time.Duration {
	return time.Duration(t.Retries+1)*(3*t.Net+t.Ack) + time.Duration(t.Retries)*t.Backoff
}

// WriteDeadline is DefaultWriterTiming's: every grant-path claim outlives it.
var WriteDeadline = DefaultWriterTiming.WriteDeadline()

// recordBatch is the grants of one record and who waits for them.
type recordBatch struct {
	done chan error // buffered: the producer's result goroutines never block
}

// NewGrantWriter starts an idempotent producer of the grant topic with
// partitions partitions and DefaultWriterTiming.
func NewGrantWriter(brokers []string, partitions int32) (*GrantWriter, error) {
	return NewGrantWriterTimed(brokers, partitions, DefaultWriterTiming)
}

// NewGrantWriterTimed is NewGrantWriter with its produce timing (tests of
// broker failures shorten it).
func NewGrantWriterTimed(brokers []string, partitions int32, t WriterTiming) (*GrantWriter, error) {
	return NewGrantWriterOn(brokers, GrantTopic, partitions, t)
}

// NewGrantWriterOn is NewGrantWriterTimed on the grant topic named topic
// ("": GrantTopic).
func NewGrantWriterOn(brokers []string, topic string, partitions int32, t WriterTiming) (*GrantWriter, error) {
	if topic == "" {
		topic = GrantTopic
	}
	cfg := SaramaConfig("redrain-grants")
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Idempotent = true
	cfg.Net.MaxOpenRequests = 1 // required by the idempotent producer
	cfg.Producer.Return.Successes = true
	cfg.Producer.Return.Errors = true
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	cfg.Producer.MaxMessageBytes = 4 << 20
	cfg.Producer.Timeout = t.Ack
	cfg.Producer.Retry.Max = t.Retries
	cfg.Producer.Retry.Backoff = t.Backoff
	cfg.Net.DialTimeout = t.Net
	cfg.Net.ReadTimeout = t.Net + t.Ack
	cfg.Net.WriteTimeout = t.Net
	p, err := sarama.NewAsyncProducer(brokers, cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: kafka producer: %v", ErrUnavailable, err)
	}
	w := &GrantWriter{producer: p, topic: topic, parts: partitions, keys: make([][]byte, partitions)}
	for i := range w.keys {
		w.keys[i] = ShardKey(int32(i))
	}
	w.wg.Add(2)
	go w.successes()
	go w.failures()
	return w, nil
}

// Partitions is the number of shards (grant topic partitions).
func (w *GrantWriter) Partitions() int32 { return w.parts }

// Partition returns the partition of a user's grants.
func (w *GrantWriter) Partition(actID uint64) int32 { return PartitionOf(actID, w.parts) }

// PartitionOf maps an act_id onto one of n partitions (a fixed mix, so that
// dense act_ids spread evenly).
func PartitionOf(actID uint64, n int32) int32 {
	x := actID * 0x9e3779b97f4a7c15
	return int32((x >> 32) % uint64(n))
}

// ShardKey is the record key of a shard's records: the partition's number
// in decimal, so that `kcat -K` shows whose users a record holds.
func ShardKey(part int32) []byte { return strconv.AppendInt(nil, int64(part), 10) }

// Append writes grants, all of partition part, as one record (or as few as
// GrantsPerRecordMax allows) and waits until each is acknowledged by every
// in-sync replica; only then may the grants be answered. It returns the
// number of records written. An error other than ErrStreamClosed is not a
// proof that nothing landed: the caller must count the grants as issued.
func (w *GrantWriter) Append(part int32, grants []ledger.Grant) (int, error) {
	w.mu.RLock()
	if w.closed {
		w.mu.RUnlock()
		return 0, ErrStreamClosed
	}
	if part < 0 || part >= w.parts {
		w.mu.RUnlock()
		return 0, fmt.Errorf("storage: partition %d of %d", part, w.parts)
	}
	var waits []chan error
	var bufs []*[]byte
	for len(grants) > 0 {
		n := min(len(grants), ledger.GrantsPerRecordMax)
		b := &recordBatch{done: make(chan error, 1)}
		waits = append(waits, b.done)
		buf, _ := recordBufs.Get().(*[]byte)
		if buf == nil {
			buf = new([]byte)
		}
		*buf = ledger.AppendGrantRecord((*buf)[:0], grants[:n])
		bufs = append(bufs, buf)
		w.producer.Input() <- &sarama.ProducerMessage{
			Topic:     w.topic,
			Partition: part,
			Key:       sarama.ByteEncoder(w.keys[part]),
			Value:     sarama.ByteEncoder(*buf),
			Metadata:  b,
		}
		grants = grants[n:]
	}
	w.mu.RUnlock()
	var err error
	for _, c := range waits {
		err = errors.Join(err, <-c)
	}
	// Each record was acknowledged or failed for good: the producer holds
	// none of the values any more.
	for _, buf := range bufs {
		if cap(*buf) <= recordBufMax {
			recordBufs.Put(buf)
		}
	}
	return len(waits), err
}

// recordBufs holds record values for reuse, so a shard's next record is
// encoded into memory of the right size instead of growing from nothing.
var recordBufs sync.Pool

// recordBufMax bounds the values kept for reuse (a record of the most
// grants a record holds fits).
const recordBufMax = 1 << 20

func (w *GrantWriter) successes() {
	defer w.wg.Done()
	for m := range w.producer.Successes() {
		m.Metadata.(*recordBatch).done <- nil
	}
}

func (w *GrantWriter) failures() {
	defer w.wg.Done()
	for e := range w.producer.Errors() {
		e.Msg.Metadata.(*recordBatch).done <- fmt.Errorf("%w: produce: %v", ErrUnavailable, e.Err)
	}
}

// Close refuses new appends, waits for those in flight and stops the
// producer.
func (w *GrantWriter) Close() error {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	// Appends hold the read lock only while queueing; AsyncClose delivers
	// every queued record's result before closing the result channels.
	w.producer.AsyncClose()
	w.wg.Wait()
	return nil
}
