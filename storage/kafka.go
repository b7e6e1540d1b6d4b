package storage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"
)

// GrantTopic carries grant records, keyed by act_id over its partitions.
const GrantTopic = "redrain.grants"

// GrantPartitionsDefault is the partition count the topic is created with.
const GrantPartitionsDefault = 8

// Kafka is the grant stream's broker: a real cluster, or franz-go's kfake
// speaking the Kafka protocol in process with its log under a data dir.
type Kafka struct {
	Brokers  []string
	embedded *kfake.Cluster
}

// OpenKafka connects to brokers, or when brokers is empty starts the
// embedded broker persisted under dir, and makes sure the grant topic
// exists with partitions partitions. Topics are always created explicitly:
// the embedded broker forgets auto-created topics on kill -9.
func OpenKafka(brokers []string, dir string, partitions int32) (*Kafka, error) {
	if len(brokers) == 0 {
		return StartBroker(dir, 0, partitions)
	}
	k := &Kafka{Brokers: brokers}
	if err := k.ensureTopic(partitions); err != nil {
		return nil, err
	}
	return k, nil
}

// StartBroker starts the embedded broker on 127.0.0.1:port (0 = any) with
// its log under dir/kafka, and creates the grant topic if needed.
func StartBroker(dir string, port int, partitions int32) (*Kafka, error) {
	k := &Kafka{}
	kdir := filepath.Join(dir, "kafka")
	if err := os.MkdirAll(kdir, 0o755); err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	c, err := kfake.NewCluster(kfake.Ports(port), kfake.DataDir(kdir),
		kfake.GroupMinSessionTimeout(time.Second))
	if err != nil {
		return nil, fmt.Errorf("%w: embedded kafka in %s: %v", ErrUnavailable, kdir, err)
	}
	k.embedded, k.Brokers = c, c.ListenAddrs()
	if err := k.ensureTopic(partitions); err != nil {
		k.Close()
		return nil, err
	}
	return k, nil
}

// EmbeddedCluster is the in-process broker (nil with real brokers), for
// tests that inject broker faults.
func (k *Kafka) EmbeddedCluster() *kfake.Cluster { return k.embedded }

// Embedded reports whether the broker runs in this process.
func (k *Kafka) Embedded() bool { return k.embedded != nil }

func (k *Kafka) ensureTopic(partitions int32) error {
	admin, err := sarama.NewClusterAdmin(k.Brokers, SaramaConfig("redrain-admin"))
	if err != nil {
		return fmt.Errorf("%w: kafka %v: %v", ErrUnavailable, k.Brokers, err)
	}
	defer admin.Close()
	err = admin.CreateTopic(GrantTopic, &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: -1}, false)
	var te *sarama.TopicError
	if err != nil && !(errors.As(err, &te) && te.Err == sarama.ErrTopicAlreadyExists) && !errors.Is(err, sarama.ErrTopicAlreadyExists) {
		return fmt.Errorf("%w: create topic %s: %v", ErrUnavailable, GrantTopic, err)
	}
	return nil
}

// Close stops the embedded broker, if any.
func (k *Kafka) Close() {
	if k.embedded != nil {
		k.embedded.Close()
	}
}

// SaramaConfig is the client configuration every redrain Kafka client uses.
func SaramaConfig(clientID string) *sarama.Config {
	c := sarama.NewConfig()
	c.ClientID = clientID
	c.Version = sarama.V3_6_0_0
	c.Metadata.Retry.Backoff = 100 * time.Millisecond
	return c
}
