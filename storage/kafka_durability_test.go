package storage

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"
)

// topicDurability reads the grant topic's replicas per partition and its
// min.insync.replicas.
func topicDurability(t *testing.T, brokers []string) (rf int, minISR string) {
	t.Helper()
	admin, err := sarama.NewClusterAdmin(brokers, SaramaConfig("test"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	metas, err := admin.DescribeTopics([]string{GrantTopic})
	if err != nil || len(metas) != 1 {
		t.Fatal(err)
	}
	rf = len(metas[0].Partitions[0].Replicas)
	n, err := minInsyncReplicas(admin, GrantTopic)
	if err != nil {
		t.Fatal(err)
	}
	return rf, strconv.Itoa(n)
}

// TestGrantTopicDurability: on a cluster of three brokers the grant topic
// is created with three replicas, two in sync; a topic made before with
// one replica there is refused with what to change; on a single broker
// the topic opens with a warning that says what a broker's loss can lose.
func TestGrantTopicDurability(t *testing.T) {
	three, err := kfake.NewCluster(kfake.NumBrokers(3))
	if err != nil {
		t.Fatal(err)
	}
	defer three.Close()
	k, err := OpenKafka(three.ListenAddrs(), "", 4)
	if err != nil {
		t.Fatalf("OpenKafka on three brokers: %v", err)
	}
	if rf, minISR := topicDurability(t, k.Brokers); rf != 3 || minISR != "2" || k.Durability != "" {
		t.Fatalf("three brokers: replication %d, min.insync.replicas %s, warning %q; want 3, 2, none", rf, minISR, k.Durability)
	}

	weak, err := kfake.NewCluster(kfake.NumBrokers(3))
	if err != nil {
		t.Fatal(err)
	}
	defer weak.Close()
	admin, err := sarama.NewClusterAdmin(weak.ListenAddrs(), SaramaConfig("test"))
	if err != nil {
		t.Fatal(err)
	}
	err = admin.CreateTopic(GrantTopic, &sarama.TopicDetail{NumPartitions: 4, ReplicationFactor: 1}, false)
	admin.Close()
	if err != nil {
		t.Fatal(err)
	}
	if rf, _ := topicDurability(t, weak.ListenAddrs()); rf != 1 {
		t.Fatalf("the topic made with one replica has %d", rf)
	}
	_, err = OpenKafka(weak.ListenAddrs(), "", 4)
	if !errors.Is(err, ErrTopicDurability) || !strings.Contains(err.Error(), "min.insync.replicas") {
		t.Fatalf("OpenKafka of a topic with one replica on three brokers = %v, want ErrTopicDurability", err)
	}

	one, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	k, err = OpenKafka(one.ListenAddrs(), "", 4)
	if err != nil {
		t.Fatalf("OpenKafka on one broker: %v", err)
	}
	if !strings.Contains(k.Durability, "losing a broker can lose acknowledged grants") {
		t.Fatalf("one broker: warning %q", k.Durability)
	}
}
