package ingress

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// TestStreamRunsOnItsConnection: a handler that sets a Stream gets its
// status and headers written, then writes events on the connection until
// the server shuts down (which ends the stream rather than waiting for
// it); a stream request pipelined before another is answered 400.
func TestStreamRunsOnItsConnection(t *testing.T) {
	ended := make(chan string, 1)
	s := &Server{Dashboard: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/event-stream")
		SetStream(ctx, func(w io.Writer, flush func() error, stop <-chan struct{}) {
			for i := 0; ; i++ {
				if _, err := fmt.Fprintf(w, "data: %d\n\n", i); err != nil || flush() != nil {
					ended <- "client"
					return
				}
				select {
				case <-stop:
					ended <- "stop"
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
		})
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()

	// Pipelined before another request: refused, and the later one answered.
	answers := pipeline(t, "http://"+ln.Addr().String(), []string{
		"GET /dashboard/events HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
	})
	if answers[0].StatusCode != http.StatusBadRequest || answers[1].StatusCode != http.StatusOK {
		t.Errorf("a stream pipelined first: %d, then %d; want 400, 200", answers[0].StatusCode, answers[1].StatusCode)
	}

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, "GET /dashboard/events HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" || !resp.Close || resp.ContentLength != -1 {
		t.Fatalf("stream answer %d %v (close %v, length %d)", resp.StatusCode, resp.Header, resp.Close, resp.ContentLength)
	}
	body := bufio.NewReader(resp.Body)
	for want := 0; want < 3; want++ {
		line, err := body.ReadString('\n')
		if err != nil || line != fmt.Sprintf("data: %d\n", want) {
			t.Fatalf("event %d: %q %v", want, line, err)
		}
		if _, err := body.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if why := <-ended; why != "stop" {
		t.Errorf("the stream ended by %s, want the server's stop", why)
	}
	if _, err := io.Copy(io.Discard, body); err != nil && !strings.Contains(err.Error(), "EOF") {
		t.Errorf("after the stop the connection ends: %v", err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
}
