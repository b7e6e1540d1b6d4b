package ledger

import (
	"fmt"
	"slices"
	"strconv"
)

// Month is a calendar month of booking time in UTC, counted from January
// 1970 (month 0), so that months sort and subtract as integers.
type Month int32

// MonthOf is the month of a booking time (unix ms, UTC). It is integer
// arithmetic (the proleptic Gregorian calendar from a day count, H.
// Hinnant's civil_from_days): booking calls it per grant and a decoded
// page per entry, and time.UnixMilli(ms).UTC() cost several times more.
func MonthOf(unixMs int64) Month {
	days := unixMs / msPerDay
	if unixMs%msPerDay < 0 {
		days--
	}
	z := days + 719468 // days from 0000-03-01
	era := z / 146097
	if z < 0 && z%146097 != 0 {
		era--
	}
	doe := z - era*146097                                  // [0, 146096]
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365 // [0, 399]
	doy := doe - (365*yoe + yoe/4 - yoe/100)               // [0, 365]
	mp := (5*doy + 2) / 153                                // [0, 11], from March
	y, m := yoe+era*400, mp+3
	if mp >= 10 {
		y, m = y+1, mp-9
	}
	return Month((y-1970)*12 + m - 1)
}

const msPerDay = 24 * 3600 * 1000

// String is the month as YYYY-MM (years 0-9999).
func (m Month) String() string {
	y, mo := 1970+int(m)/12, int(m)%12+1
	if m < 0 {
		y, mo = 1970+(int(m)-11)/12, (int(m)%12+12)%12+1
	}
	var b []byte
	for p := 1000; p > 1 && y < p; p /= 10 {
		b = append(b, '0')
	}
	b = strconv.AppendInt(b, int64(y), 10)
	b = append(b, '-', byte('0'+mo/10), byte('0'+mo%10))
	return string(b)
}

// MonthSum is an account's income and expense in one asset over one month
// of booking time: the monthly summary a ledger page shows. Booking keeps
// them in the account (Account.Months); a grant and a move's positive leg
// are income, a move's negative leg is expense.
type MonthSum struct {
	Asset Asset
	Month Month
	// Invariant: Income >= 0 and Expense >= 0; per asset, the sum over
	// months of Income - Expense is the balance.
	Income, Expense int64
}

func cmpMonthSum(a MonthSum, asset Asset, m Month) int {
	if c := cmpString(string(a.Asset), string(asset)); c != 0 {
		return c
	}
	switch {
	case a.Month < m:
		return -1
	case a.Month > m:
		return 1
	}
	return 0
}

// addMonth adds income and expense to asset's month in a list sorted by
// asset then month. It changes list in place (or grows it); the caller
// checked the sums cannot overflow (monthAddable).
func addMonth(list []MonthSum, asset Asset, m Month, income, expense int64) []MonthSum {
	i, ok := slices.BinarySearchFunc(list, asset, func(s MonthSum, t Asset) int { return cmpMonthSum(s, t, m) })
	if !ok {
		list = slices.Insert(list, i, MonthSum{Asset: asset, Month: m})
	}
	list[i].Income += income
	list[i].Expense += expense
	return list
}

// monthAddable reports an overflow error if adding income and expense to
// asset's month would overflow.
func monthAddable(list []MonthSum, asset Asset, m Month, income, expense int64) error {
	i, ok := slices.BinarySearchFunc(list, asset, func(s MonthSum, t Asset) int { return cmpMonthSum(s, t, m) })
	if !ok {
		return nil
	}
	_, err := Add(list[i].Income, income)
	if err == nil {
		_, err = Add(list[i].Expense, expense)
	}
	return err
}

// MonthsOf folds entries into monthly summaries, sorted by asset then
// month.
func MonthsOf(entries []Entry) ([]MonthSum, error) { return foldMonths(nil, entries) }

// foldMonths adds entries to the summaries out.
func foldMonths(out []MonthSum, entries []Entry) ([]MonthSum, error) {
	for i := range entries {
		e := &entries[i]
		income, expense := max(e.Amount, 0), max(-e.Amount, 0)
		if err := monthAddable(out, e.Asset, MonthOf(e.BookedAt), income, expense); err != nil {
			return nil, err
		}
		out = addMonth(out, e.Asset, MonthOf(e.BookedAt), income, expense)
	}
	return out, nil
}

// MonthsKnown reports whether the account holds its monthly summaries. An
// account decoded from a record written before they were kept (page or
// account versions before 3) that has archived entries does not, until
// SetArchivedKeys reads them from its chunks; every other account does.
func (a *Account) MonthsKnown() bool { return !a.monthsPending() }

// Summaries answers monthly summaries; each call of Month is one summary
// read (a ledger page makes at most two).
type Summaries interface {
	// Month returns the summaries of every asset in month m, sorted by
	// asset (none: nothing booked in m).
	Month(m Month) []MonthSum
}

// Month returns the account's summaries of month m, one per asset booked
// in it, sorted by asset. It implements Summaries.
func (a *Account) Month(m Month) []MonthSum {
	var out []MonthSum
	for i := 0; i < len(a.Months); {
		asset := a.Months[i].Asset
		j, ok := slices.BinarySearchFunc(a.Months[i:], asset, func(s MonthSum, t Asset) int { return cmpMonthSum(s, t, m) })
		if ok {
			out = append(out, a.Months[i+j])
		}
		// Skip to the next asset.
		i += j
		for i < len(a.Months) && a.Months[i].Asset == asset {
			i++
		}
	}
	return out
}

// checkMonths verifies the monthly summaries against the balances: sorted
// by asset and month, unique, income and expense not negative, and per
// asset income - expense summed over months equal to the balance.
func (a *Account) checkMonths() error {
	if a.monthsPending() {
		return nil
	}
	bi := 0
	for i := 0; i < len(a.Months); {
		asset := a.Months[i].Asset
		var sum int64
		for ; i < len(a.Months) && a.Months[i].Asset == asset; i++ {
			s := a.Months[i]
			if i > 0 && cmpMonthSum(a.Months[i-1], s.Asset, s.Month) >= 0 {
				return fmt.Errorf("%w: act %d: monthly summaries not sorted and unique", ErrInvariant, a.ActID)
			}
			if s.Income < 0 || s.Expense < 0 {
				return fmt.Errorf("%w: act %d: %s month %s income %d expense %d", ErrInvariant, a.ActID, s.Asset, s.Month, s.Income, s.Expense)
			}
			var err error
			if sum, err = Add(sum, s.Income); err == nil {
				sum, err = Add(sum, -s.Expense)
			}
			if err != nil {
				return err
			}
		}
		// Balances with nothing in any month must be zero.
		for bi < len(a.Balances) && a.Balances[bi].Asset < asset {
			if a.Balances[bi].Amount != 0 {
				return fmt.Errorf("%w: act %d: %s balance %d has no monthly summary", ErrInvariant, a.ActID, a.Balances[bi].Asset, a.Balances[bi].Amount)
			}
			bi++
		}
		var bal int64
		if bi < len(a.Balances) && a.Balances[bi].Asset == asset {
			bal = a.Balances[bi].Amount
			bi++
		}
		if sum != bal {
			return fmt.Errorf("%w: act %d: %s monthly income - expense sums to %d, balance %d", ErrInvariant, a.ActID, asset, sum, bal)
		}
	}
	for ; bi < len(a.Balances); bi++ {
		if a.Balances[bi].Amount != 0 {
			return fmt.Errorf("%w: act %d: %s balance %d has no monthly summary", ErrInvariant, a.ActID, a.Balances[bi].Asset, a.Balances[bi].Amount)
		}
	}
	return nil
}

// checkMonthsCover verifies that each month holds at least what the recent
// entries booked in it (they are part of it): a stored summary that lost
// a recent entry's income would otherwise pass while another month made up
// for it.
func (a *Account) checkMonthsCover() error {
	recent, err := MonthsOf(a.Entries)
	if err != nil {
		return err
	}
	for _, r := range recent {
		i, ok := slices.BinarySearchFunc(a.Months, r.Asset, func(s MonthSum, t Asset) int { return cmpMonthSum(s, t, r.Month) })
		if !ok || a.Months[i].Income < r.Income || a.Months[i].Expense < r.Expense {
			return fmt.Errorf("%w: act %d: %s month %s holds less than its recent entries (%d, %d)", ErrInvariant, a.ActID, r.Asset, r.Month, r.Income, r.Expense)
		}
	}
	return nil
}

// deriveMonths sets the summaries of an account decoded without them: from
// its entries when it has none archived (exact); otherwise they stay
// unknown until SetArchivedKeys.
func (a *Account) deriveMonths() error {
	if a.Archived > 0 {
		a.Months = nil
		a.setMonthsPending(true)
		return nil
	}
	m, err := MonthsOf(a.Entries)
	a.Months = m
	return err
}
