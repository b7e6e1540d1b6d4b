package node_test

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"redrain/node"
	"redrain/storage"
	"redrain/storage/storagetest"
)

// TestGrantTopicAndGroupNamed: a node started with a grant topic and a
// booking group of its own (serve --grant-topic, --booking-group) writes
// its grants to that topic, in records keyed by shard, books them
// from it as a member of that group, and creates no topic by the default
// name.
func TestGrantTopicAndGroupNamed(t *testing.T) {
	const topic, group = "campaign-7.grants", "campaign-7-booking"
	n, err := node.Start(node.Config{DataDir: t.TempDir(), HTTP: "127.0.0.1:0", AdminHTTP: "127.0.0.1:0",
		Redis: storagetest.Redis(t), ConfigFile: configFile(t), Log: newTestLog(t),
		GrantTopic: topic, BookingGroup: group})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopNode(t, n) })
	for deadline := time.Now().Add(readyWithin); ; time.Sleep(50 * time.Millisecond) {
		code, body := get(t, n, "/readyz")
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node not ready within %v: %d %s", readyWithin, code, body)
		}
	}
	users := make([]string, 40)
	for i := range users {
		users[i] = fmt.Sprintf("topic-user-%d", i)
	}
	grantAll(t, n, users)
	waitBooked(t, n, int64(len(users)))

	granted := 0
	for _, r := range storagetest.ReadGrantTopicNamed(t, n.Brokers(), topic, storage.GrantPartitionsDefault) {
		granted += len(r.Grants)
	}
	if granted != len(users) {
		t.Errorf("topic %s holds %d grants, want %d", topic, granted, len(users))
	}
	admin, err := sarama.NewClusterAdmin(n.Brokers(), storage.SaramaConfig("node-test"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	topics, err := admin.ListTopics()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := topics[topic]; !ok {
		t.Errorf("topics %v: %s missing", topics, topic)
	}
	if _, ok := topics[storage.GrantTopic]; ok {
		t.Errorf("topic %s created though the node names %s", storage.GrantTopic, topic)
	}
	groups, err := admin.ListConsumerGroups()
	if err != nil {
		t.Fatal(err)
	}
	names := slices.Sorted(maps.Keys(groups))
	if !slices.Contains(names, group) || slices.Contains(names, "redrain-booking") {
		t.Errorf("consumer groups %v, want %s and not the default", names, group)
	}
}
