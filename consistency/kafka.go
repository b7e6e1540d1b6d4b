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
// (sarama): one partition consumer per range asked, closed after it.
type KafkaStream struct {
	topic string
	// Wait bounds the wait for the next record of a range (a record
	// booking passed is on the broker: only an unreachable broker waits).
	Wait time.Duration

	mu     sync.Mutex
	client sarama.Client
	cons   sarama.Consumer
}

// NewKafkaStream connects to brokers and reads topic ("": the grant
// topic).
func NewKafkaStream(brokers []string, topic string) (*KafkaStream, error) {
	if topic == "" {
		topic = storage.GrantTopic
	}
	client, err := sarama.NewClient(brokers, storage.SaramaConfig("redrain-consistency"))
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
	k.mu.Lock()
	defer k.mu.Unlock()
	_ = k.cons.Close()
	return k.client.Close()
}

// Records implements Stream.
func (k *KafkaStream) Records(ctx context.Context, p int32, from, to int64, fn func(int64, []byte) error) error {
	if from >= to {
		return nil
	}
	k.mu.Lock()
	pc, err := k.cons.ConsumePartition(k.topic, p, from)
	k.mu.Unlock()
	if err != nil {
		return fmt.Errorf("%w: %v", storage.ErrUnavailable, err)
	}
	defer func() { _ = pc.Close() }() // synchronous: the next range may consume the same partition
	timer := time.NewTimer(k.Wait)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e := <-pc.Errors():
			if e != nil {
				return fmt.Errorf("%w: %v", storage.ErrUnavailable, e.Err)
			}
		case <-timer.C:
			return fmt.Errorf("%w: partition %d: no record at offset < %d within %s", storage.ErrUnavailable, p, to, k.Wait)
		case m := <-pc.Messages():
			if m == nil || m.Offset >= to {
				return nil
			}
			if err := fn(m.Offset, m.Value); err != nil {
				return err
			}
			if m.Offset == to-1 {
				return nil
			}
			timer.Reset(k.Wait)
		}
	}
}
