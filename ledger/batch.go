package ledger

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/bits"
)

// Posting moves Amount of Asset into (positive) or out of (negative) an account.
type Posting struct {
	Account string
	Asset   Asset
	Amount  int64
}

// Batch is a set of postings written atomically.
// Invariant: it sums to zero per asset (checked by Check before every write).
type Batch []Posting

// Check returns ErrUnbalanced unless the batch sums to zero per asset.
func (b Batch) Check() error {
	sums := make(map[Asset]int64, 1)
	for _, p := range b {
		s, err := Add(sums[p.Asset], p.Amount)
		if err != nil {
			return err
		}
		sums[p.Asset] = s
	}
	for asset, s := range sums {
		if s != 0 {
			return fmt.Errorf("%w: %s sums to %d", ErrUnbalanced, asset, s)
		}
	}
	return nil
}

// Account names used in postings.
func UserAccount(actID uint64) string   { return fmt.Sprintf("user/%d", actID) }
func BudgetAccount(id string) string    { return "budget/" + id }
func FundingAccount(asset Asset) string { return "funding/" + string(asset) }

// GrantPostings appends the double entry of booking g: the budget's hot
// account pays, the user's account receives.
func GrantPostings(dst Batch, g *Grant) Batch {
	return append(dst,
		Posting{Account: BudgetAccount(g.BudgetID), Asset: g.Asset, Amount: -g.Amount},
		Posting{Account: UserAccount(g.ActID), Asset: g.Asset, Amount: g.Amount},
	)
}

// FundingPostings is the double entry of funding a budget with total.
func FundingPostings(b *Budget) Batch {
	return Batch{
		{Account: FundingAccount(b.Asset), Asset: b.Asset, Amount: -b.Total},
		{Account: BudgetAccount(b.ID), Asset: b.Asset, Amount: b.Total},
	}
}

// DrawSeed derives the seed of a grant's amount from the campaign's draw
// salt and the grant's idempotency key, so a retried grant on any node draws
// the same amount.
func DrawSeed(salt, idempotencyKey string) uint64 {
	// One sum over salt, 0, key on the stack (a Digest from sha256.New was
	// an allocation per draw); keys and salts are short.
	var buf [256]byte
	b := append(buf[:0], salt...)
	b = append(b, 0)
	b = append(b, idempotencyKey...)
	sum := sha256.Sum256(b)
	return binary.BigEndian.Uint64(sum[:8])
}

// Draw returns an amount uniform in [lo, hi] from seed (Lemire's unbiased
// bounded draw over a splitmix64 stream).
func Draw(seed uint64, lo, hi int64) int64 {
	if hi <= lo {
		return lo
	}
	n := uint64(hi-lo) + 1 // wraps to 0 when [lo, hi] is all of int64
	for {
		seed += 0x9e3779b97f4a7c15
		z := seed
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		z ^= z >> 31
		if n == 0 {
			return int64(z) // every 64-bit value is in range
		}
		hiBits, loBits := bits.Mul64(z, n)
		if loBits >= n || loBits >= (-n)%n {
			return lo + int64(hiBits)
		}
	}
}
