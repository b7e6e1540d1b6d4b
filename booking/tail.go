package booking

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"

	"redrain/ledger"
	"redrain/storage"
)

// Journals are the booking stream as the store holds it: every committed
// change of a partition's accounts, numbered 1, 2, 3... without gaps and
// never rewritten or deleted. The wallet's read side tails them
// (JournalSeqs, JournalsFrom) to learn, in commit order and independently
// of Kafka and of booking's owners, which accounts changed.

// JournalSeqs returns, per partition p < parts, the seq of the last
// journal committed as txn's snapshot holds it (0: none yet).
func JournalSeqs(ctx context.Context, txn storage.Txn, parts int32) ([]uint64, error) {
	keys := make([][]byte, parts)
	for p := range parts {
		keys[p] = storage.PartKey(p)
	}
	raw, err := storage.BatchGet(ctx, txn, keys)
	if err != nil {
		return nil, err
	}
	out := make([]uint64, parts)
	for p := range parts {
		s, err := partStateOf(p, raw[string(keys[p])])
		if err != nil {
			return nil, err
		}
		out[p] = s.NextSeq - 1
	}
	return out, nil
}

// JournalsFrom calls fn with the journals of partition p numbered from
// through to, in order, as txn's snapshot holds them; a journal missing
// or out of order is ErrCorrupt (journals are never deleted). The ops'
// user ids are left empty, and fn's journal is only good until fn returns
// (ledger.TailDecoder): the tail's readers know users by act id.
func JournalsFrom(txn storage.Txn, p int32, from, to uint64, fn func(*ledger.Journal) error) error {
	if from > to {
		return nil
	}
	want := to - from + 1
	var dec ledger.TailDecoder
	n, err := JournalsUpTo(txn, p, from, int(min(want, math.MaxInt)), &dec, fn)
	if err != nil {
		return err
	}
	if uint64(n) != want {
		return fmt.Errorf("%w: partition %d journal ends at %d, %d was due", ledger.ErrCorrupt, p, from+uint64(n)-1, to)
	}
	return nil
}

// AppendTapped appends v to q, what a tap of OnJournal's journals holds
// for one partition in commit order (seq gives an entry's journal seq): a
// journal not after q's last (the partition moved away and back) starts q
// anew, since only the store has the order then.
func AppendTapped[T any](q []T, seq func(*T) uint64, v T) []T {
	if n := len(q); n > 0 && seq(&q[n-1]) >= seq(&v) {
		q = q[:0]
	}
	return append(q, v)
}

// JournalsUpTo calls fn with the journals of partition p from seq from on,
// in order, as txn's snapshot holds them, at most max of them, and returns
// how many it passed: it scans journal keys (each written once) and reads
// no partition state, whose key every commit rewrites. A journal out of
// order is ErrCorrupt. As JournalsFrom, fn's journal is only good until
// fn returns, and has no user ids; dec decodes them (a caller that polls
// keeps one, so its ops are reused from poll to poll).
func JournalsUpTo(txn storage.Txn, p int32, from uint64, max int, dec *ledger.TailDecoder, fn func(*ledger.Journal) error) (int, error) {
	if max <= 0 {
		return 0, nil
	}
	end := storage.JournalKey(p+1, 0) // the partition's journals end before the next one's
	if last := from + uint64(max); last > from {
		end = storage.JournalKey(p, last)
	}
	n := 0
	err := storage.ScanTxn(txn, storage.JournalKey(p, from), end, func(_, raw []byte) (bool, error) {
		j, err := dec.Decode(raw)
		if err != nil {
			return false, fmt.Errorf("partition %d journal %d: %w", p, from+uint64(n), err)
		}
		if want := from + uint64(n); j.Seq != want {
			return false, fmt.Errorf("%w: partition %d journal %d found where %d was due", ledger.ErrCorrupt, p, j.Seq, want)
		}
		n++
		return true, fn(j)
	})
	return n, err
}

// ReadAccountsAt is ReadAccounts that also says, per partition read, the
// seq of the last journal the accounts reflect: an account read here
// holds every change of journals up to that seq and none after it.
func ReadAccountsAt(ctx context.Context, txn storage.Txn, parts int32, ids []uint64) (map[uint64]*ledger.Account, map[int32]uint64, error) {
	byPart := map[int32][]uint64{}
	for _, id := range ids {
		p := storage.PartitionOf(id, parts)
		byPart[p] = append(byPart[p], id)
	}
	out := make(map[uint64]*ledger.Account, len(ids))
	seqs := make(map[int32]uint64, len(byPart))
	for _, p := range slices.Sorted(maps.Keys(byPart)) {
		v, err := readAccounts(ctx, txn, p, byPart[p])
		if err != nil {
			return nil, nil, err
		}
		maps.Copy(out, v.accounts)
		seqs[p] = v.state.NextSeq - 1
	}
	return out, seqs, nil
}
