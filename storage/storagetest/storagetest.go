// Package storagetest starts real backends for tests: redis-server from the
// system (installed by `make test`), and the embedded Kafka broker and TiKV
// test cluster under a test's temporary directory. Every server listens on
// 127.0.0.1 and stops when the test ends.
package storagetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/redis/go-redis/v9"

	"redrain/ledger"
	"redrain/storage"
)

// portsLow and portsHigh bound the ports tried for servers that cannot take
// port 0: fixed ports above 32767 collide with client sockets here.
const portsLow, portsHigh = 20000, 32767

// Redis starts a redis-server on a free loopback port (no persistence) and
// returns its address. The test fails if redis-server is not installed.
func Redis(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not found (make test installs it): %v", err)
	}
	for attempt := 0; attempt < 20; attempt++ {
		port := portsLow + rand.IntN(portsHigh-portsLow)
		if !free(port) {
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		cmd := exec.Command(path, "--bind", "127.0.0.1", "--port", strconv.Itoa(port),
			"--save", "", "--appendonly", "no", "--protected-mode", "no")
		if err := cmd.Start(); err != nil {
			t.Fatalf("start redis-server: %v", err)
		}
		if waitPing(addr, 5*time.Second) {
			t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
			return addr
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	t.Fatal("could not start redis-server on a free port")
	return ""
}

func free(port int) bool {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}

func waitPing(addr string, within time.Duration) bool {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// TiKV opens the embedded TiKV test cluster under dir (t.TempDir() when
// empty) and closes it when the test ends.
func TiKV(t testing.TB, dir string) *storage.TiKV {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	kv, err := storage.OpenTiKV(nil, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kv.Close() })
	return kv
}

// Kafka starts the embedded broker under dir (t.TempDir() when empty) with
// the grant topic created with partitions partitions.
func Kafka(t testing.TB, dir string, partitions int32) *storage.Kafka {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	k, err := storage.OpenKafka(nil, dir, partitions)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	return k
}

// GrantRecord is one record of the grant topic as a consumer sees it.
type GrantRecord struct {
	Partition int32
	Offset    int64
	Grants    []ledger.Grant
}

// ReadGrantTopic reads every record of the grant topic with a plain sarama
// consumer, up to each partition's high water mark, decodes it, and checks
// that its key is its shard.
func ReadGrantTopic(t testing.TB, brokers []string, partitions int32) []GrantRecord {
	t.Helper()
	return ReadGrantTopicNamed(t, brokers, storage.GrantTopic, partitions)
}

// ReadGrantTopicNamed is ReadGrantTopic of the grant topic named topic.
func ReadGrantTopicNamed(t testing.TB, brokers []string, topic string, partitions int32) []GrantRecord {
	t.Helper()
	client, err := sarama.NewClient(brokers, storage.SaramaConfig("redrain-test-reader"))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	got, err := client.Partitions(topic)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != int(partitions) {
		t.Fatalf("topic %s has %d partitions, want %d", topic, len(got), partitions)
	}
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close()
	var out []GrantRecord
	for p := range partitions {
		hwm, err := client.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil {
			t.Fatal(err)
		}
		if hwm == 0 {
			continue
		}
		pc, err := consumer.ConsumePartition(topic, p, sarama.OffsetOldest)
		if err != nil {
			t.Fatal(err)
		}
		timeout := time.After(30 * time.Second)
		for done := false; !done; {
			select {
			case m := <-pc.Messages():
				gs, err := ledger.DecodeGrantRecord(nil, m.Value)
				if err != nil {
					t.Fatalf("partition %d offset %d: %v", p, m.Offset, err)
				}
				if want := string(storage.ShardKey(p)); string(m.Key) != want {
					t.Errorf("partition %d offset %d: key %q, want the shard's %q", p, m.Offset, m.Key, want)
				}
				out = append(out, GrantRecord{Partition: m.Partition, Offset: m.Offset, Grants: gs})
				done = m.Offset >= hwm-1
			case err := <-pc.Errors():
				t.Fatalf("partition %d: %v", p, err)
			case <-timeout:
				t.Fatalf("partition %d: records up to offset %d not read within 30s", p, hwm-1)
			}
		}
		if err := pc.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}
