package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// records keeps every record a handler is given.
type records struct {
	mu  sync.Mutex
	got []slog.Record
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, rec)
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

func (r *records) levels() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, rec := range r.got {
		out = append(out, rec.Level.String()+" "+rec.Message)
	}
	return out
}

// The known messages of a member's own stop are lowered to DEBUG once Stop
// began, and only with their error; everything else keeps its level.
func TestQuietLowersOnlyStopMessages(t *testing.T) {
	closing := status.Error(codes.Canceled, "grpc: the client connection is closing")
	cases := []struct {
		stopping bool
		msg      string
		err      error
		want     slog.Level
	}{
		{true, "Automanaged server stopping..!", http.ErrServerClosed, slog.LevelDebug},
		{true, "Automanaged server stopping..!", fmt.Errorf("serve: %w", http.ErrServerClosed), slog.LevelDebug},
		{true, "EndpointWriter lost connection", closing, slog.LevelDebug},
		{false, "Automanaged server stopping..!", http.ErrServerClosed, slog.LevelError},
		{false, "EndpointWriter lost connection", closing, slog.LevelError},
		{true, "Automanaged server stopping..!", errors.New("listen tcp: address already in use"), slog.LevelError},
		{true, "EndpointWriter lost connection", status.Error(codes.Unavailable, "connection reset"), slog.LevelError},
		{true, "EndpointWriter failed to connect", closing, slog.LevelError},
	}
	for _, c := range cases {
		var rec records
		var stopping atomic.Bool
		stopping.Store(c.stopping)
		log := slog.New(quiet{&rec, &stopping}).With("component", "protoactor")
		log.Error(c.msg, slog.String("address", "127.0.0.1:1"), slog.Any("error", c.err))
		got := rec.levels()
		if want := c.want.String() + " " + c.msg; len(got) != 1 || got[0] != want {
			t.Errorf("stopping=%v %q error=%v: logged %q, want %q", c.stopping, c.msg, c.err, got, want)
		}
	}
}

// A member that stops logs nothing at WARN or above and takes well under
// protoactor's own graceful shutdown (a fixed 2 s sleep, remoting up to
// 10 s more).
func TestStopIsQuiet(t *testing.T) {
	var rec records
	m, err := Start(Config{Logger: slog.New(&rec)})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(m.Members()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the member never listed itself")
		}
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	m.Stop()
	took := time.Since(start)
	t.Logf("Stop took %v", took)
	time.Sleep(100 * time.Millisecond) // the provider's goroutine logs after its server returned
	for _, l := range rec.levels() {
		t.Log(l)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, r := range rec.got {
		if r.Level >= slog.LevelWarn {
			t.Errorf("logged at %v while stopping: %s", r.Level, r.Message)
		}
	}
}
