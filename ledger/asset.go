package ledger

import (
	"fmt"
	"strings"
)

// Booking kinds. Every asset is of one kind, named by its prefix, and each
// kind keeps its own double-entry rules; balances never mix across assets.
const (
	// KindMoney is cash in fen: the asset "cash" and the user's money
	// sub-accounts "cash:general", "cash:transit" and "cash:debt".
	KindMoney = "money"
	// KindCoin is a fungible virtual currency counted in whole coins:
	// "coin:{currency}".
	KindCoin = "coin"
	// KindItem is a discrete item (a coupon or card template) counted in
	// pieces: "item:{template}". One grant moves at most ItemsPerGrantMax.
	KindItem = "item"
)

// ItemsPerGrantMax bounds the pieces one grant of an item may give.
const ItemsPerGrantMax = 1000

// CoinAsset is the asset of a coin currency.
func CoinAsset(currency string) Asset { return Asset("coin:" + currency) }

// ItemAsset is the asset of an item template.
func ItemAsset(template string) Asset { return Asset("item:" + template) }

// Kind returns the asset's booking kind, or "" for a malformed asset.
func (a Asset) Kind() string {
	s := string(a)
	switch {
	case a == AssetCash, a == AssetGeneral, a == AssetTransit, a == AssetDebt:
		return KindMoney
	case strings.HasPrefix(s, "coin:") && len(s) > len("coin:"):
		return KindCoin
	case strings.HasPrefix(s, "item:") && len(s) > len("item:"):
		return KindItem
	}
	return ""
}

// CheckGrant applies the kind's rule to one granted amount: a known kind,
// a positive amount, and at most ItemsPerGrantMax pieces of an item.
func (a Asset) CheckGrant(amount int64) error {
	switch a.Kind() {
	case "":
		return fmt.Errorf("%w: unknown asset %q", ErrInvariant, a)
	case KindItem:
		if amount > ItemsPerGrantMax {
			return fmt.Errorf("%w: grant of %d pieces of %s; at most %d", ErrInvariant, amount, a, ItemsPerGrantMax)
		}
	}
	if amount <= 0 {
		return fmt.Errorf("%w: grant amount %d of %s", ErrInvariant, amount, a)
	}
	return nil
}
