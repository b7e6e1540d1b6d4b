// Package tikvdev is a development server that lets several processes share
// one TiKV store: it serves client-go's TiKV test cluster (a leveldb-backed
// MVCC store, normally usable only inside the process that opened it) over
// the real PD and TiKV gRPC protocols, so the unchanged production client
// (txnkv.NewClient with this server's PD address) runs transactions on it.
//
// It is NOT for production: one store, one region, no replication, no GC of
// old versions, no authentication, and it only listens on loopback. It
// answers the RPCs a transactional client needs and no more; async commit
// and 1PC are not supported by the test cluster and must stay off (they are
// off by default in client-go).
package tikvdev

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"

	"github.com/pingcap/kvproto/pkg/meta_storagepb"
	"github.com/pingcap/kvproto/pkg/pdpb"
	"github.com/pingcap/kvproto/pkg/tikvpb"
	"github.com/tikv/client-go/v2/testutils"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"redrain/storage"
)

// Server is a TiKV-protocol development server over client-go's TiKV test
// cluster. Not for production.
type Server struct {
	client   *testutils.MockClient
	pdSrv    *grpc.Server
	kvSrv    *grpc.Server
	pdAddr   string
	closeMu  sync.Mutex
	closed   bool
	closeErr error
}

// Start serves PD and TiKV gRPC on 127.0.0.1 (pdAddr "127.0.0.1:0" picks a
// port; the TiKV store listens on its own port, also loopback), with data
// under dir. The MVCC data lives in dir/tikv, the layout storage.OpenTiKV
// uses for its embedded store, so a data dir moves between the two; leveldb
// locks it, so a second server on the same dir fails instead of sharing it.
func Start(dir string, pdAddr string) (*Server, error) {
	if err := checkLoopback(pdAddr); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("tikvdev: %w", err)
	}
	tso, err := openTSO(filepath.Join(dir, "tso"))
	if err != nil {
		return nil, err
	}
	storage.TuneEmbeddedStore()
	client, cluster, _, err := testutils.NewMockTiKV(filepath.Join(dir, "tikv"), nil)
	if err != nil {
		return nil, fmt.Errorf("tikvdev: open test cluster in %s: %w", dir, err)
	}
	pdLis, err := net.Listen("tcp", pdAddr)
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("tikvdev: pd listener: %w", err)
	}
	kvLis, err := listenStore(filepath.Join(dir, "tikv-addr"))
	if err != nil {
		_ = pdLis.Close()
		_ = client.Close()
		return nil, fmt.Errorf("tikvdev: tikv listener: %w", err)
	}

	// Region metadata lives in memory only; the data is in leveldb, so a
	// fresh single region over it is the whole restart story. PD must hand
	// out the store's real address, and the test cluster finds the store a
	// request is for by that same address.
	storeID, _, _ := testutils.BootstrapWithSingleStore(cluster)
	kvAddr := kvLis.Addr().String()
	cluster.UpdateStoreAddr(storeID, kvAddr)

	s := &Server{client: client, pdAddr: pdLis.Addr().String()}
	// WaitForHandlers makes Stop wait for running handlers, so Close never
	// closes leveldb under a request.
	s.pdSrv = grpc.NewServer(grpc.WaitForHandlers(true))
	s.kvSrv = grpc.NewServer(grpc.WaitForHandlers(true))
	url := "http://" + s.pdAddr
	pdpb.RegisterPDServer(s.pdSrv, &pdService{cluster: cluster, tso: tso, url: url})
	meta_storagepb.RegisterMetaStorageServer(s.pdSrv, &metaStorageService{})
	// txnkv.NewClient also opens an etcd client on the PD address and syncs
	// its member list before it returns.
	etcdserverpb.RegisterClusterServer(s.pdSrv, &etcdService{url: url})
	tikvpb.RegisterTikvServer(s.kvSrv, &kvService{client: storage.NewKeyedResolve(client, cluster), addr: kvAddr})
	// The PD client checks its leader's health every second, and client-go
	// probes a store it could not reach before using it again.
	healthpb.RegisterHealthServer(s.pdSrv, health.NewServer())
	healthpb.RegisterHealthServer(s.kvSrv, health.NewServer())
	go func() { _ = s.pdSrv.Serve(pdLis) }()
	go func() { _ = s.kvSrv.Serve(kvLis) }()
	return s, nil
}

// PDAddr is the host:port to give txnkv.NewClient.
func (s *Server) PDAddr() string { return s.pdAddr }

// Close stops serving, waits for running requests and closes the store.
// Clients see their connections fail.
func (s *Server) Close() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if !s.closed {
		s.closed = true
		// Stop, not GracefulStop: clients keep their BatchCommands and TSO
		// streams open forever, so a graceful stop never ends.
		s.kvSrv.Stop()
		s.pdSrv.Stop()
		s.closeErr = s.client.Close()
	}
	return s.closeErr
}

// checkLoopback refuses any address a remote host could reach: the server
// has no authentication at all.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("tikvdev: pd address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return errors.New("tikvdev: pd address " + addr + " is not loopback; this server is for development only")
	}
	return nil
}

// listenStore listens for the TiKV service on the address the last run on
// this dir used, if it is free, and records the address it got. Clients
// that outlive a restart (on a fixed PD address) then find the store where
// they left it; with a new address they first spent ~5 s timing out on the
// old one before asking PD again.
func listenStore(path string) (net.Listener, error) {
	if b, err := os.ReadFile(path); err == nil && checkLoopback(string(b)) == nil {
		if l, err := net.Listen("tcp", string(b)); err == nil {
			return l, nil
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, []byte(l.Addr().String()), 0o644); err != nil {
		_ = l.Close()
		return nil, err
	}
	return l, nil
}
