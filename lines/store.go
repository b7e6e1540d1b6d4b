package lines

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"redrain/storage"
)

// Asset is one thing a user holds on a business line, as the line
// reports it.
type Asset struct {
	// ID is the line's id of the asset (1..64 bytes of UTF-8).
	ID string `json:"id"`
	// Name is what the wallet shows (at most 128 bytes, may be empty).
	Name string `json:"name"`
	// Amount is in minor units (fen) for money, or a count.
	Amount int64 `json:"amount"`
}

// Snapshot is the latest of one user's assets on one line.
type Snapshot struct {
	Line   string  `json:"line"`
	Assets []Asset `json:"assets"`
	// PulledAt is when the assets were read from the line; zero when no
	// pull of this user ever succeeded (then Assets is empty, and JSON
	// leaves it out).
	PulledAt time.Time `json:"pulled_at,omitzero"`
	// Pushed says the line sent a notice for this user at least once, so
	// a wallet entry pulls it again (Syncer.Entered).
	Pushed bool `json:"pushed"`
	// Stale says the assets may be out of date: the line is switched off,
	// or the last pull failed after PulledAt.
	Stale bool `json:"stale"`
}

// record is a snapshot as stored under Key: JSON, version 1. Only the
// latest is kept: a pull rewrites it whole.
type record struct {
	V        int     `json:"v"`
	Assets   []Asset `json:"assets"`
	PulledAt int64   `json:"pulled_at,omitempty"` // unix ms of the last good pull
	Pushed   bool    `json:"pushed,omitempty"`    // Invariant: once true, stays true
	// FailedAt is the unix ms of the last failed pull, when it came after
	// PulledAt (0 once a later pull succeeded); Error says why.
	FailedAt int64  `json:"failed_at,omitempty"`
	Error    string `json:"error,omitempty"`
}

const recordVersion = 1

// Key is the TiKV key of a user's snapshot on a line:
// rr/line/{line}/{app_id:08x}/{user_id}. The app id has a fixed width and
// a line id no '/', so any user id fits after them.
func Key(line string, app uint32, user string) []byte {
	return fmt.Appendf(nil, "rr/line/%s/%08x/%s", line, app, user)
}

func decodeRecord(raw []byte) (*record, error) {
	var r record
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("lines: snapshot record: %w", err)
	}
	if r.V != recordVersion {
		return nil, fmt.Errorf("lines: snapshot record version %d, want %d", r.V, recordVersion)
	}
	return &r, nil
}

// snapshotOf is what a stored record shows for line.
func snapshotOf(line string, r *record, off bool) Snapshot {
	s := Snapshot{Line: line, Assets: r.Assets, Pushed: r.Pushed, Stale: off || r.FailedAt != 0}
	if s.Assets == nil {
		s.Assets = []Asset{}
	}
	if r.PulledAt != 0 {
		s.PulledAt = time.UnixMilli(r.PulledAt).UTC()
	}
	return s
}

// readRecords reads the records of user on every line of ids, in one
// snapshot read; a line with no record is absent.
func readRecords(ctx context.Context, kv *storage.TiKV, ids []string, app uint32, user string) (map[string]*record, error) {
	keys := make([][]byte, len(ids))
	for i, id := range ids {
		keys[i] = Key(id, app, user)
	}
	var got map[string][]byte
	err := kv.View(func(txn storage.Txn) error {
		var err error
		got, err = txn.BatchGet(ctx, keys)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%w: read snapshots: %v", storage.ErrUnavailable, err)
	}
	out := make(map[string]*record, len(got))
	for i, id := range ids {
		raw, ok := got[string(keys[i])]
		if !ok {
			continue
		}
		r, err := decodeRecord(raw)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", keys[i], err)
		}
		out[id] = r
	}
	return out, nil
}

// writeAttempts bounds the retries of a snapshot write that lost a
// conflict (two pulls of one user racing from two nodes).
const writeAttempts = 4

// writeResult stores the outcome of one pull: on success the assets
// replace the stored ones unless a newer pull already wrote (pulledAt
// older than the stored one); on failure the stored assets stay and the
// failure is marked. pushed is kept once set.
func writeResult(ctx context.Context, kv *storage.TiKV, key []byte, assets []Asset, at time.Time, pushed bool, failure error) error {
	var err error
	for range writeAttempts {
		err = kv.Update(ctx, func(txn storage.Txn) error {
			raw, err := txn.Get(ctx, key)
			if err != nil {
				return err
			}
			r := &record{V: recordVersion}
			if raw != nil {
				if r, err = decodeRecord(raw); err != nil {
					// A record this version cannot read is replaced by
					// a pull, never patched.
					r = &record{V: recordVersion}
				}
			}
			r.Pushed = r.Pushed || pushed
			ms := at.UnixMilli()
			switch {
			case failure != nil:
				r.FailedAt, r.Error = ms, truncate(failure.Error(), 256)
			case ms < r.PulledAt:
				return nil // a newer pull wrote meanwhile: it stays
			default:
				r.Assets, r.PulledAt, r.FailedAt, r.Error = assets, ms, 0, ""
			}
			if r.Assets == nil {
				r.Assets = []Asset{}
			}
			val, err := json.Marshal(r)
			if err != nil {
				return err
			}
			return txn.Set(key, val)
		})
		if !errors.Is(err, storage.ErrConflict) {
			return err
		}
	}
	return err
}

// truncate cuts s to at most n bytes on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
