package node_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"redrain/node"
	"redrain/storage"
	"redrain/storage/storagetest"
)

// TestParkThroughAdmin: a record booking cannot read stops its partition
// (the node is not ready, and says why); POST /admin/v1/parked with a
// reason parks it, the partition goes on and the node is ready again;
// GET lists it with the key that parked it. A park without a reason, or of
// an offset with no record, is refused.
func TestParkThroughAdmin(t *testing.T) {
	n := startNode(t, t.TempDir(), storagetest.Redis(t))
	p := grantProducer(t, n)
	_, offset, err := p.SendMessage(&sarama.ProducerMessage{Topic: storage.GrantTopic, Partition: 0, Value: sarama.ByteEncoder("not a grant record")})
	p.Close()
	if err != nil {
		t.Fatal(err)
	}
	wait := func(what string, ok func(code int, body []byte) bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			code, body := get(t, n, "/readyz")
			if ok(code, body) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: /readyz still %d %s", what, code, body)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	wait("the poisoned record stops its partition", func(code int, body []byte) bool {
		return code == 503 && bytes.Contains(body, []byte("partition 0 stuck"))
	})
	park := func(body string) (int, []byte) { t.Helper(); return postPark(t, n, body) }
	if code, body := park(`{"partition":0,"offset":0}`); code != 400 {
		t.Fatalf("park without a reason = %d %s, want 400", code, body)
	}
	if code, body := park(`{"partition":0,"offset":99999,"reason":"x"}`); code != 404 {
		t.Fatalf("park of an offset with no record = %d %s, want 404", code, body)
	}
	code, body := park(`{"partition":0,"offset":` + jsonInt(offset) + `,"reason":"garbage written by a test"}`)
	if code != 200 || !bytes.Contains(body, []byte(`"created":true`)) {
		t.Fatalf("park = %d %s", code, body)
	}
	wait("the partition goes on", func(code int, _ []byte) bool { return code == 200 })
	code, body = get(t, n, "/admin/v1/parked")
	var list struct {
		Parked []struct {
			Partition int32
			Offset    int64
			By        string
			Reason    string
		}
	}
	if err := json.Unmarshal(body, &list); code != 200 || err != nil || len(list.Parked) != 1 || list.Parked[0].Offset != offset ||
		list.Parked[0].By != "test" || list.Parked[0].Reason != "garbage written by a test" {
		t.Fatalf("GET /admin/v1/parked = %d %s", code, body)
	}
}

// postPark sends POST /admin/v1/parked with body, signed, and returns the
// answer.
func postPark(t *testing.T, n *node.Node, body string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("POST", urlOf(n, "/admin/v1/parked"), strings.NewReader(body))
	if err := adminSigner.Sign(req, []byte(body)); err != nil {
		t.Fatal(err)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp.StatusCode, b.Bytes()
}

func jsonInt(v int64) string { b, _ := json.Marshal(v); return string(b) }

// grantProducer writes records straight into n's grant topic, to the
// partition each message names.
func grantProducer(t *testing.T, n *node.Node) sarama.SyncProducer {
	t.Helper()
	cfg := storage.SaramaConfig("node-test")
	cfg.Producer.Return.Successes = true
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	p, err := sarama.NewSyncProducer(n.Brokers(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
