package statement_test

import (
	"errors"
	"math"
	"math/big"
	"math/rand/v2"
	"testing"

	"redrain/statement"
)

// The seed's example: ¥100 with host 10%, platform 5%, technical fee 0.6%:
// host ¥10, platform ¥5, technical fee ¥0.60, merchant ¥84.40.
var seedRule = statement.Rule{
	Fees: []statement.Share{
		{Party: "host", Rate: 100_000},
		{Party: "platform", Rate: 50_000},
		{Party: "technical_fee", Rate: 6_000},
	},
	Residual: "merchant",
}

func TestSeedExample(t *testing.T) {
	got, err := seedRule.Split(10_000) // ¥100.00 in fen
	if err != nil {
		t.Fatal(err)
	}
	want := []int64{1_000, 500, 60, 8_440}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("split of ¥100 = %v, want %v", got, want)
		}
	}
	// A refund of it splits as its mirror.
	got, err = seedRule.Split(-10_000)
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if got[i] != -want[i] {
			t.Fatalf("split of -¥100 = %v, want the mirror of %v", got, want)
		}
	}
}

// TestRounding: every share is within one fen of its exact value, none has
// the wrong sign, the shares sum to the gross, and a fen rounded up went to
// a party that lost at least as much to rounding as any party rounded down
// (largest remainders), over random rules and amounts (the exact shares
// from big rationals).
func TestRounding(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 20_000 {
		n := rng.IntN(4)
		rule := statement.Rule{Residual: "merchant"}
		left := int64(statement.PPM)
		for i := range n {
			rate := rng.Int64N(left + 1)
			if rng.IntN(4) == 0 {
				rate = rng.Int64N(min(left, 10_000) + 1) // small rates, where rounding shows
			}
			left -= rate
			rule.Fees = append(rule.Fees, statement.Share{Party: string(rune('a' + i)), Rate: rate})
		}
		gross := rng.Int64N(1 << 40)
		if rng.IntN(3) == 0 {
			gross = rng.Int64N(1000)
		}
		if rng.IntN(5) == 0 {
			gross = -gross
		}
		shares, err := rule.Split(gross)
		if err != nil {
			t.Fatalf("%+v split of %d: %v", rule, gross, err)
		}
		rates := []int64{}
		for _, f := range rule.Fees {
			rates = append(rates, f.Rate)
		}
		rates = append(rates, left)
		var sum int64
		minUp, maxDown := big.NewRat(2, 1), big.NewRat(-1, 1) // fractions lost by shares rounded up / down
		for i, rate := range rates {
			exact := new(big.Rat).Mul(new(big.Rat).SetInt64(gross), big.NewRat(rate, statement.PPM))
			diff := new(big.Rat).Sub(new(big.Rat).SetInt64(shares[i]), exact)
			if new(big.Rat).Abs(diff).Cmp(big.NewRat(1, 1)) >= 0 {
				t.Fatalf("%+v split of %d: share %d is %d, a fen or more from %s", rule, gross, i, shares[i], exact.FloatString(3))
			}
			if shares[i] != 0 && (shares[i] < 0) != (gross < 0) {
				t.Fatalf("%+v split of %d: share %d is %d", rule, gross, i, shares[i])
			}
			frac := new(big.Rat).Abs(diff)
			if int64(diff.Sign())*sign(gross) > 0 { // rounded away from zero: it lost 1 - frac before its fen
				if lostBy := new(big.Rat).Sub(big.NewRat(1, 1), frac); lostBy.Cmp(minUp) < 0 {
					minUp = lostBy
				}
			} else if frac.Cmp(maxDown) > 0 {
				maxDown = frac
			}
			sum += shares[i]
		}
		if sum != gross {
			t.Fatalf("%+v split of %d = %v: sums to %d", rule, gross, shares, sum)
		}
		if minUp.Cmp(big.NewRat(2, 1)) != 0 && minUp.Cmp(maxDown) < 0 {
			t.Fatalf("%+v split of %d = %v: a share rounded up lost %s, one rounded down %s", rule, gross, shares, minUp.FloatString(6), maxDown.FloatString(6))
		}
	}
}

func TestLargestRemainder(t *testing.T) {
	// Three parties of a third each: 100 fen leave one undivided, which
	// goes to the first on the tie; the residual party last.
	thirds := statement.Rule{Fees: []statement.Share{{Party: "a", Rate: 333_333}, {Party: "b", Rate: 333_333}}, Residual: "m"}
	for gross, want := range map[int64][3]int64{100: {33, 33, 34}, 1: {0, 0, 1}, 2: {1, 0, 1}, -100: {-33, -33, -34}, 0: {0, 0, 0}} {
		got, err := thirds.Split(gross)
		if err != nil || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
			t.Errorf("split of %d in thirds = %v, %v; want %v", gross, got, err, want)
		}
	}
}

func TestBadRules(t *testing.T) {
	for name, r := range map[string]statement.Rule{
		"fees over the whole": {Fees: []statement.Share{{"a", 600_000}, {"b", 400_001}}, Residual: "m"},
		"negative rate":       {Fees: []statement.Share{{"a", -1}}, Residual: "m"},
		"rate over the whole": {Fees: []statement.Share{{"a", statement.PPM + 1}}, Residual: "m"},
		"party twice":         {Fees: []statement.Share{{"a", 1}, {"a", 2}}, Residual: "m"},
		"residual is a fee":   {Fees: []statement.Share{{"m", 1}}, Residual: "m"},
		"no residual":         {Fees: []statement.Share{{"a", 1}}},
		"unnamed party":       {Fees: []statement.Share{{"", 1}}, Residual: "m"},
		"spaced party":        {Fees: []statement.Share{{" a", 1}}, Residual: "m"},
	} {
		if _, err := r.Split(100); !errors.Is(err, statement.ErrRule) {
			t.Errorf("%s: Split = %v, want ErrRule", name, err)
		}
	}
	if _, err := seedRule.Split(math.MinInt64); err == nil {
		t.Error("split of MinInt64 accepted")
	}
}

// The largest amounts split without overflow.
func TestLargeAmounts(t *testing.T) {
	for _, gross := range []int64{math.MaxInt64, -math.MaxInt64} {
		shares, err := seedRule.Split(gross)
		if err != nil {
			t.Fatalf("split of %d: %v", gross, err)
		}
		if abs(shares[0]-gross/10) > 1 {
			t.Errorf("host share of %d = %d", gross, shares[0])
		}
	}
}

func sign(x int64) int64 {
	if x < 0 {
		return -1
	}
	return 1
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

func BenchmarkSplit(b *testing.B) {
	for i := range b.N {
		if _, err := seedRule.Split(int64(i)); err != nil {
			b.Fatal(err)
		}
	}
}
