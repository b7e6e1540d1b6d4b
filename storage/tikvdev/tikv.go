package tikvdev

import (
	"context"
	"fmt"
	"sync"

	"github.com/pingcap/kvproto/pkg/kvrpcpb"
	"github.com/pingcap/kvproto/pkg/tikvpb"
	"github.com/tikv/client-go/v2/tikv"
	"github.com/tikv/client-go/v2/tikvrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const (
	// batchInflightMax bounds the sub-requests of one BatchCommands stream
	// being served at once; past it the stream stops reading, and gRPC flow
	// control pushes back on the client.
	batchInflightMax = 256
	// batchReplyMax bounds the responses packed into one stream message.
	batchReplyMax = 128
)

// kvService is the TiKV front end. Every request goes to the test cluster's
// request handler, the same code client-go calls in process, for the store
// at addr: region and epoch checks, locks and conflicts all come from there.
type kvService struct {
	tikvpb.UnimplementedTikvServer
	client tikv.Client
	addr   string
}

type kvRequest interface{ GetContext() *kvrpcpb.Context }

// send runs one request on the test cluster. It returns the response's
// inner message (*kvrpcpb.GetResponse and so on).
func (k *kvService) send(ctx context.Context, typ tikvrpc.CmdType, r kvRequest) (resp any, err error) {
	// The test cluster panics on a request it considers malformed (a key
	// outside the checked region); one bad request must not take down a
	// store that other processes share.
	defer func() {
		if p := recover(); p != nil {
			resp, err = nil, status.Errorf(codes.Internal, "tikvdev: %v: %v", typ, p)
		}
	}()
	// The handler reads the region context from the wrapper and copies it
	// into the inner request, so it must be the one the client sent.
	var rctx kvrpcpb.Context
	if c := r.GetContext(); c != nil {
		rctx = *c
	}
	res, err := k.client.SendRequest(ctx, k.addr, tikvrpc.NewRequest(typ, r, rctx), 0)
	if err != nil {
		return nil, status.Errorf(codes.Unknown, "tikvdev: %v: %v", typ, err)
	}
	return res.Resp, nil
}

func call[T any](ctx context.Context, k *kvService, typ tikvrpc.CmdType, r kvRequest) (T, error) {
	resp, err := k.send(ctx, typ, r)
	if err != nil {
		var zero T
		return zero, err
	}
	return resp.(T), nil
}

func (k *kvService) KvGet(ctx context.Context, r *kvrpcpb.GetRequest) (*kvrpcpb.GetResponse, error) {
	return call[*kvrpcpb.GetResponse](ctx, k, tikvrpc.CmdGet, r)
}

func (k *kvService) KvScan(ctx context.Context, r *kvrpcpb.ScanRequest) (*kvrpcpb.ScanResponse, error) {
	return call[*kvrpcpb.ScanResponse](ctx, k, tikvrpc.CmdScan, r)
}

func (k *kvService) KvPrewrite(ctx context.Context, r *kvrpcpb.PrewriteRequest) (*kvrpcpb.PrewriteResponse, error) {
	return call[*kvrpcpb.PrewriteResponse](ctx, k, tikvrpc.CmdPrewrite, r)
}

func (k *kvService) KvPessimisticLock(ctx context.Context, r *kvrpcpb.PessimisticLockRequest) (*kvrpcpb.PessimisticLockResponse, error) {
	return call[*kvrpcpb.PessimisticLockResponse](ctx, k, tikvrpc.CmdPessimisticLock, r)
}

func (k *kvService) KVPessimisticRollback(ctx context.Context, r *kvrpcpb.PessimisticRollbackRequest) (*kvrpcpb.PessimisticRollbackResponse, error) {
	return call[*kvrpcpb.PessimisticRollbackResponse](ctx, k, tikvrpc.CmdPessimisticRollback, r)
}

func (k *kvService) KvTxnHeartBeat(ctx context.Context, r *kvrpcpb.TxnHeartBeatRequest) (*kvrpcpb.TxnHeartBeatResponse, error) {
	return call[*kvrpcpb.TxnHeartBeatResponse](ctx, k, tikvrpc.CmdTxnHeartBeat, r)
}

func (k *kvService) KvCheckTxnStatus(ctx context.Context, r *kvrpcpb.CheckTxnStatusRequest) (*kvrpcpb.CheckTxnStatusResponse, error) {
	return call[*kvrpcpb.CheckTxnStatusResponse](ctx, k, tikvrpc.CmdCheckTxnStatus, r)
}

func (k *kvService) KvCheckSecondaryLocks(ctx context.Context, r *kvrpcpb.CheckSecondaryLocksRequest) (*kvrpcpb.CheckSecondaryLocksResponse, error) {
	return call[*kvrpcpb.CheckSecondaryLocksResponse](ctx, k, tikvrpc.CmdCheckSecondaryLocks, r)
}

func (k *kvService) KvCommit(ctx context.Context, r *kvrpcpb.CommitRequest) (*kvrpcpb.CommitResponse, error) {
	return call[*kvrpcpb.CommitResponse](ctx, k, tikvrpc.CmdCommit, r)
}

func (k *kvService) KvCleanup(ctx context.Context, r *kvrpcpb.CleanupRequest) (*kvrpcpb.CleanupResponse, error) {
	return call[*kvrpcpb.CleanupResponse](ctx, k, tikvrpc.CmdCleanup, r)
}

func (k *kvService) KvBatchGet(ctx context.Context, r *kvrpcpb.BatchGetRequest) (*kvrpcpb.BatchGetResponse, error) {
	return call[*kvrpcpb.BatchGetResponse](ctx, k, tikvrpc.CmdBatchGet, r)
}

func (k *kvService) KvBatchRollback(ctx context.Context, r *kvrpcpb.BatchRollbackRequest) (*kvrpcpb.BatchRollbackResponse, error) {
	return call[*kvrpcpb.BatchRollbackResponse](ctx, k, tikvrpc.CmdBatchRollback, r)
}

func (k *kvService) KvScanLock(ctx context.Context, r *kvrpcpb.ScanLockRequest) (*kvrpcpb.ScanLockResponse, error) {
	return call[*kvrpcpb.ScanLockResponse](ctx, k, tikvrpc.CmdScanLock, r)
}

func (k *kvService) KvResolveLock(ctx context.Context, r *kvrpcpb.ResolveLockRequest) (*kvrpcpb.ResolveLockResponse, error) {
	return call[*kvrpcpb.ResolveLockResponse](ctx, k, tikvrpc.CmdResolveLock, r)
}

func (k *kvService) KvDeleteRange(ctx context.Context, r *kvrpcpb.DeleteRangeRequest) (*kvrpcpb.DeleteRangeResponse, error) {
	return call[*kvrpcpb.DeleteRangeResponse](ctx, k, tikvrpc.CmdDeleteRange, r)
}

type batchResp = tikvpb.BatchCommandsResponse_Response

// unbatch maps one entry of a BatchCommands message to its command and a
// function that wraps the test cluster's answer for the stream; ok is false
// for commands this server does not serve.
func unbatch(r *tikvpb.BatchCommandsRequest_Request) (typ tikvrpc.CmdType, req kvRequest, wrap func(any) *batchResp, ok bool) {
	switch c := r.Cmd.(type) {
	case *tikvpb.BatchCommandsRequest_Request_Get:
		return tikvrpc.CmdGet, c.Get, func(x any) *batchResp {
			return &batchResp{Cmd: &tikvpb.BatchCommandsResponse_Response_Get{Get: x.(*kvrpcpb.GetResponse)}}
		}, true
	case *tikvpb.BatchCommandsRequest_Request_Scan:
		return tikvrpc.CmdScan, c.Scan, func(x any) *batchResp {
			return &batchResp{Cmd: &tikvpb.BatchCommandsResponse_Response_Scan{Scan: x.(*kvrpcpb.ScanResponse)}}
		}, true
	case *tikvpb.BatchCommandsRequest_Request_Prewrite:
		return tikvrpc.CmdPrewrite, c.Prewrite, func(x any) *batchResp {
			return &batchResp{Cmd: &tikvpb.BatchCommandsResponse_Response_Prewrite{Prewrite: x.(*kvrpcpb.PrewriteResponse)}}
		}, true
	case *tikvpb.BatchCommandsRequest_Request_Commit:
		return tikvrpc.CmdCommit, c.Commit, func(x any) *batchResp {
			return &batchResp{Cmd: &tikvpb.BatchCommandsResponse_Response_Commit{Commit: x.(*kvrpcpb.CommitResponse)}}
		}, true
	case *tikvpb.BatchCommandsRequest_Request_Cleanup:
		return tikvrpc.CmdCleanup, c.Cleanup, func(x any) *batchResp {
			return &batchResp{Cmd: &tikvpb.BatchCommandsResponse_Response_Cleanup{Cleanup: x.(*kvrpcpb.CleanupResponse)}}
		}, true
	case *tikvpb.BatchCommandsRequest_Request_BatchGet:
		return tikvrpc.CmdBatchGet, c.BatchGet, func(x any) *batchResp {
			return &batchResp{Cmd: &tikvpb.BatchCommandsResponse_Response_BatchGet{BatchGet: x.(*kvrpcpb.BatchGetResponse)}}
		}, true
	case *tikvpb.BatchCommandsRequest_Request_BatchRollback:
		return tikvrpc.CmdBatchRollback, c.BatchRollback, func(x any) *batchResp {
			return &batchResp{Cmd: &tikvpb.BatchCommandsResponse_Response_BatchRollback{BatchRollback: x.(*kvrpcpb.BatchRollbackResponse)}}
		}, true
	case *tikvpb.BatchCommandsRequest_Request_ScanLock:
		return tikvrpc.CmdScanLock, c.ScanLock, func(x any) *batchResp {
			return &batchResp{Cmd: &tikvpb.BatchCommandsResponse_Response_ScanLock{ScanLock: x.(*kvrpcpb.ScanLockResponse)}}
		}, true
	case *tikvpb.BatchCommandsRequest_Request_ResolveLock:
		return tikvrpc.CmdResolveLock, c.ResolveLock, func(x any) *batchResp {
			return &batchResp{Cmd: &tikvpb.BatchCommandsResponse_Response_ResolveLock{ResolveLock: x.(*kvrpcpb.ResolveLockResponse)}}
		}, true
	case *tikvpb.BatchCommandsRequest_Request_DeleteRange:
		return tikvrpc.CmdDeleteRange, c.DeleteRange, func(x any) *batchResp {
			return &batchResp{Cmd: &tikvpb.BatchCommandsResponse_Response_DeleteRange{DeleteRange: x.(*kvrpcpb.DeleteRangeResponse)}}
		}, true
	case *tikvpb.BatchCommandsRequest_Request_PessimisticLock:
		return tikvrpc.CmdPessimisticLock, c.PessimisticLock, func(x any) *batchResp {
			return &batchResp{Cmd: &tikvpb.BatchCommandsResponse_Response_PessimisticLock{PessimisticLock: x.(*kvrpcpb.PessimisticLockResponse)}}
		}, true
	case *tikvpb.BatchCommandsRequest_Request_PessimisticRollback:
		return tikvrpc.CmdPessimisticRollback, c.PessimisticRollback, func(x any) *batchResp {
			return &batchResp{Cmd: &tikvpb.BatchCommandsResponse_Response_PessimisticRollback{PessimisticRollback: x.(*kvrpcpb.PessimisticRollbackResponse)}}
		}, true
	case *tikvpb.BatchCommandsRequest_Request_CheckTxnStatus:
		return tikvrpc.CmdCheckTxnStatus, c.CheckTxnStatus, func(x any) *batchResp {
			return &batchResp{Cmd: &tikvpb.BatchCommandsResponse_Response_CheckTxnStatus{CheckTxnStatus: x.(*kvrpcpb.CheckTxnStatusResponse)}}
		}, true
	case *tikvpb.BatchCommandsRequest_Request_TxnHeartBeat:
		return tikvrpc.CmdTxnHeartBeat, c.TxnHeartBeat, func(x any) *batchResp {
			return &batchResp{Cmd: &tikvpb.BatchCommandsResponse_Response_TxnHeartBeat{TxnHeartBeat: x.(*kvrpcpb.TxnHeartBeatResponse)}}
		}, true
	case *tikvpb.BatchCommandsRequest_Request_CheckSecondaryLocks:
		return tikvrpc.CmdCheckSecondaryLocks, c.CheckSecondaryLocks, func(x any) *batchResp {
			return &batchResp{Cmd: &tikvpb.BatchCommandsResponse_Response_CheckSecondaryLocks{CheckSecondaryLocks: x.(*kvrpcpb.CheckSecondaryLocksResponse)}}
		}, true
	}
	return 0, nil, nil, false
}

type batchReply struct {
	id   uint64
	resp *batchResp
}

// serveOne answers one entry of a BatchCommands message. A stream entry
// cannot carry a gRPC error, so a request that fails is answered with an
// empty response, which fails that request alone in the client (the
// stream and the other requests on it carry on).
func (k *kvService) serveOne(ctx context.Context, r *tikvpb.BatchCommandsRequest_Request) *batchResp {
	if e, isEmpty := r.Cmd.(*tikvpb.BatchCommandsRequest_Request_Empty); isEmpty {
		return &batchResp{Cmd: &tikvpb.BatchCommandsResponse_Response_Empty{Empty: &tikvpb.BatchCommandsEmptyResponse{TestId: e.Empty.TestId}}}
	}
	typ, req, wrap, ok := unbatch(r)
	if !ok {
		return &batchResp{}
	}
	resp, err := k.send(ctx, typ, req)
	if err != nil {
		return &batchResp{}
	}
	return wrap(resp)
}

// BatchCommands is how client-go sends nearly every request: a
// bidirectional stream of batches, each entry tagged with an id that its
// response must carry back, in any order. Entries run concurrently (a
// request that waits on a lock must not hold up the rest of the stream);
// one goroutine sends, packing whatever replies are ready into a message.
func (k *kvService) BatchCommands(stream tikvpb.Tikv_BatchCommandsServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	replies := make(chan batchReply, batchInflightMax)
	sent := make(chan error, 1)
	go func() { sent <- k.sendReplies(stream, replies, cancel) }()

	sem := make(chan struct{}, batchInflightMax)
	var workers sync.WaitGroup
	// protoErr is a malformed message; a failed Recv is the client going
	// away (or Close), which ends the stream normally.
	var protoErr error
recv:
	for {
		msg, err := stream.Recv()
		if err != nil {
			break
		}
		if len(msg.RequestIds) != len(msg.Requests) {
			protoErr = status.Errorf(codes.InvalidArgument, "tikvdev: %d request ids for %d requests", len(msg.RequestIds), len(msg.Requests))
			break
		}
		for i, r := range msg.Requests {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				break recv
			}
			workers.Add(1)
			go func(id uint64, r *tikvpb.BatchCommandsRequest_Request) {
				defer func() { <-sem; workers.Done() }()
				reply := batchReply{id: id, resp: k.serveOne(ctx, r)}
				select {
				case replies <- reply:
				case <-ctx.Done():
				}
			}(msg.RequestIds[i], r)
		}
	}
	// Answer everything already taken before ending the stream: a client
	// that half-closes still gets its replies.
	workers.Wait()
	close(replies)
	if err := <-sent; err != nil {
		return err
	}
	return protoErr
}

func (k *kvService) sendReplies(stream tikvpb.Tikv_BatchCommandsServer, replies <-chan batchReply, cancel func()) error {
	for first := range replies {
		msg := &tikvpb.BatchCommandsResponse{
			Responses:  []*batchResp{first.resp},
			RequestIds: []uint64{first.id},
		}
	more:
		for len(msg.Responses) < batchReplyMax {
			select {
			case r, ok := <-replies:
				if !ok {
					break more
				}
				msg.Responses = append(msg.Responses, r.resp)
				msg.RequestIds = append(msg.RequestIds, r.id)
			default:
				break more
			}
		}
		if err := stream.Send(msg); err != nil {
			// The stream is broken (its Recv fails too, ending the
			// receive loop): release the workers waiting to hand over
			// replies.
			cancel()
			for range replies {
			}
			return fmt.Errorf("tikvdev: batch commands send: %w", err)
		}
	}
	return nil
}
