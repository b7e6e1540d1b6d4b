package tikvdev

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	tikverr "github.com/tikv/client-go/v2/error"
	"github.com/tikv/client-go/v2/kv"
	"github.com/tikv/client-go/v2/tikv"
	"github.com/tikv/client-go/v2/txnkv"
	"github.com/tikv/client-go/v2/txnkv/transaction"

	"redrain/storage" // also quiets client-go's INFO logging
)

// childDirEnv selects child mode: the test binary runs a server on that dir
// and prints its PD address, for the kill -9 test.
const childDirEnv = "TIKVDEV_CHILD_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(childDirEnv); dir != "" {
		os.Exit(runChild(dir))
	}
	os.Exit(m.Run())
}

// runChild serves until killed, or until its stdin closes so that a child
// whose parent died does not outlive it.
func runChild(dir string) int {
	s, err := Start(dir, "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("PD %s\n", s.PDAddr())
	_, _ = io.Copy(io.Discard, os.Stdin)
	_ = s.Close()
	return 0
}

// testTimeout bounds each test's transactions.
const testTimeout = 60 * time.Second

func startServer(t testing.TB, dir string) *Server {
	t.Helper()
	s, err := Start(dir, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func connect(t testing.TB, pdAddr string) *txnkv.Client {
	t.Helper()
	c, err := txnkv.NewClient([]string{pdAddr})
	if err != nil {
		t.Fatalf("txnkv.NewClient(%s): %v", pdAddr, err)
	}
	return c
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func update(ctx context.Context, c *txnkv.Client, fn func(txn *transaction.KVTxn) error) (*transaction.KVTxn, error) {
	txn, err := c.Begin()
	if err != nil {
		return nil, err
	}
	if err := fn(txn); err != nil {
		_ = txn.Rollback()
		return nil, err
	}
	return txn, txn.Commit(ctx)
}

func get(ctx context.Context, t *testing.T, c *txnkv.Client, key string) (string, bool) {
	t.Helper()
	txn, err := c.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Rollback()
	v, err := txn.Get(ctx, []byte(key))
	if tikverr.IsErrNotFound(err) {
		return "", false
	}
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return string(v.Value), true
}

func TestTransactions(t *testing.T) {
	ctx := testContext(t)
	s := startServer(t, t.TempDir())
	start := time.Now()
	c := connect(t, s.PDAddr())
	t.Logf("txnkv.NewClient connected in %v", time.Since(start))
	defer c.Close()

	_, err := update(ctx, c, func(txn *transaction.KVTxn) error {
		for _, k := range []string{"b", "a", "d", "c"} {
			if err := txn.Set([]byte("t/"+k), []byte("v"+k)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("commit: %v", err)
	}
	if v, ok := get(ctx, t, c, "t/a"); !ok || v != "va" {
		t.Fatalf("Get(t/a) = %q, %v, want va", v, ok)
	}

	txn, err := c.Begin()
	if err != nil {
		t.Fatal(err)
	}
	m, err := txn.BatchGet(ctx, [][]byte{[]byte("t/b"), []byte("t/x"), []byte("t/d")})
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 2 || string(m["t/b"].Value) != "vb" || string(m["t/d"].Value) != "vd" {
		t.Fatalf("BatchGet = %v, want t/b and t/d only", m)
	}
	var keys []string
	it, err := txn.Iter([]byte("t/"), []byte("t0"))
	if err != nil {
		t.Fatal(err)
	}
	for it.Valid() {
		keys = append(keys, string(it.Key()))
		if err := it.Next(); err != nil {
			t.Fatal(err)
		}
	}
	it.Close()
	_ = txn.Rollback()
	if got := strings.Join(keys, ","); got != "t/a,t/b,t/c,t/d" {
		t.Fatalf("scan = %s, want t/a,t/b,t/c,t/d", got)
	}

	if _, err := update(ctx, c, func(txn *transaction.KVTxn) error { return txn.Delete([]byte("t/b")) }); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if v, ok := get(ctx, t, c, "t/b"); ok {
		t.Fatalf("Get(t/b) after delete = %q, want not found", v)
	}
}

func TestWriteConflict(t *testing.T) {
	ctx := testContext(t)
	s := startServer(t, t.TempDir())
	c := connect(t, s.PDAddr())
	defer c.Close()

	t1, err := c.Begin()
	if err != nil {
		t.Fatal(err)
	}
	t2, err := c.Begin()
	if err != nil {
		t.Fatal(err)
	}
	_ = t1.Set([]byte("k"), []byte("1"))
	_ = t2.Set([]byte("k"), []byte("2"))
	if err := t1.Commit(ctx); err != nil {
		t.Fatalf("first commit: %v", err)
	}
	if err := t2.Commit(ctx); !tikverr.IsErrWriteConflict(err) {
		t.Fatalf("second commit = %v, want a write conflict", err)
	}
	if v, _ := get(ctx, t, c, "k"); v != "1" {
		t.Fatalf("k = %q, want 1", v)
	}
}

// TestPessimisticLock: a pessimistic lock blocks a second locker until the
// first transaction ends.
func TestPessimisticLock(t *testing.T) {
	ctx := testContext(t)
	s := startServer(t, t.TempDir())
	c := connect(t, s.PDAddr())
	defer c.Close()

	t1, err := c.Begin()
	if err != nil {
		t.Fatal(err)
	}
	t1.SetPessimistic(true)
	if err := t1.LockKeysWithWaitTime(ctx, kv.LockNoWait, []byte("p")); err != nil {
		t.Fatalf("first lock: %v", err)
	}
	t2, err := c.Begin()
	if err != nil {
		t.Fatal(err)
	}
	t2.SetPessimistic(true)
	if err := t2.LockKeysWithWaitTime(ctx, kv.LockNoWait, []byte("p")); !errors.Is(err, tikverr.ErrLockAcquireFailAndNoWaitSet) {
		t.Fatalf("second lock = %v, want %v", err, tikverr.ErrLockAcquireFailAndNoWaitSet)
	}
	_ = t2.Rollback()
	_ = t1.Set([]byte("p"), []byte("1"))
	if err := t1.Commit(ctx); err != nil {
		t.Fatalf("commit: %v", err)
	}

	t3, err := c.Begin()
	if err != nil {
		t.Fatal(err)
	}
	t3.SetPessimistic(true)
	if err := t3.LockKeysWithWaitTime(ctx, kv.LockNoWait, []byte("p")); err != nil {
		t.Fatalf("lock after commit: %v", err)
	}
	_ = t3.Rollback()
	if v, _ := get(ctx, t, c, "p"); v != "1" {
		t.Fatalf("p = %q, want 1", v)
	}
}

// TestConcurrentTransactions runs read-modify-write transactions on one hot
// counter from many goroutines, retrying conflicts: the counter must come
// out exact, so no increment was lost or applied twice.
func TestConcurrentTransactions(t *testing.T) {
	ctx := testContext(t)
	s := startServer(t, t.TempDir())
	c := connect(t, s.PDAddr())
	defer c.Close()

	const workers, perWorker = 8, 25
	var conflicts atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				for {
					_, err := update(ctx, c, func(txn *transaction.KVTxn) error {
						n, err := counter(ctx, txn)
						if err != nil {
							return err
						}
						var b [8]byte
						binary.BigEndian.PutUint64(b[:], n+1)
						if err := txn.Set([]byte("counter"), b[:]); err != nil {
							return err
						}
						return txn.Set(fmt.Appendf(nil, "w/%d/%d", w, i), []byte("x"))
					})
					if tikverr.IsErrWriteConflict(err) {
						conflicts.Add(1)
						continue
					}
					if err != nil {
						errs <- err
						return
					}
					break
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	txn, err := c.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Rollback()
	n, err := counter(ctx, txn)
	if err != nil {
		t.Fatal(err)
	}
	if n != workers*perWorker {
		t.Fatalf("counter = %d, want %d", n, workers*perWorker)
	}
	t.Logf("%d transactions, %d conflicts retried", workers*perWorker, conflicts.Load())
}

func counter(ctx context.Context, txn *transaction.KVTxn) (uint64, error) {
	v, err := txn.Get(ctx, []byte("counter"))
	if tikverr.IsErrNotFound(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint64(v.Value), nil
}

// TestRestart closes the server and starts a new one on the same dir: the
// data and the timestamp order survive.
func TestRestart(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()

	s1, err := Start(dir, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c1 := connect(t, s1.PDAddr())
	var lastCommit uint64
	for i := range 10 {
		txn, err := update(ctx, c1, func(txn *transaction.KVTxn) error {
			return txn.Set(fmt.Appendf(nil, "r/%d", i), fmt.Appendf(nil, "v%d", i))
		})
		if err != nil {
			t.Fatal(err)
		}
		lastCommit = txn.CommitTS()
	}
	if err := c1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := startServer(t, dir)
	if s3, err := Start(dir, "127.0.0.1:0"); err == nil {
		_ = s3.Close()
		t.Fatal("a second server started on a dir in use")
	}
	c2 := connect(t, s2.PDAddr())
	defer c2.Close()
	for i := range 10 {
		if v, _ := get(ctx, t, c2, fmt.Sprintf("r/%d", i)); v != fmt.Sprintf("v%d", i) {
			t.Fatalf("after restart r/%d = %q, want v%d", i, v, i)
		}
	}
	txn, err := update(ctx, c2, func(txn *transaction.KVTxn) error {
		return txn.Set([]byte("r/new"), []byte("new"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if txn.StartTS() <= lastCommit || txn.CommitTS() <= txn.StartTS() {
		t.Fatalf("after restart start %d, commit %d; last commit before restart %d", txn.StartTS(), txn.CommitTS(), lastCommit)
	}
	if v, _ := get(ctx, t, c2, "r/new"); v != "new" {
		t.Fatalf("r/new = %q, want new", v)
	}
}

// TestRestartKeepsClients restarts the server on the same PD address under
// a connected client, as a developer restarts a shared store under running
// `redrain serve` processes: the client carries on without reconnecting.
func TestRestartKeepsClients(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	s1, err := Start(dir, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := connect(t, s1.PDAddr())
	defer c.Close()
	if _, err := update(ctx, c, func(txn *transaction.KVTxn) error { return txn.Set([]byte("a"), []byte("1")) }); err != nil {
		t.Fatal(err)
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Start(dir, s1.PDAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if _, err := update(ctx, c, func(txn *transaction.KVTxn) error { return txn.Set([]byte("b"), []byte("2")) }); err != nil {
		t.Fatalf("commit after restart: %v", err)
	}
	for k, want := range map[string]string{"a": "1", "b": "2"} {
		if v, _ := get(ctx, t, c, k); v != want {
			t.Fatalf("%s = %q, want %q", k, v, want)
		}
	}
}

// TestTSOClockBackwards: a restart never hands out a timestamp below one
// an earlier run may have handed out, even when the saved limit is ahead
// of the wall clock (a clock that went back).
func TestTSOClockBackwards(t *testing.T) {
	path := t.TempDir() + "/tso"
	a, err := openTSO(path)
	if err != nil {
		t.Fatal(err)
	}
	ahead := time.Now().Add(time.Hour).UnixMilli()
	if err := a.save(ahead); err != nil {
		t.Fatal(err)
	}
	b, err := openTSO(path)
	if err != nil {
		t.Fatal(err)
	}
	var lastP, lastL int64
	for i := range 1000 {
		p, l, err := b.next(uint32(1 + i%7))
		if err != nil {
			t.Fatal(err)
		}
		if p < ahead || (p == lastP && l <= lastL) || p < lastP {
			t.Fatalf("next #%d = (%d, %d) after (%d, %d); limit %d", i, p, l, lastP, lastL, ahead)
		}
		lastP, lastL = p, l
	}
}

// TestKillDuringWrites runs the server in a child process, kills it with
// SIGKILL while transactions are committing, restarts on the same dir and
// checks that every transaction whose Commit returned nil is there.
func TestKillDuringWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	ctx := testContext(t)
	dir := t.TempDir()

	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), childDirEnv+"="+dir)
	var childErr bytes.Buffer
	child.Stderr = &childErr
	stdin, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	killed := false
	defer func() {
		if !killed {
			_ = child.Process.Kill()
			_ = child.Wait()
		}
	}()
	addr := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		addr <- strings.TrimPrefix(strings.TrimSpace(line), "PD ")
	}()
	var pdAddr string
	select {
	case pdAddr = <-addr:
	case <-time.After(30 * time.Second):
		t.Fatalf("child did not report its address; stderr:\n%s", childErr.String())
	}
	if pdAddr == "" {
		_ = child.Wait()
		t.Fatalf("child failed; stderr:\n%s", childErr.String())
	}

	c := connect(t, pdAddr)
	const writers, killAfter = 8, 200
	writeCtx, stopWrites := context.WithCancel(ctx)
	defer stopWrites()
	var mu sync.Mutex
	var committed []string
	enough := make(chan struct{})
	var enoughOnce sync.Once
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; writeCtx.Err() == nil; i++ {
				key := fmt.Sprintf("k/%d/%06d", w, i)
				// A start timestamp from a context-aware call, so a writer
				// stuck on the dead server stops when told to.
				ts, err := c.GetTimestamp(writeCtx)
				if err != nil {
					continue
				}
				txn, err := c.Begin(tikv.WithStartTS(ts))
				if err != nil {
					continue
				}
				_ = txn.Set([]byte(key), []byte(key))
				if err := txn.Commit(writeCtx); err != nil {
					continue
				}
				mu.Lock()
				committed = append(committed, key)
				if len(committed) >= killAfter {
					enoughOnce.Do(func() { close(enough) })
				}
				mu.Unlock()
			}
		}()
	}
	select {
	case <-enough:
	case <-ctx.Done():
		t.Fatal("writers did not commit enough before the deadline")
	}
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	killed = true
	stopWrites()
	wg.Wait()
	_ = c.Close()

	mu.Lock()
	keys := committed
	mu.Unlock()
	s := startServer(t, dir)
	c2 := connect(t, s.PDAddr())
	defer c2.Close()
	txn, err := c2.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Rollback()
	bkeys := make([][]byte, len(keys))
	for i, k := range keys {
		bkeys[i] = []byte(k)
	}
	got, err := txn.BatchGet(ctx, bkeys)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if v, ok := got[k]; !ok || string(v.Value) != k {
			t.Fatalf("committed key %s lost after kill -9 (%d committed)", k, len(keys))
		}
	}
	t.Logf("%d committed transactions survived kill -9", len(keys))
}

// TestStorageOpenTiKV checks the project's own TiKV helper against this
// server through PD, as `redrain serve` uses it.
func TestStorageOpenTiKV(t *testing.T) {
	ctx := testContext(t)
	s := startServer(t, t.TempDir())
	db, err := storage.OpenTiKV([]string{s.PDAddr()}, "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if db.Embedded {
		t.Fatal("OpenTiKV with PD endpoints returned the embedded store")
	}
	err = db.Update(ctx, func(txn storage.Txn) error {
		for _, k := range []string{"s/2", "s/1", "s/3"} {
			if err := txn.Set([]byte(k), []byte("v"+k)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(ctx, func(txn storage.Txn) error {
		v, err := storage.Get(ctx, txn, []byte("s/2"))
		if err != nil {
			return err
		}
		if string(v) != "vs/2" {
			return fmt.Errorf("Get(s/2) = %q, want vs/2", v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	err = db.Scan(ctx, []byte("s/"), []byte("s0"), func(k, _ []byte) (bool, error) {
		keys = append(keys, string(k))
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(keys, ","); got != "s/1,s/2,s/3" {
		t.Fatalf("Scan = %s, want s/1,s/2,s/3", got)
	}
	// A write that lost to a concurrent one is storage.ErrConflict.
	err = db.Update(ctx, func(txn storage.Txn) error {
		if err := txn.Set([]byte("s/1"), []byte("b")); err != nil {
			return err
		}
		other, err := db.Store.Begin()
		if err != nil {
			return err
		}
		_ = other.Set([]byte("s/1"), []byte("a"))
		return other.Commit(ctx)
	})
	if !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("Update that lost = %v, want storage.ErrConflict", err)
	}
}

// BenchmarkSmallTxn commits one-key transactions one after another, through
// this server and through the in-process test cluster, for the overhead of
// the gRPC hop.
func BenchmarkSmallTxn(b *testing.B) {
	run := func(b *testing.B, store *tikv.KVStore) {
		ctx := context.Background()
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			txn, err := store.Begin()
			if err != nil {
				b.Fatal(err)
			}
			_ = txn.Set(fmt.Appendf(nil, "b/%08d", i), []byte("value"))
			if err := txn.Commit(ctx); err != nil {
				b.Fatal(err)
			}
			i++
		}
	}
	b.Run("grpc", func(b *testing.B) {
		s := startServer(b, b.TempDir())
		c := connect(b, s.PDAddr())
		defer c.Close()
		run(b, c.KVStore)
	})
	b.Run("inprocess", func(b *testing.B) {
		db, err := storage.OpenTiKV(nil, b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		run(b, db.Store)
	})
}

// With PD gone, a transaction's begin gives up once its caller's context
// ends (storage bounds it to 15 s besides), where client-go's Begin waits
// on PD without a deadline: a stopping node whose store is gone must not
// wait for it (a node of a three-node dev stack was seen still stopping
// minutes after SIGTERM).
func TestBeginWithPDGone(t *testing.T) {
	s := startServer(t, t.TempDir())
	db, err := storage.OpenTiKV([]string{s.PDAddr()}, "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := testContext(t)
	if err := db.Update(ctx, func(txn storage.Txn) error { return txn.Set([]byte("k"), []byte("v")) }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	stop, cancel := context.WithCancel(ctx)
	go func() { time.Sleep(200 * time.Millisecond); cancel() }()
	err = db.Update(stop, func(storage.Txn) error { return errors.New("begun without PD") })
	if !errors.Is(err, storage.ErrUnavailable) || !strings.Contains(err.Error(), "no timestamp") {
		t.Fatalf("update with PD gone: %v", err)
	}
	err = db.Scan(stop, []byte("k"), []byte("l"), func(_, _ []byte) (bool, error) { return true, nil })
	if !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("scan with PD gone: %v", err)
	}
}
