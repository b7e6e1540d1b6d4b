package storage

import (
	"context"
	"fmt"
	"math"
	"testing"

	"github.com/pingcap/kvproto/pkg/kvrpcpb"
	"github.com/tikv/client-go/v2/testutils"
	"github.com/tikv/client-go/v2/tikvrpc"
)

// resolveRig is client-go's test cluster in memory, one region, with the
// keyed resolution in front of its client.
type resolveRig struct {
	t     *testing.T
	raw   *testutils.MockClient
	kr    *KeyedResolve
	addr  string
	rctx  kvrpcpb.Context
	items [][]byte
}

func newResolveRig(t *testing.T) *resolveRig {
	t.Helper()
	client, cluster, _, err := testutils.NewMockTiKV("", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	storeID, peers, regionID := testutils.BootstrapWithSingleStore(cluster)
	region, _ := cluster.GetRegion(regionID)
	store := cluster.GetStore(storeID)
	rctx := kvrpcpb.Context{RegionId: regionID, RegionEpoch: region.RegionEpoch, Peer: region.Peers[0]}
	if rctx.Peer.Id != peers {
		t.Fatalf("peer %d, want %d", rctx.Peer.Id, peers)
	}
	g := &resolveRig{t: t, raw: client, kr: NewKeyedResolve(client, cluster), addr: store.Address, rctx: rctx}
	for i := range 300 {
		g.items = append(g.items, fmt.Appendf(nil, "rr/test/%04d", i))
	}
	return g
}

// send sends one request through the keyed resolution (or straight to
// the cluster when raw) and returns the response body.
func (g *resolveRig) send(raw bool, typ tikvrpc.CmdType, body any) any {
	g.t.Helper()
	req := tikvrpc.NewRequest(typ, body, g.rctx)
	var resp *tikvrpc.Response
	var err error
	if raw {
		resp, err = g.raw.SendRequest(context.Background(), g.addr, req, 0)
	} else {
		resp, err = g.kr.SendRequest(context.Background(), g.addr, req, 0)
	}
	if err != nil {
		g.t.Fatal(err)
	}
	return resp.Resp
}

// prewrite locks every item at startTS, the first the primary.
func (g *resolveRig) prewrite(raw bool, startTS uint64) {
	g.t.Helper()
	var ms []*kvrpcpb.Mutation
	for _, k := range g.items {
		ms = append(ms, &kvrpcpb.Mutation{Op: kvrpcpb.Op_Put, Key: k, Value: fmt.Appendf(nil, "v%d", startTS)})
	}
	r := g.send(raw, tikvrpc.CmdPrewrite, &kvrpcpb.PrewriteRequest{Mutations: ms, PrimaryLock: g.items[0], StartVersion: startTS, LockTtl: 3000})
	if errs := r.(*kvrpcpb.PrewriteResponse).GetErrors(); len(errs) > 0 {
		g.t.Fatalf("prewrite: %v", errs)
	}
}

func (g *resolveRig) commit(startTS, commitTS uint64, keys ...[]byte) {
	g.t.Helper()
	r := g.send(false, tikvrpc.CmdCommit, &kvrpcpb.CommitRequest{StartVersion: startTS, Keys: keys, CommitVersion: commitTS})
	if e := r.(*kvrpcpb.CommitResponse).GetError(); e != nil {
		g.t.Fatalf("commit: %v", e)
	}
}

func (g *resolveRig) resolve(startTS, commitTS uint64, keys ...[]byte) {
	g.t.Helper()
	r := g.send(false, tikvrpc.CmdResolveLock, &kvrpcpb.ResolveLockRequest{StartVersion: startTS, CommitVersion: commitTS, Keys: keys})
	if e := r.(*kvrpcpb.ResolveLockResponse).GetError(); e != nil {
		g.t.Fatalf("resolve: %v", e)
	}
}

func (g *resolveRig) locks() int {
	g.t.Helper()
	r := g.send(true, tikvrpc.CmdScanLock, &kvrpcpb.ScanLockRequest{MaxVersion: math.MaxUint64, Limit: 100000})
	return len(r.(*kvrpcpb.ScanLockResponse).GetLocks())
}

// values counts the items that read want at ts.
func (g *resolveRig) values(ts uint64, want string) int {
	g.t.Helper()
	r := g.send(true, tikvrpc.CmdBatchGet, &kvrpcpb.BatchGetRequest{Keys: g.items, Version: ts})
	n := 0
	for _, p := range r.(*kvrpcpb.BatchGetResponse).GetPairs() {
		if p.GetError() != nil {
			g.t.Fatalf("read at %d: %v", ts, p.GetError())
		}
		if string(p.Value) == want {
			n++
		}
	}
	return n
}

// settled checks that no lock is left and every item reads v10 at ts
// (none does when !committed).
func (g *resolveRig) settled(ts uint64, committed bool) {
	g.t.Helper()
	if n := g.locks(); n != 0 {
		g.t.Fatalf("%d locks left", n)
	}
	want := 0
	if committed {
		want = len(g.items)
	}
	if n := g.values(ts, "v10"); n != want {
		g.t.Fatalf("%d of %d items read v10 at %d, want %d", n, len(g.items), ts, want)
	}
}

func (g *resolveRig) counts(keyed, scanned int64) {
	g.t.Helper()
	if k, s := g.kr.Resolves(); k != keyed || s != scanned {
		g.t.Fatalf("resolves by keys %d and by scan %d, want %d and %d", k, s, keyed, scanned)
	}
}

// A committed transaction whose other keys were never committed: the
// resolution commits exactly its remembered keys, without the scan.
func TestKeyedResolveCommits(t *testing.T) {
	g := newResolveRig(t)
	g.prewrite(false, 10)
	g.commit(10, 11, g.items[0])
	g.commit(10, 11, g.items[1:100]...) // part of the background commit landed
	if n := g.locks(); n != 200 {
		t.Fatalf("%d locks before the resolution, want 200", n)
	}
	g.resolve(10, 11)
	g.counts(1, 0)
	g.settled(12, true)
	if keys, ok := g.kr.known(10); !ok || len(keys) != 0 {
		t.Fatalf("%d keys still remembered (known %v)", len(keys), ok)
	}
	// A reader that met a lock before the resolution resolves again:
	// answered without a request.
	g.resolve(10, 11)
	g.counts(2, 0)
	// A late background commit of keys already resolved still succeeds.
	g.commit(10, 11, g.items[150:160]...)
	// A settled transaction holds no keys, and is remembered again if it
	// prewrites again.
	if g.kr.pending[10] != nil {
		t.Fatal("a settled transaction still holds its key set")
	}
	g.kr.remember(10, []*kvrpcpb.Mutation{{Key: []byte("x")}})
	if keys, ok := g.kr.known(10); !ok || len(keys) != 1 {
		t.Fatalf("after a new prewrite: %d keys (known %v)", len(keys), ok)
	}
}

// A transaction that did not commit: the resolution rolls back its keys
// and the items keep their previous values; the lite form (keys named)
// touches only those.
func TestKeyedResolveRollsBack(t *testing.T) {
	g := newResolveRig(t)
	g.prewrite(false, 10)
	g.commit(10, 11, g.items...)
	g.prewrite(false, 20)
	g.resolve(20, 0, g.items[5])
	g.counts(1, 0)
	if n := g.locks(); n != len(g.items)-1 {
		t.Fatalf("%d locks after resolving one key, want %d", n, len(g.items)-1)
	}
	g.resolve(20, 0)
	g.counts(2, 0)
	g.settled(30, true)
	// A client's own rollback settles its keys in the wrapper too.
	g.prewrite(false, 40)
	g.send(false, tikvrpc.CmdBatchRollback, &kvrpcpb.BatchRollbackRequest{StartVersion: 40, Keys: g.items})
	if keys, ok := g.kr.known(40); !ok || len(keys) != 0 {
		t.Fatalf("%d keys still remembered after the rollback (known %v)", len(keys), ok)
	}
	g.settled(50, true)
}

// The scan answers what the keys cannot: locks the wrapper never saw
// (left by a process that ended), and keys that cannot be committed (the
// transaction was rolled back behind the wrapper's back).
func TestKeyedResolveScans(t *testing.T) {
	for _, c := range []struct {
		name      string
		setup     func(g *resolveRig)
		committed bool
	}{
		{"unknown", func(g *resolveRig) { g.prewrite(true, 10) }, true},
		{"rolled back", func(g *resolveRig) {
			g.prewrite(false, 10)
			g.send(true, tikvrpc.CmdBatchRollback, &kvrpcpb.BatchRollbackRequest{StartVersion: 10, Keys: g.items})
		}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := newResolveRig(t)
			c.setup(g)
			g.resolve(10, 11)
			g.counts(0, 1)
			g.settled(12, c.committed)
		})
	}
}

// Transactions whose client left them are forgotten after
// keyedResolveAge.
func TestKeyedResolveForgetsOld(t *testing.T) {
	g := newResolveRig(t)
	old := uint64(1) << 18 // physical 1 ms
	g.prewrite(false, old)
	now := uint64(keyedResolveAge.Milliseconds()+10) << 18
	for i := range 255 {
		g.kr.remember(now+uint64(i), nil)
	}
	if _, ok := g.kr.pending[old]; ok {
		t.Fatal("a transaction older than keyedResolveAge is still remembered")
	}
	if _, ok := g.kr.pending[now]; !ok {
		t.Fatal("the new transaction is not remembered")
	}
}
