package consistency

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"redrain/storage"
)

// KafkaStream reads the grant topic with the node's Kafka client
// (sarama). A check asks for the ranges of one partition in order, each
// starting where the last ended: the partition consumer of the last range
// is kept for the next and closed when a range starts elsewhere or the
// check ends (Release), so no consumer fetches between checks.
type KafkaStream struct {
	topic string
	// Wait bounds the wait for the next record of a range (a record
	// booking passed is on the broker: only an unreachable broker waits).
	Wait time.Duration

	mu     sync.Mutex
	client sarama.Client
	cons   sarama.Consumer
	// pc is the kept partition consumer: of partition part, its next
	// record at offset next.
	pc   sarama.PartitionConsumer
	part int32
	next int64
}

// NewKafkaStream connects to brokers and reads topic ("": the grant
// topic).
func NewKafkaStream(brokers []string, topic string) (*KafkaStream, error) {
	if topic == "" {
		topic = storage.GrantTopic
	}
	cfg := storage.SaramaConfig("redrain-consistency")
	// Ranges read are behind the topic's end: a fetch never needs to wait
	// for new records, and one in flight when a range ends (the partition
	// consumer's close waits for it) should not hold it for sarama's
	// default 500 ms.
	cfg.Consumer.MaxWaitTime = 5 * time.Millisecond
	cfg.Consumer.Fetch.Default = 4 << 20
	client, err := sarama.NewClient(brokers, cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: kafka %v: %v", storage.ErrUnavailable, brokers, err)
	}
	cons, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		_ = client.Close()
		return nil, err
	}
	return &KafkaStream{topic: topic, Wait: 10 * time.Second, client: client, cons: cons}, nil
}

// Close closes the client.
func (k *KafkaStream) Close() error {
	k.Release()
	k.mu.Lock()
	defer k.mu.Unlock()
	_ = k.cons.Close()
	return k.client.Close()
}

// Release closes the kept partition consumer (the end of a check).
func (k *KafkaStream) Release() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.release()
}

func (k *KafkaStream) release() {
	if k.pc != nil {
		_ = k.pc.Close()
		k.pc = nil
	}
}

// Records implements Stream. Calls are serialized.
func (k *KafkaStream) Records(ctx context.Context, p int32, from, to int64, fn func(int64, []byte) error) error {
	if from >= to {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.pc == nil || k.part != p || k.next != from {
		k.release()
		pc, err := k.cons.ConsumePartition(k.topic, p, from)
		if err != nil {
			return fmt.Errorf("%w: %v", storage.ErrUnavailable, err)
		}
		k.pc, k.part, k.next = pc, p, from
	}
	timer := time.NewTimer(k.Wait)
	defer timer.Stop()
	for k.next < to {
		select {
		case <-ctx.Done():
			k.release()
			return ctx.Err()
		case e := <-k.pc.Errors():
			k.release()
			if e == nil {
				return fmt.Errorf("%w: partition %d: consumer closed", storage.ErrUnavailable, p)
			}
			return fmt.Errorf("%w: %v", storage.ErrUnavailable, e.Err)
		case <-timer.C:
			k.release()
			return fmt.Errorf("%w: partition %d: no record at offset < %d within %s", storage.ErrUnavailable, p, to, k.Wait)
		case m := <-k.pc.Messages():
			if m == nil {
				k.release()
				return fmt.Errorf("%w: partition %d: consumer closed", storage.ErrUnavailable, p)
			}
			if m.Offset < k.next {
				continue
			}
			if m.Offset >= to {
				// Past the range (offsets skipped): the next range
				// starting at to would miss m, so start again there.
				k.release()
				return nil
			}
			k.next = m.Offset + 1
			if err := fn(m.Offset, m.Value); err != nil {
				k.release()
				return err
			}
			timer.Reset(k.Wait)
		}
	}
	return nil
}
