package ingress

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"redrain/adminauth"
	"redrain/lines"
	"redrain/storage"
	"redrain/storage/storagetest"
)

// TestSyncNotify: POST /v1/sync/notify answers 202 once the notice is on
// the sync topic; an unsigned, forbidden, malformed, oversized notice or
// one for an unknown line gets its 4xx and queues nothing.
func TestSyncNotify(t *testing.T) {
	k := storagetest.Kafka(t, "", 1)
	if err := k.EnsureTopic(lines.Topic, 2); err != nil {
		t.Fatal(err)
	}
	line := httptest.NewServer(http.NotFoundHandler()) // never pulled: no consumer runs
	t.Cleanup(line.Close)
	syncer, err := lines.New(lines.Config{Lines: []lines.Line{{ID: "games", PullURL: line.URL, Rate: 10}},
		Brokers: k.Brokers, TiKV: storagetest.TiKV(t, "")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(syncer.Close)
	keys, err := adminauth.ParseAppKeys(appKeys)
	if err != nil {
		t.Fatal(err)
	}
	ts := newServerOn(t, nil, false, 1, func(s *Server) {
		s.Apps = &adminauth.Verifier{Keys: keys, Window: adminauth.AppWindowDefault, Nonces: adminauth.NewHashNonces(2 * adminauth.AppWindowDefault)}
		s.Sync = syncer
	})
	app1 := appSigner(t, 0)
	const path = "/v1/sync/notify"
	good := `{"line":"games","app_id":1,"user_id":"u-1"}`
	wantAnswer(t, "unsigned", ts.send(t, "POST", path, good, nil), 401, "unauthorized")
	wantAnswer(t, "another app's user", ts.signed(t, app1, "POST", path, `{"line":"games","app_id":2,"user_id":"u-1"}`), 403, "forbidden")
	wantAnswer(t, "bad JSON", ts.signed(t, app1, "POST", path, `{"line":"games",`), 400, "malformed_request")
	wantAnswer(t, "no user", ts.signed(t, app1, "POST", path, `{"line":"games","app_id":1}`), 400, "malformed_request")
	wantAnswer(t, "unknown line", ts.signed(t, app1, "POST", path, `{"line":"nope","app_id":1,"user_id":"u-1"}`), 404, "unknown_line")
	wantAnswer(t, "too large", ts.signed(t, app1, "POST", path, good+strings.Repeat(" ", BodyBytesMax)), 413, "request_too_large")
	wantAnswer(t, "GET", ts.signed(t, app1, "GET", path, ""), 405, "method_not_allowed")
	if n := topicRecords(t, k.Brokers); n != 0 {
		t.Fatalf("%d notices queued for refused requests", n)
	}
	got := ts.signed(t, app1, "POST", path, good)
	if got.status != 202 || string(got.body) != `{"status":"queued"}` {
		t.Fatalf("notice = %d %s, want 202 queued", got.status, got.body)
	}
	if n := topicRecords(t, k.Brokers); n != 1 {
		t.Fatalf("%d notices on the topic after one accepted, want 1", n)
	}

	// A node without lines knows none.
	bare := newServerOn(t, nil, false, 1)
	wantAnswer(t, "no lines", bare.send(t, "POST", path, good, nil), 404, "unknown_line")
}

// topicRecords counts the records on the sync topic.
func topicRecords(t *testing.T, brokers []string) int64 {
	t.Helper()
	c, err := sarama.NewClient(brokers, storage.SaramaConfig("sync-test"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	parts, err := c.Partitions(lines.Topic)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, p := range parts {
		hwm, err := c.GetOffset(lines.Topic, p, sarama.OffsetNewest)
		if err != nil {
			t.Fatal(err)
		}
		n += hwm
	}
	return n
}

// BenchmarkSyncNotifyRoute measures notices a second that POST
// /v1/sync/notify accepts (202: parsed, checked and acknowledged by the
// embedded broker) from 32 keep-alive clients (net/http, unsigned; their
// CPU shares the machine's two cores with the server and the broker).
func BenchmarkSyncNotifyRoute(b *testing.B) {
	k := storagetest.Kafka(b, "", 1)
	if err := k.EnsureTopic(lines.Topic, 8); err != nil {
		b.Fatal(err)
	}
	syncer, err := lines.New(lines.Config{Lines: []lines.Line{{ID: "games", PullURL: "http://127.0.0.1:1/", Rate: 10}},
		Brokers: k.Brokers, TiKV: storagetest.TiKV(b, "")})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(syncer.Close)
	ts := newServerOn(b, nil, false, 1, func(s *Server) { s.Sync = syncer })
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	var seq atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(16)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			body := fmt.Sprintf(`{"line":"games","app_id":1,"user_id":"u%d"}`, seq.Add(1))
			resp, err := client.Post(ts.url+"/v1/sync/notify", "application/json", strings.NewReader(body))
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				b.Errorf("notice: %d", resp.StatusCode)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "notices/s")
}
