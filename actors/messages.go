// Package actors holds redrain's grains and the booking pipeline that feeds
// them: per-user account grains and per-budget grains placed on cluster
// members by protoactor's identity lookup, and the sarama consumer group
// whose booker posts grants as balanced batches into TiKV.
//
// Grain memory is a cache. TiKV is the truth: every prepare carries the
// record as the committing transaction read it, and every write is checked
// against that read, so a stale grain (a restarted or paused one) can never
// overwrite or double-book.
package actors

import (
	"encoding/binary"
	"sync/atomic"

	"errors"
	"fmt"
	"github.com/asynkron/protoactor-go/actor"

	"google.golang.org/protobuf/types/known/wrapperspb"

	"redrain/ledger"
)

// GrainCounts are the grains of each kind alive on this member.
type GrainCounts struct {
	User, Budget atomic.Int64
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
	KindUser   = "user"
	KindBudget = "budget"
)

// Messages between members are protobuf BytesValues carrying redrain's own
// binary encodings (the ledger codecs), so grains work across members
// without generated code. The first byte is the message type.
const (
	msgPrepare    byte = 1
	msgTakeLease  byte = 2
	msgCloseLease byte = 3
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

// moneyErrs are the ledger's money classes, in the order their index is
// sent after msgFailure (0 is an operational failure). A class must cross
// the wire: without it the booker cannot tell a broken invariant, which
// stops booking, from a timeout, which it retries.
var moneyErrs = [...]error{1: ledger.ErrInvariant, 2: ledger.ErrCorrupt, 3: ledger.ErrOverflow, 4: ledger.ErrUnbalanced}

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
		if e != nil && errors.Is(err, e) {
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

// prepare is the user grain's request: book grants onto the account that
// TiKV held when the booking transaction started (stored, nil if none).
type prepare struct {
	stored []byte
	grants []ledger.Grant
}

func encodePrepare(p *prepare) *wrapperspb.BytesValue {
	b := []byte{msgPrepare}
	b = binary.AppendUvarint(b, uint64(len(p.stored)))
	b = append(b, p.stored...)
	b = ledger.AppendGrantRecord(b, p.grants)
	return &wrapperspb.BytesValue{Value: b}
}

func decodePrepare(b []byte) (*prepare, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return nil, fmt.Errorf("%w: prepare", ledger.ErrCorrupt)
	}
	p := &prepare{}
	if n > 0 {
		p.stored = b[k : k+int(n)]
	}
	var err error
	p.grants, err = ledger.DecodeGrantRecord(nil, b[k+int(n):])
	return p, err
}

// Outcome of one grant in a prepare.
const (
	outcomeDuplicate  byte = 0 // its limit key was already booked
	outcomeBooked     byte = 1
	outcomeAttributed byte = 2 // booked earlier by redeem; now its lease is known
)

// prepared is the user grain's answer: the new record (nil when nothing
// changed) and one outcome per grant, in order.
type prepared struct {
	record   []byte
	outcomes []byte
}

func encodePrepared(p *prepared) *wrapperspb.BytesValue {
	b := []byte{msgReply}
	b = binary.AppendUvarint(b, uint64(len(p.record)))
	b = append(b, p.record...)
	b = append(b, p.outcomes...)
	return &wrapperspb.BytesValue{Value: b}
}

func decodePrepared(b []byte, grants int) (*prepared, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) || len(b)-k-int(n) != grants {
		return nil, fmt.Errorf("%w: prepared", ledger.ErrCorrupt)
	}
	p := &prepared{outcomes: b[k+int(n):]}
	if n > 0 {
		p.record = b[k : k+int(n)]
	}
	return p, nil
}
