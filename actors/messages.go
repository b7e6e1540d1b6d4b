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
	"errors"
	"fmt"

	"google.golang.org/protobuf/types/known/wrapperspb"

	"redrain/ledger"
)

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

// ErrGrain reports a failure answered by a grain.
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

func failure(err error) *wrapperspb.BytesValue {
	return message([]byte{msgFailure}, []byte(err.Error()))
}

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
		return nil, fmt.Errorf("%w: %s", ErrGrain, bv.Value[1:])
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
