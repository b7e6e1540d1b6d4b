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

// Parked is a grant record that booking cannot read, set aside by an
// operator so that its partition goes on: booking skips its offset, and
// the record stays here, with who parked it, when and why, for the audit
// and for a repair.
type Parked struct {
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	By        string `json:"by"`     // the admin key id
	At        int64  `json:"at"`     // unix ms
	Reason    string `json:"reason"` // the operator's words
	// Value is the record as the topic holds it; Error why it does not
	// decode.
	Value []byte `json:"value"`
	Error string `json:"error"`
}

// ErrNotPoisoned refuses to park a record that booking can read.
var ErrNotPoisoned = errors.New("booking: the record decodes; only a record booking cannot read is parked")

// Park records p (its Value the record's bytes) so that booking skips its
// offset: a partition stuck at it goes on within a tick. A record that
// decodes is refused (ErrNotPoisoned): its grants were acknowledged and
// must be booked. Parking an offset twice keeps the first and reports
// false.
func Park(ctx context.Context, kv *storage.TiKV, p Parked) (bool, error) {
	_, derr := ledger.DecodeGrantRecord(nil, p.Value)
	if derr == nil {
		return false, ErrNotPoisoned
	}
	p.Error = derr.Error()
	raw, err := json.Marshal(p)
	if err != nil {
		return false, err
	}
	key := storage.ParkedKey(p.Partition, p.Offset)
	created := false
	err = kv.Update(ctx, func(txn storage.Txn) error {
		prev, err := storage.Get(ctx, txn, key)
		if err != nil || prev != nil {
			return err
		}
		created = true
		return txn.Set(key, raw)
	})
	return created, err
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
