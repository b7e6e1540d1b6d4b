package tikvdev

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/pingcap/kvproto/pkg/meta_storagepb"
	"github.com/pingcap/kvproto/pkg/metapb"
	"github.com/pingcap/kvproto/pkg/pdpb"
	"github.com/tikv/client-go/v2/testutils"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// clusterID is what the test cluster's own pd.Client reports. The PD
// client refuses a zero cluster id and any change of it between calls.
const clusterID = 1

// pdService is the PD front end: cluster membership (this server is the
// only member and the leader), timestamps, and region and store routing
// from the test cluster's metadata, whose region keys are already encoded
// the way real PD stores them. (The test cluster's own pd.Client is not
// used: its lookups panic without a client-side circuit breaker in ctx.)
type pdService struct {
	pdpb.UnimplementedPDServer
	cluster *testutils.MockCluster
	tso     *tsoAllocator
	url     string
}

func header() *pdpb.ResponseHeader { return &pdpb.ResponseHeader{ClusterId: clusterID} }

func (p *pdService) member() *pdpb.Member {
	return &pdpb.Member{Name: "tikvdev", MemberId: 1, ClientUrls: []string{p.url}, PeerUrls: []string{p.url}}
}

func (p *pdService) GetMembers(context.Context, *pdpb.GetMembersRequest) (*pdpb.GetMembersResponse, error) {
	m := p.member()
	return &pdpb.GetMembersResponse{Header: header(), Members: []*pdpb.Member{m}, Leader: m, EtcdLeader: m}, nil
}

func (p *pdService) GetClusterInfo(context.Context, *pdpb.GetClusterInfoRequest) (*pdpb.GetClusterInfoResponse, error) {
	// Plain PD mode: timestamps come from this server's Tso stream, not from
	// a separate TSO microservice.
	return &pdpb.GetClusterInfoResponse{Header: header(), ServiceModes: []pdpb.ServiceMode{pdpb.ServiceMode_PD_SVC_MODE}}, nil
}

func (p *pdService) Tso(stream pdpb.PD_TsoServer) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if req.Count == 0 || req.Count >= 1<<logicalBits {
			return status.Errorf(codes.InvalidArgument, "tikvdev: tso count %d", req.Count)
		}
		physical, logical, err := p.tso.next(req.Count)
		if err != nil {
			return status.Error(codes.Unavailable, err.Error())
		}
		resp := &pdpb.TsoResponse{Header: header(), Count: req.Count, Timestamp: &pdpb.Timestamp{Physical: physical, Logical: logical}}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

// regionResponse is a region as the test cluster's lookups return it, in
// wire form; nil when there is no such region.
func regionResponse(meta *metapb.Region, leader *metapb.Peer, buckets *metapb.Buckets, downPeers []*metapb.Peer) *pdpb.RegionResponse {
	if meta == nil {
		return nil
	}
	down := make([]*pdpb.PeerStats, 0, len(downPeers))
	for _, p := range downPeers {
		down = append(down, &pdpb.PeerStats{Peer: p})
	}
	return &pdpb.RegionResponse{Region: meta, Leader: leader, DownPeers: down, Buckets: buckets}
}

func getRegionResponse(meta *metapb.Region, leader *metapb.Peer, buckets *metapb.Buckets, downPeers []*metapb.Peer) (*pdpb.GetRegionResponse, error) {
	rr := regionResponse(meta, leader, buckets, downPeers)
	if rr == nil {
		return &pdpb.GetRegionResponse{Header: header()}, nil
	}
	return &pdpb.GetRegionResponse{Header: header(), Region: rr.Region, Leader: rr.Leader, DownPeers: rr.DownPeers, Buckets: rr.Buckets}, nil
}

func (p *pdService) GetRegion(_ context.Context, req *pdpb.GetRegionRequest) (*pdpb.GetRegionResponse, error) {
	return getRegionResponse(p.cluster.GetRegionByKey(req.RegionKey))
}

func (p *pdService) GetPrevRegion(_ context.Context, req *pdpb.GetRegionRequest) (*pdpb.GetRegionResponse, error) {
	return getRegionResponse(p.cluster.GetPrevRegionByKey(req.RegionKey))
}

func (p *pdService) GetRegionByID(_ context.Context, req *pdpb.GetRegionByIDRequest) (*pdpb.GetRegionResponse, error) {
	return getRegionResponse(p.cluster.GetRegionByID(req.RegionId))
}

// QueryRegion is the batched region lookup the PD client's router uses by
// default: one response per request, each key, previous key and id mapped
// to a region id (0 if none) and each region sent once.
func (p *pdService) QueryRegion(stream pdpb.PD_QueryRegionServer) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		resp := &pdpb.QueryRegionResponse{Header: header(), RegionsById: make(map[uint64]*pdpb.RegionResponse)}
		add := func(meta *metapb.Region, leader *metapb.Peer, buckets *metapb.Buckets, downPeers []*metapb.Peer) uint64 {
			rr := regionResponse(meta, leader, buckets, downPeers)
			if rr == nil {
				return 0
			}
			resp.RegionsById[meta.Id] = rr
			return meta.Id
		}
		for _, k := range req.Keys {
			resp.KeyIdMap = append(resp.KeyIdMap, add(p.cluster.GetRegionByKey(k)))
		}
		for _, k := range req.PrevKeys {
			resp.PrevKeyIdMap = append(resp.PrevKeyIdMap, add(p.cluster.GetPrevRegionByKey(k)))
		}
		for _, id := range req.Ids {
			add(p.cluster.GetRegionByID(id))
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

// scanRegions appends the regions overlapping [start, end) that are not
// in seen yet.
func (p *pdService) scanRegions(out []*pdpb.Region, seen map[uint64]bool, start, end []byte, limit int) []*pdpb.Region {
	for _, r := range p.cluster.ScanRegions(start, end, limit) {
		if r.Meta == nil || seen[r.Meta.Id] {
			continue
		}
		seen[r.Meta.Id] = true
		rr := regionResponse(r.Meta, r.Leader, r.Buckets, r.DownPeers)
		out = append(out, &pdpb.Region{Region: rr.Region, Leader: rr.Leader, DownPeers: rr.DownPeers, Buckets: rr.Buckets})
	}
	return out
}

func (p *pdService) ScanRegions(_ context.Context, req *pdpb.ScanRegionsRequest) (*pdpb.ScanRegionsResponse, error) {
	regions := p.scanRegions(nil, map[uint64]bool{}, req.StartKey, req.EndKey, int(req.Limit))
	return &pdpb.ScanRegionsResponse{Header: header(), Regions: regions}, nil
}

func (p *pdService) BatchScanRegions(_ context.Context, req *pdpb.BatchScanRegionsRequest) (*pdpb.BatchScanRegionsResponse, error) {
	var regions []*pdpb.Region
	seen := map[uint64]bool{}
	for _, r := range req.Ranges {
		regions = p.scanRegions(regions, seen, r.StartKey, r.EndKey, int(req.Limit))
		if req.Limit > 0 && len(regions) >= int(req.Limit) {
			regions = regions[:req.Limit]
			break
		}
	}
	return &pdpb.BatchScanRegionsResponse{Header: header(), Regions: regions}, nil
}

func (p *pdService) GetStore(_ context.Context, req *pdpb.GetStoreRequest) (*pdpb.GetStoreResponse, error) {
	store := p.cluster.GetStore(req.StoreId)
	if store == nil {
		err := &pdpb.Error{Type: pdpb.ErrorType_UNKNOWN, Message: fmt.Sprintf("invalid store ID %d, not found", req.StoreId)}
		return &pdpb.GetStoreResponse{Header: &pdpb.ResponseHeader{ClusterId: clusterID, Error: err}}, nil
	}
	return &pdpb.GetStoreResponse{Header: header(), Store: store}, nil
}

func (p *pdService) GetAllStores(_ context.Context, req *pdpb.GetAllStoresRequest) (*pdpb.GetAllStoresResponse, error) {
	stores := p.cluster.GetAllStores()
	if req.ExcludeTombstoneStores {
		stores = slices.DeleteFunc(stores, func(s *metapb.Store) bool { return s.GetState() == metapb.StoreState_Tombstone })
	}
	return &pdpb.GetAllStoresResponse{Header: header(), Stores: stores}, nil
}

// GetGCState reports safe points of zero: nothing here ever garbage
// collects old versions, so every snapshot stays readable. client-go polls
// it for the txn safe point; without it, it falls back to reading etcd keys.
func (p *pdService) GetGCState(_ context.Context, req *pdpb.GetGCStateRequest) (*pdpb.GetGCStateResponse, error) {
	return &pdpb.GetGCStateResponse{Header: header(), GcState: &pdpb.GCState{KeyspaceScope: req.KeyspaceScope}}, nil
}

// etcdService answers the member list that txnkv.NewClient's etcd client
// (kept for GC safe points) syncs before NewClient returns.
type etcdService struct {
	etcdserverpb.UnimplementedClusterServer
	url string
}

func (e *etcdService) MemberList(context.Context, *etcdserverpb.MemberListRequest) (*etcdserverpb.MemberListResponse, error) {
	m := &etcdserverpb.Member{ID: 1, Name: "tikvdev", PeerURLs: []string{e.url}, ClientURLs: []string{e.url}}
	return &etcdserverpb.MemberListResponse{Header: &etcdserverpb.ResponseHeader{ClusterId: clusterID, MemberId: 1}, Members: []*etcdserverpb.Member{m}}, nil
}

// metaStorageService answers the PD client's lookup of router
// microservices: there are none, so it routes through PD. Without it the
// client retries the lookup for 5 s inside NewClient.
type metaStorageService struct {
	meta_storagepb.UnimplementedMetaStorageServer
}

func (*metaStorageService) Get(context.Context, *meta_storagepb.GetRequest) (*meta_storagepb.GetResponse, error) {
	return &meta_storagepb.GetResponse{Header: &meta_storagepb.ResponseHeader{ClusterId: clusterID}}, nil
}
