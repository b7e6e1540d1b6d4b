package node

import (
	"context"

	"redrain/ledger"
	"redrain/spend"
	"redrain/storage"
)

// spendBooker is the booking of the spending routes: Config.Moves when
// set (tests), else the node's Booker (Move and Accounts).
func (n *Node) spendBooker() spend.Booker {
	if n.cfg.Moves != nil {
		return n.cfg.Moves
	}
	return n.booker
}

// budgetAssets answers the spending routes which asset a budget pays,
// from its record in the store (spend.Budgets).
type budgetAssets struct{ kv *storage.TiKV }

func (b budgetAssets) BudgetAsset(ctx context.Context, id string) (ledger.Asset, bool, error) {
	var bud *ledger.Budget
	err := b.kv.View(func(txn storage.Txn) error {
		raw, err := storage.Get(ctx, txn, storage.BudgetKey(id))
		if err != nil || raw == nil {
			return err
		}
		bud, err = ledger.UnmarshalBudget(raw)
		return err
	})
	if err != nil || bud == nil {
		return "", false, err
	}
	return bud.Asset, true, nil
}
