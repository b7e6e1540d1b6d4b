package storage

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"redrain/ledger"
)

// ErrStreamClosed is returned by Append after Close. Nothing was sent: the
// caller may give its reservations back.
var ErrStreamClosed = errors.New("storage: grant stream closed")

// ErrNotSent wraps an Append's failure when none of its records reached a
// broker (no connection, no producer id, no leader): nothing can land, so
// the caller may give its reservations back, as after ErrStreamClosed. It
// wraps ErrUnavailable.
var ErrNotSent = fmt.Errorf("%w: produce: not sent", ErrUnavailable)

// GrantWriter appends grants to the grant topic, a shard's batch to a
// record. The grant path hands it one batch per shard (partition) at a time
// and waits for the acknowledgement; the next batch gathers meanwhile (group
// commit, no timer).
//
// One produce loop per node sends every shard's waiting records in one
// produce request per leader broker, on sarama's Broker (the protocol and
// the connection) without its AsyncProducer: that producer hands each
// record through five goroutines and back (dispatcher, topic, partition
// and broker producers, the response bridge), which cost more CPU than
// the request itself (BENCHMARKS.md, *One produce loop per node*). A
// request's partitions each carry one record batch; the loop sends the
// next request once the last is answered, so a partition never has two
// batches in flight.
//
// The loop is an idempotent producer: it takes a producer id, numbers each
// partition's records, and sends a retried batch with the numbers it had,
// so a retry after a lost answer is appended once. A batch that fails for
// good leaves the numbering unsure, so the next request goes under a new
// producer id. Every record is keyed by its shard, so `kcat -K` shows
// whose users a record holds. A write has a deadline (WriteDeadline)
// shorter than any claim's time-out on the grant path: no attempt starts
// that could end later than WriteDeadline after its Append began, so once
// Append returns, the record either landed or never will.
type GrantWriter struct {
	client sarama.Client
	conf   *sarama.Config
	topic  string
	parts  int32
	keys   [][]byte // ShardKey of each partition
	timing WriterTiming

	mu      sync.Mutex
	closed  bool
	queue   []*outRecord
	wake    chan struct{} // capacity 1: the queue has records, or Close was called
	stopped chan struct{} // closed once the loop has returned

	// Owned by the loop.
	pid     int64
	epoch   int16
	pidOK   bool                     // false: take a new producer id before the next request
	seq     []int32                  // each partition's next sequence number under pid
	conns   map[int32]*sarama.Broker // the loop's connection to each leader, by broker id
	carry   []*outRecord             // records a full request left for the next
	batches []*partBatch
	byPart  []*partBatch
}

// outRecord is one record on its way and the Append that waits for it.
type outRecord struct {
	part  int32
	value *[]byte
	wait  *appendWait
}

// appendWait is one Append's records: the loop answers it once every one
// of them was acknowledged or failed for good.
type appendWait struct {
	start  time.Time // a record of it may land until start + WriteDeadline
	left   int
	err    error      // the first record's failure
	unsure bool       // a record of it was sent or landed
	done   chan error // buffered
}

// partBatch is one partition's records in a request.
type partBatch struct {
	part     int32
	recs     []*outRecord
	bytes    int
	seq      int32 // the first record's sequence number
	deadline time.Time
	sent     bool  // an attempt began writing it to a broker: it may have landed
	done     bool  // acknowledged or failed for good
	err      error // the last attempt's failure
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
	cfg.Net.DialTimeout = t.Net
	cfg.Net.ReadTimeout = t.Net + t.Ack
	cfg.Net.WriteTimeout = t.Net
	cfg.Net.MaxOpenRequests = 1
	client, err := sarama.NewClient(brokers, cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: kafka producer: %v", ErrUnavailable, err)
	}
	w := &GrantWriter{client: client, conf: cfg, topic: topic, parts: partitions, timing: t,
		keys: make([][]byte, partitions), seq: make([]int32, partitions), byPart: make([]*partBatch, partitions),
		conns: map[int32]*sarama.Broker{}, wake: make(chan struct{}, 1), stopped: make(chan struct{})}
	for i := range w.keys {
		w.keys[i] = ShardKey(int32(i))
	}
	if err := w.newProducerID(); err != nil {
		for _, c := range w.conns {
			_ = c.Close()
		}
		_ = client.Close()
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	go w.run()
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
// number of records written. An error other than ErrStreamClosed or
// ErrNotSent is not a proof that nothing landed: the caller must count the
// grants as issued.
func (w *GrantWriter) Append(part int32, grants []ledger.Grant) (int, error) {
	if part < 0 || part >= w.parts {
		return 0, fmt.Errorf("storage: partition %d of %d", part, w.parts)
	}
	wait := &appendWait{start: time.Now(), done: make(chan error, 1)}
	var recs [4]*outRecord
	out := recs[:0]
	for len(grants) > 0 {
		n := min(len(grants), ledger.GrantsPerRecordMax)
		buf, _ := recordBufs.Get().(*[]byte)
		if buf == nil {
			buf = new([]byte)
		}
		*buf = ledger.AppendGrantRecord((*buf)[:0], grants[:n])
		out = append(out, &outRecord{part: part, value: buf, wait: wait})
		grants = grants[n:]
	}
	wait.left = len(out)
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		for _, r := range out {
			recordBufs.Put(r.value)
		}
		return 0, ErrStreamClosed
	}
	if len(out) == 0 {
		w.mu.Unlock()
		return 0, nil
	}
	w.queue = append(w.queue, out...)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return len(out), <-wait.done
}

// recordBufs holds record values for reuse, so a shard's next record is
// encoded into memory of the right size instead of growing from nothing.
var recordBufs sync.Pool

// recordBufMax bounds the values kept for reuse (a record of the most
// grants a record holds fits).
const recordBufMax = 1 << 20

// run is the produce loop: it takes what the shards queued, sends it and
// answers them, until Close and the queue is empty.
func (w *GrantWriter) run() {
	defer close(w.stopped)
	var recs []*outRecord
	for {
		w.mu.Lock()
		recs = append(recs[:0], w.carry...)
		recs = append(recs, w.queue...)
		clear(w.queue)
		w.queue = w.queue[:0]
		closed := w.closed
		w.mu.Unlock()
		w.carry = w.carry[:0]
		if len(recs) == 0 {
			if closed {
				return
			}
			<-w.wake
			continue
		}
		w.produce(recs)
		clear(recs)
	}
}

// requestBytesMax bounds the record values one partition's batch carries
// in a request: a broker refuses a batch over its message.max.bytes (~1 MiB
// by default), and the batch adds its header and each record's. A record of
// GrantsPerRecordMax grants fits.
const requestBytesMax = 960 << 10

// produce sends recs, each partition's in one batch (the rest of a
// partition's past requestBytesMax go to the next request), retries what
// failed while its deadline allows, and answers the Appends.
func (w *GrantWriter) produce(recs []*outRecord) {
	batches := w.batches[:0]
	for _, r := range recs {
		pb := w.byPart[r.part]
		if pb == nil {
			pb = &partBatch{part: r.part, deadline: r.wait.start.Add(w.timing.WriteDeadline())}
			w.byPart[r.part] = pb
			batches = append(batches, pb)
		}
		if len(pb.recs) > 0 && pb.bytes+len(*r.value) > requestBytesMax {
			w.carry = append(w.carry, r)
			continue
		}
		pb.recs = append(pb.recs, r)
		pb.bytes += len(*r.value)
		if d := r.wait.start.Add(w.timing.WriteDeadline()); d.Before(pb.deadline) {
			pb.deadline = d
		}
	}
	for _, pb := range batches {
		w.byPart[pb.part] = nil
	}
	if !w.pidOK {
		if err := w.newProducerID(); err != nil {
			for _, pb := range batches {
				pb.done, pb.err = true, err
			}
		}
	}
	for _, pb := range batches {
		if !pb.done {
			pb.seq = w.seq[pb.part]
			w.seq[pb.part] += int32(len(pb.recs))
		}
	}
	w.attempts(batches)
	for _, pb := range batches {
		if pb.err != nil {
			// Its numbers are spent and the broker may or may not hold
			// them: the next request goes under a new producer id.
			w.pidOK = false
		}
		for _, r := range pb.recs {
			wt := r.wait
			wt.unsure = wt.unsure || pb.sent
			if wt.err == nil {
				wt.err = pb.err
			}
			if cap(*r.value) <= recordBufMax {
				recordBufs.Put(r.value)
			}
			if wt.left--; wt.left > 0 {
				continue
			}
			switch {
			case wt.err == nil:
				wt.done <- nil
			case wt.unsure:
				wt.done <- fmt.Errorf("%w: produce: %v", ErrUnavailable, wt.err)
			default:
				wt.done <- fmt.Errorf("%w: %v", ErrNotSent, wt.err)
			}
		}
	}
	clear(batches) // the batches and their records go with this request
	w.batches = batches[:0]
}

// attempts sends the batches not done, one request per leader, up to
// 1 + Retries times; an attempt starts only if it ends (dial, write, the
// broker's wait and the read) before the batch's deadline.
func (w *GrantWriter) attempts(batches []*partBatch) {
	attemptMax := 3*w.timing.Net + w.timing.Ack
	refresh := false
	type request struct {
		id     int32
		group  []*partBatch
		broken bool // the connection failed: the next attempt dials again
	}
	var reqs []*request
	for attempt := 0; attempt <= w.timing.Retries; attempt++ {
		if attempt > 0 {
			if !slices.ContainsFunc(batches, func(pb *partBatch) bool { return !pb.done }) {
				return
			}
			time.Sleep(w.timing.Backoff)
		}
		if refresh {
			_ = w.client.RefreshMetadata(w.topic)
			refresh = false
		}
		reqs = reqs[:0]
		now := time.Now()
		for _, pb := range batches {
			if pb.done {
				continue
			}
			if now.Add(attemptMax).After(pb.deadline) {
				if pb.err == nil {
					pb.err = errors.New("its write deadline passed")
				}
				pb.done = true
				continue
			}
			leader, err := w.client.Leader(w.topic, pb.part)
			if err != nil {
				pb.err, refresh = err, true
				continue
			}
			i := slices.IndexFunc(reqs, func(r *request) bool { return r.id == leader.ID() })
			if i < 0 {
				i = len(reqs)
				reqs = append(reqs, &request{id: leader.ID()})
			}
			reqs[i].group = append(reqs[i].group, pb)
		}
		var wg sync.WaitGroup
		for _, r := range reqs {
			conn, err := w.conn(r.id)
			if err != nil {
				for _, pb := range r.group {
					pb.err = err
				}
				refresh = true
				continue
			}
			if len(reqs) == 1 {
				r.broken = w.send(conn, r.group)
			} else {
				wg.Go(func() { r.broken = w.send(conn, r.group) })
			}
		}
		wg.Wait()
		for _, r := range reqs {
			if r.broken {
				delete(w.conns, r.id)
			}
			for _, pb := range r.group {
				refresh = refresh || (!pb.done && pb.err != nil)
			}
		}
	}
	for _, pb := range batches {
		if !pb.done && pb.err == nil {
			pb.err = errors.New("retries spent")
		}
		pb.done = true
	}
}

// conn is the loop's open connection to broker id (the client's metadata
// names its address).
func (w *GrantWriter) conn(id int32) (*sarama.Broker, error) {
	if c := w.conns[id]; c != nil {
		return c, nil
	}
	b, err := w.client.Broker(id)
	if err != nil {
		return nil, err
	}
	c := sarama.NewBroker(b.Addr())
	if err := c.Open(w.conf); err != nil && !errors.Is(err, sarama.ErrAlreadyConnected) {
		return nil, err
	}
	w.conns[id] = c
	return c, nil
}

// send writes one produce request of group to conn and reads each
// partition's answer into its batch; true when the connection failed (it
// is closed).
func (w *GrantWriter) send(conn *sarama.Broker, group []*partBatch) bool {
	if err := connected(conn); err != nil {
		for _, pb := range group {
			pb.err = err
		}
		return true
	}
	req := &sarama.ProduceRequest{RequiredAcks: sarama.WaitForAll, Timeout: int32(w.timing.Ack / time.Millisecond), Version: 9}
	now := time.Now()
	for _, pb := range group {
		rb := &sarama.RecordBatch{Version: 2, FirstTimestamp: now, MaxTimestamp: now,
			ProducerID: w.pid, ProducerEpoch: w.epoch, FirstSequence: pb.seq,
			LastOffsetDelta: int32(len(pb.recs) - 1), Records: make([]*sarama.Record, len(pb.recs))}
		for i, r := range pb.recs {
			rb.Records[i] = &sarama.Record{OffsetDelta: int64(i), Key: w.keys[pb.part], Value: *r.value}
		}
		req.AddBatch(w.topic, pb.part, rb)
		pb.sent = true
	}
	res, err := conn.Produce(req)
	if err != nil {
		// The connection is in doubt: the next attempt dials again.
		_ = conn.Close()
		for _, pb := range group {
			pb.err = err
		}
		return true
	}
	for _, pb := range group {
		blk := res.GetBlock(w.topic, pb.part)
		switch {
		case blk == nil:
			pb.err = fmt.Errorf("no answer for partition %d", pb.part)
		case blk.Err == sarama.ErrNoError, blk.Err == sarama.ErrDuplicateSequenceNumber:
			pb.done, pb.err = true, nil
		case retriable(blk.Err):
			pb.err = blk.Err
		default:
			pb.done, pb.err = true, blk.Err
		}
	}
	return false
}

// connected waits for conn's dial (Connected holds its lock meanwhile) and
// says why it failed: a request on it would write nothing.
func connected(conn *sarama.Broker) error {
	if ok, err := conn.Connected(); !ok {
		return cmp.Or(err, sarama.ErrNotConnected)
	}
	return nil
}

// retriable says whether a partition's produce error may pass when the
// batch is sent again (with the same sequence numbers).
func retriable(e sarama.KError) bool {
	switch e {
	case sarama.ErrNotLeaderForPartition, sarama.ErrLeaderNotAvailable, sarama.ErrUnknownTopicOrPartition,
		sarama.ErrRequestTimedOut, sarama.ErrNotEnoughReplicas, sarama.ErrNotEnoughReplicasAfterAppend,
		sarama.ErrKafkaStorageError, sarama.ErrNetworkException, sarama.ErrBrokerNotAvailable,
		sarama.ErrReplicaNotAvailable, sarama.ErrFencedLeaderEpoch, sarama.ErrUnknownLeaderEpoch,
		sarama.ErrOffsetNotAvailable:
		return true
	}
	return false
}

// newProducerID takes a producer id (and epoch) from the leader of
// partition 0, on the loop's own connection (sarama's client gives up a
// broker for good once one such request fails, and would find none after
// the broker restarts), and numbers every partition from zero under it.
func (w *GrantWriter) newProducerID() error {
	res, err := w.initProducerID()
	if err == nil && res.Err != sarama.ErrNoError {
		err = res.Err
	}
	if err != nil {
		_ = w.client.RefreshMetadata(w.topic)
		return fmt.Errorf("kafka producer id: %v", err)
	}
	w.pid, w.epoch, w.pidOK = res.ProducerID, res.ProducerEpoch, true
	clear(w.seq)
	return nil
}

func (w *GrantWriter) initProducerID() (*sarama.InitProducerIDResponse, error) {
	leader, err := w.client.Leader(w.topic, 0)
	if err != nil {
		return nil, err
	}
	id := leader.ID()
	conn, err := w.conn(id)
	if err != nil {
		return nil, err
	}
	if err := connected(conn); err != nil {
		delete(w.conns, id)
		return nil, err
	}
	res, err := conn.InitProducerID(&sarama.InitProducerIDRequest{Version: 4, ProducerID: -1, ProducerEpoch: -1})
	if err != nil {
		_ = conn.Close()
		delete(w.conns, id)
	}
	return res, err
}

// Close refuses new appends, sends those queued, waits for their answers
// and closes the connections.
func (w *GrantWriter) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		<-w.stopped
		return nil
	}
	w.closed = true
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	<-w.stopped
	for _, c := range w.conns {
		_ = c.Close()
	}
	return w.client.Close()
}
