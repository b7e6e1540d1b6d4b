package storage_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pingcap/kvproto/pkg/kvrpcpb"
	"github.com/tikv/client-go/v2/tikv"
	"github.com/tikv/client-go/v2/tikvrpc"

	"redrain/storage"
	"redrain/storage/storagetest"
)

// put writes key = value in its own transaction.
func put(t *testing.T, kv *storage.TiKV, kvs ...string) {
	t.Helper()
	err := kv.Update(context.Background(), func(txn storage.Txn) error {
		for i := 0; i < len(kvs); i += 2 {
			if err := txn.Set([]byte(kvs[i]), []byte(kvs[i+1])); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// get reads key in a fresh transaction; nil when missing.
func get(t *testing.T, kv *storage.TiKV, key string) []byte {
	t.Helper()
	var v []byte
	err := kv.Update(context.Background(), func(txn storage.Txn) error {
		var err error
		v, err = storage.Get(context.Background(), txn, []byte(key))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestTiKVUpdateCommits(t *testing.T) {
	kv := storagetest.TiKV(t, "")
	ctx := context.Background()
	if !kv.Embedded {
		t.Error("storagetest.TiKV is not embedded")
	}
	put(t, kv, "rr/test/a", "1", "rr/test/b", "2")
	if v := get(t, kv, "rr/test/a"); string(v) != "1" {
		t.Fatalf("Get(rr/test/a) = %q, want 1", v)
	}
	err := kv.Update(ctx, func(txn storage.Txn) error {
		m, err := storage.BatchGet(ctx, txn, [][]byte{[]byte("rr/test/a"), []byte("rr/test/b"), []byte("rr/test/none")})
		if err != nil {
			return err
		}
		if len(m) != 2 || string(m["rr/test/a"]) != "1" || string(m["rr/test/b"]) != "2" {
			t.Errorf("BatchGet = %q, want a=1, b=2 and no missing key", m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// fn's error rolls back and is returned as is.
	errMine := errors.New("mine")
	err = kv.Update(ctx, func(txn storage.Txn) error {
		if err := txn.Set([]byte("rr/test/a"), []byte("rolled back")); err != nil {
			return err
		}
		return errMine
	})
	if !errors.Is(err, errMine) {
		t.Fatalf("Update with fn failing = %v, want fn's error", err)
	}
	if v := get(t, kv, "rr/test/a"); string(v) != "1" {
		t.Fatalf("after a failed Update, Get(rr/test/a) = %q, want 1", v)
	}

	// Delete commits too.
	err = kv.Update(ctx, func(txn storage.Txn) error { return txn.Delete([]byte("rr/test/b")) })
	if err != nil {
		t.Fatal(err)
	}
	if v := get(t, kv, "rr/test/b"); v != nil {
		t.Fatalf("Get of a deleted key = %q, want nil", v)
	}
}

func TestTiKVGetMissing(t *testing.T) {
	kv := storagetest.TiKV(t, "")
	ctx := context.Background()
	err := kv.Update(ctx, func(txn storage.Txn) error {
		v, err := storage.Get(ctx, txn, []byte("rr/test/missing"))
		if v != nil || err != nil {
			t.Errorf("Get(missing) = %q, %v; want nil, nil", v, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestTiKVConflict runs two transactions that both read a key and then
// write it: the one that commits second must fail with ErrConflict, and the
// key holds what the first wrote. Every write in redrain is conditional on
// what it read; this is what makes that true.
func TestTiKVConflict(t *testing.T) {
	kv := storagetest.TiKV(t, "")
	ctx := context.Background()
	const key = "rr/test/version"
	put(t, kv, key, "v0")

	type result struct {
		name string
		err  error
	}
	run := func(name string, read chan<- string, proceed <-chan struct{}, done chan<- result) {
		err := kv.Update(ctx, func(txn storage.Txn) error {
			v, err := storage.Get(ctx, txn, []byte(key))
			if err != nil {
				return err
			}
			read <- string(v)
			<-proceed
			return txn.Set([]byte(key), []byte(string(v)+"+"+name))
		})
		done <- result{name, err}
	}
	readA, readB := make(chan string, 1), make(chan string, 1)
	goA, goB := make(chan struct{}), make(chan struct{})
	done := make(chan result, 2)
	go run("A", readA, goA, done)
	go run("B", readB, goB, done)
	// Both have read v0 before either writes.
	if a, b := <-readA, <-readB; a != "v0" || b != "v0" {
		t.Fatalf("reads = %q, %q; want v0, v0", a, b)
	}
	close(goA)
	first := <-done
	close(goB)
	second := <-done
	if first.name != "A" || first.err != nil {
		t.Fatalf("first commit %s = %v, want A to succeed", first.name, first.err)
	}
	if !errors.Is(second.err, storage.ErrConflict) {
		t.Fatalf("second commit %s = %v, want ErrConflict", second.name, second.err)
	}
	if errors.Is(second.err, storage.ErrUnavailable) {
		t.Errorf("a conflict also reads as ErrUnavailable: %v", second.err)
	}
	if v := get(t, kv, key); string(v) != "v0+A" {
		t.Fatalf("after the conflict %s = %q, want the winner's v0+A", key, v)
	}
	// The loser retries as the contract says, reads the winner's value, and
	// commits.
	err := kv.Update(ctx, func(txn storage.Txn) error {
		v, err := storage.Get(ctx, txn, []byte(key))
		if err != nil {
			return err
		}
		return txn.Set([]byte(key), append(v, "+B"...))
	})
	if err != nil {
		t.Fatal(err)
	}
	if v := get(t, kv, key); string(v) != "v0+A+B" {
		t.Fatalf("after the retry %s = %q, want v0+A+B", key, v)
	}
}

func TestTiKVScan(t *testing.T) {
	kv := storagetest.TiKV(t, "")
	ctx := context.Background()
	prefix := []byte("rr/hot/b1/")
	var want []string
	var kvs []string
	for i := range 300 {
		// Binary, big-endian suffixes like HotKey's: scan order is byte order.
		k := string(storage.HotKey("b1", uint64(299-i)<<8, uint32(i)))
		kvs = append(kvs, k, fmt.Sprint(i))
	}
	// Neighbours outside the prefix on both sides, and a key that starts
	// with the prefix's bytes but a longer budget id.
	kvs = append(kvs, "rr/hot/b1", "x", "rr/hot/b0/z", "x", "rr/hot/b1\xff", "x", "rr/hot/b10/a", "x", "rr/hot/b2/", "x")
	put(t, kv, kvs...)
	for i := 0; i < 600; i += 2 {
		want = append(want, kvs[i])
	}
	slices.Sort(want)

	var got []string
	err := kv.Scan(ctx, prefix, storage.PrefixEnd(prefix), func(k, v []byte) (bool, error) {
		if !bytes.HasPrefix(k, prefix) {
			t.Errorf("Scan over %q returned %q", prefix, k)
		}
		got = append(got, string(k))
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("Scan over %q returned %d keys, want %d", prefix, len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("Scan key #%d = %q, want %q (byte order)", i, got[i], want[i])
		}
	}

	// fn returning false stops the scan; its error is returned.
	n := 0
	err = kv.Scan(ctx, prefix, storage.PrefixEnd(prefix), func(k, v []byte) (bool, error) {
		n++
		return n < 10, nil
	})
	if err != nil || n != 10 {
		t.Fatalf("Scan stopped after %d keys, %v; want 10, nil", n, err)
	}
	errStop := errors.New("stop")
	err = kv.Scan(ctx, prefix, storage.PrefixEnd(prefix), func(k, v []byte) (bool, error) { return true, errStop })
	if !errors.Is(err, errStop) {
		t.Fatalf("Scan with fn failing = %v, want fn's error", err)
	}

	// An empty range calls nothing.
	err = kv.Scan(ctx, []byte("rr/none/"), storage.PrefixEnd([]byte("rr/none/")), func(k, v []byte) (bool, error) {
		t.Errorf("Scan of an empty prefix returned %q", k)
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestTiKVEmbeddedPersists closes the embedded store and opens it again on
// the same dir: what was committed is there, and new commits work.
func TestTiKVEmbeddedPersists(t *testing.T) {
	dir := t.TempDir()
	kv, err := storage.OpenTiKV(nil, dir)
	if err != nil {
		t.Fatal(err)
	}
	put(t, kv, string(storage.PartKey(1)), "acct-1", string(storage.BudgetKey("b/1")), "budget")
	put(t, kv, string(storage.PartKey(1)), "acct-1-v2") // a second version
	if err := kv.Close(); err != nil {
		t.Fatal(err)
	}

	kv2, err := storage.OpenTiKV(nil, dir)
	if err != nil {
		t.Fatalf("OpenTiKV on the same dir: %v", err)
	}
	defer kv2.Close()
	if v := get(t, kv2, string(storage.PartKey(1))); string(v) != "acct-1-v2" {
		t.Fatalf("after reopen, account = %q, want acct-1-v2", v)
	}
	if v := get(t, kv2, string(storage.BudgetKey("b/1"))); string(v) != "budget" {
		t.Fatalf("after reopen, budget = %q, want budget", v)
	}
	// Writes after the reopen are ordered after the old ones: a new
	// read-modify-write sees the latest value.
	err = kv2.Update(context.Background(), func(txn storage.Txn) error {
		v, err := storage.Get(context.Background(), txn, storage.PartKey(1))
		if err != nil {
			return err
		}
		return txn.Set(storage.PartKey(1), append(v, "+v3"...))
	})
	if err != nil {
		t.Fatal(err)
	}
	if v := get(t, kv2, string(storage.PartKey(1))); string(v) != "acct-1-v2+v3" {
		t.Fatalf("after reopen and update, account = %q, want acct-1-v2+v3", v)
	}
	var keys []string
	err = kv2.Scan(context.Background(), []byte("rr/"), storage.PrefixEnd([]byte("rr/")), func(k, v []byte) (bool, error) {
		keys = append(keys, string(k))
		return true, nil
	})
	if err != nil || len(keys) != 2 {
		t.Fatalf("Scan after reopen = %q, %v; want the two keys", keys, err)
	}
}

// TestUpdateSettledLeavesNoLocks: once UpdateSettled returns, every key of
// its transaction is committed (client-go commits the keys other than the
// primary's batch in the background): no lock is left for a reader to meet.
func TestUpdateSettledLeavesNoLocks(t *testing.T) {
	kv := storagetest.TiKV(t, "")
	ctx := context.Background()
	value := bytes.Repeat([]byte("v"), 512)
	for round := range 5 {
		err := kv.UpdateSettled(ctx, func(txn storage.Txn) error {
			// ~1 MB in 2,000 keys: many commit batches beyond the primary's.
			for i := range 2000 {
				if err := txn.Set(fmt.Appendf(nil, "rr/test/%02d/%06d", round, i), value); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if n := locksIn(t, kv, []byte("rr/test/")); n != 0 {
			t.Fatalf("round %d: %d locks left after UpdateSettled returned", round, n)
		}
	}
}

// locksIn counts the locks (of any transaction) in the region of prefix.
func locksIn(t *testing.T, kv *storage.TiKV, prefix []byte) int {
	t.Helper()
	bo := tikv.NewBackoffer(context.Background(), 5000)
	loc, err := kv.Store.GetRegionCache().LocateKey(bo, prefix)
	if err != nil {
		t.Fatal(err)
	}
	req := tikvrpc.NewRequest(tikvrpc.CmdScanLock, &kvrpcpb.ScanLockRequest{MaxVersion: math.MaxUint64, StartKey: prefix, Limit: 100000})
	resp, err := kv.Store.SendReq(bo, req, loc.Region, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	r, ok := resp.Resp.(*kvrpcpb.ScanLockResponse)
	if !ok || r.GetError() != nil {
		t.Fatalf("scan locks: %T %v", resp.Resp, r.GetError())
	}
	return len(r.GetLocks())
}

// Readers that meet a plain Update's background-committed locks have them
// resolved by the transaction's keys, never by a scan of the region
// (storage.KeyedResolve), and read what was committed. Each transaction's
// keys are over CommitBatchBytes, so client-go commits those past the
// primary's request in the background.
func TestReadersResolveByKeys(t *testing.T) {
	kv := storagetest.TiKV(t, "")
	ctx := context.Background()
	pad := strings.Repeat("k", 2*storage.CommitBatchBytes/2000)
	for round := range 50 {
		keys := make([][]byte, 2000)
		err := kv.Update(ctx, func(txn storage.Txn) error {
			for i := range keys {
				keys[i] = fmt.Appendf(nil, "rr/test/%02d/%06d/%s", round, i, pad)
				if err := txn.Set(keys[i], keys[i]); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		err = kv.View(func(txn storage.Txn) error {
			got, err := storage.BatchGet(ctx, txn, keys)
			if err != nil {
				return err
			}
			for _, k := range keys {
				if !bytes.Equal(got[string(k)], k) {
					return fmt.Errorf("%.20s reads %.20q", k, got[string(k)])
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if keyed, scanned := kv.LockResolves(); scanned != 0 {
			t.Fatalf("round %d: %d resolutions scanned the region (%d by keys)", round, scanned, keyed)
		} else if keyed > 0 {
			return
		}
	}
	t.Fatal("no reader met a lock in 50 rounds")
}

// TestEmbeddedStoreWaitsForItsLock: a node started again at once after
// kill -9 finds the embedded store's lock still held while the killed
// process exits; opening waits for it (bounded by EmbeddedLockWait), and
// past the bound fails with an error that says the dir is in use.
func TestEmbeddedStoreWaitsForItsLock(t *testing.T) {
	dir := t.TempDir()
	first, err := storage.OpenTiKV(nil, dir)
	if err != nil {
		t.Fatal(err)
	}
	put(t, first, "rr/test/lock", "held")

	saved := storage.EmbeddedLockWait
	storage.EmbeddedLockWait = 200 * time.Millisecond
	_, err = storage.OpenTiKV(nil, dir)
	storage.EmbeddedLockWait = saved
	if !errors.Is(err, storage.ErrUnavailable) || !strings.Contains(fmt.Sprint(err), "locked by another process") {
		t.Fatalf("OpenTiKV on a dir in use past the wait = %v, want unavailable, locked by another process", err)
	}

	var closing atomic.Bool
	go func() {
		time.Sleep(300 * time.Millisecond)
		closing.Store(true)
		_ = first.Close()
	}()
	second, err := storage.OpenTiKV(nil, dir)
	if err != nil {
		t.Fatalf("OpenTiKV while the lock is released within the wait = %v", err)
	}
	defer second.Close()
	if !closing.Load() {
		t.Fatal("the second open did not wait for the first to close")
	}
	if v := get(t, second, "rr/test/lock"); string(v) != "held" {
		t.Fatalf("Get after reopening = %q, want held", v)
	}
}

// A booking transaction writes a few values of tens of KiB (journals,
// the state, pages): they go to the store in one prewrite request, not
// one request per key as client-go's default 16 KiB batches sent them.
func TestLargeValuesPrewriteInOneRequest(t *testing.T) {
	kv := storagetest.TiKV(t, "")
	if n := prewritesToPut(t, kv, "rr/test/large/", 40<<10); n != 1 {
		t.Errorf("8 values of 40 KiB in %d prewrite requests, want 1", n)
	}
	// A transaction past CommitBatchBytes still commits whole, in more
	// requests.
	if n := prewritesToPut(t, kv, "rr/test/big/", 300<<10); n < 2 {
		t.Errorf("8 values of 300 KiB in %d prewrite requests, want at least 2", n)
	}
}

// prewritesToPut writes eight values of size bytes under prefix in one
// transaction, reads each back, and returns the prewrite requests the
// transaction took.
func prewritesToPut(t *testing.T, kv *storage.TiKV, prefix string, size int) int64 {
	t.Helper()
	value := bytes.Repeat([]byte("v"), size)
	kvs := make([]string, 0, 16)
	for i := range 8 {
		kvs = append(kvs, fmt.Sprintf("%s%d", prefix, i), string(value))
	}
	before := kv.PrewriteRequests()
	put(t, kv, kvs...)
	n := kv.PrewriteRequests() - before
	for i := range 8 {
		if got := get(t, kv, fmt.Sprintf("%s%d", prefix, i)); !bytes.Equal(got, value) {
			t.Fatalf("%s%d: %d bytes read back, want %d", prefix, i, len(got), len(value))
		}
	}
	return n
}
