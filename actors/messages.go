// Package actors holds redrain's budget grains, placed on cluster members by
// protoactor's identity lookup: each serializes the leases and folds of one
// budget. (Users' accounts are owned by the node that books their
// partition; see the booking package.)
//
// Grain memory is a cache. TiKV is the truth: every write is checked
// against what the grain read, so a stale grain (a restarted or paused
// one) can never overwrite.
package actors

import (
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"
	pcluster "github.com/asynkron/protoactor-go/cluster"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"redrain/ledger"
	"redrain/storage"
)

// GrainCounts are the grains of each kind alive on this member.
type GrainCounts struct {
	Budget atomic.Int64
}

// Kinds returns the grain kinds a member hosts. counts (may be nil) follows
// how many grains of each kind are alive here.
func Kinds(log *slog.Logger, tikv *storage.TiKV, counts *GrainCounts) []*pcluster.Kind {
	if counts == nil {
		counts = &GrainCounts{}
	}
	return []*pcluster.Kind{newBudgetKind(log, tikv, &counts.Budget)}
}

// countGrains keeps n equal to the live actors built from the props.
func countGrains(n *atomic.Int64) actor.PropsOption {
	return actor.WithReceiverMiddleware(func(next actor.ReceiverFunc) actor.ReceiverFunc {
		return func(c actor.ReceiverContext, env *actor.MessageEnvelope) {
			switch env.Message.(type) {
			case *actor.Started:
				n.Add(1)
			case *actor.Stopped:
				n.Add(-1)
			}
			next(c, env)
		}
	})
}

// Grain kinds.
const (
	KindBudget = "budget"
)

// Messages between members are protobuf BytesValues carrying redrain's own
// binary encodings (the ledger codecs), so grains work across members
// without generated code. The first byte is the message type.
const (
	msgTakeLease  byte = 2
	msgCloseLease byte = 3
	msgRenewLease byte = 5
	msgReply      byte = 100
	msgFailure    byte = 101
)

// ErrGrain reports a failure answered by a grain (or a grain that did not
// answer). One that broke a money invariant also wraps its ledger error
// (ErrInvariant, ErrCorrupt, ErrOverflow, ErrUnbalanced).
var ErrGrain = errors.New("actors: grain failed")

func message(parts ...[]byte) *wrapperspb.BytesValue {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	b := make([]byte, 0, n)
	for _, p := range parts {
		b = append(b, p...)
	}
	return &wrapperspb.BytesValue{Value: b}
}

// moneyErrs are the ledger's error classes, in the order their index is
// sent after msgFailure (0 is an operational failure). A class must cross
// the wire: without it the booker cannot tell a broken invariant, which
// stops booking, from a timeout, which it retries, nor a lease holder an
// expired lease, which it stops spending, from an unreachable grain. All
// but ErrLeaseExpired are money invariants (isMoneyErr).
var moneyErrs = [...]error{1: ledger.ErrInvariant, 2: ledger.ErrCorrupt, 3: ledger.ErrOverflow, 4: ledger.ErrUnbalanced,
	5: ledger.ErrLeaseExpired}

func failure(err error) *wrapperspb.BytesValue {
	class := byte(0)
	for i, e := range moneyErrs {
		if e != nil && errors.Is(err, e) {
			class = byte(i)
			break
		}
	}
	return message([]byte{msgFailure, class}, []byte(err.Error()))
}

// isMoneyErr reports a broken money invariant: never retried with the same
// memory.
func isMoneyErr(err error) bool {
	for _, e := range moneyErrs {
		if e != nil && e != ledger.ErrLeaseExpired && errors.Is(err, e) {
			return true
		}
	}
	return false
}

// grainFailure is a failure a grain answered: its text, and the money class
// it carried (nil for an operational failure).
type grainFailure struct {
	class error
	text  string
}

func (f *grainFailure) Error() string { return f.text }
func (f *grainFailure) Unwrap() error { return f.class }

// replyPayload checks a grain's answer and returns its payload.
func replyPayload(res any, err error) ([]byte, error) {
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrGrain, err)
	}
	bv, ok := res.(*wrapperspb.BytesValue)
	if !ok || len(bv.Value) == 0 {
		return nil, fmt.Errorf("%w: unexpected answer %T", ErrGrain, res)
	}
	switch bv.Value[0] {
	case msgReply:
		return bv.Value[1:], nil
	case msgFailure:
		f := &grainFailure{text: "unclassified failure"}
		if len(bv.Value) >= 2 {
			if c := int(bv.Value[1]); c < len(moneyErrs) {
				f.class = moneyErrs[c]
			}
			f.text = string(bv.Value[2:])
		}
		return nil, fmt.Errorf("%w: %w", ErrGrain, f)
	}
	return nil, fmt.Errorf("%w: unknown answer type %d", ErrGrain, bv.Value[0])
}
