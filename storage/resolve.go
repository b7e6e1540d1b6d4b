package storage

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pingcap/kvproto/pkg/errorpb"
	"github.com/pingcap/kvproto/pkg/kvrpcpb"
	"github.com/tikv/client-go/v2/oracle"
	"github.com/tikv/client-go/v2/testutils"
	"github.com/tikv/client-go/v2/tikv"
	"github.com/tikv/client-go/v2/tikvrpc"
	"github.com/tikv/client-go/v2/util/async"
)

// KeyedResolve wraps the RPC client of client-go's TiKV test cluster (the
// embedded store, tikvdev) so that resolving a transaction's locks
// touches that transaction's keys only, as TiKV does.
//
// Why: client-go commits a transaction's primary before it answers and
// its other keys in the background; a reader that meets one of those
// locks has the transaction's locks resolved (ResolveLock). The test
// cluster ignores the request's keys and scans the lock's whole region,
// every version of every key, under a lock of its whole store: at 40k
// grants/s held 60 s that scan was 29-43% of a node's CPU while it
// drained (BENCHMARKS.md, *Lock resolution in the embedded store*).
//
// How: the wrapper remembers which keys each transaction prewrote (a
// superset of its locks: recorded before the prewrite is sent) until the
// transaction commits, rolls back or is resolved. A ResolveLock becomes a
// Commit (the transaction committed) or a BatchRollback (it did not) of
// the request's own keys when it names them (client-go's "lite" resolve
// of a small transaction), else of the keys remembered for the
// transaction. Both are exact in the test cluster: committing a key
// already committed by the same transaction does nothing, rolling back a
// key that holds no lock of the transaction records the rollback. When
// the keys are unknown (locks left by a process that ended, an entry
// older than keyedResolveAge), the
// region is not the whole key space, or the translated request fails,
// the original scan runs: never less exact than before, only slower.
type KeyedResolve struct {
	tikv.Client
	cluster *testutils.MockCluster

	mu sync.Mutex
	// pending are the keys each transaction (by start ts) prewrote and
	// has not settled; a transaction whose keys all settled stays known
	// with none (nil) for keyedSettledAge, so readers that met its locks
	// before then still resolve without a request.
	pending map[uint64]map[string]struct{}
	adds    int // transactions remembered, to sweep every 256

	keyed, scanned atomic.Int64
	prewrites      atomic.Int64
}

// keyedResolveAge bounds how long a transaction's keys are kept: past
// it (a client that vanished without committing or rolling back) its
// locks are resolved by the scan.
const keyedResolveAge = 10 * time.Minute

// keyedSettledAge is how long a settled transaction stays known.
const keyedSettledAge = time.Minute

// NewKeyedResolve wraps client, whose cluster tells each region's range.
func NewKeyedResolve(client tikv.Client, cluster *testutils.MockCluster) *KeyedResolve {
	return &KeyedResolve{Client: client, cluster: cluster, pending: make(map[uint64]map[string]struct{})}
}

// Resolves counts the ResolveLock requests answered by keys and by the
// region scan.
func (k *KeyedResolve) Resolves() (keyed, scanned int64) { return k.keyed.Load(), k.scanned.Load() }

// Prewrites counts the prewrite requests sent.
func (k *KeyedResolve) Prewrites() int64 { return k.prewrites.Load() }

// SendRequest implements tikv.Client.
func (k *KeyedResolve) SendRequest(ctx context.Context, addr string, req *tikvrpc.Request, timeout time.Duration) (*tikvrpc.Response, error) {
	switch req.Type {
	case tikvrpc.CmdPrewrite:
		k.prewrites.Add(1)
		r := req.Prewrite()
		k.remember(r.StartVersion, r.Mutations)
	case tikvrpc.CmdCommit, tikvrpc.CmdBatchRollback:
		var startTS uint64
		var keys [][]byte
		if req.Type == tikvrpc.CmdCommit {
			startTS, keys = req.Commit().GetStartVersion(), req.Commit().GetKeys()
		} else {
			startTS, keys = req.BatchRollback().GetStartVersion(), req.BatchRollback().GetKeys()
		}
		resp, err := k.Client.SendRequest(ctx, addr, req, timeout)
		if region, keyErr, ok := outcome(resp, err); ok && region == nil && keyErr == nil {
			k.forget(startTS, keys)
		}
		return resp, err
	case tikvrpc.CmdResolveLock:
		if resp := k.resolveByKeys(ctx, addr, req, timeout); resp != nil {
			k.keyed.Add(1)
			return resp, nil
		}
		r := req.ResolveLock()
		resp, err := k.Client.SendRequest(ctx, addr, req, timeout)
		k.scanned.Add(1)
		if region, keyErr, ok := outcome(resp, err); ok && region == nil && keyErr == nil && len(r.TxnInfos) == 0 {
			k.drop(r.StartVersion)
		}
		return resp, err
	}
	return k.Client.SendRequest(ctx, addr, req, timeout)
}

// SendRequestAsync implements tikv.Client through SendRequest, as the
// test cluster's own client does.
func (k *KeyedResolve) SendRequestAsync(ctx context.Context, addr string, req *tikvrpc.Request, cb async.Callback[*tikvrpc.Response]) {
	go func() { cb.Schedule(k.SendRequest(ctx, addr, req, 0)) }()
}

// resolveByKeys answers a ResolveLock by a Commit or BatchRollback of
// the transaction's keys, or returns nil when the scan must run.
func (k *KeyedResolve) resolveByKeys(ctx context.Context, addr string, req *tikvrpc.Request, timeout time.Duration) *tikvrpc.Response {
	r := req.ResolveLock()
	if len(r.TxnInfos) > 0 || r.StartVersion == 0 {
		return nil
	}
	if region, _ := k.cluster.GetRegion(req.RegionId); region == nil || len(region.StartKey) > 0 || len(region.EndKey) > 0 {
		return nil
	}
	keys := r.Keys
	whole := len(keys) == 0
	if whole {
		var ok bool
		if keys, ok = k.known(r.StartVersion); !ok {
			return nil
		}
		if len(keys) == 0 {
			// Every key committed or rolled back since the reader met
			// its lock.
			return &tikvrpc.Response{Resp: &kvrpcpb.ResolveLockResponse{}}
		}
	}
	var sub *tikvrpc.Request
	if r.CommitVersion > 0 {
		sub = tikvrpc.NewRequest(tikvrpc.CmdCommit, &kvrpcpb.CommitRequest{StartVersion: r.StartVersion, Keys: keys, CommitVersion: r.CommitVersion}, req.Context)
	} else {
		sub = tikvrpc.NewRequest(tikvrpc.CmdBatchRollback, &kvrpcpb.BatchRollbackRequest{StartVersion: r.StartVersion, Keys: keys}, req.Context)
	}
	var out kvrpcpb.ResolveLockResponse
	var ok bool
	if out.RegionError, out.Error, ok = outcome(k.Client.SendRequest(ctx, addr, sub, timeout)); !ok || out.Error != nil {
		return nil // the scan decides
	}
	if out.RegionError == nil {
		if whole {
			k.drop(r.StartVersion)
		} else {
			k.forget(r.StartVersion, keys)
		}
	}
	return &tikvrpc.Response{Resp: &out}
}

func (k *KeyedResolve) remember(startTS uint64, ms []*kvrpcpb.Mutation) {
	k.mu.Lock()
	defer k.mu.Unlock()
	keys, known := k.pending[startTS]
	if !known {
		if k.adds++; k.adds%256 == 0 {
			k.sweep(startTS)
		}
	}
	if keys == nil { // new, or settled and prewriting again
		keys = make(map[string]struct{}, len(ms))
		k.pending[startTS] = keys
	}
	for _, m := range ms {
		keys[string(m.Key)] = struct{}{}
	}
}

// sweep drops transactions settled keyedSettledAge before now (a start
// ts), and those started keyedResolveAge before it: their clients left
// them.
func (k *KeyedResolve) sweep(now uint64) {
	ms := oracle.ExtractPhysical(now)
	for ts, keys := range k.pending {
		age := ms - oracle.ExtractPhysical(ts)
		if age > keyedResolveAge.Milliseconds() || len(keys) == 0 && age > keyedSettledAge.Milliseconds() {
			delete(k.pending, ts)
		}
	}
}

func (k *KeyedResolve) forget(startTS uint64, keys [][]byte) {
	k.mu.Lock()
	defer k.mu.Unlock()
	held := k.pending[startTS]
	if held == nil {
		return
	}
	for _, key := range keys {
		delete(held, string(key))
	}
	if len(held) == 0 {
		k.pending[startTS] = nil // settled: known for keyedSettledAge, holding nothing
	}
}

// drop settles every key of startTS.
func (k *KeyedResolve) drop(startTS uint64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, known := k.pending[startTS]; known {
		k.pending[startTS] = nil
	}
}

// known is a copy of the keys startTS may still hold locks on; !ok when
// the transaction is not known.
func (k *KeyedResolve) known(startTS uint64) (keys [][]byte, ok bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	held, known := k.pending[startTS]
	if !known {
		return nil, false
	}
	keys = make([][]byte, 0, len(held))
	for key := range held {
		keys = append(keys, []byte(key))
	}
	return keys, true
}

// outcome is the region and key errors of a Commit, BatchRollback or
// ResolveLock answer; !ok when there is no such answer.
func outcome(resp *tikvrpc.Response, err error) (region *errorpb.Error, key *kvrpcpb.KeyError, ok bool) {
	if err != nil || resp == nil {
		return nil, nil, false
	}
	switch c := resp.Resp.(type) {
	case *kvrpcpb.CommitResponse:
		return c.RegionError, c.Error, true
	case *kvrpcpb.BatchRollbackResponse:
		return c.RegionError, c.Error, true
	case *kvrpcpb.ResolveLockResponse:
		return c.RegionError, c.Error, true
	}
	return nil, nil, false
}
