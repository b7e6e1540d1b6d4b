// Package booking books grants into the ledger. The node that consumes a
// grant topic partition owns the accounts of that partition's users: it
// holds them in memory, applies each batch of grants there (one goroutine
// per partition serializes every user's changes without locks), and
// commits one journal value per batch; pages that each hold many accounts
// are checkpointed from memory, dirty pages only. The store stays the
// truth: an account is its page plus the journals after the page's
// checkpoint, which is how readers, a next owner after kill -9 and writers
// that are not the owner (redeem, bind) see it.
//
// Every write of a partition's accounts rewrites its ledger.PartState in
// the same transaction, conditional on the epoch and journal seq it read:
// an owner fenced by a newer epoch writes nothing, and a write made
// elsewhere (a redeem on another node) makes the owner's next commit fail,
// catch up from the journal and try again.
package booking

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"redrain/ledger"
	"redrain/storage"
)

// readPartState reads a partition's state; a partition nobody wrote yet
// has an empty one (epoch 0, journal starting at 1).
func readPartState(ctx context.Context, txn storage.Txn, part int32) (*ledger.PartState, error) {
	raw, err := storage.Get(ctx, txn, storage.PartKey(part))
	if err != nil {
		return nil, err
	}
	return partStateOf(part, raw)
}

// partStateOf decodes partition part's stored state (raw nil: never
// written).
func partStateOf(part int32, raw []byte) (*ledger.PartState, error) {
	if raw == nil {
		return &ledger.PartState{NextSeq: 1}, nil
	}
	s, err := ledger.DecodePartState(raw)
	if err != nil {
		return nil, fmt.Errorf("partition %d state: %w", part, err)
	}
	return s, nil
}

// view is a partition's accounts as the store holds them: some or all
// pages, with the journal after the checkpoint applied.
type view struct {
	part     int32
	state    *ledger.PartState
	accounts map[uint64]*ledger.Account
	pageSeq  map[uint64]uint64 // the Seq of each page read
	touched  map[uint64]uint64 // pages the replayed journals changed: the last seq that did
}

// want reports whether the view tracks actID (nil want: every account).
type want func(actID uint64) bool

// applyJournal applies the journals after the checkpoint to the accounts
// w tracks; a journal a page already reflects is skipped for that page.
func (v *view) applyJournal(txn storage.Txn, w want) error {
	start := storage.JournalKey(v.part, v.state.CkptSeq+1)
	end := storage.JournalKey(v.part, v.state.NextSeq)
	next := v.state.CkptSeq + 1
	err := storage.ScanTxn(txn, start, end, func(_, raw []byte) (bool, error) {
		j, err := ledger.DecodeJournal(raw)
		if err != nil {
			return false, fmt.Errorf("partition %d journal %d: %w", v.part, next, err)
		}
		if j.Seq != next {
			return false, fmt.Errorf("%w: partition %d journal %d found where %d was due", ledger.ErrCorrupt, v.part, j.Seq, next)
		}
		next++
		return true, v.replay(j, w)
	})
	if err != nil {
		return err
	}
	if next != v.state.NextSeq {
		return fmt.Errorf("%w: partition %d journal ends at %d, state says %d", ledger.ErrCorrupt, v.part, next-1, v.state.NextSeq-1)
	}
	return nil
}

// replay applies one journal's ops to the tracked accounts, bumping each
// changed account's version once, as its owner did.
func (v *view) replay(j *ledger.Journal, w want) error {
	bumped := map[uint64]bool{}
	for i := range j.Ops {
		op := &j.Ops[i]
		id := op.Grant.ActID
		if w != nil && !w(id) || j.Seq <= v.pageSeq[storage.PageOf(id)] {
			continue
		}
		a := v.accounts[id]
		if a == nil {
			a = ledger.NewAccount(id)
			v.accounts[id] = a
		}
		if err := replayOp(v.part, j, i, a, bumped); err != nil {
			return err
		}
		v.touched[storage.PageOf(id)] = j.Seq
	}
	return nil
}

// addPage adds a decoded page's accounts that w tracks.
func (v *view) addPage(page uint64, raw []byte, w want) error {
	p, err := ledger.DecodePage(raw)
	if err != nil {
		return fmt.Errorf("partition %d page %d: %w", v.part, page, err)
	}
	v.pageSeq[page] = p.Seq
	for _, a := range p.Accounts {
		if storage.PageOf(a.ActID) != page {
			return fmt.Errorf("%w: partition %d page %d holds act %d", ledger.ErrCorrupt, v.part, page, a.ActID)
		}
		if w == nil || w(a.ActID) {
			v.accounts[a.ActID] = a
		}
	}
	return nil
}

func newView(part int32, s *ledger.PartState) *view {
	return &view{part: part, state: s, accounts: map[uint64]*ledger.Account{}, pageSeq: map[uint64]uint64{}, touched: map[uint64]uint64{}}
}

// loadPartition reads every account of a partition in txn.
func loadPartition(ctx context.Context, txn storage.Txn, part int32) (*view, error) {
	s, err := readPartState(ctx, txn, part)
	if err != nil {
		return nil, err
	}
	v := newView(part, s)
	prefix := storage.PagePrefix(part)
	err = storage.ScanTxn(txn, prefix, storage.PrefixEnd(prefix), func(k, raw []byte) (bool, error) {
		page, ok := parsePageKey(k, len(prefix))
		if !ok {
			return false, fmt.Errorf("%w: page key %q", ledger.ErrCorrupt, k)
		}
		return true, v.addPage(page, raw, nil)
	})
	if err != nil {
		return nil, err
	}
	if err := v.loadArchivedKeys(ctx, txn); err != nil {
		return nil, err
	}
	if err := v.applyJournal(txn, nil); err != nil {
		return nil, err
	}
	return v, nil
}

// loadArchivedKeys gives every account of the view that has history chunks
// the limit keys they hold (booking and replay must know them all). Only
// users with more than a hundred or so entries have any.
func (v *view) loadArchivedKeys(ctx context.Context, txn storage.Txn) error {
	for _, a := range v.accounts {
		if a.ArchivedKeysLoaded() {
			continue
		}
		archived, err := Archived(ctx, txn, a)
		if err != nil {
			return err
		}
		if err := a.SetArchivedKeys(archived); err != nil {
			return err
		}
	}
	return nil
}

func parsePageKey(k []byte, prefix int) (uint64, bool) {
	var page uint64
	rest := k[prefix:]
	if len(rest) != 12 {
		return 0, false
	}
	for _, c := range rest {
		switch {
		case c >= '0' && c <= '9':
			page = page<<4 | uint64(c-'0')
		case c >= 'a' && c <= 'f':
			page = page<<4 | uint64(c-'a'+10)
		default:
			return 0, false
		}
	}
	return page, true
}

// readAccounts reads the accounts of ids (of partition part) in txn: their
// pages, then the journal after the checkpoint.
func readAccounts(ctx context.Context, txn storage.Txn, part int32, ids []uint64) (*view, error) {
	s, err := readPartState(ctx, txn, part)
	if err != nil {
		return nil, err
	}
	v := newView(part, s)
	wanted := make(map[uint64]bool, len(ids))
	pages := map[uint64]bool{}
	for _, id := range ids {
		wanted[id] = true
		pages[storage.PageOf(id)] = true
	}
	w := func(id uint64) bool { return wanted[id] }
	keys := make([][]byte, 0, len(pages))
	order := slices.Sorted(maps.Keys(pages))
	for _, p := range order {
		keys = append(keys, storage.PageKey(part, p))
	}
	raw, err := storage.BatchGet(ctx, txn, keys)
	if err != nil {
		return nil, err
	}
	for i, p := range order {
		if b := raw[string(keys[i])]; b != nil {
			if err := v.addPage(p, b, w); err != nil {
				return nil, err
			}
		}
	}
	if err := v.loadArchivedKeys(ctx, txn); err != nil {
		return nil, err
	}
	if err := v.applyJournal(txn, w); err != nil {
		return nil, err
	}
	return v, nil
}

// ReadAccounts returns the accounts of ids as the store holds them, read in
// txn; an id without an account is absent from the map. parts is the grant
// topic's partition count.
func ReadAccounts(ctx context.Context, txn storage.Txn, parts int32, ids []uint64) (map[uint64]*ledger.Account, error) {
	out, _, err := ReadAccountsAt(ctx, txn, parts, ids)
	return out, err
}

// ScanAccounts calls fn with every account in the store, a partition at a
// time (each read in its own snapshot), in act_id order within a
// partition, until fn returns false or an error.
func ScanAccounts(ctx context.Context, tikv *storage.TiKV, fn func(*ledger.Account) (bool, error)) error {
	var parts []int32
	err := tikv.View(func(txn storage.Txn) error {
		var err error
		parts, err = PartitionsIn(txn)
		return err
	})
	if err != nil {
		return err
	}
	for _, p := range parts {
		more := true
		err := tikv.View(func(txn storage.Txn) error {
			var err error
			more, err = ScanPartition(ctx, txn, p, fn)
			return err
		})
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// ScanPartition calls fn with every account of partition p as txn's
// snapshot holds it, in act_id order, and reports whether fn asked for
// more.
func ScanPartition(ctx context.Context, txn storage.Txn, p int32, fn func(*ledger.Account) (bool, error)) (bool, error) {
	v, err := loadPartition(ctx, txn, p)
	if err != nil {
		return false, err
	}
	for _, id := range slices.Sorted(maps.Keys(v.accounts)) {
		more, err := fn(v.accounts[id])
		if err != nil || !more {
			return false, err
		}
	}
	return true, nil
}

// PartitionsIn lists the partitions that have a state: every write of
// accounts writes its partition's state.
func PartitionsIn(txn storage.Txn) ([]int32, error) {
	var parts []int32
	err := storage.ScanTxn(txn, storage.PartPrefix, storage.PrefixEnd(storage.PartPrefix), func(k, _ []byte) (bool, error) {
		p, ok := storage.ParsePartKey(k)
		if !ok {
			return false, fmt.Errorf("%w: partition state key %q", ledger.ErrCorrupt, k)
		}
		parts = append(parts, p)
		return true, nil
	})
	return parts, err
}

// Booked returns, per partition, the next grant topic offset to book as the
// store holds it (0 for a partition nothing was booked from).
func Booked(ctx context.Context, tikv *storage.TiKV, parts int32) (map[int32]int64, error) {
	out := make(map[int32]int64, parts)
	err := tikv.View(func(txn storage.Txn) error {
		keys := make([][]byte, parts)
		for p := range parts {
			keys[p] = storage.PartKey(p)
		}
		raw, err := storage.BatchGet(ctx, txn, keys)
		if err != nil {
			return err
		}
		for p := range parts {
			out[p] = 0
			if b := raw[string(keys[p])]; b != nil {
				s, err := ledger.DecodePartState(b)
				if err != nil {
					return fmt.Errorf("partition %d state: %w", p, err)
				}
				out[p] = s.Booked
			}
		}
		return nil
	})
	return out, err
}

// BindInTxn records an app identity on the account of actID in txn, as a
// journal of the account's partition (see Booker.Book for writes made
// where the partition is not owned), and reports whether it was new.
func BindInTxn(ctx context.Context, txn storage.Txn, parts int32, app uint32, user string, actID uint64) (bool, error) {
	part := storage.PartitionOf(actID, parts)
	v, err := readAccounts(ctx, txn, part, []uint64{actID})
	if err != nil {
		return false, err
	}
	a := v.accounts[actID]
	if a == nil {
		a = ledger.NewAccount(actID)
	}
	op := ledger.Op{Kind: ledger.OpBind, Grant: ledger.Grant{AppID: app, ActID: actID, UserID: user}}
	changed, err := op.Apply(a, 0)
	if err != nil || !changed {
		return false, err
	}
	j := ledger.Journal{Seq: v.state.NextSeq, Ops: []ledger.Op{op}}
	v.state.NextSeq++
	if err := txn.Set(storage.JournalKey(part, j.Seq), ledger.AppendJournal(nil, &j)); err != nil {
		return false, err
	}
	return true, txn.Set(storage.PartKey(part), ledger.AppendPartState(nil, v.state))
}

// Archived reads the archived entries of a, oldest first, in txn, and
// checks that its history chunks are whole and match the account's count
// of them.
func Archived(ctx context.Context, txn storage.Txn, a *ledger.Account) ([]ledger.Entry, error) {
	if a.Archived == 0 {
		return nil, nil
	}
	return readChunks(ctx, txn, a.ActID, 0, a.Archived/ledger.ChunkEntries)
}

// readChunks reads history chunks [from, to) of act in txn, in one batch,
// and returns their entries in order; each must be there and whole.
func readChunks(ctx context.Context, txn storage.Txn, act, from, to uint64) ([]ledger.Entry, error) {
	keys := make([][]byte, 0, to-from)
	for n := from; n < to; n++ {
		keys = append(keys, storage.HistKey(act, n))
	}
	raw, err := storage.BatchGet(ctx, txn, keys)
	if err != nil {
		return nil, err
	}
	out := make([]ledger.Entry, 0, (to-from)*ledger.ChunkEntries)
	for i, k := range keys {
		n := from + uint64(i)
		v := raw[string(k)]
		if v == nil {
			return nil, fmt.Errorf("%w: act %d: history chunk %d missing", ledger.ErrCorrupt, act, n)
		}
		got, gotN, entries, err := ledger.DecodeChunk(v)
		if err != nil {
			return nil, fmt.Errorf("act %d history chunk %d: %w", act, n, err)
		}
		if got != act || gotN != n {
			return nil, fmt.Errorf("%w: history chunk %d of act %d holds chunk %d of act %d", ledger.ErrCorrupt, n, act, gotN, got)
		}
		out = append(out, entries...)
	}
	return out, nil
}

// EntryOf finds the entry under limitKey in a, reading its history chunks
// when it is not among the recent ones.
func EntryOf(ctx context.Context, tikv *storage.TiKV, a *ledger.Account, limitKey string) (ledger.Entry, bool, error) {
	if e, ok := a.Entry(limitKey); ok || a.Archived == 0 {
		return e, ok, nil
	}
	var archived []ledger.Entry
	err := tikv.View(func(txn storage.Txn) error {
		var err error
		archived, err = Archived(ctx, txn, a)
		return err
	})
	if err != nil {
		return ledger.Entry{}, false, err
	}
	for _, e := range archived {
		if e.LimitKey == limitKey {
			return e, true, nil
		}
	}
	return ledger.Entry{}, false, nil
}

// AllEntries returns every entry of a, archived ones first, in booking
// order.
func AllEntries(ctx context.Context, tikv *storage.TiKV, a *ledger.Account) ([]ledger.Entry, error) {
	if a.Archived == 0 {
		return a.Entries, nil
	}
	var out []ledger.Entry
	err := tikv.View(func(txn storage.Txn) error {
		var err error
		out, err = Archived(ctx, txn, a)
		return err
	})
	return append(out, a.Entries...), err
}

// PacketsIn calls fn with every entry the store holds for partition p's
// users, archived ones included: what a shard's new owner restores its
// claims from.
func PacketsIn(ctx context.Context, tikv *storage.TiKV, p int32, fn func(actID uint64, e ledger.Entry)) error {
	return tikv.View(func(txn storage.Txn) error {
		_, err := ScanPartition(ctx, txn, p, func(a *ledger.Account) (bool, error) {
			entries, err := AllEntries(ctx, tikv, a)
			if err != nil {
				return false, err
			}
			for _, e := range entries {
				if e.Move == nil { // a move's entry is no packet
					fn(a.ActID, e)
				}
			}
			return true, nil
		})
		return err
	})
}

// replayOp applies op i of journal j, which its writer committed, to a: it
// must change a as it did then (else the journal is corrupt). Each account
// a journal changes gets one version (bumped tracks them).
func replayOp(part int32, j *ledger.Journal, i int, a *ledger.Account, bumped map[uint64]bool) error {
	changed, err := j.Ops[i].Apply(a, j.BookedAt)
	if err != nil {
		return fmt.Errorf("partition %d journal %d: %w", part, j.Seq, err)
	}
	if !changed {
		return fmt.Errorf("%w: partition %d journal %d op %d changes nothing on replay", ledger.ErrCorrupt, part, j.Seq, i)
	}
	a.TakeSealed() // its writer stored the chunk
	if !bumped[a.ActID] {
		bumped[a.ActID] = true
		a.Version++
	}
	return nil
}
