// Package statement holds the money rules of merchants' and sponsors'
// statements (issue 13, item 4). This first part is the revenue split: a
// configurable rule that divides an amount in fen between parties exactly,
// with a stated rounding rule, every split balanced.
//
// The rounding rule is the largest remainder (Hamilton's) method over every
// party, the residual one (the merchant) included with the rate the fees
// leave it: each party first gets its exact share of the gross rounded
// down to the fen (each share computed on the gross, never on what another
// left), then the fen still undivided, fewer than the parties, go one each
// to the parties whose exact shares lost the most to that rounding, the
// earlier in the rule first on a tie (the residual party last). So every
// share is within one fen of its exact value, none is negative, and the
// shares sum to the gross. Rates are in parts per million, so 0.6% is
// 6,000. A negative gross (a refund) splits as the mirror of the positive
// one.
//
// The package does no I/O and reads no clock.
package statement

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strings"
)

// PPM is a whole: rates are parts of it (1,000,000 = 100%).
const PPM = 1_000_000

// Share is one party's rate in a Rule.
type Share struct {
	Party string
	Rate  int64 // parts per million of the gross
}

// Rule is a revenue split: fee parties with their rates, and the residual
// party that gets the rest.
type Rule struct {
	Fees     []Share
	Residual string
}

// ErrRule wraps every rule Validate refuses.
var ErrRule = errors.New("statement: bad split rule")

// partyMax bounds a party's name.
const partyMax = 64

// Validate checks the rule: named parties, each once; rates from 0 to a
// whole; fees that leave the residual party a share of zero or more.
func (r Rule) Validate() error {
	seen := map[string]bool{}
	name := func(p string) error {
		switch {
		case p == "" || len(p) > partyMax || strings.TrimSpace(p) != p:
			return fmt.Errorf("%w: party %q: 1 to %d bytes, no surrounding space", ErrRule, p, partyMax)
		case seen[p]:
			return fmt.Errorf("%w: party %q named twice", ErrRule, p)
		}
		seen[p] = true
		return nil
	}
	var total int64
	for _, f := range r.Fees {
		if err := name(f.Party); err != nil {
			return err
		}
		if f.Rate < 0 || f.Rate > PPM {
			return fmt.Errorf("%w: party %q: rate %d ppm, want 0 to %d", ErrRule, f.Party, f.Rate, PPM)
		}
		total += f.Rate
	}
	if err := name(r.Residual); err != nil {
		return fmt.Errorf("residual: %w", err)
	}
	if total > PPM {
		return fmt.Errorf("%w: fees take %d ppm, more than the whole (%d)", ErrRule, total, PPM)
	}
	return nil
}

// Split divides gross (fen) by the rule: one amount per fee party in the
// rule's order, then the residual party's. It refuses a rule that does not
// validate, and the one gross that has no mirror (math.MinInt64).
func (r Rule) Split(gross int64) ([]int64, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return r.splitInto(nil, nil, gross)
}

// splitInto is Split of a rule that validated, into dst (lost is scratch).
func (r *Rule) splitInto(dst, lost []int64, gross int64) ([]int64, error) {
	if gross == math.MinInt64 {
		return nil, fmt.Errorf("statement: gross %d cannot be mirrored", gross)
	}
	neg := gross < 0
	g := gross
	if neg {
		g = -g
	}
	n := len(r.Fees) + 1
	out := append(dst[:0], make([]int64, n)...)
	lost = append(lost[:0], make([]int64, n)...) // what rounding down took, in millionths of a fen
	left := int64(PPM)
	undivided := g
	for i := range n {
		rate := left
		if i < len(r.Fees) {
			rate = r.Fees[i].Rate
			left -= rate
		}
		out[i], lost[i] = shareOf(g, rate)
		undivided -= out[i]
	}
	// Fewer fen than parties are left: one each to the largest losses.
	for ; undivided > 0; undivided-- {
		best := -1
		for i := range lost {
			if lost[i] >= 0 && (best < 0 || lost[i] > lost[best]) {
				best = i
			}
		}
		out[best]++
		lost[best] = -1
	}
	if neg {
		for i := range out {
			out[i] = -out[i]
		}
	}
	if err := balanced(gross, out); err != nil {
		return nil, err
	}
	return out, nil
}

// shareOf is rate ppm of g (g ≥ 0), rounded down to the fen, and what the
// rounding took in millionths of a fen, in exact integer arithmetic (the
// product in big integers).
func shareOf(g, rate int64) (share, lost int64) {
	if g <= math.MaxInt64/PPM { // the product fits: integer arithmetic
		return g * rate / PPM, g * rate % PPM
	}
	q, m := new(big.Int).QuoRem(new(big.Int).Mul(big.NewInt(g), big.NewInt(rate)), big.NewInt(PPM), new(big.Int))
	return q.Int64(), m.Int64()
}

// balanced checks, as a computation apart from Split's, that the shares sum
// to the gross (in int64 when no sum can overflow, else in big integers).
func balanced(gross int64, shares []int64) error {
	if gross > math.MinInt64/2 && gross < math.MaxInt64/2 {
		var sum int64
		for _, s := range shares {
			sum += s // each share is between 0 and the gross
		}
		if sum != gross {
			return fmt.Errorf("statement: split of %d sums to %d", gross, sum)
		}
		return nil
	}
	sum := new(big.Int)
	for _, s := range shares {
		sum.Add(sum, big.NewInt(s))
	}
	if sum.Cmp(big.NewInt(gross)) != 0 {
		return fmt.Errorf("statement: split of %d sums to %s", gross, sum)
	}
	return nil
}
