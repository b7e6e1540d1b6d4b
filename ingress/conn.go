package ingress

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"redrain/errcode"
)

// The API's connections are served here, on fasthttp's request and
// response types but not its server loop: fasthttp answers a connection's
// pipelined requests one at a time, reading the next only after answering
// the current, so a grant that waits for its Kafka acknowledgement held up
// every request behind it (measured while planning: single grants
// pipelined 64 deep reached 0.006× an empty handler). Here a connection's
// requests that have arrived are read before any is answered; consecutive
// grant requests among them are admitted together, as one batch; and every
// answer is written in order, with one flush.
const (
	// readBufferSize bounds a request's header (a larger one is refused).
	readBufferSize = 16 << 10
	// writeBufferSize: measured while planning, with pipelined clients a
	// 64 KiB write buffer raised the loopback ceiling ~10× over 4 KiB.
	writeBufferSize = 64 << 10
	// pipelineMax bounds the requests read ahead on one connection.
	pipelineMax = 128
	// connsMax bounds the connections served at once; past it a new one
	// is answered 503 and closed.
	connsMax = 1 << 16
	// readTimeout bounds reading a request once its first byte arrived,
	// writeTimeout writing a batch of answers, idleTimeout the wait for
	// the next request on a kept-alive connection.
	readTimeout  = time.Minute
	writeTimeout = time.Minute
	idleTimeout  = 2 * time.Minute
)

// conn is one client connection being served.
type conn struct {
	c    net.Conn
	idle atomic.Bool // waiting for a request: Shutdown may close it
	// asked is set once the client sent its first request; until then,
	// for freshWithin after accepted, Shutdown leaves the connection be.
	asked    atomic.Bool
	accepted time.Time
}

// freshWithin is how long Shutdown waits for the first request of a
// connection accepted just before the listener closed: its client may
// have written it already, and closing the connection unread would fail
// a request that no node has seen (net/http's Shutdown waits 5 s).
const freshWithin = 500 * time.Millisecond

// connSet tracks the connections of a server, for Shutdown.
type connSet struct {
	mu      sync.Mutex
	conns   map[*conn]struct{}
	closing bool
	ln      net.Listener
	done    sync.WaitGroup
	slots   chan struct{} // capacity connsMax
	stop    chan struct{} // closed when the server shuts down: ends event streams
}

// Serve answers on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		return ln.Close()
	}
	s.set = &connSet{conns: map[*conn]struct{}{}, ln: ln, slots: make(chan struct{}, connsMax), stop: make(chan struct{})}
	set := s.set
	s.mu.Unlock()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			set.mu.Lock()
			closing := set.closing
			set.mu.Unlock()
			if closing {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff) // accept errors only: out of file descriptors
				continue
			}
			return err
		}
		backoff = 0
		select {
		case set.slots <- struct{}{}:
		default:
			refuse(c)
			continue
		}
		cn := &conn{c: c, accepted: time.Now()}
		set.mu.Lock()
		if set.closing {
			set.mu.Unlock()
			<-set.slots
			_ = c.Close()
			continue
		}
		set.conns[cn] = struct{}{}
		set.done.Add(1)
		set.mu.Unlock()
		go func() {
			defer func() {
				_ = c.Close()
				set.mu.Lock()
				delete(set.conns, cn)
				set.mu.Unlock()
				<-set.slots
				set.done.Done()
			}()
			s.serveConn(cn, set)
		}()
	}
}

// refuse answers a connection over connsMax with 503 and closes it.
func refuse(c net.Conn) {
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	var resp fasthttp.Response
	resp.SetStatusCode(fasthttp.StatusServiceUnavailable)
	resp.Header.Set("Retry-After", "1")
	resp.Header.SetContentType("application/json")
	resp.SetBody(errcode.AppendError(nil, errcode.Errorf(errcode.CodeUnavailable, "too many connections; retry")))
	resp.SetConnectionClose()
	bw := bufio.NewWriter(c)
	_ = resp.Write(bw)
	_ = bw.Flush()
	_ = c.Close()
}

// serveConn reads what the client pipelined, answers it in order, and
// repeats until the client closes, asks to close, errs or times out, or
// the server shuts down.
func (s *Server) serveConn(cn *conn, set *connSet) {
	c := cn.c
	br := bufio.NewReaderSize(c, readBufferSize)
	bw := bufio.NewWriterSize(c, writeBufferSize)
	var ctxs []*fasthttp.RequestCtx
	for {
		cn.idle.Store(true)
		set.mu.Lock()
		closing := set.closing
		set.mu.Unlock()
		if closing {
			return
		}
		if c.SetReadDeadline(time.Now().Add(idleTimeout)) != nil {
			return
		}
		if _, err := br.Peek(1); err != nil {
			return
		}
		cn.idle.Store(false)
		cn.asked.Store(true)
		if c.SetReadDeadline(time.Now().Add(readTimeout)) != nil {
			return
		}
		n, last := 0, false
		var readErr error
		for n < pipelineMax && !last {
			if n == len(ctxs) {
				ctxs = append(ctxs, &fasthttp.RequestCtx{})
			}
			ctx := ctxs[n]
			ctx.Init2(c, nil, false)
			ctx.Request.Reset()
			ctx.Response.Reset()
			if readErr = readRequest(ctx, br, bw); readErr != nil {
				break
			}
			n++
			// Read ahead only what has arrived, and nothing after a
			// request that closes the connection.
			last = ctx.Request.Header.ConnectionClose() || br.Buffered() == 0
		}
		// After a panic the connection closes once it answered what it read;
		// and while the node drains before it stops, so that the client
		// reconnects to a node that stays.
		closeAfter := s.serveBatch(ctxs[:n]) || n > 0 && ctxs[n-1].Request.Header.ConnectionClose() ||
			s.Draining != nil && s.Draining()
		stream := takeStreams(ctxs[:n])
		if c.SetWriteDeadline(time.Now().Add(writeTimeout)) != nil {
			return
		}
		if stream != nil {
			// Answer what came before it, then stream until the client or
			// the server goes; the connection closes after it.
			for _, ctx := range ctxs[:n-1] {
				if ctx.Response.Write(bw) != nil {
					return
				}
			}
			runStream(c, bw, &ctxs[n-1].Response, stream, set.stop)
			return
		}
		for i, ctx := range ctxs[:n] {
			switch {
			case closeAfter && i == n-1:
				ctx.Response.SetConnectionClose()
			case !ctx.Request.Header.IsHTTP11():
				ctx.Response.Header.Set("Connection", "keep-alive")
			}
			if ctx.Response.Write(bw) != nil {
				return
			}
		}
		if readErr != nil && !isEOF(readErr) {
			writeReadError(bw, readErr)
			closeAfter = true
		}
		if bw.Flush() != nil || closeAfter || readErr != nil {
			return
		}
	}
}

// readRequest reads one request into ctx, answering an Expect:
// 100-continue first.
func readRequest(ctx *fasthttp.RequestCtx, br *bufio.Reader, bw *bufio.Writer) error {
	req := &ctx.Request
	if err := req.Header.Read(br); err != nil {
		return err
	}
	if req.MayContinue() {
		if _, err := bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
			return err
		}
		if err := bw.Flush(); err != nil {
			return err
		}
	}
	return req.ContinueReadBody(br, ListBodyBytesMax)
}

func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// writeReadError answers a request that could not be read (and closes the
// connection after it): too large, or not HTTP.
func writeReadError(bw *bufio.Writer, err error) {
	var resp fasthttp.Response
	e := errcode.Errorf(errcode.CodeMalformed, "unreadable HTTP request: %v", err)
	var small *fasthttp.ErrSmallBuffer
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		e = errTooLarge(ListBodyBytesMax+1, ListBodyBytesMax)
	case errors.As(err, &small):
		e = errcode.Errorf(errcode.CodeTooLarge, "request header over %d bytes", readBufferSize)
	}
	resp.SetStatusCode(e.Code.Status())
	resp.Header.SetContentType("application/json")
	resp.SetBody(errcode.AppendError(nil, e))
	resp.SetConnectionClose()
	_ = resp.Write(bw)
}

// serveBatch answers requests read together: each run of consecutive
// single-grant requests is admitted as one batch, every other request is
// handled alone, in order. It reports whether a handler panicked.
func (s *Server) serveBatch(ctxs []*fasthttp.RequestCtx) (panicked bool) {
	for i := 0; i < len(ctxs); {
		if !s.isSingleGrant(ctxs[i]) {
			panicked = s.recovering(ctxs[i:i+1], func() { s.handle(ctxs[i]) }) || panicked
			i++
			continue
		}
		j := i + 1
		for j < len(ctxs) && s.isSingleGrant(ctxs[j]) {
			j++
		}
		panicked = s.recovering(ctxs[i:j], func() { s.grantRun(ctxs[i:j]) }) || panicked
		i = j
	}
	return panicked
}

// recovering runs serve, which answers ctxs. A panic in it is logged with
// its stack and counted (redrain_http_panics_total), and every one of
// ctxs is answered 500 internal instead of whatever it held: the node goes
// on serving. A grant among them may have been issued; its retry answers
// the same packet, as after any uncertain failure.
func (s *Server) recovering(ctxs []*fasthttp.RequestCtx, serve func()) (panicked bool) {
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		panicked = true
		s.panicsOnce.Do(func() {
			if s.Metrics != nil {
				s.panics = s.Metrics.Counter("redrain_http_panics_total", "HTTP requests whose handler panicked (answered 500 internal; the node went on).")
			}
		})
		if s.panics != nil {
			s.panics.Add(int64(len(ctxs)))
		}
		log := s.Log
		if log == nil {
			log = slog.Default()
		}
		log.Error("handler panicked: answered 500", "path", string(ctxs[0].Path()), "requests", len(ctxs),
			"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		for _, ctx := range ctxs {
			ctx.Response.Reset()
			writeError(ctx, errcode.Errorf(errcode.CodeInternal, "internal error (logged)"))
		}
	}()
	serve()
	return false
}

// isSingleGrant reports whether ctx is a grant this listener admits (the
// operations listener and a node of the read side answer it 404 through
// handle).
func (s *Server) isSingleGrant(ctx *fasthttp.RequestCtx) bool {
	return s.Plane != PlaneOps && s.Role != RoleRead && ctx.IsPost() && string(ctx.Path()) == "/v1/grants"
}

// Shutdown stops accepting, closes idle connections, and waits until the
// busy ones have answered what they read (or ctx ends, then closes them).
// A connection marks itself idle before it looks at closing, and Shutdown
// sets closing before it closes the idle ones, so one pass finds them all;
// but a connection whose client has not sent its first request yet gets
// freshWithin to send it, so the pass repeats until none is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown = true
	set := s.set
	s.mu.Unlock()
	if set == nil {
		return nil
	}
	set.mu.Lock()
	if !set.closing {
		close(set.stop)
	}
	set.closing = true
	err := set.ln.Close()
	set.mu.Unlock()
	closeIdle := func() (fresh bool) {
		set.mu.Lock()
		defer set.mu.Unlock()
		for cn := range set.conns {
			switch {
			case !cn.idle.Load():
			case cn.asked.Load() || time.Since(cn.accepted) >= freshWithin:
				_ = cn.c.Close()
			default:
				fresh = true
			}
		}
		return fresh
	}
	fresh := closeIdle()
	done := make(chan struct{})
	go func() { set.done.Wait(); close(done) }()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		var again <-chan time.Time
		if fresh {
			again = tick.C
		}
		select {
		case <-done:
			return err
		case <-again:
			fresh = closeIdle()
		case <-ctx.Done():
			set.mu.Lock()
			for cn := range set.conns {
				_ = cn.c.Close()
			}
			set.mu.Unlock()
			<-done
			return err
		}
	}
}

// Stream writes a response's body as it goes (server-sent events): it
// writes to w and calls flush after each event, until stop is closed (the
// server shuts down) or a write fails (the client went). The connection
// closes after it.
type Stream func(w io.Writer, flush func() error, stop <-chan struct{})

// streamKey is the user value under which a handler leaves a Stream.
type streamKey struct{}

// SetStream makes ctx's answer a stream: its status and headers (set by the
// handler) are written, then stream runs on the connection. Only the last
// request a client pipelined may stream; earlier ones are answered 400.
func SetStream(ctx *fasthttp.RequestCtx, stream Stream) { ctx.SetUserValue(streamKey{}, stream) }

// takeStreams removes the streams handlers set on ctxs and returns the
// last request's, answering any earlier one's 400.
func takeStreams(ctxs []*fasthttp.RequestCtx) Stream {
	var last Stream
	for i, ctx := range ctxs {
		st, ok := ctx.UserValue(streamKey{}).(Stream)
		if !ok {
			continue
		}
		ctx.RemoveUserValue(streamKey{})
		if i == len(ctxs)-1 {
			last = st
			continue
		}
		ctx.Response.Reset()
		writeError(ctx, errcode.Errorf(errcode.CodeMalformed, "an event stream must be the last request pipelined on its connection"))
	}
	return last
}

// streamWriteTimeout bounds writing one event.
const streamWriteTimeout = 10 * time.Second

// runStream writes resp's status line and headers, without a length (the
// body ends when the connection closes), and runs stream.
func runStream(c net.Conn, bw *bufio.Writer, resp *fasthttp.Response, stream Stream, stop <-chan struct{}) {
	resp.SetConnectionClose()
	resp.ResetBody()
	resp.Header.SetContentLength(-2) // identity: the body ends with the connection
	if resp.Header.Write(bw) != nil || bw.Flush() != nil {
		return
	}
	stream(bw, func() error {
		if err := c.SetWriteDeadline(time.Now().Add(streamWriteTimeout)); err != nil {
			return err
		}
		return bw.Flush()
	}, stop)
}
