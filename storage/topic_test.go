package storage_test

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"redrain/ledger"
	"redrain/storage"
	"redrain/storage/storagetest"
)

// TestGrantTopicNamed: the broker, the writer and a reader on a grant topic
// of another name (serve --grant-topic): the grants land there, and no
// topic of the default name is made.
func TestGrantTopicNamed(t *testing.T) {
	const topic, partitions = "campaign-7.grants", 2
	k, err := storage.OpenKafkaTopic(nil, t.TempDir(), topic, partitions)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if k.Topic != topic {
		t.Errorf("Kafka.Topic = %q, want %q", k.Topic, topic)
	}
	w, err := storage.NewGrantWriterOn(k.Brokers, topic, partitions, storage.DefaultWriterTiming)
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint64]ledger.Grant{}
	for id := uint64(1); id <= 20; id++ {
		want[id] = testGrant(id)
		if err := appendOne(w, want[id]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	checkExactlyOnce(t, storagetest.ReadGrantTopicNamed(t, k.Brokers, topic, partitions), want, partitions)
	if d, err := storage.OpenKafka(k.Brokers, "", partitions); err != nil || d.Topic != storage.GrantTopic {
		t.Errorf("OpenKafka on the same brokers: %+v, %v, want the default topic", d, err)
	}
}

// TestGrantRecordWithKcatAndProtoc runs the README's command on a record a
// GrantWriter wrote to the embedded broker: kcat prints its bytes and
// protoc decodes them with schema/grant.proto.
func TestGrantRecordWithKcatAndProtoc(t *testing.T) {
	for _, tool := range []string{"kcat", "protoc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not on PATH (make test-deps installs kcat and protobuf-compiler)", tool)
		}
	}
	const partitions = 2
	k := storagetest.Kafka(t, "", partitions)
	w, err := storage.NewGrantWriter(k.Brokers, partitions)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	gs := []ledger.Grant{testGrant(1), testGrant(2), testGrant(3)}
	gs[2].Legacy = true
	if _, err := w.Append(0, gs[:1]); err != nil { // an older record first: -o -1 takes the last
		t.Fatal(err)
	}
	if _, err := w.Append(0, gs); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", fmt.Sprintf(
		`kcat -C -b %s -t redrain.grants -p 0 -o -1 -c 1 -e -q -f '%%s' | protoc --decode redrain.v1.GrantRecord schema/grant.proto`, k.Brokers[0]))
	cmd.Dir = ".." // the repository, where the README runs it
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kcat | protoc: %v\n%s", err, stderr.String())
	}
	text := string(out)
	if !strings.HasPrefix(text, "version: 3\ngrants {\n") || strings.Count(text, "grants {") != 3 {
		t.Errorf("kcat | protoc printed\n%s\nwant version 3 and three grants", text)
	}
	for _, g := range gs {
		for _, want := range []string{
			fmt.Sprintf("  act_id: %d\n", g.ActID), fmt.Sprintf("  user_id: %q\n", g.UserID),
			fmt.Sprintf("  amount: %d\n", g.Amount), fmt.Sprintf("  issued_at: %d\n", g.IssuedAt),
		} {
			if !strings.Contains(text, want) {
				t.Errorf("kcat | protoc printed\n%s\nwant it to contain %q", text, want)
			}
		}
	}
	if strings.Count(text, "legacy_keys: true") != 1 {
		t.Errorf("kcat | protoc printed\n%s\nwant one legacy grant", text)
	}
}
