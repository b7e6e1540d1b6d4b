package ledger

import (
	"fmt"
	"strconv"
	"strings"
)

// Expiry (issue 13, item 2): coins and items are valid for a number of
// whole months after the month they were credited in; what is still
// unspent of older credits expires. Spending is first-in first-out, so
// what is left of an account's credits is always its newest credits, and
// the unspent part of the credits booked before a cutoff month is
//
//	max(0, balance − income of the months at or after the cutoff)
//
// read off the monthly summaries (Account.Months: every credit, archived
// entries included), never the history chunks. A credit booked in month M
// under a validity of n months is valid through month M+n and expires
// from the first day of month M+n+1: the cutoff of a sweep in month now is
// now − n, and credits booked before it expire.

// expireRefPrefix starts the Ref of an expiry past validity: "before:"
// and the cutoff month (YYYY-MM). The ledger checks such a move against
// the account when it applies it (ApplyMove).
const expireRefPrefix = "before:"

// ExpiryCutoff is the cutoff of a sweep in month now for a validity of
// months: credits booked before it are past their validity.
func ExpiryCutoff(now Month, months int) Month { return now - Month(months) }

// ExpireRef is the Ref of an expiry of credits booked before cutoff.
func ExpireRef(cutoff Month) string { return expireRefPrefix + cutoff.String() }

// ExpireKey is the key of the expiry of asset's credits booked before
// cutoff: one per (account, asset, cutoff), so a sweep run again books
// nothing twice.
func ExpireKey(asset Asset, cutoff Month) string {
	return "expire:" + string(asset) + ":" + cutoff.String()
}

// ParseMonth parses YYYY-MM (years 1970-9999) as Month.String writes it.
func ParseMonth(s string) (Month, error) {
	y, m, ok := strings.Cut(s, "-")
	if !ok || len(y) != 4 || len(m) != 2 {
		return 0, fmt.Errorf("month %q: want YYYY-MM", s)
	}
	yi, err1 := strconv.Atoi(y)
	mi, err2 := strconv.Atoi(m)
	if err1 != nil || err2 != nil || yi < 1970 || mi < 1 || mi > 12 || y[0] == '+' || m[0] == '+' {
		return 0, fmt.Errorf("month %q: want YYYY-MM from 1970-01", s)
	}
	return Month((yi-1970)*12 + mi - 1), nil
}

// Expirable is what of the account's asset was credited before cutoff and
// is still unspent, spending first-in first-out: max(0, balance − income
// of the months at or after cutoff). The monthly summaries must be loaded
// (MonthsKnown); otherwise it answers 0.
func (a *Account) Expirable(asset Asset, cutoff Month) int64 {
	if a.monthsPending() {
		return 0
	}
	left := a.Balance(asset)
	for i := range a.Months {
		s := &a.Months[i]
		if s.Asset == asset && s.Month >= cutoff {
			left -= s.Income // income and balance are >= 0: no overflow
			if left <= 0 {
				return 0
			}
		}
	}
	return max(left, 0)
}

// expiryRefused reports whether m, an expiry past validity (Ref
// "before:YYYY-MM"), takes more than the account's expirable amount at
// its cutoff, or names a cutoff after the month it is booked in. An
// expiry with another Ref (an app's, counted by the app) is not checked.
func (a *Account) expiryRefused(m *Move, at int64) bool {
	ref, ok := strings.CutPrefix(m.Ref, expireRefPrefix)
	if !ok {
		return false
	}
	cutoff, err := ParseMonth(ref)
	if err != nil || cutoff > MonthOf(at) {
		return true
	}
	return -m.Legs[0].Amount > a.Expirable(m.Legs[0].Asset, cutoff)
}
