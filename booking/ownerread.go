package booking

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"time"

	"redrain/ledger"
	"redrain/storage"
)

// Owners reaches the nodes that own partitions, for reads: the node
// carries booking's read requests (readwire.go) to them and their answers
// back.
type Owners interface {
	// Read sends req to the node that owner (a PartState.Owner) names and
	// returns its answer (ServeRead's). It fails when owner names no node it
	// can reach, or this node.
	Read(ctx context.Context, owner string, req []byte) ([]byte, error)
}

// ownerReadTimeout bounds one read through another node: an owner answers
// from memory in milliseconds, and the store is the reader's fallback.
const ownerReadTimeout = 2 * time.Second

// ReadThrough makes Accounts ask the owner of a partition owned elsewhere,
// through o, before it reads the partition from the store (nil: the store
// only).
func (b *Booker) ReadThrough(o Owners) {
	if o == nil {
		b.owners.Store(nil)
		return
	}
	b.owners.Store(&o)
}

// readThrough asks the owners of parts (partitions not owned here) for
// their accounts of byPart, into out, one request per partition, all at
// once. It returns the partitions that must be read from the store: no
// owner (never taken, released, or this node's own name), too many ids,
// or an owner that did not answer with accounts at least as new as the
// state read here first.
func (b *Booker) readThrough(ctx context.Context, o Owners, parts []int32, byPart map[int32][]uint64, out map[uint64]*ledger.Account) []int32 {
	states, err := b.partStates(ctx, parts)
	if err != nil {
		return parts // the store read reports it
	}
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		left []int32
	)
	for _, part := range parts {
		s, ids := states[part], byPart[part]
		if s.Owner == "" || s.Released || s.Owner == b.owner || len(ids) > readIDsMax {
			left = append(left, part)
			continue
		}
		wg.Go(func() {
			got, err := askOwner(ctx, o, s, part, ids)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				b.OwnerReadsMissed.Inc()
				left = append(left, part)
				return
			}
			b.OwnerReads.Inc()
			maps.Copy(out, got)
		})
	}
	wg.Wait()
	return left
}

// askOwner reads ids of partition part from the owner state s names.
func askOwner(ctx context.Context, o Owners, s *ledger.PartState, part int32, ids []uint64) (map[uint64]*ledger.Account, error) {
	ctx, cancel := context.WithTimeout(ctx, ownerReadTimeout)
	defer cancel()
	req := appendReadRequest(nil, &readRequest{part: part, epoch: s.Epoch, seq: s.NextSeq, ids: ids})
	body, err := o.Read(ctx, s.Owner, req)
	if err != nil {
		return nil, err
	}
	status, accounts, err := decodeReadAnswer(body, ids)
	if err != nil {
		return nil, err
	}
	if status != readServed {
		return nil, fmt.Errorf("booking: partition %d's owner answered status %d", part, status)
	}
	return accounts, nil
}

// partStates reads the states of parts in one snapshot.
func (b *Booker) partStates(ctx context.Context, parts []int32) (map[int32]*ledger.PartState, error) {
	keys := make([][]byte, len(parts))
	for i, p := range parts {
		keys[i] = storage.PartKey(p)
	}
	out := make(map[int32]*ledger.PartState, len(parts))
	err := b.tikv.View(func(txn storage.Txn) error {
		raw, err := storage.BatchGet(ctx, txn, keys)
		if err != nil {
			return err
		}
		for i, p := range parts {
			if out[p], err = partStateOf(p, raw[string(keys[i])]); err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}

// ServeRead answers a read request that another node's Accounts sent
// (readwire.go): the committed accounts of a partition this node owns, if
// they are at least as new as the partition's state the reader read;
// otherwise a status that sends the reader to the store. It never reads
// the store itself.
func (b *Booker) ServeRead(ctx context.Context, req []byte) []byte {
	r, err := decodeReadRequest(req)
	if err != nil {
		return appendReadAnswer(nil, readRefused, nil)
	}
	for _, id := range r.ids {
		// An id of another partition would read as no account at all.
		if storage.PartitionOf(id, b.parts) != r.part {
			return appendReadAnswer(nil, readRefused, nil)
		}
	}
	o := b.ownedPart(r.part)
	if o == nil {
		return appendReadAnswer(nil, readNotOwner, nil)
	}
	out := make(map[uint64]*ledger.Account, len(r.ids))
	rr := &readReq{ids: r.ids, at: &ledger.PartState{Epoch: r.epoch, NextSeq: r.seq}}
	status := o.p.readFrom(ctx, o.gone, rr, out)
	return appendReadAnswer(nil, status, out)
}
