package storage_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"redrain/storage"
	"redrain/storage/storagetest"
)

// redisBackend is one Redis protocol server the Pipeliner must work with.
type redisBackend struct {
	name string
	// start returns the server's address and a function that kills it.
	start func(t *testing.T) (addr string, kill func(*testing.T))
}

var redisBackends = []redisBackend{
	{"redis-server", func(t *testing.T) (string, func(*testing.T)) {
		addr := storagetest.Redis(t)
		pid := redisPID(t, addr)
		return addr, func(t *testing.T) {
			// SIGKILL: no goodbye on the connections, as in a crash. The
			// process is storagetest's child, identified by the pid the
			// server itself reported; storagetest reaps it at cleanup.
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatalf("kill redis-server %d: %v", pid, err)
			}
			waitRedisDown(t, addr)
		}
	}},
	{"miniredis", func(t *testing.T) (string, func(*testing.T)) {
		// The same server OpenRedis("") embeds, started here so that the
		// test can stop it under a live client.
		m := miniredis.NewMiniRedis()
		if err := m.StartAddr("127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(m.Close)
		addr := m.Addr()
		return addr, func(t *testing.T) { m.Close(); waitRedisDown(t, addr) }
	}},
}

// redisPID asks a redis-server for its process id.
func redisPID(t *testing.T, addr string) int {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	info, err := c.Info(context.Background(), "server").Result()
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			pid, err := strconv.Atoi(v)
			if err != nil || pid <= 1 {
				t.Fatalf("redis-server process_id %q", v)
			}
			return pid
		}
	}
	t.Fatalf("no process_id in INFO server of %s", addr)
	return 0
}

// waitRedisDown polls until a fresh connection to addr fails.
func waitRedisDown(t *testing.T, addr string) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for c.Ping(context.Background()).Err() == nil {
		if time.Now().After(deadline) {
			t.Fatalf("redis at %s still answers after being killed", addr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// openPipeliner connects the production client to addr and starts a
// Pipeliner over it; both are closed when the test ends.
func openPipeliner(t *testing.T, addr string, workers int) (*storage.Redis, *storage.Pipeliner) {
	t.Helper()
	r, err := storage.OpenRedis(addr, 32)
	if err != nil {
		t.Fatal(err)
	}
	p := storage.NewPipeliner(r.Client, workers)
	t.Cleanup(func() { p.Close(); r.Close() })
	return r, p
}

// doWithin runs p.Do in a goroutine and reports an error if it has not
// returned by the deadline: Do must never hang, whatever the server does.
// The deadline only turns a hang into a failure; it measures nothing.
func doWithin(p *storage.Pipeliner, within time.Duration, cmds ...redis.Cmder) error {
	done := make(chan error, 1)
	go func() { done <- p.Do(context.Background(), cmds...) }()
	select {
	case err := <-done:
		return err
	case <-time.After(within):
		return fmt.Errorf("Pipeliner.Do still running after %v", within)
	}
}

func TestPipeliner(t *testing.T) {
	for _, b := range redisBackends {
		t.Run(b.name, func(t *testing.T) {
			addr, kill := b.start(t)
			_, p := openPipeliner(t, addr, 4)
			t.Run("Concurrent", func(t *testing.T) { testPipelinerConcurrent(t, p) })
			t.Run("Order", func(t *testing.T) { testPipelinerOrder(t, p) })
			t.Run("CommandError", func(t *testing.T) { testPipelinerCommandError(t, p) })
			t.Run("ContextDone", func(t *testing.T) { testPipelinerContextDone(t, p) })
			// Last: it kills the server.
			t.Run("ServerKilled", func(t *testing.T) { testPipelinerServerKilled(t, p, kill) })
		})
	}
}

// testPipelinerConcurrent: many goroutines, each on its own keys, issue the
// grant path's commands (SET, GET, SET NX GET) through Do and each gets its
// own replies, whatever pipeline its commands shared.
func testPipelinerConcurrent(t *testing.T, p *storage.Pipeliner) {
	const goroutines, rounds = 64, 200
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			errs <- func() error {
				for i := range rounds {
					key := fmt.Sprintf("t:conc:%d:%d", g, i)
					val := fmt.Sprintf("v-%d-%d", g, i)
					missing := redis.NewStringCmd(ctx, "get", key)
					set := redis.NewStatusCmd(ctx, "set", key, val)
					get := redis.NewStringCmd(ctx, "get", key)
					claim := redis.NewStringCmd(ctx, "set", key, "other", "nx", "get")
					fresh := redis.NewStringCmd(ctx, "set", key+":nx", val, "nx", "get")
					if err := p.Do(ctx, missing, set, get, claim, fresh); err != nil {
						return fmt.Errorf("Do: %w", err)
					}
					if err := missing.Err(); !errors.Is(err, redis.Nil) {
						return fmt.Errorf("GET %s before SET: %q, %v; want redis.Nil", key, missing.Val(), err)
					}
					if v, err := set.Result(); err != nil || v != "OK" {
						return fmt.Errorf("SET %s = %q, %v", key, v, err)
					}
					if v, err := get.Result(); err != nil || v != val {
						return fmt.Errorf("GET %s = %q, %v; want %q", key, v, err, val)
					}
					// NX loses to the value set before and returns it.
					if v, err := claim.Result(); err != nil || v != val {
						return fmt.Errorf("SET %s NX GET = %q, %v; want %q", key, v, err, val)
					}
					// NX on a new key wins: no previous value.
					if v, err := fresh.Result(); !errors.Is(err, redis.Nil) {
						return fmt.Errorf("SET %s:nx NX GET = %q, %v; want redis.Nil", key, v, err)
					}
				}
				return nil
			}()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if t.Failed() {
		return
	}
	// The NX that lost changed nothing: every key still holds its own value.
	for g := range goroutines {
		cmds := make([]*redis.StringCmd, rounds)
		cs := make([]redis.Cmder, rounds)
		for i := range rounds {
			cmds[i] = redis.NewStringCmd(ctx, "get", fmt.Sprintf("t:conc:%d:%d", g, i))
			cs[i] = cmds[i]
		}
		if err := p.Do(ctx, cs...); err != nil {
			t.Fatal(err)
		}
		for i, c := range cmds {
			if want := fmt.Sprintf("v-%d-%d", g, i); c.Val() != want || c.Err() != nil {
				t.Fatalf("GET t:conc:%d:%d = %q, %v; want %q", g, i, c.Val(), c.Err(), want)
			}
		}
	}
}

// testPipelinerOrder: the commands of one Do run in the order given.
func testPipelinerOrder(t *testing.T, p *storage.Pipeliner) {
	ctx := context.Background()
	const n = 100
	cmds := []redis.Cmder{redis.NewIntCmd(ctx, "del", "t:order:s", "t:order:n")}
	incrs := make([]*redis.IntCmd, n)
	for i := range n {
		cmds = append(cmds, redis.NewIntCmd(ctx, "append", "t:order:s", strconv.Itoa(i%10)))
		incrs[i] = redis.NewIntCmd(ctx, "incr", "t:order:n")
		cmds = append(cmds, incrs[i])
	}
	get := redis.NewStringCmd(ctx, "get", "t:order:s")
	cmds = append(cmds, get)
	if err := p.Do(ctx, cmds...); err != nil {
		t.Fatal(err)
	}
	for i, c := range incrs {
		if v, err := c.Result(); err != nil || v != int64(i+1) {
			t.Fatalf("INCR #%d = %d, %v; want %d", i, v, err, i+1)
		}
	}
	var want strings.Builder
	for i := range n {
		want.WriteString(strconv.Itoa(i % 10))
	}
	if v, err := get.Result(); err != nil || v != want.String() {
		t.Fatalf("GET after %d APPENDs = %q, %v; want %q", n, v, err, want.String())
	}
}

// testPipelinerCommandError: a command the server refuses reports its own
// error; the commands around it in the same pipeline succeed.
func testPipelinerCommandError(t *testing.T, p *storage.Pipeliner) {
	ctx := context.Background()
	setup := redis.NewStatusCmd(ctx, "set", "t:err:text", "not a number")
	before := redis.NewStatusCmd(ctx, "set", "t:err:n", "41")
	bad := redis.NewIntCmd(ctx, "incr", "t:err:text")
	after := redis.NewIntCmd(ctx, "incr", "t:err:n")
	wrongType := redis.NewIntCmd(ctx, "lpush", "t:err:text", "x")
	get := redis.NewStringCmd(ctx, "get", "t:err:text")
	if err := p.Do(ctx, setup, before, bad, after, wrongType, get); err != nil {
		t.Fatal(err)
	}
	var rerr redis.Error
	if err := bad.Err(); !errors.As(err, &rerr) {
		t.Errorf("INCR on a non-integer: err = %v, want a redis.Error", err)
	}
	if err := wrongType.Err(); !errors.As(err, &rerr) {
		t.Errorf("LPUSH on a string: err = %v, want a redis.Error", err)
	}
	for _, c := range []redis.Cmder{setup, before, after, get} {
		if c.Err() != nil {
			t.Errorf("%v: %v; want success next to a failing command", c.Args(), c.Err())
		}
	}
	if v := after.Val(); v != 42 {
		t.Errorf("INCR t:err:n = %d, want 42", v)
	}
	if v := get.Val(); v != "not a number" {
		t.Errorf("GET t:err:text = %q, want unchanged", v)
	}
}

// testPipelinerContextDone: Do with an ended context returns its error
// (it may still have run: the queue had room) and the pipeliner keeps working.
func testPipelinerContextDone(t *testing.T, p *storage.Pipeliner) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = p.Do(ctx, redis.NewStatusCmd(context.Background(), "set", "t:ctx", "1"))
	get := redis.NewStringCmd(context.Background(), "get", "t:ctx:other")
	if err := p.Do(context.Background(), get); err != nil || !errors.Is(get.Err(), redis.Nil) {
		t.Fatalf("Do after a cancelled Do = %v, GET = %v; want nil, redis.Nil", err, get.Err())
	}
}

// testPipelinerServerKilled: with the server gone, Do returns and every
// command carries an error; none reads as redis.Nil, which the issuer
// would take for "the key was free".
func testPipelinerServerKilled(t *testing.T, p *storage.Pipeliner, kill func(*testing.T)) {
	ctx := context.Background()
	// Warm connections, so that the kill breaks open ones too.
	if err := p.Do(ctx, redis.NewStatusCmd(ctx, "set", "t:kill", "1")); err != nil {
		t.Fatal(err)
	}
	kill(t)
	const goroutines = 16
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			key := fmt.Sprintf("t:kill:%d", g)
			set := redis.NewStatusCmd(ctx, "set", key, "v")
			claim := redis.NewStringCmd(ctx, "set", key, "p", "nx", "get")
			get := redis.NewStringCmd(ctx, "get", key)
			if err := doWithin(p, 60*time.Second, set, claim, get); err != nil {
				t.Errorf("Do with the server down = %v, want nil (errors are per command)", err)
			}
			for _, c := range []redis.Cmder{set, claim, get} {
				if err := c.Err(); err == nil || errors.Is(err, redis.Nil) {
					t.Errorf("%v with the server down: err = %v, want a connection error", c.Args(), err)
				}
			}
		})
	}
	wg.Wait()
}

// TestPipelinerCloseRacingDo closes the pipeliner while goroutines keep
// calling Do, as a node's shutdown may under a deadline: every Do either
// ran (and has its reply) or reports ErrPipelinerClosed; none panics or
// hangs.
func TestPipelinerCloseRacingDo(t *testing.T) {
	r, err := storage.OpenRedis("", 16)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p := storage.NewPipeliner(r.Client, 2)
	ctx := context.Background()
	const goroutines = 32
	var wg sync.WaitGroup
	ran := make(chan struct{}, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			for i := 0; ; i++ {
				key := fmt.Sprintf("t:race:%d:%d", g, i)
				set := redis.NewStatusCmd(ctx, "set", key, "v")
				get := redis.NewStringCmd(ctx, "get", key)
				err := p.Do(ctx, set, get)
				if errors.Is(err, storage.ErrPipelinerClosed) {
					return
				}
				if err != nil || set.Err() != nil || get.Val() != "v" {
					t.Errorf("Do(SET, GET %s) = %v, %v, %q, %v", key, err, set.Err(), get.Val(), get.Err())
					return
				}
				if i == 0 {
					ran <- struct{}{}
				}
			}
		})
	}
	for range goroutines {
		<-ran // every goroutine is in its loop
	}
	p.Close()
	wg.Wait()
}

func TestOpenRedisEmbedded(t *testing.T) {
	r, err := storage.OpenRedis("", 4)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if !r.Embedded() || r.Addr == "" {
		t.Fatalf("OpenRedis(\"\"): Embedded() = %v, Addr = %q; want an embedded server", r.Embedded(), r.Addr)
	}
	p := storage.NewPipeliner(r.Client, 2)
	defer p.Close()
	ctx := context.Background()
	set := redis.NewStatusCmd(ctx, "set", storage.RedisEpochKey, "e1")
	get := redis.NewStringCmd(ctx, "get", storage.RedisEpochKey)
	if err := p.Do(ctx, set, get); err != nil || set.Err() != nil || get.Val() != "e1" {
		t.Fatalf("SET/GET on the embedded server: %v, %v, %q", err, set.Err(), get.Val())
	}
	// A second client reaches the same server by its address.
	other, err := storage.OpenRedis(r.Addr, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if other.Embedded() {
		t.Error("OpenRedis(addr).Embedded() = true")
	}
	if v, err := other.Client.Get(ctx, storage.RedisEpochKey).Result(); err != nil || v != "e1" {
		t.Fatalf("GET through a second client = %q, %v", v, err)
	}
}

func TestOpenRedisUnreachable(t *testing.T) {
	r, err := storage.OpenRedis("127.0.0.1:1", 2)
	if err == nil {
		r.Close()
		t.Fatal("OpenRedis(127.0.0.1:1) succeeded")
	}
	if !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("OpenRedis(127.0.0.1:1) = %v, want ErrUnavailable", err)
	}
}
