package node_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"redrain/node"
)

// levels keeps the level and message of every record a node logs at INFO
// or above, and passes the record on to the test's log.
type levels struct {
	slog.Handler
	mu  *sync.Mutex
	got *[]string
	// errors counts records at ERROR or above.
	errors *atomic.Int64
}

func newLevels(t *testing.T) (*slog.Logger, *levels) {
	l := &levels{Handler: newTestLog(t).Handler(), mu: &sync.Mutex{}, got: new([]string), errors: new(atomic.Int64)}
	return slog.New(l), l
}

func (l *levels) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		l.errors.Add(1)
		l.mu.Lock()
		*l.got = append(*l.got, r.Level.String()+" "+r.Message)
		l.mu.Unlock()
	}
	return l.Handler.Handle(ctx, r)
}

func (l *levels) WithAttrs(as []slog.Attr) slog.Handler {
	c := *l
	c.Handler = l.Handler.WithAttrs(as)
	return &c
}

func (l *levels) WithGroup(name string) slog.Handler {
	c := *l
	c.Handler = l.Handler.WithGroup(name)
	return &c
}

// stopGrace is the tests' Config.StopGrace: long enough for the poller
// to see /readyz answer 503 several times before the listener closes.
const stopGrace = 500 * time.Millisecond

// TestStopDrainsThenCloses stops a ready node, idle but for a kept-alive
// client connection, and one under a light load of grants, and checks the
// order of a clean stop: /readyz answers 503 while the node still serves
// (grants during the grace are answered 200), then the listener closes;
// nothing is logged at ERROR; the store audits clean afterwards. It logs
// how long each stop took (BENCHMARKS.md, "Stop"); the bound (≤ 5 s for
// an idle or lightly loaded node) is not asserted on a shared machine.
func TestStopDrainsThenCloses(t *testing.T) {
	for _, load := range []bool{false, true} {
		name := "idle"
		if load {
			name = "light load"
		}
		t.Run(name, func(t *testing.T) { testStop(t, load) })
	}
}

func testStop(t *testing.T, load bool) {
	log, lv := newLevels(t)
	dir := t.TempDir()
	n, err := node.Start(node.Config{DataDir: dir, HTTP: "127.0.0.1:0", AdminHTTP: "127.0.0.1:0",
		ConfigFile: configFile(t), StopGrace: stopGrace, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopNode(t, n) })
	deadline := time.Now().Add(readyWithin)
	for code, _ := get(t, n, "/readyz"); code != http.StatusOK; code, _ = get(t, n, "/readyz") {
		if time.Now().After(deadline) {
			t.Fatalf("not ready within %v", readyWithin)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// An idle client that keeps its connection open must not hold the
	// stop up.
	idle, err := net.Dial("tcp", n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if _, err := fmt.Fprintf(idle, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.ReadResponse(bufio.NewReader(idle), nil); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("kept-alive connection: %v %v", resp, err)
	}

	var wg sync.WaitGroup
	done := make(chan struct{})
	// The grants of the light load, one at a time from 4 clients.
	var granted, refused atomic.Int64
	var grantErrs sync.Map
	if load {
		for w := range 4 {
			wg.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-done:
						return
					default:
					}
					var a grantAnswer
					err := post(n, "/v1/grants", demoGrant(fmt.Sprintf("stop-%d-%d", w, i)), &a)
					switch {
					case err == nil:
						granted.Add(1)
					case closedErr(err):
						refused.Add(1) // the listener closed: a load balancer's retry goes elsewhere
						time.Sleep(10 * time.Millisecond)
					default:
						grantErrs.Store(err.Error(), true)
					}
				}
			})
		}
		time.Sleep(300 * time.Millisecond)
	}

	// The poller: /readyz on fresh connections until the listener closes.
	type probe struct {
		at   time.Duration
		code int // 0: no answer (the listener closed)
	}
	var probes []probe
	start := time.Now()
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		for {
			resp, err := c.Get("http://" + n.Addr() + "/readyz")
			if err != nil {
				probes = append(probes, probe{time.Since(start), 0})
				return
			}
			resp.Body.Close()
			probes = append(probes, probe{time.Since(start), resp.StatusCode})
			time.Sleep(20 * time.Millisecond)
		}
	}()
	time.Sleep(50 * time.Millisecond) // a few probes answer 200 first

	stopAt := time.Since(start)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n.Stop(ctx)
	took := time.Since(start) - stopAt
	close(done)
	wg.Wait()
	<-polled

	t.Logf("stop took %v (grace %v); grants during the run %d answered, %d refused by the closed listener", took, stopGrace, granted.Load(), refused.Load())
	grantErrs.Range(func(k, _ any) bool { t.Errorf("grant answered other than 200 or refused: %s", k); return true })
	// The probes: 200 until the stop, 503 during the grace, then no
	// answer; never 200 after a 503.
	var seen503 bool
	var first503, closed time.Duration
	for _, p := range probes {
		switch {
		case p.code == http.StatusServiceUnavailable:
			if !seen503 {
				first503 = p.at - stopAt
			}
			seen503 = true
		case p.code == http.StatusOK && seen503:
			t.Errorf("/readyz answered 200 at %v, after 503", p.at-stopAt)
		case p.code == 0:
			closed = p.at - stopAt
		case p.code != http.StatusOK:
			t.Errorf("/readyz answered %d at %v", p.code, p.at-stopAt)
		}
	}
	if !seen503 {
		t.Fatalf("/readyz never answered 503 before the listener closed (probes %v)", probes)
	}
	t.Logf("/readyz: 503 from %v after Stop began, listener closed at %v", first503.Round(time.Millisecond), closed.Round(time.Millisecond))
	if closed < first503 {
		t.Errorf("listener closed at %v, before /readyz answered 503 (%v)", closed, first503)
	}
	if load && granted.Load() == 0 {
		t.Error("no grant answered during the run")
	}
	if k := lv.errors.Load(); k > 0 {
		lv.mu.Lock()
		t.Errorf("%d records at ERROR: %q", k, *lv.got)
		lv.mu.Unlock()
	}
	// The store audits clean once the node is back (ready: booked to the
	// topic's end).
	audit(t, startNode(t, dir, ""))
}

// closedErr reports whether err is a client's failure to reach a closed
// listener, or a kept-alive connection the server closed as idle just as
// the client sent on it (net/http retries that only for idempotent
// requests; the request was never read).
func closedErr(err error) bool {
	var op *net.OpError
	// EOF: the client sent its request on a kept-alive connection at the
	// moment the stop closed it as idle (it had read nothing from it), and
	// no byte of an answer came back; Go names it so when the close won
	// the race after the write, "server closed idle connection" before.
	return errors.As(err, &op) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, io.EOF) ||
		strings.Contains(err.Error(), "server closed idle connection")
}
