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

	pingcaplog "github.com/pingcap/log"
	tikverr "github.com/tikv/client-go/v2/error"
	"github.com/tikv/client-go/v2/testutils"
	"github.com/tikv/client-go/v2/tikv"
	"github.com/tikv/client-go/v2/txnkv"
	"github.com/tikv/client-go/v2/txnkv/transaction"
	"go.uber.org/zap/zapcore"
)

// client-go logs routine events (region cache, lock resolution) at INFO
// through its own global logger; redrain keeps WARN and above.
func init() { pingcaplog.SetLevel(zapcore.WarnLevel) }

var (
	// ErrConflict is returned when a conditional write lost: another writer
	// changed what this one read. The caller reloads and retries.
	ErrConflict = errors.New("storage: write conflict")
	// ErrUnavailable wraps failures to reach a backend.
	ErrUnavailable = errors.New("storage: backend unavailable")
)

// TiKV is the store of record.
type TiKV struct {
	Store    *tikv.KVStore
	Embedded bool
	close    func() error
}

// OpenTiKV connects to PD endpoints, or when pd is empty opens client-go's
// TiKV test cluster persisted under dir. Both give the same *tikv.KVStore.
func OpenTiKV(pd []string, dir string) (*TiKV, error) {
	if len(pd) > 0 {
		c, err := txnkv.NewClient(pd)
		if err != nil {
			return nil, fmt.Errorf("%w: tikv via pd %v: %v", ErrUnavailable, pd, err)
		}
		return &TiKV{Store: c.KVStore, close: c.Close}, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	client, cluster, pdClient, err := testutils.NewMockTiKV(filepath.Join(dir, "tikv"), nil)
	if err != nil {
		return nil, fmt.Errorf("%w: embedded tikv in %s: %v", ErrUnavailable, dir, err)
	}
	// The test cluster keeps region metadata in memory only; the data lives
	// in leveldb under dir, so a fresh single region over it is the whole
	// restart story.
	testutils.BootstrapWithSingleStore(cluster)
	store, err := tikv.NewTestTiKVStore(client, pdClient, nil, nil, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: embedded tikv: %v", ErrUnavailable, err)
	}
	return &TiKV{Store: store, Embedded: true, close: store.Close}, nil
}

// Close releases the connection (and the embedded store).
func (t *TiKV) Close() error { return t.close() }

// Update runs fn in an optimistic transaction and commits it. A write
// conflict at commit is reported as ErrConflict.
func (t *TiKV) Update(ctx context.Context, fn func(txn *transaction.KVTxn) error) error {
	txn, err := t.Store.Begin()
	if err != nil {
		return fmt.Errorf("%w: begin: %v", ErrUnavailable, err)
	}
	if err := fn(txn); err != nil {
		_ = txn.Rollback()
		return err
	}
	// Once started, a commit runs to its end: a caller's deadline that cut
	// it short would leave its outcome undetermined (the primary may or
	// may not have committed), and the embedded test cluster was seen to
	// answer epoch_not_match for good after such a cut (a node under CPU
	// starvation, a 5 s deadline). client-go bounds the commit itself.
	if err := txn.Commit(context.WithoutCancel(ctx)); err != nil {
		if tikverr.IsErrWriteConflict(err) || errors.Is(err, ErrConflict) {
			return fmt.Errorf("%w: %v", ErrConflict, err)
		}
		return fmt.Errorf("%w: commit: %v", ErrUnavailable, err)
	}
	return nil
}

// View runs fn in a read-only snapshot transaction.
func (t *TiKV) View(fn func(txn *transaction.KVTxn) error) error {
	txn, err := t.Store.Begin()
	if err != nil {
		return fmt.Errorf("%w: begin: %v", ErrUnavailable, err)
	}
	defer txn.Rollback()
	return fn(txn)
}

// Get reads one key in txn; a missing key is (nil, nil).
func Get(ctx context.Context, txn *transaction.KVTxn, key []byte) ([]byte, error) {
	v, err := txn.Get(ctx, key)
	if tikverr.IsErrNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: get: %v", ErrUnavailable, err)
	}
	return v.Value, nil
}

// BatchGet reads keys in txn; missing keys are absent from the map.
func BatchGet(ctx context.Context, txn *transaction.KVTxn, keys [][]byte) (map[string][]byte, error) {
	m, err := txn.BatchGet(ctx, keys)
	if err != nil {
		return nil, fmt.Errorf("%w: batch get: %v", ErrUnavailable, err)
	}
	out := make(map[string][]byte, len(m))
	for k, v := range m {
		out[k] = v.Value
	}
	return out, nil
}

// Scan calls fn for every key in [start, end) in order, in a read-only
// snapshot, until fn returns false.
func (t *TiKV) Scan(ctx context.Context, start, end []byte, fn func(key, value []byte) (bool, error)) error {
	return t.View(func(txn *transaction.KVTxn) error { return ScanTxn(txn, start, end, fn) })
}

// ScanTxn is Scan inside an open transaction.
func ScanTxn(txn *transaction.KVTxn, start, end []byte, fn func(key, value []byte) (bool, error)) error {
	it, err := txn.Iter(start, end)
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
