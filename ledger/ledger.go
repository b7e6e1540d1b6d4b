// Package ledger is redrain's pure money core: amounts in minor units, the
// grant event, a user's account and how grants book into it, budgets with
// their leases and hot-account details, balanced batches of postings, and the
// deterministic amount draw.
//
// It owns the rules; callers own all I/O. It imports no actor, network or
// storage library and reads no clock or random source of its own: times and
// seeds come in as arguments so that a test or a simulator can replay it.
// Every money check here is always on; a failed check is an error the caller
// must treat as a broken invariant, never something to clamp and continue.
package ledger

import (
	"errors"
	"fmt"
	"math"
)

// Asset names what an amount counts. "cash" counts fen.
type Asset string

// AssetCash is money in fen.
const AssetCash Asset = "cash"

var (
	// ErrOverflow is returned when a sum would leave the int64 range.
	ErrOverflow = errors.New("ledger: amount overflow")
	// ErrUnbalanced is returned when a batch of postings does not sum to zero per asset.
	ErrUnbalanced = errors.New("ledger: batch does not balance")
	// ErrCorrupt is returned when an encoded record cannot be decoded.
	ErrCorrupt = errors.New("ledger: corrupt record")
	// ErrInvariant is returned when stored state breaks a money invariant.
	ErrInvariant = errors.New("ledger: invariant broken")
)

// Add returns a+b, or ErrOverflow.
func Add(a, b int64) (int64, error) {
	if (b > 0 && a > math.MaxInt64-b) || (b < 0 && a < math.MinInt64-b) {
		return 0, fmt.Errorf("%w: %d + %d", ErrOverflow, a, b)
	}
	return a + b, nil
}
