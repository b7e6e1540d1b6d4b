package devstack_test

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"redrain/ledger"
	"redrain/storage"
	"redrain/storage/devstack"
	"redrain/storage/storagetest"
)

// flag returns the value of --name=value in a flags line.
func flag(t *testing.T, flags, name string) string {
	t.Helper()
	for _, f := range strings.Fields(flags) {
		if v, ok := strings.CutPrefix(f, "--"+name+"="); ok {
			return v
		}
	}
	t.Fatalf("no --%s in %q", name, flags)
	return ""
}

// TestStackServesAndRestarts starts the stack, writes through each backend
// with the production clients, restarts the stack on the same data dir and
// finds the same addresses and the same data.
func TestStackServesAndRestarts(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s, err := devstack.Start(devstack.Config{DataDir: dir, Partitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	flags := s.Flags()
	kv, err := storage.OpenTiKV([]string{flag(t, flags, "pd")}, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Update(ctx, func(txn storage.Txn) error { return txn.Set([]byte("rr/test"), []byte("v1")) }); err != nil {
		t.Fatal(err)
	}
	_ = kv.Close()
	r, err := storage.OpenRedis(flag(t, flags, "redis"), 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Client.Set(ctx, "rr:test", "v1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	k, err := storage.OpenKafka([]string{flag(t, flags, "kafka")}, "", 4)
	if err != nil {
		t.Fatal(err)
	}
	k.Close()
	s.Close()

	s2, err := devstack.Start(devstack.Config{DataDir: dir, Partitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if s2.Flags() != flags {
		t.Errorf("restarted stack flags %q, want the same %q", s2.Flags(), flags)
	}
	kv, err = storage.OpenTiKV([]string{flag(t, flags, "pd")}, "")
	if err != nil {
		t.Fatal(err)
	}
	defer kv.Close()
	var got []byte
	if err := kv.Update(ctx, func(txn storage.Txn) error {
		got, err = storage.Get(ctx, txn, []byte("rr/test"))
		return err
	}); err != nil || string(got) != "v1" {
		t.Errorf("after restart rr/test = %q, %v; want v1", got, err)
	}
	r, err = storage.OpenRedis(flag(t, flags, "redis"), 2)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if s2.RedisKind == "redis-server" {
		if v, err := r.Client.Get(ctx, "rr:test").Result(); err != nil || v != "v1" {
			t.Errorf("after restart redis rr:test = %q, %v; want v1 (append-only file)", v, err)
		}
	}
}

// TestPartsRestart: the broker and the TiKV server restart in place (for
// failure tests) while clients stay open: the clients' writes before the
// restart are read after it, through the same clients.
func TestPartsRestart(t *testing.T) {
	ctx := context.Background()
	s, err := devstack.Start(devstack.Config{DataDir: t.TempDir(), Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	flags := s.Flags()
	kv, err := storage.OpenTiKV([]string{flag(t, flags, "pd")}, "")
	if err != nil {
		t.Fatal(err)
	}
	defer kv.Close()
	// The server has just started: the first write may find it not yet
	// serving (unavailable, retried as any client retries); what the test
	// checks is the restart below.
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := kv.Update(ctx, func(txn storage.Txn) error { return txn.Set([]byte("rr/test"), []byte("v1")) })
		if err == nil {
			break
		}
		if !errors.Is(err, storage.ErrUnavailable) || time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	gw, err := storage.NewGrantWriter([]string{flag(t, flags, "kafka")}, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	g := ledger.Grant{AppID: 1, ActID: 1, UserID: "u", ActivityID: "a", SceneID: "s", RainID: 1, AwardType: "cash",
		Asset: ledger.AssetCash, Amount: 5, BudgetID: "a/formal/cash", LeaseID: 1}
	if _, err := gw.Append(0, []ledger.Grant{g}); err != nil {
		t.Fatal(err)
	}
	if err := s.RestartBroker(500 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := s.RestartTiKV(500 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	var got []byte
	for deadline := time.Now().Add(30 * time.Second); ; {
		err := kv.View(func(txn storage.Txn) error {
			var err error
			got, err = storage.Get(ctx, txn, []byte("rr/test"))
			return err
		})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("read after the TiKV restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if string(got) != "v1" {
		t.Fatalf("after the restart rr/test = %q, want v1", got)
	}
	var appendErr error
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, appendErr = gw.Append(0, []ledger.Grant{g}); appendErr == nil || time.Now().After(deadline) {
			break
		}
	}
	if appendErr != nil {
		t.Fatalf("append after the broker restart: %v", appendErr)
	}
	recs := storagetest.ReadGrantTopic(t, []string{flag(t, flags, "kafka")}, 2)
	if len(recs) != 2 {
		t.Fatalf("%d records on the topic after the restart, want 2 (one before, one after)", len(recs))
	}
}

// TestRestartWaitsForTheOldRedis: a stack restarted while the previous
// stack's redis-server still holds the port (it flushes on its way out)
// starts its own once the port is free, and answers with it: before, the
// new stack saw the old server answer, took it for its own, and was left
// with none once it exited.
func TestRestartWaitsForTheOldRedis(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s, err := devstack.Start(devstack.Config{DataDir: dir, Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	if s.RedisKind != "redis-server" {
		s.Close()
		t.Skip("redis-server not installed")
	}
	addr := flag(t, s.Flags(), "redis")
	r, err := storage.OpenRedis(addr, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Client.Set(ctx, "rr:test", "kept", 0).Err(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	s.Close()

	// Another server on the port, as the old one still flushing.
	_, port, _ := net.SplitHostPort(addr)
	old := exec.Command("redis-server", "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no")
	if err := old.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = old.Process.Kill() }()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	for c.Ping(ctx).Err() != nil {
		time.Sleep(20 * time.Millisecond)
	}
	go func() {
		time.Sleep(700 * time.Millisecond)
		_ = old.Process.Signal(os.Interrupt)
	}()

	s2, err := devstack.Start(devstack.Config{DataDir: dir, Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	_ = old.Wait()
	if got, err := c.Get(ctx, "rr:test").Result(); err != nil || got != "kept" {
		t.Fatalf("after the old server exited: rr:test = %q, %v; want the restarted stack's server with its data", got, err)
	}
}
