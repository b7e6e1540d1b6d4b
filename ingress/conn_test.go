package ingress

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"redrain/metrics/promexport"
)

// pipeline writes every request in one write on one connection and reads
// the answers in order.
func pipeline(t *testing.T, url string, reqs []string) []*http.Response {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, strings.Join(reqs, "")); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	out := make([]*http.Response, len(reqs))
	for i := range reqs {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
		out[i] = resp
	}
	return out
}

func postReq(path, body string) string {
	return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", path, len(body), body)
}

// TestPipelinedAnswersInOrder sends grants, a repeat, a malformed grant
// and another route pipelined on one connection: the grants are admitted
// together as one batch, and every answer comes back in request order.
func TestPipelinedAnswersInOrder(t *testing.T) {
	ts := newTestServer(t, nil)
	reqs := []string{
		postReq("/v1/grants", grantBody(1, "p1")),
		postReq("/v1/grants", grantBody(1, "p2")),
		postReq("/v1/grants", `{"app_id":1}`),
		postReq("/v1/grants", grantBody(1, "p1")),
		"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
		postReq("/v1/grants", grantBody(1, "p3")),
		postReq("/v1/grants", grantBody(1, "p4")),
	}
	answers := pipeline(t, ts.url, reqs)
	var g [7]grantAnswer
	for _, i := range []int{0, 1, 3, 5, 6} {
		if answers[i].StatusCode != http.StatusOK || json.NewDecoder(answers[i].Body).Decode(&g[i]) != nil || g[i].Amount <= 0 {
			t.Fatalf("answer %d: %d, want a packet", i, answers[i].StatusCode)
		}
	}
	if answers[2].StatusCode != http.StatusBadRequest {
		t.Errorf("answer 2 (malformed) = %d, want 400", answers[2].StatusCode)
	}
	if b, _ := io.ReadAll(answers[4].Body); answers[4].StatusCode != http.StatusOK || !strings.Contains(string(b), `"ok"`) {
		t.Errorf("answer 4 (healthz) = %d %s", answers[4].StatusCode, b)
	}
	if g[3].OutTradeNo != g[0].OutTradeNo || g[3].ActID != g[0].ActID {
		t.Errorf("the repeat of p1 answered %+v, want p1's packet %+v", g[3], g[0])
	}
	seen := map[string]bool{}
	for _, i := range []int{0, 1, 5, 6} {
		if seen[g[i].OutTradeNo] {
			t.Errorf("answer %d repeats another user's packet", i)
		}
		seen[g[i].OutTradeNo] = true
	}
	// The users were bound in request order, each in its run: p1 before
	// p2, and p3 before p4 (the runs on either side of healthz).
	if !(g[0].ActID < g[1].ActID && g[1].ActID < g[5].ActID && g[5].ActID < g[6].ActID) {
		t.Errorf("act_ids %d %d %d %d: answers out of request order", g[0].ActID, g[1].ActID, g[5].ActID, g[6].ActID)
	}
	var text bytes.Buffer
	text.WriteString(promexport.Text(ts.srv.Metrics))
	var batches int
	for _, line := range strings.Split(text.String(), "\n") {
		if strings.HasPrefix(line, "redrain_grant_batch_grants_count ") {
			fmt.Sscan(strings.TrimPrefix(line, "redrain_grant_batch_grants_count "), &batches)
		}
	}
	if batches < 1 || batches > 2 {
		t.Errorf("%d shard batches for two runs of pipelined grants, want 1 or 2", batches)
	}
}

// TestConnectionLimits: a body over the limit is refused 413 and the
// connection closes; Connection: close is honoured after answering.
func TestConnectionLimits(t *testing.T) {
	ts := newTestServer(t, nil)
	// Only the header of the large body is sent: the server refuses on
	// its Content-Length, before reading any of it.
	answers := pipeline(t, ts.url, []string{
		"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
		fmt.Sprintf("POST /v1/grants/batch HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", ListBodyBytesMax+1),
	})
	if answers[0].StatusCode != http.StatusOK || answers[1].StatusCode != http.StatusRequestEntityTooLarge || !answers[1].Close {
		t.Errorf("answers %d, %d (close %v); want 200, then 413 closing", answers[0].StatusCode, answers[1].StatusCode, answers[1].Close)
	}
	answers = pipeline(t, ts.url, []string{"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"})
	if !answers[0].Close {
		t.Error("Connection: close was not answered with a closing response")
	}
}

// TestHandlerPanicIsAnswered: a handler that panics (here /readyz) is
// answered 500 internal, counted, and its connection closes after the
// answers it owed; requests pipelined before it are answered as usual and
// the server goes on serving new connections.
func TestHandlerPanicIsAnswered(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.srv.Ready = func() error { panic("boom") }
	answers := pipeline(t, ts.url, []string{
		"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n",
	})
	if answers[0].StatusCode != http.StatusOK {
		t.Errorf("healthz before the panic = %d", answers[0].StatusCode)
	}
	body, _ := io.ReadAll(answers[1].Body)
	if answers[1].StatusCode != http.StatusInternalServerError || !strings.Contains(string(body), `"internal"`) || !answers[1].Close {
		t.Errorf("the panicking request = %d %s (close %v), want 500 internal and the connection closed", answers[1].StatusCode, body, answers[1].Close)
	}
	var text bytes.Buffer
	text.WriteString(promexport.Text(ts.srv.Metrics))
	if !strings.Contains(text.String(), "redrain_http_panics_total 1\n") {
		t.Errorf("metrics do not count the panic:\n%s", text.String())
	}
	resp, err := http.Get(ts.url + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz after the panic: %v %v", resp, err)
	}
	resp.Body.Close()
}
