package withdraw

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"redrain/storage"
)

// State is where a withdrawal is in its flow:
//
//	requested → held → paying → settled | reversed (→ debt)
//	requested → refused
//
// Only settled, reversed (once its late check is done), refused and debt
// are final.
type State string

// The states of a withdrawal.
const (
	StateRequested State = "requested" // recorded; outstanding packets and the hold not booked yet
	StateHeld      State = "held"      // the amount is in cash:transit; not sent to the channel yet
	StatePaying    State = "paying"    // sent (or about to be) to the channel: only its answer decides
	StateSettled   State = "settled"   // paid: transit booked to payout/{channel}
	StateReversed  State = "reversed"  // the channel refused: transit booked back to cash
	StateRefused   State = "refused"   // nothing held: the cash was short (insufficient_funds)
	StateDebt      State = "debt"      // the channel paid after the reversal: withdraw_debt booked
)

// Final reports whether nothing more happens to a withdrawal in s (a
// reversed one still has its late check, Record.Open).
func (s State) Final() bool {
	return s == StateSettled || s == StateReversed || s == StateRefused || s == StateDebt
}

// Record is a withdrawal as the store keeps it (rr/wd/{id}, JSON). Every
// change is a conditional write on Version (Store.update): of two nodes
// driving one withdrawal, the one that read an older version loses and
// reads again.
type Record struct {
	ID        string `json:"id"`
	AppID     uint32 `json:"app_id"`
	RequestID string `json:"request_id"`
	ActID     uint64 `json:"act_id"`
	Amount    int64  `json:"amount"` // fen; Invariant: Config.AmountMin <= Amount <= Config.AmountMax at creation
	Channel   string `json:"channel"`
	State     State  `json:"state"`
	// Attempts counts the Pay requests sent to the channel (each written
	// before it is sent).
	Attempts   int    `json:"attempts"`
	ChannelRef string `json:"channel_ref,omitempty"`
	LastError  string `json:"last_error,omitempty"`
	// Times in unix ms; 0: not reached.
	CreatedAt int64 `json:"created_at"`
	HeldAt    int64 `json:"held_at,omitempty"`
	PayingAt  int64 `json:"paying_at,omitempty"`
	DoneAt    int64 `json:"done_at,omitempty"`
	UpdatedAt int64 `json:"updated_at"`
	// LateCheckAt is when a reversed withdrawal asks its channel once
	// more whether it paid after all (0: done or not reversed).
	LateCheckAt int64 `json:"late_check_at,omitempty"`
	// Owner and LeaseUntil say which node drives the withdrawal until
	// when; another node leaves it alone until then.
	Owner      string `json:"owner,omitempty"`
	LeaseUntil int64  `json:"lease_until,omitempty"`
	Version    uint64 `json:"version"`
}

// Open reports whether the recovery loop still has something to do with r.
func (r *Record) Open() bool { return !r.State.Final() || r.LateCheckAt != 0 }

// The store's keys: one per withdrawal, and one per open withdrawal (the
// recovery loop scans those only, so finished withdrawals cost it nothing).
var (
	recordPrefix = []byte("rr/wd/rec/")
	openPrefix   = []byte("rr/wd/open/")
)

// RecordKey is the key of withdrawal id.
func RecordKey(id string) []byte { return append(append([]byte(nil), recordPrefix...), id...) }

// OpenKey marks withdrawal id as unfinished.
func OpenKey(id string) []byte { return append(append([]byte(nil), openPrefix...), id...) }

// ID is the id of the withdrawal that app asks for under requestID: the
// same request always names the same withdrawal, which is what makes a
// repeat answer it instead of paying twice. 32 hex digits.
func ID(app uint32, requestID string) string {
	h := sha256.New()
	h.Write(strconv.AppendUint(nil, uint64(app), 10))
	h.Write([]byte{0})
	h.Write([]byte(requestID))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// errVersion is a lost conditional write: the record moved on.
var errVersion = errors.New("withdraw: the record changed meanwhile")

// store reads and writes records.
type store struct{ kv *storage.TiKV }

func decode(raw []byte) (*Record, error) {
	var r Record
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("withdraw: corrupt record: %w", err)
	}
	return &r, nil
}

// load returns withdrawal id, nil when there is none.
func (s store) load(ctx context.Context, id string) (*Record, error) {
	var rec *Record
	err := s.kv.View(func(txn storage.Txn) error {
		raw, err := txn.Get(ctx, RecordKey(id))
		if err != nil || raw == nil {
			return err
		}
		rec, err = decode(raw)
		return err
	})
	return rec, err
}

// create writes r (version 1) unless a record with its id exists, and
// returns the record that holds afterwards and whether it is r.
func (s store) create(ctx context.Context, r *Record) (*Record, bool, error) {
	var have *Record
	err := s.kv.Update(ctx, func(txn storage.Txn) error {
		have = nil
		raw, err := txn.Get(ctx, RecordKey(r.ID))
		if err != nil {
			return err
		}
		if raw != nil {
			have, err = decode(raw)
			return err
		}
		r.Version = 1
		return write(txn, r)
	})
	if err != nil {
		return nil, false, err
	}
	if have != nil {
		return have, false, nil
	}
	return r, true, nil
}

// update writes next in place of the record of version next.Version,
// bumping it; errVersion (or storage.ErrConflict) when another writer got
// there first.
func (s store) update(ctx context.Context, next *Record) error {
	err := s.kv.Update(ctx, func(txn storage.Txn) error {
		raw, err := txn.Get(ctx, RecordKey(next.ID))
		if err != nil {
			return err
		}
		if raw == nil {
			return fmt.Errorf("withdraw: record %s vanished", next.ID)
		}
		cur, err := decode(raw)
		if err != nil {
			return err
		}
		if cur.Version != next.Version {
			return errVersion
		}
		c := *next
		c.Version++
		return write(txn, &c)
	})
	if err == nil {
		next.Version++
	}
	return err
}

// write sets r and its open mark as r says.
func write(txn storage.Txn, r *Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := txn.Set(RecordKey(r.ID), b); err != nil {
		return err
	}
	if r.Open() {
		return txn.Set(OpenKey(r.ID), []byte{1})
	}
	return txn.Delete(OpenKey(r.ID))
}

// open lists the ids of unfinished withdrawals, at most limit.
func (s store) open(ctx context.Context, limit int) ([]string, error) {
	var ids []string
	err := s.kv.Scan(ctx, openPrefix, storage.PrefixEnd(openPrefix), func(k, _ []byte) (bool, error) {
		ids = append(ids, string(k[len(openPrefix):]))
		return len(ids) < limit, nil
	})
	return ids, err
}

// OpenRecords returns the unfinished withdrawals (at most limit), from
// one snapshot of their records: what the consistency service lists when
// one stays held too long.
func OpenRecords(ctx context.Context, kv *storage.TiKV, limit int) ([]*Record, error) {
	ids, err := store{kv}.open(ctx, limit)
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	keys := make([][]byte, len(ids))
	for i, id := range ids {
		keys[i] = RecordKey(id)
	}
	var out []*Record
	err = kv.View(func(txn storage.Txn) error {
		raw, err := storage.BatchGet(ctx, txn, keys)
		if err != nil {
			return err
		}
		out = out[:0]
		for _, k := range keys {
			if v, ok := raw[string(k)]; ok {
				r, err := decode(v)
				if err != nil {
					return err
				}
				out = append(out, r)
			}
		}
		return nil
	})
	return out, err
}
