// Package storage connects redrain to its three backends and owns the key
// layout in each: TiKV (the store of record), Kafka (the grant stream) and
// Redis (token status, limit marks and bindings: an index rebuilt from TiKV
// when lost). Each backend is either embedded (for `redrain serve` with no
// flags and for tests) or a real server, behind the same client code.
// It holds no business rules.
package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/pingcap/goleveldb/leveldb/opt"
	pingcaplog "github.com/pingcap/log"
	tikverr "github.com/tikv/client-go/v2/error"
	"github.com/tikv/client-go/v2/kv"
	"github.com/tikv/client-go/v2/oracle"
	"github.com/tikv/client-go/v2/testutils"
	"github.com/tikv/client-go/v2/tikv"
	"github.com/tikv/client-go/v2/txnkv"
	"github.com/tikv/client-go/v2/txnkv/transaction"
	"go.uber.org/zap/zapcore"
)

// client-go logs routine events (region cache, lock resolution) at INFO
// through its own global logger; redrain keeps WARN and above. Its
// transactions are committed in requests of up to CommitBatchBytes.
func init() {
	pingcaplog.SetLevel(zapcore.WarnLevel)
	kv.TxnCommitBatchSize.Store(CommitBatchBytes)
}

// CommitBatchBytes is the size up to which client-go puts a transaction's
// keys of one region into one prewrite (and one commit) request; it is
// process-wide. Its default, 16 KiB, is made for many small rows: a
// booking transaction writes a few values of 6-50 KiB each (a journal per
// partition, the state, the pages of a checkpoint), so every key went in
// a request of its own (~7 prewrites a transaction in a burst, each a
// goroutine, a request and, in the embedded store, a pass under its lock
// and a write of its log). At 1 MiB a transaction's keys go in one or two
// requests, and none is left to commit in the background: a burst's
// issue→booked p50 fell from 170-270 ms to 44-57 ms, and at 200,000
// grants/s for 30 s the p99 from 720 ms to 470 (BENCHMARKS.md, *Booking's
// transactions in one request*). TiKV takes a request up to its raft
// entry limit (8 MiB by default).
const CommitBatchBytes = 1 << 20

var (
	// ErrConflict is returned when a conditional write lost: another writer
	// changed what this one read. The caller reloads and retries.
	ErrConflict = errors.New("storage: write conflict")
	// ErrUnavailable wraps failures to reach a backend.
	ErrUnavailable = errors.New("storage: backend unavailable")
)

// TiKV is the store of record: client-go's store (a PD cluster or the
// embedded test cluster), or a store in memory (NewMemoryStore, for the
// simulation) behind the same transactions.
type TiKV struct {
	Store    *tikv.KVStore // nil for a store in memory
	Embedded bool
	resolve  *KeyedResolve // the embedded store's lock resolution
	kv       kvBackend
	close    func() error
	closed   sync.Once
	closeErr error
}

// Txn is one transaction on the store of record: its reads see the store
// as of its start, its writes are buffered until Update commits them
// (optimistically: a write conflict fails the commit).
type Txn interface {
	// Get reads one key; a missing key is (nil, nil).
	Get(ctx context.Context, key []byte) ([]byte, error)
	// BatchGet reads keys; missing keys are absent from the map.
	BatchGet(ctx context.Context, keys [][]byte) (map[string][]byte, error)
	Set(key, value []byte) error
	Delete(key []byte) error
	// Scan calls fn for every key in [start, end) in order until fn
	// returns false.
	Scan(start, end []byte, fn func(key, value []byte) (bool, error)) error
	// StartTS is the transaction's start timestamp, unique per
	// transaction.
	StartTS() uint64
}

// kvBackend begins transactions; kvTxn commits or drops one. A commit
// reports a lost conflict as ErrConflict and any other failure as
// ErrUnavailable (the write may or may not have landed).
type kvBackend interface {
	begin(ctx context.Context) (kvTxn, error)
}

type kvTxn interface {
	Txn
	commit(ctx context.Context) error
	rollback()
}

// EmbeddedLockWait bounds how long OpenTiKV waits for the embedded store's
// lock, held by another process on the same dir (one killed a moment ago
// and still exiting), before it gives up.
var EmbeddedLockWait = 15 * time.Second

const embeddedLockPoll = 100 * time.Millisecond

// OpenTiKV connects to PD endpoints, or when pd is empty opens client-go's
// TiKV test cluster persisted under dir. Both give the same *tikv.KVStore.
func OpenTiKV(pd []string, dir string) (*TiKV, error) {
	if len(pd) > 0 {
		c, err := txnkv.NewClient(pd)
		if err != nil {
			return nil, fmt.Errorf("%w: tikv via pd %v: %v", ErrUnavailable, pd, err)
		}
		return &TiKV{Store: c.KVStore, kv: clientBackend{c.KVStore}, close: c.Close}, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	TuneEmbeddedStore()
	client, cluster, pdClient, err := testutils.NewMockTiKV(filepath.Join(dir, "tikv"), nil)
	// A node started again right after kill -9 finds the store's lock
	// still held while the killed process exits: wait for it, bounded.
	for waited := time.Duration(0); err != nil && errors.Is(err, syscall.EWOULDBLOCK) && waited < EmbeddedLockWait; waited += embeddedLockPoll {
		time.Sleep(embeddedLockPoll)
		client, cluster, pdClient, err = testutils.NewMockTiKV(filepath.Join(dir, "tikv"), nil)
	}
	if err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: embedded tikv in %s: locked by another process for %v (is a node still running on this data dir?): %v", ErrUnavailable, dir, EmbeddedLockWait, err)
		}
		return nil, fmt.Errorf("%w: embedded tikv in %s: %v", ErrUnavailable, dir, err)
	}
	// The test cluster keeps region metadata in memory only; the data lives
	// in leveldb under dir, so a fresh single region over it is the whole
	// restart story.
	testutils.BootstrapWithSingleStore(cluster)
	resolve := NewKeyedResolve(client, cluster)
	store, err := tikv.NewTestTiKVStore(resolve, pdClient, nil, nil, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: embedded tikv: %v", ErrUnavailable, err)
	}
	return &TiKV{Store: store, Embedded: true, resolve: resolve, kv: clientBackend{store}, close: store.Close}, nil
}

// LockResolves counts the embedded store's lock resolutions answered by
// the transaction's keys and by a scan of the region (KeyedResolve);
// zero for a store reached over PD.
func (t *TiKV) LockResolves() (keyed, scanned int64) {
	if t.resolve == nil {
		return 0, 0
	}
	return t.resolve.Resolves()
}

// PrewriteRequests counts the prewrite requests sent to the embedded
// store (0 for a store reached through PD).
func (t *TiKV) PrewriteRequests() int64 {
	if t.resolve == nil {
		return 0
	}
	return t.resolve.Prewrites()
}

// Close releases the connection (and the embedded store); a second Close
// returns the first one's result.
func (t *TiKV) Close() error {
	t.closed.Do(func() { t.closeErr = t.close() })
	return t.closeErr
}

// Update runs fn in an optimistic transaction and commits it. A write
// conflict at commit is reported as ErrConflict.
func (t *TiKV) Update(ctx context.Context, fn func(txn Txn) error) error {
	return t.update(ctx, fn, false)
}

// UpdateSettled is Update, then waits until the transaction's keys other
// than its primary are committed too, or ctx ends. client-go commits the
// primary's batch before it answers and the other keys in the
// background; a reader that meets one of those keys' locks has it
// resolved, and client-go's test cluster (the embedded store) resolves a
// lock by scanning the lock's whole region under a lock of its whole
// store. A caller whose next transaction reads back what this one wrote
// (the statements folder's folds, one after another) so never meets its
// own locks (BENCHMARKS.md, *Lock resolution in the embedded store*).
func (t *TiKV) UpdateSettled(ctx context.Context, fn func(txn Txn) error) error {
	return t.update(ctx, fn, true)
}

func (t *TiKV) update(ctx context.Context, fn func(txn Txn) error, settle bool) error {
	txn, err := t.kv.begin(ctx)
	if err != nil {
		return err
	}
	var bg sync.WaitGroup
	if c, ok := txn.(clientTxn); ok && settle {
		c.txn.SetBackgroundGoroutineLifecycleHooks(transaction.LifecycleHooks{Pre: func() { bg.Add(1) }, Post: bg.Done})
	}
	if err := fn(txn); err != nil {
		txn.rollback()
		return err
	}
	// Once started, a commit runs to its end: a caller's deadline that cut
	// it short would leave its outcome undetermined (the primary may or
	// may not have committed), and the embedded test cluster was seen to
	// answer epoch_not_match for good after such a cut (a node under CPU
	// starvation, a 5 s deadline). client-go bounds the commit itself.
	err = txn.commit(context.WithoutCancel(ctx))
	if settle {
		done := make(chan struct{})
		go func() { bg.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
		}
	}
	return err
}

// View runs fn in a read-only snapshot transaction.
func (t *TiKV) View(fn func(txn Txn) error) error {
	return t.view(context.Background(), fn)
}

// view is View with its start timestamp's wait bounded by ctx too.
func (t *TiKV) view(ctx context.Context, fn func(txn Txn) error) error {
	txn, err := t.kv.begin(ctx)
	if err != nil {
		return err
	}
	defer txn.rollback()
	return fn(txn)
}

// Snapshot begins a transaction that only reads, for a caller that reads
// across several calls; release drops it.
func (t *TiKV) Snapshot() (txn Txn, release func(), err error) {
	kt, err := t.kv.begin(context.Background())
	if err != nil {
		return nil, nil, err
	}
	return kt, kt.rollback, nil
}

// Get reads one key in txn; a missing key is (nil, nil).
func Get(ctx context.Context, txn Txn, key []byte) ([]byte, error) { return txn.Get(ctx, key) }

// BatchGet reads keys in txn; missing keys are absent from the map.
func BatchGet(ctx context.Context, txn Txn, keys [][]byte) (map[string][]byte, error) {
	return txn.BatchGet(ctx, keys)
}

// Scan calls fn for every key in [start, end) in order, in a read-only
// snapshot, until fn returns false.
func (t *TiKV) Scan(ctx context.Context, start, end []byte, fn func(key, value []byte) (bool, error)) error {
	return t.view(ctx, func(txn Txn) error { return txn.Scan(start, end, fn) })
}

// ScanTxn is Scan inside an open transaction.
func ScanTxn(txn Txn, start, end []byte, fn func(key, value []byte) (bool, error)) error {
	return txn.Scan(start, end, fn)
}

// clientBackend is client-go's store.
type clientBackend struct{ store *tikv.KVStore }

// beginWait bounds the wait for a transaction's start timestamp, as
// client-go's own Begin means to (its 15 s of backoff between attempts);
// but an attempt of Begin waits on PD without a deadline, so with PD gone
// one Begin was seen to take minutes, and a stopping node waited for it.
const beginWait = 15 * time.Second

// begin takes a start timestamp from PD, retried until ctx ends or
// beginWait passes, and begins the transaction at it.
func (c clientBackend) begin(ctx context.Context) (kvTxn, error) {
	ctx, cancel := context.WithTimeout(ctx, beginWait)
	defer cancel()
	pause := 10 * time.Millisecond
	for {
		ts, err := c.store.GetOracle().GetTimestamp(ctx, &oracle.Option{TxnScope: oracle.GlobalTxnScope})
		if err == nil {
			txn, err := c.store.Begin(tikv.WithStartTS(ts))
			if err != nil {
				return nil, fmt.Errorf("%w: begin: %v", ErrUnavailable, err)
			}
			return clientTxn{txn}, nil
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w: begin: no timestamp from PD: %v (%v)", ErrUnavailable, err, context.Cause(ctx))
		case <-t.C:
		}
		pause = min(2*pause, time.Second)
	}
}

// clientTxn is one client-go transaction.
type clientTxn struct{ txn *transaction.KVTxn }

func (c clientTxn) Get(ctx context.Context, key []byte) ([]byte, error) {
	v, err := c.txn.Get(ctx, key)
	if tikverr.IsErrNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: get: %v", ErrUnavailable, err)
	}
	return v.Value, nil
}

func (c clientTxn) BatchGet(ctx context.Context, keys [][]byte) (map[string][]byte, error) {
	m, err := c.txn.BatchGet(ctx, keys)
	if err != nil {
		return nil, fmt.Errorf("%w: batch get: %v", ErrUnavailable, err)
	}
	out := make(map[string][]byte, len(m))
	for k, v := range m {
		out[k] = v.Value
	}
	return out, nil
}

func (c clientTxn) Set(key, value []byte) error { return c.txn.Set(key, value) }
func (c clientTxn) Delete(key []byte) error     { return c.txn.Delete(key) }
func (c clientTxn) StartTS() uint64             { return c.txn.StartTS() }
func (c clientTxn) rollback()                   { _ = c.txn.Rollback() }

func (c clientTxn) Scan(start, end []byte, fn func(key, value []byte) (bool, error)) error {
	it, err := c.txn.Iter(start, end)
	if err != nil {
		return fmt.Errorf("%w: iter: %v", ErrUnavailable, err)
	}
	defer it.Close()
	for it.Valid() {
		more, err := fn(it.Key(), it.Value())
		if err != nil || !more {
			return err
		}
		if err := it.Next(); err != nil {
			return fmt.Errorf("%w: iter: %v", ErrUnavailable, err)
		}
	}
	return nil
}

func (c clientTxn) commit(ctx context.Context) error {
	if err := c.txn.Commit(ctx); err != nil {
		if tikverr.IsErrWriteConflict(err) || errors.Is(err, ErrConflict) {
			return fmt.Errorf("%w: %v", ErrConflict, err)
		}
		return fmt.Errorf("%w: commit: %v", ErrUnavailable, err)
	}
	return nil
}

var tuneEmbedded sync.Once

// TuneEmbeddedStore sizes the LSM under client-go's test cluster (the
// embedded store and tikvdev) for booking's write stream, once, before
// its first open. client-go opens its goleveldb with only a block
// cache set, so the rest comes from goleveldb's package defaults, set here
// (nothing else in the process uses goleveldb).
// Its defaults (a 4 MiB memtable, 2 MiB tables, a 10 MiB first level,
// compaction from 4 level-0 tables) made compaction 21-29% of a node's CPU
// under load: each megabyte booked was merged again level after level.
// 64 MiB memtables, 16 MiB tables, a first level of 2.56 GiB (goleveldb
// scales the total size set here, 256 MiB, by ten per level from level 1)
// and compaction from 8 level-0 tables cut a node's CPU per booked
// grant to 0.72× in a 1M-grant burst and its CPU over its life to 0.63×
// (BENCHMARKS.md, *The embedded store's compaction*). Snappy stays (one
// burst without it cost 1.08× the tuned figure: more bytes to merge). A
// memtable is allocated whole: an open embedded store holds up to two,
// 128 MiB.
// Blocks of 32 KiB instead of 4: goleveldb writes a table block by block,
// one write system call each, and at 140k grants/s those calls were 5.9%
// of a node's CPU, inside the compactions' 13.5% (10.3% with these
// blocks; BENCHMARKS.md, *Blocks of 32 KiB in the embedded store*). A
// journal or a page is 6-50 KiB, bigger than the old block already.
// No seek compactions (third_party/goleveldb, the option upstream
// goleveldb has and client-go's pin lacks; RocksDB, TiKV's engine, has
// none): every key booking writes lands in each level-0 table, so a
// table spans the whole key space, and goleveldb scheduled each new one
// for compaction after ~1,600 reads that looked past it, about a second
// after its flush, merging it with all of level 1 (61 MiB to 421 MiB over
// 60 s at 200,000 grants/s): a cost per flush that grew with the data.
// Without them a level-0 table waits for the 8-table trigger, and eight
// go into level 1 in one merge. Paced 200,000 grants/s for 60 s: 0.82-0.88×
// the CPU per booked grant, the schedule held (BENCHMARKS.md, *No seek
// compactions in the embedded store*).
func TuneEmbeddedStore() {
	tuneEmbedded.Do(func() {
		opt.DefaultWriteBuffer = 64 * opt.MiB
		opt.DefaultCompactionTableSize = 16 * opt.MiB
		opt.DefaultCompactionTotalSize = 256 * opt.MiB
		opt.DefaultCompactionL0Trigger = 8
		opt.DefaultWriteL0SlowdownTrigger = 16
		opt.DefaultWriteL0PauseTrigger = 24
		opt.DefaultBlockSize = 32 * opt.KiB
		opt.DefaultDisableSeeksCompaction = true
	})
}
