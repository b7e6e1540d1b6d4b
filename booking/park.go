package booking

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"redrain/ledger"
	"redrain/storage"
)

// Parked is a grant record that booking cannot read or book, set aside by
// an operator so that its partition goes on: booking skips its offset, and
// the record stays here, with who parked it, when and why, for the audit
// and for a repair.
type Parked struct {
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	By        string `json:"by"`     // the admin key id
	At        int64  `json:"at"`     // unix ms
	Reason    string `json:"reason"` // the operator's words
	// Value is the record as the topic holds it; Error why booking cannot
	// read it, or which money check its grants break.
	Value []byte `json:"value"`
	Error string `json:"error"`
	// Grants and Amount are what the record holds when it decodes (its
	// grants, in no account).
	Grants int   `json:"grants,omitempty"`
	Amount int64 `json:"amount,omitempty"`
}

// ErrNotPoisoned refuses to park a record that booking can read and book.
var ErrNotPoisoned = errors.New("booking: the record decodes and booking does not wait at it; only a record booking cannot read or book is parked")

// stuckRecord is what the owner of a partition writes (storage.StuckKey)
// when it waits at a record that decodes but whose grants break a money
// check, so that any node parks it.
type stuckRecord struct {
	Offset int64  `json:"offset"`
	Error  string `json:"error"`
}

// Park records p (its Value the record's bytes) so that booking skips its
// offset: a partition stuck at it goes on within a tick. A record that
// decodes is refused (ErrNotPoisoned) unless its partition waits at it
// because its grants break a money check: otherwise its grants were
// acknowledged and must be booked. Parking an offset twice keeps the first
// and reports false.
func Park(ctx context.Context, kv *storage.TiKV, p Parked) (bool, error) {
	key := storage.ParkedKey(p.Partition, p.Offset)
	created := false
	err := kv.Update(ctx, func(txn storage.Txn) error {
		gs, derr := ledger.DecodeGrantRecord(nil, p.Value)
		if derr == nil {
			raw, err := storage.Get(ctx, txn, storage.StuckKey(p.Partition))
			if err != nil {
				return err
			}
			var st stuckRecord
			if raw == nil || json.Unmarshal(raw, &st) != nil || st.Offset != p.Offset {
				return ErrNotPoisoned
			}
			p.Error, p.Grants = st.Error, len(gs)
			for _, g := range gs {
				p.Amount += g.Amount
			}
		} else {
			p.Error = derr.Error()
		}
		prev, err := storage.Get(ctx, txn, key)
		if err != nil || prev != nil {
			return err
		}
		raw, err := json.Marshal(p)
		if err != nil {
			return err
		}
		created = true
		return txn.Set(key, raw)
	})
	return created, err
}

// markStuck writes why the partition waits at the record at offset (see
// stuckRecord); a failure is logged, and the loop writes it again while
// it waits.
func (p *part) markStuck(ctx context.Context, offset int64, why error) {
	raw, err := json.Marshal(stuckRecord{Offset: offset, Error: why.Error()})
	if err == nil {
		err = p.b.tikv.Update(ctx, func(txn storage.Txn) error { return txn.Set(storage.StuckKey(p.id), raw) })
	}
	p.marked = err == nil
	if err != nil {
		p.b.log.Warn("booking: recording the record the partition waits at", "partition", p.id, "offset", offset, "err", err)
	}
}

// isParked reports whether the record at offset of part is parked.
func isParked(ctx context.Context, kv *storage.TiKV, part int32, offset int64) (bool, error) {
	var found bool
	err := kv.View(func(txn storage.Txn) error {
		v, err := storage.Get(ctx, txn, storage.ParkedKey(part, offset))
		found = v != nil
		return err
	})
	return found, err
}

// ParkedRecords lists every parked record, by partition and offset.
func ParkedRecords(ctx context.Context, kv *storage.TiKV) ([]Parked, error) {
	var out []Parked
	err := kv.View(func(txn storage.Txn) error {
		return storage.ScanTxn(txn, storage.ParkedPrefix, storage.PrefixEnd(storage.ParkedPrefix), func(k, v []byte) (bool, error) {
			var p Parked
			if err := json.Unmarshal(v, &p); err != nil {
				return false, fmt.Errorf("%w: parked record %s: %v", ledger.ErrCorrupt, k, err)
			}
			out = append(out, p)
			return true, nil
		})
	})
	return out, err
}

// parkCheckTimeout bounds a stuck partition's look for its park record.
const parkCheckTimeout = 2 * time.Second

// parked reports whether the record at offset is parked; a store that
// cannot answer says no (the partition stays stuck and asks again).
func (p *part) parked(ctx context.Context, offset int64) bool {
	ctx, cancel := context.WithTimeout(ctx, parkCheckTimeout)
	defer cancel()
	ok, err := isParked(ctx, p.b.tikv, p.id, offset)
	if err != nil {
		p.b.log.Warn("booking: reading the park record", "partition", p.id, "offset", offset, "err", err)
	}
	return ok && err == nil
}
