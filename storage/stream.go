package storage

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"redrain/ledger"
)

// ErrStreamClosed is returned by Write after Close.
var ErrStreamClosed = errors.New("storage: grant stream closed")

// GrantWriter appends grants to the grant topic, many grants to a record.
// Measured while planning: sarama to the embedded broker costs ~4-5 µs of CPU
// per record, so one record per grant would need several cores at a million
// grants a second. Grants of one partition are gathered while that
// partition's previous record is in flight (group commit, no timer): one
// grant alone goes out at once, a burst shares records.
type GrantWriter struct {
	producer sarama.AsyncProducer
	parts    []*partWriter
	wg       sync.WaitGroup

	mu     sync.RWMutex
	closed bool
}

// recordsInFlightMax bounds the records of one partition awaiting their ack.
const recordsInFlightMax = 2

// recordBatch is the grants of one record and who waits for them.
type recordBatch struct {
	part   int32
	grants []ledger.Grant
	done   chan struct{} // closed when err is set
	err    error
}

type partWriter struct {
	mu       sync.Mutex
	pending  *recordBatch
	inFlight int
}

// NewGrantWriter starts a producer of the grant topic with partitions partitions.
func NewGrantWriter(brokers []string, partitions int32) (*GrantWriter, error) {
	cfg := SaramaConfig("redrain-grants")
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Return.Successes = true
	cfg.Producer.Return.Errors = true
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	cfg.Producer.MaxMessageBytes = 4 << 20
	cfg.Producer.Retry.Max = 5
	p, err := sarama.NewAsyncProducer(brokers, cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: kafka producer: %v", ErrUnavailable, err)
	}
	w := &GrantWriter{producer: p, parts: make([]*partWriter, partitions)}
	for i := range w.parts {
		w.parts[i] = &partWriter{}
	}
	w.wg.Add(2)
	go w.successes()
	go w.failures()
	return w, nil
}

// Partition returns the partition of a user's grants.
func (w *GrantWriter) Partition(actID uint64) int32 { return PartitionOf(actID, int32(len(w.parts))) }

// PartitionOf maps an act_id onto one of n partitions (a fixed mix, so that
// dense act_ids spread evenly).
func PartitionOf(actID uint64, n int32) int32 {
	x := actID * 0x9e3779b97f4a7c15
	return int32((x >> 32) % uint64(n))
}

// Write appends g to the stream and waits until its record is acknowledged
// by every in-sync replica. Only then may the grant be answered. It always
// waits for the definite outcome (the producer's retries and timeout bound
// it): a grant whose fate is unknown could be neither counted as issued nor
// given back.
func (w *GrantWriter) Write(g *ledger.Grant) error {
	w.mu.RLock()
	if w.closed {
		w.mu.RUnlock()
		return ErrStreamClosed
	}
	part := w.Partition(g.ActID)
	pw := w.parts[part]
	pw.mu.Lock()
	b := pw.pending
	if b == nil {
		b = &recordBatch{part: part, done: make(chan struct{})}
		pw.pending = b
	}
	b.grants = append(b.grants, *g)
	if pw.inFlight < recordsInFlightMax || len(b.grants) >= ledger.GrantsPerRecordMax {
		w.sendLocked(pw)
	}
	pw.mu.Unlock()
	w.mu.RUnlock()
	<-b.done
	return b.err
}

// sendLocked hands the pending batch to the producer. pw.mu is held.
func (w *GrantWriter) sendLocked(pw *partWriter) {
	b := pw.pending
	if b == nil {
		return
	}
	pw.pending = nil
	pw.inFlight++
	w.producer.Input() <- &sarama.ProducerMessage{
		Topic:     GrantTopic,
		Partition: b.part,
		Value:     sarama.ByteEncoder(ledger.AppendGrantRecord(nil, b.grants)),
		Metadata:  b,
	}
}

func (w *GrantWriter) finish(b *recordBatch, err error) {
	b.err = err
	close(b.done)
	pw := w.parts[b.part]
	pw.mu.Lock()
	pw.inFlight--
	w.sendLocked(pw)
	pw.mu.Unlock()
}

func (w *GrantWriter) successes() {
	defer w.wg.Done()
	for m := range w.producer.Successes() {
		w.finish(m.Metadata.(*recordBatch), nil)
	}
}

func (w *GrantWriter) failures() {
	defer w.wg.Done()
	for e := range w.producer.Errors() {
		w.finish(e.Msg.Metadata.(*recordBatch), fmt.Errorf("%w: produce: %v", ErrUnavailable, e.Err))
	}
}

// Close flushes what is queued and stops the producer.
func (w *GrantWriter) Close() error {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	// Pending batches go out as their partition's in-flight records finish;
	// AsyncClose drains them all before closing the result channels.
	for {
		busy := false
		for _, pw := range w.parts {
			pw.mu.Lock()
			if pw.pending != nil || pw.inFlight > 0 {
				busy = true
			}
			pw.mu.Unlock()
		}
		if !busy {
			break
		}
		time.Sleep(time.Millisecond) // shutdown only: the last acks arrive within a round trip
	}
	w.producer.AsyncClose()
	w.wg.Wait()
	return nil
}
