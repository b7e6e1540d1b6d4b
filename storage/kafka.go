package storage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/IBM/sarama"
	metrics "github.com/rcrowley/go-metrics"
	"github.com/twmb/franz-go/pkg/kfake"
)

func init() {
	// sarama keeps go-metrics meters and histograms of every request,
	// broker and topic (rates, sizes, latencies; an exponentially decaying
	// sample updated per request and per record batch, each under a lock)
	// that nothing in redrain reads: its own metrics are the counters of
	// package metrics. Off, every constructor returns go-metrics' nil
	// implementations (BENCHMARKS.md, *One hash and one probe per new
	// identity; sarama's metrics off*).
	metrics.UseNilMetrics = true
}

// GrantTopic is the default name of the grant topic: it carries grant
// records (ledger.AppendGrantRecord), each keyed by its shard (ShardKey),
// users spread over its partitions by act_id (PartitionOf). `serve
// --grant-topic` names another; Kafka.Topic is the one a process uses.
const GrantTopic = "redrain.grants"

// GrantPartitionsDefault is the partition count the topic is created with.
const GrantPartitionsDefault = 8

// Kafka is the grant stream's broker: a real cluster, or franz-go's kfake
// speaking the Kafka protocol in process with its log under a data dir.
type Kafka struct {
	Brokers []string
	// Topic is the grant topic's name (GrantTopic unless OpenKafkaTopic
	// named another).
	Topic    string
	embedded *kfake.Cluster
	// Durability says, with real brokers too few to replicate the grant
	// topic as a production cluster must, what a broker's loss can lose
	// ("" when the topic is replicated as wanted, or embedded).
	Durability string
}

// The grant topic's durability on a real cluster: an acknowledged grant
// (RequiredAcks all) is on at least grantMinISR replicas of grantReplicas.
const (
	grantReplicas = 3
	grantMinISR   = 2
)

// ErrTopicDurability is the error of a grant topic replicated less than a
// cluster of its size allows.
var ErrTopicDurability = errors.New("storage: grant topic durability")

// OpenKafka connects to brokers, or when brokers is empty starts the
// embedded broker persisted under dir, and makes sure the grant topic
// exists with partitions partitions. Topics are always created explicitly:
// the embedded broker forgets auto-created topics on kill -9.
func OpenKafka(brokers []string, dir string, partitions int32) (*Kafka, error) {
	return OpenKafkaTopic(brokers, dir, GrantTopic, partitions)
}

// OpenKafkaTopic is OpenKafka with the grant topic named topic ("":
// GrantTopic).
func OpenKafkaTopic(brokers []string, dir, topic string, partitions int32) (*Kafka, error) {
	if topic == "" {
		topic = GrantTopic
	}
	if len(brokers) == 0 {
		return startBroker(dir, 0, topic, partitions)
	}
	k := &Kafka{Brokers: brokers, Topic: topic}
	if err := k.ensureTopic(partitions); err != nil {
		return nil, err
	}
	if err := k.checkDurability(); err != nil {
		return nil, err
	}
	return k, nil
}

// checkDurability reads the grant topic's replication factor (its least
// replicated partition) and min.insync.replicas. On a cluster of at least
// grantReplicas brokers, less than grantReplicas and grantMinISR is an
// error (an acknowledged grant could die with one broker); on a smaller
// cluster it sets Durability for the node to log.
func (k *Kafka) checkDurability() error {
	admin, brokers, err := k.admin()
	if err != nil {
		return err
	}
	defer admin.Close()
	metas, err := admin.DescribeTopics([]string{k.Topic})
	if err != nil || len(metas) != 1 || metas[0].Err != sarama.ErrNoError {
		return fmt.Errorf("%w: describe topic %s: %v", ErrUnavailable, k.Topic, err)
	}
	rf := -1
	for _, p := range metas[0].Partitions {
		if rf < 0 || len(p.Replicas) < rf {
			rf = len(p.Replicas)
		}
	}
	minISR, err := minInsyncReplicas(admin, k.Topic)
	if err != nil {
		return fmt.Errorf("%w: describe config of %s: %v", ErrUnavailable, k.Topic, err)
	}
	switch {
	case len(brokers) >= grantReplicas && (rf < grantReplicas || minISR < grantMinISR):
		return fmt.Errorf("%w: topic %s has replication factor %d and min.insync.replicas %d on a cluster of %d brokers; want at least %d and %d, so that an acknowledged grant survives a broker's loss (alter the topic: kafka-reassign-partitions, kafka-configs --alter --add-config min.insync.replicas=%d)",
			ErrTopicDurability, k.Topic, rf, minISR, len(brokers), grantReplicas, grantMinISR, grantMinISR)
	case rf < grantReplicas || minISR < grantMinISR:
		k.Durability = fmt.Sprintf("topic %s has replication factor %d and min.insync.replicas %d on a cluster of %d brokers: losing a broker can lose acknowledged grants (production needs %d brokers, %d in sync)",
			k.Topic, rf, minISR, len(brokers), grantReplicas, grantMinISR)
	}
	return nil
}

// StartBroker starts the embedded broker on 127.0.0.1:port (0 = any) with
// its log under dir/kafka, and creates the grant topic if needed.
func StartBroker(dir string, port int, partitions int32) (*Kafka, error) {
	return startBroker(dir, port, GrantTopic, partitions)
}

func startBroker(dir string, port int, topic string, partitions int32) (*Kafka, error) {
	k := &Kafka{Topic: topic}
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

// minInsyncReplicas reads topic's min.insync.replicas (1 when the broker
// reports none).
func minInsyncReplicas(admin sarama.ClusterAdmin, topic string) (int, error) {
	res, err := admin.DescribeConfigs([]*sarama.ConfigResource{{Type: sarama.TopicResource, Name: topic,
		ConfigNames: []string{"min.insync.replicas"}}}, sarama.DescribeConfigsOptions{})
	if err != nil {
		return 0, err
	}
	n := 1
	for _, r := range res {
		if r.ErrorCode != sarama.ErrNoError {
			return 0, fmt.Errorf("%v: %s", r.ErrorCode, r.ErrorMsg)
		}
		for _, e := range r.Configs {
			if e.Name == "min.insync.replicas" {
				if _, err := fmt.Sscan(e.Value, &n); err != nil {
					return 0, fmt.Errorf("min.insync.replicas %q: %v", e.Value, err)
				}
			}
		}
	}
	return n, nil
}

// admin connects an admin client and lists the cluster's brokers; the
// caller closes the client.
func (k *Kafka) admin() (sarama.ClusterAdmin, []*sarama.Broker, error) {
	admin, err := sarama.NewClusterAdmin(k.Brokers, SaramaConfig("redrain-admin"))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: kafka %v: %v", ErrUnavailable, k.Brokers, err)
	}
	brokers, _, err := admin.DescribeCluster()
	if err != nil {
		admin.Close()
		return nil, nil, fmt.Errorf("%w: describe kafka cluster: %v", ErrUnavailable, err)
	}
	return admin, brokers, nil
}

func (k *Kafka) ensureTopic(partitions int32) error { return k.EnsureTopic(k.Topic, partitions) }

// EnsureTopic creates topic with partitions partitions, replicated as the
// grant topic is, unless it exists. Topics are always created explicitly:
// the embedded broker forgets auto-created topics on kill -9.
func (k *Kafka) EnsureTopic(topic string, partitions int32) error {
	admin, brokers, err := k.admin()
	if err != nil {
		return err
	}
	defer admin.Close()
	// Replicated on up to grantReplicas brokers, acknowledged by
	// grantMinISR of them (the embedded broker is one: 1 and 1).
	rf := int16(min(grantReplicas, max(len(brokers), 1)))
	minISR := strconv.Itoa(int(max(1, min(rf-1, grantMinISR))))
	err = admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: rf,
		ConfigEntries: map[string]*string{"min.insync.replicas": &minISR}}, false)
	var te *sarama.TopicError
	if err != nil && !(errors.As(err, &te) && te.Err == sarama.ErrTopicAlreadyExists) && !errors.Is(err, sarama.ErrTopicAlreadyExists) {
		return fmt.Errorf("%w: create topic %s: %v", ErrUnavailable, topic, err)
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
