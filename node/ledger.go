package node

import (
	"context"
	"errors"

	"redrain/booking"
	"redrain/ledger"
	"redrain/storage"
)

// storeLedger answers a read node's account reads (GET /v1/ledger/) from
// the store of record alone: a read node has no booking to ask, and the
// store is what booking commits to. It books nothing.
type storeLedger struct {
	tikv  *storage.TiKV
	parts int32
}

// errReadNode is what a read node's ledger answers a booking with (no
// route of a read node books).
var errReadNode = errors.New("a read node books nothing")

func (l storeLedger) Book(context.Context, []ledger.Grant) ([]byte, error) { return nil, errReadNode }

func (l storeLedger) Accounts(ctx context.Context, ids []uint64) (map[uint64]*ledger.Account, error) {
	var out map[uint64]*ledger.Account
	err := l.tikv.View(func(txn storage.Txn) error {
		var err error
		out, err = booking.ReadAccounts(ctx, txn, l.parts, ids)
		return err
	})
	return out, err
}
