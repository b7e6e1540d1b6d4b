package storage

// This test is internal: it must know that every Do has reached the queue
// before Close is called, and only len(p.queue) can tell. It cannot use
// storagetest, which imports this package, so it runs on the embedded
// server (TestPipeliner covers redis-server).

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// stallFirstPipeline holds the first pipeline sent until release is closed,
// so that the pipeliner's single worker is busy while Do calls queue up.
type stallFirstPipeline struct {
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (h *stallFirstPipeline) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *stallFirstPipeline) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (h *stallFirstPipeline) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.once.Do(func() {
			close(h.entered)
			<-h.release
		})
		return next(ctx, cmds)
	}
}

var _ redis.Hook = (*stallFirstPipeline)(nil)

func TestPipelinerCloseDrains(t *testing.T) {
	r, err := OpenRedis("", 4)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	h := &stallFirstPipeline{entered: make(chan struct{}), release: make(chan struct{})}
	r.Client.AddHook(h)
	p := NewPipeliner(r.Client, 1)
	ctx := context.Background()

	first := redis.NewStatusCmd(ctx, "set", "t:drain:first", "1")
	firstDone := make(chan error, 1)
	go func() { firstDone <- p.Do(ctx, first) }()
	<-h.entered // the only worker is now stuck in a round trip

	const callers = 300
	sets := make([]*redis.StatusCmd, callers)
	gets := make([]*redis.StringCmd, callers)
	errs := make([]error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		sets[i] = redis.NewStatusCmd(ctx, "set", fmt.Sprintf("t:drain:%d", i), fmt.Sprint(i))
		gets[i] = redis.NewStringCmd(ctx, "get", fmt.Sprintf("t:drain:%d", i))
		wg.Go(func() { errs[i] = p.Do(ctx, sets[i], gets[i]) })
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(p.queue) < callers {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d Do calls queued", len(p.queue), callers)
		}
		time.Sleep(time.Millisecond)
	}

	closed := make(chan struct{})
	go func() { p.Close(); close(closed) }()
	close(h.release)
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return after the worker was released")
	}
	// Close returned: every queued Do has its replies.
	wg.Wait()
	if err := <-firstDone; err != nil || first.Err() != nil {
		t.Fatalf("first Do = %v, %v", err, first.Err())
	}
	for i := range callers {
		if errs[i] != nil || sets[i].Err() != nil || gets[i].Val() != fmt.Sprint(i) {
			t.Fatalf("Do #%d = %v: SET %v, GET %q, %v", i, errs[i], sets[i].Err(), gets[i].Val(), gets[i].Err())
		}
	}
	if err := p.Do(ctx, redis.NewStatusCmd(ctx, "set", "t:drain:late", "1")); !errors.Is(err, ErrPipelinerClosed) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Do after Close = %v, want ErrPipelinerClosed (an ErrUnavailable)", err)
	}
	p.Close() // again: a no-op
	// And the server has them, read by a client that is not the pipeliner's.
	c := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer c.Close()
	if host, _, err := net.SplitHostPort(r.Addr); err != nil || host != "127.0.0.1" {
		t.Errorf("embedded redis listens on %q, want loopback", r.Addr)
	}
	n, err := c.Exists(ctx, "t:drain:0", fmt.Sprintf("t:drain:%d", callers-1)).Result()
	if err != nil || n != 2 {
		t.Fatalf("EXISTS after Close = %d, %v; want 2", n, err)
	}
}
